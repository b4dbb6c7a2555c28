//! Cordon's one YAML config file: what it holds, how it is loaded, and how its errors read.
//!
//! Every field has a default except the sources, so a config names only what differs. Unknown keys
//! are errors (a typo must not silently turn a setting off), and every error is reported with
//! `file:line:column` and a hint; see [`load`].

mod diagnostic;
mod duration;
mod load;
mod people;
mod secret;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

pub use diagnostic::{Diagnostic, Diagnostics};
pub use duration::HumanDuration;
pub use load::{load, parse};
pub use people::{OidcConfig, PersonConfig};
pub use secret::Secret;

/// The whole config file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The HTTP listener and the admin API.
    #[serde(default)]
    pub server: ServerConfig,
    /// Where alerts, incidents and runs are kept.
    #[serde(default)]
    pub store: StoreConfig,
    /// How alerts are deduplicated and grouped into incidents.
    #[serde(default)]
    pub grouping: GroupingConfig,
    /// Log output.
    #[serde(default)]
    pub log: LogConfig,
    /// Where playbooks are and how they run.
    #[serde(default)]
    pub playbooks: PlaybooksConfig,
    /// People, by id: who they are, their roles, and their identities on each platform
    /// (docs/security.md). Every decision is made by a person.
    #[serde(default)]
    pub people: BTreeMap<String, people::PersonConfig>,
    /// An OpenID Connect issuer whose tokens the API accepts, mapped to people by `oidc:` identities.
    #[serde(default)]
    pub oidc: Option<people::OidcConfig>,
    /// Approver groups: who may decide approvals, by group name. Members are people (`alice`),
    /// identities a person has (`slack:U123`), other groups (`group:soc-l1`) or platform groups
    /// (`slack-group:S0123`, `teams-group:<Entra group id>`, `discord-role:<role id>`).
    #[serde(default)]
    pub approvers: BTreeMap<String, Vec<String>>,
    /// Limits on what side-effect actions may do.
    #[serde(default)]
    pub guardrails: GuardrailsConfig,
    /// Integrations: where they are, their credentials and settings (docs/integrations.md).
    #[serde(default)]
    pub integrations: IntegrationsConfig,
    /// Chat platforms for incident cards and approvals (Slack, Teams, Discord).
    #[serde(default)]
    pub chat: crate::chat::ChatConfig,
    /// The alert sources Cordon accepts, by name (`aws.guardduty`, `falco`, `generic`, ...). A
    /// source that is not listed here is refused with 404.
    #[serde(default)]
    pub sources: BTreeMap<String, SourceConfig>,
    /// Ticket sync with Jira Cloud and ServiceNow, and the outbox's retry backoff.
    #[serde(default)]
    pub tickets: crate::tickets::TicketsConfig,
    /// Signed checkpoints of the audit chain, and where they are pushed.
    #[serde(default)]
    pub audit: crate::audit::AuditConfig,
    /// Email over SMTP: the server, and profiles (a sender and recipients) that `email.send`
    /// steps and incident notifications name (README, "Email").
    #[serde(default)]
    pub email: crate::email::EmailConfig,
    /// How long each kind of record is kept, and how often the server prunes (docs/retention.md).
    #[serde(default)]
    pub retention: crate::retention::RetentionConfig,
    /// YARA rules for the `yara.scan` action: where they are, and the largest artifact scanned.
    #[serde(default)]
    pub yara: crate::yara::YaraConfig,
    /// Destinations every alert, incident change, run event and audit entry can be forwarded to,
    /// by name (docs/streams.md).
    #[serde(default)]
    pub streams: crate::streams::StreamsConfig,
    /// Ways alerts come in besides HTTP: `jetstream` (docs/streams.md).
    #[serde(default)]
    pub intake: crate::streams::IntakeConfig,
    /// The web console served at `/` on the same listener (docs/console.md).
    #[serde(default)]
    pub console: ConsoleConfig,
}

/// The web console: where it is reached, how long a sign-in lasts, and the OIDC client it signs in
/// with (`oidc:` names the issuer).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleConfig {
    /// Serve the console (default true). Off: `/` and the console's pages answer 404.
    #[serde(default = "default_console_enabled")]
    pub enabled: bool,
    /// The URL people reach the console at (`https://cordon.example.com`). It makes the OIDC
    /// redirect URI (`<public_url>/login/callback`), the origin every form must come from, and,
    /// when `https`, the session cookie `Secure`. Unset: the request's own host over `http`, for
    /// local use.
    #[serde(default)]
    pub public_url: Option<url::Url>,
    /// A session ends after this long without a request (default `30m`).
    #[serde(default = "default_console_idle")]
    pub idle_timeout: HumanDuration,
    /// A session ends this long after sign-in whatever its use (default `12h`).
    #[serde(default = "default_console_absolute")]
    pub absolute_timeout: HumanDuration,
    /// The OIDC client id the console signs in with (the authorization code flow with PKCE, a
    /// public client). Default: `oidc.client_id`, else `oidc.audience`. ID tokens must name it in
    /// `aud`.
    #[serde(default)]
    pub client_id: Option<String>,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        ConsoleConfig {
            enabled: true,
            public_url: None,
            idle_timeout: default_console_idle(),
            absolute_timeout: default_console_absolute(),
            client_id: None,
        }
    }
}

fn default_console_enabled() -> bool {
    true
}

fn default_console_idle() -> HumanDuration {
    HumanDuration::secs(30 * 60)
}

fn default_console_absolute() -> HumanDuration {
    HumanDuration::secs(12 * 3600)
}

/// Where playbooks are and how they run.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlaybooksConfig {
    /// Files or folders of playbooks (`*.yaml`), relative to the working directory (default
    /// `[playbooks]`).
    #[serde(default = "default_playbook_paths")]
    pub paths: Vec<PathBuf>,
    /// Runs advanced at once (default 16).
    #[serde(default = "default_workers")]
    pub workers: usize,
    /// Wall-clock limit of one Rhai evaluation (default `2s`).
    #[serde(default = "default_script_timeout")]
    pub script_timeout: HumanDuration,
    /// Hosts `core.http` may call, per playbook id (`*.example.com` allowed). A playbook not listed
    /// may call no host.
    #[serde(default)]
    pub http_allow: BTreeMap<String, Vec<String>>,
    /// Largest answer `core.http` reads, in bytes (default 10 MiB); reading stops there and the
    /// step fails naming this key.
    #[serde(default = "default_max_response_bytes")]
    pub http_max_response_bytes: usize,
}

impl Default for PlaybooksConfig {
    fn default() -> Self {
        PlaybooksConfig {
            paths: default_playbook_paths(),
            workers: default_workers(),
            script_timeout: default_script_timeout(),
            http_allow: BTreeMap::new(),
            http_max_response_bytes: default_max_response_bytes(),
        }
    }
}

fn default_max_response_bytes() -> usize {
    10 * 1024 * 1024
}

fn default_playbook_paths() -> Vec<PathBuf> {
    vec![PathBuf::from("playbooks")]
}

fn default_workers() -> usize {
    16
}

fn default_script_timeout() -> HumanDuration {
    HumanDuration::secs(2)
}

/// Where integrations are, the credentials they authenticate with, and their settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntegrationsConfig {
    /// Folders holding one integration each, or folders of such folders (default
    /// `[integrations]`).
    #[serde(default = "default_integration_paths")]
    pub paths: Vec<PathBuf>,
    /// Credentials by name; a manifest's `auth.credentials` names one.
    #[serde(default)]
    pub credentials: BTreeMap<String, Credentials>,
    /// Non-secret settings per integration (`integrations.settings.aws-ssm.evidence_bucket`).
    #[serde(default)]
    pub settings: BTreeMap<String, BTreeMap<String, serde_json::Value>>,
    /// Local indicator feeds (CSV, STIX 2.1 bundles) the `ioc` integration matches against.
    #[serde(default)]
    pub ioc_feeds: Vec<PathBuf>,
    /// Largest answer an integration's `http` call reads, in bytes (default 10 MiB); reading
    /// stops there and the call fails naming this key.
    #[serde(default = "default_max_response_bytes")]
    pub max_response_bytes: usize,
}

impl Default for IntegrationsConfig {
    fn default() -> Self {
        IntegrationsConfig {
            paths: default_integration_paths(),
            credentials: BTreeMap::new(),
            settings: BTreeMap::new(),
            ioc_feeds: Vec::new(),
            max_response_bytes: default_max_response_bytes(),
        }
    }
}

fn default_integration_paths() -> Vec<PathBuf> {
    vec![PathBuf::from("integrations")]
}

/// One set of credentials. Which fields are needed depends on the auth kind of the integrations
/// that name it: `aws_sigv4` (access_key_id, secret_access_key, session_token), `azure_oauth`
/// (the fields of [`AzureCredential`], plus tenants and subscriptions), `gcp_oauth` (service_account_key or
/// service_account_key_file; neither: the metadata server), `bearer` (token), `basic` (username,
/// password), `api_key` (api_key), `kubernetes` (clusters, default_cluster), `json_field` (keys).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    pub access_key_id: Option<Secret>,
    pub secret_access_key: Option<Secret>,
    pub session_token: Option<Secret>,
    pub tenant_id: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<Secret>,
    pub token: Option<Secret>,
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub api_key: Option<Secret>,
    /// aws_sigv4 without keys: the profile of the shared config and credentials files (default:
    /// `AWS_PROFILE`, else `default`) in the default credential chain.
    pub profile: Option<String>,
    /// aws_sigv4: the region of the STS endpoint roles are assumed through (default: `AWS_REGION`,
    /// else us-east-1).
    pub region: Option<String>,
    /// aws_sigv4: the role to assume for resources in an account (12 digits), or in any other
    /// account (`*`). Without one, Cordon's own identity acts.
    #[serde(default)]
    pub roles: BTreeMap<String, AwsRole>,
    /// `gcp_oauth`: a Google service-account key, the JSON file's content (`${GCP_SA_KEY}`).
    pub service_account_key: Option<Secret>,
    /// `gcp_oauth`: the path of a Google service-account key JSON file, read at start.
    pub service_account_key_file: Option<PathBuf>,
    /// Named keys an integration picks per request (`json_field` auth): PagerDuty's routing key
    /// per service, `default` for a step that names none.
    #[serde(default)]
    pub keys: BTreeMap<String, Secret>,
    /// Host pattern → base URL: requests to a matching host go to the base URL instead (an
    /// emulator in tests, a VPC endpoint, a sovereign cloud).
    #[serde(default)]
    pub endpoints: BTreeMap<String, String>,
    /// `kubernetes`: the clusters, by name (integrations/kubernetes/README.md).
    #[serde(default)]
    pub clusters: BTreeMap<String, crate::integrations::kubernetes::ClusterConfig>,
    /// `kubernetes`: the cluster used when an action names none (default: the only one).
    pub default_cluster: Option<String>,
    /// `azure_oauth`: a PEM holding the application's certificate and its private key
    /// (`${AZURE_CLIENT_CERTIFICATE}`), signed into a client assertion.
    pub client_certificate: Option<Secret>,
    /// `azure_oauth`: the path of a PEM file holding the application's certificate, and its
    /// private key unless `client_certificate_key_file` is given; read at start.
    pub client_certificate_file: Option<PathBuf>,
    /// `azure_oauth`: the path of the certificate's private key (PEM), when it is apart.
    pub client_certificate_key_file: Option<PathBuf>,
    /// `azure_oauth`, workload identity: the service account token file Kubernetes projects
    /// (default: `AZURE_FEDERATED_TOKEN_FILE` when no secret or certificate is given), read
    /// afresh for every token request.
    pub federated_token_file: Option<PathBuf>,
    /// `azure_oauth`: use the managed identity of the VM, App Service, Container App or Function
    /// Cordon runs on (`{}`: the system-assigned one).
    pub managed_identity: Option<ManagedIdentity>,
    /// `azure_oauth`: more Azure credentials by name, each for the subscriptions and tenants
    /// `subscriptions` gives it (docs/integrations.md, "Azure credentials").
    #[serde(default)]
    pub tenants: BTreeMap<String, AzureCredential>,
    /// `azure_oauth`: subscription id (or `*`, any other) → the name in `tenants` whose
    /// credential acts on resources there. Unlisted: the default credential (the fields above).
    #[serde(default)]
    pub subscriptions: BTreeMap<String, String>,
}

/// One Azure identity: an Entra ID application (`tenant_id`, `client_id`, and a secret, a
/// certificate or a federated token file), or a managed identity.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AzureCredential {
    /// The directory (tenant) id of the application.
    pub tenant_id: Option<String>,
    /// The application (client) id.
    pub client_id: Option<String>,
    /// The application's client secret.
    pub client_secret: Option<Secret>,
    /// A PEM holding the application's certificate and its private key.
    pub client_certificate: Option<Secret>,
    /// The path of a PEM file holding the certificate (and its key unless
    /// `client_certificate_key_file`).
    pub client_certificate_file: Option<PathBuf>,
    /// The path of the certificate's private key (PEM), when it is apart.
    pub client_certificate_key_file: Option<PathBuf>,
    /// Workload identity: the projected service account token file.
    pub federated_token_file: Option<PathBuf>,
    /// The managed identity of the host Cordon runs on.
    pub managed_identity: Option<ManagedIdentity>,
}

/// Which managed identity: none of the fields for the system-assigned one, one of them for a
/// user-assigned one.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManagedIdentity {
    /// The user-assigned identity's client id.
    pub client_id: Option<String>,
    /// The user-assigned identity's object (principal) id.
    pub object_id: Option<String>,
    /// The user-assigned identity's ARM resource id.
    pub resource_id: Option<String>,
}

/// A role Cordon assumes in another account (`sts:AssumeRole`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsRole {
    pub role_arn: String,
    /// The external id the role's trust policy asks for.
    pub external_id: Option<String>,
    /// The session name CloudTrail shows for Cordon's actions (default `cordon`).
    pub session_name: Option<String>,
}

impl Credentials {
    /// Every secret given.
    pub fn secrets(&self) -> Vec<&Secret> {
        [
            &self.access_key_id,
            &self.secret_access_key,
            &self.session_token,
            &self.client_secret,
            &self.token,
            &self.password,
            &self.api_key,
            &self.service_account_key,
            &self.client_certificate,
        ]
        .into_iter()
        .flatten()
        .chain(self.clusters.values().flat_map(|c| c.secrets()))
        .chain(self.keys.values())
        .chain(self.tenants.values().flat_map(AzureCredential::secrets))
        .collect()
    }

    /// The default Azure credential: the entry's own Azure fields.
    pub fn azure(&self) -> AzureCredential {
        AzureCredential {
            tenant_id: self.tenant_id.clone(),
            client_id: self.client_id.clone(),
            client_secret: self.client_secret.clone(),
            client_certificate: self.client_certificate.clone(),
            client_certificate_file: self.client_certificate_file.clone(),
            client_certificate_key_file: self.client_certificate_key_file.clone(),
            federated_token_file: self.federated_token_file.clone(),
            managed_identity: self.managed_identity.clone(),
        }
    }
}

impl AzureCredential {
    /// Every secret given.
    pub fn secrets(&self) -> Vec<&Secret> {
        [&self.client_secret, &self.client_certificate]
            .into_iter()
            .flatten()
            .collect()
    }
}

/// Guardrails on side-effect actions.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuardrailsConfig {
    /// Resources no side-effect action may touch: patterns (`*` matches anything) matched against
    /// every string input (ids, ARNs) and every `key=value` input pair (tags).
    #[serde(default)]
    pub protected: Vec<String>,
    /// Per action: at most `max` calls per `window`; further calls wait for approval by
    /// `blast_radius_approvers`.
    #[serde(default)]
    pub blast_radius: BTreeMap<String, BlastRadius>,
    /// The approver group for calls over a blast radius (default `admins`).
    #[serde(default = "default_blast_approvers")]
    pub blast_radius_approvers: String,
    /// The approver group that approves undoing a step (an undo is an approval of its own, and its
    /// action passes the guardrails as the original did). Default: the group of the approval
    /// before the step in its run, else `blast_radius_approvers`.
    #[serde(default)]
    pub undo_approvers: Option<String>,
}

impl Default for GuardrailsConfig {
    fn default() -> Self {
        GuardrailsConfig {
            protected: Vec::new(),
            blast_radius: BTreeMap::new(),
            blast_radius_approvers: default_blast_approvers(),
            undo_approvers: None,
        }
    }
}

fn default_blast_approvers() -> String {
    "admins".to_owned()
}

/// A blast-radius limit.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlastRadius {
    pub max: u32,
    pub window: HumanDuration,
}

/// The HTTP listener and the admin API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on. Default `127.0.0.1:8080`; use `0.0.0.0:8080` to accept from other hosts.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Bearer token for the admin API (`/v1/alerts`, `/v1/incidents`) and the CLI talking to a
    /// running server. Without it the admin API is off.
    #[serde(default)]
    pub admin_token: Option<Secret>,
    /// Largest request body accepted, in bytes (default 1 MiB). Larger bodies get 413.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// How long a graceful shutdown waits for requests in flight (default `30s`).
    #[serde(default = "default_shutdown_grace")]
    pub shutdown_grace: HumanDuration,
    /// How long a client may take to send a request's headers, counted from when the connection
    /// opens or the previous answer was sent (default `10s`). A slower (or idle) connection is
    /// closed.
    #[serde(default = "default_header_read_timeout")]
    pub header_read_timeout: HumanDuration,
    /// How long a client may take to send a request's body once its headers are in (default
    /// `30s`). A slower body is answered 408 and its connection closed.
    #[serde(default = "default_body_read_timeout")]
    pub body_read_timeout: HumanDuration,
    /// Connections served at once (default 1024). Further ones wait, unaccepted, until one closes.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Requests each alert source takes (every sender together), unless the source sets its own
    /// `rate_limit` (default 1000 per second, bursts of 2000). Over it: 429 with `Retry-After`.
    #[serde(default)]
    pub rate_limit: RateLimit,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: default_listen(),
            admin_token: None,
            max_body_bytes: default_max_body(),
            shutdown_grace: default_shutdown_grace(),
            header_read_timeout: default_header_read_timeout(),
            body_read_timeout: default_body_read_timeout(),
            max_connections: default_max_connections(),
            rate_limit: RateLimit::default(),
        }
    }
}

/// A request rate: `per_second` on average, and up to `burst` at once after a quiet spell.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Requests per second, on average.
    pub per_second: std::num::NonZeroU32,
    /// Requests taken at once after a quiet spell.
    pub burst: std::num::NonZeroU32,
}

impl Default for RateLimit {
    fn default() -> Self {
        RateLimit {
            per_second: std::num::NonZeroU32::new(1000).unwrap_or(std::num::NonZeroU32::MIN),
            burst: std::num::NonZeroU32::new(2000).unwrap_or(std::num::NonZeroU32::MIN),
        }
    }
}

fn default_header_read_timeout() -> HumanDuration {
    HumanDuration::secs(10)
}

fn default_body_read_timeout() -> HumanDuration {
    HumanDuration::secs(30)
}

fn default_max_connections() -> usize {
    1024
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}

fn default_max_body() -> usize {
    1024 * 1024
}

fn default_shutdown_grace() -> HumanDuration {
    HumanDuration::secs(30)
}

/// Which store backend and where.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "StoreFields")]
pub struct StoreConfig {
    /// `sled` (embedded, the default) or `postgres` (a PostgreSQL database several replicas can
    /// share; needs `url`).
    pub kind: StoreKind,
    /// Folder of the embedded store (default `data/cordon`, relative to the working directory).
    /// One process at a time may open it.
    pub path: PathBuf,
    /// Memory the embedded store may use for its page cache, in MiB (default 64). Intake writes mostly append, so a small cache serves it well.
    pub cache_mb: u64,
    /// The PostgreSQL database for `kind: postgres`, as a URL
    /// (`postgres://user:password@host:5432/cordon`); a secret, since it usually carries the
    /// password: write `${CORDON_DATABASE_URL}`. `?sslmode=require` connects over TLS, verifying
    /// the server's certificate against the system's CA certificates.
    pub url: Option<Secret>,
    /// Connections to PostgreSQL this process keeps at most (default 16).
    pub pool_size: usize,
    /// How long a replica's claim on a run outlives the replica (default 15s): after it dies,
    /// others take its runs over once this has passed. Renewed every third of it while it lives.
    pub lease_ttl: HumanDuration,
    /// How long one store write (or the fsync behind it) may stay unfinished before `/readyz`
    /// answers 503 and `cordon_store_stalled` names it (default 10s).
    pub stall_limit: HumanDuration,
}

/// The fields of `store:` as written, checked into a [`StoreConfig`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StoreFields {
    #[serde(default)]
    kind: StoreKind,
    #[serde(default = "default_store_path")]
    path: PathBuf,
    #[serde(default = "default_cache_mb")]
    cache_mb: u64,
    #[serde(default)]
    url: Option<Secret>,
    #[serde(default = "default_pool_size")]
    pool_size: usize,
    #[serde(default = "default_lease_ttl")]
    lease_ttl: HumanDuration,
    #[serde(default = "default_stall_limit")]
    stall_limit: HumanDuration,
}

impl TryFrom<StoreFields> for StoreConfig {
    type Error = String;

    // Runs inside serde_yaml's own call, so the error carries the `store:` node's position.
    fn try_from(f: StoreFields) -> Result<StoreConfig, String> {
        if f.kind == StoreKind::Postgres && f.url.is_none() {
            return Err(
                "`store.kind: postgres` needs `store.url` (for example `url: ${CORDON_DATABASE_URL}`)"
                    .to_owned(),
            );
        }
        if f.pool_size == 0 {
            return Err("`store.pool_size` must be at least 1".to_owned());
        }
        if f.lease_ttl.0 < std::time::Duration::from_secs(3) {
            return Err("`store.lease_ttl` must be at least 3s".to_owned());
        }
        if f.stall_limit.0 < std::time::Duration::from_millis(100) {
            return Err("`store.stall_limit` must be at least 100ms".to_owned());
        }
        Ok(StoreConfig {
            kind: f.kind,
            path: f.path,
            cache_mb: f.cache_mb,
            url: f.url,
            pool_size: f.pool_size,
            lease_ttl: f.lease_ttl,
            stall_limit: f.stall_limit,
        })
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            kind: StoreKind::default(),
            path: default_store_path(),
            cache_mb: default_cache_mb(),
            url: None,
            pool_size: default_pool_size(),
            lease_ttl: default_lease_ttl(),
            stall_limit: default_stall_limit(),
        }
    }
}

fn default_store_path() -> PathBuf {
    PathBuf::from("data/cordon")
}

fn default_stall_limit() -> HumanDuration {
    HumanDuration::secs(10)
}

fn default_cache_mb() -> u64 {
    64
}

fn default_pool_size() -> usize {
    16
}

fn default_lease_ttl() -> HumanDuration {
    HumanDuration::secs(15)
}

/// Store backends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreKind {
    /// Embedded, nothing to install.
    #[default]
    Sled,
    /// A PostgreSQL database (`store.url`), shared by every replica.
    Postgres,
}

/// Deduplication and incident grouping.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupingConfig {
    /// An alert with the same dedup key as one seen within this window counts as a repeat of it
    /// instead of a new alert (default `1h`).
    #[serde(default = "default_dedup_window")]
    pub dedup_window: HumanDuration,
    /// An alert about the same entity (resource, or actor for identity alerts) as an open incident
    /// updated within this window joins that incident (default `4h`).
    #[serde(default = "default_incident_window")]
    pub incident_window: HumanDuration,
    /// What becomes of an incident once every alert in it is resolved or suppressed at its source
    /// (Alertmanager's `resolved`, an archived GuardDuty finding, ...): `note` (default) or
    /// `resolve`.
    #[serde(default)]
    pub resolved_at_source: SourceResolution,
}

impl Default for GroupingConfig {
    fn default() -> Self {
        GroupingConfig {
            dedup_window: default_dedup_window(),
            incident_window: default_incident_window(),
            resolved_at_source: SourceResolution::default(),
        }
    }
}

/// What becomes of an incident once none of its alerts fires at its source any more.
///
/// `note` is the default because a source's "resolved" says its condition ended, not that the
/// incident is handled: the metric is back to normal, the finding was archived, while the
/// compromise it pointed at may still need containment, evidence and a ticket closed by a person.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceResolution {
    /// Noted on the incident (`at_source.quiet_since`), its card and its report; people resolve it.
    #[default]
    Note,
    /// Resolved, as a person resolving it would: audited (by `source:<name>`), its ticket
    /// transitioned and its report attached, its chat thread told.
    Resolve,
}

fn default_dedup_window() -> HumanDuration {
    HumanDuration::secs(3600)
}

fn default_incident_window() -> HumanDuration {
    HumanDuration::secs(4 * 3600)
}

/// Log output.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `human` (default) or `json` (one object per line, for log shippers).
    #[serde(default)]
    pub format: LogFormat,
    /// Level or filter, as `RUST_LOG` takes it (default `info`). `RUST_LOG` wins when set.
    #[serde(default = "default_level")]
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::default(),
            level: default_level(),
        }
    }
}

fn default_level() -> String {
    "info".to_owned()
}

/// Log formats.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    #[default]
    Human,
    Json,
}

/// One alert source.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// Set to `false` to refuse the source (404) without deleting its settings.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// How senders prove who they are. Required: every inbound request is authenticated.
    pub auth: AuthConfig,
    /// Largest body for this source in bytes; defaults to `server.max_body_bytes`.
    #[serde(default)]
    pub max_body_bytes: Option<usize>,
    /// Requests this source takes; defaults to `server.rate_limit`.
    #[serde(default)]
    pub rate_limit: Option<RateLimit>,
}

fn yes() -> bool {
    true
}

/// How a source authenticates its requests: exactly one of `bearer`, `hmac`, `sns`,
/// `google_oidc`, `entra_id`, `query_token`.
#[derive(Debug, Clone)]
pub enum AuthConfig {
    Bearer(BearerAuth),
    Hmac(HmacAuth),
    Sns(SnsAuth),
    GoogleOidc(GoogleOidcAuth),
    EntraId(EntraIdAuth),
    QueryToken(QueryTokenAuth),
}

/// Google Cloud Pub/Sub push with authentication: Pub/Sub sends a Google-signed OIDC token (RS256)
/// for the push subscription's service account in `Authorization: Bearer`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GoogleOidcAuth {
    /// The audience the push subscription puts in its tokens (`--push-auth-token-audience`; by
    /// default Pub/Sub uses the push endpoint's URL).
    pub audience: String,
    /// The push subscription's service account (`--push-auth-service-account`): tokens must carry
    /// this `email`, verified.
    pub service_account: String,
    /// Where Google publishes its signing keys (default
    /// `https://www.googleapis.com/oauth2/v3/certs`).
    #[serde(default = "default_google_jwks")]
    pub jwks_url: url::Url,
    /// Clock skew allowed on the token's `exp`, `nbf` and `iat` (default `60s`).
    #[serde(default = "default_token_skew")]
    pub clock_skew: HumanDuration,
}

/// Azure Monitor action groups with "secure webhook": an Entra ID access token (RS256) that Azure
/// Monitor obtains for the configured app registration, in `Authorization: Bearer`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntraIdAuth {
    /// The directory (tenant) id: tokens must be issued by
    /// `https://sts.windows.net/<tenant>/` (v1) or `https://login.microsoftonline.com/<tenant>/v2.0`.
    #[serde(deserialize_with = "tenant_id")]
    pub tenant: String,
    /// The app registration the action group names: its Application ID URI and/or its application
    /// (client) id; a token's `aud` must be one of them. One value or a list.
    #[serde(deserialize_with = "one_or_many")]
    pub audience: Vec<String>,
    /// The application id of the caller, the token's `appid` (v1) or `azp` (v2). Default
    /// `461e8683-5575-4561-ac7f-899cc907d62a`, Azure Monitor's action groups ("AzNS AAD Webhook").
    #[serde(default = "default_azure_monitor_app")]
    pub caller_app_id: String,
    /// Where the tenant's signing keys are published (default
    /// `https://login.microsoftonline.com/<tenant>/discovery/v2.0/keys`).
    #[serde(default)]
    pub jwks_url: Option<url::Url>,
    /// Clock skew allowed on the token's `exp`, `nbf` and `iat` (default `60s`).
    #[serde(default = "default_token_skew")]
    pub clock_skew: HumanDuration,
}

impl EntraIdAuth {
    /// The key set URL: the configured one, else the tenant's.
    pub fn keys_url(&self) -> Result<url::Url, url::ParseError> {
        match &self.jwks_url {
            Some(url) => Ok(url.clone()),
            None => url::Url::parse(&format!(
                "https://login.microsoftonline.com/{}/discovery/v2.0/keys",
                self.tenant
            )),
        }
    }
}

/// A shared token in the query string (`?token=...`), for senders that can only call a URL (an
/// Azure Monitor action group's plain webhook). Prefer a signed token (`entra_id`) where the
/// sender has one: proxies and load balancers log query strings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryTokenAuth {
    /// The shared token.
    pub token: Secret,
    /// The query parameter carrying it (default `token`).
    #[serde(default = "default_query_param")]
    pub param: String,
}

fn default_google_jwks() -> url::Url {
    url::Url::parse("https://www.googleapis.com/oauth2/v3/certs").expect("a valid URL")
}

fn default_token_skew() -> HumanDuration {
    HumanDuration::secs(60)
}

fn default_azure_monitor_app() -> String {
    "461e8683-5575-4561-ac7f-899cc907d62a".to_owned()
}

fn default_query_param() -> String {
    "token".to_owned()
}

fn tenant_id<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    let tenant = String::deserialize(deserializer)?;
    let fits = !tenant.is_empty()
        && tenant
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    if fits {
        Ok(tenant)
    } else {
        Err(serde::de::Error::custom(
            "`tenant` is a directory (tenant) id, a GUID such as `72f988bf-86f1-41af-91ab-2d7cd011db47`",
        ))
    }
}

fn one_or_many<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    let list = match OneOrMany::deserialize(deserializer)? {
        OneOrMany::One(one) => vec![one],
        OneOrMany::Many(many) => many,
    };
    if list.is_empty() || list.iter().any(|a| a.trim().is_empty()) {
        return Err(serde::de::Error::custom(
            "`audience` needs at least one non-empty value",
        ));
    }
    Ok(list)
}

/// `Authorization: Bearer <token>`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BearerAuth {
    /// The shared token.
    pub token: Secret,
}

/// An HMAC-SHA256 signature over `timestamp.body`, sent as hex (optionally prefixed `sha256=`),
/// with the timestamp (Unix seconds) in its own header.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HmacAuth {
    /// The shared key.
    pub secret: Secret,
    /// Header carrying the signature (default `x-cordon-signature`).
    #[serde(default = "default_signature_header")]
    pub signature_header: String,
    /// Header carrying the timestamp (default `x-cordon-timestamp`).
    #[serde(default = "default_timestamp_header")]
    pub timestamp_header: String,
    /// Requests whose timestamp is further than this from now are refused (default `5m`).
    #[serde(default = "default_replay_window")]
    pub replay_window: HumanDuration,
}

/// AWS SNS HTTPS delivery: the SNS message signature is the credential, and the payload is the SNS
/// message inside the envelope.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnsAuth {
    /// Topic ARNs whose messages (and subscription confirmations) are accepted.
    pub topics: Vec<String>,
    /// Confirm subscriptions to allowed topics by fetching their `SubscribeURL` (default true).
    #[serde(default = "yes")]
    pub confirm_subscriptions: bool,
    /// Send SNS certificate and confirmation fetches to this base URL instead of the SNS host,
    /// keeping path and query (for a proxy in a closed network, and for tests). The host named in
    /// the message is still checked to be `sns.<region>.amazonaws.com`.
    #[serde(default)]
    pub endpoint_override: Option<url::Url>,
    /// Messages whose signed `Timestamp` is older than this (or more than 5 minutes ahead) are
    /// refused, and each `MessageId` is remembered in the store for this long, so a copy of a
    /// delivery sent again is refused, also after a restart and on another replica (default `1h`).
    #[serde(default = "default_sns_replay_window")]
    pub replay_window: HumanDuration,
}

fn default_sns_replay_window() -> HumanDuration {
    HumanDuration::secs(3600)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthFields {
    #[serde(default)]
    bearer: Option<BearerAuth>,
    #[serde(default)]
    hmac: Option<HmacAuth>,
    #[serde(default)]
    sns: Option<SnsAuth>,
    #[serde(default)]
    google_oidc: Option<GoogleOidcAuth>,
    #[serde(default)]
    entra_id: Option<EntraIdAuth>,
    #[serde(default)]
    query_token: Option<QueryTokenAuth>,
}

const AUTH_KINDS: &str = "`bearer`, `hmac`, `sns`, `google_oidc`, `entra_id`, `query_token`";

impl<'de> Deserialize<'de> for AuthConfig {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<AuthConfig, D::Error> {
        struct AuthVisitor;
        impl<'de> serde::de::Visitor<'de> for AuthVisitor {
            type Value = AuthConfig;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                write!(f, "one of {AUTH_KINDS}")
            }
            // The check runs inside serde_yaml's own call, so its error carries the node's position.
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<AuthConfig, A::Error> {
                let fields =
                    AuthFields::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                let mut given = Vec::new();
                given.extend(fields.bearer.map(AuthConfig::Bearer));
                given.extend(fields.hmac.map(AuthConfig::Hmac));
                given.extend(fields.sns.map(AuthConfig::Sns));
                given.extend(fields.google_oidc.map(AuthConfig::GoogleOidc));
                given.extend(fields.entra_id.map(AuthConfig::EntraId));
                given.extend(fields.query_token.map(AuthConfig::QueryToken));
                match given.len() {
                    1 => Ok(given.remove(0)),
                    0 => Err(serde::de::Error::custom(format!(
                        "auth needs one of {AUTH_KINDS}"
                    ))),
                    _ => Err(serde::de::Error::custom(format!(
                        "auth takes exactly one of {AUTH_KINDS}"
                    ))),
                }
            }
        }
        deserializer.deserialize_map(AuthVisitor)
    }
}

fn default_signature_header() -> String {
    "x-cordon-signature".to_owned()
}

fn default_timestamp_header() -> String {
    "x-cordon-timestamp".to_owned()
}

fn default_replay_window() -> HumanDuration {
    HumanDuration::secs(300)
}

impl Config {
    /// Environment variables whose `${VAR:-default}` is in use: the server warns about each at start,
    /// since those defaults are for local use only.
    pub fn secrets_using_defaults(&self) -> Vec<String> {
        let mut names = Vec::new();
        let mut note = |secret: &Secret| {
            if let Some(name) = secret.default_in_use() {
                names.push(name.to_owned());
            }
        };
        if let Some(token) = &self.server.admin_token {
            note(token);
        }
        if let Some(url) = &self.store.url {
            note(url);
        }
        for source in self.sources.values() {
            match &source.auth {
                AuthConfig::Bearer(bearer) => note(&bearer.token),
                AuthConfig::Hmac(hmac) => note(&hmac.secret),
                AuthConfig::QueryToken(query) => note(&query.token),
                AuthConfig::Sns(_) | AuthConfig::GoogleOidc(_) | AuthConfig::EntraId(_) => {}
            }
        }
        for c in self.integrations.credentials.values() {
            c.secrets().into_iter().for_each(&mut note);
        }
        self.chat.secrets().into_iter().for_each(&mut note);
        self.tickets.secrets().into_iter().for_each(&mut note);
        self.audit.secrets().into_iter().for_each(&mut note);
        names.sort();
        names.dedup();
        names
    }
}
