//! Subcommands.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use cordon::alert::{Alert, Incident, IncidentStatus};
use cordon::app::{Server, shutdown_signal};
use cordon::audit::AuditEntry;
use cordon::config::{self, Config};
use cordon::engine::run::{Run, RunStatus};
use cordon::store::{AlertQuery, IncidentQuery, RunQuery, Store, StoreError};
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
    /// Run playbooks' offline `tests:` (no network); one line per case, then `N passed, N failed`. Exit 1 on any failure.
    Test {
        /// Playbook files or folders (default: the config's playbooks.paths, else `playbooks`).
        paths: Vec<PathBuf>,
    },
    /// List, show, cancel runs; retry or skip a step held for a decision.
    #[command(subcommand)]
    Runs(RunsCommand),
    /// Approve an approval step of a run (through the running server's admin API).
    Approve(DecisionArgs),
    /// Deny an approval step of a run (through the running server's admin API).
    Deny(DecisionArgs),
    /// Check the audit log's hash chain.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// The actions playbooks can use.
    #[command(subcommand)]
    Actions(ActionsCommand),
    /// Print the JSON Schema of playbooks (for editors: see README).
    Schema {
        /// What to describe: `playbook`.
        what: String,
    },
    /// Reload the running server's playbooks (like SIGHUP); refused whole if any has an error.
    Reload {
        #[arg(long, value_name = "URL")]
        server: Option<String>,
    },
    /// Copy an embedded (sled) store into an empty PostgreSQL database, then check the copy:
    /// counts and contents of every kind of record, and the audit chain. Stop the server first.
    Migrate {
        /// The sled store's folder (`store.path`).
        #[arg(long, value_name = "PATH")]
        from: PathBuf,
        /// The PostgreSQL database: `postgres://user:password@host:5432/cordon`. Prefer the
        /// environment variable, which keeps the password out of the process list.
        #[arg(
            long,
            value_name = "URL",
            env = "CORDON_MIGRATE_TO",
            hide_env_values = true
        )]
        to: String,
    },
}

#[derive(Debug, Subcommand)]
enum ActionsCommand {
    /// List the actions with their inputs and whether they have side effects.
    List {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
struct DecisionArgs {
    run: String,
    step: String,
    /// The identity deciding, as approver groups list it: `cli:alice`.
    #[arg(long = "as", value_name = "IDENTITY")]
    identity: String,
    #[arg(long, value_name = "URL")]
    server: Option<String>,
}

#[derive(Debug, Subcommand)]
#[command(
    after_help = "list and show read the local store when no server holds it; cancel and resolve go through the running server's admin API."
)]
enum RunsCommand {
    /// Newest runs first.
    List {
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        playbook: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[command(flatten)]
        from: Source,
    },
    /// One run: steps, approvals, audit trail.
    Show {
        id: String,
        #[command(flatten)]
        from: Source,
    },
    /// Cancel a run that has not finished.
    Cancel {
        id: String,
        #[arg(long = "as", value_name = "IDENTITY")]
        identity: String,
        #[arg(long, value_name = "URL")]
        server: Option<String>,
    },
    /// Retry or skip a step held as needs_decision after a crash.
    Resolve {
        id: String,
        step: String,
        /// Run the step again.
        #[arg(long, conflicts_with = "skip")]
        retry: bool,
        /// Skip the step and go on.
        #[arg(long)]
        skip: bool,
        #[arg(long = "as", value_name = "IDENTITY")]
        identity: String,
        #[arg(long, value_name = "URL")]
        server: Option<String>,
    },
    /// Reverse a finished step with its action's undo (release an isolated instance, enable a
    /// disabled key...).
    Undo {
        id: String,
        step: String,
        #[arg(long = "as", value_name = "IDENTITY")]
        identity: String,
        #[arg(long, value_name = "URL")]
        server: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Verify the hash chain; exit 1 when an entry was changed, removed or inserted.
    Verify {
        #[command(flatten)]
        from: Source,
    },
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
    /// The incident report: alerts, timeline, decisions, actions and their undo, evidence.
    Report {
        id: String,
        /// HTML instead of Markdown.
        #[arg(long)]
        html: bool,
        /// Ask the admin API of the server at URL instead of the local store.
        #[arg(long, value_name = "URL")]
        server: Option<String>,
    },
    /// Mark an incident resolved (mirrored tickets follow).
    Resolve {
        id: String,
        #[arg(long = "as", value_name = "IDENTITY")]
        identity: String,
        #[arg(long, value_name = "URL")]
        server: Option<String>,
    },
    /// Open a resolved incident again.
    Reopen {
        id: String,
        #[arg(long = "as", value_name = "IDENTITY")]
        identity: String,
        #[arg(long, value_name = "URL")]
        server: Option<String>,
    },
}

impl Cli {
    /// Whether this is `cordon serve`.
    pub fn is_serve(&self) -> bool {
        matches!(self.command, Command::Serve)
    }
}

pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve => serve(&cli.config).await,
        Command::Validate { paths } => Ok(validate(&cli.config, &paths)),
        Command::Alerts(command) => alerts(&cli.config, command).await,
        Command::Incidents(command) => incidents(&cli.config, command).await,
        Command::Test { paths } => test(&cli.config, &paths).await,
        Command::Runs(command) => runs(&cli.config, command).await,
        Command::Approve(args) => decision(&cli.config, args, true).await,
        Command::Deny(args) => decision(&cli.config, args, false).await,
        Command::Audit(AuditCommand::Verify { from }) => audit_verify(&cli.config, from).await,
        Command::Actions(ActionsCommand::List { json }) => {
            let catalog = match catalog_of(&cli.config) {
                Ok(catalog) => catalog,
                Err(code) => return Ok(code),
            };
            // The built-ins first, as they describe themselves; then the integrations' by name.
            let mut specs = cordon::actions::builtin_specs();
            let builtin: Vec<String> = specs.iter().map(|s| s.name.clone()).collect();
            specs.extend(
                catalog
                    .0
                    .into_values()
                    .filter(|s| !builtin.contains(&s.name)),
            );
            if json {
                println!("{}", serde_json::to_string_pretty(&specs)?);
                return Ok(ExitCode::SUCCESS);
            }
            for spec in specs {
                let effect = match (spec.side_effect, spec.idempotent) {
                    (false, _) => "no side effect",
                    (true, true) => "side effect, idempotent",
                    (true, false) => "side effect, not idempotent",
                };
                println!("{}  ({effect})\n    {}", spec.name, spec.description);
                for (name, input) in &spec.inputs {
                    let required = if input.required {
                        "required"
                    } else {
                        "optional"
                    };
                    println!(
                        "    {name:<12} {:<7} {required:<9} {}",
                        input.kind.name(),
                        input.description
                    );
                }
                println!();
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Schema { what } => {
            if what != "playbook" {
                bail!("`cordon schema` describes `playbook`, not `{what}`");
            }
            let catalog = match catalog_of(&cli.config) {
                Ok(catalog) => catalog,
                Err(code) => return Ok(code),
            };
            let schema = cordon::playbook::schema::playbook_schema(&catalog);
            println!("{}", serde_json::to_string_pretty(&schema)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Migrate { from, to } => migrate(&from, &to).await,
        Command::Reload { server } => {
            let body = post(
                &cli.config,
                server.as_deref(),
                "/v1/playbooks/reload",
                serde_json::json!({}),
            )
            .await?;
            println!("reloaded {} playbooks", body["reloaded"]);
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The actions of the config at `path` (the defaults when there is no such file): the built-ins
/// and the integrations' actions.
fn catalog_of(path: &Path) -> Result<cordon::actions::SpecCatalog, ExitCode> {
    let config = if path.exists() {
        load_config(path)?
    } else {
        Config::default()
    };
    cordon::app::catalog(&config).map_err(|problems| {
        eprintln!("{problems}");
        ExitCode::FAILURE
    })
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
    if let Some(file) = cordon::store::stall::hold_file() {
        tracing::warn!(file = %file.display(), "{} is set: store operations wait while that file exists (a test hook; never set it in production)", cordon::store::stall::HOLD_VAR);
    }
    let server = Server::bind(config).await?;
    cordon::app::reload_on_sighup(server.state.clone());
    tracing::info!(addr = %server.local_addr(), store = %server.state.config.store.path.display(), "listening");
    server.run(shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}

/// Loads the playbooks in `paths` (default: the config's `playbooks.paths`), checking approver
/// groups against the config when there is one.
fn load_playbooks(
    config: Option<&Config>,
    paths: &[PathBuf],
) -> (
    Vec<cordon::playbook::Compiled>,
    Vec<config::Diagnostic>,
    std::sync::Arc<cordon::script::Scripts>,
    cordon::actions::SpecCatalog,
) {
    let groups = config.map(cordon::app::group_names);
    let defaults = Config::default();
    let config = config.unwrap_or(&defaults);
    let paths = if paths.is_empty() {
        config.playbooks.paths.clone()
    } else {
        paths.to_vec()
    };
    let scripts = cordon::app::scripts(config);
    let catalog = match cordon::app::catalog(config) {
        Ok(catalog) => catalog,
        Err(problems) => return (Vec::new(), problems.0, scripts, Default::default()),
    };
    let (playbooks, diagnostics) =
        cordon::playbook::load::load_paths(&paths, &scripts, &catalog, groups.as_deref());
    (playbooks, diagnostics, scripts, catalog)
}

fn validate(path: &Path, paths: &[PathBuf]) -> ExitCode {
    // Without a config file (a playbook author's checkout), playbooks are checked on their own.
    let config = if path.exists() || paths.is_empty() {
        match config::load(path) {
            Ok(config) => {
                println!("ok: {}", path.display());
                Some(config)
            }
            Err(diagnostics) => {
                eprintln!("{diagnostics}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        None
    };
    let (playbooks, diagnostics, _, _) = load_playbooks(config.as_ref(), paths);
    for d in &diagnostics {
        eprintln!("{d}");
    }
    for p in &playbooks {
        println!("ok: {} ({})", p.file.display(), p.spec.id);
    }
    if diagnostics.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

async fn test(path: &Path, paths: &[PathBuf]) -> anyhow::Result<ExitCode> {
    let config = if path.exists() {
        Some(config::load(path).map_err(|d| anyhow::anyhow!("{d}"))?)
    } else {
        None
    };
    let (playbooks, diagnostics, scripts, catalog) = load_playbooks(config.as_ref(), paths);
    if !diagnostics.is_empty() {
        for d in &diagnostics {
            eprintln!("{d}");
        }
        return Ok(ExitCode::FAILURE);
    }
    let results = cordon::engine::testing::run_tests(&playbooks, scripts, &catalog).await;
    let (mut passed, mut failed) = (0, 0);
    for result in &results {
        if result.passed() {
            passed += 1;
            println!("ok    {} :: {}", result.playbook, result.case);
        } else {
            failed += 1;
            println!("FAIL  {} :: {}", result.playbook, result.case);
            for line in &result.differences {
                println!("        {line}");
            }
        }
    }
    println!("{passed} passed, {failed} failed");
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// POSTs to the running server's admin API (the `--server` URL, or the one the server recorded).
async fn post(
    config_path: &Path,
    server: Option<&str>,
    path: &str,
    body: Value,
) -> anyhow::Result<Value> {
    let config = load_config(config_path)
        .map_err(|_| anyhow::anyhow!("the config has errors (see above)"))?;
    let base = match server {
        Some(url) => url.trim_end_matches('/').to_owned(),
        None => std::fs::read_to_string(cordon::app::address_file(&config))
            .map(|b| b.trim().to_owned())
            .map_err(|_| anyhow::anyhow!("no running server found for this config; start `cordon serve` or pass --server URL"))?,
    };
    let mut request = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .json(&body);
    if let Some(token) = &config.server.admin_token {
        request = request.bearer_auth(token.expose());
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

async fn decision(config: &Path, args: DecisionArgs, approve: bool) -> anyhow::Result<ExitCode> {
    let body = serde_json::json!({ "decision": if approve { "approve" } else { "deny" }, "identity": args.identity });
    let answer = post(
        config,
        args.server.as_deref(),
        &format!("/v1/runs/{}/approvals/{}", args.run, args.step),
        body,
    )
    .await?;
    match answer["outcome"].as_str() {
        Some(outcome) => println!("{} {}: {outcome}", args.run, args.step),
        None => println!(
            "{} {}: {} of {} approvals",
            args.run, args.step, answer["approvals"], answer["quorum"]
        ),
    }
    Ok(ExitCode::SUCCESS)
}

async fn runs(config: &Path, command: RunsCommand) -> anyhow::Result<ExitCode> {
    match command {
        RunsCommand::List {
            status,
            playbook,
            limit,
            from,
        } => {
            let status = match status.as_deref() {
                None => None,
                Some(s) => Some(
                    serde_json::from_value::<RunStatus>(Value::String(s.to_owned())).map_err(|_| {
                        anyhow::anyhow!("--status takes queued, running, waiting, needs_decision, succeeded, failed or cancelled")
                    })?,
                ),
            };
            let reader = Reader::open(config, from.server.as_deref()).await?;
            let runs = reader
                .runs(&RunQuery {
                    status,
                    playbook,
                    incident_id: None,
                    limit,
                })
                .await;
            reader.close().await;
            output(from.json, &runs?, |r| print_runs(r))?;
            Ok(ExitCode::SUCCESS)
        }
        RunsCommand::Show { id, from } => {
            let reader = Reader::open(config, from.server.as_deref()).await?;
            let found = reader.run(&id).await;
            reader.close().await;
            let Some((run, audit)) = found? else {
                eprintln!("error: no run `{id}`");
                return Ok(ExitCode::FAILURE);
            };
            let shown = serde_json::json!({ "run": run, "audit": audit });
            output(from.json, &shown, |_| print_run(&run, &audit))?;
            Ok(ExitCode::SUCCESS)
        }
        RunsCommand::Cancel {
            id,
            identity,
            server,
        } => {
            post(
                config,
                server.as_deref(),
                &format!("/v1/runs/{id}/cancel"),
                serde_json::json!({ "identity": identity }),
            )
            .await?;
            println!("{id}: cancelled");
            Ok(ExitCode::SUCCESS)
        }
        RunsCommand::Resolve {
            id,
            step,
            retry,
            skip,
            identity,
            server,
        } => {
            if retry == skip {
                bail!("say --retry or --skip");
            }
            let action = if retry { "retry" } else { "skip" };
            post(
                config,
                server.as_deref(),
                &format!("/v1/runs/{id}/steps/{step}/resolve"),
                serde_json::json!({ "action": action, "identity": identity }),
            )
            .await?;
            println!("{id} {step}: {action}");
            Ok(ExitCode::SUCCESS)
        }
        RunsCommand::Undo {
            id,
            step,
            identity,
            server,
        } => {
            let body = post(
                config,
                server.as_deref(),
                &format!("/v1/runs/{id}/steps/{step}/undo"),
                serde_json::json!({ "identity": identity }),
            )
            .await?;
            println!(
                "{id} {step}: undone with {}\n{}",
                body["action"].as_str().unwrap_or("?"),
                serde_json::to_string_pretty(&body["output"])?
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn print_runs(runs: &[Run]) {
    if runs.is_empty() {
        println!("no runs");
        return;
    }
    let rows = runs
        .iter()
        .map(|r| {
            let waiting = r
                .open_approval()
                .map(|(step, _)| format!("approval `{step}`"))
                .unwrap_or_default();
            vec![
                r.id.clone(),
                when(r.updated_at),
                r.status.to_string(),
                r.playbook.clone(),
                r.incident_id.clone().unwrap_or_else(|| "-".into()),
                waiting,
            ]
        })
        .collect();
    print_table(
        &[
            "ID",
            "UPDATED",
            "STATUS",
            "PLAYBOOK",
            "INCIDENT",
            "WAITING ON",
        ],
        rows,
    );
}

fn print_run(run: &Run, audit: &[AuditEntry]) {
    println!("{:<10}{}", "run", run.id);
    println!("{:<10}{}", "playbook", run.playbook);
    println!(
        "{:<10}{}{}",
        "status",
        run.status,
        run.error
            .as_ref()
            .map(|e| format!(" ({e})"))
            .unwrap_or_default()
    );
    println!(
        "{:<10}{}",
        "incident",
        run.incident_id.as_deref().unwrap_or("-")
    );
    println!("{:<10}{}", "started", when(run.created_at));
    if run.dry_run {
        println!(
            "{:<10}yes: side effects were recorded, not performed",
            "dry run"
        );
    }
    println!();
    let rows = run
        .order
        .iter()
        .filter_map(|id| run.steps.get(id).map(|s| (id, s)))
        .map(|(id, s)| {
            let detail = match (&s.approval, &s.error) {
                (Some(a), _) => format!(
                    "{} [{}]",
                    a.prompt,
                    match a.outcome {
                        Some(true) => format!("approved by {}", a.approvers().join(", ")),
                        Some(false) => "denied".to_owned(),
                        None => format!(
                            "waiting on {} ({} of {})",
                            a.group,
                            a.approvers().len(),
                            a.quorum
                        ),
                    }
                ),
                (None, Some(e)) => e.clone(),
                (None, None) => clip(&s.output.to_string(), 70),
            };
            vec![
                id.clone(),
                format!("{:?}", s.status).to_lowercase(),
                s.attempts.to_string(),
                detail,
            ]
        })
        .collect();
    print_table(&["STEP", "STATUS", "TRIES", "DETAIL"], rows);
    if !audit.is_empty() {
        println!();
        let rows = audit
            .iter()
            .map(|e| {
                vec![
                    e.seq.to_string(),
                    when(e.at),
                    e.kind.clone(),
                    e.step.clone().unwrap_or_default(),
                    e.actor.clone().unwrap_or_default(),
                ]
            })
            .collect();
        print_table(&["AUDIT", "AT", "EVENT", "STEP", "BY"], rows);
    }
}

async fn audit_verify(config: &Path, from: Source) -> anyhow::Result<ExitCode> {
    let reader = Reader::open(config, from.server.as_deref()).await?;
    let report = reader.audit_report().await;
    reader.close().await;
    let report = report?;
    let ok = report["ok"].as_bool() == Some(true);
    if from.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else if ok {
        println!(
            "audit chain intact: {} entries, last #{} {}",
            report["entries"],
            report["last_seq"],
            report["last_hash"].as_str().unwrap_or_default()
        );
    } else {
        for p in report["problems"].as_array().into_iter().flatten() {
            println!(
                "entry {}: {}",
                p["seq"],
                p["what"].as_str().unwrap_or_default()
            );
        }
        println!(
            "audit chain BROKEN: {} problems in {} entries",
            report["problems"].as_array().map(Vec::len).unwrap_or(0),
            report["entries"]
        );
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `cordon migrate`: sled at `from` into the PostgreSQL database at `to`.
async fn migrate(from: &Path, to: &str) -> anyhow::Result<ExitCode> {
    if !from.is_dir() {
        bail!("no sled store at {}", from.display());
    }
    let source_config = config::StoreConfig {
        path: from.to_owned(),
        ..config::StoreConfig::default()
    };
    let grouping = config::GroupingConfig::default();
    let source = match cordon::store::SledStore::open(&source_config, &grouping) {
        Ok(store) => store,
        Err(StoreError::Locked(_)) => {
            bail!(
                "the sled store at {} is in use: stop the server first",
                from.display()
            )
        }
        Err(e) => return Err(e).context("cannot open the sled store"),
    };
    let target = cordon::store::PostgresStore::connect(to, 2, &grouping).await;
    let target = match target {
        Ok(target) => target,
        Err(e) => {
            let _ = source.close().await;
            return Err(e).context("cannot open the PostgreSQL database");
        }
    };
    let result = cordon::store::migrate::sled_to_postgres(&source, &target).await;
    let _ = source.close().await;
    let _ = target.close().await;
    let report = result?;
    for (kind, count) in &report.copied {
        println!("{kind:<18} {count}");
    }
    println!(
        "approvals          {} ({} decisions)",
        report.approvals, report.decisions
    );
    println!(
        "copied and verified: every record matches the source; audit chain intact: {} entries, last #{} {}",
        report.audit_entries, report.audit_last_seq, report.audit_last_hash
    );
    Ok(ExitCode::SUCCESS)
}

/// The store, or the admin API of the server holding it.
enum Reader {
    Local(std::sync::Arc<dyn Store>),
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
        let metrics = std::sync::Arc::new(cordon::telemetry::Metrics::new());
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
    async fn alerts(&self, q: &AlertQuery) -> anyhow::Result<Vec<Alert>> {
        match self {
            Reader::Local(store) => Ok(store.alerts(q).await?),
            Reader::Remote { .. } => {
                let mut query = vec![("limit", q.limit.to_string())];
                query.extend(q.source.clone().map(|s| ("source", s)));
                query.extend(q.incident_id.clone().map(|i| ("incident", i)));
                let body = self.get("/v1/alerts", &query).await?.unwrap_or_default();
                decode(&body, "alerts")
            }
        }
    }

    async fn alert(&self, id: &str) -> anyhow::Result<Option<Alert>> {
        match self {
            Reader::Local(store) => Ok(store.alert(id).await?),
            Reader::Remote { .. } => match self.get(&format!("/v1/alerts/{id}"), &[]).await? {
                Some(body) => Ok(Some(decode(&body, "alert")?)),
                None => Ok(None),
            },
        }
    }

    async fn incidents(&self, q: &IncidentQuery) -> anyhow::Result<Vec<Incident>> {
        match self {
            Reader::Local(store) => Ok(store.incidents(q).await?),
            Reader::Remote { .. } => {
                let mut query = vec![("limit", q.limit.to_string())];
                query.extend(q.status.map(|s| ("status", s.to_string())));
                let body = self.get("/v1/incidents", &query).await?.unwrap_or_default();
                decode(&body, "incidents")
            }
        }
    }

    /// An incident with its alerts.
    async fn incident(&self, id: &str) -> anyhow::Result<Option<(Incident, Vec<Alert>)>> {
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
            Reader::Remote { .. } => match self.get(&format!("/v1/incidents/{id}"), &[]).await? {
                Some(body) => Ok(Some((decode(&body, "incident")?, decode(&body, "alerts")?))),
                None => Ok(None),
            },
        }
    }

    async fn runs(&self, q: &RunQuery) -> anyhow::Result<Vec<Run>> {
        match self {
            Reader::Local(store) => Ok(store.runs(q).await?),
            Reader::Remote { .. } => {
                let mut query = vec![("limit", q.limit.to_string())];
                query.extend(q.status.map(|s| ("status", s.to_string())));
                query.extend(q.playbook.clone().map(|p| ("playbook", p)));
                let body = self.get("/v1/runs", &query).await?.unwrap_or_default();
                decode(&body, "runs")
            }
        }
    }

    /// A run with its audit trail.
    async fn run(&self, id: &str) -> anyhow::Result<Option<(Run, Vec<AuditEntry>)>> {
        match self {
            Reader::Local(store) => match store.run(id).await? {
                Some(run) => Ok(Some((run, store.audit_entries(Some(id), 0).await?))),
                None => Ok(None),
            },
            Reader::Remote { .. } => match self.get(&format!("/v1/runs/{id}"), &[]).await? {
                Some(body) => Ok(Some((decode(&body, "run")?, decode(&body, "audit")?))),
                None => Ok(None),
            },
        }
    }

    /// An incident's report, Markdown or HTML.
    async fn report(&self, id: &str, html: bool) -> anyhow::Result<Option<String>> {
        use cordon::tickets::report::{Format, Report, render};
        let format = if html { Format::Html } else { Format::Markdown };
        match self {
            Reader::Local(store) => Ok(Report::gather(store.as_ref(), id)
                .await?
                .map(|r| render(&r, format))),
            Reader::Remote { base, token, http } => {
                let mut request = http
                    .get(format!("{base}/v1/incidents/{id}/report"))
                    .query(&[("format", if html { "html" } else { "markdown" })]);
                if let Some(token) = token {
                    request = request.bearer_auth(token);
                }
                let response = request
                    .send()
                    .await
                    .with_context(|| format!("cannot reach the server at {base}"))?;
                let status = response.status();
                let text = response.text().await.context("unreadable answer")?;
                if status == reqwest::StatusCode::NOT_FOUND {
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
    async fn audit_report(&self) -> anyhow::Result<Value> {
        match self {
            Reader::Local(store) => Ok(store.audit_verify().await?.summary()),
            Reader::Remote { .. } => {
                Ok(self.get("/v1/audit/verify", &[]).await?.unwrap_or_default())
            }
        }
    }
}

/// `field` of a server answer, decoded.
fn decode<T: serde::de::DeserializeOwned>(body: &Value, field: &str) -> anyhow::Result<T> {
    serde_json::from_value(body[field].clone()).context("unexpected answer from the server")
}

/// Prints `value` as JSON with `--json`, else with `print`.
fn output<T: serde::Serialize + ?Sized>(
    json: bool,
    value: &T,
    print: impl FnOnce(&T),
) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(value)?);
    } else {
        print(value);
    }
    Ok(())
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
            let alerts = reader
                .alerts(&AlertQuery {
                    source,
                    incident_id: incident,
                    limit,
                })
                .await;
            reader.close().await;
            output(from.json, &alerts?, |a| print_alerts(a))?;
            Ok(ExitCode::SUCCESS)
        }
        AlertsCommand::Show { id, from } => {
            let reader = Reader::open(config, from.server.as_deref()).await?;
            let alert = reader.alert(&id).await;
            reader.close().await;
            let Some(alert) = alert? else {
                eprintln!("error: no alert `{id}`");
                return Ok(ExitCode::FAILURE);
            };
            output(from.json, &alert, print_alert)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn incidents(config: &Path, command: IncidentsCommand) -> anyhow::Result<ExitCode> {
    let command_kind = match &command {
        IncidentsCommand::Resolve { .. } => "resolve",
        _ => "",
    };
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
            let incidents = reader.incidents(&IncidentQuery { status, limit }).await;
            reader.close().await;
            output(from.json, &incidents?, |i| print_incidents(i))?;
            Ok(ExitCode::SUCCESS)
        }
        IncidentsCommand::Show { id, from } => {
            let reader = Reader::open(config, from.server.as_deref()).await?;
            let found = reader.incident(&id).await;
            reader.close().await;
            let Some((incident, alerts)) = found? else {
                eprintln!("error: no incident `{id}`");
                return Ok(ExitCode::FAILURE);
            };
            let shown = serde_json::json!({ "incident": incident, "alerts": alerts });
            output(from.json, &shown, |_| {
                print_incident(&incident);
                println!();
                print_alerts(&alerts);
                if !incident.evidence.is_empty() {
                    println!();
                    print_evidence(&incident.evidence);
                }
            })?;
            Ok(ExitCode::SUCCESS)
        }
        IncidentsCommand::Report { id, html, server } => {
            let reader = Reader::open(config, server.as_deref()).await?;
            let report = reader.report(&id, html).await;
            reader.close().await;
            let Some(report) = report? else {
                eprintln!("error: no incident `{id}`");
                return Ok(ExitCode::FAILURE);
            };
            print!("{report}");
            Ok(ExitCode::SUCCESS)
        }
        IncidentsCommand::Resolve {
            id,
            identity,
            server,
        }
        | IncidentsCommand::Reopen {
            id,
            identity,
            server,
        } => {
            let (path, done) = if matches!(command_kind, "resolve") {
                ("resolve", "resolved")
            } else {
                ("reopen", "open")
            };
            post(
                config,
                server.as_deref(),
                &format!("/v1/incidents/{id}/{path}"),
                serde_json::json!({ "identity": identity }),
            )
            .await?;
            println!("{id}: {done}");
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn print_evidence(records: &[serde_json::Value]) {
    let text = |r: &serde_json::Value, k: &str| r[k].as_str().unwrap_or("-").to_owned();
    let rows = records
        .iter()
        .map(|r| {
            vec![
                text(r, "kind"),
                text(r, "location"),
                text(r, "sha256"),
                text(r, "collected_at"),
                format!("{} {}", text(r, "run_id"), text(r, "step_id")),
            ]
        })
        .collect();
    print_table(
        &["EVIDENCE", "LOCATION", "SHA256", "COLLECTED AT", "RUN STEP"],
        rows,
    );
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
