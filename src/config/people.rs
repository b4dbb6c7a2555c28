//! The `people:` and `oidc:` sections, and the checks that tie people, approver groups and roles
//! together (each problem at its file:line:column).

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use super::{Config, Diagnostic, duration::HumanDuration};
use crate::model::people::{PLATFORM_GROUPS, Person, Role, valid_identity, valid_person_id};
use crate::playbook::position;

/// One person: who they are, what they may do, and the identities that are theirs.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PersonConfig {
    /// Display name, shown in chat and in the audit log's readers.
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
    /// `viewer`, `responder`, `approver`, `author`, `admin` (default `[viewer]`). Members of any
    /// approver group also have `approver`.
    #[serde(default = "default_roles")]
    pub roles: Vec<Role>,
    /// The person's identities: `slack:U123`, `teams:<Entra object id>`, `discord:<user id>`,
    /// `jira:<account id>`, `servicenow:<user>`, `oidc:<subject or verified email>`, `cli:<name>`.
    /// An identity belongs to one person at most.
    #[serde(default)]
    pub identities: Vec<String>,
}

fn default_roles() -> Vec<Role> {
    vec![Role::Viewer]
}

/// An OpenID Connect issuer whose access and ID tokens the API and the CLI accept.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    /// The issuer URL, exactly as its tokens' `iss` says; its discovery document is read from
    /// `<issuer>/.well-known/openid-configuration`.
    pub issuer: String,
    /// The audience tokens must name in `aud` (the client id registered for Cordon).
    pub audience: String,
    /// The client id `cordon login` uses for the device authorization grant (default: `audience`).
    #[serde(default)]
    pub client_id: Option<String>,
    /// How far `exp`, `nbf` and `iat` may be off (default `60s`).
    #[serde(default = "default_skew")]
    pub clock_skew: HumanDuration,
    /// How long the issuer's keys are kept before they are read again (default `10m`). A token
    /// signed by a key not yet known makes Cordon read them at once (at most every 30 s).
    #[serde(default = "default_jwks_refresh")]
    pub jwks_refresh: HumanDuration,
}

fn default_skew() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(60))
}

fn default_jwks_refresh() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(600))
}

impl Config {
    /// The people the config defines.
    pub fn configured_people(&self) -> Vec<Person> {
        self.people
            .iter()
            .map(|(id, p)| Person {
                id: id.clone(),
                name: p.name.clone(),
                email: p.email.clone(),
                roles: p.roles.clone(),
                identities: p.identities.clone(),
                groups: Vec::new(),
            })
            .collect()
    }
}

/// What the passes over single sections cannot see: person ids and identities well formed and
/// unique, and approver groups naming people (or identities a person has), groups that exist,
/// and platform groups.
pub fn check(config: &Config, text: &str, file: &Path) -> Vec<Diagnostic> {
    let Ok(tree) = position::index(text) else {
        return Vec::new();
    };
    let at = |path: &[&str], index: Option<usize>, message: String| {
        let pos = tree.pos_at(path, index);
        Diagnostic::new(file, pos.line, pos.column, message)
    };
    let mut problems = Vec::new();
    let mut owner: BTreeMap<&str, &str> = BTreeMap::new();
    for (id, person) in &config.people {
        if !valid_person_id(id) {
            problems.push(
                at(
                    &["people", id],
                    None,
                    format!("people.{id}: not a person id"),
                )
                .with_hint("letters, digits, `.`, `_`, `-`, `@`; no `:` (that is an identity)"),
            );
        }
        for (i, identity) in person.identities.iter().enumerate() {
            if !valid_identity(identity) {
                problems.push(
                    at(
                        &["people", id, "identities"],
                        Some(i),
                        format!("people.{id}.identities: `{identity}` is not `<platform>:<id>`"),
                    )
                    .with_hint("platforms: cli, slack, teams, discord, jira, servicenow, oidc"),
                );
            } else if let Some(other) = owner.insert(identity, id) {
                problems.push(at(
                    &["people", id, "identities"],
                    Some(i),
                    format!("people.{id}.identities: `{identity}` is already {other}'s; an identity belongs to one person"),
                ));
            }
        }
    }
    for (group, members) in &config.approvers {
        for (i, member) in members.iter().enumerate() {
            let problem = if let Some(inner) = member.strip_prefix("group:") {
                (!config.approvers.contains_key(inner))
                    .then(|| format!("approvers.{group}: no approver group `{inner}`"))
            } else if PLATFORM_GROUPS
                .iter()
                .any(|p| member.strip_prefix(p).is_some_and(|r| r.starts_with(':')))
            {
                None
            } else if member.contains(':') {
                // An identity stands for whoever has it, in the config or the store; one that is
                // nobody's decides nothing (the engine asks for a person first).
                (!valid_identity(member)).then(|| {
                    format!("approvers.{group}: `{member}` is not `<platform>:<id>`, a person id, `group:<name>` or a platform group")
                })
            } else {
                (!config.people.contains_key(member)).then(|| {
                    format!("approvers.{group}: no person `{member}` in `people:` (people added through the API join groups with their `groups`)")
                })
            };
            if let Some(message) = problem {
                problems.push(
                    at(&["approvers", group], Some(i), message)
                        .with_hint("list people by id (`alice`), their identities (`slack:U123`), other groups (`group:leads`) or platform groups (`slack-group:S0123`)"),
                );
            }
        }
    }
    problems
}
