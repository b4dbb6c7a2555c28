//! The incident report: everything that happened to one incident, from the store and the audit
//! log, as Markdown or HTML. Tickets get it attached on resolution; `GET /v1/incidents/{id}/report`
//! and `cordon incidents report ID` serve it; chat threads can post [`markdown`]'s text.
//!
//! Sections: the incident; a timeline merging alerts and audit entries (who, when, where); the
//! alerts; each run's steps with their outputs (enrichment); decisions on approvals; actions with
//! side effects and their undo; evidence with hashes; the linked tickets.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::Value;

use crate::alert::{Alert, AlertState, Incident};
use crate::audit::AuditEntry;
use crate::engine::run::Run;
use crate::store::{AlertQuery, RunQuery, Store, StoreError};

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Markdown,
    Html,
}

impl Format {
    /// `markdown` (or `md`) and `html`.
    pub fn parse(name: &str) -> Option<Format> {
        match name.to_ascii_lowercase().as_str() {
            "markdown" | "md" => Some(Format::Markdown),
            "html" => Some(Format::Html),
            _ => None,
        }
    }
}

/// What the report is made of.
#[derive(Debug, Clone)]
pub struct Report {
    pub incident: Incident,
    /// Oldest first.
    pub alerts: Vec<Alert>,
    /// Oldest first, each with its audit entries (oldest first).
    pub runs: Vec<(Run, Vec<AuditEntry>)>,
    /// Audit entries about the incident outside runs (resolved, reopened, tickets).
    pub entries: Vec<AuditEntry>,
    /// Linked tickets: system and reference (`key`/`number`, `url`).
    pub tickets: Vec<(String, Value)>,
    pub generated_at: DateTime<Utc>,
}

/// The Markdown report of an incident (`None` when there is no such incident).
pub async fn markdown(store: &dyn Store, incident_id: &str) -> Result<Option<String>, StoreError> {
    Ok(Report::gather(store, incident_id)
        .await?
        .map(|r| r.markdown()))
}

/// The HTML report of an incident.
pub async fn html(store: &dyn Store, incident_id: &str) -> Result<Option<String>, StoreError> {
    Ok(Report::gather(store, incident_id).await?.map(|r| r.html()))
}

/// Renders a gathered report.
pub fn render(report: &Report, format: Format) -> String {
    match format {
        Format::Markdown => report.markdown(),
        Format::Html => report.html(),
    }
}

impl Report {
    /// Reads everything about the incident.
    pub async fn gather(
        store: &dyn Store,
        incident_id: &str,
    ) -> Result<Option<Report>, StoreError> {
        let Some(incident) = store.incident(incident_id).await? else {
            return Ok(None);
        };
        let mut alerts = store
            .alerts(&AlertQuery {
                incident_id: Some(incident_id.to_owned()),
                limit: 100_000,
                ..AlertQuery::default()
            })
            .await?;
        alerts.reverse();
        let mut runs = store
            .runs(&RunQuery {
                incident_id: Some(incident_id.to_owned()),
                limit: 100_000,
                ..RunQuery::default()
            })
            .await?;
        runs.reverse();
        // One pass over the log: the runs' entries, and the incident's own.
        let log = store.audit_entries(None, 0).await?;
        let mut by_run: std::collections::HashMap<&str, Vec<AuditEntry>> =
            runs.iter().map(|r| (r.id.as_str(), Vec::new())).collect();
        let mut entries = Vec::new();
        for entry in log {
            match entry.run_id.as_deref() {
                Some(run) => {
                    if let Some(list) = by_run.get_mut(run) {
                        list.push(entry);
                    }
                }
                None if entry.detail["incident"] == incident_id => entries.push(entry),
                None => {}
            }
        }
        let runs = runs
            .iter()
            .map(|r| (r.clone(), by_run.remove(r.id.as_str()).unwrap_or_default()))
            .collect();
        let mut tickets = Vec::new();
        for (system, namespace) in [
            ("Jira", super::NS_JIRA),
            ("ServiceNow", super::NS_SERVICENOW),
        ] {
            if let Some(reference) = store.meta_get(namespace, incident_id).await? {
                tickets.push((system.to_owned(), reference));
            }
        }
        Ok(Some(Report {
            incident,
            alerts,
            runs,
            entries,
            tickets,
            generated_at: Utc::now(),
        }))
    }

    pub fn markdown(&self) -> String {
        markdown_of(&self.blocks())
    }

    pub fn html(&self) -> String {
        html_of(
            &format!("Incident report: {}", self.incident.title),
            &self.blocks(),
        )
    }

    /// The report as a format-neutral document.
    fn blocks(&self) -> Vec<Block> {
        let i = &self.incident;
        let mut facts = vec![
            format!("Incident: {}", i.id),
            format!("Status: {}", i.status),
        ];
        if let Some(at_source) = i.at_source_summary() {
            facts.push(format!("At the source: {at_source}"));
        }
        let mut out = vec![
            Block::Heading(1, format!("Incident report: {}", i.title)),
            Block::List(facts),
            Block::List(vec![
                format!("Severity: {}/10", i.severity),
                format!("Entity: {}", i.entity.as_deref().unwrap_or("-")),
                format!("Sources: {}", i.sources.join(", ")),
                format!(
                    "Opened: {}; last updated: {}",
                    time(&i.created_at),
                    time(&i.updated_at)
                ),
                format!(
                    "Alerts: {} distinct, {} received with repeats; runs: {}; evidence records: {}",
                    i.alert_count,
                    i.event_count,
                    self.runs.len(),
                    i.evidence.len()
                ),
            ]),
        ];
        if !self.tickets.is_empty() {
            out.push(Block::Heading(2, "Tickets".into()));
            out.push(Block::List(
                self.tickets
                    .iter()
                    .map(|(system, r)| {
                        let id = r["key"].as_str().or(r["number"].as_str()).unwrap_or("?");
                        format!("{system}: {id} {}", r["url"].as_str().unwrap_or(""))
                            .trim_end()
                            .to_owned()
                    })
                    .collect(),
            ));
        }
        out.extend(self.timeline());
        out.extend(self.alert_section());
        out.extend(self.step_section());
        out.extend(self.decision_section());
        out.extend(self.action_section());
        out.extend(self.evidence_section());
        if !i.values.is_empty() {
            out.push(Block::Heading(2, "Values set by playbooks".into()));
            out.push(Block::List(
                i.values
                    .iter()
                    .map(|(k, v)| format!("{k}: {}", compact(v, 300)))
                    .collect(),
            ));
        }
        out.push(Block::Para(format!(
            "Generated by Cordon at {}. The audit log (`cordon audit verify`) holds every entry above, hash-chained.",
            time(&self.generated_at)
        )));
        out
    }

    fn timeline(&self) -> Vec<Block> {
        let mut rows: Vec<(DateTime<Utc>, Vec<String>)> = Vec::new();
        for a in &self.alerts {
            // A notification that changed an earlier alert's state says so; any other alert is
            // received, in whatever state its source sent it.
            let event = match (&a.follows, a.state) {
                (Some(_), AlertState::Firing) => "alert firing again".to_owned(),
                (Some(_), state) => format!("alert {state} at the source"),
                (None, _) => "alert received".to_owned(),
            };
            rows.push((
                a.received_at,
                vec![
                    time(&a.received_at),
                    event,
                    a.source.clone(),
                    format!(
                        "{} ({}, severity {}/10, {}{}), alert {}{}",
                        a.title,
                        a.kind,
                        a.severity.score,
                        state_of(a),
                        if a.repeat_count > 1 {
                            format!(", seen {} times", a.repeat_count)
                        } else {
                            String::new()
                        },
                        a.id,
                        a.follows
                            .as_deref()
                            .map(|earlier| format!(", follows alert {earlier}"))
                            .unwrap_or_default()
                    ),
                ],
            ));
        }
        let run_entries = self
            .runs
            .iter()
            .flat_map(|(run, entries)| entries.iter().map(move |e| (Some(run), e)));
        for (run, e) in run_entries.chain(self.entries.iter().map(|e| (None, e))) {
            let mut what = String::new();
            if let Some(run) = run {
                what.push_str(&format!("{} run {}", run.playbook, short(&run.id)));
                if let Some(step) = &e.step {
                    what.push_str(&format!(" step {step}"));
                }
                what.push_str(": ");
            }
            what.push_str(&summarize(e));
            rows.push((
                e.at,
                vec![
                    time(&e.at),
                    e.kind.clone(),
                    crate::model::people::shown_as(e.actor.as_deref(), &e.detail)
                        .unwrap_or_else(|| "-".into()),
                    what,
                ],
            ));
        }
        rows.sort_by_key(|(at, _)| *at);
        vec![
            Block::Heading(2, "Timeline".into()),
            Block::Table(
                vec!["Time (UTC)", "Event", "Who", "What"],
                rows.into_iter().map(|(_, r)| r).collect(),
            ),
        ]
    }

    fn alert_section(&self) -> Vec<Block> {
        let rows = self
            .alerts
            .iter()
            .map(|a| {
                let resource = [&a.resource.kind, &a.resource.id, &a.resource.region]
                    .iter()
                    .filter_map(|p| p.as_deref())
                    .collect::<Vec<_>>()
                    .join(" ");
                let actor = a
                    .actor
                    .as_ref()
                    .and_then(|x| x.id.clone().or(x.name.clone()))
                    .unwrap_or_else(|| "-".into());
                vec![
                    time(&a.received_at),
                    a.source.clone(),
                    a.kind.clone(),
                    format!("{} ({})", a.severity.score, a.severity.native),
                    a.title.clone(),
                    if resource.is_empty() {
                        "-".into()
                    } else {
                        resource
                    },
                    actor,
                    a.network.remote_ip.clone().unwrap_or_else(|| "-".into()),
                    match (&a.follows, &a.followed_by) {
                        (_, Some(next)) => {
                            format!("{}, then changed by {}", state_of(a), short(next))
                        }
                        (Some(earlier), None) => {
                            format!("{}, follows {}", state_of(a), short(earlier))
                        }
                        (None, None) => state_of(a),
                    },
                    a.repeat_count.to_string(),
                    a.id.clone(),
                ]
            })
            .collect();
        vec![
            Block::Heading(2, "Alerts".into()),
            Block::Table(
                vec![
                    "Received (UTC)",
                    "Source",
                    "Kind",
                    "Severity",
                    "Title",
                    "Resource",
                    "Actor",
                    "Remote IP",
                    "At the source",
                    "Seen",
                    "Alert id",
                ],
                rows,
            ),
        ]
    }

    fn step_section(&self) -> Vec<Block> {
        let mut out = vec![Block::Heading(2, "Runs, enrichment and steps".into())];
        if self.runs.is_empty() {
            out.push(Block::Para("No playbook ran for this incident.".into()));
        }
        for (run, _) in &self.runs {
            out.push(Block::Heading(
                3,
                format!(
                    "Run {} of playbook {}: {}",
                    run.id, run.playbook, run.status
                ),
            ));
            let mut facts = vec![
                format!(
                    "Started by: {}{}",
                    run.trigger.kind,
                    run.trigger
                        .by
                        .as_deref()
                        .map(|b| format!(" ({b})"))
                        .unwrap_or_default()
                ),
                format!("Created: {}", time(&run.created_at)),
            ];
            if let Some(done) = &run.finished_at {
                facts.push(format!("Finished: {}", time(done)));
            }
            if let Some(error) = &run.error {
                facts.push(format!("Error: {error}"));
            }
            if run.dry_run {
                facts.push("Dry run: side effects were recorded, not performed".into());
            }
            out.push(Block::List(facts));
            let rows = run
                .order
                .iter()
                .filter_map(|id| run.steps.get(id).map(|s| (id, s)))
                .map(|(id, s)| {
                    let result = match &s.error {
                        Some(error) => format!("error: {error}"),
                        None => compact(&s.output, 400),
                    };
                    vec![
                        id.clone(),
                        status_name(s.status),
                        s.action.clone().unwrap_or_else(|| "-".into()),
                        s.attempts.to_string(),
                        s.finished_at
                            .as_ref()
                            .map(time)
                            .unwrap_or_else(|| "-".into()),
                        result,
                    ]
                })
                .collect();
            out.push(Block::Table(
                vec![
                    "Step",
                    "Status",
                    "Side-effect action",
                    "Attempts",
                    "Finished (UTC)",
                    "Output",
                ],
                rows,
            ));
        }
        out
    }

    fn decision_section(&self) -> Vec<Block> {
        let mut rows = Vec::new();
        for (run, _) in &self.runs {
            for id in &run.order {
                let Some(approval) = run.steps.get(id).and_then(|s| s.approval.as_ref()) else {
                    continue;
                };
                let outcome = match approval.outcome {
                    Some(true) => "approved",
                    Some(false) => "rejected",
                    None => "open",
                };
                let head = |rows: &mut Vec<Vec<String>>,
                            who: String,
                            decision: String,
                            at: String,
                            via: String| {
                    rows.push(vec![
                        format!("{} {}", run.playbook, short(&run.id)),
                        id.clone(),
                        approval.prompt.clone(),
                        format!("{} (quorum {})", approval.group, approval.quorum),
                        who,
                        decision,
                        at,
                        via,
                        outcome.to_owned(),
                    ]);
                };
                if approval.decisions.is_empty() {
                    head(
                        &mut rows,
                        "-".into(),
                        "(none)".into(),
                        "-".into(),
                        "-".into(),
                    );
                }
                for d in &approval.decisions {
                    head(
                        &mut rows,
                        d.shown(),
                        if d.approve { "approve" } else { "deny" }.into(),
                        time(&d.at),
                        d.via.clone(),
                    );
                }
            }
        }
        let mut out = vec![Block::Heading(2, "Decisions".into())];
        if rows.is_empty() {
            out.push(Block::Para("No approval was requested.".into()));
        } else {
            out.push(Block::Table(
                vec![
                    "Run",
                    "Step",
                    "Prompt",
                    "Approvers",
                    "Who",
                    "Decision",
                    "When (UTC)",
                    "Where",
                    "Outcome",
                ],
                rows,
            ));
        }
        out
    }

    fn action_section(&self) -> Vec<Block> {
        let mut rows = Vec::new();
        for (run, entries) in &self.runs {
            for id in &run.order {
                let Some(step) = run.steps.get(id) else {
                    continue;
                };
                let Some(action) = &step.action else { continue };
                let undone = match &step.undone {
                    Some(u) => format!(
                        "undone by {} at {} with {}",
                        u["by"].as_str().unwrap_or("?"),
                        u["at"].as_str().unwrap_or("?"),
                        u["action"].as_str().unwrap_or("?")
                    ),
                    None => entries
                        .iter()
                        .rev()
                        .filter(|e| e.step.as_deref() == Some(id))
                        .find_map(|e| match e.typed_detail() {
                            crate::model::event::Detail::StepUndoFailed(failed) => Some(format!(
                                "undo by {} failed: {}",
                                crate::model::people::shown_as(e.actor.as_deref(), &e.detail)
                                    .unwrap_or_else(|| "?".into()),
                                failed.error
                            )),
                            _ => None,
                        })
                        .unwrap_or_else(|| "-".into()),
                };
                rows.push(vec![
                    format!("{} {}", run.playbook, short(&run.id)),
                    id.clone(),
                    action.clone(),
                    format!(
                        "{}{}",
                        status_name(step.status),
                        if step.dry_run { " (dry run)" } else { "" }
                    ),
                    compact(&step.inputs, 300),
                    step.idempotency_key.clone().unwrap_or_else(|| "-".into()),
                    step.finished_at
                        .as_ref()
                        .map(time)
                        .unwrap_or_else(|| "-".into()),
                    undone,
                ]);
            }
        }
        let mut out = vec![Block::Heading(2, "Actions and their undo".into())];
        if rows.is_empty() {
            out.push(Block::Para("No action with side effects ran.".into()));
        } else {
            out.push(Block::Table(
                vec![
                    "Run",
                    "Step",
                    "Action",
                    "Status",
                    "Inputs",
                    "Idempotency key",
                    "Finished (UTC)",
                    "Undo",
                ],
                rows,
            ));
        }
        out
    }

    fn evidence_section(&self) -> Vec<Block> {
        let text = |r: &Value, k: &str| r[k].as_str().unwrap_or("-").to_owned();
        let rows: Vec<Vec<String>> = self
            .incident
            .evidence
            .iter()
            .map(|r| {
                vec![
                    text(r, "kind"),
                    text(r, "location"),
                    text(r, "sha256"),
                    text(r, "collected_at"),
                    format!(
                        "{} {}",
                        short(r["run_id"].as_str().unwrap_or("-")),
                        text(r, "step_id")
                    ),
                    text(r, "action"),
                ]
            })
            .collect();
        let mut out = vec![Block::Heading(2, "Evidence".into())];
        if rows.is_empty() {
            out.push(Block::Para("No evidence was collected.".into()));
        } else {
            out.push(Block::Table(
                vec![
                    "Kind",
                    "Location",
                    "SHA-256",
                    "Collected (UTC)",
                    "Run / step",
                    "Action",
                ],
                rows,
            ));
        }
        out
    }
}

/// An alert's state at its source as this notification gave it, with the source's own word when
/// that is another: `resolved`, `suppressed (archived)`.
fn state_of(a: &Alert) -> String {
    match &a.source_state {
        Some(word) if !word.eq_ignore_ascii_case(a.state.name()) => format!("{} ({word})", a.state),
        _ => a.state.to_string(),
    }
}

/// One audit entry in a line.
fn summarize(e: &AuditEntry) -> String {
    use crate::model::event::Detail;
    let approve_or_deny = |approve: bool| if approve { "approve" } else { "deny" };
    let text = |value: Option<&str>| value.unwrap_or("-").to_owned();
    match e.typed_detail() {
        Detail::RunState(state) => format!(
            "{} → {}{}",
            state.from,
            state.to,
            state.error.map(|x| format!(" ({x})")).unwrap_or_default()
        ),
        Detail::StepStarted(started) => {
            format!("{} started (attempt {})", started.action, started.attempt)
        }
        Detail::StepFinished(finished) | Detail::StepSkipped(finished) => format!(
            "{} after {} attempt(s){}",
            finished.status,
            finished.attempts,
            finished.error.map(|x| format!(": {x}")).unwrap_or_default()
        ),
        Detail::ApprovalRequested(asked) => format!(
            "\"{}\" to {} (quorum {}, timeout {})",
            asked.prompt, asked.group, asked.quorum, asked.timeout
        ),
        Detail::ApprovalDecided(decided) => format!(
            "{} via {} ({} of {}{})",
            approve_or_deny(decided.approve),
            decided.via,
            decided.approvals,
            decided.quorum,
            match decided.outcome {
                Some(true) => ", approved",
                Some(false) => ", rejected",
                None => "",
            }
        ),
        Detail::ApprovalRefused(refused) => format!(
            "{} via {} refused: {}",
            approve_or_deny(refused.approve),
            refused.via,
            refused.reason
        ),
        Detail::EvidenceCollected(evidence) => format!(
            "{} at {} (sha256 {})",
            text(evidence.kind()),
            text(evidence.location()),
            text(evidence.sha256())
        ),
        Detail::StepUndone(undone) => format!("undone with {}", undone.action),
        Detail::StepUndoFailed(failed) => {
            format!("undo with {} failed: {}", failed.action, failed.error)
        }
        Detail::IncidentResolved(changed) | Detail::IncidentReopened(changed) => {
            format!("via {}", changed.via)
        }
        Detail::TicketCreated(ticket) => {
            format!("{} ticket {} {}", ticket.system, ticket.ticket, ticket.url)
        }
        Detail::TicketAssigned(ticket) => format!(
            "{} ticket {} assigned to {}",
            ticket.system, ticket.ticket, ticket.to
        ),
        _ => compact(&e.detail, 300),
    }
}

fn status_name(status: crate::engine::run::StepStatus) -> String {
    serde_json::to_value(status)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

fn time(at: &DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
        .replace('T', " ")
        .trim_end_matches('Z')
        .to_owned()
}

/// The first 8 characters of an id (the rest is in the run's heading).
fn short(id: &str) -> String {
    id.chars().take(8).collect()
}

/// JSON on one line, cut at `max` characters.
fn compact(value: &Value, max: usize) -> String {
    let text = match value {
        Value::Null => return "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    if text.chars().count() <= max {
        return text;
    }
    let mut out: String = text.chars().take(max).collect();
    out.push('…');
    out
}

/// A format-neutral piece of the report.
#[derive(Debug, Clone)]
enum Block {
    Heading(u8, String),
    Para(String),
    List(Vec<String>),
    Table(Vec<&'static str>, Vec<Vec<String>>),
}

/// Markdown text: no HTML gets through (`<` and `>` are escaped), and a cell stays a cell.
fn md(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace(['\r', '\n'], " ")
}

fn md_cell(text: &str) -> String {
    md(text).replace('|', "\\|")
}

fn markdown_of(blocks: &[Block]) -> String {
    let mut out = String::new();
    for block in blocks {
        match block {
            Block::Heading(level, text) => {
                out.push_str(&"#".repeat(*level as usize));
                out.push(' ');
                out.push_str(&md(text));
                out.push_str("\n\n");
            }
            Block::Para(text) => {
                out.push_str(&md(text));
                out.push_str("\n\n");
            }
            Block::List(items) => {
                for item in items {
                    out.push_str("- ");
                    out.push_str(&md(item));
                    out.push('\n');
                }
                out.push('\n');
            }
            Block::Table(head, rows) => {
                out.push_str(&format!("| {} |\n", head.join(" | ")));
                out.push_str(&format!("|{}\n", "---|".repeat(head.len())));
                for row in rows {
                    let cells: Vec<String> = row.iter().map(|c| md_cell(c)).collect();
                    out.push_str(&format!("| {} |\n", cells.join(" | ")));
                }
                out.push('\n');
            }
        }
    }
    out
}

fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn html_of(title: &str, blocks: &[Block]) -> String {
    let mut out = format!(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{}</title>\n<style>body{{font-family:system-ui,sans-serif;margin:2em;line-height:1.4}}table{{border-collapse:collapse;margin:1em 0;font-size:.9em}}th,td{{border:1px solid #ccc;padding:.3em .5em;text-align:left;vertical-align:top}}th{{background:#f3f3f3}}td{{word-break:break-word}}</style>\n</head>\n<body>\n",
        esc(title)
    );
    for block in blocks {
        match block {
            Block::Heading(level, text) => {
                out.push_str(&format!("<h{level}>{}</h{level}>\n", esc(text)));
            }
            Block::Para(text) => out.push_str(&format!("<p>{}</p>\n", esc(text))),
            Block::List(items) => {
                out.push_str("<ul>\n");
                for item in items {
                    out.push_str(&format!("<li>{}</li>\n", esc(item)));
                }
                out.push_str("</ul>\n");
            }
            Block::Table(head, rows) => {
                out.push_str("<table>\n<thead><tr>");
                for h in head {
                    out.push_str(&format!("<th>{}</th>", esc(h)));
                }
                out.push_str("</tr></thead>\n<tbody>\n");
                for row in rows {
                    out.push_str("<tr>");
                    for cell in row {
                        out.push_str(&format!("<td>{}</td>", esc(cell)));
                    }
                    out.push_str("</tr>\n");
                }
                out.push_str("</tbody>\n</table>\n");
            }
        }
    }
    out.push_str("</body>\n</html>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_keeps_cells_and_refuses_html() {
        let blocks = vec![
            Block::Heading(1, "Report <script>".into()),
            Block::Table(
                vec!["A", "B"],
                vec![vec!["x | y".into(), "line\nbreak".into()]],
            ),
        ];
        let text = markdown_of(&blocks);
        assert!(text.starts_with("# Report &lt;script&gt;\n"), "{text}");
        assert!(text.contains("| x \\| y | line break |"), "{text}");
    }

    #[test]
    fn html_escapes_everything_it_shows() {
        let blocks = vec![Block::Para("<img src=x onerror=alert(1)> & \"q\"".into())];
        let page = html_of("t", &blocks);
        assert!(
            page.contains("<p>&lt;img src=x onerror=alert(1)&gt; &amp; &quot;q&quot;</p>"),
            "{page}"
        );
        assert!(!page.contains("<img"));
    }

    #[test]
    fn the_report_shows_an_alert_firing_then_resolved_at_its_source() {
        let at = |t: &str| -> DateTime<Utc> { t.parse().expect("time") };
        let raw = || serde_json::value::RawValue::from_string("{}".into()).expect("raw");
        let mut firing = Alert::new("alertmanager", "HighCPU", raw());
        firing.title = "CPU above 90% on web-1".into();
        firing.received_at = at("2024-05-01T12:00:00Z");
        firing.source_state = Some("firing".into());
        let mut resolved = firing.clone();
        resolved.id = crate::alert::new_id();
        resolved.received_at = at("2024-05-01T12:05:00Z");
        resolved.state = AlertState::Resolved;
        resolved.source_state = Some("resolved".into());
        resolved.follows = Some(firing.id.clone());
        firing.followed_by = Some(resolved.id.clone());
        let mut incident = Incident::open_for(&firing);
        incident.count_state(
            Some(AlertState::Firing),
            AlertState::Resolved,
            resolved.received_at,
        );
        let report = Report {
            incident,
            alerts: vec![firing.clone(), resolved.clone()],
            runs: Vec::new(),
            entries: Vec::new(),
            tickets: Vec::new(),
            generated_at: at("2024-05-01T13:00:00Z"),
        };
        let text = report.markdown();
        assert!(
            text.contains(
                "- At the source: 1 resolved at the source; none firing since 2024-05-01 12:05 UTC"
            ),
            "{text}"
        );
        let received = text.find("| 2024-05-01 12:00:00 | alert received | alertmanager | CPU above 90% on web-1 (HighCPU, severity 0/10, firing)").expect(&text);
        let resolution = text.find(&format!("| 2024-05-01 12:05:00 | alert resolved at the source | alertmanager | CPU above 90% on web-1 (HighCPU, severity 0/10, resolved), alert {}, follows alert {}", resolved.id, firing.id)).expect(&text);
        assert!(received < resolution, "the timeline is in order: {text}");
        assert!(
            text.contains(&format!(
                "| firing, then changed by {} |",
                short(&resolved.id)
            )),
            "{text}"
        );
        assert!(
            text.contains(&format!("| resolved, follows {} |", short(&firing.id))),
            "{text}"
        );
    }

    #[test]
    fn a_source_word_other_than_the_state_is_shown_beside_it() {
        let raw = serde_json::value::RawValue::from_string("{}".into()).expect("raw");
        let mut a = Alert::new("aws.guardduty", "Recon:EC2/PortProbeUnprotectedPort", raw);
        assert_eq!(state_of(&a), "firing");
        a.state = AlertState::Suppressed;
        a.source_state = Some("archived".into());
        assert_eq!(state_of(&a), "suppressed (archived)");
    }

    #[test]
    fn formats_are_named() {
        assert_eq!(Format::parse("Markdown"), Some(Format::Markdown));
        assert_eq!(Format::parse("html"), Some(Format::Html));
        assert_eq!(Format::parse("pdf"), None);
    }
}
