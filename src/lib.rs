//! Cordon: a chat-ops bot and SOAR playbook runner for cloud detection and response.
//!
//! # Layout
//!
//! Follow one alert through the code:
//!
//! ```text
//! POST /v1/alerts/{source}
//!   app::router ─▶ intake::router::receive        the intake handler (its own router and state)
//!                    ├─ intake::verify            bearer / HMAC on the raw bytes
//!                    ├─ intake::sns               SNS envelope, signature, subscription confirmation
//!                    └─ intake::formats::<source> the source's payload ─▶ alert::Alert(s)
//!                 ─▶ store::Store::ingest         dedup, incident grouping, durable write
//!                    ├─ model::grouping           the one rule: repeat, join an incident, or open one
//!                    ├─ store::sled               group commit: one store thread writes and fsyncs
//!                    └─ store::postgres           one transaction, per-entity advisory locks
//!                 ◀─ 202 {alert_id, incident_id}
//! engine::service  matcher: stored alert × playbook `on` ─▶ a run per concurrency key
//!                  workers: engine::exec::Executor::advance, step by step, persisted after each
//!                    ├─ script::Scripts           conditions, scripts, ${{ }} templates (Rhai)
//!                    ├─ actions                   core.log/http/sleep/set, guardrails, dry runs
//!                    ├─ engine::approval          who may decide; quorum; timeouts
//!                    └─ audit                     every state change and decision, hash-chained
//! GET /v1/alerts, /v1/incidents, /v1/runs; POST /v1/runs/{id}/approvals/{step} ─▶ api
//! GET /metrics, /healthz, /readyz ─▶ app, telemetry
//! ```
//!
//! - [`config`]: the YAML config, `${VAR}` secrets, and errors located at `file:line:column`.
//! - [`alert`]: the normalized [`alert::Alert`] and the [`alert::Incident`] alerts group into.
//! - [`model`]: the other domain types, importing nothing above them: a run
//!   ([`model::run::Run`]), an outbox entry, audit entries and their hash chain, the event kinds
//!   with their typed details ([`model::event::EventKind`]), and the incident-grouping rule both
//!   store backends call ([`model::grouping`]).
//! - [`intake`]: everything between the HTTP request and a list of alerts.
//! - [`store`]: the [`store::Store`] trait and its backends.
//! - [`playbook`]: the format, loading, validation with every error at `file:line:column`, schema.
//! - [`script`]: the one hardened Rhai engine; [`actions`]: what steps call.
//! - [`engine`]: runs as persisted state machines, the executor, approvals, `cordon test`.
//! - [`audit`]: the hash-chained audit log of every decision and run step (the entries in
//!   `model::audit`, each backend's half in `store/`), and its verification.
//! - [`integrations`]: integrations as files (manifest, Rhai, auth by the host), and IOC feeds.
//! - [`trust`]: who is acting: people, personal tokens, OIDC tokens, the bootstrap token; every
//!   credential and platform identity becomes a person here or is refused (docs/security.md).
//! - [`outbox`]: the durable outbox and its delivery worker (what Cordon owes other systems).
//! - [`failure`]: what a failed call to another system means (retry, wait, credentials, give up).
//! - [`chat`]: cards, approvals and `/cordon` commands; one folder per platform (Slack, Microsoft
//!   Teams, Discord) behind [`chat::ChatPlatform`], listed once in `chat/mod.rs`.
//! - [`app`]: wiring (config → store → sources → router) and the server's life until shutdown.
//! - [`api`]: the admin API; [`http`]: the JSON error answer every handler shares.
//! - [`console`]: the web console at `/` (pages rendered on the server, sessions, OIDC sign-in,
//!   live updates over server-sent events).
//! - [`telemetry`]: logs (human or JSON) and Prometheus metrics.
//! - [`email`]: mail over SMTP through the outbox (`email.send` steps, incident notifications,
//!   the incident report attached).
//! - [`retention`]: how long each kind of record is kept, and the background pass that prunes
//!   (the per-record rules both backends apply are in `store::retention`).
//! - [`yara`]: YARA rules compiled at load, and the scan behind the `yara.scan` action.
//! - [`backtest`]: replays stored alerts through playbooks offline, in dry run (`cordon backtest`).
//! - [`tickets`]: a ticket per incident, kept in step both ways; one folder per system (Jira Cloud,
//!   ServiceNow) behind [`tickets::TicketSystem`]; the incident report.
//!
//! The `cordon` binary is `src/main.rs` and `src/cli/`: clap types, commands, reader, printing.

pub mod actions;
pub mod alert;
pub mod api;
pub mod app;
pub mod audit;
pub mod backtest;
pub mod chat;
pub mod config;
pub mod console;
pub mod email;
pub mod engine;
pub mod failure;
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
pub mod intake;
pub mod integrations;
pub mod model;
pub mod outbox;
pub mod playbook;
pub mod retention;
pub mod script;
pub mod search;
pub mod store;
pub mod streams;
pub mod telemetry;
pub mod tickets;
pub mod trust;
pub mod yara;
