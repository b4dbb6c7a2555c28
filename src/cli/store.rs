//! `cordon store stats` and `cordon store prune`.

use std::path::Path;
use std::process::ExitCode;

use anyhow::anyhow;
use cordon::store::StoreStats;

use super::commands::load_config;
use super::print::{output, safe};

/// `cordon store stats`: counts and sizes per kind, from the local store or the server holding it.
pub(super) async fn stats(config: &Path, from: super::Source) -> anyhow::Result<ExitCode> {
    let stats = from.read(config, async |r| r.store_stats().await).await?;
    output(from.json, &stats, print_stats)?;
    Ok(ExitCode::SUCCESS)
}

fn print_stats(stats: &StoreStats) {
    println!("{:<14} {:>12} {:>14}", "KIND", "COUNT", "SIZE");
    for kind in &stats.kinds {
        println!(
            "{:<14} {:>12} {:>14}",
            safe(&kind.kind),
            kind.count,
            human(kind.bytes)
        );
    }
    println!(
        "{} store, {} on disk",
        safe(&stats.backend),
        human(stats.on_disk_bytes)
    );
}

/// Bytes for a person: `1.5 MiB`.
fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// `cordon store prune`: one retention pass on the local store now (a running server prunes by
/// itself every `retention.every`).
pub(super) async fn prune(config_path: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let config =
        load_config(config_path).map_err(|_| anyhow!("the config has errors (see above)"))?;
    let metrics = std::sync::Arc::new(cordon::telemetry::Metrics::new());
    let store = match cordon::store::open(&config.store, &config.grouping, metrics).await {
        Ok(store) => store,
        Err(cordon::store::StoreError::Locked(path)) => {
            eprintln!(
                "the store at {path} is held by a running server, which prunes by itself every retention.every ({})",
                config.retention.every
            );
            return Ok(ExitCode::FAILURE);
        }
        Err(e) => return Err(e.into()),
    };
    let pruner = cordon::retention::Pruner::new(
        store.clone(),
        config.retention.clone(),
        cordon::retention::system_clock(),
    );
    let report = pruner.run_once().await;
    let _ = store.close().await;
    let report = report?;
    output(json, &report, |report| {
        for kind in &report.kinds {
            println!(
                "{:<14} pruned {:>8} of {:>8} looked at (older than {})",
                kind.kind,
                kind.pruned,
                kind.examined,
                kind.cutoff.to_rfc3339()
            );
        }
    })?;
    Ok(ExitCode::SUCCESS)
}
