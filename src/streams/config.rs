//! `streams:` (where events go out) and `intake.jetstream` (alerts in from NATS JetStream) in the
//! config file (docs/streams.md).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::config::{HumanDuration, Secret};

/// `streams:`: destinations by name. Each gets every event its filter lets through, through the
/// durable outbox.
pub type StreamsConfig = BTreeMap<String, Destination>;

/// One destination.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Destination {
    /// Where the events go: exactly one of `webhook`, `splunk_hec`, `elasticsearch`, `syslog`,
    /// `jetstream`.
    pub to: Target,
    /// Which events go (default: every kind, severity and source).
    #[serde(default)]
    pub filter: Filter,
    /// How many events one delivery may carry, and how often a lane sends.
    #[serde(default)]
    pub batch: Batch,
    /// Events are spread over this many lanes by incident (default 4): each lane delivers in
    /// order, one batch at a time, so the order of one incident's events is kept while lanes go
    /// side by side. Audit entries keep one lane of their own, in log order.
    #[serde(default = "default_lanes")]
    pub lanes: u32,
    /// `false` keeps the destination configured but sends it nothing (default `true`).
    #[serde(default = "default_true")]
    pub enabled: bool,
}

fn default_lanes() -> u32 {
    4
}

fn default_true() -> bool {
    true
}

/// Where a destination's events go.
#[derive(Debug, Clone)]
pub enum Target {
    Webhook(WebhookTarget),
    SplunkHec(HecTarget),
    Elasticsearch(ElasticTarget),
    Syslog(SyslogTarget),
    Jetstream(JetstreamTarget),
}

/// The kinds of target, for messages.
const TARGET_KINDS: &str = "`webhook`, `splunk_hec`, `elasticsearch`, `syslog`, `jetstream`";

/// `to:` as written: a mapping with exactly one of the kinds.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TargetFields {
    webhook: Option<WebhookTarget>,
    splunk_hec: Option<HecTarget>,
    elasticsearch: Option<ElasticTarget>,
    syslog: Option<SyslogTarget>,
    jetstream: Option<JetstreamTarget>,
}

impl<'de> Deserialize<'de> for Target {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Target, D::Error> {
        struct TargetVisitor;
        impl<'de> serde::de::Visitor<'de> for TargetVisitor {
            type Value = Target;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                write!(f, "one of {TARGET_KINDS}")
            }
            // Checked inside serde_yaml's own call, so the error carries the node's position.
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Target, A::Error> {
                let fields =
                    TargetFields::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                let mut given = Vec::new();
                given.extend(fields.webhook.map(Target::Webhook));
                given.extend(fields.splunk_hec.map(Target::SplunkHec));
                given.extend(fields.elasticsearch.map(Target::Elasticsearch));
                given.extend(fields.syslog.map(Target::Syslog));
                given.extend(fields.jetstream.map(Target::Jetstream));
                match given.len() {
                    1 => Ok(given.remove(0)),
                    0 => Err(serde::de::Error::custom(format!(
                        "`to` needs one of {TARGET_KINDS}"
                    ))),
                    _ => Err(serde::de::Error::custom(format!(
                        "`to` takes exactly one of {TARGET_KINDS}"
                    ))),
                }
            }
        }
        deserializer.deserialize_map(TargetVisitor)
    }
}

impl Target {
    /// The destination's kind, as the config names it.
    pub fn kind(&self) -> &'static str {
        match self {
            Target::Webhook(_) => "webhook",
            Target::SplunkHec(_) => "splunk_hec",
            Target::Elasticsearch(_) => "elasticsearch",
            Target::Syslog(_) => "syslog",
            Target::Jetstream(_) => "jetstream",
        }
    }
}

/// A generic webhook: `POST url` with `{"events": [...]}`, signed like Cordon's own HMAC intake.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookTarget {
    pub url: url::Url,
    /// The HMAC-SHA256 key: `X-Cordon-Signature: sha256=<hex of HMAC(secret, "<timestamp>.<body>")>`
    /// with `X-Cordon-Timestamp: <Unix seconds>`.
    pub secret: Secret,
}

/// Splunk HTTP Event Collector: `POST {url}/services/collector/event` with `Authorization:
/// Splunk <token>`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HecTarget {
    /// The collector's base URL (`https://splunk.example.com:8088`).
    pub url: url::Url,
    pub token: Secret,
    /// The index events go to (default: the token's default index).
    pub index: Option<String>,
    /// Default `cordon:<type>` (`cordon:alert`, `cordon:audit`, ...).
    pub sourcetype: Option<String>,
    /// Default `cordon`.
    pub source: Option<String>,
}

/// Elasticsearch or OpenSearch: `POST {url}/_bulk` with a `create` per event, its id the event's,
/// so a repeated delivery is recognised (409) rather than indexed twice.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ElasticTarget {
    pub url: url::Url,
    /// Default `cordon-events`.
    #[serde(default = "default_index")]
    pub index: String,
    /// `Authorization: ApiKey <api_key>` (the base64 form Elasticsearch hands out).
    pub api_key: Option<Secret>,
    /// Basic authentication, when no API key is given.
    pub username: Option<String>,
    pub password: Option<Secret>,
}

fn default_index() -> String {
    "cordon-events".to_owned()
}

/// A syslog collector over TCP.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyslogTarget {
    pub host: String,
    /// Default 6514 with TLS, 514 without.
    pub port: Option<u16>,
    /// `rfc5424` (default; octet-counted frames, RFC 5425/6587) or `rfc3164` (BSD syslog, one
    /// line per message, for old collectors).
    #[serde(default)]
    pub format: SyslogFormat,
    /// TLS (default on). `tls: false` sends plain text, which only a collector on a trusted
    /// network should take.
    #[serde(default)]
    pub tls: SyslogTls,
    /// The facility (default `local4`, 20).
    #[serde(default = "default_facility")]
    pub facility: u8,
    /// HOSTNAME in each message (default: this machine's host name).
    pub hostname: Option<String>,
}

fn default_facility() -> u8 {
    20
}

/// Which syslog message format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyslogFormat {
    #[default]
    Rfc5424,
    Rfc3164,
}

/// `tls: true | false | {ca_file, server_name}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum SyslogTls {
    On(bool),
    With(SyslogTlsConfig),
}

impl Default for SyslogTls {
    fn default() -> SyslogTls {
        SyslogTls::On(true)
    }
}

/// TLS settings for a syslog collector.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyslogTlsConfig {
    /// A PEM file of certificate authorities to trust (a private CA), besides the system's.
    pub ca_file: Option<PathBuf>,
    /// The name the collector's certificate must carry (default: `host`).
    pub server_name: Option<String>,
}

impl SyslogTls {
    /// The settings, or `None` for plain TCP.
    pub fn settings(&self) -> Option<SyslogTlsConfig> {
        match self {
            SyslogTls::On(false) => None,
            SyslogTls::On(true) => Some(SyslogTlsConfig::default()),
            SyslogTls::With(config) => Some(config.clone()),
        }
    }
}

/// NATS JetStream subjects: each event is published to `{subject}.{type}` with its id as
/// `Nats-Msg-Id` (the stream's duplicate window absorbs a repeated delivery), and its
/// acknowledgement awaited.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JetstreamTarget {
    /// `nats://host:4222` or `tls://host:4222` (several, comma-separated, for a cluster).
    pub url: String,
    /// A `.creds` file (a user JWT and its nkey seed): the account's subject permissions are what
    /// authenticates Cordon (docs/streams.md).
    pub credentials_file: Option<PathBuf>,
    /// Or a user and password.
    pub user: Option<String>,
    pub password: Option<Secret>,
    /// Or a token.
    pub token: Option<Secret>,
    /// A PEM file of certificate authorities for `tls://` servers.
    pub ca_file: Option<PathBuf>,
    /// Default `cordon.events` (so `cordon.events.alert`, `cordon.events.audit`, ...). A stream
    /// must take these subjects.
    #[serde(default = "default_out_subject")]
    pub subject: String,
}

fn default_out_subject() -> String {
    "cordon.events".to_owned()
}

/// How Cordon reaches a NATS server (the same keys in `streams:` and `intake.jetstream`).
#[derive(Debug, Clone)]
pub struct NatsServer {
    /// `nats://host:4222` or `tls://host:4222` (several, comma-separated, for a cluster).
    pub url: String,
    /// A `.creds` file (a user JWT and its nkey seed): the account's subject permissions are what
    /// authenticates Cordon (docs/streams.md).
    pub credentials_file: Option<PathBuf>,
    /// Or a user and password.
    pub user: Option<String>,
    pub password: Option<Secret>,
    /// Or a token.
    pub token: Option<Secret>,
    /// A PEM file of certificate authorities for `tls://` servers.
    pub ca_file: Option<PathBuf>,
}

macro_rules! nats_server {
    ($($t:ty),*) => {$(
        impl $t {
            pub fn server(&self) -> NatsServer {
                NatsServer {
                    url: self.url.clone(),
                    credentials_file: self.credentials_file.clone(),
                    user: self.user.clone(),
                    password: self.password.clone(),
                    token: self.token.clone(),
                    ca_file: self.ca_file.clone(),
                }
            }
        }
    )*};
}

nats_server!(JetstreamTarget, JetstreamIntake);

/// Which events go to a destination.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    /// Event types: `alert`, `incident`, `run`, `audit` (default: all).
    #[serde(default)]
    pub kinds: Vec<EventType>,
    /// The lowest severity (0-10) of the alert or incident the event is about. Events about
    /// neither (audit entries, people and tokens) are not held back by it.
    pub min_severity: Option<u8>,
    /// Only events about these sources (an alert's source; any of an incident's). Events about
    /// no source are not held back by it.
    #[serde(default)]
    pub sources: Vec<String>,
}

/// What an event is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventType {
    /// A new alert (not a repeat), with its normalized document.
    Alert,
    /// An incident opened, an alert joined it, its alerts' state at the source changed, it was
    /// resolved or reopened.
    Incident,
    /// What a run did: created, state changes, steps, approvals, evidence, guardrails.
    Run,
    /// Every entry of the audit log, in log order, with its hash.
    Audit,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Alert => "alert",
            EventType::Incident => "incident",
            EventType::Run => "run",
            EventType::Audit => "audit",
        }
    }
}

/// Batching: a lane sends at most one delivery per `max_wait`, of up to `max_events` events; the
/// first event after a quiet spell goes at once.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Batch {
    /// Default 500.
    #[serde(default = "default_max_events")]
    pub max_events: usize,
    /// Default `200ms`.
    #[serde(default = "default_max_wait")]
    pub max_wait: HumanDuration,
}

impl Default for Batch {
    fn default() -> Batch {
        Batch {
            max_events: default_max_events(),
            max_wait: default_max_wait(),
        }
    }
}

fn default_max_events() -> usize {
    500
}

fn default_max_wait() -> HumanDuration {
    HumanDuration(std::time::Duration::from_millis(200))
}

/// `intake:`: ways alerts come in besides `POST /v1/alerts/{source}`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntakeConfig {
    pub jetstream: Option<JetstreamIntake>,
}

/// Alerts consumed from a NATS JetStream stream by a durable pull consumer that every replica
/// shares.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JetstreamIntake {
    /// `nats://host:4222` or `tls://host:4222` (several, comma-separated, for a cluster).
    pub url: String,
    /// A `.creds` file (a user JWT and its nkey seed): the account's subject permissions are what
    /// authenticates Cordon (docs/streams.md).
    pub credentials_file: Option<PathBuf>,
    /// Or a user and password.
    pub user: Option<String>,
    pub password: Option<Secret>,
    /// Or a token.
    pub token: Option<Secret>,
    /// A PEM file of certificate authorities for `tls://` servers.
    pub ca_file: Option<PathBuf>,
    /// The stream holding the alerts (it must exist, and take `{subject}.>`).
    pub stream: String,
    /// The durable consumer's name (default `cordon`); created when missing. Replicas naming the
    /// same consumer share its messages.
    #[serde(default = "default_consumer")]
    pub consumer: String,
    /// Alerts are published to `{subject}.{source}` (default `cordon.alerts`, so
    /// `cordon.alerts.falco`), the body as the source sends it over HTTP.
    #[serde(default = "default_in_subject")]
    pub subject: String,
    /// The sources taken (default: every source Cordon knows). A subject naming another is
    /// refused (terminated, logged, counted).
    #[serde(default)]
    pub sources: Vec<String>,
    /// Messages fetched and stored at once per worker (default 256).
    #[serde(default = "default_fetch")]
    pub batch: usize,
    /// Fetch loops of this replica (default 2).
    #[serde(default = "default_in_workers")]
    pub workers: usize,
    /// Messages handed out and not yet acknowledged, over all replicas (default 8192): the
    /// back-pressure bound. The stream keeps the rest.
    #[serde(default = "default_max_ack_pending")]
    pub max_ack_pending: i64,
    /// An unacknowledged message is handed out again after this long (default `30s`): the time a
    /// crashed replica's messages wait before another takes them.
    #[serde(default = "default_ack_wait")]
    pub ack_wait: HumanDuration,
}

fn default_consumer() -> String {
    "cordon".to_owned()
}

fn default_in_subject() -> String {
    "cordon.alerts".to_owned()
}

fn default_fetch() -> usize {
    256
}

fn default_in_workers() -> usize {
    2
}

fn default_max_ack_pending() -> i64 {
    8192
}

fn default_ack_wait() -> HumanDuration {
    HumanDuration::secs(30)
}
