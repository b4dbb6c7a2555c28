//! Who is acting: people (from the config and the store), their personal tokens, OIDC tokens from
//! a configured issuer, and the bootstrap admin token. Every request to the API and every chat
//! click becomes an [`Actor`] here or is refused; nothing a sender writes in a body names who
//! they are (docs/security.md).
//!
//! People the config defines are fixed until the next reload; people added through the API or CLI
//! are stored (namespace `people`, with an index `identities`), so every replica sees them. A
//! personal token is `cordon_<id>_<secret>`; the store keeps its id, its person, its roles and the
//! SHA-256 of the secret, never the secret. Each use reads the token's record, so a revocation
//! holds at once on every replica.

pub mod jwks;
pub mod oidc;

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::{Config, Secret};
use crate::model::people::{Actor, Person, Role, Roles, valid_identity, valid_person_id};
use crate::store::{Store, StoreError};

const PEOPLE: &str = "people";
const IDENTITIES: &str = "identities";
const TOKENS: &str = "tokens";
/// How often a token's `last_used` is written: a busy script would otherwise write on every call.
const LAST_USED_EVERY: TimeDelta = TimeDelta::seconds(60);

/// Who a request comes from, as its credential proves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// The bootstrap admin token (`server.admin_token`): manages people and tokens, nothing else.
    Bootstrap,
    /// A person, through a personal token or an OIDC token.
    Person(Actor),
}

impl Caller {
    /// How the audit names the caller.
    pub fn label(&self) -> String {
        match self {
            Caller::Bootstrap => BOOTSTRAP.to_owned(),
            Caller::Person(actor) => actor.label(),
        }
    }

    /// The audit entry's `actor` for the caller (the identity or credential used), and the person
    /// behind it (none for the bootstrap token).
    pub fn audit_actor(&self) -> (String, Option<String>) {
        match self {
            Caller::Bootstrap => (BOOTSTRAP.to_owned(), None),
            Caller::Person(a) => (a.identity.clone(), Some(a.person.clone())),
        }
    }
}

/// How the audit names the bootstrap admin token.
const BOOTSTRAP: &str = "bootstrap-admin-token";

/// Why a credential or a change to people or tokens was refused.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    NotFound(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A personal token as stored: everything but the secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub id: String,
    pub person: String,
    /// The roles the token is limited to; empty: all of the person's.
    #[serde(default)]
    pub roles: Vec<Role>,
    pub created_at: DateTime<Utc>,
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub last_used_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub revoked_at: Option<DateTime<Utc>>,
    /// Who created it (the audit says the same).
    #[serde(default)]
    pub created_by: String,
    /// Lowercase hex SHA-256 of the secret part.
    sha256: String,
}

impl TokenRecord {
    /// `active`, `expired` or `revoked` at `now`.
    pub fn state(&self, now: DateTime<Utc>) -> &'static str {
        if self.revoked_at.is_some() {
            "revoked"
        } else if self.expires_at.is_some_and(|e| e <= now) {
            "expired"
        } else {
            "active"
        }
    }

    /// The record as the API lists it (no hash).
    pub fn summary(&self, now: DateTime<Utc>) -> serde_json::Value {
        serde_json::json!({
            "id": self.id,
            "person": self.person,
            "roles": if self.roles.is_empty() { serde_json::json!("all of the person's") } else { serde_json::json!(self.roles) },
            "created_at": self.created_at,
            "created_by": self.created_by,
            "expires_at": self.expires_at,
            "last_used_at": self.last_used_at,
            "revoked_at": self.revoked_at,
            "state": self.state(now),
        })
    }
}

/// People and credentials: the one place that turns a credential or a platform identity into an
/// [`Actor`].
pub struct Directory {
    configured: BTreeMap<String, Person>,
    /// Configured identity → person id.
    owners: BTreeMap<String, String>,
    store: Arc<dyn Store>,
    bootstrap: Option<Secret>,
    oidc: Option<oidc::Verifier>,
}

impl Directory {
    pub fn new(config: &Config, store: Arc<dyn Store>) -> Directory {
        let configured: BTreeMap<String, Person> = config
            .configured_people()
            .into_iter()
            .map(|p| (p.id.clone(), p))
            .collect();
        let owners = configured
            .values()
            .flat_map(|p| p.identities.iter().map(|i| (i.clone(), p.id.clone())))
            .collect();
        Directory {
            configured,
            owners,
            store,
            bootstrap: config.server.admin_token.clone(),
            oidc: config.oidc.clone().map(oidc::Verifier::new),
        }
    }

    /// The person with id `id`: configured, or stored.
    pub async fn person(&self, id: &str) -> Result<Option<Person>, StoreError> {
        if let Some(p) = self.configured.get(id) {
            return Ok(Some(p.clone()));
        }
        match self.store.meta_get(PEOPLE, id).await? {
            Some(value) => Ok(serde_json::from_value(value).ok()),
            None => Ok(None),
        }
    }

    /// The person `identity` belongs to, if any.
    pub async fn person_of(&self, identity: &str) -> Result<Option<Person>, StoreError> {
        if let Some(id) = self.owners.get(identity) {
            return self.person(id).await;
        }
        match self.store.meta_get(IDENTITIES, identity).await? {
            Some(serde_json::Value::String(id)) => self.person(&id).await,
            _ => Ok(None),
        }
    }

    /// The actor behind a platform identity that the platform authenticated (a signed chat
    /// payload, a signed ticket webhook), with the platform groups it vouched for; `None` when the
    /// identity is nobody's. The platform is not a credential with limits: the person's roles hold.
    pub async fn actor(
        &self,
        identity: &str,
        platform_groups: &[String],
    ) -> Result<Option<Actor>, StoreError> {
        let Some(person) = self.person_of(identity).await? else {
            return Ok(None);
        };
        Ok(Some(actor_for(&person, identity, None, platform_groups)))
    }

    /// Everyone, configured first, then stored, each with where they are defined.
    pub async fn people(&self) -> Result<Vec<(Person, &'static str)>, StoreError> {
        let mut all: Vec<(Person, &'static str)> = self
            .configured
            .values()
            .cloned()
            .map(|p| (p, "config"))
            .collect();
        for (_, value) in self.store.meta_list(PEOPLE).await? {
            if let Ok(p) = serde_json::from_value::<Person>(value) {
                all.push((p, "store"));
            }
        }
        Ok(all)
    }

    /// Stores a new person (or replaces a stored one); their identities may be no one else's.
    pub async fn put_person(&self, person: Person) -> Result<(), TrustError> {
        if !valid_person_id(&person.id) {
            return Err(TrustError::Invalid(format!(
                "`{}` is not a person id: letters, digits, `.`, `_`, `-`, `@`, at most 64",
                person.id
            )));
        }
        if self.configured.contains_key(&person.id) {
            return Err(TrustError::Conflict(format!(
                "`{}` is defined in the config; change it there",
                person.id
            )));
        }
        for identity in &person.identities {
            if !valid_identity(identity) {
                return Err(TrustError::Invalid(format!(
                    "`{identity}` is not `<platform>:<id>` (cli, slack, teams, discord, jira, servicenow, oidc)"
                )));
            }
            if let Some(owner) = self.person_of(identity).await?
                && owner.id != person.id
            {
                return Err(TrustError::Conflict(format!(
                    "`{identity}` is already {}'s",
                    owner.id
                )));
            }
        }
        for group in &person.groups {
            if !group.starts_with("group:") {
                return Err(TrustError::Invalid(format!(
                    "groups are written `group:<name>`, not `{group}`"
                )));
            }
        }
        if let Some(old) = self.person(&person.id).await? {
            for identity in old
                .identities
                .iter()
                .filter(|i| !person.identities.contains(i))
            {
                self.store.meta_delete(IDENTITIES, identity).await?;
            }
        }
        let value =
            serde_json::to_value(&person).map_err(|e| TrustError::Invalid(e.to_string()))?;
        self.store.meta_put(PEOPLE, &person.id, value).await?;
        for identity in &person.identities {
            self.store
                .meta_put(IDENTITIES, identity, serde_json::json!(person.id))
                .await?;
        }
        Ok(())
    }

    /// Forgets a stored person and revokes their tokens.
    pub async fn remove_person(&self, id: &str, now: DateTime<Utc>) -> Result<(), TrustError> {
        if self.configured.contains_key(id) {
            return Err(TrustError::Conflict(format!(
                "`{id}` is defined in the config; remove them there"
            )));
        }
        let Some(person) = self.person(id).await? else {
            return Err(TrustError::NotFound(format!("no person `{id}`")));
        };
        for identity in &person.identities {
            self.store.meta_delete(IDENTITIES, identity).await?;
        }
        for token in self.tokens().await? {
            if token.person == id && token.revoked_at.is_none() {
                self.revoke_token(&token.id, now).await?;
            }
        }
        self.store.meta_delete(PEOPLE, id).await?;
        Ok(())
    }

    /// Creates a personal token for `person`; the secret is in the returned string only.
    pub async fn create_token(
        &self,
        person: &str,
        roles: Vec<Role>,
        expires: Option<TimeDelta>,
        created_by: &str,
        now: DateTime<Utc>,
    ) -> Result<(TokenRecord, String), TrustError> {
        let Some(found) = self.person(person).await? else {
            return Err(TrustError::NotFound(format!("no person `{person}`")));
        };
        let has = person_roles(&found);
        if let Some(missing) = roles.iter().find(|r| !has.has(**r)) {
            return Err(TrustError::Invalid(format!(
                "{person} does not have the role `{missing}`, so no token of theirs can"
            )));
        }
        let id = hex::encode(random::<6>());
        let secret = base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            random::<32>(),
        );
        let record = TokenRecord {
            id: id.clone(),
            person: person.to_owned(),
            roles,
            created_at: now,
            expires_at: expires.map(|e| now + e),
            last_used_at: None,
            revoked_at: None,
            created_by: created_by.to_owned(),
            sha256: hex::encode(Sha256::digest(secret.as_bytes())),
        };
        self.save_token(&record).await?;
        Ok((record, format!("cordon_{id}_{secret}")))
    }

    /// Every token, active or not.
    pub async fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        Ok(self
            .store
            .meta_list(TOKENS)
            .await?
            .into_iter()
            .filter_map(|(_, v)| serde_json::from_value(v).ok())
            .collect())
    }

    /// Revokes a token: refused from the next request on, on every replica.
    pub async fn revoke_token(
        &self,
        id: &str,
        now: DateTime<Utc>,
    ) -> Result<TokenRecord, TrustError> {
        let mut record = self
            .token(id)
            .await?
            .ok_or_else(|| TrustError::NotFound(format!("no token `{id}`")))?;
        if record.revoked_at.is_none() {
            record.revoked_at = Some(now);
            self.save_token(&record).await?;
        }
        Ok(record)
    }

    /// The token with id `id`, active or not.
    pub async fn token(&self, id: &str) -> Result<Option<TokenRecord>, StoreError> {
        Ok(self
            .store
            .meta_get(TOKENS, id)
            .await?
            .and_then(|v| serde_json::from_value(v).ok()))
    }

    async fn save_token(&self, record: &TokenRecord) -> Result<(), StoreError> {
        let value = serde_json::to_value(record).unwrap_or_default();
        self.store.meta_put(TOKENS, &record.id, value).await
    }

    /// The caller behind a bearer credential: the bootstrap token, a personal token, or an OIDC
    /// token from the configured issuer.
    pub async fn authenticate(
        &self,
        bearer: &str,
        now: DateTime<Utc>,
    ) -> Result<Caller, TrustError> {
        if let Some(rest) = bearer.strip_prefix("cordon_") {
            return self.personal(rest, now).await.map(Caller::Person);
        }
        if let Some(token) = &self.bootstrap
            && bool::from(token.expose().as_bytes().ct_eq(bearer.as_bytes()))
        {
            return Ok(Caller::Bootstrap);
        }
        if let Some(verifier) = &self.oidc
            && bearer.matches('.').count() == 2
        {
            let claims = verifier.verify(bearer).await.map_err(|e| {
                TrustError::Unauthenticated(format!("the OIDC token was refused: {e}"))
            })?;
            for identity in claims.identities() {
                if let Some(person) = self.person_of(&identity).await? {
                    return Ok(Caller::Person(actor_for(&person, &identity, None, &[])));
                }
            }
            return Err(TrustError::Unauthenticated(format!(
                "the OIDC token is valid, but no person has the identity `oidc:{}`{}",
                claims.sub,
                claims
                    .verified_email()
                    .map(|e| format!(" or `oidc:{e}`"))
                    .unwrap_or_default()
            )));
        }
        Err(TrustError::Unauthenticated(
            "the bearer token is not one this server knows".into(),
        ))
    }

    async fn personal(&self, rest: &str, now: DateTime<Utc>) -> Result<Actor, TrustError> {
        let refused = || TrustError::Unauthenticated("the personal token is not valid".into());
        let (id, secret) = rest.split_once('_').ok_or_else(refused)?;
        let mut record = self.token(id).await?.ok_or_else(refused)?;
        let hash = hex::encode(Sha256::digest(secret.as_bytes()));
        if !bool::from(hash.as_bytes().ct_eq(record.sha256.as_bytes())) {
            return Err(refused());
        }
        match record.state(now) {
            "active" => {}
            state => {
                return Err(TrustError::Unauthenticated(format!(
                    "the personal token `{id}` is {state}"
                )));
            }
        }
        let person = self.person(&record.person).await?.ok_or_else(|| {
            TrustError::Unauthenticated(format!(
                "the personal token `{id}` belongs to `{}`, who is no longer a person here",
                record.person
            ))
        })?;
        if record
            .last_used_at
            .is_none_or(|t| now - t >= LAST_USED_EVERY)
        {
            record.last_used_at = Some(now);
            if let Err(e) = self.save_token(&record).await {
                tracing::warn!(token = %id, error = %e, "cannot note a token's last use");
            }
        }
        let limit = (!record.roles.is_empty()).then(|| Roles::of(record.roles.iter().copied()));
        Ok(actor_for(&person, &format!("token:{id}"), limit, &[]))
    }
}

/// A person's roles with what each includes; everyone may decide the approvals of the groups they
/// are in, so `approver` is every person's (a credential can still be limited without it).
pub fn person_roles(person: &Person) -> Roles {
    Roles::of(person.roles.iter().copied()).with(Role::Approver)
}

fn actor_for(person: &Person, identity: &str, limit: Option<Roles>, platform: &[String]) -> Actor {
    let roles = person_roles(person);
    Actor {
        person: person.id.clone(),
        identity: identity.to_owned(),
        roles: limit.map_or(roles.clone(), |l| l.and(&roles)),
        // Approver groups may list the person by id, by any identity of theirs, through a group
        // they joined in the store, or through a platform group.
        also: person
            .groups
            .iter()
            .chain(&person.identities)
            .chain(platform)
            .cloned()
            .collect(),
    }
}

fn random<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .expect("the system's random source");
    bytes
}
