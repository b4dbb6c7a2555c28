//! A fourth chat platform that exists only in tests, to show what adding a platform takes: this
//! folder and one line in the list in `chat/mod.rs`. Nothing else in Cordon names it, yet it gets
//! cards and thread notes from the outbox, its routes are served, and its users have the same
//! `/cordon` commands and approval rules as Slack's, Teams' and Discord's.
//!
//! Its "API" is an in-memory list of what was delivered, readable at `GET /v1/chat/fake/delivered`;
//! its callbacks are verified with a shared token (`X-Fake-Token`), standing in for a platform's
//! signature.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::commands::{Command, Commands, PlainText};
use super::platform::{ChatDeps, ChatPlatform, PlatformConfig, PlatformError};
use super::{ChatOp, ChatUser, click};
use crate::engine::Engine;
use crate::http::ApiError;
use crate::outbox::{Deliver, DeliveryError, OutboxEntry};

/// The `chat.fake` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// What callbacks must carry in `X-Fake-Token`.
    pub token: String,
}

/// The platform, started.
pub struct Fake {
    token: String,
    delivered: Mutex<Vec<Value>>,
    commands: Arc<Commands>,
    engine: std::sync::Weak<Engine>,
}

#[async_trait]
impl PlatformConfig for Config {
    fn secrets(&self) -> Vec<&crate::config::Secret> {
        Vec::new()
    }

    async fn start(&self, deps: &ChatDeps) -> Result<Arc<dyn ChatPlatform>, PlatformError> {
        Ok(Arc::new(Fake {
            token: self.token.clone(),
            delivered: Mutex::new(Vec::new()),
            commands: deps.commands.clone(),
            engine: deps.engine.clone(),
        }))
    }
}

impl ChatPlatform for Fake {
    fn name(&self) -> &'static str {
        "fake"
    }

    fn deliverer(self: Arc<Self>) -> Arc<dyn Deliver> {
        self
    }

    fn routes(self: Arc<Self>) -> Router {
        Router::new()
            .route("/v1/chat/fake/messages", post(message))
            .route("/v1/chat/fake/delivered", get(delivered))
            .with_state(self)
    }
}

#[async_trait]
impl Deliver for Fake {
    async fn deliver(&self, entry: &OutboxEntry) -> Result<(), DeliveryError> {
        if ChatOp::read(entry)?.is_none() {
            return Err(DeliveryError::permanent(format!(
                "the fake platform delivers no `{}` entries",
                entry.kind
            )));
        }
        if let Ok(mut delivered) = self.delivered.lock() {
            delivered
                .push(json!({ "kind": entry.kind, "key": entry.key, "payload": entry.payload }));
        }
        Ok(())
    }
}

/// A callback: a message to the bot, or a click on a card's button.
#[derive(Deserialize)]
struct Callback {
    user: String,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    click: Option<Click>,
}

#[derive(Deserialize)]
struct Click {
    run: String,
    step: String,
    approve: bool,
}

impl Fake {
    fn verify(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        match headers.get("x-fake-token").and_then(|v| v.to_str().ok()) {
            Some(token) if token == self.token => Ok(()),
            _ => Err(ApiError::unauthorized(
                "bad_token",
                "X-Fake-Token is missing or wrong",
            )),
        }
    }
}

async fn message(
    State(fake): State<Arc<Fake>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    fake.verify(&headers)?;
    let callback: Callback = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request("bad_callback", e.to_string()))?;
    let user = ChatUser {
        identity: format!("fake:{}", callback.user),
        groups: Vec::new(),
        name: callback.user,
    };
    if let Some(c) = callback.click {
        let engine = fake.engine.upgrade().ok_or_else(ApiError::unavailable)?;
        let reply = click(&engine, "fake", &user, &c.run, &c.step, c.approve).await;
        return Ok(Json(
            json!({ "text": reply.text, "accepted": reply.accepted }),
        ));
    }
    let answer = match Command::from_words(callback.text.as_deref().unwrap_or(""), &PlainText) {
        Ok(command) => {
            fake.commands
                .answer("fake", &user, command, &PlainText)
                .await
        }
        Err(usage) => usage.into(),
    };
    Ok(Json(
        json!({ "text": answer.text, "announce": answer.announce }),
    ))
}

async fn delivered(
    State(fake): State<Arc<Fake>>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    fake.verify(&headers)?;
    let delivered = fake.delivered.lock().map(|d| d.clone()).unwrap_or_default();
    Ok(Json(Value::Array(delivered)))
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::app::Server;
    use crate::chat::{POST_CARD, UPDATE_CARD};

    const PLAYBOOK: &str = r#"
id: fake-contain
name: Contain, once approved in the fake platform
on:
  source: generic
steps:
  - id: approve
    approval:
      prompt: "Isolate it?"
      approvers: soc
      quorum: 1
      timeout: 30m
      on_timeout: reject
  - id: isolate
    if: steps.approve.approved
    script: |
      #{ isolated: alert.resource.id }
"#;

    struct Running {
        base: String,
        http: reqwest::Client,
        _dir: tempfile::TempDir,
        stop: Option<tokio::sync::oneshot::Sender<()>>,
        task: Option<tokio::task::JoinHandle<()>>,
    }

    impl Running {
        async fn start() -> Running {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("contain.yaml"), PLAYBOOK).unwrap();
            let text = format!(
                "server:\n  listen: 127.0.0.1:0\n  admin_token: t0ken\n  shutdown_grace: 5s\n\
                 store:\n  path: {dir}/store\n\
                 sources:\n  generic:\n    auth:\n      bearer:\n        token: in\n\
                 playbooks:\n  paths: [{dir}]\n\
                 people:\n  alice:\n    roles: [responder]\n    identities: [\"fake:alice\"]\n\
                 \x20 mallory:\n    roles: [responder]\n    identities: [\"fake:mallory\"]\n\
                 approvers:\n  soc: [alice]\n\
                 chat:\n  triggers: soc\n  fake:\n    token: s3cret\n",
                dir = dir.path().display()
            );
            let config = crate::config::parse(&text, std::path::Path::new("fake.yaml"))
                .unwrap_or_else(|d| panic!("{d}"));
            assert_eq!(config.chat.platforms(), vec!["fake"]);
            let server = Server::bind(config).await.expect("binds");
            let base = format!("http://{}", server.local_addr());
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let task = tokio::spawn(async move {
                server
                    .run(async {
                        let _ = stopped.await;
                    })
                    .await
                    .expect("clean shutdown");
            });
            Running {
                base,
                http: reqwest::Client::new(),
                _dir: dir,
                stop: Some(stop),
                task: Some(task),
            }
        }

        async fn say(&self, body: Value) -> Value {
            let response = self
                .http
                .post(format!("{}/v1/chat/fake/messages", self.base))
                .header("x-fake-token", "s3cret")
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
            response.json().await.unwrap()
        }

        async fn delivered(&self) -> Vec<Value> {
            let response = self
                .http
                .get(format!("{}/v1/chat/fake/delivered", self.base))
                .header("x-fake-token", "s3cret")
                .send()
                .await
                .unwrap();
            response.json::<Vec<Value>>().await.unwrap()
        }

        async fn wait_for(&self, kind: &str) -> Value {
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                if let Some(entry) = self
                    .delivered()
                    .await
                    .into_iter()
                    .find(|e| e["kind"] == kind)
                {
                    return entry;
                }
                assert!(
                    Instant::now() < deadline,
                    "no `{kind}` reached the fake platform"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }

        async fn stop(mut self) {
            let _ = self.stop.take().unwrap().send(());
            self.task.take().unwrap().await.unwrap();
        }
    }

    /// The fourth platform was added by its folder and one registration line: it is configured,
    /// gets the incident's card through the outbox, its click decides the approval under the
    /// shared rules, and its users have the shared commands.
    #[tokio::test]
    async fn a_platform_added_by_one_folder_and_one_line_gets_cards_clicks_and_commands() {
        let server = Running::start().await;
        // A stranger's callback is refused before anything is read.
        let refused = server
            .http
            .post(format!("{}/v1/chat/fake/messages", server.base))
            .header("x-fake-token", "guess")
            .json(&json!({ "user": "alice", "text": "status" }))
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), 401);
        // Other platforms' routes say they are not configured.
        let slack = server
            .http
            .post(format!("{}/v1/chat/slack/commands", server.base))
            .send()
            .await
            .unwrap();
        assert_eq!(slack.status(), 404);
        assert_eq!(
            slack.json::<Value>().await.unwrap()["error"],
            "slack_not_configured"
        );

        let alert = json!({ "title": "Miner on i-0abc", "kind": "test.miner", "severity": 8, "resource": { "kind": "host", "id": "i-0abc" } });
        let sent = server
            .http
            .post(format!("{}/v1/alerts/generic", server.base))
            .bearer_auth("in")
            .json(&alert)
            .send()
            .await
            .unwrap();
        assert!(sent.status().is_success(), "{}", sent.status());
        let card = server.wait_for(POST_CARD).await;
        assert_eq!(card["payload"]["prompt"], "Isolate it?");
        assert_eq!(card["payload"]["group"], "soc");
        let (run, step) = (
            card["payload"]["run_id"].as_str().unwrap().to_owned(),
            card["payload"]["step"].as_str().unwrap().to_owned(),
        );

        let status = server
            .say(json!({ "user": "alice", "text": "status" }))
            .await;
        let text = status["text"].as_str().unwrap();
        assert!(
            text.starts_with("1 open incident, 1 approval waiting."),
            "{text}"
        );
        assert!(
            text.contains(&format!("run `{run}` step `approve`")),
            "{text}"
        );

        // Someone outside the group: refused by the shared rules.
        let mallory = server
            .say(json!({ "user": "mallory", "click": { "run": run, "step": step, "approve": true } }))
            .await;
        assert_eq!(mallory["accepted"], false);
        assert!(
            mallory["text"].as_str().unwrap().starts_with("Not allowed"),
            "{mallory}"
        );
        let trigger = server
            .say(json!({ "user": "mallory", "text": "run fake-contain x=1" }))
            .await;
        assert_eq!(
            trigger["text"],
            "Not allowed: you are not in the trigger group `soc`."
        );

        let alice = server
            .say(json!({ "user": "alice", "click": { "run": run, "step": step, "approve": true } }))
            .await;
        assert_eq!(alice["accepted"], true, "{alice}");
        let updated = server.wait_for(UPDATE_CARD).await;
        assert_eq!(updated["payload"]["outcome"]["approved"], true);
        let runs = server.say(json!({ "user": "alice", "text": "runs" })).await;
        assert!(
            runs["text"]
                .as_str()
                .unwrap()
                .contains(&format!("`{run}` fake-contain")),
            "{runs}"
        );
        server.stop().await;
    }
}
