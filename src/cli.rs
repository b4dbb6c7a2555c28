//! Subcommands.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use cordon::alert::{Alert, Incident, IncidentStatus};
use cordon::app::{Server, shutdown_signal};
use cordon::config::{self, Config};
use cordon::store::{AlertQuery, IncidentQuery, SledStore, Store, StoreError};
use serde_json::Value;

/// Cordon: a chat-ops bot and SOAR playbook runner for cloud detection and response.
#[derive(Debug, Parser)]
#[command(name = "cordon", version, about)]
pub struct Cli {
    /// The config file.
    #[arg(
        long,
        short,
        global = true,
        env = "CORDON_CONFIG",
        default_value = "config.yaml"
    )]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server: alert intake, admin API, health and metrics on `server.listen`.
    Serve,
    /// Check the config (and, with PATHS, playbooks); print every error as file:line:column. Exit 1 on any error.
    Validate {
        /// Playbook files or folders to check as well.
        paths: Vec<PathBuf>,
    },
    /// List and show stored alerts.
    #[command(subcommand)]
    Alerts(AlertsCommand),
    /// List and show incidents.
    #[command(subcommand)]
    Incidents(IncidentsCommand),
}

/// Where the data commands read from. Without `--server`, they open the local store named in the
/// config; when a running server holds it (one process at a time may open it), they ask that server's
/// admin API (at the address it recorded beside the store, else `server.listen`) with
/// `server.admin_token` instead. `--server URL` asks a server directly.
#[derive(Debug, Args)]
struct Source {
    /// Ask the admin API of the server at URL (e.g. http://127.0.0.1:8080) instead of the local store.
    #[arg(long, value_name = "URL")]
    server: Option<String>,
    /// Print JSON for scripts instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
#[command(
    after_help = "Reads the local store; when a running server holds it, asks that server's admin API at server.listen with server.admin_token from the config."
)]
enum AlertsCommand {
    /// Newest alerts first.
    List {
        /// Only alerts from this source (e.g. aws.guardduty).
        #[arg(long)]
        source: Option<String>,
        /// Only alerts of this incident.
        #[arg(long)]
        incident: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[command(flatten)]
        from: Source,
    },
    /// One alert with its raw payload.
    Show {
        id: String,
        #[command(flatten)]
        from: Source,
    },
}

#[derive(Debug, Subcommand)]
#[command(
    after_help = "Reads the local store; when a running server holds it, asks that server's admin API at server.listen with server.admin_token from the config."
)]
enum IncidentsCommand {
    /// Newest incidents first.
    List {
        /// Only `open` or `resolved` incidents.
        #[arg(long)]
        status: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[command(flatten)]
        from: Source,
    },
    /// One incident with its alerts.
    Show {
        id: String,
        #[command(flatten)]
        from: Source,
    },
}

pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve => serve(&cli.config).await,
        Command::Validate { paths } => Ok(validate(&cli.config, &paths)),
        Command::Alerts(command) => alerts(&cli.config, command).await,
        Command::Incidents(command) => incidents(&cli.config, command).await,
    }
}

fn load_config(path: &Path) -> Result<Config, ExitCode> {
    config::load(path).map_err(|diagnostics| {
        eprintln!("{diagnostics}");
        ExitCode::FAILURE
    })
}

async fn serve(path: &Path) -> anyhow::Result<ExitCode> {
    let config = match load_config(path) {
        Ok(config) => config,
        Err(code) => return Ok(code),
    };
    cordon::telemetry::init_logging(&config.log);
    for var in config.secrets_using_defaults() {
        tracing::warn!(variable = %var, "a secret uses its local-only default from the config; set the variable before exposing this server");
    }
    let server = Server::bind(config).await?;
    tracing::info!(addr = %server.local_addr(), store = %server.state.config.store.path.display(), "listening");
    server.run(shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}

fn validate(path: &Path, paths: &[PathBuf]) -> ExitCode {
    let config_ok = match config::load(path) {
        Ok(_) => {
            println!("ok: {}", path.display());
            true
        }
        Err(diagnostics) => {
            eprintln!("{diagnostics}");
            false
        }
    };
    if !paths.is_empty() {
        eprintln!(
            "note: playbook validation arrives with the playbook engine; only the config was checked"
        );
    }
    if config_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The store, or the admin API of the server holding it.
enum Reader {
    Local(SledStore),
    Remote {
        base: String,
        token: Option<String>,
        http: reqwest::Client,
    },
}

impl Reader {
    async fn open(config_path: &Path, server: Option<&str>) -> anyhow::Result<Reader> {
        let config = load_config(config_path)
            .map_err(|_| anyhow::anyhow!("the config has errors (see above)"))?;
        let token = config
            .server
            .admin_token
            .as_ref()
            .map(|t| t.expose().to_owned());
        let remote = |base: String| Reader::Remote {
            base,
            token: token.clone(),
            http: reqwest::Client::new(),
        };
        if let Some(url) = server {
            return Ok(remote(url.trim_end_matches('/').to_owned()));
        }
        match SledStore::open(&config.store, &config.grouping) {
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
        let mut request = http.get(format!("{base}{path}")).query(query);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("cannot reach the server at {base}"))?;
        let status = response.status();
        let body: Value = response
            .json()
            .await
            .context("the server's answer is not JSON")?;
        if status == reqwest::StatusCode::NOT_FOUND && body["error"] == "not_found" {
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

    async fn close(self) {
        if let Reader::Local(store) = self {
            let _ = store.close().await;
        }
    }
}

async fn alerts(config: &Path, command: AlertsCommand) -> anyhow::Result<ExitCode> {
    match command {
        AlertsCommand::List {
            source,
            incident,
            limit,
            from,
        } => {
            let reader = Reader::open(config, from.server.as_deref()).await?;
            let alerts: Vec<Alert> = match &reader {
                Reader::Local(store) => {
                    let query = AlertQuery {
                        source: source.clone(),
                        incident_id: incident.clone(),
                        limit,
                    };
                    store.alerts(&query).await?
                }
                Reader::Remote { .. } => {
                    let mut query = vec![("limit", limit.to_string())];
                    query.extend(source.clone().map(|s| ("source", s)));
                    query.extend(incident.clone().map(|i| ("incident", i)));
                    let body = reader.get("/v1/alerts", &query).await?.unwrap_or_default();
                    serde_json::from_value(body["alerts"].clone())
                        .context("unexpected answer from the server")?
                }
            };
            reader.close().await;
            if from.json {
                println!("{}", serde_json::to_string_pretty(&alerts)?);
            } else {
                print_alerts(&alerts);
            }
            Ok(ExitCode::SUCCESS)
        }
        AlertsCommand::Show { id, from } => {
            let reader = Reader::open(config, from.server.as_deref()).await?;
            let alert: Option<Alert> = match &reader {
                Reader::Local(store) => store.alert(&id).await?,
                Reader::Remote { .. } => {
                    match reader.get(&format!("/v1/alerts/{id}"), &[]).await? {
                        Some(body) => Some(serde_json::from_value(body["alert"].clone())?),
                        None => None,
                    }
                }
            };
            reader.close().await;
            let Some(alert) = alert else {
                eprintln!("error: no alert `{id}`");
                return Ok(ExitCode::FAILURE);
            };
            if from.json {
                println!("{}", serde_json::to_string_pretty(&alert)?);
            } else {
                print_alert(&alert);
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn incidents(config: &Path, command: IncidentsCommand) -> anyhow::Result<ExitCode> {
    match command {
        IncidentsCommand::List {
            status,
            limit,
            from,
        } => {
            let status = match status.as_deref() {
                None => None,
                Some("open") => Some(IncidentStatus::Open),
                Some("resolved") => Some(IncidentStatus::Resolved),
                Some(other) => bail!("--status takes `open` or `resolved`, not `{other}`"),
            };
            let reader = Reader::open(config, from.server.as_deref()).await?;
            let incidents: Vec<Incident> = match &reader {
                Reader::Local(store) => store.incidents(&IncidentQuery { status, limit }).await?,
                Reader::Remote { .. } => {
                    let mut query = vec![("limit", limit.to_string())];
                    query.extend(status.map(|s| ("status", s.to_string())));
                    let body = reader
                        .get("/v1/incidents", &query)
                        .await?
                        .unwrap_or_default();
                    serde_json::from_value(body["incidents"].clone())
                        .context("unexpected answer from the server")?
                }
            };
            reader.close().await;
            if from.json {
                println!("{}", serde_json::to_string_pretty(&incidents)?);
            } else {
                print_incidents(&incidents);
            }
            Ok(ExitCode::SUCCESS)
        }
        IncidentsCommand::Show { id, from } => {
            let reader = Reader::open(config, from.server.as_deref()).await?;
            let found: Option<(Incident, Vec<Alert>)> = match &reader {
                Reader::Local(store) => match store.incident(&id).await? {
                    Some(incident) => {
                        let query = AlertQuery {
                            incident_id: Some(id.clone()),
                            ..AlertQuery::default()
                        };
                        Some((incident, store.alerts(&query).await?))
                    }
                    None => None,
                },
                Reader::Remote { .. } => {
                    match reader.get(&format!("/v1/incidents/{id}"), &[]).await? {
                        Some(body) => Some((
                            serde_json::from_value(body["incident"].clone())?,
                            serde_json::from_value(body["alerts"].clone())?,
                        )),
                        None => None,
                    }
                }
            };
            reader.close().await;
            let Some((incident, alerts)) = found else {
                eprintln!("error: no incident `{id}`");
                return Ok(ExitCode::FAILURE);
            };
            if from.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(
                        &serde_json::json!({ "incident": incident, "alerts": alerts })
                    )?
                );
            } else {
                print_incident(&incident);
                println!();
                print_alerts(&alerts);
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn print_table(headers: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(headers.iter().map(|h| h.to_string()).collect());
    for row in rows {
        line(row);
    }
}

fn clip(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_owned()
    } else {
        format!("{}…", text.chars().take(max - 1).collect::<String>())
    }
}

fn when(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}

fn print_alerts(alerts: &[Alert]) {
    if alerts.is_empty() {
        println!("no alerts");
        return;
    }
    let rows = alerts
        .iter()
        .map(|a| {
            vec![
                a.id.clone(),
                when(a.received_at),
                a.source.clone(),
                a.severity.score.to_string(),
                a.repeat_count.to_string(),
                clip(a.resource.id.as_deref().or(a.actor_id()).unwrap_or("-"), 40),
                clip(&a.title, 60),
            ]
        })
        .collect();
    print_table(
        &[
            "ID", "RECEIVED", "SOURCE", "SEV", "SEEN", "RESOURCE", "TITLE",
        ],
        rows,
    );
}

fn print_alert(a: &Alert) {
    let field = |name: &str, value: Option<&str>| {
        if let Some(v) = value {
            println!("{name:<13}{v}");
        }
    };
    field("id", Some(&a.id));
    field("incident", Some(&a.incident_id));
    field("source", Some(&a.source));
    field("kind", Some(&a.kind));
    println!(
        "{:<13}{} (source: {})",
        "severity", a.severity.score, a.severity.native
    );
    field("title", Some(&a.title));
    field("description", a.description.as_deref());
    field("observed", Some(&when(a.observed_at)));
    field("received", Some(&when(a.received_at)));
    println!("{:<13}{}", "seen", a.repeat_count);
    field("resource", a.resource.id.as_deref());
    field("  kind", a.resource.kind.as_deref());
    field("  region", a.resource.region.as_deref());
    field("  account", a.resource.account.as_deref());
    if let Some(actor) = &a.actor {
        field("actor", actor.id.as_deref().or(actor.name.as_deref()));
        field("  kind", actor.kind.as_deref());
    }
    field("remote ip", a.network.remote_ip.as_deref());
    field("domain", a.network.domain.as_deref());
    for (k, v) in &a.labels {
        println!("{:<13}{k}={v}", "label");
    }
    println!("raw:");
    let pretty = serde_json::from_str::<Value>(a.raw.get())
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_else(|| a.raw.get().to_owned());
    println!("{pretty}");
}

fn print_incidents(incidents: &[Incident]) {
    if incidents.is_empty() {
        println!("no incidents");
        return;
    }
    let rows = incidents
        .iter()
        .map(|i| {
            vec![
                i.id.clone(),
                when(i.updated_at),
                i.status.to_string(),
                i.severity.to_string(),
                i.alert_count.to_string(),
                i.event_count.to_string(),
                clip(i.entity.as_deref().unwrap_or("-"), 40),
                clip(&i.title, 60),
            ]
        })
        .collect();
    print_table(
        &[
            "ID", "UPDATED", "STATUS", "SEV", "ALERTS", "EVENTS", "ENTITY", "TITLE",
        ],
        rows,
    );
}

fn print_incident(i: &Incident) {
    println!("{:<10}{}", "id", i.id);
    println!("{:<10}{}", "title", i.title);
    println!("{:<10}{}", "status", i.status);
    println!("{:<10}{}", "severity", i.severity);
    println!("{:<10}{}", "entity", i.entity.as_deref().unwrap_or("-"));
    println!("{:<10}{}", "sources", i.sources.join(", "));
    println!(
        "{:<10}{} ({} events)",
        "alerts", i.alert_count, i.event_count
    );
    println!("{:<10}{}", "opened", when(i.created_at));
    println!("{:<10}{}", "updated", when(i.updated_at));
}
