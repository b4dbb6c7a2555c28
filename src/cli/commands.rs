//! What each subcommand does.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, anyhow, bail};
use cordon::alert::IncidentStatus;
use cordon::app::{Server, shutdown_signal};
use cordon::config::{self, Config};
use cordon::engine::run::{Run, RunStatus};
use cordon::store::{AlertQuery, IncidentQuery, RunQuery, Store, StoreError};
use serde_json::{Value, json};

use super::print::{self, output};
use super::reader::{post, read};
use super::{Acting, AlertsCommand, DecisionArgs, IncidentsCommand, One, RunsCommand, Source};

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

/// The config at `path`; its problems are printed.
pub(super) fn load_config(path: &Path) -> Result<Config, ExitCode> {
    config::load(path).map_err(|diagnostics| {
        eprintln!("{diagnostics}");
        ExitCode::FAILURE
    })
}

pub(super) async fn serve(path: &Path) -> anyhow::Result<ExitCode> {
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

pub(super) fn validate(path: &Path, paths: &[PathBuf]) -> ExitCode {
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
    let (playbooks, mut diagnostics, _, _) = load_playbooks(config.as_ref(), paths);
    // YARA rules compile here as they do at start and reload: each error at its file:line:column.
    if let Some(config) = &config {
        match cordon::yara::compile(&config.yara) {
            Ok(Some(rules)) => {
                for file in &rules.files {
                    println!("ok: {} (YARA)", file.display());
                }
            }
            Ok(None) => {}
            Err(problems) => diagnostics.extend(problems.0),
        }
        if let Err(e) = cordon::yara::s3::S3Reader::from_config(config) {
            diagnostics.push(config::Diagnostic::new(path, 0, 0, e));
        }
    }
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

pub(super) async fn test(path: &Path, paths: &[PathBuf]) -> anyhow::Result<ExitCode> {
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

/// `cordon actions list`: the built-ins first, as they describe themselves; then the integrations'
/// by name.
pub(super) fn actions(config: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let catalog = match catalog_of(config) {
        Ok(catalog) => catalog,
        Err(code) => return Ok(code),
    };
    let mut specs = cordon::actions::builtin_specs();
    let builtin: Vec<String> = specs.iter().map(|s| s.name.clone()).collect();
    specs.extend(
        catalog
            .0
            .into_values()
            .filter(|s| !builtin.contains(&s.name)),
    );
    output(json, &specs, |specs| print::actions(specs))?;
    Ok(ExitCode::SUCCESS)
}

/// `cordon schema playbook`.
pub(super) fn schema(config: &Path, what: &str) -> anyhow::Result<ExitCode> {
    if what != "playbook" {
        bail!("`cordon schema` describes `playbook`, not `{what}`");
    }
    let catalog = match catalog_of(config) {
        Ok(catalog) => catalog,
        Err(code) => return Ok(code),
    };
    let schema = cordon::playbook::schema::playbook_schema(&catalog);
    println!("{}", serde_json::to_string_pretty(&schema)?);
    Ok(ExitCode::SUCCESS)
}

/// `cordon reload`.
pub(super) async fn reload(config: &Path, server: Option<&str>) -> anyhow::Result<ExitCode> {
    let body = post(config, server, "/v1/playbooks/reload", json!({})).await?;
    println!("reloaded {} playbooks", body["reloaded"]);
    Ok(ExitCode::SUCCESS)
}

/// POSTs `body` to the running server's API; `--as`, when given, goes along for the server to
/// check that it is the caller's own identity.
async fn act(config: &Path, by: &Acting, path: &str, mut body: Value) -> anyhow::Result<Value> {
    if let Some(identity) = &by.identity {
        body["identity"] = Value::String(identity.clone());
    }
    post(config, by.server.as_deref(), path, body).await
}

pub(super) async fn decision(
    config: &Path,
    args: DecisionArgs,
    approve: bool,
) -> anyhow::Result<ExitCode> {
    let mut body = json!({ "decision": if approve { "approve" } else { "deny" } });
    if let Some(identity) = &args.identity {
        body["identity"] = json!(identity);
    }
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

pub(super) async fn runs(config: &Path, command: RunsCommand) -> anyhow::Result<ExitCode> {
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
                        anyhow!("--status takes queued, running, waiting, needs_decision, succeeded, failed or cancelled")
                    })?,
                ),
            };
            let query = RunQuery {
                status,
                playbook,
                incident_id: None,
                limit,
            };
            let runs = from.read(config, async |r| r.runs(&query).await).await?;
            output(from.json, &runs, |r| print::runs(r))?;
        }
        RunsCommand::Show(One { id, from }) => {
            let found = from.read(config, async |r| r.run(&id).await).await?;
            let (run, audit) = found.ok_or_else(|| anyhow!("no run `{id}`"))?;
            // The runs its `call` steps started, and theirs: shown as `step@call_step`.
            let mut called: Vec<Run> = Vec::new();
            let mut next: Vec<String> =
                run.steps.values().filter_map(|s| s.child.clone()).collect();
            while let Some(child) = next.pop() {
                if called.len() >= 100 || called.iter().any(|r| r.id == child) {
                    continue;
                }
                if let Some((child, _)) = from.read(config, async |r| r.run(&child).await).await? {
                    next.extend(child.steps.values().filter_map(|s| s.child.clone()));
                    called.push(child);
                }
            }
            let shown = json!({ "run": run, "called": called, "audit": audit });
            output(from.json, &shown, |_| print::run(&run, &called, &audit))?;
        }
        RunsCommand::Cancel { id, by } => {
            act(config, &by, &format!("/v1/runs/{id}/cancel"), json!({})).await?;
            println!("{id}: cancelled");
        }
        RunsCommand::Resolve {
            id,
            step,
            retry,
            skip,
            by,
        } => {
            if retry == skip {
                bail!("say --retry or --skip");
            }
            let action = if retry { "retry" } else { "skip" };
            let path = format!("/v1/runs/{id}/steps/{}/resolve", step_segment(&step));
            act(config, &by, &path, json!({ "action": action })).await?;
            println!("{id} {step}: {action}");
        }
        RunsCommand::Undo { id, step, by } => {
            let path = format!("/v1/runs/{id}/steps/{}/undo", step_segment(&step));
            let body = act(config, &by, &path, json!({})).await?;
            println!(
                "{id} {step}: undo requested as run {}; it waits for approval by `{}` (approve it like any other: `cordon approve {} approve`)",
                body["undo_run"].as_str().unwrap_or("?"),
                body["approvers"].as_str().unwrap_or("?"),
                body["undo_run"].as_str().unwrap_or("?"),
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A step address as one URL path segment: `isolate[2]` has brackets, which paths do not carry.
fn step_segment(address: &str) -> String {
    address.replace('[', "%5B").replace(']', "%5D")
}

pub(super) async fn audit_verify(
    config: &Path,
    from: Source,
    checkpoint: Option<PathBuf>,
    public_key: Option<String>,
) -> anyhow::Result<ExitCode> {
    use cordon::audit::checkpoint::Checkpoint;
    let Some(path) = checkpoint else {
        let report = from.read(config, async |r| r.audit_report().await).await?;
        let ok = report["ok"].as_bool() == Some(true);
        output(from.json, &report, |report| print::audit_report(report, ok))?;
        return Ok(if ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        });
    };
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let checkpoint = Checkpoint::parse(&text).with_context(|| path.display().to_string())?;
    let trusted = match public_key {
        Some(key) => key,
        None => {
            let loaded =
                load_config(config).map_err(|_| anyhow!("the config has errors (see above)"))?;
            loaded.audit.trusted_key()?.ok_or_else(|| {
                anyhow!("no public key to check the checkpoint with: set audit.public_key (or audit.signing_key), or pass --public-key")
            })?
        }
    };
    // The signature first: an unsigned claim about the log is not worth reading the log for.
    if let Err(e) = checkpoint.verify_signature(&trusted) {
        let report = json!({ "ok": false, "checkpoint": { "seq": checkpoint.seq, "at": checkpoint.at },
            "problems": [{ "seq": checkpoint.seq, "what": e.to_string() }] });
        output(from.json, &report, |_| {
            println!("checkpoint REFUSED: {e}");
        })?;
        return Ok(ExitCode::FAILURE);
    }
    let (mut report, at_seq) = from
        .read(config, async |r| r.audit_report_at(checkpoint.seq).await)
        .await?;
    let chain: cordon::audit::VerifyReport =
        serde_json::from_value(report.clone()).context("unexpected answer from the server")?;
    let problems = checkpoint.problems(&chain, at_seq.as_ref().map(|(_, hash)| hash.as_str()));
    let ok = problems.is_empty();
    report["ok"] = json!(ok);
    report["checkpoint"] =
        json!({ "seq": checkpoint.seq, "hash": checkpoint.hash, "at": checkpoint.at });
    report["checkpoint_problems"] = json!(problems);
    output(from.json, &report, |report| {
        if ok {
            println!(
                "audit chain intact and holds the checkpoint of {}: entry #{} {}",
                checkpoint.at.to_rfc3339(),
                checkpoint.seq,
                checkpoint.hash
            );
            print::audit_report(report, true);
        } else {
            for p in &problems {
                println!("{p}");
            }
            println!(
                "audit log does NOT hold the checkpoint: {} problems",
                problems.len()
            );
        }
    })?;
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

pub(super) async fn audit_checkpoint(
    config: &Path,
    out: Option<PathBuf>,
    server: Option<String>,
) -> anyhow::Result<ExitCode> {
    let checkpoint = read(config, server.as_deref(), async |r| {
        r.checkpoint(config).await
    })
    .await?;
    let text = serde_json::to_string_pretty(&checkpoint)? + "\n";
    match out {
        Some(path) => {
            std::fs::write(&path, &text)
                .with_context(|| format!("cannot write {}", path.display()))?;
            eprintln!(
                "checkpoint of entry #{} written to {}",
                checkpoint["seq"],
                path.display()
            );
        }
        None => print!("{text}"),
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn audit_keygen() -> ExitCode {
    use cordon::audit::checkpoint::SigningKey;
    let seed = SigningKey::generate();
    let public = SigningKey::from_secret(&cordon::config::Secret::new(seed.clone()))
        .map(|k| k.public())
        .unwrap_or_default();
    println!("signing_key: {seed}");
    println!("public_key: {public}");
    ExitCode::SUCCESS
}

pub(super) async fn alerts(config: &Path, command: AlertsCommand) -> anyhow::Result<ExitCode> {
    match command {
        AlertsCommand::List {
            source,
            incident,
            limit,
            from,
        } => {
            let query = AlertQuery {
                source,
                incident_id: incident,
                limit,
            };
            let alerts = from.read(config, async |r| r.alerts(&query).await).await?;
            output(from.json, &alerts, |a| print::alerts(a))?;
        }
        AlertsCommand::Show(One { id, from }) => {
            let found = from.read(config, async |r| r.alert(&id).await).await?;
            let alert = found.ok_or_else(|| anyhow!("no alert `{id}`"))?;
            output(from.json, &alert, print::alert)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn incidents(
    config: &Path,
    command: IncidentsCommand,
) -> anyhow::Result<ExitCode> {
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
            let query = IncidentQuery { status, limit };
            let incidents = from
                .read(config, async |r| r.incidents(&query).await)
                .await?;
            output(from.json, &incidents, |i| print::incidents(i))?;
        }
        IncidentsCommand::Show(One { id, from }) => {
            let found = from.read(config, async |r| r.incident(&id).await).await?;
            let (incident, alerts) = found.ok_or_else(|| anyhow!("no incident `{id}`"))?;
            let shown = json!({ "incident": incident, "alerts": alerts });
            output(from.json, &shown, |_| print::incident(&incident, &alerts))?;
        }
        IncidentsCommand::Report { id, html, server } => {
            let found = read(config, server.as_deref(), async |r| {
                r.report(&id, html).await
            })
            .await?;
            print!("{}", found.ok_or_else(|| anyhow!("no incident `{id}`"))?);
        }
        IncidentsCommand::Resolve { id, by } => {
            let path = format!("/v1/incidents/{id}/resolve");
            act(config, &by, &path, json!({})).await?;
            println!("{id}: resolved");
        }
        IncidentsCommand::Reopen { id, by } => {
            let path = format!("/v1/incidents/{id}/reopen");
            act(config, &by, &path, json!({})).await?;
            println!("{id}: open");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `cordon migrate`: sled at `from` into the PostgreSQL database at `to`.
pub(super) async fn migrate(from: &Path, to: &str) -> anyhow::Result<ExitCode> {
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
