//! `cordon backtest`: the playbooks given (edited, not loaded) replayed over stored alerts in dry
//! run, offline, against the playbooks loaded now (`cordon::backtest` says how).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::anyhow;
use async_trait::async_trait;
use cordon::alert::{Alert, Incident};
use cordon::backtest::{History, Report, Selection, StoreHistory};
use cordon::config::HumanDuration;
use cordon::store::AlertQuery;

use super::commands::load_config;
use super::print::{output, safe};
use super::reader::Reader;

/// How many alerts the admin API lists at most: what a backtest through a running server sees.
const API_PAGE: usize = 1000;

/// `cordon backtest`.
pub(super) async fn backtest(
    config_path: &Path,
    paths: &[PathBuf],
    since: HumanDuration,
    source: Option<String>,
    query: Option<String>,
    from: super::Source,
) -> anyhow::Result<ExitCode> {
    let config =
        load_config(config_path).map_err(|_| anyhow!("the config has errors (see above)"))?;
    let scripts = cordon::app::scripts(&config);
    let catalog = match cordon::app::catalog(&config) {
        Ok(catalog) => catalog,
        Err(problems) => {
            eprintln!("{problems}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let groups = cordon::app::group_names(&config);
    let (given, problems) =
        cordon::playbook::load::load_paths(paths, &scripts, &catalog, Some(&groups));
    if !problems.is_empty() {
        for p in &problems {
            eprintln!("{p}");
        }
        return Ok(ExitCode::FAILURE);
    }
    let (loaded, problems) = cordon::playbook::load::load_paths(
        &config.playbooks.paths,
        &scripts,
        &catalog,
        Some(&groups),
    );
    for p in &problems {
        eprintln!("warning: loaded playbooks: {p}");
    }
    let g = &config.guardrails;
    let setup = cordon::backtest::Setup {
        scripts,
        catalog,
        guardrails: Arc::new(cordon::actions::Guardrails::new(
            g.protected.clone(),
            Default::default(),
            g.blast_radius_approvers.clone(),
        )),
    };
    let selection = Selection {
        since: chrono::Utc::now()
            - chrono::Duration::from_std(since.0).unwrap_or(chrono::Duration::MAX),
        source,
        query,
    };
    let report = from
        .read(config_path, async |reader| {
            let result = match reader {
                Reader::Local(store) => {
                    let history = StoreHistory(store.clone());
                    cordon::backtest::backtest(&history, &selection, &given, &loaded, &setup).await
                }
                Reader::Remote { .. } if selection.query.is_none() => {
                    eprintln!(
                        "note: a running server holds the store; the backtest reads the newest {API_PAGE} alerts through its admin API"
                    );
                    let history = Remote(reader);
                    cordon::backtest::backtest(&history, &selection, &given, &loaded, &setup).await
                }
                Reader::Remote { .. } => {
                    let history = Remote(reader);
                    cordon::backtest::backtest(&history, &selection, &given, &loaded, &setup).await
                }
            };
            result.map_err(|e| anyhow!("cannot read the history: {e}"))
        })
        .await?;
    output(from.json, &report, print_report)?;
    Ok(ExitCode::SUCCESS)
}

/// History through the admin API of the server holding the store.
struct Remote<'a>(&'a Reader);

#[async_trait]
impl History for Remote<'_> {
    async fn alerts(&self, selection: &Selection) -> Result<Vec<Alert>, String> {
        if let Some(mut search) = selection.search() {
            // Every page of the server's search, each alert read by its id.
            let mut alerts = Vec::new();
            loop {
                let page = self.0.search(&search).await.map_err(|e| e.to_string())?;
                for hit in page["hits"].as_array().into_iter().flatten() {
                    let Some(id) = hit["id"].as_str() else {
                        continue;
                    };
                    if let Some(alert) = self.0.alert(id).await.map_err(|e| e.to_string())? {
                        alerts.push(alert);
                    }
                }
                match page["next_cursor"].as_str() {
                    Some(cursor) => search.cursor = Some(cursor.to_owned()),
                    None => break,
                }
            }
            alerts.retain(|a| a.received_at >= selection.since);
            cordon::backtest::oldest_first(&mut alerts);
            return Ok(alerts);
        }
        let query = AlertQuery {
            source: selection.source.clone(),
            incident_id: None,
            limit: API_PAGE,
        };
        let mut alerts = self.0.alerts(&query).await.map_err(|e| e.to_string())?;
        alerts.retain(|a| a.received_at >= selection.since);
        cordon::backtest::oldest_first(&mut alerts);
        Ok(alerts)
    }

    async fn incident(&self, id: &str) -> Result<Option<(Incident, Vec<Alert>)>, String> {
        self.0.incident(id).await.map_err(|e| e.to_string())
    }
}

fn print_report(report: &Report) {
    println!(
        "backtest over {} alerts since {} (dry run, offline: nothing was called or written)",
        report.alerts,
        report.since.to_rfc3339()
    );
    for playbook in &report.playbooks {
        println!(
            "\nplaybook {} ({})",
            safe(&playbook.id),
            safe(&playbook.file)
        );
        println!(
            "  alerts matched {}, runs {} (one per incident){}",
            playbook.alerts_matched,
            playbook.runs,
            if playbook.when_errors > 0 {
                format!(", `when` failed on {} alerts", playbook.when_errors)
            } else {
                String::new()
            }
        );
        let statuses: Vec<String> = playbook
            .by_status
            .iter()
            .map(|(s, n)| format!("{n} {s}"))
            .collect();
        if !statuses.is_empty() {
            println!("  runs would end: {}", statuses.join(", "));
        }
        for (step, n) in &playbook.approvals {
            println!("  approval `{}` reached {n} times", safe(step));
        }
        for (action, n) in &playbook.side_effects {
            println!("  side effect {} asked for {n} times", safe(action));
        }
        for (incident, run) in &playbook.incidents {
            println!(
                "    {} {} [{}] steps: {}",
                safe(incident),
                safe(&run.title),
                safe(&run.status),
                safe(&run.steps.join(", "))
            );
            if let Some(error) = &run.error {
                println!("      stopped: {}", safe(error));
            }
        }
    }
    for diff in &report.differences {
        if diff.new {
            println!(
                "\n{}: not loaded now; it would start on {} incidents",
                safe(&diff.playbook),
                diff.gained.len()
            );
            continue;
        }
        println!(
            "\n{} against the loaded playbook: {} incidents gained, {} lost",
            safe(&diff.playbook),
            diff.gained.len(),
            diff.lost.len()
        );
        for id in &diff.gained {
            println!("  + {}", safe(id));
        }
        for id in &diff.lost {
            println!("  - {}", safe(id));
        }
    }
}
