//! Inbound ticket webhooks: `POST /v1/tickets/jira/webhook` (Jira's `jira:issue_updated` and
//! `comment_created`) and `POST /v1/tickets/servicenow/webhook` (a business rule's REST call, see
//! integrations/servicenow/README.md).
//!
//! Every request is authenticated on its raw bytes before anything is parsed; a bad credential
//! gets 401 and changes nothing. What a call can do:
//! - the ticket reached a done state (Jira: status category Done or the profile's `done_status`;
//!   ServiceNow: Resolved, Closed or the profile's `resolved_state`) → the incident is resolved;
//! - it left it → the incident is reopened;
//! - the assignee changed → `ticket.assigned` in the audit log;
//! - a comment (work note) starting with `/cordon approve` or `/cordon deny`, optionally followed by
//!   a run id (or its first characters) and a step, decides that approval as the comment's author
//!   (mapped through `users`); when it cannot be applied, the reason is posted back as a comment.
//!
//! # What a call is trusted with
//! - **Which ticket.** A call counts only for the ticket Cordon filed: the Jira issue id, or the
//!   ServiceNow `sys_id`, stored when the ticket was created. A label (`cordon-<incident>`) or a
//!   `correlation_id` anyone can type into another ticket names nothing by itself; calls about
//!   other tickets are answered 200 with `ignored`, since ticket systems retry failed calls and
//!   these would never succeed.
//! - **Who acted.** With `hmac_secret` the platform signs the body, so the user it names (Jira's
//!   `user` / `comment.author`, ServiceNow's `updated_by` as the instance's business rule reads it)
//!   is the platform's word: decisions are made as that user. With a shared `token` nothing in the
//!   body is proven (the token also travels in URLs and proxy logs), so `/cordon approve|deny` is
//!   refused, audited as `approval.refused` and answered on the ticket; status changes still
//!   apply, bound to the filed ticket, and are recorded as done by the ticket system (`jira`,
//!   `servicenow`), never by the user the body names.
//! - **When.** A signed call carries a signed time (Jira's `timestamp`, the business rule's
//!   `sent_at`, epoch milliseconds); one further than `max_age` from now is refused with 401, so
//!   an old copy cannot be replayed. Within the window, every change is applied once: a status or
//!   assignee change by its id (Jira's `changelog.id`, ServiceNow's `sys_id` + `sys_mod_count`),
//!   a command by its comment (Jira's comment id, the record's `sys_mod_count`).

use std::sync::Arc;

use axum::Json;
use axum::http::HeaderMap;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::config::WebhookAuth;
use super::{NS_INBOUND, NS_PROFILE, TicketOp, TicketSystem, TicketsConfig};
use crate::alert::IncidentStatus;
use crate::engine::Engine;
use crate::http::ApiError;
use crate::outbox::Outbox;
use crate::store::RunQuery;
use crate::store::Store;

/// What the webhooks share.
pub struct Inbound {
    pub config: Arc<TicketsConfig>,
    pub store: Arc<dyn Store>,
    pub engine: Arc<Engine>,
    pub outbox: Arc<Outbox>,
}

fn equal_secret(a: &[u8], b: &[u8]) -> bool {
    Sha256::digest(a).ct_eq(&Sha256::digest(b)).into()
}

/// What a webhook call's credential proves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proof {
    /// The platform signed the raw body: what the body says, including who acted, is its word.
    Signed,
    /// The caller knows the shared token; nothing in the body is proven.
    Token,
}

/// Checks a webhook's credential: the shared token (`?token=`, `X-Cordon-Token`, or
/// `Authorization: Bearer`), or the HMAC-SHA256 of the raw body in `signature_header`
/// (`sha256=`-prefixed or not, hex or base64).
pub fn authenticate(
    auth: &WebhookAuth,
    headers: &HeaderMap,
    query: Option<&str>,
    body: &[u8],
    signature_header: &str,
) -> Result<Proof, ApiError> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim().to_owned())
    };
    match auth {
        WebhookAuth::Token(token) => {
            let from_query = query.and_then(|q| {
                url::form_urlencoded::parse(q.as_bytes())
                    .find(|(k, _)| k == "token")
                    .map(|(_, v)| v.into_owned())
            });
            let from_bearer = header("authorization").and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
                    .map(|t| t.trim().to_owned())
            });
            let presented = from_query
                .or_else(|| header("x-cordon-token"))
                .or(from_bearer)
                .ok_or_else(|| {
                    ApiError::unauthorized(
                        "unauthorized",
                        "missing the webhook token (`?token=`, X-Cordon-Token or Authorization: Bearer)",
                    )
                })?;
            if equal_secret(presented.as_bytes(), token.expose().as_bytes()) {
                Ok(Proof::Token)
            } else {
                Err(ApiError::unauthorized(
                    "unauthorized",
                    "the webhook token is not valid",
                ))
            }
        }
        WebhookAuth::Hmac { secret, .. } => {
            let signature = header(signature_header).ok_or_else(|| {
                ApiError::unauthorized(
                    "unauthorized",
                    format!("missing the {signature_header} header"),
                )
            })?;
            let value = signature.strip_prefix("sha256=").unwrap_or(&signature);
            let presented = hex::decode(value)
                .ok()
                .or_else(|| {
                    use base64::Engine;
                    base64::engine::general_purpose::STANDARD.decode(value).ok()
                })
                .ok_or_else(|| {
                    ApiError::unauthorized(
                        "unauthorized",
                        format!("{signature_header} is not a hex or base64 HMAC-SHA256"),
                    )
                })?;
            let mut mac = Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes())
                .map_err(|_| ApiError::unauthorized("unauthorized", "the HMAC key is unusable"))?;
            mac.update(body);
            mac.verify_slice(&presented).map_err(|_| {
                ApiError::unauthorized("unauthorized", "the signature does not match the body")
            })?;
            Ok(Proof::Signed)
        }
    }
}

/// Refuses a signed call whose signed time (`field` of the body, epoch milliseconds as a number or
/// a string) is missing or further than the webhook's `max_age` from `now`: a copy of an old call
/// taken from a log or a proxy is worth nothing. Token-authenticated calls carry no signed time.
pub(crate) fn check_fresh(
    auth: &WebhookAuth,
    payload: &Value,
    field: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(), ApiError> {
    let WebhookAuth::Hmac { max_age, .. } = auth else {
        return Ok(());
    };
    let millis = match &payload[field] {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse::<i64>().ok(),
        _ => None,
    };
    let Some(millis) = millis else {
        return Err(ApiError::unauthorized(
            "unauthorized",
            format!("the signed body has no `{field}` (epoch milliseconds), so its age is unknown"),
        ));
    };
    let age_ms = (now.timestamp_millis() as i128 - millis as i128).unsigned_abs();
    if age_ms > max_age.as_millis() {
        return Err(ApiError::unauthorized(
            "stale",
            format!(
                "the signed `{field}` is {}s away from now; calls further than {}s are refused as replays",
                age_ms / 1000,
                max_age.as_secs()
            ),
        ));
    }
    Ok(())
}

/// Whether the change `key` (in [`NS_INBOUND`]) has been applied before. [`applied`] records it.
pub(crate) async fn seen_before(app: &Inbound, key: &str) -> Result<bool, ApiError> {
    Ok(app.store.meta_get(NS_INBOUND, key).await?.is_some())
}

/// Records that the change `key` was applied, so a repeat of the call applies it no more.
pub(crate) async fn applied(app: &Inbound, key: &str) -> Result<(), ApiError> {
    app.store
        .meta_put(NS_INBOUND, key, Value::Bool(true))
        .await
        .map_err(ApiError::from)
}

/// A key naming a call by its body, for calls that carry no id of their change.
pub(crate) fn body_key(system: &str, body: &[u8]) -> String {
    format!("{system}:body:{}", hex::encode(Sha256::digest(body)))
}

/// The signature a sender puts in the signature header: `sha256=<hex HMAC-SHA256 of body>`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

pub(crate) fn not_configured(system: &str) -> ApiError {
    ApiError::not_found(
        "not_found",
        format!("the {system} webhook is not configured (tickets.{system}.webhook)"),
    )
}

/// A webhook call's body: a JSON object.
pub(crate) fn read_call(body: &[u8]) -> Result<Value, ApiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request("bad_payload", format!("the body is not JSON: {e}")))?;
    if !value.is_object() {
        return Err(ApiError::bad_request(
            "bad_payload",
            "the body must be a JSON object",
        ));
    }
    Ok(value)
}

pub(crate) fn ignored(why: impl Into<String>) -> Json<Value> {
    Json(json!({ "ignored": why.into() }))
}

/// The ticket profile an incident was filed under.
pub(crate) async fn profile_of(
    app: &Inbound,
    incident: &str,
) -> Result<Option<super::TicketProfile>, ApiError> {
    let name = app.store.meta_get(NS_PROFILE, incident).await?;
    Ok(name
        .as_ref()
        .and_then(Value::as_str)
        .and_then(|n| app.config.profile(n))
        .cloned())
}

/// Moves the incident to `wanted` unless it is there already.
pub(crate) async fn set_status(
    app: &Inbound,
    incident: &str,
    wanted: IncidentStatus,
    actor: &str,
    via: &str,
) -> Result<Option<String>, ApiError> {
    let current = app.store.incident(incident).await?.map(|i| i.status);
    if current.is_none_or(|c| c == wanted) {
        return Ok(None);
    }
    app.engine
        .set_incident_status(incident, wanted, actor, None, via)
        .await
        .map_err(|e| {
            tracing::error!(error = %e, incident, "ticket webhook: cannot change the incident");
            ApiError::unavailable()
        })?;
    Ok(Some(match wanted {
        IncidentStatus::Resolved => "incident resolved".to_owned(),
        IncidentStatus::Open => "incident reopened".to_owned(),
    }))
}

#[allow(clippy::too_many_arguments)]
pub(crate) async fn record_assignee(
    app: &Inbound,
    incident: &str,
    system: &str,
    ticket: &str,
    actor: &str,
    from: Option<&str>,
    to: &str,
    to_account: Option<&str>,
) -> Result<(), ApiError> {
    let entry = crate::audit::NewEntry::new(crate::model::event::EventKind::TicketAssigned)
        .actor(actor.to_owned())
        .detail(
            json!({ "incident": incident, "system": system, "ticket": ticket,
            "from": from, "to": to, "to_account": to_account }),
        );
    app.store
        .append_audit(vec![entry])
        .await
        .map_err(ApiError::from)
}

/// Applies a `/cordon approve|deny [RUN [STEP]]` comment by `author`; `proven` says whether the
/// platform signed the call (else the decision is refused and audited). `None` when the text is
/// no command or was handled before.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn command(
    app: &Inbound,
    system: &dyn TicketSystem,
    incident: &str,
    text: &str,
    author: &str,
    proven: bool,
    seen: &str,
) -> Result<Option<String>, ApiError> {
    let Some(line) = command_line(text) else {
        return Ok(None);
    };
    if seen_before(app, seen).await? {
        return Ok(None);
    }
    let words = command_words(line);
    let approve = match words.first().copied() {
        Some("approve") => Some(true),
        Some("deny") => Some(false),
        _ => None,
    };
    let result = match approve {
        None => Err(
            "the commands are `/cordon approve [RUN [STEP]]` and `/cordon deny [RUN [STEP]]`"
                .to_owned(),
        ),
        Some(approve) if !proven => {
            Err(refuse_unproven(app, system, incident, &words[1..], author, approve).await?)
        }
        Some(approve) => decide(app, system, incident, &words[1..], author, approve).await,
    };
    applied(app, seen).await?;
    Ok(Some(match result {
        Ok(outcome) => outcome,
        Err(reason) => {
            // Said back on the ticket, where the person is looking.
            let text = format!(
                "`/cordon{line}` by {author} was not applied: {reason}",
                line = line.trim_end()
            );
            let comment = json!({ "incident": incident, "text": text });
            let entry = TicketOp::Comment.entry(system, incident, comment);
            if let Err(e) = app.outbox.push(vec![entry]).await {
                tracing::warn!(error = %e, "cannot queue the reply to a ticket command");
            }
            format!("command refused: {reason}")
        }
    }))
}

/// Audits a decision that came through a token-authenticated webhook as refused, and says why:
/// the body that names its author is not signed. The entry's actor is the ticket system, since
/// nothing shows who sent it; the claimed author is in the reason.
async fn refuse_unproven(
    app: &Inbound,
    system: &dyn TicketSystem,
    incident: &str,
    args: &[&str],
    author: &str,
    approve: bool,
) -> Result<String, ApiError> {
    let name = system.name();
    let reason = format!(
        "the {name} webhook is authenticated by a shared token, which does not sign the call, so nothing proves {author} wrote this; decisions from {name} need its signed webhook (`tickets.{name}.webhook.hmac_secret`)"
    );
    let mut entry = crate::audit::NewEntry::new(crate::model::event::EventKind::ApprovalRefused)
        .actor(name)
        .detail(json!({ "approve": approve, "via": name, "reason": reason, "incident": incident }));
    if let Ok((run, step)) = open_approval(app, incident, args).await {
        entry = entry.run(run).step(step);
    }
    app.store.append_audit(vec![entry]).await?;
    tracing::warn!(
        system = name,
        incident,
        "ticket webhook: a decision by an unproven author was refused"
    );
    Ok(reason)
}

/// What follows `/cordon` on the first non-empty line of a ticket comment, if it is a command.
fn command_line(text: &str) -> Option<&str> {
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .and_then(|l| l.strip_prefix("/cordon"))
}

/// A command line's words: the verb, then the run and step if given.
fn command_words(line: &str) -> Vec<&str> {
    line.split_whitespace().collect()
}

/// Reads a webhook call's body the way the handlers do before they look anything up: the JSON
/// object, and for Jira the issue, changelog and the command in a comment's ADF body, for
/// ServiceNow the fields and the command in a note. The fuzz targets' way in
/// ([`crate::fuzzing`]); `jira` picks the system.
pub(crate) fn read_offline(jira: bool, body: &[u8]) -> Result<Vec<String>, ApiError> {
    let payload = read_call(body)?;
    let text = if jira {
        let _ = (
            payload["webhookEvent"].as_str(),
            payload["issue"]["id"].as_str(),
            payload["issue"]["key"].as_str(),
        );
        for item in payload["changelog"]["items"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let _ = (item["field"] == "status", item["toString"].as_str());
        }
        super::jira::adf_text(&payload["comment"]["body"])
    } else {
        let text = |k: &str| payload[k].as_str().map(str::trim).filter(|s| !s.is_empty());
        let _ = (text("correlation_id"), text("state"), text("assigned_to"));
        text("work_notes")
            .or(text("comments"))
            .unwrap_or_default()
            .to_owned()
    };
    Ok(command_line(&text)
        .map(command_words)
        .unwrap_or_default()
        .into_iter()
        .map(str::to_owned)
        .collect())
}

/// The one open approval of `incident` that `args` (`[RUN [STEP]]`) name.
async fn open_approval(
    app: &Inbound,
    incident: &str,
    args: &[&str],
) -> Result<(String, String), String> {
    let runs = app
        .store
        .runs(&RunQuery {
            incident_id: Some(incident.to_owned()),
            limit: 1000,
            ..RunQuery::default()
        })
        .await
        .map_err(|_| "the store is unavailable; try again".to_owned())?;
    let mut open: Vec<(String, String)> = Vec::new();
    for run in &runs {
        if args.first().is_some_and(|r| !run.id.starts_with(r)) {
            continue;
        }
        for (step, state) in &run.steps {
            let waiting = state.status == crate::engine::run::StepStatus::Waiting
                && state.approval.as_ref().is_some_and(|a| a.outcome.is_none());
            if waiting && args.get(1).is_none_or(|s| s == step) {
                open.push((run.id.clone(), step.clone()));
            }
        }
    }
    match open.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err("no open approval matches".to_owned()),
        many => {
            let list: Vec<String> = many.iter().map(|(r, s)| format!("{r} {s}")).collect();
            Err(format!(
                "several approvals are open; name one: {}",
                list.join(", ")
            ))
        }
    }
}

async fn decide(
    app: &Inbound,
    system: &dyn TicketSystem,
    incident: &str,
    args: &[&str],
    author: &str,
    approve: bool,
) -> Result<String, String> {
    let (run, step) = open_approval(app, incident, args).await?;
    let actor = match app.engine.people().actor(author, &[]).await {
        Ok(Some(actor)) => actor,
        Ok(None) => {
            return Err(format!(
                "`{author}` is no person known to Cordon; it decides nothing"
            ));
        }
        Err(_) => return Err("the store is unavailable; try again".to_owned()),
    };
    match app
        .engine
        .decide(&run, &step, &actor, approve, system.name())
        .await
    {
        Ok(decided) => Ok(format!(
            "{} `{step}` of run {run} ({} of {})",
            if approve { "approved" } else { "denied" },
            decided.approvals,
            decided.quorum
        )),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    fn headers(pairs: &[(&'static str, String)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn a_token_is_taken_from_the_query_a_header_or_bearer() {
        let auth = WebhookAuth::Token(Secret::new("tok"));
        let none = HeaderMap::new();
        assert!(authenticate(&auth, &none, Some("token=tok"), b"{}", "x").is_ok());
        assert!(authenticate(&auth, &none, Some("token=nope"), b"{}", "x").is_err());
        assert!(authenticate(&auth, &none, None, b"{}", "x").is_err());
        let h = headers(&[("x-cordon-token", "tok".into())]);
        assert!(authenticate(&auth, &h, None, b"{}", "x").is_ok());
        let h = headers(&[("authorization", "Bearer tok".into())]);
        assert!(authenticate(&auth, &h, None, b"{}", "x").is_ok());
    }

    #[test]
    fn a_signed_call_must_carry_a_time_within_the_window() {
        let auth = WebhookAuth::Hmac {
            secret: Secret::new("k"),
            max_age: std::time::Duration::from_secs(600),
        };
        let now = chrono::Utc::now();
        let at = |ms: i64| json!({ "timestamp": now.timestamp_millis() + ms });
        assert!(check_fresh(&auth, &at(-599_000), "timestamp", now).is_ok());
        assert!(check_fresh(&auth, &at(599_000), "timestamp", now).is_ok());
        let old = check_fresh(&auth, &at(-601_000), "timestamp", now).unwrap_err();
        assert_eq!(old.status, axum::http::StatusCode::UNAUTHORIZED);
        assert!(old.message.contains("replay"), "{}", old.message);
        assert!(check_fresh(&auth, &at(601_000), "timestamp", now).is_err());
        // ServiceNow's business rule sends strings.
        let text = json!({ "sent_at": now.timestamp_millis().to_string() });
        assert!(check_fresh(&auth, &text, "sent_at", now).is_ok());
        let missing = check_fresh(&auth, &json!({}), "sent_at", now).unwrap_err();
        assert!(missing.message.contains("`sent_at`"), "{}", missing.message);
        // A token signs nothing, so there is no time to check.
        let token = WebhookAuth::Token(Secret::new("t"));
        assert!(check_fresh(&token, &json!({}), "timestamp", now).is_ok());
    }

    #[test]
    fn an_hmac_covers_the_raw_body_in_hex_or_base64() {
        let auth = WebhookAuth::Hmac {
            secret: Secret::new("k"),
            max_age: std::time::Duration::from_secs(60),
        };
        let sig = signature("k", b"{\"a\":1}");
        let h = headers(&[("x-hub-signature", sig.clone())]);
        assert!(authenticate(&auth, &h, None, b"{\"a\":1}", "x-hub-signature").is_ok());
        assert!(authenticate(&auth, &h, None, b"{\"a\":2}", "x-hub-signature").is_err());
        use base64::Engine;
        let raw = hex::decode(sig.trim_start_matches("sha256=")).unwrap();
        let b64 = base64::engine::general_purpose::STANDARD.encode(raw);
        let h = headers(&[("x-cordon-signature", b64)]);
        assert!(authenticate(&auth, &h, None, b"{\"a\":1}", "x-cordon-signature").is_ok());
        let missing = authenticate(&auth, &HeaderMap::new(), None, b"{}", "x-hub-signature");
        assert_eq!(
            missing.unwrap_err().status,
            axum::http::StatusCode::UNAUTHORIZED
        );
    }
}
