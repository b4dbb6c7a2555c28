//! The Jira outbox deliverer (REST API v3): one issue per incident, a comment per synced event, the done
//! transition on resolution, and the incident report attached.
//!
//! Calls, all under `{base_url}/rest/api/3`:
//! - `GET /search/jql?jql=labels = "cordon-<incident>" AND reporter = currentUser()` and
//!   `POST /issue`: the create, after looking for the issue by the stored key and, on a retry, by
//!   its label among the issues Cordon reported;
//! - `POST /issue/{key}/comment` with the text in Atlassian Document Format and a `cordon` comment
//!   property naming the outbox entry; `GET /issue/{key}/comment?expand=properties` finds it again
//!   when an earlier try may have reached Jira;
//! - `GET /issue/{key}?fields=status`, `GET` and `POST /issue/{key}/transitions`;
//! - `POST /issue/{key}/attachments` (multipart, `X-Atlassian-Token: no-check`), after
//!   `GET /issue/{key}?fields=attachment` when an earlier try may have reached Jira.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{Value, json};

use super::payload::{MAX_TEXT, SYSTEM, adf, label, truncate};
use crate::outbox::{Deliver, DeliveryError, OutboxEntry};
use crate::store::Store;
use crate::tickets::{
    ConnectionError, NS_JIRA, NS_JIRA_ISSUE, TicketOp, incident_of, report_file, store_failed,
    tried_before,
};

/// Delivers `jira` outbox entries.
pub struct JiraDeliverer {
    conn: crate::tickets::Connection,
}

impl JiraDeliverer {
    pub fn new(
        config: &super::config::JiraConfig,
        http: reqwest::Client,
        store: Arc<dyn Store>,
    ) -> Result<JiraDeliverer, ConnectionError> {
        Ok(JiraDeliverer {
            conn: crate::tickets::Connection::new(
                SYSTEM,
                &config.base_url,
                "/rest/api/3",
                config.auth().map_err(ConnectionError::Credentials)?,
                http,
                store,
            ),
        })
    }

    /// The issue key of an incident.
    async fn issue(&self, incident: &str) -> Result<String, DeliveryError> {
        self.conn.ticket_field(NS_JIRA, incident, "key").await
    }

    async fn remember(
        &self,
        incident: &str,
        id: &str,
        key: &str,
        found: bool,
    ) -> Result<(), DeliveryError> {
        let url = format!("{}/browse/{key}", self.conn.base);
        self.conn
            .store
            .meta_put(
                NS_JIRA,
                incident,
                json!({ "key": key, "id": id, "url": url }),
            )
            .await
            .map_err(store_failed)?;
        self.conn
            .store
            .meta_put(NS_JIRA_ISSUE, id, Value::String(incident.to_owned()))
            .await
            .map_err(store_failed)?;
        self.conn
            .announce_link("jira", incident, key, &url, found)
            .await;
        Ok(())
    }

    async fn create(&self, entry: &OutboxEntry) -> Result<(), DeliveryError> {
        let incident = incident_of(entry)?;
        if self.conn.linked(NS_JIRA, incident).await? {
            return Ok(());
        }
        // A create that reached Jira before a crash or a lost answer left an issue with the label.
        // Only a retry looks for it, and only among issues Cordon's own account reported: a
        // labelled issue someone else filed is never taken for the incident's.
        if tried_before(&*self.conn.store, entry).await? {
            let jql = format!(
                "labels = \"{}\" AND reporter = currentUser()",
                label(incident)
            );
            let found = self
                .conn
                .json(
                    "search",
                    self.conn
                        .request(reqwest::Method::GET, "/search/jql")
                        .query(&[
                            ("jql", jql.as_str()),
                            ("fields", "summary"),
                            ("maxResults", "1"),
                        ]),
                )
                .await?;
            if let Some(issue) = found["issues"].as_array().and_then(|i| i.first())
                && let (Some(id), Some(key)) = (issue["id"].as_str(), issue["key"].as_str())
            {
                return self.remember(incident, id, key, true).await;
            }
        }
        let created = self
            .conn
            .json(
                "create issue",
                self.conn
                    .request(reqwest::Method::POST, "/issue")
                    .json(&json!({ "fields": entry.payload["fields"] })),
            )
            .await?;
        match (created["id"].as_str(), created["key"].as_str()) {
            (Some(id), Some(key)) => self.remember(incident, id, key, false).await,
            _ => Err(DeliveryError::retry(
                "Jira created an issue but did not say its key",
            )),
        }
    }

    async fn comment(&self, entry: &OutboxEntry) -> Result<(), DeliveryError> {
        let incident = incident_of(entry)?;
        let key = self.issue(incident).await?;
        if tried_before(&*self.conn.store, entry).await? {
            let comments = self
                .conn
                .json(
                    "list comments",
                    self.conn
                        .request(reqwest::Method::GET, &format!("/issue/{key}/comment"))
                        .query(&[
                            ("expand", "properties"),
                            ("orderBy", "-created"),
                            ("maxResults", "100"),
                        ]),
                )
                .await?;
            let posted = comments["comments"].as_array().is_some_and(|all| {
                all.iter().any(|c| {
                    c["properties"].as_array().is_some_and(|props| {
                        props.iter().any(|p| {
                            p["key"] == "cordon" && p["value"]["entry"] == entry.id.as_str()
                        })
                    })
                })
            });
            if posted {
                return Ok(());
            }
        }
        let text = entry.payload["text"].as_str().unwrap_or_default();
        self.conn
            .send(
                "add comment",
                self.conn
                    .request(reqwest::Method::POST, &format!("/issue/{key}/comment"))
                    .json(&json!({
                        "body": adf(&truncate(text, MAX_TEXT)),
                        "properties": [{ "key": "cordon", "value": { "entry": entry.id } }],
                    })),
            )
            .await?;
        Ok(())
    }

    async fn transition(&self, entry: &OutboxEntry) -> Result<(), DeliveryError> {
        let incident = incident_of(entry)?;
        let key = self.issue(incident).await?;
        let to_done = entry.payload["to"] == "done";
        let wanted = entry.payload["status"].as_str();
        let reaches = |status: &Value| -> bool {
            match wanted {
                Some(name) => status["name"]
                    .as_str()
                    .is_some_and(|n| n.eq_ignore_ascii_case(name)),
                None => to_done && status["statusCategory"]["key"] == "done",
            }
        };
        let issue = self
            .conn
            .json(
                "read status",
                self.conn
                    .request(reqwest::Method::GET, &format!("/issue/{key}"))
                    .query(&[("fields", "status")]),
            )
            .await?;
        if reaches(&issue["fields"]["status"]) {
            return Ok(());
        }
        let available = self
            .conn
            .json(
                "list transitions",
                self.conn
                    .request(reqwest::Method::GET, &format!("/issue/{key}/transitions")),
            )
            .await?;
        let transition = available["transitions"]
            .as_array()
            .and_then(|all| all.iter().find(|t| reaches(&t["to"])))
            .and_then(|t| t["id"].as_str().map(str::to_owned));
        let Some(id) = transition else {
            let target = wanted.unwrap_or("a Done status");
            return Err(DeliveryError::permanent(format!(
                "Jira offers no transition from `{}` to {target} on {key}",
                issue["fields"]["status"]["name"].as_str().unwrap_or("?")
            )));
        };
        self.conn
            .send(
                "transition",
                self.conn
                    .request(reqwest::Method::POST, &format!("/issue/{key}/transitions"))
                    .json(&json!({ "transition": { "id": id } })),
            )
            .await?;
        Ok(())
    }

    async fn attach(&self, entry: &OutboxEntry) -> Result<(), DeliveryError> {
        let incident = incident_of(entry)?;
        let key = self.issue(incident).await?;
        let filename = entry.payload["filename"]
            .as_str()
            .unwrap_or("cordon-incident-report.md")
            .to_owned();
        if tried_before(&*self.conn.store, entry).await? {
            let issue = self
                .conn
                .json(
                    "list attachments",
                    self.conn
                        .request(reqwest::Method::GET, &format!("/issue/{key}"))
                        .query(&[("fields", "attachment")]),
                )
                .await?;
            let there = issue["fields"]["attachment"]
                .as_array()
                .is_some_and(|all| all.iter().any(|a| a["filename"] == filename.as_str()));
            if there {
                return Ok(());
            }
        }
        let (body, content_type) = report_file(&*self.conn.store, incident, entry).await?;
        let boundary = format!("cordon-{}", uuid::Uuid::now_v7().simple());
        let mut multipart = Vec::with_capacity(body.len() + 256);
        multipart.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\nContent-Type: {content_type}\r\n\r\n"
            )
            .as_bytes(),
        );
        multipart.extend_from_slice(&body);
        multipart.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        self.conn
            .send(
                "attach report",
                self.conn
                    .request(reqwest::Method::POST, &format!("/issue/{key}/attachments"))
                    .header("X-Atlassian-Token", "no-check")
                    .header(
                        reqwest::header::CONTENT_TYPE,
                        format!("multipart/form-data; boundary={boundary}"),
                    )
                    .body(multipart),
            )
            .await?;
        Ok(())
    }
}

#[async_trait]
impl Deliver for JiraDeliverer {
    async fn deliver(&self, entry: &OutboxEntry) -> Result<(), DeliveryError> {
        match TicketOp::of(entry, SYSTEM)? {
            TicketOp::Create => self.create(entry).await,
            TicketOp::Comment => self.comment(entry).await,
            TicketOp::Transition => self.transition(entry).await,
            TicketOp::Attach => self.attach(entry).await,
        }
    }
}
