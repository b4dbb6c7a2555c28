//! How the commands show what they read: tables, one record's fields, or JSON with `--json`.
//!
//! Alert text is the sender's: a title holding `ESC [2J` would clear the analyst's terminal, and
//! other escape sequences can retitle the window, hide text or forge a line. Every value printed
//! here goes through [`safe`], which shows control and bidirectional-override characters as
//! visible escapes (`\u{1b}[2J`) instead of sending them to the terminal. `--json` needs nothing:
//! JSON escapes control characters itself.

use cordon::actions::ActionSpec;
use cordon::alert::{Alert, Incident};
use cordon::audit::AuditEntry;
use cordon::engine::run::Run;
use serde_json::Value;

/// `text` with every control character (C0, DEL, C1) and every bidirectional override or isolate
/// written as a visible escape (`\u{1b}`), so nothing in it acts on the terminal.
pub(super) fn safe(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        let bidi = matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
        if c.is_control() || bidi {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

/// Prints `value` as JSON with `--json`, else with `print`.
pub(super) fn output<T: serde::Serialize + ?Sized>(
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

/// The actions with their inputs, and whether they have side effects.
pub(super) fn actions(specs: &[ActionSpec]) {
    for spec in specs {
        let effect = match (spec.side_effect, spec.idempotent) {
            (false, _) => "no side effect",
            (true, true) => "side effect, idempotent",
            (true, false) => "side effect, not idempotent",
        };
        println!(
            "{}  ({effect})\n    {}",
            safe(&spec.name),
            safe(&spec.description)
        );
        for (name, input) in &spec.inputs {
            let required = if input.required {
                "required"
            } else {
                "optional"
            };
            println!(
                "    {:<12} {:<7} {required:<9} {}",
                safe(name),
                input.kind.name(),
                safe(&input.description)
            );
        }
        println!();
    }
}

/// The audit chain check (`VerifyReport::summary`): intact, or each problem.
pub(super) fn audit_report(report: &Value, ok: bool) {
    if ok {
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
                safe(p["what"].as_str().unwrap_or_default())
            );
        }
        println!(
            "audit chain BROKEN: {} problems in {} entries",
            report["problems"].as_array().map(Vec::len).unwrap_or(0),
            report["entries"]
        );
    }
}

/// Runs as a table, a row each.
pub(super) fn runs(runs: &[Run]) {
    list(
        runs,
        "no runs",
        &[
            "ID",
            "UPDATED",
            "STATUS",
            "PLAYBOOK",
            "INCIDENT",
            "WAITING ON",
        ],
        |r| {
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
        },
    );
}

/// One run: its fields, its steps (those of the runs its `call` steps started as
/// `step@call_step`), and its audit trail.
pub(super) fn run(run: &Run, called: &[Run], audit: &[AuditEntry]) {
    println!("{:<10}{}", "run", safe(&run.id));
    println!("{:<10}{}", "playbook", safe(&run.playbook));
    println!(
        "{:<10}{}{}",
        "status",
        run.status,
        run.error
            .as_ref()
            .map(|e| format!(" ({})", safe(e)))
            .unwrap_or_default()
    );
    println!(
        "{:<10}{}",
        "incident",
        safe(run.incident_id.as_deref().unwrap_or("-"))
    );
    println!("{:<10}{}", "started", when(run.created_at));
    if run.dry_run {
        println!(
            "{:<10}yes: side effects were recorded, not performed",
            "dry run"
        );
    }
    println!();
    let mut steps = Vec::new();
    steps_of(run, "", called, &mut steps);
    let rows = steps
        .into_iter()
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
                safe(&id),
                s.status.to_string(),
                s.attempts.to_string(),
                detail,
            ]
        })
        .collect();
    table(&["STEP", "STATUS", "TRIES", "DETAIL"], rows);
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
        table(&["AUDIT", "AT", "EVENT", "STEP", "BY"], rows);
    }
}

/// The steps of `run` in the order they were reached, by address (`suffix` is `@call_step` for a
/// called run), each followed by the steps of the run it called, if any.
fn steps_of<'a>(
    run: &'a Run,
    suffix: &str,
    called: &'a [Run],
    out: &mut Vec<(String, &'a cordon::engine::run::StepState)>,
) {
    for id in &run.order {
        let Some(state) = run.steps.get(id) else {
            continue;
        };
        out.push((format!("{id}{suffix}"), state));
        if let Some(child) = state
            .child
            .as_ref()
            .and_then(|c| called.iter().find(|r| &r.id == c))
        {
            steps_of(child, &format!("@{id}{suffix}"), called, out);
        }
    }
}

/// Alerts as a table, a row each.
pub(super) fn alerts(alerts: &[Alert]) {
    list(
        alerts,
        "no alerts",
        &[
            "ID", "RECEIVED", "SOURCE", "SEV", "SEEN", "RESOURCE", "TITLE",
        ],
        |a| {
            vec![
                a.id.clone(),
                when(a.received_at),
                a.source.clone(),
                a.severity.score.to_string(),
                a.repeat_count.to_string(),
                clip(a.resource.id.as_deref().or(a.actor_id()).unwrap_or("-"), 40),
                clip(&a.title, 60),
            ]
        },
    );
}

/// One alert: its fields and its raw payload.
pub(super) fn alert(a: &Alert) {
    let field = |name: &str, value: Option<&str>| {
        if let Some(v) = value {
            println!("{name:<13}{}", safe(v));
        }
    };
    field("id", Some(&a.id));
    field("incident", Some(&a.incident_id));
    field("source", Some(&a.source));
    field("kind", Some(&a.kind));
    println!(
        "{:<13}{} (source: {})",
        "severity",
        a.severity.score,
        safe(&a.severity.native)
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
        println!("{:<13}{}={}", "label", safe(k), safe(v));
    }
    println!("raw:");
    let pretty = serde_json::from_str::<Value>(a.raw.get())
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_else(|| a.raw.get().to_owned());
    // Pretty JSON escapes control characters already; the line breaks it adds are kept.
    let shown: Vec<String> = pretty.lines().map(safe).collect();
    println!("{}", shown.join("\n"));
}

/// Incidents as a table, a row each.
pub(super) fn incidents(incidents: &[Incident]) {
    list(
        incidents,
        "no incidents",
        &[
            "ID", "UPDATED", "STATUS", "SEV", "ALERTS", "EVENTS", "ENTITY", "TITLE",
        ],
        |i| {
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
        },
    );
}

/// One incident: its fields, its alerts, and its evidence.
pub(super) fn incident(incident: &Incident, alerts: &[Alert]) {
    incident_fields(incident);
    println!();
    self::alerts(alerts);
    if !incident.evidence.is_empty() {
        println!();
        evidence(&incident.evidence);
    }
}

/// An incident's own fields.
fn incident_fields(i: &Incident) {
    println!("{:<10}{}", "id", safe(&i.id));
    println!("{:<10}{}", "title", safe(&i.title));
    println!("{:<10}{}", "status", i.status);
    println!("{:<10}{}", "severity", i.severity);
    println!(
        "{:<10}{}",
        "entity",
        safe(i.entity.as_deref().unwrap_or("-"))
    );
    println!("{:<10}{}", "sources", safe(&i.sources.join(", ")));
    println!(
        "{:<10}{} ({} events)",
        "alerts", i.alert_count, i.event_count
    );
    println!("{:<10}{}", "opened", when(i.created_at));
    println!("{:<10}{}", "updated", when(i.updated_at));
}

/// The evidence records of an incident as a table.
fn evidence(records: &[Value]) {
    let text = |r: &Value, k: &str| r[k].as_str().unwrap_or("-").to_owned();
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
    table(
        &["EVIDENCE", "LOCATION", "SHA256", "COLLECTED AT", "RUN STEP"],
        rows,
    );
}

/// `items` as a table, a row each, or `none` when there are none.
fn list<T>(items: &[T], none: &str, headers: &[&str], row: impl Fn(&T) -> Vec<String>) {
    if items.is_empty() {
        println!("{none}");
        return;
    }
    table(headers, items.iter().map(row).collect());
}

/// `rows` under `headers`, each column as wide as its widest cell.
fn table(headers: &[&str], rows: Vec<Vec<String>>) {
    let rows: Vec<Vec<String>> = rows
        .into_iter()
        .map(|row| row.iter().map(|cell| safe(cell)).collect())
        .collect();
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

/// `text`, cut to `max` characters with an ellipsis.
fn clip(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_owned()
    } else {
        format!("{}…", text.chars().take(max - 1).collect::<String>())
    }
}

/// A time as the tables show it (UTC).
fn when(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}

#[cfg(test)]
mod tests {
    use super::safe;

    #[test]
    fn control_and_bidi_characters_show_as_escapes() {
        assert_eq!(safe("a\u{1b}[2Jb"), "a\\u{1b}[2Jb");
        assert_eq!(safe("x\u{9b}31m\ny\u{7}"), "x\\u{9b}31m\\u{a}y\\u{7}");
        assert_eq!(safe("evil\u{202e}gpj.exe"), "evil\\u{202e}gpj.exe");
        assert_eq!(
            safe("Reverse shell on web-1 — ünïcode"),
            "Reverse shell on web-1 — ünïcode"
        );
    }
}
