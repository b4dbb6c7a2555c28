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
//! Calls about tickets Cordon does not know are answered 200 with `ignored`, since ticket systems
//! retry failed calls and these would never succeed.

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

/// Checks a webhook's credential: the shared token (`?token=`, `X-Cordon-Token`, or
/// `Authorization: Bearer`), or the HMAC-SHA256 of the raw body in `signature_header`
/// (`sha256=`-prefixed or not, hex or base64).
pub fn authenticate(
    auth: &WebhookAuth,
    headers: &HeaderMap,
    query: Option<&str>,
    body: &[u8],
    signature_header: &str,
) -> Result<(), ApiError> {
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
                Ok(())
            } else {
                Err(ApiError::unauthorized(
                    "unauthorized",
                    "the webhook token is not valid",
                ))
            }
        }
        WebhookAuth::Hmac(secret) => {
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
            })
        }
    }
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

/// Applies a `/cordon approve|deny [RUN [STEP]]` comment. `None` when the text is no command or
/// was handled before.
pub(crate) async fn command(
    app: &Inbound,
    system: &dyn TicketSystem,
    incident: &str,
    text: &str,
    author: &str,
    seen: &str,
) -> Result<Option<String>, ApiError> {
    let Some(line) = command_line(text) else {
        return Ok(None);
    };
    if app.store.meta_get(NS_INBOUND, seen).await?.is_some() {
        return Ok(None);
    }
    let words = command_words(line);
    let result = match words.first().copied() {
        Some("approve") => decide(app, system, incident, &words[1..], author, true).await,
        Some("deny") => decide(app, system, incident, &words[1..], author, false).await,
        _ => Err(
            "the commands are `/cordon approve [RUN [STEP]]` and `/cordon deny [RUN [STEP]]`"
                .to_owned(),
        ),
    };
    app.store
        .meta_put(NS_INBOUND, seen, Value::Bool(true))
        .await?;
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

async fn decide(
    app: &Inbound,
    system: &dyn TicketSystem,
    incident: &str,
    args: &[&str],
    author: &str,
    approve: bool,
) -> Result<String, String> {
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
    let (run, step) = match open.as_slice() {
        [one] => one.clone(),
        [] => return Err("no open approval matches".to_owned()),
        many => {
            let list: Vec<String> = many.iter().map(|(r, s)| format!("{r} {s}")).collect();
            return Err(format!(
                "several approvals are open; name one: {}",
                list.join(", ")
            ));
        }
    };
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
    fn an_hmac_covers_the_raw_body_in_hex_or_base64() {
        let auth = WebhookAuth::Hmac(Secret::new("k"));
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
