//! `POST /v1/tickets/jira/webhook`: Jira's `jira:issue_updated` and `comment_created` calls (the
//! rules every ticket webhook follows: [`crate::tickets::webhook`]).

use std::sync::Arc;

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use serde_json::{Value, json};

use crate::alert::IncidentStatus;
use crate::http::ApiError;
use crate::tickets::NS_JIRA_ISSUE;
use crate::tickets::webhook::{
    Inbound, Proof, applied, authenticate, body_key, check_fresh, command, ignored, not_configured,
    profile_of, read_call, record_assignee, seen_before, set_status,
};

/// `POST /v1/tickets/jira/webhook`.
pub(super) async fn webhook(
    State(app): State<Arc<Inbound>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let config = app.config.jira.as_ref();
    let Some((jira, auth)) = config.and_then(|j| j.webhook.as_ref().map(|w| (j, w))) else {
        return Err(not_configured("jira"));
    };
    let proof = authenticate(auth, &headers, query.as_deref(), &body, "x-hub-signature")?;
    let payload = read_call(&body)?;
    check_fresh(auth, &payload, "timestamp", chrono::Utc::now())?;
    let event = payload["webhookEvent"]
        .as_str()
        .ok_or_else(|| ApiError::bad_request("bad_payload", "the body has no `webhookEvent`"))?;
    if !matches!(event, "jira:issue_updated" | "comment_created") {
        return Ok(ignored(format!("`{event}` events are not handled")));
    }
    let issue = &payload["issue"];
    let (Some(issue_id), Some(key)) = (issue["id"].as_str(), issue["key"].as_str()) else {
        return Err(ApiError::bad_request(
            "bad_payload",
            "the body has no `issue` with `id` and `key`",
        ));
    };
    // Only the issue Cordon filed, by the id Jira gave it then: a label or a key can be put on
    // any issue by anyone who can edit one.
    let Some(Value::String(incident)) = app.store.meta_get(NS_JIRA_ISSUE, issue_id).await? else {
        return Ok(ignored(format!("issue {key} is not an issue Cordon filed")));
    };
    let who = |account: &Value| -> String {
        match account.as_str() {
            Some(id) => jira.users.get(id).cloned().unwrap_or(format!("jira:{id}")),
            None => "jira:unknown".to_owned(),
        }
    };
    let proven = proof == Proof::Signed;
    // Unsigned, the body's `user` is a claim: the change is the ticket system's.
    let actor = if proven {
        who(&payload["user"]["accountId"])
    } else {
        "jira".to_owned()
    };
    let mut applied_now = Vec::new();
    let items = payload["changelog"]["items"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let change = match payload["changelog"]["id"].as_str() {
        Some(id) => format!("jira:changelog:{issue_id}:{id}"),
        None => body_key("jira", &body),
    };
    if !items.is_empty() && !seen_before(&app, &change).await? {
        if items
            .iter()
            .any(|i| i["field"] == "status" || i["fieldId"] == "status")
        {
            let done_status = profile_of(&app, &incident)
                .await?
                .and_then(|p| p.jira.as_ref().and_then(|j| j.done_status.clone()));
            let status = &issue["fields"]["status"];
            let done = status["statusCategory"]["key"] == "done"
                || done_status.is_some_and(|d| {
                    status["name"]
                        .as_str()
                        .is_some_and(|n| n.eq_ignore_ascii_case(&d))
                });
            let wanted = if done {
                IncidentStatus::Resolved
            } else {
                IncidentStatus::Open
            };
            applied_now.extend(set_status(&app, &incident, wanted, &actor, "jira").await?);
        }
        for item in items.iter().filter(|i| i["field"] == "assignee") {
            let to = item["toString"].as_str().unwrap_or("nobody");
            record_assignee(
                &app,
                &incident,
                "jira",
                key,
                &actor,
                item["fromString"].as_str(),
                to,
                item["to"].as_str(),
            )
            .await?;
            applied_now.push(format!("assignee recorded: {to}"));
        }
        applied(&app, &change).await?;
    }
    let comment = &payload["comment"];
    if comment.is_object() {
        let text = super::payload::adf_text(&comment["body"]);
        let seen = match comment["id"].as_str() {
            Some(id) => format!("jira:{id}"),
            None => body_key("jira", &body),
        };
        let author = who(&comment["author"]["accountId"]);
        if let Some(outcome) =
            command(&app, &super::Jira, &incident, &text, &author, proven, &seen).await?
        {
            applied_now.push(outcome);
        }
    }
    Ok(Json(
        json!({ "incident": incident, "applied": applied_now }),
    ))
}
