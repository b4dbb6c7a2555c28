//! People, the unit of trust. A person has an id, a display name, an email, roles, and the
//! identities that are theirs on each platform (`slack:U123`, `teams:<Entra object id>`,
//! `discord:<user id>`, `jira:<account id>`, `servicenow:<user>`, `oidc:<subject or email>`,
//! `cli:<name>`). Every decision is made by a person: an identity that belongs to no person
//! decides nothing, quorum counts people, and one person deciding from two platforms counts once.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

/// What a person (or one of their credentials) may do. Every role includes `viewer`; `admin`
/// includes `responder` and `author`. `approver` is what lets a credential decide approvals; which
/// approvals is still up to each step's approver group (members of any group have it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads incidents, runs and the audit log; `/cordon status` and `/cordon runs` in chat.
    Viewer,
    /// Triggers playbooks, resolves and reopens incidents, cancels runs, asks for undo, settles
    /// steps held for a decision.
    Responder,
    /// Decides approvals of the groups the person is in.
    Approver,
    /// Reloads playbooks.
    Author,
    /// Manages people and personal tokens.
    Admin,
}

impl Role {
    pub const ALL: [Role; 5] = [
        Role::Viewer,
        Role::Responder,
        Role::Approver,
        Role::Author,
        Role::Admin,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Responder => "responder",
            Role::Approver => "approver",
            Role::Author => "author",
            Role::Admin => "admin",
        }
    }

    /// The role named `name`, if it is one.
    pub fn parse(name: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == name)
    }

    /// The roles this one includes, itself among them.
    fn implied(self) -> &'static [Role] {
        match self {
            Role::Viewer => &[Role::Viewer],
            Role::Responder => &[Role::Responder, Role::Viewer],
            Role::Approver => &[Role::Approver, Role::Viewer],
            Role::Author => &[Role::Author, Role::Viewer],
            Role::Admin => &[Role::Admin, Role::Responder, Role::Author, Role::Viewer],
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of roles, with what each includes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Roles(BTreeSet<Role>);

impl Roles {
    /// `roles` and every role they include.
    pub fn of(roles: impl IntoIterator<Item = Role>) -> Roles {
        Roles(
            roles
                .into_iter()
                .flat_map(|r| r.implied().iter().copied())
                .collect(),
        )
    }

    pub fn has(&self, role: Role) -> bool {
        self.0.contains(&role)
    }

    /// The roles both sets hold: what a credential limited to `self` may do for a person who has
    /// `other`.
    pub fn and(&self, other: &Roles) -> Roles {
        Roles(self.0.intersection(&other.0).copied().collect())
    }

    pub fn with(mut self, role: Role) -> Roles {
        self.0.extend(role.implied());
        self
    }

    pub fn iter(&self) -> impl Iterator<Item = Role> + '_ {
        self.0.iter().copied()
    }
}

impl fmt::Display for Roles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.0.iter().map(|r| r.as_str()).collect();
        f.write_str(&names.join(", "))
    }
}

/// A person, as the config or the store defines them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Person {
    /// Short and stable: `alice`. Approver groups list people by it.
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// The roles given (without what they include).
    #[serde(default)]
    pub roles: Vec<Role>,
    /// `slack:U123`, `discord:42`, `oidc:alice@example.com`, ...
    #[serde(default)]
    pub identities: Vec<String>,
    /// Approver groups this person is in besides those the config lists them in (people managed
    /// through the API join groups here).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
}

impl Person {
    /// How the person is named in messages: the display name, or the id.
    pub fn display(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.id)
    }
}

/// Whether `id` can name a person: letters, digits, `.`, `_`, `-` and `@`, at most 64, and no `:`
/// (which would read as an identity).
pub fn valid_person_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'))
}

/// The platforms identities may name; `<platform>:<id>`.
pub const PLATFORMS: &[&str] = &[
    "cli",
    "slack",
    "teams",
    "discord",
    "jira",
    "servicenow",
    "oidc",
    // The test-only chat platform (`chat/fake`).
    #[cfg(test)]
    "fake",
];

/// Group references an approver group may list besides people and `group:<name>`: membership the
/// chat platform vouches for at the time of a click.
pub const PLATFORM_GROUPS: &[&str] = &["slack-group", "teams-group", "discord-role"];

/// Whether `identity` is `<platform>:<id>` for a known platform, with a non-empty id.
pub fn valid_identity(identity: &str) -> bool {
    match identity.split_once(':') {
        Some((platform, id)) => {
            PLATFORMS.contains(&platform)
                && !id.trim().is_empty()
                && !id.chars().any(char::is_control)
        }
        None => false,
    }
}

/// Who acts: the person, the identity (or credential) they acted with, their roles as that
/// credential allows them, and the platform groups the platform vouched for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// The person's id.
    pub person: String,
    /// The identity they used: `slack:U123`, `token:<id>`, `oidc:<subject>`.
    pub identity: String,
    pub roles: Roles,
    /// What approver groups may list for this person besides their id: every identity of theirs,
    /// the groups they joined in the store (`group:soc`), and the platform groups the platform said
    /// they are in (`slack-group:S1`).
    pub also: Vec<String>,
}

impl Actor {
    /// How the audit names who acted: `alice (slack:U123)`.
    pub fn label(&self) -> String {
        format!("{} ({})", self.person, self.identity)
    }
}

/// How messages and reports name who acted: a chat identity as itself (chat renders it as a
/// mention), a credential (`token:<id>`, `oidc:<subject>`) as the person it belongs to, found in
/// the event's `detail.person`.
pub fn shown_as(actor: Option<&str>, detail: &serde_json::Value) -> Option<String> {
    let actor = actor?;
    let credential = actor.starts_with("token:") || actor.starts_with("oidc:");
    match detail.get("person").and_then(serde_json::Value::as_str) {
        Some(person) if credential => Some(person.to_owned()),
        _ => Some(actor.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_include_what_they_imply_and_a_credential_narrows_them() {
        let admin = Roles::of([Role::Admin]);
        assert!(admin.has(Role::Responder) && admin.has(Role::Viewer));
        assert!(
            !admin.has(Role::Approver),
            "admin decides nothing by itself"
        );
        let token = Roles::of([Role::Viewer]);
        assert_eq!(token.and(&admin), Roles::of([Role::Viewer]));
        assert_eq!(Role::parse("responder"), Some(Role::Responder));
        assert_eq!(Role::parse("root"), None);
    }

    #[test]
    fn identities_and_person_ids_are_told_apart() {
        assert!(valid_identity("slack:U123"));
        assert!(!valid_identity("slack:"));
        assert!(!valid_identity("nope:x"));
        assert!(!valid_identity("alice"));
        assert!(valid_person_id("alice.smith"));
        assert!(!valid_person_id("cli:alice"));
        assert!(!valid_person_id(""));
    }
}
