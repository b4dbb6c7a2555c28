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
    Inbound, authenticate, command, ignored, not_configured, profile_of, read_call,
    record_assignee, set_status,
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
    authenticate(auth, &headers, query.as_deref(), &body, "x-hub-signature")?;
    let payload = read_call(&body)?;
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
    let Some(incident) = jira_incident(&app, issue_id, issue).await? else {
        return Ok(ignored(format!("issue {key} is not a Cordon incident")));
    };
    let who = |account: &Value| -> String {
        match account.as_str() {
            Some(id) => jira.users.get(id).cloned().unwrap_or(format!("jira:{id}")),
            None => "jira:unknown".to_owned(),
        }
    };
    let actor = who(&payload["user"]["accountId"]);
    let mut applied = Vec::new();
    let items = payload["changelog"]["items"]
        .as_array()
        .cloned()
        .unwrap_or_default();
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
        applied.extend(set_status(&app, &incident, wanted, &actor, "jira").await?);
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
        applied.push(format!("assignee recorded: {to}"));
    }
    let comment = &payload["comment"];
    if comment.is_object() {
        let text = super::payload::adf_text(&comment["body"]);
        let seen = format!("jira:{}", comment["id"].as_str().unwrap_or_default());
        let author = who(&comment["author"]["accountId"]);
        if let Some(outcome) = command(&app, &super::Jira, &incident, &text, &author, &seen).await?
        {
            applied.push(outcome);
        }
    }
    Ok(Json(json!({ "incident": incident, "applied": applied })))
}

/// The incident of a Jira issue: by the stored issue id, else by its `cordon-<incident>` label.
async fn jira_incident(
    app: &Inbound,
    issue_id: &str,
    issue: &Value,
) -> Result<Option<String>, ApiError> {
    if let Some(Value::String(incident)) = app.store.meta_get(NS_JIRA_ISSUE, issue_id).await? {
        return Ok(Some(incident));
    }
    let labels = issue["fields"]["labels"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for label in labels.iter().filter_map(Value::as_str) {
        if let Some(id) = label.strip_prefix("cordon-")
            && app.store.incident(id).await?.is_some()
        {
            return Ok(Some(id.to_owned()));
        }
    }
    Ok(None)
}
