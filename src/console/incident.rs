//! The incident page: its summary and actions, the timeline (an SVG drawn on the server, zoomable
//! by the page's script, and the same events as a table), the entity graph (an SVG), the evidence,
//! the runs with their approvals, tickets and the report.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use maud::{Markup, html};

use super::session::Visitor;
use super::views::{csrf, layout, run_status, severity, short, time};
use crate::alert::{Alert, Incident, IncidentStatus};
use crate::model::audit::AuditEntry;
use crate::model::run::{Run, StepStatus};
use crate::tickets::report::Report;

/// What the viewer may do here (their roles, as the API checks them).
pub struct Powers {
    pub respond: bool,
    /// Whether they may decide the approval of this group.
    pub decide: Box<dyn Fn(&str) -> bool + Send + Sync>,
    pub approver_role: bool,
}

/// Where one event of the timeline goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Lane {
    Alerts,
    Runs,
    Approvals,
    Evidence,
    Incident,
}

impl Lane {
    const ALL: [Lane; 5] = [
        Lane::Alerts,
        Lane::Runs,
        Lane::Approvals,
        Lane::Evidence,
        Lane::Incident,
    ];

    fn name(self) -> &'static str {
        match self {
            Lane::Alerts => "Alerts",
            Lane::Runs => "Runs & steps",
            Lane::Approvals => "Approvals",
            Lane::Evidence => "Evidence",
            Lane::Incident => "Incident",
        }
    }
}

/// One event of the timeline.
#[derive(Debug, Clone)]
pub struct Item {
    pub at: DateTime<Utc>,
    pub end: Option<DateTime<Utc>>,
    pub lane: Lane,
    pub what: String,
    pub who: Option<String>,
    pub link: Option<String>,
}

/// Every event of the incident, oldest first.
pub fn timeline(report: &Report) -> Vec<Item> {
    let mut items = Vec::new();
    for a in &report.alerts {
        // `repeat_count` counts the first receipt too.
        let again = a.repeat_count.saturating_sub(1);
        let repeats = if again > 0 {
            format!(
                " · received again {} time{}{}",
                again,
                if again == 1 { "" } else { "s" },
                a.last_seen_at
                    .map(|t| format!(", last {}", t.format("%H:%M:%S")))
                    .unwrap_or_default()
            )
        } else {
            String::new()
        };
        items.push(Item {
            at: a.received_at,
            end: None,
            lane: Lane::Alerts,
            what: format!(
                "Alert from {}: {} ({} {}){repeats}",
                a.source,
                a.title,
                super::views::severity_word(a.severity.score),
                a.severity.score
            ),
            who: None,
            link: None,
        });
    }
    for (run, _) in &report.runs {
        let link = Some(format!("/runs/{}", run.id));
        items.push(Item {
            at: run.created_at,
            end: run.finished_at,
            lane: Lane::Runs,
            what: format!(
                "Playbook {} matched and started ({}) · now {}",
                run.playbook, run.trigger.kind, run.status
            ),
            who: run.trigger.by.clone(),
            link: link.clone(),
        });
        for id in &run.order {
            let Some(s) = run.steps.get(id) else { continue };
            let Some(started) = s.started_at.or(s.finished_at) else {
                continue;
            };
            if let Some(a) = &s.approval {
                items.push(Item {
                    at: started,
                    end: None,
                    lane: Lane::Approvals,
                    what: format!(
                        "Approval asked in {}: {} (group {}, quorum {})",
                        run.playbook, a.prompt, a.group, a.quorum
                    ),
                    who: None,
                    link: link.clone(),
                });
                for d in &a.decisions {
                    items.push(Item {
                        at: d.at,
                        end: None,
                        lane: Lane::Approvals,
                        what: format!(
                            "{} via {}",
                            if d.approve { "Approved" } else { "Denied" },
                            d.via
                        ),
                        who: Some(d.who().to_owned()),
                        link: link.clone(),
                    });
                }
                if let Some(outcome) = a.outcome {
                    items.push(Item {
                        at: s.finished_at.unwrap_or(started),
                        end: None,
                        lane: Lane::Approvals,
                        what: format!("Approval {}", if outcome { "granted" } else { "refused" }),
                        who: None,
                        link: link.clone(),
                    });
                }
                continue;
            }
            let output = if s.output.is_null() {
                String::new()
            } else {
                format!(" → {}", super::views::compact(&s.output, 160))
            };
            let error = s
                .error
                .as_ref()
                .map(|e| format!(" · error: {e}"))
                .unwrap_or_default();
            items.push(Item {
                at: started,
                end: s.finished_at,
                lane: Lane::Runs,
                what: format!(
                    "Step {id} ({}) {}{}{output}{error}",
                    s.action.as_deref().unwrap_or("script"),
                    s.status,
                    if s.attempts > 1 {
                        format!(" after {} attempts", s.attempts)
                    } else {
                        String::new()
                    }
                ),
                who: None,
                link: Some(format!("/runs/{}#step-{id}", run.id)),
            });
            if s.undone.is_some() {
                items.push(Item {
                    at: s.finished_at.unwrap_or(started),
                    end: None,
                    lane: Lane::Runs,
                    what: format!("Step {id} undone"),
                    who: None,
                    link: link.clone(),
                });
            }
        }
    }
    for e in &report.incident.evidence {
        let at = e["collected_at"]
            .as_str()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or(report.incident.updated_at);
        items.push(Item {
            at,
            end: None,
            lane: Lane::Evidence,
            what: format!(
                "Evidence {} at {}{}",
                e["kind"].as_str().unwrap_or("collected"),
                e["location"].as_str().unwrap_or("?"),
                e["sha256"]
                    .as_str()
                    .map(|h| format!(" (sha256 {h})"))
                    .unwrap_or_default()
            ),
            who: None,
            link: None,
        });
    }
    for e in incident_entries(report) {
        items.push(Item {
            at: e.at,
            end: None,
            lane: Lane::Incident,
            what: incident_entry_text(e),
            who: e.actor.clone(),
            link: None,
        });
    }
    items.sort_by_key(|i| i.at);
    items
}

/// The incident's own audit entries (status changes, tickets), not those of its runs.
fn incident_entries(report: &Report) -> impl Iterator<Item = &AuditEntry> {
    report.entries.iter().chain(
        report
            .runs
            .iter()
            .flat_map(|(_, entries)| entries.iter())
            .filter(|e| e.kind.starts_with("ticket.")),
    )
}

fn incident_entry_text(e: &AuditEntry) -> String {
    let via = e.detail["via"]
        .as_str()
        .map(|v| format!(" via {v}"))
        .unwrap_or_default();
    match e.kind.as_str() {
        "incident.resolved" => format!("Incident resolved{via}"),
        "incident.reopened" => format!("Incident reopened{via}"),
        other => format!("{other}{via}"),
    }
}

/// Plot geometry of the timeline SVG.
const WIDTH: f64 = 1000.0;
const LEFT: f64 = 130.0;
const RIGHT: f64 = 990.0;
const LANE_H: f64 = 44.0;
const TOP: f64 = 24.0;
/// Alerts are drawn as counts per bucket, however many there are.
const BUCKETS: usize = 80;

/// The timeline as an SVG: alerts as a histogram of counts per time bucket, steps as bars from
/// start to end, approvals, decisions, evidence and incident changes as marks. Each mark has a
/// `<title>` (its tooltip and accessible text).
pub fn timeline_svg(items: &[Item]) -> Markup {
    let height = TOP + LANE_H * Lane::ALL.len() as f64 + 20.0;
    let (Some(first), Some(last)) = (
        items.iter().map(|i| i.at).min(),
        items.iter().map(|i| i.end.unwrap_or(i.at)).max(),
    ) else {
        return html! { p { "Nothing has happened yet." } };
    };
    let span = (last - first).num_milliseconds().max(1000) as f64;
    let x =
        |t: DateTime<Utc>| LEFT + (RIGHT - LEFT) * ((t - first).num_milliseconds() as f64 / span);
    let lane_y =
        |lane: Lane| TOP + LANE_H * Lane::ALL.iter().position(|l| *l == lane).unwrap_or(0) as f64;
    // Alerts per bucket.
    let mut buckets = vec![0u32; BUCKETS];
    for i in items.iter().filter(|i| i.lane == Lane::Alerts) {
        let b = (((i.at - first).num_milliseconds() as f64 / span) * BUCKETS as f64) as usize;
        buckets[b.min(BUCKETS - 1)] += 1;
    }
    let most = buckets.iter().copied().max().unwrap_or(1).max(1) as f64;
    let bucket_w = (RIGHT - LEFT) / BUCKETS as f64;
    let bucket_ms = span / BUCKETS as f64;
    let alerts_y = lane_y(Lane::Alerts);
    let ticks: Vec<(f64, String)> = (0..=5)
        .map(|k| {
            let t = first + chrono::TimeDelta::milliseconds((span * k as f64 / 5.0) as i64);
            (x(t), t.format("%m-%d %H:%M:%S").to_string())
        })
        .collect();
    html! {
        svg #timeline-svg role="img" aria-labelledby="timeline-title" viewBox={ "0 0 " (WIDTH) " " (height) } preserveAspectRatio="none" data-left=(LEFT) data-right=(RIGHT) {
            title #timeline-title { "Timeline from " (first.format("%Y-%m-%d %H:%M:%S")) " to " (last.format("%Y-%m-%d %H:%M:%S")) " UTC: " (items.len()) " events" }
            @for lane in Lane::ALL {
                @let y = lane_y(lane);
                rect.lane x="0" y=(y) width=(WIDTH) height=(LANE_H - 4.0) {}
                text.lanename x="6" y=(y + LANE_H / 2.0) { (lane.name()) }
            }
            defs { clipPath #plot-clip { rect x=(LEFT) y="0" width=(RIGHT - LEFT) height=(height) {} } }
            g clip-path="url(#plot-clip)" {
            g.plot {
                @for (b, count) in buckets.iter().enumerate() {
                    @if *count > 0 {
                        @let h = ((LANE_H - 8.0) * (*count as f64 / most)).max(2.0);
                        @let from = first + chrono::TimeDelta::milliseconds((bucket_ms * b as f64) as i64);
                        rect.alerts x=(LEFT + bucket_w * b as f64) y=(alerts_y + LANE_H - 4.0 - h) width=(bucket_w.max(1.0) - 0.5) height=(h) {
                            title { (count) " alert" @if *count != 1 { "s" } " from " (from.format("%m-%d %H:%M:%S")) }
                        }
                    }
                }
                @for i in items.iter().filter(|i| i.lane != Lane::Alerts) {
                    @let y = lane_y(i.lane);
                    @if let Some(end) = i.end {
                        rect class={ "mark " (lane_class(i.lane)) } x=(x(i.at)) y=(y + 10.0) width=((x(end) - x(i.at)).max(2.0)) height=(LANE_H - 24.0) {
                            title { (i.what) }
                        }
                    } @else {
                        circle class={ "mark " (lane_class(i.lane)) } cx=(x(i.at)) cy=(y + LANE_H / 2.0 - 2.0) r="5" {
                            title { (i.what) @if let Some(w) = &i.who { " by " (w) } }
                        }
                    }
                }
            }
            g.axis {
                @for (tx, label) in &ticks {
                    line x1=(tx) x2=(tx) y1=(TOP) y2=(height - 18.0) {}
                    text x=(tx) y=(height - 4.0) text-anchor=(if *tx <= LEFT + 1.0 { "start" } else if *tx >= RIGHT - 1.0 { "end" } else { "middle" }) { (label) }
                }
            }
            }
        }
    }
}

fn lane_class(lane: Lane) -> &'static str {
    match lane {
        Lane::Alerts => "l-alerts",
        Lane::Runs => "l-runs",
        Lane::Approvals => "l-approvals",
        Lane::Evidence => "l-evidence",
        Lane::Incident => "l-incident",
    }
}

/// The timeline as a table. With many alerts, those within one bucket are one row.
pub fn timeline_table(items: &[Item]) -> Markup {
    // Alerts of one title within one minute are one row: a burst of 2 000 findings reads as a
    // few lines, not 2 000.
    let mut rows: Vec<Row> = Vec::new();
    let mut pending: Option<(DateTime<Utc>, usize, String)> = None;
    // With many alerts, every alert of a minute is one row, whatever its title.
    let many = items.iter().filter(|i| i.lane == Lane::Alerts).count() > 200;
    let minute = |t: DateTime<Utc>| t.timestamp() / 60;
    for i in items {
        if i.lane == Lane::Alerts {
            match &mut pending {
                Some((at, n, first))
                    if minute(*at) == minute(i.at) && (many || *first == i.what) =>
                {
                    *n += 1
                }
                _ => {
                    if let Some((at, n, first)) = pending.take() {
                        rows.push((at, Lane::Alerts, alert_group(n, &first), None, None));
                    }
                    pending = Some((i.at, 1, i.what.clone()));
                }
            }
            continue;
        }
        rows.push((i.at, i.lane, i.what.clone(), i.who.clone(), i.link.clone()));
    }
    if let Some((at, n, first)) = pending.take() {
        rows.push((at, Lane::Alerts, alert_group(n, &first), None, None));
    }
    rows.sort_by_key(|r| r.0);
    html! {
        table.list #timeline-table aria-label="Timeline as a table" {
            thead { tr { th scope="col" { "When" } th scope="col" { "Kind" } th scope="col" { "What" } th scope="col" { "Who" } } }
            tbody {
                @for (at, lane, what, who, link) in &rows {
                    tr {
                        td { (time(*at)) }
                        td { (lane.name()) }
                        td { @if let Some(l) = link { a href=(l) { (what) } } @else { (what) } }
                        td { (who.as_deref().unwrap_or("")) }
                    }
                }
            }
        }
    }
}

/// A row of the timeline table: when, lane, what, who, link.
type Row = (DateTime<Utc>, Lane, String, Option<String>, Option<String>);

fn alert_group(n: usize, first: &str) -> String {
    if n == 1 {
        first.to_owned()
    } else {
        format!("{n} alerts within the minute, the first: {first}")
    }
}

/// A node of the entity graph.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Node {
    pub column: u8,
    pub kind: &'static str,
    pub value: String,
}

/// The entity graph: alert groups (by title) → the entities they name (resources, identities,
/// keys, IP addresses, domains) → the accounts and owners those belong to.
pub struct Graph {
    pub nodes: Vec<(Node, String)>,
    pub edges: BTreeSet<(usize, usize, &'static str)>,
}

/// Alert nodes the graph draws before it groups alerts by kind instead of title.
const MAX_ALERT_NODES: usize = 30;
/// Entity nodes the graph draws before the rest of each kind become one node.
const MAX_ENTITY_NODES: usize = 60;

/// The graph of `alerts`. Alerts of one title are one node with a count (of one kind, when there
/// are more than [`MAX_ALERT_NODES`] titles).
pub fn graph(alerts: &[Alert]) -> Graph {
    let mut index: BTreeMap<Node, usize> = BTreeMap::new();
    let mut nodes: Vec<(Node, String)> = Vec::new();
    let mut edges = BTreeSet::new();
    // Alerts are one node per title; with more titles than fit, one node per kind.
    let mut titles: BTreeMap<&str, usize> = BTreeMap::new();
    for a in alerts {
        *titles.entry(a.title.as_str()).or_default() += 1;
    }
    let by_kind = titles.len() > MAX_ALERT_NODES;
    let group_of = |a: &Alert| -> String {
        if by_kind {
            a.kind.clone()
        } else {
            a.title.clone()
        }
    };
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for a in alerts {
        *counts.entry(group_of(a)).or_default() += 1;
    }
    let mut entities = 0usize;
    let mut node = |n: Node, label: String| -> usize {
        if let Some(i) = index.get(&n) {
            return *i;
        }
        // Past the graph's room for entities, the rest of each kind is one node.
        let (n, label) = if n.column == 1 && entities >= MAX_ENTITY_NODES {
            let more = Node {
                column: 1,
                kind: n.kind,
                value: format!("more {}", n.kind),
            };
            if let Some(i) = index.get(&more) {
                return *i;
            }
            (more, format!("more of kind {} (see the alerts)", n.kind))
        } else {
            if n.column == 1 {
                entities += 1;
            }
            (n, label)
        };
        nodes.push((n.clone(), label));
        index.insert(n, nodes.len() - 1);
        nodes.len() - 1
    };
    for a in alerts {
        let group = group_of(a);
        let count = counts[&group];
        let alert = node(
            Node {
                column: 0,
                kind: "alert",
                value: group.clone(),
            },
            if count > 1 {
                format!("{group} ×{count}")
            } else {
                group.clone()
            },
        );
        let mut named = Vec::new();
        if let Some(id) = &a.resource.id {
            let kind = a.resource.kind.clone().unwrap_or_else(|| "resource".into());
            named.push((
                Node {
                    column: 1,
                    kind: "resource",
                    value: id.clone(),
                },
                format!("{kind} {id}"),
                "names",
            ));
        }
        let mut actor_node = None;
        if let Some(actor) = &a.actor {
            if let Some(id) = actor.id.as_ref().or(actor.name.as_ref()) {
                let n = Node {
                    column: 1,
                    kind: "identity",
                    value: id.clone(),
                };
                actor_node = Some(n.clone());
                named.push((
                    n,
                    format!("{} {id}", actor.kind.as_deref().unwrap_or("identity")),
                    "by",
                ));
            }
            if let Some(key) = &actor.key {
                named.push((
                    Node {
                        column: 1,
                        kind: "key",
                        value: key.clone(),
                    },
                    format!("key {key}"),
                    "uses",
                ));
            }
        }
        if let Some(ip) = &a.network.remote_ip {
            named.push((
                Node {
                    column: 1,
                    kind: "ip",
                    value: ip.clone(),
                },
                format!("IP {ip}"),
                "from",
            ));
        }
        if let Some(domain) = &a.network.domain {
            named.push((
                Node {
                    column: 1,
                    kind: "domain",
                    value: domain.clone(),
                },
                format!("domain {domain}"),
                "contacts",
            ));
        }
        let mut entity_ids = Vec::new();
        for (n, label, verb) in named {
            let kind = n.kind;
            let value = n.value.clone();
            let i = node(n, label);
            edges.insert((alert, i, verb));
            entity_ids.push((i, kind, value));
        }
        // Keys belong to their identity; resources and identities to their account.
        if let Some(actor) = &a.actor
            && let (Some(key), Some(owner)) = (&actor.key, &actor_node)
        {
            let k = node(
                Node {
                    column: 1,
                    kind: "key",
                    value: key.clone(),
                },
                format!("key {key}"),
            );
            let holder = node(
                Node {
                    column: 2,
                    kind: "owner",
                    value: owner.value.clone(),
                },
                format!("owner {}", owner.value),
            );
            edges.insert((k, holder, "belongs to"));
        }
        if let Some(account) = &a.resource.account {
            let acc = node(
                Node {
                    column: 2,
                    kind: "account",
                    value: account.clone(),
                },
                format!("account {account}"),
            );
            for (i, kind, _) in &entity_ids {
                if *kind == "resource" || *kind == "identity" {
                    edges.insert((*i, acc, "in"));
                }
            }
        }
    }
    Graph { nodes, edges }
}

/// The graph as an SVG; entities in `shared` (value → other open incidents) are drawn with a
/// double outline and a "shared" tag.
pub fn graph_svg(graph: &Graph, shared: &BTreeMap<String, Vec<String>>) -> Markup {
    const ROW: f64 = 34.0;
    const BOX_W: f64 = 280.0;
    let columns = [20.0, 360.0, 700.0];
    let mut rows = [0usize; 3];
    let mut place = Vec::with_capacity(graph.nodes.len());
    for (n, _) in &graph.nodes {
        let c = n.column as usize;
        place.push((columns[c], 30.0 + ROW * rows[c] as f64));
        rows[c] += 1;
    }
    let height = 40.0 + ROW * rows.iter().copied().max().unwrap_or(1) as f64;
    let cut = |s: &str| -> String {
        if s.chars().count() > 38 {
            let mut t: String = s.chars().take(37).collect();
            t.push('…');
            t
        } else {
            s.to_owned()
        }
    };
    html! {
        svg #graph-svg role="img" aria-labelledby="graph-title" viewBox={ "0 0 1000 " (height) } {
            title #graph-title { "Entity graph: " (graph.nodes.len()) " nodes, " (graph.edges.len()) " links" }
            text.colname x=(columns[0]) y="16" { "Alerts" }
            text.colname x=(columns[1]) y="16" { "Entities" }
            text.colname x=(columns[2]) y="16" { "Accounts & owners" }
            g.edges {
                @for (from, to, verb) in &graph.edges {
                    @let (x1, y1) = place[*from];
                    @let (x2, y2) = place[*to];
                    line x1=(x1 + BOX_W) y1=(y1 + 11.0) x2=(x2) y2=(y2 + 11.0) {
                        title { (graph.nodes[*from].1) " " (verb) " " (graph.nodes[*to].1) }
                    }
                }
            }
            g.nodes {
                @for (i, (n, label)) in graph.nodes.iter().enumerate() {
                    @let (x, y) = place[i];
                    @let others = shared.get(&n.value).filter(|_| n.column == 1);
                    @let label = if label.is_empty() { n.value.clone() } else { label.clone() };
                    g class={ "node k-" (n.kind) @if others.is_some() { " shared" } } {
                        rect x=(x) y=(y) width=(BOX_W) height="22" rx="4" {}
                        text x=(x + 6.0) y=(y + 15.0) {
                            (cut(&label)) @if others.is_some() { " ★ shared" }
                        }
                        title {
                            (label)
                            @if let Some(o) = others { " — also in open incident" @if o.len() > 1 { "s" } " " (o.join(", ")) }
                        }
                    }
                }
            }
        }
    }
}

/// The whole incident page.
pub struct IncidentView<'a> {
    pub report: &'a Report,
    pub items: &'a [Item],
    pub graph: &'a Graph,
    pub shared: &'a BTreeMap<String, Vec<String>>,
    pub shared_incidents: &'a [Incident],
    pub powers: &'a Powers,
    pub playbook_ids: &'a [String],
    pub note: Option<&'a str>,
}

pub fn page(visitor: &Visitor, view: &IncidentView<'_>) -> Markup {
    let incident = &view.report.incident;
    let runs: Vec<&Run> = view.report.runs.iter().map(|(r, _)| r).collect();
    layout(
        &incident.title,
        Some(visitor),
        Some(&format!("incident:{}", incident.id)),
        html! {
            nav.crumbs aria-label="Breadcrumb" { a href="/incidents" { "Incidents" } " / " span.mono { (short(&incident.id)) } }
            h1 { (incident.title) }
            @if let Some(n) = view.note { p.note role="status" { (n) } }
            div data-live-part="summary" #summary {
                dl.facts {
                    dt { "Severity" } dd { (severity(incident.severity)) }
                    dt { "Status" } dd { span class={ "st st-" (incident.status) } { (incident.status) } }
                    dt { "Entity" } dd.mono { (incident.entity.as_deref().unwrap_or("—")) }
                    dt { "Sources" } dd { (incident.sources.join(", ")) }
                    dt { "Alerts" } dd { (incident.alert_count) " distinct, " (incident.event_count) " received" }
                    @if let Some(s) = incident.at_source_summary() { dt { "At the source" } dd { (s) } }
                    dt { "Opened" } dd { (time(incident.created_at)) }
                    dt { "Updated" } dd { (time(incident.updated_at)) }
                    @if let Some(a) = incident.values.get("assignee").and_then(|v| v.as_str()) { dt { "Assignee" } dd { (a) } }
                }
            }
            section aria-labelledby="actions-h" {
                h2 #actions-h { "Decisions and actions" }
                div data-live-part="approvals" #approvals { (approvals(visitor, &runs, view.powers)) }
                div.actions {
                    @if view.powers.respond {
                        @if incident.status == IncidentStatus::Open {
                            form method="post" action={ "/incidents/" (incident.id) "/resolve" } {
                                (csrf(visitor)) button type="submit" { "Resolve incident" }
                            }
                        } @else {
                            form method="post" action={ "/incidents/" (incident.id) "/reopen" } {
                                (csrf(visitor)) button type="submit" { "Reopen incident" }
                            }
                        }
                        form.trigger method="post" action="/playbooks/trigger" {
                            (csrf(visitor))
                            input type="hidden" name="incident" value=(incident.id);
                            label for="trigger-playbook" { "Run playbook" }
                            select #trigger-playbook name="playbook" {
                                @for id in view.playbook_ids { option value=(id) { (id) } }
                            }
                            button type="submit" { "Start" }
                        }
                    } @else {
                        p.hint { "Resolving, reopening, starting playbooks and undo need the role responder." }
                    }
                }
            }
            section aria-labelledby="timeline-h" {
                h2 #timeline-h { "Timeline" }
                div.zoom role="group" aria-label="Timeline zoom" {
                    button type="button" data-zoom="in" aria-label="Zoom in on the timeline" { "+" }
                    button type="button" data-zoom="out" aria-label="Zoom out of the timeline" { "−" }
                    button type="button" data-zoom="reset" aria-label="Show the whole timeline" { "Whole" }
                }
                div.legend aria-hidden="true" {
                    span.l-alerts { "▮ alerts per interval" } span.l-runs { "▬ runs and steps" } span.l-approvals { "● approvals and decisions" }
                    span.l-evidence { "● evidence" } span.l-incident { "● incident changes, tickets" }
                }
                div.timeline data-live-part="timeline" #timeline { (timeline_svg(view.items)) }
                details open[view.items.len() <= 300] {
                    summary { "Timeline as a table (" (view.items.len()) " events)" }
                    div data-live-part="timeline-table" #timeline-rows { (timeline_table(view.items)) }
                }
            }
            section aria-labelledby="graph-h" {
                h2 #graph-h { "Entity graph" }
                div.graph { (graph_svg(view.graph, view.shared)) }
                @if !view.shared_incidents.is_empty() {
                    p { "Other open incidents sharing an entity (marked ★ shared):" }
                    ul { @for i in view.shared_incidents { li { (severity(i.severity)) " " a href={ "/incidents/" (i.id) } { (i.title) } } } }
                }
            }
            section aria-labelledby="evidence-h" {
                h2 #evidence-h { "Evidence" }
                div data-live-part="evidence" #evidence {
                    @if incident.evidence.is_empty() { p { "No evidence collected." } }
                    @else {
                        table.list aria-label="Evidence" {
                            thead { tr { th scope="col" { "Kind" } th scope="col" { "Where it is stored" } th scope="col" { "SHA-256" } th scope="col" { "Collected" } th scope="col" { "By" } } }
                            tbody {
                                @for e in &incident.evidence {
                                    tr {
                                        td { (e["kind"].as_str().unwrap_or("")) }
                                        td.mono { (e["location"].as_str().unwrap_or("")) }
                                        td.mono.hash { (e["sha256"].as_str().unwrap_or("not known")) }
                                        td { (e["collected_at"].as_str().unwrap_or("")) }
                                        td { (e["action"].as_str().unwrap_or("")) @if let Some(r) = e["run"].as_str() { " in " a href={ "/runs/" (r) } { (short(r)) } } }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            section aria-labelledby="runs-h" {
                h2 #runs-h { "Runs" }
                div data-live-part="runs" #runs {
                    table.list aria-label="Runs of this incident" {
                        thead { tr { th scope="col" { "Playbook" } th scope="col" { "Status" } th scope="col" { "Steps" } th scope="col" { "Started" } } }
                        tbody {
                            @for r in &runs {
                                tr {
                                    td { a href={ "/runs/" (r.id) } { (r.playbook) } }
                                    td { (run_status(r.status)) }
                                    td { (r.steps.values().filter(|s| s.status == StepStatus::Succeeded).count()) " of " (r.order.len()) " done" }
                                    td { (time(r.created_at)) }
                                }
                            }
                        }
                    }
                }
            }
            section aria-labelledby="links-h" {
                h2 #links-h { "Report, tickets and chat" }
                ul {
                    li { a href={ "/incidents/" (incident.id) "/report?format=html" } { "Incident report (HTML)" } }
                    li { a href={ "/incidents/" (incident.id) "/report?format=markdown" } { "Incident report (Markdown)" } " — the same as " code { "cordon incidents report" } }
                    @for (system, reference) in &view.report.tickets {
                        li { (system) " ticket: "
                            @match reference["url"].as_str().or(reference["link"].as_str()) {
                                Some(url) if url.starts_with("https://") || url.starts_with("http://") => { a href=(url) rel="noreferrer" { (reference["key"].as_str().unwrap_or(url)) } },
                                _ => { (super::views::compact(reference, 200)) },
                            }
                        }
                    }
                    @for (platform, thread) in chat_threads(view.report) { li { (platform) " thread: " (thread) } }
                }
            }
        },
    )
}

/// The chat threads the incident's cards were posted in, as the audit recorded them.
fn chat_threads(report: &Report) -> Vec<(String, String)> {
    let mut out = BTreeSet::new();
    for (_, entries) in &report.runs {
        for e in entries.iter().filter(|e| e.kind.starts_with("chat.")) {
            if let (Some(p), Some(t)) = (e.detail["platform"].as_str(), e.detail["thread"].as_str())
            {
                out.insert((p.to_owned(), t.to_owned()));
            }
        }
    }
    out.into_iter().collect()
}

/// The open approvals of `runs`, with Approve and Deny for those the viewer may decide.
pub fn approvals(visitor: &Visitor, runs: &[&Run], powers: &Powers) -> Markup {
    let open: Vec<(&Run, &String, &crate::model::run::ApprovalState)> = runs
        .iter()
        .flat_map(|r| {
            r.steps.iter().filter_map(move |(id, s)| {
                let a = s.approval.as_ref()?;
                (a.outcome.is_none() && s.status == StepStatus::Waiting).then_some((*r, id, a))
            })
        })
        .collect();
    let decided: Vec<(&Run, &String, &crate::model::run::ApprovalState)> = runs
        .iter()
        .flat_map(|r| {
            r.steps.iter().filter_map(move |(id, s)| {
                let a = s.approval.as_ref()?;
                a.outcome.is_some().then_some((*r, id, a))
            })
        })
        .collect();
    html! {
        @if open.is_empty() { p { "No approval is waiting." } }
        @for (run, step, a) in &open {
            article.approval aria-label={ "Approval: " (a.prompt) } {
                h3 { (a.prompt) }
                p { "Playbook " a href={ "/runs/" (run.id) } { (run.playbook) } ", step " code { (step) } " · group " code { (a.group) }
                    " · " (a.decisions.iter().filter(|d| d.approve).count()) " of " (a.quorum) " approvals · until " (time(a.timeout_at)) }
                @if !a.decisions.is_empty() { ul.decisions { @for d in &a.decisions { li { (super::views::decision_text(d)) } } } }
                @if !a.plan.is_empty() {
                    details { summary { "What approving will do" } (super::views::json_block(&serde_json::Value::Array(a.plan.clone()), 4000)) }
                }
                @if powers.approver_role && (powers.decide)(&a.group) {
                    div.decide {
                        form method="post" action={ "/runs/" (run.id) "/approvals/" (step) } data-confirm={ "Approve: " (a.prompt) "?" } {
                            (csrf(visitor)) input type="hidden" name="decision" value="approve";
                            button.approve type="submit" { "Approve" }
                        }
                        form method="post" action={ "/runs/" (run.id) "/approvals/" (step) } {
                            (csrf(visitor)) input type="hidden" name="decision" value="deny";
                            button.deny type="submit" { "Deny" }
                        }
                    }
                } @else {
                    p.hint { "Only the approver group " code { (a.group) } " may decide this; you are not in it." }
                }
            }
        }
        @if !decided.is_empty() {
            h3 { "Decided" }
            ul.decided {
                @for (run, step, a) in &decided {
                    li {
                        (a.prompt) " (" a href={ "/runs/" (run.id) } { (run.playbook) } " · " code { (step) } "): "
                        strong { @if a.outcome == Some(true) { "approved" } @else { "denied" } }
                        " — " @for (k, d) in a.decisions.iter().enumerate() { @if k > 0 { ", " } (super::views::decision_text(d)) }
                    }
                }
            }
        }
    }
}
