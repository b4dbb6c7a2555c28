//! `POST /v1/tickets/servicenow/webhook`: the business rule's call (payload in
//! integrations/servicenow/README.md; the rules every ticket webhook follows:
//! [`crate::tickets::webhook`]).

use std::sync::Arc;

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use serde_json::{Value, json};

use crate::alert::IncidentStatus;
use crate::http::ApiError;
use crate::tickets::NS_SERVICENOW;
use crate::tickets::webhook::{
    Inbound, Proof, applied, authenticate, body_key, check_fresh, command, ignored, not_configured,
    profile_of, read_call, record_assignee, seen_before, set_status,
};

/// `POST /v1/tickets/servicenow/webhook`: the business rule's call (payload in
/// integrations/servicenow/README.md).
pub(super) async fn webhook(
    State(app): State<Arc<Inbound>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let config = app.config.servicenow.as_ref();
    let Some((sn, auth)) = config.and_then(|s| s.webhook.as_ref().map(|w| (s, w))) else {
        return Err(not_configured("servicenow"));
    };
    let proof = authenticate(
        auth,
        &headers,
        query.as_deref(),
        &body,
        "x-cordon-signature",
    )?;
    let payload = read_call(&body)?;
    check_fresh(auth, &payload, "sent_at", chrono::Utc::now())?;
    let text = |k: &str| payload[k].as_str().map(str::trim).filter(|s| !s.is_empty());
    let (Some(correlation), Some(sys_id)) = (text("correlation_id"), text("sys_id")) else {
        return Err(ApiError::bad_request(
            "bad_payload",
            "the body needs `correlation_id` (the Cordon incident id) and `sys_id` (the record's)",
        ));
    };
    let number = text("number").unwrap_or(sys_id).to_owned();
    // Only the record Cordon filed, by the sys_id the instance gave it then: a correlation id can
    // be typed into any record.
    let filed = app.store.meta_get(NS_SERVICENOW, correlation).await?;
    if filed.as_ref().and_then(|f| f["sys_id"].as_str()) != Some(sys_id) {
        return Ok(ignored(format!("{number} is not a record Cordon filed")));
    }
    let incident = correlation.to_owned();
    let user = text("updated_by").unwrap_or("unknown");
    let author = sn
        .users
        .get(user)
        .cloned()
        .unwrap_or(format!("servicenow:{user}"));
    let proven = proof == Proof::Signed;
    // Unsigned, `updated_by` is a claim: the change is the ticket system's.
    let actor = if proven {
        author.clone()
    } else {
        "servicenow".to_owned()
    };
    let profile = profile_of(&app, &incident).await?;
    let resolved_state = profile
        .as_ref()
        .and_then(|p| p.servicenow.as_ref())
        .map(|s| s.resolved_state.clone())
        .unwrap_or_else(|| "6".to_owned());
    let resolved_like = |s: &str| s == resolved_state || s == "6" || s == "7";
    let mut applied_now = Vec::new();
    let change = match text("sys_mod_count") {
        Some(count) => format!("servicenow:change:{sys_id}:{count}"),
        None => body_key("servicenow", &body),
    };
    if !seen_before(&app, &change).await? {
        if let Some(state) = text("state") {
            let previous = text("previous_state");
            if resolved_like(state) {
                applied_now.extend(
                    set_status(
                        &app,
                        &incident,
                        IncidentStatus::Resolved,
                        &actor,
                        "servicenow",
                    )
                    .await?,
                );
            } else if previous.is_some_and(|p| p != state) {
                applied_now.extend(
                    set_status(&app, &incident, IncidentStatus::Open, &actor, "servicenow").await?,
                );
            }
        }
        if let Some(to) = text("assigned_to")
            && text("previous_assigned_to") != Some(to)
        {
            record_assignee(
                &app,
                &incident,
                "servicenow",
                &number,
                &actor,
                text("previous_assigned_to"),
                to,
                None,
            )
            .await?;
            applied_now.push(format!("assignee recorded: {to}"));
        }
        applied(&app, &change).await?;
    }
    let note = text("work_notes").or(text("comments"));
    if let Some(note) = note {
        let seen = match text("sys_mod_count") {
            Some(count) => format!("servicenow:{sys_id}:{count}"),
            None => body_key("servicenow:note", &body),
        };
        if let Some(outcome) = command(
            &app,
            &super::ServiceNow,
            &incident,
            note,
            &author,
            proven,
            &seen,
        )
        .await?
        {
            applied_now.push(outcome);
        }
    }
    Ok(Json(
        json!({ "incident": incident, "applied": applied_now }),
    ))
}
