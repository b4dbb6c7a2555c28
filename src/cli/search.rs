//! `cordon search`, `cordon hunt` and `cordon reindex` (src/search, docs/search.md).

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use serde_json::Value;

use super::Source;
use super::commands::load_config;

/// `cordon search QUERY [--since] [--until] [--limit] [--cursor] [--json]`.
pub(super) async fn search(
    config: &Path,
    search: cordon::search::Search,
    from: Source,
) -> anyhow::Result<ExitCode> {
    let page = match from.read(config, async |r| r.search(&search).await).await {
        Ok(page) => page,
        Err(e) => {
            if let Some(cordon::search::SearchError::Query { column, message }) =
                e.downcast_ref::<cordon::search::SearchError>()
            {
                eprintln!("error: query: column {column}: {message}");
                eprintln!("  {}", search.q);
                let pad: String = search
                    .q
                    .chars()
                    .take(column.saturating_sub(1))
                    .map(|c| if c == '\t' { '\t' } else { ' ' })
                    .collect();
                eprintln!("  {pad}^");
                return Ok(ExitCode::from(2));
            }
            return Err(e);
        }
    };
    if from.json {
        println!("{}", serde_json::to_string_pretty(&page)?);
        return Ok(ExitCode::SUCCESS);
    }
    let hits = page["hits"].as_array().cloned().unwrap_or_default();
    if hits.is_empty() {
        println!("no matches");
    }
    for hit in &hits {
        println!(
            "{}  {:<8} {:>2}  {:<22} {}  {}",
            text(&hit["time"]),
            text(&hit["type"]),
            hit["severity"],
            text(&hit["source"]),
            text(&hit["id"]),
            text(&hit["title"]),
        );
    }
    if let Some(next) = page["next_cursor"].as_str() {
        println!("more: --cursor {next}");
    }
    Ok(ExitCode::SUCCESS)
}

/// `cordon hunt ENTITY [--window 7d] [--json]`.
pub(super) async fn hunt(
    config: &Path,
    entity: &str,
    window: &str,
    from: Source,
) -> anyhow::Result<ExitCode> {
    let found = from
        .read(config, async |r| r.hunt(entity, window).await)
        .await?;
    if from.json {
        println!("{}", serde_json::to_string_pretty(&found)?);
        return Ok(ExitCode::SUCCESS);
    }
    let list = |name: &str| found[name].as_array().cloned().unwrap_or_default();
    println!(
        "{} from {} to {}",
        text(&found["entity"]),
        text(&found["since"]),
        text(&found["until"])
    );
    let alerts = list("alerts");
    let more = if found["alerts_truncated"] == true {
        "+"
    } else {
        ""
    };
    println!("\nalerts ({}{more}):", alerts.len());
    for a in &alerts {
        println!(
            "  {}  {:>2}  {:<22} {}  {}",
            text(&a["time"]),
            a["severity"],
            text(&a["source"]),
            text(&a["id"]),
            text(&a["title"])
        );
    }
    println!("\nincidents ({}):", list("incidents").len());
    for i in list("incidents") {
        println!(
            "  {}  {:<8} {}  {}",
            text(&i["time"]),
            text(&i["status"]),
            text(&i["id"]),
            text(&i["title"])
        );
    }
    println!("\nevidence ({}):", list("evidence").len());
    for e in list("evidence") {
        println!("  {}  {}", text(&e["incident_id"]), e["record"]);
    }
    println!("\nactions taken ({}):", list("actions").len());
    for a in list("actions") {
        println!(
            "  {}  {} {}  {}  {}",
            text(&a["run_id"]),
            text(&a["playbook"]),
            text(&a["step"]),
            text(&a["action"]),
            text(&a["status"])
        );
    }
    println!("\ndecisions ({}):", list("decisions").len());
    for d in list("decisions") {
        println!(
            "  #{}  {}  {}  {}  {}",
            d["seq"],
            text(&d["at"]),
            text(&d["kind"]),
            text(&d["actor"]),
            text(&d["run_id"])
        );
    }
    println!("\nseen with it:");
    for c in list("co_occurring") {
        let fields: Vec<String> = c["fields"]
            .as_array()
            .map(|f| f.iter().map(text).collect())
            .unwrap_or_default();
        println!(
            "  {:>5}  {}  ({})",
            c["count"],
            text(&c["entity"]),
            fields.join(", ")
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `cordon reindex`: rebuilds the search index (sled) or the search rows (PostgreSQL) from the
/// stored alerts and incidents. The embedded store must not be held by a running server.
pub(super) async fn reindex(config_path: &Path) -> anyhow::Result<ExitCode> {
    let config = match load_config(config_path) {
        Ok(config) => config,
        Err(code) => return Ok(code),
    };
    let metrics = std::sync::Arc::new(cordon::telemetry::Metrics::new());
    let store = match cordon::store::open(&config.store, &config.grouping, metrics).await {
        Ok(store) => store,
        Err(cordon::store::StoreError::Locked(path)) => anyhow::bail!(
            "the store at {path} is held by a running server: stop it, then run `cordon reindex`"
        ),
        Err(e) => return Err(e).context("cannot open the store"),
    };
    let started = std::time::Instant::now();
    let result = store.reindex().await;
    let _ = store.close().await;
    let count = result.context("reindex failed")?;
    eprintln!(
        "reindexed {count} alerts and incidents in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}
