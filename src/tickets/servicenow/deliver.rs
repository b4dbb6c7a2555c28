//! The ServiceNow outbox deliverer (Table API on `incident`, Attachment API): one incident record per Cordon incident,
//! a work note per synced event, state and close code on resolution, the report attached.
//!
//! Calls, all under `{base_url}/api/now`:
//! - `GET /table/incident?sysparm_query=correlation_id=<incident>` and `POST /table/incident`
//!   (with `correlation_id` = the Cordon incident id, so a retry finds the record);
//! - `PATCH /table/incident/{sys_id}` with `work_notes`; each note ends with a `Cordon ref` line
//!   naming its outbox entry, which `GET /table/sys_journal_field` finds again when an earlier try
//!   may have reached the instance;
//! - `PATCH /table/incident/{sys_id}` with `state`, `close_code`, `close_notes`;
//! - `POST /attachment/file?table_name=incident&table_sys_id=...&file_name=...`, after
//!   `GET /attachment?sysparm_query=table_sys_id=...^file_name=...` when an earlier try may have
//!   reached the instance.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{Value, json};

use super::payload::{SYSTEM, marker};
use crate::outbox::{Deliver, DeliveryError, OutboxEntry};
use crate::store::Store;
use crate::tickets::{
    ConnectionError, NS_SERVICENOW, TicketOp, incident_of, report_file, store_failed, tried_before,
};

/// Delivers `servicenow` outbox entries.
pub struct ServiceNowDeliverer {
    conn: crate::tickets::Connection,
}

impl ServiceNowDeliverer {
    pub fn new(
        config: &super::config::ServiceNowConfig,
        http: reqwest::Client,
        store: Arc<dyn Store>,
    ) -> Result<ServiceNowDeliverer, ConnectionError> {
        Ok(ServiceNowDeliverer {
            conn: crate::tickets::Connection::new(
                SYSTEM,
                &config.base_url,
                "/api/now",
                config.auth().map_err(ConnectionError::Credentials)?,
                http,
                store,
            ),
        })
    }

    async fn record(&self, incident: &str) -> Result<String, DeliveryError> {
        self.conn
            .ticket_field(NS_SERVICENOW, incident, "sys_id")
            .await
    }

    async fn remember(
        &self,
        incident: &str,
        result: &Value,
        found: bool,
    ) -> Result<(), DeliveryError> {
        let (Some(sys_id), number) = (result["sys_id"].as_str(), result["number"].as_str()) else {
            return Err(DeliveryError::retry(
                "ServiceNow answered with no sys_id for the incident record",
            ));
        };
        let number = number.unwrap_or(sys_id);
        let url = format!(
            "{}/nav_to.do?uri=incident.do?sys_id={sys_id}",
            self.conn.base
        );
        self.conn
            .store
            .meta_put(
                NS_SERVICENOW,
                incident,
                json!({ "sys_id": sys_id, "number": number, "url": url }),
            )
            .await
            .map_err(store_failed)?;
        self.conn
            .announce_link("servicenow", incident, number, &url, found)
            .await;
        Ok(())
    }

    async fn create(&self, entry: &OutboxEntry) -> Result<(), DeliveryError> {
        let incident = incident_of(entry)?;
        if self.conn.linked(NS_SERVICENOW, incident).await? {
            return Ok(());
        }
        let query = format!("correlation_id={incident}");
        let found = self
            .conn
            .json(
                "find incident",
                self.conn
                    .request(reqwest::Method::GET, "/table/incident")
                    .query(&[
                        ("sysparm_query", query.as_str()),
                        ("sysparm_fields", "sys_id,number"),
                        ("sysparm_limit", "1"),
                    ]),
            )
            .await?;
        if let Some(record) = found["result"].as_array().and_then(|r| r.first()) {
            return self.remember(incident, record, true).await;
        }
        let created = self
            .conn
            .json(
                "create incident",
                self.conn
                    .request(reqwest::Method::POST, "/table/incident")
                    .json(&entry.payload["record"]),
            )
            .await?;
        self.remember(incident, &created["result"], false).await
    }

    async fn comment(&self, entry: &OutboxEntry) -> Result<(), DeliveryError> {
        let incident = incident_of(entry)?;
        let sys_id = self.record(incident).await?;
        let marker = marker(&entry.id);
        if tried_before(&*self.conn.store, entry).await? {
            let query = format!("element_id={sys_id}^element=work_notes^valueLIKE{marker}");
            let found = self
                .conn
                .json(
                    "find work note",
                    self.conn
                        .request(reqwest::Method::GET, "/table/sys_journal_field")
                        .query(&[
                            ("sysparm_query", query.as_str()),
                            ("sysparm_fields", "sys_id"),
                            ("sysparm_limit", "1"),
                        ]),
                )
                .await?;
            if found["result"].as_array().is_some_and(|r| !r.is_empty()) {
                return Ok(());
            }
        }
        let text = entry.payload["text"].as_str().unwrap_or_default();
        self.conn
            .json(
                "add work note",
                self.conn
                    .request(reqwest::Method::PATCH, &format!("/table/incident/{sys_id}"))
                    .json(&json!({ "work_notes": format!("{text}\n\n{marker}") })),
            )
            .await?;
        Ok(())
    }

    async fn transition(&self, entry: &OutboxEntry) -> Result<(), DeliveryError> {
        let incident = incident_of(entry)?;
        let sys_id = self.record(incident).await?;
        let p = &entry.payload;
        let mut fields = json!({ "state": p["state"].as_str().unwrap_or(if p["to"] == "done" { "6" } else { "2" }) });
        if p["to"] == "done" {
            fields["close_code"] = p["close_code"].clone();
            fields["close_notes"] = p["close_notes"].clone();
        }
        self.conn
            .json(
                "set state",
                self.conn
                    .request(reqwest::Method::PATCH, &format!("/table/incident/{sys_id}"))
                    .json(&fields),
            )
            .await?;
        Ok(())
    }

    async fn attach(&self, entry: &OutboxEntry) -> Result<(), DeliveryError> {
        let incident = incident_of(entry)?;
        let sys_id = self.record(incident).await?;
        let filename = entry.payload["filename"]
            .as_str()
            .unwrap_or("cordon-incident-report.md")
            .to_owned();
        if tried_before(&*self.conn.store, entry).await? {
            let query = format!("table_sys_id={sys_id}^file_name={filename}");
            let found = self
                .conn
                .json(
                    "find attachment",
                    self.conn
                        .request(reqwest::Method::GET, "/attachment")
                        .query(&[("sysparm_query", query.as_str()), ("sysparm_limit", "1")]),
                )
                .await?;
            if found["result"].as_array().is_some_and(|r| !r.is_empty()) {
                return Ok(());
            }
        }
        let (body, content_type) = report_file(&*self.conn.store, incident, entry).await?;
        self.conn
            .json(
                "attach report",
                self.conn
                    .request(reqwest::Method::POST, "/attachment/file")
                    .query(&[
                        ("table_name", "incident"),
                        ("table_sys_id", sys_id.as_str()),
                        ("file_name", filename.as_str()),
                    ])
                    .header(reqwest::header::CONTENT_TYPE, content_type)
                    .body(body),
            )
            .await?;
        Ok(())
    }
}

#[async_trait]
impl Deliver for ServiceNowDeliverer {
    async fn deliver(&self, entry: &OutboxEntry) -> Result<(), DeliveryError> {
        match TicketOp::of(entry, SYSTEM)? {
            TicketOp::Create => self.create(entry).await,
            TicketOp::Comment => self.comment(entry).await,
            TicketOp::Transition => self.transition(entry).await,
            TicketOp::Attach => self.attach(entry).await,
        }
    }
}
