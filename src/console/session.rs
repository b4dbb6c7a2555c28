//! Console sessions: a record in the store (meta namespace `console_sessions`) under the SHA-256 of
//! a random id that only the person's browser holds, in an `HttpOnly`, `SameSite=Lax` cookie
//! (`Secure` when the console's public URL is `https`). A session ends after `idle_timeout`
//! without a request or `absolute_timeout` after sign-in, whichever comes first, and at sign-out,
//! which deletes the record. Each session has its own CSRF token, which every form carries and
//! every POST must return.
//!
//! The session names the person and how they signed in, never a credential: each request finds
//! the person again (a person removed, an identity taken away, a personal token revoked ends the
//! session at the next request) and takes their roles as the API would.

use std::sync::Arc;

use axum::http::HeaderMap;
use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::app::AppState;
use crate::model::people::{Actor, Roles};
use crate::store::StoreError;

pub(crate) const SESSIONS: &str = "console_sessions";
/// The session cookie's name.
pub const COOKIE: &str = "cordon_session";
/// How often a session's `last_seen_at` is written (not on every request).
const TOUCH_EVERY: TimeDelta = TimeDelta::seconds(30);

/// A session as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionRecord {
    pub person: String,
    /// The identity signed in with: `oidc:<sub>` or `token:<id>`.
    pub identity: String,
    /// The personal token signed in with (its id, never its secret).
    #[serde(default)]
    pub token_id: Option<String>,
    /// `oidc` or `token`.
    pub via: String,
    pub csrf: String,
    pub created_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
}

/// A signed-in request: the session and the person as they are now.
#[derive(Debug, Clone)]
pub struct Visitor {
    /// The store key of the session (the SHA-256 of its id).
    pub key: String,
    pub session: SessionRecord,
    pub actor: Actor,
}

/// `n` random bytes from the system's source, base64url.
pub fn random_token(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .expect("the system's random source");
    base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, bytes)
}

/// The store key of a secret value: its SHA-256, so the store never holds what a browser presents.
pub fn key_of(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Equal, in time that does not depend on where they differ.
pub fn same(a: &str, b: &str) -> bool {
    bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// The value of cookie `name` in the request.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// A `Set-Cookie` value: `HttpOnly`, `SameSite=Lax`, `Path` as given, `Secure` when served over
/// TLS; `max_age` in seconds (0 deletes it).
pub fn set_cookie(name: &str, value: &str, path: &str, max_age: i64, secure: bool) -> String {
    format!(
        "{name}={value}; Path={path}; Max-Age={max_age}; HttpOnly; SameSite=Lax{}",
        if secure { "; Secure" } else { "" }
    )
}

/// Whether cookies must be `Secure`: the console is served over TLS (its public URL is `https`).
pub fn secure(app: &AppState) -> bool {
    app.config
        .console
        .public_url
        .as_ref()
        .is_some_and(|u| u.scheme() == "https")
}

/// Creates a session for `actor`; the cookie value to set (the session id).
pub async fn create(
    app: &AppState,
    actor: &Actor,
    token_id: Option<String>,
    via: &str,
) -> Result<String, StoreError> {
    let id = random_token(32);
    let now = Utc::now();
    let record = SessionRecord {
        person: actor.person.clone(),
        identity: actor.identity.clone(),
        token_id,
        via: via.to_owned(),
        csrf: random_token(32),
        created_at: now,
        last_seen_at: now,
    };
    app.store
        .meta_put(
            SESSIONS,
            &key_of(&id),
            serde_json::to_value(&record).unwrap_or_default(),
        )
        .await?;
    Ok(id)
}

/// Ends the session stored under `key`.
pub async fn end(app: &AppState, key: &str) -> Result<(), StoreError> {
    app.store.meta_delete(SESSIONS, key).await
}

/// The signed-in visitor of a request, if its session cookie names a live session whose person
/// still has the identity (or token) they signed in with.
pub async fn visitor(
    app: &Arc<AppState>,
    headers: &HeaderMap,
) -> Result<Option<Visitor>, StoreError> {
    let Some(id) = cookie(headers, COOKIE) else {
        return Ok(None);
    };
    if id.is_empty() || id.len() > 128 {
        return Ok(None);
    }
    let key = key_of(id);
    let Some(value) = app.store.meta_get(SESSIONS, &key).await? else {
        return Ok(None);
    };
    let Ok(mut session) = serde_json::from_value::<SessionRecord>(value) else {
        end(app, &key).await?;
        return Ok(None);
    };
    let now = Utc::now();
    let console = &app.config.console;
    let idle = TimeDelta::from_std(console.idle_timeout.0).unwrap_or(TimeDelta::MAX);
    let absolute = TimeDelta::from_std(console.absolute_timeout.0).unwrap_or(TimeDelta::MAX);
    if now - session.last_seen_at >= idle || now - session.created_at >= absolute {
        end(app, &key).await?;
        return Ok(None);
    }
    let Some(actor) = actor_now(app, &session, now).await? else {
        end(app, &key).await?;
        return Ok(None);
    };
    if now - session.last_seen_at >= TOUCH_EVERY {
        session.last_seen_at = now;
        app.store
            .meta_put(
                SESSIONS,
                &key,
                serde_json::to_value(&session).unwrap_or_default(),
            )
            .await?;
    }
    Ok(Some(Visitor {
        key,
        session,
        actor,
    }))
}

/// The person of a session as they are now, with the roles the API would give the credential
/// they signed in with; `None` when that credential or identity no longer leads to them.
async fn actor_now(
    app: &AppState,
    session: &SessionRecord,
    now: DateTime<Utc>,
) -> Result<Option<Actor>, StoreError> {
    let people = app.engine.people();
    match &session.token_id {
        None => Ok(people
            .actor(&session.identity, &[])
            .await?
            .filter(|a| a.person == session.person)),
        Some(id) => {
            let Some(token) = people.token(id).await? else {
                return Ok(None);
            };
            if token.state(now) != "active" || token.person != session.person {
                return Ok(None);
            }
            let Some(person) = people.person(&token.person).await? else {
                return Ok(None);
            };
            // As the API takes a personal token: the person's roles, limited to the token's.
            let roles = crate::trust::person_roles(&person);
            let roles = if token.roles.is_empty() {
                roles
            } else {
                Roles::of(token.roles.iter().copied()).and(&roles)
            };
            Ok(Some(Actor {
                person: person.id.clone(),
                identity: format!("token:{id}"),
                roles,
                also: person
                    .groups
                    .iter()
                    .chain(&person.identities)
                    .cloned()
                    .collect(),
            }))
        }
    }
}

/// The origin forms must come from: the public URL's, or the request's own host over `http`.
pub fn expected_origin(app: &AppState, headers: &HeaderMap) -> Option<String> {
    if let Some(url) = &app.config.console.public_url {
        return Some(url.origin().ascii_serialization());
    }
    let host = headers.get(axum::http::header::HOST)?.to_str().ok()?;
    Some(format!("http://{host}"))
}

/// Whether a POST may come from where it says: a browser's `Origin` (or, without one, its
/// `Sec-Fetch-Site`) must be this console's own.
pub fn same_origin(app: &AppState, headers: &HeaderMap) -> bool {
    if let Some(origin) = headers.get(axum::http::header::ORIGIN) {
        let Ok(origin) = origin.to_str() else {
            return false;
        };
        return expected_origin(app, headers).is_some_and(|e| e == origin);
    }
    match headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        Some(site) => site == "same-origin" || site == "none",
        None => true,
    }
}
