//! Entra (Azure AD) groups of the person who clicked, for approver groups that list
//! `teams-group:<group object id>`.
//!
//! Teams tells the bot who clicked (`from.aadObjectId`) but not their groups, so Cordon asks
//! Microsoft Graph, on each click, which of the groups the approver config names the person is in
//! (`POST /v1.0/users/{id}/checkMemberGroups`, transitive, 20 groups a call), with an app-only
//! token of the bot's own app registration (application permissions `User.Read.All` and
//! `GroupMember.Read.All`, admin-consented). Nothing is cached, so removing someone from a group
//! takes effect at their next click. When Graph cannot answer, the click counts with the person's
//! own identity only (and is refused if only a group would allow it).

use serde::Deserialize;
use serde_json::json;

use super::TeamsConfig;
use super::token::TokenSource;

/// The platform-group prefix approver groups use for Entra groups.
pub const PREFIX: &str = "teams-group:";

/// `chat.teams.entra_groups`: where Microsoft Graph is.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GraphConfig {
    /// Microsoft Graph's base URL (default `https://graph.microsoft.com`).
    #[serde(default = "default_graph_url")]
    pub url: url::Url,
    /// The token endpoint for the Graph token (default the tenant's:
    /// `https://login.microsoftonline.com/<tenant_id>/oauth2/v2.0/token`; `tenant_id` is then
    /// required).
    #[serde(default)]
    pub token_url: Option<url::Url>,
}

fn default_graph_url() -> url::Url {
    url::Url::parse("https://graph.microsoft.com").expect("constant URL")
}

/// Looks up Entra group membership, or nothing when it is off.
pub struct Groups {
    lookup: Option<Lookup>,
    /// The group object ids the approver config names.
    ids: Vec<String>,
}

struct Lookup {
    http: reqwest::Client,
    base: String,
    token: TokenSource,
}

#[derive(Deserialize)]
struct Matched {
    #[serde(default)]
    value: Vec<String>,
}

impl Groups {
    /// The lookup for `config`, checking the `teams-group:` members of `approvers`.
    pub fn new<'a>(
        config: &TeamsConfig,
        http: reqwest::Client,
        approvers: impl IntoIterator<Item = &'a String>,
    ) -> Groups {
        let mut ids: Vec<String> = approvers
            .into_iter()
            .filter_map(|m| m.strip_prefix(PREFIX))
            .map(str::to_owned)
            .collect();
        ids.sort();
        ids.dedup();
        let lookup = config.entra_groups.as_ref().and_then(|graph| {
            let token_url = match (&graph.token_url, &config.tenant_id) {
                (Some(url), _) => url.clone(),
                (None, Some(tenant)) => url::Url::parse(&format!(
                    "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token"
                ))
                .ok()?,
                (None, None) => {
                    tracing::warn!("chat.teams.entra_groups needs chat.teams.tenant_id (or a token_url); Entra groups are not looked up");
                    return None;
                }
            };
            Some(Lookup {
                http: http.clone(),
                base: graph.url.as_str().trim_end_matches('/').to_owned(),
                token: TokenSource::new(
                    http.clone(),
                    token_url,
                    &config.app_id,
                    config.app_password.clone(),
                    "https://graph.microsoft.com/.default",
                ),
            })
        });
        Groups { lookup, ids }
    }

    /// The `teams-group:<id>` groups among the configured ones that `aad_object_id` is in.
    pub async fn of(&self, aad_object_id: &str) -> Vec<String> {
        let Some(lookup) = &self.lookup else {
            return Vec::new();
        };
        if self.ids.is_empty() {
            return Vec::new();
        }
        let mut out = Vec::new();
        for chunk in self.ids.chunks(20) {
            match lookup.check(aad_object_id, chunk).await {
                Ok(found) => out.extend(
                    found
                        .into_iter()
                        .filter(|id| chunk.contains(id))
                        .map(|id| format!("{PREFIX}{id}")),
                ),
                Err(e) => {
                    tracing::warn!(user = %aad_object_id, error = %e, "Entra groups could not be looked up; the click counts without them");
                }
            }
        }
        out
    }
}

impl Lookup {
    async fn check(&self, user: &str, ids: &[String]) -> Result<Vec<String>, String> {
        let token = self.token.get().await.map_err(|e| e.message)?;
        let url = format!(
            "{}/v1.0/users/{}/checkMemberGroups",
            self.base,
            super::api::path_segment(user)
        );
        let response = self
            .http
            .post(&url)
            .bearer_auth(token.expose())
            .json(&json!({ "groupIds": ids }))
            .send()
            .await
            .map_err(|e| format!("Microsoft Graph unreachable: {}", e.without_url()))?;
        let status = response.status();
        if status == reqwest::StatusCode::UNAUTHORIZED {
            self.token.forget().await;
        }
        if !status.is_success() {
            return Err(format!(
                "Microsoft Graph checkMemberGroups answered {}",
                status.as_u16()
            ));
        }
        let matched: Matched = response.json().await.map_err(|e| {
            format!(
                "Microsoft Graph answered no group list: {}",
                e.without_url()
            )
        })?;
        Ok(matched.value)
    }
}
