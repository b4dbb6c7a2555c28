//! Where the data commands read: the local store, or the admin API of the server holding it (see
//! [`super::Source`]); and the POST by which the other commands ask that server to change
//! something.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, anyhow, bail};
use cordon::alert::{Alert, Incident};
use cordon::audit::AuditEntry;
use cordon::engine::run::Run;
use cordon::store::{AlertQuery, IncidentQuery, RunQuery, Store, StoreError};
use reqwest::{RequestBuilder, Response, StatusCode};
use serde_json::Value;

use super::commands::load_config;

/// Opens the reader for the config at `config_path` (or the server at `server`), runs `read` on
/// it, and closes it: the local store is released before the result is looked at.
pub(super) async fn read<T>(
    config_path: &Path,
    server: Option<&str>,
    read: impl AsyncFnOnce(&Reader) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let reader = Reader::open(config_path, server).await?;
    let result = read(&reader).await;
    reader.close().await;
    result
}

impl super::Source {
    /// [`read`] from where `--server` says.
    pub(super) async fn read<T>(
        &self,
        config_path: &Path,
        read: impl AsyncFnOnce(&Reader) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        self::read(config_path, self.server.as_deref(), read).await
    }
}

/// The store, or the admin API of the server holding it.
pub(super) enum Reader {
    Local(Arc<dyn Store>),
    Remote {
        base: String,
        token: Option<String>,
        http: reqwest::Client,
    },
}

impl Reader {
    async fn open(config_path: &Path, server: Option<&str>) -> anyhow::Result<Reader> {
        let config =
            load_config(config_path).map_err(|_| anyhow!("the config has errors (see above)"))?;
        let token = credential(&config);
        let remote = |base: String| Reader::Remote {
            base,
            token: token.clone(),
            http: reqwest::Client::new(),
        };
        if let Some(url) = server {
            return Ok(remote(url.trim_end_matches('/').to_owned()));
        }
        let metrics = Arc::new(cordon::telemetry::Metrics::new());
        match cordon::store::open(&config.store, &config.grouping, metrics).await {
            Ok(store) => Ok(Reader::Local(store)),
            Err(StoreError::Locked(_)) => {
                // The running server records where it listens; else use the configured address.
                let recorded = std::fs::read_to_string(cordon::app::address_file(&config)).ok();
                let base = recorded.map(|b| b.trim().to_owned()).unwrap_or_else(|| {
                    let mut addr = config.server.listen;
                    if addr.ip().is_unspecified() {
                        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
                    }
                    format!("http://{addr}")
                });
                Ok(remote(base))
            }
            Err(e) => Err(e).context("cannot open the store"),
        }
    }

    async fn get(&self, path: &str, query: &[(&str, String)]) -> anyhow::Result<Option<Value>> {
        let Reader::Remote { base, token, http } = self else {
            bail!("not a remote reader")
        };
        let request = http.get(format!("{base}{path}")).query(query);
        let (status, body) = json_answer(send(request, token.as_deref(), base).await?).await?;
        if status == StatusCode::NOT_FOUND && body["error"] == "not_found" {
            return Ok(None);
        }
        if !status.is_success() {
            bail!(
                "the server answered {status}: {}",
                body["message"].as_str().unwrap_or("")
            );
        }
        Ok(Some(body))
    }

    /// The list `field` of the server's answer to `path`.
    async fn list<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
        field: &str,
    ) -> anyhow::Result<Vec<T>> {
        let body = self.get(path, query).await?.unwrap_or_default();
        decode(&body, field)
    }

    async fn close(self) {
        if let Reader::Local(store) = self {
            let _ = store.close().await;
        }
    }

    pub(super) async fn alerts(&self, q: &AlertQuery) -> anyhow::Result<Vec<Alert>> {
        match self {
            Reader::Local(store) => Ok(store.alerts(q).await?),
            Reader::Remote { .. } => {
                let mut query = vec![("limit", q.limit.to_string())];
                query.extend(q.source.clone().map(|s| ("source", s)));
                query.extend(q.incident_id.clone().map(|i| ("incident", i)));
                self.list("/v1/alerts", &query, "alerts").await
            }
        }
    }

    /// Counts and sizes per kind of record (`cordon store stats`).
    pub(super) async fn store_stats(&self) -> anyhow::Result<cordon::store::StoreStats> {
        match self {
            Reader::Local(store) => Ok(store.stats().await?),
            Reader::Remote { .. } => {
                let body = self.get("/v1/store/stats", &[]).await?.unwrap_or_default();
                Ok(serde_json::from_value(body)?)
            }
        }
    }

    pub(super) async fn alert(&self, id: &str) -> anyhow::Result<Option<Alert>> {
        match self {
            Reader::Local(store) => Ok(store.alert(id).await?),
            Reader::Remote { .. } => self
                .get(&format!("/v1/alerts/{id}"), &[])
                .await?
                .map(|body| decode(&body, "alert"))
                .transpose(),
        }
    }

    pub(super) async fn incidents(&self, q: &IncidentQuery) -> anyhow::Result<Vec<Incident>> {
        match self {
            Reader::Local(store) => Ok(store.incidents(q).await?),
            Reader::Remote { .. } => {
                let mut query = vec![("limit", q.limit.to_string())];
                query.extend(q.status.map(|s| ("status", s.to_string())));
                self.list("/v1/incidents", &query, "incidents").await
            }
        }
    }

    /// An incident with its alerts.
    pub(super) async fn incident(
        &self,
        id: &str,
    ) -> anyhow::Result<Option<(Incident, Vec<Alert>)>> {
        match self {
            Reader::Local(store) => {
                let Some(incident) = store.incident(id).await? else {
                    return Ok(None);
                };
                let query = AlertQuery {
                    incident_id: Some(id.to_owned()),
                    ..AlertQuery::default()
                };
                Ok(Some((incident, store.alerts(&query).await?)))
            }
            Reader::Remote { .. } => self
                .get(&format!("/v1/incidents/{id}"), &[])
                .await?
                .map(|body| Ok((decode(&body, "incident")?, decode(&body, "alerts")?)))
                .transpose(),
        }
    }

    /// A page of search hits (`cordon search`), as the API answers it.
    pub(super) async fn search(&self, search: &cordon::search::Search) -> anyhow::Result<Value> {
        match self {
            Reader::Local(store) => {
                let page = cordon::search::run(store.as_ref(), search, chrono::Utc::now()).await?;
                Ok(serde_json::to_value(page)?)
            }
            Reader::Remote { .. } => {
                let mut query = vec![("q", search.q.clone())];
                query.extend(search.since.clone().map(|s| ("since", s)));
                query.extend(search.until.clone().map(|s| ("until", s)));
                query.extend(search.limit.map(|l| ("limit", l.to_string())));
                query.extend(search.cursor.clone().map(|c| ("cursor", c)));
                Ok(self.get("/v1/search", &query).await?.unwrap_or_default())
            }
        }
    }

    /// Everything about one entity over a window (`cordon hunt`), as the API answers it.
    pub(super) async fn hunt(&self, entity: &str, window: &str) -> anyhow::Result<Value> {
        match self {
            Reader::Local(store) => {
                let found = cordon::search::hunt::hunt(
                    store.as_ref(),
                    entity,
                    Some(window),
                    chrono::Utc::now(),
                )
                .await?;
                Ok(serde_json::to_value(found)?)
            }
            Reader::Remote { .. } => {
                let segment: String = entity
                    .bytes()
                    .map(|b| match b {
                        b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                            (b as char).to_string()
                        }
                        other => format!("%{other:02X}"),
                    })
                    .collect();
                let path = format!("/v1/hunt/{segment}");
                let query = vec![("window", window.to_owned())];
                Ok(self.get(&path, &query).await?.unwrap_or_default())
            }
        }
    }

    pub(super) async fn runs(&self, q: &RunQuery) -> anyhow::Result<Vec<Run>> {
        match self {
            Reader::Local(store) => Ok(store.runs(q).await?),
            Reader::Remote { .. } => {
                let mut query = vec![("limit", q.limit.to_string())];
                query.extend(q.status.map(|s| ("status", s.to_string())));
                query.extend(q.playbook.clone().map(|p| ("playbook", p)));
                self.list("/v1/runs", &query, "runs").await
            }
        }
    }

    /// A run with its audit trail.
    pub(super) async fn run(&self, id: &str) -> anyhow::Result<Option<(Run, Vec<AuditEntry>)>> {
        match self {
            Reader::Local(store) => match store.run(id).await? {
                Some(run) => Ok(Some((run, store.audit_entries(Some(id), 0).await?))),
                None => Ok(None),
            },
            Reader::Remote { .. } => self
                .get(&format!("/v1/runs/{id}"), &[])
                .await?
                .map(|body| Ok((decode(&body, "run")?, decode(&body, "audit")?)))
                .transpose(),
        }
    }

    /// An incident's report, Markdown or HTML.
    pub(super) async fn report(&self, id: &str, html: bool) -> anyhow::Result<Option<String>> {
        use cordon::tickets::report::{Format, Report, render};
        let format = if html { Format::Html } else { Format::Markdown };
        match self {
            Reader::Local(store) => Ok(Report::gather(store.as_ref(), id)
                .await?
                .map(|r| render(&r, format))),
            Reader::Remote { base, token, http } => {
                let request = http
                    .get(format!("{base}/v1/incidents/{id}/report"))
                    .query(&[("format", if html { "html" } else { "markdown" })]);
                let response = send(request, token.as_deref(), base).await?;
                let status = response.status();
                let text = response.text().await.context("unreadable answer")?;
                if status == StatusCode::NOT_FOUND {
                    return Ok(None);
                }
                if !status.is_success() {
                    let body: Value = serde_json::from_str(&text).unwrap_or_default();
                    bail!(
                        "the server answered {status}: {}",
                        body["message"].as_str().unwrap_or("")
                    );
                }
                Ok(Some(text))
            }
        }
    }

    /// The audit chain check, shaped as `VerifyReport::summary`.
    pub(super) async fn audit_report(&self) -> anyhow::Result<Value> {
        match self {
            Reader::Local(store) => Ok(store.audit_verify().await?.summary()),
            Reader::Remote { .. } => {
                Ok(self.get("/v1/audit/verify", &[]).await?.unwrap_or_default())
            }
        }
    }
}

impl Reader {
    /// The audit chain check, and the entry stored under `seq` (its sequence number and hash).
    pub(super) async fn audit_report_at(
        &self,
        seq: u64,
    ) -> anyhow::Result<(Value, Option<(u64, String)>)> {
        match self {
            Reader::Local(store) => {
                let report = store.audit_verify().await?.summary();
                let entry = store.audit_entry(seq).await?;
                Ok((report, entry.map(|e| (e.seq, e.hash))))
            }
            Reader::Remote { .. } => {
                let body = self
                    .get("/v1/audit/verify", &[("seq", seq.to_string())])
                    .await?
                    .unwrap_or_default();
                let at = &body["at_seq"];
                let entry = at["seq"]
                    .as_u64()
                    .zip(at["hash"].as_str().map(str::to_owned));
                Ok((body, entry))
            }
        }
    }

    /// A signed checkpoint of the chain's head, queued for the sinks: made here with the config's
    /// key, or by the server holding the store.
    pub(super) async fn checkpoint(&self, config_path: &Path) -> anyhow::Result<Value> {
        match self {
            Reader::Local(store) => {
                let config = load_config(config_path)
                    .map_err(|_| anyhow!("the config has errors (see above)"))?;
                let (checkpoint, _) =
                    cordon::audit::sink::checkpoint_now(&config.audit, &**store, None).await?;
                Ok(serde_json::to_value(checkpoint)?)
            }
            Reader::Remote { base, token, http } => {
                let request = http.post(format!("{base}/v1/audit/checkpoints"));
                let (status, body) =
                    json_answer(send(request, token.as_deref(), base).await?).await?;
                if !status.is_success() {
                    bail!(
                        "the server answered {status}: {}",
                        body["message"].as_str().unwrap_or("")
                    );
                }
                Ok(body["checkpoint"].clone())
            }
        }
    }
}

/// `field` of a server answer, decoded.
fn decode<T: serde::de::DeserializeOwned>(body: &Value, field: &str) -> anyhow::Result<T> {
    serde_json::from_value(body[field].clone()).context("unexpected answer from the server")
}

/// POSTs to the running server's admin API (the `--server` URL, or the one the server recorded).
pub(super) async fn post(
    config_path: &Path,
    server: Option<&str>,
    path: &str,
    body: Value,
) -> anyhow::Result<Value> {
    call(config_path, server, reqwest::Method::POST, path, Some(body)).await
}

/// Sends a request to the running server's API with the CLI's credential; the JSON answer, or an
/// error with the server's message.
pub(super) async fn call(
    config_path: &Path,
    server: Option<&str>,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> anyhow::Result<Value> {
    let config =
        load_config(config_path).map_err(|_| anyhow!("the config has errors (see above)"))?;
    let base = server_base(&config, server)?;
    let mut request = reqwest::Client::new().request(method, format!("{base}{path}"));
    if let Some(body) = body {
        request = request.json(&body);
    }
    let token = credential(&config);
    let (status, body) = json_answer(send(request, token.as_deref(), &base).await?).await?;
    if !status.is_success() {
        let mut message = body["message"].as_str().unwrap_or("").to_owned();
        if let Some(errors) = body["errors"].as_array() {
            for e in errors {
                message.push('\n');
                message.push_str(e.as_str().unwrap_or_default());
            }
        }
        bail!("{message} ({status})");
    }
    Ok(body)
}

/// The running server's address: `--server`, the credentials file's, or the one the server
/// recorded beside its store.
pub(super) fn server_base(
    config: &cordon::config::Config,
    server: Option<&str>,
) -> anyhow::Result<String> {
    if let Some(url) = server {
        return Ok(url.trim_end_matches('/').to_owned());
    }
    std::fs::read_to_string(cordon::app::address_file(config))
        .map(|b| b.trim().to_owned())
        .or_else(|_| saved_credentials().and_then(|c| c.server).ok_or(()))
        .map_err(|_| {
            anyhow!(
                "no running server found for this config; start `cordon serve` or pass --server URL"
            )
        })
}

/// What `cordon login` saves.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(super) struct SavedCredentials {
    pub token: String,
    #[serde(default)]
    pub server: Option<String>,
}

/// Where `cordon login` saves the credential: `CORDON_CREDENTIALS`, else
/// `$XDG_CONFIG_HOME/cordon/credentials.json`, else `~/.config/cordon/credentials.json`.
pub(super) fn credentials_path() -> Option<std::path::PathBuf> {
    if let Some(path) = std::env::var_os("CORDON_CREDENTIALS") {
        return Some(path.into());
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".config"))
        })?;
    Some(base.join("cordon").join("credentials.json"))
}

pub(super) fn saved_credentials() -> Option<SavedCredentials> {
    let text = std::fs::read_to_string(credentials_path()?).ok()?;
    serde_json::from_str(&text).ok()
}

/// The credential the CLI sends: `CORDON_TOKEN`, else the one `cordon login` saved, else the
/// config's bootstrap admin token (which manages people and tokens only).
pub(super) fn credential(config: &cordon::config::Config) -> Option<String> {
    std::env::var("CORDON_TOKEN")
        .ok()
        .filter(|t| !t.trim().is_empty())
        .or_else(|| saved_credentials().map(|c| c.token))
        .or_else(|| {
            config
                .server
                .admin_token
                .as_ref()
                .map(|t| t.expose().to_owned())
        })
}

/// Sends `request` to the admin API at `base`, with the admin `token` when there is one.
async fn send(
    request: RequestBuilder,
    token: Option<&str>,
    base: &str,
) -> anyhow::Result<Response> {
    let request = match token {
        Some(token) => request.bearer_auth(token),
        None => request,
    };
    request
        .send()
        .await
        .with_context(|| format!("cannot reach the server at {base}"))
}

/// The status and JSON body of an answer of the admin API.
async fn json_answer(response: Response) -> anyhow::Result<(StatusCode, Value)> {
    let status = response.status();
    let body = response
        .json()
        .await
        .context("the server's answer is not JSON")?;
    Ok((status, body))
}
