//! People and personal tokens through the API: `admin` (or the bootstrap admin token) manages
//! them; anyone may ask who they are (`/v1/whoami`) and revoke their own tokens. Every change is
//! audited with who made it; a token's secret is in the answer that creates it and nowhere else.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::Utc;
use serde::Deserialize;
use serde_json::{Value, json};

use super::Authed;
use crate::app::AppState;
use crate::config::HumanDuration;
use crate::http::ApiError;
use crate::model::audit::NewEntry;
use crate::model::event::EventKind;
use crate::model::people::{Person, Role};
use crate::trust::{Caller, TrustError, person_roles};

fn trust_error(e: TrustError) -> ApiError {
    match e {
        TrustError::Store(e) => e.into(),
        TrustError::NotFound(m) => ApiError::not_found("not_found", m),
        TrustError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, "conflict", m),
        TrustError::Invalid(m) => ApiError::bad_request("bad_request", m),
        TrustError::Unauthenticated(m) => ApiError::unauthorized("unauthorized", m),
    }
}

async fn audit(
    app: &AppState,
    kind: EventKind,
    by: &Caller,
    detail: Value,
) -> Result<(), ApiError> {
    let (actor, person) = by.audit_actor();
    let mut detail = detail;
    detail["by_person"] = json!(person);
    app.store
        .append_audit(vec![NewEntry::new(kind).actor(actor).detail(detail)])
        .await?;
    Ok(())
}

/// `GET /v1/whoami`: the person behind the credential and what it may do.
pub async fn whoami(
    State(app): State<Arc<AppState>>,
    caller: Authed,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(match &caller.0 {
        Caller::Bootstrap => json!({
            "person": null,
            "credential": "bootstrap admin token",
            "roles": [],
            "note": "the bootstrap admin token manages people and tokens only",
        }),
        Caller::Person(actor) => {
            let person = app.engine.people().person(&actor.person).await?;
            json!({
                "person": actor.person,
                "name": person.as_ref().and_then(|p| p.name.clone()),
                "identity": actor.identity,
                "roles": actor.roles.iter().collect::<Vec<Role>>(),
            })
        }
    }))
}

/// `GET /v1/people`: everyone, with where each is defined (`config` or `store`).
pub async fn list_people(
    State(app): State<Arc<AppState>>,
    caller: Authed,
) -> Result<Json<Value>, ApiError> {
    caller.require_admin(&app, "listing people").await?;
    let people: Vec<Value> = app
        .engine
        .people()
        .people()
        .await?
        .into_iter()
        .map(|(p, source)| {
            let roles: Vec<Role> = person_roles(&p).iter().collect();
            json!({ "id": p.id, "name": p.name, "email": p.email, "roles": roles, "identities": p.identities, "groups": p.groups, "defined_in": source })
        })
        .collect();
    Ok(Json(json!({ "people": people })))
}

/// A person as `PUT /v1/people/{id}` takes it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PersonBody {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    roles: Vec<Role>,
    #[serde(default)]
    identities: Vec<String>,
    /// Approver groups to join, `group:<name>`.
    #[serde(default)]
    groups: Vec<String>,
}

/// `PUT /v1/people/{id}`: adds or replaces a stored person.
pub async fn put_person(
    State(app): State<Arc<AppState>>,
    caller: Authed,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    caller.require_admin(&app, "managing people").await?;
    let body: PersonBody = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(
            "bad_request",
            format!("expected {{\"name\", \"email\", \"roles\": [...], \"identities\": [...], \"groups\": [...]}}: {e}"),
        )
    })?;
    for group in &body.groups {
        let name = group.strip_prefix("group:").unwrap_or(group);
        if !app.engine.groups().has(name) {
            return Err(ApiError::bad_request(
                "bad_request",
                format!("no approver group `{name}` in the config"),
            ));
        }
    }
    let person = Person {
        id: id.clone(),
        name: body.name,
        email: body.email,
        roles: if body.roles.is_empty() {
            vec![Role::Viewer]
        } else {
            body.roles
        },
        identities: body.identities,
        groups: body.groups,
    };
    app.engine
        .people()
        .put_person(person.clone())
        .await
        .map_err(trust_error)?;
    audit(
        &app,
        EventKind::PersonSaved,
        &caller.0,
        json!({ "person": id, "roles": person.roles, "identities": person.identities, "groups": person.groups }),
    )
    .await?;
    Ok(Json(json!({ "person": person })))
}

/// `DELETE /v1/people/{id}`: removes a stored person and revokes their tokens.
pub async fn remove_person(
    State(app): State<Arc<AppState>>,
    caller: Authed,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require_admin(&app, "managing people").await?;
    app.engine
        .people()
        .remove_person(&id, Utc::now())
        .await
        .map_err(trust_error)?;
    audit(
        &app,
        EventKind::PersonRemoved,
        &caller.0,
        json!({ "person": id }),
    )
    .await?;
    Ok(Json(json!({ "removed": id })))
}

/// `GET /v1/tokens`: every personal token (never a secret); `admin` sees all, others their own.
pub async fn list_tokens(
    State(app): State<Arc<AppState>>,
    caller: Authed,
) -> Result<Json<Value>, ApiError> {
    let own = match &caller.0 {
        Caller::Person(a) if !a.roles.has(Role::Admin) => Some(a.person.clone()),
        _ => None,
    };
    let now = Utc::now();
    let tokens: Vec<Value> = app
        .engine
        .people()
        .tokens()
        .await?
        .iter()
        .filter(|t| own.as_ref().is_none_or(|p| *p == t.person))
        .map(|t| t.summary(now))
        .collect();
    Ok(Json(json!({ "tokens": tokens })))
}

/// A token as `POST /v1/tokens` takes it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenBody {
    person: String,
    /// Limits the token to these roles (default: all of the person's).
    #[serde(default)]
    roles: Vec<Role>,
    /// `90d`, `12h`; default: never.
    #[serde(default)]
    expires: Option<String>,
}

/// `POST /v1/tokens`: creates a personal token; the answer holds its secret, once.
pub async fn create_token(
    State(app): State<Arc<AppState>>,
    caller: Authed,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let by = caller
        .require_admin(&app, "creating personal tokens")
        .await?;
    let body: TokenBody = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(
            "bad_request",
            format!(
                "expected {{\"person\": \"...\", \"roles\": [...], \"expires\": \"90d\"}}: {e}"
            ),
        )
    })?;
    let expires = match &body.expires {
        None => None,
        Some(text) => {
            let d: HumanDuration = text
                .parse()
                .map_err(|e| ApiError::bad_request("bad_request", format!("expires: {e}")))?;
            Some(
                chrono::TimeDelta::from_std(d.0)
                    .map_err(|_| ApiError::bad_request("bad_request", "expires: too far away"))?,
            )
        }
    };
    let now = Utc::now();
    let (record, secret) = app
        .engine
        .people()
        .create_token(&body.person, body.roles, expires, &by, now)
        .await
        .map_err(trust_error)?;
    audit(
        &app,
        EventKind::TokenCreated,
        &caller.0,
        json!({ "token": record.id, "person": record.person, "roles": record.roles, "expires_at": record.expires_at }),
    )
    .await?;
    let mut answer = record.summary(now);
    answer["token"] = json!(secret);
    Ok((StatusCode::CREATED, Json(answer)))
}

/// `DELETE /v1/tokens/{id}`: revokes a token (`admin`, or the token's own person).
pub async fn revoke_token(
    State(app): State<Arc<AppState>>,
    caller: Authed,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let people = app.engine.people();
    if let Caller::Person(a) = &caller.0
        && !a.roles.has(Role::Admin)
    {
        let mine = people
            .token(&id)
            .await?
            .is_some_and(|t| t.person == a.person);
        if !mine {
            return Err(ApiError::missing_role(
                "admin",
                "revoking another person's token needs the role `admin`",
            ));
        }
    }
    let record = people
        .revoke_token(&id, Utc::now())
        .await
        .map_err(trust_error)?;
    audit(
        &app,
        EventKind::TokenRevoked,
        &caller.0,
        json!({ "token": id, "person": record.person }),
    )
    .await?;
    Ok(Json(record.summary(Utc::now())))
}
