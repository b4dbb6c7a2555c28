//! Entry points for the fuzz targets in `fuzz/` (docs/fuzzing.md): each takes untrusted bytes the
//! way the server or the loader does, and goes through the same parsing functions as the real
//! path, stopping before anything that needs a store, an engine or the network. Not an API.
//!
//! Every function returns what a user would be shown (alerts or an error message); the targets
//! only check that nothing panics, hangs or runs out of memory, and the few invariants stated here.

use std::path::Path;
use std::sync::OnceLock;

use crate::actions::{SpecCatalog, builtin_specs};
use crate::intake::formats::SourceKind;
use crate::intake::sns::SnsEnvelope;
use crate::script::Scripts;

/// Normalizes `body` as `source` does at `POST /v1/alerts/{source}`: the number of alerts, or the
/// error the sender would get.
pub fn intake(source: SourceKind, body: &[u8]) -> Result<usize, String> {
    let alerts = source.normalize(body).map_err(|e| e.message)?;
    // A normalizer's success always carries at least one alert, each with an id.
    assert!(!alerts.is_empty(), "{source}: Ok with no alerts");
    for alert in &alerts {
        assert!(!alert.id.is_empty(), "{source}: an alert without an id");
    }
    Ok(alerts.len())
}

/// Reads `body` as an SNS delivery to an AWS source: the probe the router uses, the envelope, the
/// string to sign, the offline part of the signature check (version, base64, certificate URL
/// trust), and for a notification the wrapped payload through `source`'s normalizer.
pub fn sns(source: SourceKind, body: &[u8]) -> Result<usize, String> {
    let _ = SnsEnvelope::looks_like_sns(&axum::http::HeaderMap::new(), body);
    let envelope = SnsEnvelope::parse(body).map_err(|e| e.to_string())?;
    let signed = envelope.string_to_sign();
    assert!(signed.contains(&envelope.message), "the message is signed");
    envelope.signature_parts().map_err(|e| e.to_string())?;
    intake(source, envelope.message.as_bytes())
}

/// The script engine and catalog playbooks are checked against, made once.
fn playbook_context() -> &'static (Scripts, SpecCatalog, Vec<String>) {
    static CONTEXT: OnceLock<(Scripts, SpecCatalog, Vec<String>)> = OnceLock::new();
    CONTEXT.get_or_init(|| {
        (
            Scripts::default(),
            SpecCatalog::new(builtin_specs()),
            vec!["soc-l1".to_owned(), "soc-l2".to_owned()],
        )
    })
}

/// Loads playbook `text` as `cordon check` does: the playbook id, or the diagnostics.
pub fn playbook(text: &str) -> Result<String, Vec<String>> {
    let (scripts, catalog, groups) = playbook_context();
    crate::playbook::load::parse(text, Path::new("fuzz.yaml"), scripts, catalog, Some(groups))
        .map(|compiled| compiled.id().to_owned())
        .map_err(|found| {
            found
                .iter()
                .map(|d| format!("{}:{} {}", d.line, d.column, d.message))
                .collect()
        })
}

/// Loads integration manifest `text` (of a folder `fuzz` that holds no script).
pub fn manifest(text: &str) -> Result<usize, Vec<String>> {
    let folder = Path::new("/nonexistent/cordon-fuzz/fuzz");
    crate::integrations::manifest::Manifest::parse(text, folder, &folder.join("manifest.yaml"))
        .map(|m| m.specs().len())
        .map_err(|found| found.iter().map(|d| d.message.clone()).collect())
}

/// Loads config `text` as `cordon serve --config` does (secrets `${VAR}` expanded from the
/// environment).
pub fn config(text: &str) -> Result<(), Vec<String>> {
    crate::config::parse(text, Path::new("fuzz.yaml"))
        .map(|_| ())
        .map_err(|found| found.0.iter().map(|d| d.message.clone()).collect())
}

/// A chat platform's request body, once its signature or token has been checked.
#[derive(Debug, Clone, Copy)]
pub enum Chat {
    /// `POST /v1/chat/slack/interactions` (a form with `payload`).
    SlackInteraction,
    /// `POST /v1/chat/slack/commands` (the slash command form).
    SlackCommand,
    /// `POST /v1/chat/teams/messages` (a Bot Framework activity).
    Teams,
    /// `POST /v1/chat/discord/interactions` (an interaction).
    Discord,
}

/// Reads a chat request body as its endpoint does before deciding anything.
pub fn chat(platform: Chat, body: &[u8]) -> Result<(), String> {
    match platform {
        Chat::SlackInteraction | Chat::SlackCommand => {
            // The endpoint refuses a body that is not UTF-8 as a bad signature.
            let text = std::str::from_utf8(body).map_err(|e| e.to_string())?;
            let interaction = matches!(platform, Chat::SlackInteraction);
            crate::chat::slack::read_offline(interaction, text)
                .map(|_| ())
                .map_err(|e| format!("{e:?}"))
        }
        Chat::Teams => crate::chat::teams::inbound::read_offline(body)
            .map(|_| ())
            .map_err(|e| e.message),
        Chat::Discord => crate::chat::discord::inbound::read_offline(body).map_err(|e| e.message),
    }
}

/// Reads a ticket webhook body (Jira when `jira`, else ServiceNow) as its handler does before it
/// looks anything up: the words of the `/cordon` command it carries, if any.
pub fn ticket(jira: bool, body: &[u8]) -> Result<Vec<String>, String> {
    crate::tickets::webhook::read_offline(jira, body).map_err(|e| e.message)
}

/// Checks a ticket webhook's credential as the handlers do, with the request's `query`, one header
/// `name: value`, and `body`; `hmac` picks the HMAC scheme over the shared token.
pub fn ticket_auth(hmac: bool, query: &str, header: (&str, &str), body: &[u8]) -> bool {
    use crate::config::Secret;
    use crate::tickets::config::WebhookAuth;
    let auth = if hmac {
        WebhookAuth::Hmac {
            secret: Secret::new("fuzz-secret"),
            max_age: std::time::Duration::from_secs(3600),
        }
    } else {
        WebhookAuth::Token(Secret::new("fuzz-token"))
    };
    let mut headers = axum::http::HeaderMap::new();
    if let (Ok(name), Ok(value)) = (
        axum::http::HeaderName::from_bytes(header.0.as_bytes()),
        axum::http::HeaderValue::from_str(header.1),
    ) {
        headers.insert(name, value);
    }
    crate::tickets::webhook::authenticate(&auth, &headers, Some(query), body, "x-hub-signature")
        .is_ok()
}
