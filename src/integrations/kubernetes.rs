//! The `kubernetes` auth kind and the `kube()` host function (integrations/kubernetes/README.md).
//!
//! Each configured cluster is reached with a client of its own: the cluster's CA (and only it,
//! when one is given), the client certificate when there is one, and the bearer token, read again
//! from its file on every request so a rotated service-account token is picked up. A script
//! names a cluster and an API path; the server URL always comes from the config, so nothing a
//! script passes (or an alert carries) can send a request, or a token, anywhere else.
//!
//! Where the credentials come from, per cluster:
//! - `in_cluster: true`: the pod's service account (`/var/run/secrets/kubernetes.io/serviceaccount/
//!   {token,ca.crt}`, `https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT`); `server`,
//!   `ca_file` and `token_file` override each part;
//! - `kubeconfig` (+ `context`, default the current one): a token, a token file or a client
//!   certificate, the CA as data or a file. A user that runs a program (`exec`) or a plugin
//!   (`auth-provider`) is refused when the config loads: Cordon runs no program a file names;
//! - `server` with `ca_file` and `token`, `token_file` or `client_certificate_file` +
//!   `client_key_file`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};

use super::host::HostError;
use super::{Integration, REDACTED};
use crate::config::Secret;
use crate::failure::Failure;

/// Where a pod's service account is mounted.
const SERVICE_ACCOUNT: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// Where refusals of the cluster's address point (the server is operator config).
const SERVER_HINT: &str = "integrations.credentials.<name>.clusters.<cluster>";

/// How Cordon reaches one cluster (`integrations.credentials.<name>.clusters.<cluster>`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// Use the service account of the pod Cordon runs in. `server`, `ca_file` and `token_file`
    /// override where it is read from.
    #[serde(default)]
    pub in_cluster: bool,
    /// A kubeconfig file to take the server, CA and user from.
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use (default: its `current-context`).
    pub context: Option<String>,
    /// The API server, `https://host[:port]`.
    pub server: Option<String>,
    /// The CA bundle (PEM) the API server's certificate must chain to. Without one, the public
    /// web roots are used.
    pub ca_file: Option<PathBuf>,
    /// A bearer token.
    pub token: Option<Secret>,
    /// A file holding the bearer token, read again on every request (rotated tokens).
    pub token_file: Option<PathBuf>,
    /// A client certificate (PEM) and its key, for clusters that authenticate by certificate.
    pub client_certificate_file: Option<PathBuf>,
    pub client_key_file: Option<PathBuf>,
}

impl ClusterConfig {
    /// The secrets written in the config itself.
    pub fn secrets(&self) -> impl Iterator<Item = &Secret> {
        self.token.iter()
    }
}

/// Every configured cluster, by name.
pub struct Clusters {
    by_name: BTreeMap<String, Cluster>,
    default: Option<String>,
}

struct Cluster {
    /// The API server's base URL (a path prefix, as some proxies use, is kept).
    server: url::Url,
    http: reqwest::Client,
    token: Token,
}

enum Token {
    None,
    Static(Secret),
    File(PathBuf),
}

impl std::fmt::Debug for Clusters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let servers: BTreeMap<&str, &str> = self
            .by_name
            .iter()
            .map(|(name, c)| (name.as_str(), c.server.as_str()))
            .collect();
        f.debug_struct("Clusters")
            .field("clusters", &servers)
            .field("default", &self.default)
            .finish()
    }
}

/// What one cluster resolved to, before its client is built.
#[derive(Debug, Default)]
struct Resolved {
    server: String,
    ca: Option<Vec<u8>>,
    token: Option<TokenSource>,
    identity: Option<(Vec<u8>, Vec<u8>)>,
}

#[derive(Debug)]
enum TokenSource {
    Static(Secret),
    File(PathBuf),
}

impl Clusters {
    /// The clusters of credentials entry `key`: every file named is read now, and every problem
    /// (a missing file, an `exec` user, a server that is not https) is an error naming the
    /// cluster.
    pub fn build(
        key: &str,
        clusters: &BTreeMap<String, ClusterConfig>,
        default: Option<&str>,
    ) -> Result<Clusters, String> {
        Clusters::build_with(key, clusters, default, &|name| std::env::var(name).ok())
    }

    fn build_with(
        key: &str,
        clusters: &BTreeMap<String, ClusterConfig>,
        default: Option<&str>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Clusters, String> {
        if clusters.is_empty() {
            return Err(format!(
                "integrations.credentials.{key} has no `clusters`, which auth `kubernetes` needs"
            ));
        }
        if let Some(default) = default
            && !clusters.contains_key(default)
        {
            return Err(format!(
                "integrations.credentials.{key}.default_cluster is `{default}`, which is not one of its clusters ({})",
                names(clusters.keys())
            ));
        }
        let mut by_name = BTreeMap::new();
        for (name, config) in clusters {
            let place = format!("integrations.credentials.{key}.clusters.{name}");
            let resolved = resolve(config, env).map_err(|e| format!("{place}: {e}"))?;
            let cluster = Cluster::new(resolved).map_err(|e| format!("{place}: {e}"))?;
            by_name.insert(name.clone(), cluster);
        }
        let default = default
            .map(str::to_owned)
            .or_else(|| (by_name.len() == 1).then(|| by_name.keys().next().cloned())?);
        Ok(Clusters { by_name, default })
    }

    /// The cluster a request names; empty or absent: the default one.
    fn pick(&self, name: Option<&str>) -> Result<(&str, &Cluster), HostError> {
        let name = match name.filter(|n| !n.is_empty()) {
            Some(name) => name,
            None => self.default.as_deref().ok_or_else(|| {
                HostError::permanent(format!(
                    "kube: no cluster named and no default_cluster configured; the clusters are {}",
                    names(self.by_name.keys())
                ))
            })?,
        };
        self.by_name
            .get_key_value(name)
            .map(|(n, c)| (n.as_str(), c))
            .ok_or_else(|| {
                HostError::permanent(format!(
                    "kube: unknown cluster `{}`; the configured clusters are {}",
                    shown(name),
                    names(self.by_name.keys())
                ))
            })
    }
}

/// `a, b, c` in backquotes.
fn names<'a>(keys: impl Iterator<Item = &'a String>) -> String {
    keys.map(|k| format!("`{k}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A name from a script, cut short and without control characters, for an error message.
fn shown(text: &str) -> String {
    text.chars().filter(|c| !c.is_control()).take(100).collect()
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read the {what} {}: {e}", path.display()))
}

/// The server, CA and credentials of one cluster, from wherever its config says.
fn resolve(
    config: &ClusterConfig,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Resolved, String> {
    let sources = [config.in_cluster, config.kubeconfig.is_some()];
    if sources.iter().filter(|s| **s).count() > 1 {
        return Err("give either `in_cluster: true` or `kubeconfig`, not both".into());
    }
    if config.context.is_some() && config.kubeconfig.is_none() {
        return Err("`context` names a context of a `kubeconfig`, and there is none".into());
    }
    let mut resolved = if let Some(path) = &config.kubeconfig {
        from_kubeconfig(path, config.context.as_deref())?
    } else if config.in_cluster {
        let server = match &config.server {
            Some(server) => server.clone(),
            None => in_cluster_server(env)?,
        };
        let ca_file = config
            .ca_file
            .clone()
            .unwrap_or_else(|| Path::new(SERVICE_ACCOUNT).join("ca.crt"));
        let token_file = config
            .token_file
            .clone()
            .unwrap_or_else(|| Path::new(SERVICE_ACCOUNT).join("token"));
        Resolved {
            server,
            ca: Some(read(&ca_file, "CA file")?),
            token: Some(TokenSource::File(token_file)),
            identity: None,
        }
    } else {
        Resolved {
            server: config
                .server
                .clone()
                .ok_or("needs `server` (or `in_cluster: true`, or a `kubeconfig`)".to_owned())?,
            ..Resolved::default()
        }
    };
    // Explicit settings override what a kubeconfig says.
    if !config.in_cluster {
        if let Some(server) = &config.server {
            resolved.server = server.clone();
        }
        if let Some(ca) = &config.ca_file {
            resolved.ca = Some(read(ca, "CA file")?);
        }
        if let Some(token) = &config.token {
            resolved.token = Some(TokenSource::Static(token.clone()));
        }
        if let Some(file) = &config.token_file {
            resolved.token = Some(TokenSource::File(file.clone()));
        }
    } else if config.token.is_some() {
        return Err("`in_cluster` reads the service account's token file; give `token_file` to read another one, not `token`".into());
    }
    match (&config.client_certificate_file, &config.client_key_file) {
        (Some(cert), Some(key)) => {
            resolved.identity = Some((read(cert, "client certificate")?, read(key, "client key")?));
        }
        (None, None) => {}
        _ => {
            return Err("`client_certificate_file` and `client_key_file` go together".into());
        }
    }
    if let Some(TokenSource::File(file)) = &resolved.token {
        // Read once now, so a wrong path fails at start rather than at the first incident.
        let token = read(file, "token file")?;
        if String::from_utf8_lossy(&token).trim().is_empty() {
            return Err(format!("the token file {} is empty", file.display()));
        }
    }
    if resolved.token.is_none() && resolved.identity.is_none() {
        return Err(
            "has no credentials: give a `token`, a `token_file` or a client certificate".into(),
        );
    }
    Ok(resolved)
}

/// `https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT`, as client-go builds it.
fn in_cluster_server(env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let host = env("KUBERNETES_SERVICE_HOST").filter(|h| !h.is_empty());
    let port = env("KUBERNETES_SERVICE_PORT").filter(|p| !p.is_empty());
    let (Some(host), Some(port)) = (host, port) else {
        return Err("`in_cluster: true`, but KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not set: Cordon is not running in a pod (give `server` to say where the API server is)".into());
    };
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host
    };
    Ok(format!("https://{host}:{port}"))
}

/// One entry of a kubeconfig list (`clusters`, `users`, `contexts`) by name.
fn named<'a>(config: &'a Value, list: &str, name: &str, inner: &str) -> Result<&'a Value, String> {
    config[list]
        .as_array()
        .and_then(|items| items.iter().find(|i| i["name"] == name))
        .map(|item| &item[inner])
        .ok_or_else(|| format!("the kubeconfig has no {inner} named `{name}`"))
}

/// A kubeconfig's `<field>-data` (base64) or `<field>` (a file, relative to the kubeconfig).
fn data_or_file(
    entry: &Value,
    field: &str,
    dir: &Path,
    what: &str,
) -> Result<Option<Vec<u8>>, String> {
    use base64::Engine as _;
    if let Some(data) = entry[format!("{field}-data")].as_str() {
        return base64::engine::general_purpose::STANDARD
            .decode(data.trim())
            .map(Some)
            .map_err(|_| format!("the kubeconfig's {field}-data is not base64"));
    }
    match entry[field].as_str() {
        Some(file) => read(&dir.join(file), what).map(Some),
        None => Ok(None),
    }
}

fn from_kubeconfig(path: &Path, context: Option<&str>) -> Result<Resolved, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the kubeconfig {}: {e}", path.display()))?;
    let config: Value = serde_yaml::from_str(&text)
        .map_err(|e| format!("the kubeconfig {} is not valid YAML: {e}", path.display()))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let context_name = match context {
        Some(name) => name.to_owned(),
        None => config["current-context"]
            .as_str()
            .filter(|c| !c.is_empty())
            .ok_or("the kubeconfig has no current-context: name one with `context`")?
            .to_owned(),
    };
    let ctx = named(&config, "contexts", &context_name, "context")?;
    let cluster_name = ctx["cluster"]
        .as_str()
        .ok_or_else(|| format!("context `{context_name}` names no cluster"))?;
    let user_name = ctx["user"]
        .as_str()
        .ok_or_else(|| format!("context `{context_name}` names no user"))?;
    let cluster = named(&config, "clusters", cluster_name, "cluster")?;
    let user = named(&config, "users", user_name, "user")?;

    if cluster["insecure-skip-tls-verify"] == true {
        return Err(format!(
            "cluster `{cluster_name}` has insecure-skip-tls-verify: Cordon always verifies the API server's certificate; give its CA"
        ));
    }
    for unsupported in ["proxy-url", "tls-server-name"] {
        if !cluster[unsupported].is_null() {
            return Err(format!(
                "cluster `{cluster_name}` sets `{unsupported}`, which Cordon does not support"
            ));
        }
    }
    if !user["exec"].is_null() {
        let command = user["exec"]["command"].as_str().unwrap_or("a program");
        return Err(format!(
            "user `{user_name}` gets its credentials by running `{command}` (an exec plugin); Cordon does not run programs named in a kubeconfig. Give the user a token, a token file or a client certificate (a service account: see integrations/kubernetes/README.md)"
        ));
    }
    if !user["auth-provider"].is_null() {
        return Err(format!(
            "user `{user_name}` uses an auth-provider plugin, which Cordon does not run (Kubernetes removed them in 1.26); give the user a token, a token file or a client certificate"
        ));
    }
    if !user["username"].is_null() || !user["password"].is_null() {
        return Err(format!(
            "user `{user_name}` has a username and password; Kubernetes removed basic auth in 1.19: give a token or a client certificate"
        ));
    }
    let server = cluster["server"]
        .as_str()
        .ok_or_else(|| format!("cluster `{cluster_name}` has no server"))?
        .to_owned();
    let ca = data_or_file(cluster, "certificate-authority", dir, "CA file")?;
    let token = match (user["token"].as_str(), user["tokenFile"].as_str()) {
        (Some(token), _) => Some(TokenSource::Static(Secret::new(token))),
        (None, Some(file)) => Some(TokenSource::File(dir.join(file))),
        (None, None) => None,
    };
    let cert = data_or_file(user, "client-certificate", dir, "client certificate")?;
    let key = data_or_file(user, "client-key", dir, "client key")?;
    let identity = match (cert, key) {
        (Some(cert), Some(key)) => Some((cert, key)),
        (None, None) => None,
        _ => {
            return Err(format!(
                "user `{user_name}` has a client certificate without a key, or a key without a certificate"
            ));
        }
    };
    Ok(Resolved {
        server,
        ca,
        token,
        identity,
    })
}

impl Cluster {
    fn new(resolved: Resolved) -> Result<Cluster, String> {
        let server = url::Url::parse(&resolved.server)
            .map_err(|e| format!("the server `{}` is not a URL: {e}", resolved.server))?;
        if server.scheme() != "https" {
            return Err(format!(
                "the server `{server}` is not https: the API server is reached over TLS only, so its token never crosses the network in clear"
            ));
        }
        if server.query().is_some() || !server.username().is_empty() || server.password().is_some()
        {
            return Err(format!(
                "the server `{server}` must be https://host[:port][/path], without a user or query"
            ));
        }
        let host = server
            .host_str()
            .ok_or_else(|| format!("the server `{server}` has no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        // The operator wrote this address (or the cluster put it in KUBERNETES_SERVICE_HOST), and
        // no script can change where a request goes: it is allowed whatever it resolves to,
        // private and loopback addresses included, as an endpoint override is.
        let mut egress = crate::actions::egress::Egress::default();
        egress.allow_host(&host);
        let mut builder = egress.builder(SERVER_HINT).use_rustls_tls();
        if let Some(ca) = &resolved.ca {
            let certs = reqwest::Certificate::from_pem_bundle(ca)
                .map_err(|_| "the CA is not a PEM certificate bundle".to_owned())?;
            if certs.is_empty() {
                return Err("the CA holds no PEM certificate".into());
            }
            builder = builder.tls_built_in_root_certs(false);
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        if let Some((cert, key)) = &resolved.identity {
            let mut pem = cert.clone();
            pem.push(b'\n');
            pem.extend_from_slice(key);
            let identity = reqwest::Identity::from_pem(&pem).map_err(|_| {
                "the client certificate and key are not a PEM certificate and private key"
                    .to_owned()
            })?;
            builder = builder.identity(identity);
        }
        let http = builder
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(Cluster {
            server,
            http,
            token: match resolved.token {
                None => Token::None,
                Some(TokenSource::Static(s)) => Token::Static(s),
                Some(TokenSource::File(f)) => Token::File(f),
            },
        })
    }

    /// The bearer token for this request: a token file is read again each time, so a rotated
    /// service-account token (the kubelet rewrites it about hourly) is used at once.
    async fn token(&self) -> Result<Option<Secret>, HostError> {
        match &self.token {
            Token::None => Ok(None),
            Token::Static(secret) => Ok(Some(secret.clone())),
            Token::File(path) => {
                let text = tokio::fs::read_to_string(path).await.map_err(|e| {
                    HostError::retryable(format!(
                        "kube: cannot read the token file {}: {e}",
                        path.display()
                    ))
                })?;
                let token = text.trim();
                if token.is_empty() {
                    return Err(HostError::retryable(format!(
                        "kube: the token file {} is empty",
                        path.display()
                    )));
                }
                Ok(Some(Secret::new(token)))
            }
        }
    }
}

/// Checks a script's API path: `/api/...` or `/apis/...`, plain segments only (no `.` or `..`,
/// no empty segment, no escapes, no query), so it can only name a resource of this cluster.
fn checked_path(path: &str) -> Result<&str, HostError> {
    let refuse =
        |why: &str| HostError::permanent(format!("kube: the path `{}` {why}", shown(path)));
    if !(path.starts_with("/api/") || path.starts_with("/apis/")) {
        return Err(refuse(
            "must start with /api/ or /apis/ (the server comes from the config; a script gives only the path)",
        ));
    }
    if path.len() > 1024 {
        return Err(refuse("is too long"));
    }
    for segment in path[1..].split('/') {
        if segment.is_empty() || segment == "." || segment == ".." {
            return Err(refuse("has an empty, `.` or `..` segment"));
        }
        if !segment
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._:~".contains(c))
        {
            return Err(refuse(
                "may hold only letters, digits and - . _ : ~ between slashes (pass the query as `query`)",
            ));
        }
    }
    Ok(path)
}

/// The content types a request body may have.
const CONTENT_TYPES: [&str; 4] = [
    "application/json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
    "application/json-patch+json",
];

fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let _ = write!(text, ": {cause}");
        source = cause.source();
    }
    text
}

impl Integration {
    fn clusters(&self) -> Result<&Clusters, HostError> {
        match &self.auth {
            Ok(super::auth::Auth::Kubernetes(clusters)) => Ok(clusters),
            Ok(_) => Err(HostError::permanent(format!(
                "kube: integration `{}` does not use auth `kubernetes`",
                self.manifest.name
            ))),
            Err(e) => Err(HostError::from(e.clone())),
        }
    }

    /// The configured name of the cluster `name` picks (`""`: the default one), without a request.
    pub(super) fn kube_cluster(&self, name: &str) -> Result<String, HostError> {
        let (name, _) = self.clusters()?.pick(Some(name))?;
        Ok(name.to_owned())
    }

    /// A request to a configured cluster's API (docs/integrations.md, `kube`).
    pub(super) async fn kube(&self, request: &Value) -> Result<Value, HostError> {
        let clusters = self.clusters()?;
        let text = |key: &str| request.get(key).and_then(Value::as_str);
        let (name, cluster) = clusters.pick(text("cluster"))?;
        let path = checked_path(text("path").ok_or_else(|| {
            HostError::permanent("kube: `path` is required (/api/v1/... or /apis/...)")
        })?)?;
        let method = text("method").unwrap_or("GET").to_ascii_uppercase();
        let method = match method.as_str() {
            "GET" | "HEAD" | "POST" | "PUT" | "PATCH" | "DELETE" => {
                reqwest::Method::from_bytes(method.as_bytes()).expect("a known method")
            }
            _ => {
                return Err(HostError::permanent(format!(
                    "kube: `{}` is not one of GET, HEAD, POST, PUT, PATCH, DELETE",
                    shown(&method)
                )));
            }
        };
        let mut url = cluster.server.clone();
        url.set_path(&format!(
            "{}{path}",
            cluster.server.path().trim_end_matches('/')
        ));
        if let Some(query) = request.get("query").and_then(Value::as_object) {
            let mut pairs = url.query_pairs_mut();
            for (key, value) in query {
                let value = match value {
                    Value::String(s) => s.clone(),
                    Value::Null => continue,
                    other => other.to_string(),
                };
                pairs.append_pair(key, &value);
            }
        }
        // What the script built can only change the path and query, never where it goes.
        debug_assert_eq!(url.origin(), cluster.server.origin());
        let timeout = request
            .get("timeout")
            .and_then(Value::as_f64)
            .filter(|t| *t > 0.0)
            .map_or(Duration::from_secs(30), |t| {
                Duration::from_secs_f64(t.min(300.0))
            });
        let mut builder = cluster
            .http
            .request(method.clone(), url)
            .timeout(timeout)
            .header(reqwest::header::ACCEPT, "application/json, */*");
        if let Some(body) = request.get("json").filter(|b| !b.is_null()) {
            let content_type = match text("content_type") {
                Some(given) if CONTENT_TYPES.contains(&given) => given,
                Some(given) => {
                    return Err(HostError::permanent(format!(
                        "kube: content_type `{}` is not one of {}",
                        shown(given),
                        CONTENT_TYPES.join(", ")
                    )));
                }
                None if method == reqwest::Method::PATCH => "application/merge-patch+json",
                None => "application/json",
            };
            builder = builder
                .header(reqwest::header::CONTENT_TYPE, content_type)
                .body(body.to_string());
        }
        let token = cluster.token().await?;
        if let Some(token) = &token {
            let mut value =
                reqwest::header::HeaderValue::from_str(&format!("Bearer {}", token.expose()))
                    .map_err(|_| {
                        HostError::permanent(format!(
                            "kube: the token of cluster `{name}` is not a valid header value"
                        ))
                    })?;
            value.set_sensitive(true);
            builder = builder.header(reqwest::header::AUTHORIZATION, value);
        }
        let scrub = |text: String| match &token {
            Some(token) if !token.expose().is_empty() => text.replace(token.expose(), REDACTED),
            _ => text,
        };
        let response = builder.send().await.map_err(|e| {
            if let Some(refused) = crate::actions::egress::refused(&e) {
                return HostError::permanent(format!("kube: {refused}"));
            }
            HostError::new(
                Failure::from_transport(&e),
                scrub(format!(
                    "kube: the request to cluster `{name}` failed: {}",
                    chain(&e.without_url())
                )),
            )
        })?;
        let status = response.status();
        // An eviction a disruption budget forbids for now answers 429: the script reports it.
        let eviction = method == reqwest::Method::POST && path.ends_with("/eviction");
        if let Some(failure) = Failure::from_response(status.as_u16(), response.headers())
            && failure.is_transient()
            && !(eviction && status.as_u16() == 429)
        {
            return Err(HostError::new(
                failure,
                format!("cluster `{name}` answered {status} to {method} {path}; try again later"),
            ));
        }
        let bytes = super::read_answer(
            response,
            self.max_response_bytes,
            &format!("kube: from cluster `{name}`"),
        )
        .await?;
        let body = scrub(String::from_utf8_lossy(&bytes).into_owned());
        let parsed = serde_json::from_str::<Value>(&body).unwrap_or(Value::Null);
        Ok(json!({
            "status": status.as_u16(),
            "json": parsed,
            "body": body,
            "bytes": bytes.len(),
            "cluster": name,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_api_resources_only() {
        for good in [
            "/api/v1/namespaces/default/pods/web-1",
            "/apis/apps/v1/namespaces/prod/deployments/web/scale",
            "/apis/networking.k8s.io/v1/namespaces/a/networkpolicies",
            "/api/v1/nodes/ip-10-0-1-2.eu-west-1.compute.internal",
        ] {
            assert!(checked_path(good).is_ok(), "{good}");
        }
        for bad in [
            "https://evil.example.com/api/v1/pods",
            "//evil.example.com/api/v1/pods",
            "/api/v1/../../_fake/reset",
            "/api/v1/namespaces/./pods",
            "/api/v1//pods",
            "/api/v1/pods?watch=true",
            "/api/v1/pods#x",
            "/api/v1/pods/%2e%2e",
            "/metrics",
            "/apis",
            "api/v1/pods",
            "/api/v1/pods/a b",
            "/api/v1/pods/a\nHost: x",
        ] {
            let error = checked_path(bad).unwrap_err();
            assert!(!error.failure.is_transient(), "{bad}");
            assert!(!error.message.contains('\n'), "{}", error.message);
        }
    }

    #[test]
    fn the_in_cluster_server_comes_from_the_service_environment() {
        let env = |name: &str| match name {
            "KUBERNETES_SERVICE_HOST" => Some("10.96.0.1".to_owned()),
            "KUBERNETES_SERVICE_PORT" => Some("443".to_owned()),
            _ => None,
        };
        assert_eq!(in_cluster_server(&env).unwrap(), "https://10.96.0.1:443");
        let v6 = |name: &str| match name {
            "KUBERNETES_SERVICE_HOST" => Some("fd00::1".to_owned()),
            "KUBERNETES_SERVICE_PORT" => Some("6443".to_owned()),
            _ => None,
        };
        assert_eq!(in_cluster_server(&v6).unwrap(), "https://[fd00::1]:6443");
        let error = in_cluster_server(&|_| None).unwrap_err();
        assert!(error.contains("KUBERNETES_SERVICE_HOST"), "{error}");
    }
}
