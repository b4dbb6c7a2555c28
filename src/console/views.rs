//! The pages' shared parts (layout, severity, time, JSON) and the simpler pages: sign-in, the
//! incident list, runs, a run, playbooks, the audit log. Every value is escaped by maud unless it
//! is our own markup.

use chrono::{DateTime, Utc};
use maud::{DOCTYPE, Markup, PreEscaped, html};
use serde_json::Value;

use super::session::Visitor;
use crate::alert::Incident;
use crate::model::run::{Run, RunStatus, StepState, StepStatus};

/// The severity's word; every severity is shown with its word and score, never colour alone.
pub fn severity_word(score: u8) -> &'static str {
    match score {
        9.. => "critical",
        7..=8 => "high",
        4..=6 => "medium",
        2..=3 => "low",
        _ => "info",
    }
}

/// A severity badge: word and score, coloured by word.
pub fn severity(score: u8) -> Markup {
    let word = severity_word(score);
    html! {
        span class={ "sev sev-" (word) } { (word) " " (score) }
    }
}

/// A time as people read it, in UTC, with the machine form in `datetime`.
pub fn time(at: DateTime<Utc>) -> Markup {
    html! {
        time datetime=(at.to_rfc3339()) { (at.format("%Y-%m-%d %H:%M:%S")) }
    }
}

/// JSON shown in a `<pre>`, cut at `max` characters.
pub fn json_block(value: &Value, max: usize) -> Markup {
    let text = serde_json::to_string_pretty(value).unwrap_or_default();
    let cut = text.chars().count() > max;
    let shown: String = text.chars().take(max).collect();
    html! {
        pre.json { (shown) @if cut { "\n… (cut at " (max) " characters)" } }
    }
}

pub fn run_status(status: RunStatus) -> Markup {
    html! { span class={ "st st-" (status.as_str()) } { (status.as_str()) } }
}

pub fn step_status(status: StepStatus) -> Markup {
    html! { span class={ "st st-" (status.as_str()) } { (status.as_str()) } }
}

/// A hidden CSRF field for a form.
pub fn csrf(visitor: &Visitor) -> Markup {
    html! { input type="hidden" name="csrf" value=(visitor.session.csrf); }
}

/// The page around `body`.
pub fn layout(title: &str, visitor: Option<&Visitor>, live: Option<&str>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="color-scheme" content="light dark";
                title { (title) " · Cordon" }
                link rel="stylesheet" href="/assets/console.css";
                script src="/assets/console.js" defer {}
            }
            body data-live=[live] {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    a.brand href="/incidents" { "Cordon" }
                    @if let Some(v) = visitor {
                        nav aria-label="Main" {
                            a href="/incidents" { "Incidents" }
                            a href="/runs" { "Runs" }
                            a href="/playbooks" { "Playbooks" }
                            a href="/audit" { "Audit" }
                        }
                        div.who {
                            span { "Signed in as " strong { (v.actor.person) } " (" (v.actor.roles) ")" }
                            form method="post" action="/logout" {
                                (csrf(v))
                                button type="submit" { "Sign out" }
                            }
                        }
                    }
                }
                main #main { (body) }
            }
        }
    }
}

/// A page saying what went wrong.
pub fn problem(title: &str, message: &str, visitor: Option<&Visitor>) -> Markup {
    layout(
        title,
        visitor,
        None,
        html! {
            h1 { (title) }
            p.problem role="alert" { (message) }
            p { a href="/incidents" { "Back to incidents" } }
        },
    )
}

/// The sign-in page.
pub fn login(next: &str, oidc: bool, message: Option<&str>) -> Markup {
    layout(
        "Sign in",
        None,
        None,
        html! {
            h1 { "Sign in to Cordon" }
            @if let Some(m) = message { p.problem role="alert" { (m) } }
            @if oidc {
                section.card {
                    h2 { "Single sign-on" }
                    a.button href={ "/login/oidc?next=" (urlencode(next)) } { "Sign in with your identity provider" }
                }
            }
            section.card {
                h2 { "Personal token" }
                p { "Paste a personal token once; the console keeps a session, not the token. "
                    "Make one with " code { "cordon tokens create <person>" } " (it uses the bootstrap admin token)." }
                form method="post" action="/login/token" {
                    input type="hidden" name="next" value=(next);
                    label for="token" { "Personal token" }
                    input #token type="password" name="token" autocomplete="off" required;
                    button type="submit" { "Sign in" }
                }
            }
        },
    )
}

pub fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// The list's filters, as given.
#[derive(Debug, Default, Clone)]
pub struct ListParams {
    pub status: String,
    pub severity_min: String,
    pub severity_max: String,
    pub source: String,
    pub entity: String,
    pub since: String,
    pub until: String,
    pub assignee: String,
    pub q: String,
    pub cursor: String,
}

impl ListParams {
    /// The query string of these filters with another cursor.
    pub fn with_cursor(&self, cursor: &str) -> String {
        let mut out = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in [
            ("status", &self.status),
            ("severity_min", &self.severity_min),
            ("severity_max", &self.severity_max),
            ("source", &self.source),
            ("entity", &self.entity),
            ("since", &self.since),
            ("until", &self.until),
            ("assignee", &self.assignee),
            ("q", &self.q),
        ] {
            if !v.is_empty() {
                out.append_pair(k, v);
            }
        }
        out.append_pair("cursor", cursor);
        out.finish()
    }
}

/// A pending approval shown on the list (for `a`).
pub struct Pending {
    pub run: String,
    pub step: String,
    pub prompt: String,
    pub may_decide: bool,
}

/// The incident list.
pub fn incident_list(
    visitor: &Visitor,
    params: &ListParams,
    incidents: &[Incident],
    pending: &dyn Fn(&str) -> Option<Pending>,
    next_cursor: Option<&str>,
    problem: Option<&str>,
) -> Markup {
    let field = |name: &'static str, label: &'static str, value: &str, kind: &'static str| {
        html! {
            label { span { (label) } input type=(kind) name=(name) value=(value); }
        }
    };
    layout(
        "Incidents",
        Some(visitor),
        Some("all"),
        html! {
            h1 { "Incidents" }
            form.filters method="get" action="/incidents" role="search" aria-label="Filter incidents" {
                label { span { "Search" } input type="search" name="q" value=(params.q) placeholder="title or entity"; }
                label { span { "Status" }
                    select name="status" {
                        option value="" selected[params.status.is_empty()] { "any" }
                        option value="open" selected[params.status == "open"] { "open" }
                        option value="resolved" selected[params.status == "resolved"] { "resolved" }
                    }
                }
                (field("severity_min", "Severity from", &params.severity_min, "number"))
                (field("severity_max", "to", &params.severity_max, "number"))
                (field("source", "Source", &params.source, "text"))
                (field("entity", "Entity", &params.entity, "text"))
                (field("since", "Updated since", &params.since, "datetime-local"))
                (field("until", "Created until", &params.until, "datetime-local"))
                (field("assignee", "Assignee", &params.assignee, "text"))
                button type="submit" { "Filter" }
            }
            @if let Some(p) = problem { p.problem role="alert" { (p) } }
            p.hint { "Keys: " kbd { "j" } "/" kbd { "k" } " move, " kbd { "Enter" } " opens, " kbd { "a" } " approves the selected incident's pending approval (after a confirmation)." }
            div data-live-part="list" #list {
                table.list #incidents aria-label="Incidents" {
                    thead { tr {
                        th scope="col" { "Severity" } th scope="col" { "Incident" } th scope="col" { "Entity" }
                        th scope="col" { "Sources" } th scope="col" { "Alerts" } th scope="col" { "Status" }
                        th scope="col" { "Pending" } th scope="col" { "Updated" }
                    } }
                    tbody {
                        @for i in incidents {
                            @let href = format!("/incidents/{}", i.id);
                            tr.row data-href=(href) tabindex="-1" {
                                td { (severity(i.severity)) }
                                td { a href=(href) { (i.title) } }
                                td.mono { (i.entity.as_deref().unwrap_or("—")) }
                                td { (i.sources.join(", ")) }
                                td.num { (i.alert_count) }
                                td { span class={ "st st-" (i.status) } { (i.status) } }
                                td {
                                    @if let Some(p) = pending(&i.id) {
                                        @if p.may_decide {
                                            form.approve method="post" action={ "/runs/" (p.run) "/approvals/" (p.step) } data-confirm={ "Approve: " (p.prompt) "?" } {
                                                (csrf(visitor))
                                                input type="hidden" name="decision" value="approve";
                                                input type="hidden" name="back" value="/incidents";
                                                button type="submit" aria-label={ "Approve: " (p.prompt) } { "Approve" }
                                            }
                                        } @else {
                                            span { "awaiting approval" }
                                        }
                                    }
                                }
                                td { (time(i.updated_at)) }
                            }
                        }
                    }
                }
                @if incidents.is_empty() { p { "No incident matches." } }
                @if let Some(c) = next_cursor {
                    p { a rel="next" href={ "/incidents?" (params.with_cursor(c)) } { "Older incidents" } }
                }
            }
        },
    )
}

/// The runs list.
pub fn run_list(visitor: &Visitor, runs: &[Run], status: &str, playbook: &str) -> Markup {
    layout(
        "Runs",
        Some(visitor),
        Some("all"),
        html! {
            h1 { "Runs" }
            form.filters method="get" action="/runs" aria-label="Filter runs" {
                label { span { "Status" } input name="status" value=(status); }
                label { span { "Playbook" } input name="playbook" value=(playbook); }
                button type="submit" { "Filter" }
            }
            div data-live-part="runs" #runs {
                table.list aria-label="Runs" {
                    thead { tr { th scope="col" { "Run" } th scope="col" { "Playbook" } th scope="col" { "Status" }
                        th scope="col" { "Incident" } th scope="col" { "Trigger" } th scope="col" { "Created" } } }
                    tbody {
                        @for r in runs {
                            tr {
                                td.mono { a href={ "/runs/" (r.id) } { (r.id) } }
                                td { (r.playbook) }
                                td { (run_status(r.status)) }
                                td.mono { @if let Some(i) = &r.incident_id { a href={ "/incidents/" (i) } { (i) } } }
                                td { (r.trigger.kind) @if let Some(b) = &r.trigger.by { " by " (b) } }
                                td { (time(r.created_at)) }
                            }
                        }
                    }
                }
                @if runs.is_empty() { p { "No runs." } }
            }
        },
    )
}

/// One step's row in a run's table.
fn step_row(run: &Run, id: &str, s: &StepState, visitor: &Visitor, may_respond: bool) -> Markup {
    html! {
        tr id={ "step-" (id) } {
            td.mono { (id) }
            td { (step_status(s.status)) @if s.dry_run { " (dry run)" } @if s.undone.is_some() { " · undone" } }
            td { (s.action.as_deref().unwrap_or("script")) }
            td.num { (s.attempts) }
            td { @if let Some(t) = s.started_at { (time(t)) } }
            td { @if let Some(t) = s.finished_at { (time(t)) } @else if let Some(d) = s.due_at { "waits until " (time(d)) } }
            td {
                @if !s.inputs.is_null() { details { summary { "Inputs" } (json_block(&s.inputs, 4000)) } }
                @if !s.output.is_null() { details { summary { "Output" } (json_block(&s.output, 4000)) } }
                @if let Some(e) = &s.error { p.problem { (e) } }
                @if let Some(a) = &s.approval {
                    p { "Approval: " (a.prompt) " (group " (a.group) ", quorum " (a.quorum) ")" }
                    ul { @for d in &a.decisions { li { (decision_text(d)) } } }
                }
                @if let Some(child) = &s.child { p { "Started run " a href={ "/runs/" (child) } { (child) } } }
                @if may_respond && s.status == StepStatus::Succeeded && s.action.is_some() && s.undone.is_none() && !s.dry_run {
                    form method="post" action={ "/runs/" (run.id) "/steps/" (id) "/undo" } data-confirm={ "Ask to undo step " (id) "? The undo is an approval of its own." } {
                        (csrf(visitor))
                        button type="submit" aria-label={ "Undo step " (id) } { "Undo…" }
                    }
                }
            }
        }
    }
}

/// The steps of a run as a table.
pub fn steps_table(run: &Run, visitor: &Visitor, may_respond: bool) -> Markup {
    html! {
        table.list aria-label={ "Steps of run " (run.id) } {
            thead { tr { th scope="col" { "Step" } th scope="col" { "Status" } th scope="col" { "Action" }
                th scope="col" { "Attempts" } th scope="col" { "Started" } th scope="col" { "Finished" } th scope="col" { "Details" } } }
            tbody {
                @for id in &run.order {
                    @if let Some(s) = run.steps.get(id) { (step_row(run, id, s, visitor, may_respond)) }
                }
            }
        }
    }
}

/// One run.
pub fn run_page(
    visitor: &Visitor,
    run: &Run,
    audit: &[crate::model::audit::AuditEntry],
    approvals: Markup,
    may_respond: bool,
) -> Markup {
    layout(
        &format!("Run {}", run.playbook),
        Some(visitor),
        Some(&format!("run:{}", run.id)),
        html! {
            h1 { "Run of " (run.playbook) }
            div data-live-part="run" #run {
                dl.facts {
                    dt { "Run" } dd.mono { (run.id) }
                    dt { "Status" } dd { (run_status(run.status)) }
                    @if let Some(i) = &run.incident_id { dt { "Incident" } dd.mono { a href={ "/incidents/" (i) } { (i) } } }
                    dt { "Trigger" } dd { (run.trigger.kind) @if let Some(b) = &run.trigger.by { " by " (b) } }
                    dt { "Created" } dd { (time(run.created_at)) }
                    @if let Some(f) = run.finished_at { dt { "Finished" } dd { (time(f)) } }
                    @if let Some(e) = &run.error { dt { "Error" } dd.problem { (e) } }
                }
                (approvals)
                @if !run.inputs.is_null() { details { summary { "Run inputs" } (json_block(&run.inputs, 8000)) } }
                h2 { "Steps" }
                (steps_table(run, visitor, may_respond))
                h2 { "Audit trail" }
                (audit_table(audit))
            }
        },
    )
}

/// Audit entries as a table.
pub fn audit_table(entries: &[crate::model::audit::AuditEntry]) -> Markup {
    html! {
        table.list aria-label="Audit entries" {
            thead { tr { th scope="col" { "Seq" } th scope="col" { "At" } th scope="col" { "Event" } th scope="col" { "Who" }
                th scope="col" { "Run" } th scope="col" { "Step" } th scope="col" { "Detail" } } }
            tbody {
                @for e in entries {
                    tr {
                        td.num { (e.seq) }
                        td { (time(e.at)) }
                        td { (e.kind) }
                        td { (e.actor.as_deref().unwrap_or("")) }
                        td.mono { @if let Some(r) = &e.run_id { a href={ "/runs/" (r) } { (short(r)) } } }
                        td.mono { (e.step.as_deref().unwrap_or("")) }
                        td { code { (compact(&e.detail, 300)) } }
                    }
                }
            }
        }
    }
}

/// The last 8 characters of an id.
pub fn short(id: &str) -> &str {
    let start = id.len().saturating_sub(8);
    id.get(start..).unwrap_or(id)
}

/// JSON on one line, cut at `max` characters.
pub fn compact(value: &Value, max: usize) -> String {
    let text = value.to_string();
    if text.chars().count() > max {
        let mut cut: String = text.chars().take(max).collect();
        cut.push('…');
        cut
    } else {
        text
    }
}

/// One playbook's row on the playbooks page.
pub struct PlaybookRow {
    pub id: String,
    pub name: String,
    pub file: String,
    pub trigger: String,
    pub problems: Vec<String>,
    pub tests: Vec<(String, Vec<String>)>,
    pub last_runs: Vec<Run>,
}

pub fn playbooks(visitor: &Visitor, rows: &[PlaybookRow], errors: &[String]) -> Markup {
    layout(
        "Playbooks",
        Some(visitor),
        None,
        html! {
            h1 { "Playbooks" }
            @if !errors.is_empty() {
                section.card {
                    h2 { "Files with errors" }
                    p { "These are refused; the loaded playbooks keep running. " code { "cordon validate" } " prints the same." }
                    ul { @for e in errors { li.problem { (e) } } }
                }
            }
            table.list aria-label="Playbooks" {
                thead { tr { th scope="col" { "Playbook" } th scope="col" { "Trigger" } th scope="col" { "Validation" }
                    th scope="col" { "cordon test" } th scope="col" { "Last runs" } } }
                tbody {
                    @for p in rows {
                        tr {
                            td { strong { (p.name) } br; span.mono { (p.id) } br; span.small { (p.file) } }
                            td.mono { (p.trigger) }
                            td { @if p.problems.is_empty() { span.st.st-succeeded { "valid" } } @else { span.st.st-failed { "invalid" } ul { @for e in &p.problems { li { (e) } } } } }
                            td {
                                @if p.tests.is_empty() { "no test cases" }
                                @else {
                                    @let failed = p.tests.iter().filter(|t| !t.1.is_empty()).count();
                                    @if failed == 0 { span.st.st-succeeded { "passed" } " (" (p.tests.len()) " cases)" }
                                    @else { span.st.st-failed { (failed) " of " (p.tests.len()) " failed" } }
                                    ul { @for (case, diffs) in &p.tests { @if !diffs.is_empty() { li { (case) ": " (diffs.join("; ")) } } } }
                                }
                            }
                            td { ul.plain { @for r in &p.last_runs { li { a href={ "/runs/" (r.id) } { (run_status(r.status)) " " (r.created_at.format("%m-%d %H:%M")) } } } } }
                        }
                    }
                }
            }
        },
    )
}

/// The audit page.
pub struct AuditView<'a> {
    pub entries: &'a [crate::model::audit::AuditEntry],
    pub verified: &'a Value,
    pub checkpoint: Option<u64>,
    pub incident: &'a str,
    pub person: &'a str,
    pub since: &'a str,
    pub until: &'a str,
    pub total: usize,
}

pub fn audit(visitor: &Visitor, view: &AuditView<'_>) -> Markup {
    let ok = view.verified["ok"].as_bool().unwrap_or(false);
    layout(
        "Audit",
        Some(visitor),
        None,
        html! {
            h1 { "Audit log" }
            section.card aria-label="Chain" {
                p {
                    "Chain: "
                    @if ok { span.st.st-succeeded { "verified" } } @else { span.st.st-failed { "broken" } }
                    " · " (view.verified["entries"]) " entries, last seq " (view.verified["last_seq"])
                    " · latest signed checkpoint: "
                    @match view.checkpoint { Some(seq) => { "seq " (seq) }, None => { "none yet" } }
                }
                @if !ok { (json_block(&view.verified["problems"], 4000)) }
            }
            form.filters method="get" action="/audit" aria-label="Filter the audit log" {
                label { span { "Incident" } input name="incident" value=(view.incident); }
                label { span { "Person or identity" } input name="person" value=(view.person); }
                label { span { "Since" } input type="datetime-local" name="since" value=(view.since); }
                label { span { "Until" } input type="datetime-local" name="until" value=(view.until); }
                button type="submit" { "Filter" }
            }
            p { (view.entries.len()) " of " (view.total) " matching entries, newest first." }
            (audit_table(view.entries))
        },
    )
}

/// Our own markup, passed through.
pub fn raw(s: &str) -> PreEscaped<String> {
    PreEscaped(s.to_owned())
}

/// A decision as people read it: `approved by alice via console at 10:02:03`.
pub fn decision_text(d: &crate::model::run::Decision) -> String {
    format!(
        "{} by {} via {} at {}",
        if d.approve { "approved" } else { "denied" },
        d.shown(),
        d.via,
        d.at.format("%H:%M:%S")
    )
}
