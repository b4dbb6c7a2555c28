//! One behavioural suite for every `Store` backend: the same test functions run against a sled
//! store in a temporary folder and a PostgreSQL store in a fresh schema of the database
//! `CORDON_TEST_DATABASE_URL` names (scripts/test creates it). Without that variable the
//! PostgreSQL half fails, saying so: nothing skips.
//!
//! Then `cordon migrate`, as a process: a sled store copied into PostgreSQL reads back the same,
//! keeps its audit chain, and carries on (repeats, concurrency keys) where it stopped.

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use cordon::alert::{Actor, Alert, Incident, IncidentStatus, Severity};
use cordon::audit::{GENESIS_HASH, NewEntry, kind};
use cordon::config::{GroupingConfig, HumanDuration, StoreConfig, StoreKind};
use cordon::engine::run::{
    ApprovalState, Decision, Run, RunStatus, StepState, StepStatus, Trigger,
};
use cordon::outbox::OutboxEntry;
use cordon::store::{
    AlertQuery, IncidentQuery, PostgresStore, RunQuery, SledStore, Store, StoreError,
};
use serde_json::{Value, json};
use support::pg;
use tempfile::TempDir;

// ---------------------------------------------------------------------------------------------
// The two backends

fn grouping() -> GroupingConfig {
    GroupingConfig {
        dedup_window: HumanDuration::secs(3600),
        incident_window: HumanDuration::secs(4 * 3600),
        ..GroupingConfig::default()
    }
}

enum Where {
    Sled(TempDir),
    Postgres { schema: String, url: String },
}

/// A store under test, and what it takes to open it again or reach under it.
struct Backend {
    /// `None` only while it is opened again.
    open: Option<Arc<dyn Store>>,
    at: Where,
}

impl Backend {
    fn store(&self) -> &dyn Store {
        self.open.as_deref().expect("the store is open")
    }

    fn handle(&self) -> Arc<dyn Store> {
        self.open.clone().expect("the store is open")
    }

    /// Closes the store and lets go of it (sled's lock goes with the last handle).
    async fn close(&mut self) {
        if let Some(store) = self.open.take() {
            store.close().await.expect("close");
        }
    }

    async fn sled() -> Backend {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open_sled(dir.path()).await;
        Backend {
            open: Some(store),
            at: Where::Sled(dir),
        }
    }

    async fn postgres() -> Backend {
        let (schema, url) = pg::named_schema().await;
        let store = open_postgres(&url).await;
        Backend {
            open: Some(store),
            at: Where::Postgres { schema, url },
        }
    }

    /// The store as another process would open it: for PostgreSQL a second store with its own
    /// pool on the same database; sled admits one process, so its one store.
    async fn another_process(&self) -> Arc<dyn Store> {
        match &self.at {
            Where::Sled(_) => self.handle(),
            Where::Postgres { url, .. } => open_postgres(url).await,
        }
    }

    /// Closes the store and opens it again, as a restart does.
    async fn reopen(&mut self) {
        self.close().await;
        self.open = Some(match &self.at {
            Where::Sled(dir) => open_sled(dir.path()).await,
            Where::Postgres { url, .. } => open_postgres(url).await,
        });
    }

    /// Edits the stored audit entry `seq` under the store, replacing `from` by `to` in its text.
    async fn tamper_audit(&mut self, seq: u64, from: &str, to: &str) {
        match &self.at {
            Where::Sled(_) => {
                self.close().await;
                let Where::Sled(dir) = &self.at else {
                    unreachable!()
                };
                let path = dir.path().join("store");
                {
                    let db = open_sled_db(&path).await;
                    let tree = db.open_tree("audit").expect("audit tree");
                    let key = seq.to_be_bytes();
                    let stored = tree.get(key).expect("get").expect("entry");
                    let text = String::from_utf8(stored.to_vec()).expect("utf8");
                    assert!(text.contains(from), "{text}");
                    tree.insert(key, text.replace(from, to).as_bytes())
                        .expect("insert");
                    db.flush().expect("flush");
                }
                self.open = Some(open_sled(dir.path()).await);
            }
            Where::Postgres { url, .. } => {
                let changed = pg::connect(url)
                    .await
                    .execute(
                        "UPDATE audit SET entry = replace(entry, $1, $2) WHERE seq = $3",
                        &[&from, &to, &(seq as i64)],
                    )
                    .await
                    .expect("update");
                assert_eq!(changed, 1);
            }
        }
    }

    async fn finish(self) {
        if let Some(store) = &self.open {
            let _ = store.close().await;
        }
        if let Where::Postgres { schema, .. } = &self.at {
            pg::drop_schema(schema).await;
        }
    }
}

async fn open_sled(dir: &Path) -> Arc<dyn Store> {
    let config = StoreConfig {
        path: dir.join("store"),
        ..StoreConfig::default()
    };
    // sled lets go of its file lock a moment after the last handle is dropped.
    for _ in 0..200 {
        match SledStore::open(&config, &grouping()) {
            Ok(store) => return Arc::new(store),
            Err(StoreError::Locked(_)) => tokio::time::sleep(Duration::from_millis(10)).await,
            Err(e) => panic!("open sled: {e}"),
        }
    }
    panic!("the sled store stayed locked")
}

async fn open_sled_db(path: &Path) -> sled::Db {
    for _ in 0..200 {
        if let Ok(db) = sled::open(path) {
            return db;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the sled database stayed locked")
}

async fn open_postgres(url: &str) -> Arc<dyn Store> {
    let config = StoreConfig {
        kind: StoreKind::Postgres,
        url: Some(cordon::config::Secret::new(url)),
        pool_size: 4,
        ..StoreConfig::default()
    };
    let metrics = Arc::new(cordon::telemetry::Metrics::new());
    cordon::store::open(&config, &grouping(), metrics)
        .await
        .unwrap_or_else(|e| panic!("open postgres: {e}"))
}

/// Each test function once per backend: `sled::<name>` and `postgres::<name>`.
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod sled_backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let mut backend = super::Backend::sled().await;
                    super::$name(&mut backend).await;
                    backend.finish().await;
                }
            )*
        }
        mod postgres_backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let mut backend = super::Backend::postgres().await;
                    super::$name(&mut backend).await;
                    backend.finish().await;
                }
            )*
        }
    };
}

conformance!(
    repeats_inside_the_dedup_window_count_on_one_alert,
    a_repeat_after_the_dedup_window_is_a_new_alert_in_the_same_incident,
    alerts_about_one_entity_group_into_one_incident,
    a_new_incident_after_the_incident_window_or_once_resolved,
    a_batch_is_placed_in_order,
    concurrent_ingest_from_two_processes_keeps_one_alert_and_one_incident,
    alerts_and_incidents_list_newest_first_with_filters_and_limits,
    a_held_concurrency_key_answers_the_active_run,
    an_alert_starts_each_playbook_once,
    saved_runs_keep_their_steps_and_approvals_and_resume_until_finished,
    runs_list_newest_first_with_filters_and_limits,
    alerts_are_pending_until_matched,
    incident_values_evidence_and_status,
    an_update_of_an_unknown_incident_is_refused_alone,
    outbox_keeps_push_order_and_delivery_state,
    meta_values_by_namespace,
    blast_radius_slots_fill_their_window_survive_a_restart_and_are_shared,
    a_key_is_remembered_once_until_its_time_across_processes_and_restarts,
    the_audit_chain_appends_verifies_and_lists,
    a_tampered_audit_entry_is_reported,
    one_audit_entry_is_read_by_its_sequence_number,
    everything_survives_a_restart,
    a_closed_store_refuses_work,
);

// ---------------------------------------------------------------------------------------------
// Building blocks

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 3, 1, 12, 0, 0).unwrap()
}

fn minutes(n: i64) -> TimeDelta {
    TimeDelta::minutes(n)
}

/// An alert from `source` of `kind` about EC2 instance `resource` (none: about nothing), with
/// its dedup key from its fingerprint.
fn alert(source: &str, kind: &str, resource: Option<&str>, severity: u8) -> Alert {
    let raw = serde_json::value::RawValue::from_string(format!(
        r#"{{"detail": {{"type": "{kind}"}},  "kept": "as sent"}}"#
    ))
    .unwrap();
    let mut alert = Alert::new(source, kind, raw);
    alert.received_at = t0();
    alert.observed_at = t0();
    alert.severity = Severity::new(severity, severity.to_string());
    if let Some(id) = resource {
        alert.resource.kind = Some("aws.ec2.instance".into());
        alert.resource.id = Some(id.into());
    }
    alert.finish()
}

/// An identity alert about `user`.
fn identity_alert(kind: &str, user: &str) -> Alert {
    let raw = serde_json::value::RawValue::from_string("{}".into()).unwrap();
    let mut alert = Alert::new("aws.guardduty", kind, raw);
    alert.received_at = t0();
    alert.resource.kind = Some("aws.iam.user".into());
    alert.actor = Some(Actor {
        kind: Some("aws.iam.user".into()),
        id: Some(user.into()),
        ..Actor::default()
    });
    alert.finish()
}

/// Ingests `alert`, received at `now` (as intake stamps it).
async fn ingest_one(
    store: &dyn Store,
    mut alert: Alert,
    now: DateTime<Utc>,
) -> cordon::store::Accepted {
    alert.received_at = now;
    let mut accepted = store.ingest(vec![alert], now).await.expect("ingest");
    assert_eq!(accepted.len(), 1);
    accepted.remove(0)
}

fn run(playbook: &str, key: &str, alert: Option<&str>, incident: Option<&str>) -> Run {
    Run::new(
        cordon::alert::new_id(),
        playbook,
        Trigger {
            kind: "alert".into(),
            by: None,
            person: None,
        },
        incident.map(str::to_owned),
        alert.map(str::to_owned),
        key.to_owned(),
        json!({ "why": "test" }),
        false,
        t0(),
    )
}

async fn incident(store: &dyn Store, id: &str) -> Incident {
    store.incident(id).await.expect("incident").expect("exists")
}

fn ids<T>(items: &[T], id: impl Fn(&T) -> &str) -> Vec<String> {
    items.iter().map(|i| id(i).to_owned()).collect()
}

// ---------------------------------------------------------------------------------------------
// Ingest: dedup and grouping

async fn repeats_inside_the_dedup_window_count_on_one_alert(b: &mut Backend) {
    let store = b.store();
    let first = alert("aws.guardduty", "Recon:EC2/PortProbe", Some("i-1"), 5);
    let raw = first.raw.get().to_owned();
    let opened = ingest_one(store, first.clone(), t0()).await;
    assert!(!opened.duplicate && opened.new_incident);
    assert_eq!(opened.repeat_count, 1);

    for (n, after) in [(2, 10), (3, 50)] {
        let mut again = alert("aws.guardduty", "Recon:EC2/PortProbe", Some("i-1"), 5);
        again.dedup_key = first.dedup_key.clone();
        let repeat = ingest_one(store, again, t0() + minutes(after)).await;
        assert!(repeat.duplicate, "{repeat:?}");
        assert!(!repeat.new_incident);
        assert_eq!(repeat.alert_id, opened.alert_id);
        assert_eq!(repeat.incident_id, opened.incident_id);
        assert_eq!(repeat.repeat_count, n);
    }

    let stored = store
        .alert(&opened.alert_id)
        .await
        .unwrap()
        .expect("stored");
    assert_eq!(stored.repeat_count, 3);
    assert_eq!(stored.last_seen_at, Some(t0() + minutes(50)));
    assert_eq!(stored.incident_id, opened.incident_id);
    assert_eq!(stored.raw.get(), raw, "the payload is kept byte for byte");
    let inc = incident(store, &opened.incident_id).await;
    assert_eq!((inc.alert_count, inc.event_count), (1, 3));
    assert_eq!(inc.updated_at, t0() + minutes(50));
    assert_eq!(store.alerts(&AlertQuery::default()).await.unwrap().len(), 1);
    assert!(store.alert("no-such-alert").await.unwrap().is_none());
}

async fn a_repeat_after_the_dedup_window_is_a_new_alert_in_the_same_incident(b: &mut Backend) {
    let store = b.store();
    let first = alert("falco", "Terminal shell", Some("i-2"), 4);
    let opened = ingest_one(store, first.clone(), t0()).await;
    let mut later = alert("falco", "Terminal shell", Some("i-2"), 4);
    later.dedup_key = first.dedup_key.clone();
    let next = ingest_one(store, later.clone(), t0() + minutes(61)).await;
    assert!(!next.duplicate);
    assert_eq!(next.alert_id, later.id);
    assert_eq!(next.repeat_count, 1);
    assert!(
        !next.new_incident,
        "the same entity inside the incident window"
    );
    assert_eq!(next.incident_id, opened.incident_id);

    // The dedup key now points at the newer alert: a repeat of it counts there.
    let mut third = alert("falco", "Terminal shell", Some("i-2"), 4);
    third.dedup_key = first.dedup_key.clone();
    let repeat = ingest_one(store, third, t0() + minutes(70)).await;
    assert!(repeat.duplicate);
    assert_eq!(repeat.alert_id, later.id);
    let inc = incident(store, &opened.incident_id).await;
    assert_eq!((inc.alert_count, inc.event_count), (2, 3));
}

async fn alerts_about_one_entity_group_into_one_incident(b: &mut Backend) {
    let store = b.store();
    let a = ingest_one(store, alert("aws.guardduty", "A", Some("i-3"), 3), t0()).await;
    let b2 = ingest_one(
        store,
        alert("falco", "B", Some("i-3"), 8),
        t0() + minutes(1),
    )
    .await;
    let other = ingest_one(
        store,
        alert("falco", "B", Some("i-4"), 2),
        t0() + minutes(2),
    )
    .await;
    let loose1 = ingest_one(store, alert("generic", "C", None, 1), t0() + minutes(3)).await;
    let loose2 = ingest_one(store, alert("generic", "D", None, 1), t0() + minutes(4)).await;
    let user1 = ingest_one(store, identity_alert("E", "alice"), t0() + minutes(5)).await;
    let user2 = ingest_one(store, identity_alert("F", "alice"), t0() + minutes(6)).await;

    assert!(a.new_incident && !b2.new_incident);
    assert_eq!(a.incident_id, b2.incident_id);
    assert!(other.new_incident && other.incident_id != a.incident_id);
    assert!(loose1.new_incident && loose2.new_incident);
    assert_ne!(
        loose1.incident_id, loose2.incident_id,
        "no entity: an incident each"
    );
    assert!(user1.new_incident && !user2.new_incident);
    assert_eq!(user1.incident_id, user2.incident_id);

    let inc = incident(store, &a.incident_id).await;
    assert_eq!(inc.title, "A");
    assert_eq!(inc.severity, 8, "the highest of its alerts");
    assert_eq!(inc.sources, ["aws.guardduty", "falco"]);
    assert_eq!((inc.alert_count, inc.event_count), (2, 2));
    assert_eq!(inc.entity.as_deref(), Some("resource:aws.ec2.instance:i-3"));
    assert_eq!(inc.status, IncidentStatus::Open);
    assert_eq!(inc.created_at, t0());
    assert_eq!(inc.updated_at, t0() + minutes(1));
    let members = store
        .alerts(&AlertQuery {
            incident_id: Some(a.incident_id.clone()),
            ..AlertQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(
        ids(&members, |a| &a.id),
        [b2.alert_id.clone(), a.alert_id.clone()]
    );
    assert!(members.iter().all(|m| m.incident_id == a.incident_id));
}

async fn a_new_incident_after_the_incident_window_or_once_resolved(b: &mut Backend) {
    let store = b.store();
    let first = ingest_one(store, alert("falco", "A", Some("i-5"), 3), t0()).await;
    let inside = ingest_one(
        store,
        alert("falco", "B", Some("i-5"), 3),
        t0() + minutes(230),
    )
    .await;
    assert_eq!(inside.incident_id, first.incident_id);
    // Four hours after the incident was last updated (at +230 min).
    let after = ingest_one(
        store,
        alert("falco", "C", Some("i-5"), 3),
        t0() + minutes(471),
    )
    .await;
    assert!(after.new_incident);
    assert_ne!(after.incident_id, first.incident_id);
    let joined = ingest_one(
        store,
        alert("falco", "D", Some("i-5"), 3),
        t0() + minutes(472),
    )
    .await;
    assert_eq!(
        joined.incident_id, after.incident_id,
        "the entity now points at the new one"
    );

    // Resolved: the next alert about the entity, and even a repeat, opens a new incident.
    store
        .set_incident_status(&after.incident_id, IncidentStatus::Resolved)
        .await
        .unwrap();
    let mut repeat = alert("falco", "D", Some("i-5"), 3);
    repeat.dedup_key = store
        .alert(&joined.alert_id)
        .await
        .unwrap()
        .unwrap()
        .dedup_key;
    let reopened = ingest_one(store, repeat, t0() + minutes(473)).await;
    assert!(!reopened.duplicate && reopened.new_incident);
    assert_ne!(reopened.incident_id, after.incident_id);
    assert_eq!(
        incident(store, &after.incident_id).await.status,
        IncidentStatus::Resolved
    );
}

async fn a_batch_is_placed_in_order(b: &mut Backend) {
    let store = b.store();
    let first = alert("aws.guardduty", "A", Some("i-6"), 3);
    let second = alert("aws.guardduty", "B", Some("i-6"), 9);
    let mut third = alert("aws.guardduty", "A", Some("i-6"), 3);
    third.dedup_key = first.dedup_key.clone();
    let elsewhere = alert("aws.guardduty", "A", Some("i-7"), 3);
    let accepted = store
        .ingest(
            vec![first.clone(), second.clone(), third, elsewhere.clone()],
            t0(),
        )
        .await
        .unwrap();
    assert_eq!(accepted.len(), 4);
    assert!(accepted[0].new_incident && !accepted[0].duplicate);
    assert!(!accepted[1].new_incident && !accepted[1].duplicate);
    assert_eq!(accepted[1].incident_id, accepted[0].incident_id);
    assert!(accepted[2].duplicate);
    assert_eq!(accepted[2].alert_id, first.id);
    assert_eq!(accepted[2].repeat_count, 2);
    assert!(accepted[3].new_incident);
    assert_eq!(accepted[3].alert_id, elsewhere.id);
    let inc = incident(store, &accepted[0].incident_id).await;
    assert_eq!((inc.alert_count, inc.event_count, inc.severity), (2, 3, 9));
    assert!(store.ingest(Vec::new(), t0()).await.unwrap().is_empty());
}

async fn concurrent_ingest_from_two_processes_keeps_one_alert_and_one_incident(b: &mut Backend) {
    let stores = [b.handle(), b.another_process().await];
    let first = alert("aws.guardduty", "Backdoor:EC2/C&CActivity", Some("i-8"), 8);
    let dedup_key = first.dedup_key.clone();
    let (tasks, each) = (8, 10);
    let mut handles = Vec::new();
    for t in 0..tasks {
        let store = stores[t % 2].clone();
        let dedup_key = dedup_key.clone();
        handles.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            for i in 0..each {
                // Half repeat one alert, half are new alerts about the same instance.
                let mut a = alert("aws.guardduty", &format!("Kind{t}-{i}"), Some("i-8"), 5);
                if i % 2 == 0 {
                    a.dedup_key = dedup_key.clone();
                }
                let got = store.ingest(vec![a], t0() + minutes(1)).await.unwrap();
                seen.push(got[0].clone());
            }
            seen
        }));
    }
    let mut accepted = Vec::new();
    for h in handles {
        accepted.extend(h.await.unwrap());
    }
    let total = (tasks * each) as u32;
    let incidents: Vec<&str> = accepted.iter().map(|a| a.incident_id.as_str()).collect();
    assert!(
        incidents.iter().all(|i| *i == incidents[0]),
        "every alert about i-8 is in one incident"
    );
    assert_eq!(accepted.iter().filter(|a| a.new_incident).count(), 1);
    let repeats: Vec<_> = accepted
        .iter()
        .filter(|a| a.duplicate || a.repeat_count == 1)
        .collect();
    assert_eq!(repeats.len(), accepted.len());
    let keyed: Vec<_> = accepted
        .iter()
        .filter(|a| {
            a.duplicate
                || accepted
                    .iter()
                    .any(|d| d.duplicate && d.alert_id == a.alert_id)
        })
        .collect();
    let repeated_ids: std::collections::BTreeSet<_> = keyed.iter().map(|a| &a.alert_id).collect();
    assert_eq!(repeated_ids.len(), 1, "one alert holds the dedup key");
    let mut counts: Vec<u32> = keyed.iter().map(|a| a.repeat_count).collect();
    counts.sort_unstable();
    assert_eq!(
        counts,
        (1..=total / 2).collect::<Vec<_>>(),
        "no repeat lost"
    );

    let inc = incident(b.store(), incidents[0]).await;
    assert_eq!(inc.event_count, total);
    assert_eq!(inc.alert_count, total / 2 + 1);
    let stored = b
        .store()
        .alert(repeated_ids.iter().next().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.repeat_count, total / 2);
    assert_eq!(
        b.store()
            .alerts(&AlertQuery::default())
            .await
            .unwrap()
            .len() as u32,
        total / 2 + 1
    );
    assert_eq!(
        b.store()
            .incidents(&IncidentQuery::default())
            .await
            .unwrap()
            .len(),
        1
    );

    // Rounds of first alerts about a fresh entity, all sent at once: each round opens one
    // incident, however the requests interleave.
    for round in 0..10 {
        let barrier = Arc::new(tokio::sync::Barrier::new(tasks));
        let handles: Vec<_> = (0..tasks)
            .map(|t| {
                let (store, barrier) = (stores[t % 2].clone(), barrier.clone());
                tokio::spawn(async move {
                    let a = alert(
                        "falco",
                        &format!("R{t}"),
                        Some(&format!("round-{round}")),
                        3,
                    );
                    barrier.wait().await;
                    store.ingest(vec![a], t0()).await.unwrap().remove(0)
                })
            })
            .collect();
        let mut opened = std::collections::BTreeSet::new();
        for h in handles {
            opened.insert(h.await.unwrap().incident_id);
        }
        assert_eq!(opened.len(), 1, "round {round} split into {opened:?}");
    }
    if !Arc::ptr_eq(&stores[0], &stores[1]) {
        stores[1].close().await.unwrap();
    }
}

async fn alerts_and_incidents_list_newest_first_with_filters_and_limits(b: &mut Backend) {
    let store = b.store();
    let mut made = Vec::new();
    for (n, (source, resource)) in [
        ("falco", "i-a"),
        ("aws.guardduty", "i-b"),
        ("falco", "i-c"),
        ("falco", "i-a"),
        ("aws.guardduty", "i-d"),
    ]
    .into_iter()
    .enumerate()
    {
        let a = alert(source, &format!("K{n}"), Some(resource), 3);
        made.push(ingest_one(store, a, t0() + minutes(n as i64)).await);
    }
    let all = store.alerts(&AlertQuery::default()).await.unwrap();
    let newest_first: Vec<String> = made.iter().rev().map(|a| a.alert_id.clone()).collect();
    assert_eq!(ids(&all, |a| &a.id), newest_first);
    let limited = store
        .alerts(&AlertQuery {
            limit: 2,
            ..AlertQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(ids(&limited, |a| &a.id), newest_first[..2]);
    let falco = store
        .alerts(&AlertQuery {
            source: Some("falco".into()),
            limit: 2,
            ..AlertQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(
        ids(&falco, |a| &a.id),
        [made[3].alert_id.clone(), made[2].alert_id.clone()]
    );
    let in_incident = store
        .alerts(&AlertQuery {
            source: Some("falco".into()),
            incident_id: Some(made[0].incident_id.clone()),
            limit: 0,
        })
        .await
        .unwrap();
    assert_eq!(
        ids(&in_incident, |a| &a.id),
        [made[3].alert_id.clone(), made[0].alert_id.clone()]
    );
    assert!(
        store
            .alerts(&AlertQuery {
                source: Some("nobody".into()),
                ..AlertQuery::default()
            })
            .await
            .unwrap()
            .is_empty()
    );

    // Incidents: i-a, i-b, i-c, i-d in that order of opening.
    let incidents = store.incidents(&IncidentQuery::default()).await.unwrap();
    let opened: Vec<String> = [4, 2, 1, 0]
        .iter()
        .map(|n| made[*n].incident_id.clone())
        .collect();
    assert_eq!(ids(&incidents, |i| &i.id), opened);
    store
        .set_incident_status(&made[1].incident_id, IncidentStatus::Resolved)
        .await
        .unwrap();
    let open = store
        .incidents(&IncidentQuery {
            status: Some(IncidentStatus::Open),
            limit: 2,
        })
        .await
        .unwrap();
    assert_eq!(
        ids(&open, |i| &i.id),
        [opened[0].clone(), opened[1].clone()]
    );
    let resolved = store
        .incidents(&IncidentQuery {
            status: Some(IncidentStatus::Resolved),
            limit: 0,
        })
        .await
        .unwrap();
    assert_eq!(ids(&resolved, |i| &i.id), [made[1].incident_id.clone()]);
    assert!(store.incident("no-such-incident").await.unwrap().is_none());
}

// ---------------------------------------------------------------------------------------------
// Runs

async fn a_held_concurrency_key_answers_the_active_run(b: &mut Backend) {
    let store = b.store();
    let first = run("contain", "i-1", None, None);
    assert_eq!(store.create_run(&first, Vec::new()).await.unwrap(), None);
    let second = run("contain", "i-1", None, None);
    assert_eq!(
        store.create_run(&second, Vec::new()).await.unwrap(),
        Some(first.id.clone())
    );
    assert!(
        store.run(&second.id).await.unwrap().is_none(),
        "nothing created"
    );
    // Another key, or another playbook with the same key, is free.
    let other_key = run("contain", "i-2", None, None);
    assert_eq!(
        store.create_run(&other_key, Vec::new()).await.unwrap(),
        None
    );
    let other_playbook = run("enrich", "i-1", None, None);
    assert_eq!(
        store.create_run(&other_playbook, Vec::new()).await.unwrap(),
        None
    );

    // Waiting still holds the key; finishing frees it.
    let mut held = first.clone();
    held.status = RunStatus::Waiting;
    store.save_run(&held, Vec::new(), true).await.unwrap();
    let third = run("contain", "i-1", None, None);
    assert_eq!(
        store.create_run(&third, Vec::new()).await.unwrap(),
        Some(first.id.clone())
    );
    held.status = RunStatus::Succeeded;
    held.finished_at = Some(t0());
    store.save_run(&held, Vec::new(), true).await.unwrap();
    let fourth = run("contain", "i-1", None, None);
    assert_eq!(store.create_run(&fourth, Vec::new()).await.unwrap(), None);
    assert_eq!(
        store.run(&fourth.id).await.unwrap().map(|r| r.status),
        Some(RunStatus::Queued)
    );
}

async fn an_alert_starts_each_playbook_once(b: &mut Backend) {
    let store = b.store();
    let first = run("triage", "k-1", Some("alert-1"), Some("inc-1"));
    assert_eq!(store.create_run(&first, Vec::new()).await.unwrap(), None);
    let mut finished = first.clone();
    finished.status = RunStatus::Failed;
    store.save_run(&finished, Vec::new(), true).await.unwrap();
    // Even with its key free and under another key, the alert does not start the playbook again.
    let again = run("triage", "k-2", Some("alert-1"), Some("inc-1"));
    assert_eq!(
        store.create_run(&again, Vec::new()).await.unwrap(),
        Some(first.id.clone())
    );
    let other_playbook = run("enrich", "k-1", Some("alert-1"), Some("inc-1"));
    assert_eq!(
        store.create_run(&other_playbook, Vec::new()).await.unwrap(),
        None
    );

    // An alert turned away because the key is held is taken care of by the holder: asking
    // again for it answers that run, which exists.
    let holder = run("isolate", "i-9", Some("alert-2"), Some("inc-2"));
    assert_eq!(store.create_run(&holder, Vec::new()).await.unwrap(), None);
    let turned_away = run("isolate", "i-9", Some("alert-3"), Some("inc-2"));
    assert_eq!(
        store.create_run(&turned_away, Vec::new()).await.unwrap(),
        Some(holder.id.clone())
    );
    let mut done = holder.clone();
    done.status = RunStatus::Succeeded;
    store.save_run(&done, Vec::new(), true).await.unwrap();
    let asked_again = run("isolate", "i-9", Some("alert-3"), Some("inc-2"));
    let answer = store.create_run(&asked_again, Vec::new()).await.unwrap();
    assert_eq!(answer, Some(holder.id.clone()));
    assert!(store.run(&holder.id).await.unwrap().is_some());
}

/// A run that waited for an approval, got two decisions and went on.
fn run_with_approval(playbook: &str, key: &str) -> Run {
    let mut r = run(playbook, key, None, Some("inc-7"));
    r.status = RunStatus::Waiting;
    r.order = vec!["intel".into(), "approve".into()];
    let mut intel = StepState::new(StepStatus::Succeeded);
    intel.attempts = 1;
    intel.output = json!({ "score": 87, "tags": ["tor", "scanner"] });
    r.steps.insert("intel".into(), intel);
    let mut approve = StepState::new(StepStatus::Waiting);
    approve.approval = Some(ApprovalState {
        prompt: "Isolate i-1?".into(),
        group: "soc-l2".into(),
        quorum: 2,
        timeout_at: t0() + minutes(30),
        on_timeout_approve: false,
        decisions: vec![Decision {
            identity: "slack:U1".into(),
            person: Some("alice".into()),
            approve: true,
            at: t0() + minutes(1),
            via: "slack".into(),
        }],
        outcome: None,
        plan: vec![
            json!({ "step": "isolate", "action": "aws-ec2.isolate_instance", "inputs": { "instance_id": "i-1" } }),
        ],
    });
    r.steps.insert("approve".into(), approve);
    r.cursor = 1;
    r
}

async fn saved_runs_keep_their_steps_and_approvals_and_resume_until_finished(b: &mut Backend) {
    let store = b.store();
    let queued = run("contain", "k-a", None, Some("inc-7"));
    store.create_run(&queued, Vec::new()).await.unwrap();
    let mut waiting = run_with_approval("contain", "k-b");
    store.create_run(&waiting, Vec::new()).await.unwrap();
    let done = run("enrich", "k-c", None, None);
    store.create_run(&done, Vec::new()).await.unwrap();
    let mut finished = done.clone();
    finished.status = RunStatus::Cancelled;
    finished.error = Some("cancelled by cli:alice".into());
    store.save_run(&finished, Vec::new(), true).await.unwrap();

    // The second decision comes in; saved without waiting for the disk, then durably.
    if let Some(approval) = waiting
        .steps
        .get_mut("approve")
        .and_then(|s| s.approval.as_mut())
    {
        approval.decisions.push(Decision {
            identity: "teams:bob".into(),
            person: Some("bob".into()),
            approve: true,
            at: t0() + minutes(2),
            via: "teams".into(),
        });
        approval.outcome = Some(true);
    }
    waiting.status = RunStatus::Running;
    store.save_run(&waiting, Vec::new(), false).await.unwrap();
    assert_eq!(
        store.run(&waiting.id).await.unwrap().as_ref(),
        Some(&waiting)
    );
    store.save_run(&waiting, Vec::new(), true).await.unwrap();

    let mut unfinished = store.unfinished_runs().await.unwrap();
    unfinished.sort();
    let mut want = vec![queued.id.clone(), waiting.id.clone()];
    want.sort();
    assert_eq!(unfinished, want);
    assert_eq!(store.run(&done.id).await.unwrap().as_ref(), Some(&finished));
    assert!(store.run("no-such-run").await.unwrap().is_none());

    let mut succeeded = waiting.clone();
    succeeded.status = RunStatus::Succeeded;
    succeeded.finished_at = Some(t0() + minutes(3));
    store.save_run(&succeeded, Vec::new(), true).await.unwrap();
    assert_eq!(store.unfinished_runs().await.unwrap(), [queued.id.as_str()]);
    let stored = store.run(&succeeded.id).await.unwrap().unwrap();
    let approval = stored.steps["approve"].approval.as_ref().unwrap();
    assert_eq!(
        approval.approvers(),
        ["alice", "bob"],
        "people, not identities"
    );
    assert_eq!(stored.steps["intel"].output["score"], 87);
}

async fn runs_list_newest_first_with_filters_and_limits(b: &mut Backend) {
    let store = b.store();
    let a = run("contain", "1", None, Some("inc-a"));
    let b2 = run("enrich", "1", None, Some("inc-a"));
    let c = run("contain", "2", None, Some("inc-b"));
    for r in [&a, &b2, &c] {
        store.create_run(r, Vec::new()).await.unwrap();
    }
    let mut failed = c.clone();
    failed.status = RunStatus::Failed;
    store.save_run(&failed, Vec::new(), true).await.unwrap();

    let all = store.runs(&RunQuery::default()).await.unwrap();
    assert_eq!(
        ids(&all, |r| &r.id),
        [c.id.clone(), b2.id.clone(), a.id.clone()]
    );
    let q = |status, playbook: Option<&str>, incident: Option<&str>, limit| RunQuery {
        status,
        playbook: playbook.map(str::to_owned),
        incident_id: incident.map(str::to_owned),
        limit,
    };
    let contain = store
        .runs(&q(None, Some("contain"), None, 0))
        .await
        .unwrap();
    assert_eq!(ids(&contain, |r| &r.id), [c.id.clone(), a.id.clone()]);
    let queued = store
        .runs(&q(Some(RunStatus::Queued), None, None, 0))
        .await
        .unwrap();
    assert_eq!(ids(&queued, |r| &r.id), [b2.id.clone(), a.id.clone()]);
    let in_a = store
        .runs(&q(
            Some(RunStatus::Queued),
            Some("contain"),
            Some("inc-a"),
            5,
        ))
        .await
        .unwrap();
    assert_eq!(ids(&in_a, |r| &r.id), [a.id.as_str()]);
    let newest = store.runs(&q(None, None, None, 1)).await.unwrap();
    assert_eq!(ids(&newest, |r| &r.id), [c.id.as_str()]);
    assert!(
        store
            .runs(&q(Some(RunStatus::Waiting), None, None, 0))
            .await
            .unwrap()
            .is_empty()
    );
}

async fn alerts_are_pending_until_matched(b: &mut Backend) {
    let store = b.store();
    let first = alert("falco", "A", Some("i-p"), 3);
    let second = alert("falco", "B", Some("i-q"), 3);
    let mut repeat = alert("falco", "A", Some("i-p"), 3);
    repeat.dedup_key = first.dedup_key.clone();
    store
        .ingest(vec![first.clone(), second.clone(), repeat], t0())
        .await
        .unwrap();
    assert_eq!(
        store.pending_matches().await.unwrap(),
        [first.id.clone(), second.id.clone()],
        "oldest first; a repeat is not matched again"
    );
    store.matched(&first.id).await.unwrap();
    assert_eq!(store.pending_matches().await.unwrap(), [second.id.as_str()]);
    store.matched(&second.id).await.unwrap();
    assert!(store.pending_matches().await.unwrap().is_empty());
}

// ---------------------------------------------------------------------------------------------
// Incidents, outbox, values

/// A change to an incident that does not exist is that caller's error only: alerts written at the
/// same moment (on sled, in the same group commit) are stored, and the store stays ready.
async fn an_update_of_an_unknown_incident_is_refused_alone(b: &mut Backend) {
    let store = b.store();
    let (refused, stored) = tokio::join!(
        store.set_incident_value("no-such-incident", "verdict", json!("x")),
        futures_util::future::join_all((0..20).map(|i| {
            store.ingest(vec![alert("falco", "A", Some(&format!("i-u{i}")), 3)], t0())
        })),
    );
    let refused = refused.expect_err("no such incident");
    assert!(
        refused.to_string().contains("no-such-incident"),
        "{refused}"
    );
    for accepted in stored {
        let accepted = accepted.expect("the other writes are stored");
        assert!(store.alert(&accepted[0].alert_id).await.unwrap().is_some());
    }
    assert!(store.is_ready());
}

async fn incident_values_evidence_and_status(b: &mut Backend) {
    let store = b.store();
    let opened = ingest_one(store, alert("falco", "A", Some("i-v"), 3), t0()).await;
    let id = &opened.incident_id;
    store
        .set_incident_value(id, "verdict", json!("malicious"))
        .await
        .unwrap();
    store
        .set_incident_value(id, "score", json!({ "abuseipdb": 87 }))
        .await
        .unwrap();
    store
        .set_incident_value(id, "verdict", json!("benign"))
        .await
        .unwrap();
    let snapshot = json!({ "kind": "snapshot", "location": "snap-1", "sha256": null });
    let log = json!({ "kind": "log", "location": "s3://evidence/1.json", "run": "r1" });
    store
        .add_evidence(id, vec![snapshot.clone()])
        .await
        .unwrap();
    store.add_evidence(id, vec![log.clone()]).await.unwrap();

    let inc = incident(store, id).await;
    assert_eq!(inc.values["verdict"], "benign");
    assert_eq!(inc.values["score"]["abuseipdb"], 87);
    assert_eq!(inc.evidence, [snapshot, log]);
    assert_eq!(inc.status, IncidentStatus::Open);
    assert!(inc.updated_at > t0(), "a change is a change");

    store
        .set_incident_status(id, IncidentStatus::Resolved)
        .await
        .unwrap();
    assert_eq!(incident(store, id).await.status, IncidentStatus::Resolved);
    store
        .set_incident_status(id, IncidentStatus::Open)
        .await
        .unwrap();
    assert_eq!(incident(store, id).await.status, IncidentStatus::Open);
    assert_eq!(incident(store, id).await.values["verdict"], "benign");

    for result in [
        store.set_incident_value("nope", "k", json!(1)).await,
        store.add_evidence("nope", vec![json!({})]).await,
        store
            .set_incident_status("nope", IncidentStatus::Resolved)
            .await,
    ] {
        let err = result.expect_err("no such incident");
        assert!(err.to_string().contains("no incident `nope`"), "{err}");
    }
    assert!(store.incident("nope").await.unwrap().is_none());
}

async fn outbox_keeps_push_order_and_delivery_state(b: &mut Backend) {
    let store = b.store();
    let create = OutboxEntry::new("jira", "inc-1", "create", json!({ "summary": "A" }));
    let comment = OutboxEntry::new("jira", "inc-1", "comment", json!({ "body": "step 1" }));
    let card = OutboxEntry::new("slack", "card-1", "post", json!({ "text": "hi" }));
    store
        .outbox_push(vec![create.clone(), comment.clone()])
        .await
        .unwrap();
    store.outbox_push(vec![card.clone()]).await.unwrap();
    assert_eq!(
        store.outbox_pending().await.unwrap(),
        [create.clone(), comment.clone(), card.clone()]
    );

    let mut retried = create.clone();
    retried.attempts = 2;
    retried.next_at = Some(t0() + minutes(5));
    retried.last_error = Some("503 from Jira".into());
    store.outbox_save(&retried).await.unwrap();
    let mut dead = card.clone();
    dead.attempts = 1;
    dead.dead = true;
    dead.last_error = Some("channel_not_found".into());
    store.outbox_save(&dead).await.unwrap();
    assert_eq!(
        store.outbox_pending().await.unwrap(),
        [retried.clone(), comment.clone(), dead.clone()]
    );

    store.outbox_remove(&retried.id).await.unwrap();
    store.outbox_remove("not-there").await.unwrap();
    assert_eq!(
        store.outbox_pending().await.unwrap(),
        [comment.clone(), dead.clone()]
    );
}

/// Replay memory (SNS MessageIds): a key is new once, stays taken until its time, for another
/// process too and after a restart; then it may be used again, and namespaces are apart.
async fn a_key_is_remembered_once_until_its_time_across_processes_and_restarts(b: &mut Backend) {
    let store = b.store();
    let until = t0() + minutes(60);
    assert!(
        store
            .remember_once("sns", "m-1", until, t0())
            .await
            .unwrap()
    );
    assert!(
        !store
            .remember_once("sns", "m-1", until, t0() + minutes(1))
            .await
            .unwrap()
    );
    assert!(
        store
            .remember_once("other", "m-1", until, t0())
            .await
            .unwrap()
    );
    let other = b.another_process().await;
    assert!(
        !other
            .remember_once("sns", "m-1", until, t0() + minutes(2))
            .await
            .unwrap()
    );
    // Many keys at once, from two processes: each is new exactly once.
    let mut tasks = Vec::new();
    for i in 0..40 {
        for s in [b.handle(), other.clone()] {
            tasks.push(tokio::spawn(async move {
                s.remember_once("sns", &format!("burst-{i}"), until, t0())
                    .await
                    .unwrap()
            }));
        }
    }
    let mut firsts = 0;
    for task in tasks {
        firsts += usize::from(task.await.unwrap());
    }
    assert_eq!(firsts, 40, "each key is new exactly once");
    // sled lets go of its lock with the last handle.
    drop(other);
    b.reopen().await;
    let store = b.store();
    assert!(
        !store
            .remember_once("sns", "m-1", until, t0() + minutes(3))
            .await
            .unwrap()
    );
    // Past its time, the key is forgotten (and pruned as new keys come).
    let later = t0() + minutes(61);
    assert!(
        store
            .remember_once("sns", "m-2", later + minutes(60), later)
            .await
            .unwrap()
    );
    assert!(
        store
            .remember_once("sns", "m-1", later + minutes(60), later)
            .await
            .unwrap()
    );
    assert!(
        !store
            .remember_once("sns", "m-1", later + minutes(60), later)
            .await
            .unwrap()
    );
}

async fn meta_values_by_namespace(b: &mut Backend) {
    let store = b.store();
    assert_eq!(store.meta_get("jira", "inc-1").await.unwrap(), None);
    store
        .meta_put("jira", "inc-1", json!("SEC-42"))
        .await
        .unwrap();
    store
        .meta_put("slack", "inc-1", json!({ "channel": "C1", "ts": "1.2" }))
        .await
        .unwrap();
    assert_eq!(
        store.meta_get("jira", "inc-1").await.unwrap(),
        Some(json!("SEC-42"))
    );
    store
        .meta_put("jira", "inc-1", json!("SEC-43"))
        .await
        .unwrap();
    assert_eq!(
        store.meta_get("jira", "inc-1").await.unwrap(),
        Some(json!("SEC-43"))
    );
    assert_eq!(
        store.meta_get("slack", "inc-1").await.unwrap(),
        Some(json!({ "channel": "C1", "ts": "1.2" }))
    );
    assert_eq!(store.meta_get("slack", "inc-2").await.unwrap(), None);

    // A namespace lists in key order and holds only its own keys; a forgotten key is gone, and
    // forgetting it again is no error.
    store
        .meta_put("jira", "inc-0", json!("SEC-1"))
        .await
        .unwrap();
    store.meta_put("jiraz", "x", json!(1)).await.unwrap();
    assert_eq!(
        store.meta_list("jira").await.unwrap(),
        [
            ("inc-0".to_owned(), json!("SEC-1")),
            ("inc-1".to_owned(), json!("SEC-43"))
        ]
    );
    store.meta_delete("jira", "inc-0").await.unwrap();
    store.meta_delete("jira", "inc-0").await.unwrap();
    assert_eq!(store.meta_get("jira", "inc-0").await.unwrap(), None);
    assert_eq!(
        store.meta_list("jira").await.unwrap(),
        [("inc-1".to_owned(), json!("SEC-43"))]
    );
}

async fn blast_radius_slots_fill_their_window_survive_a_restart_and_are_shared(b: &mut Backend) {
    let hour = Duration::from_secs(3600);
    let isolate = "aws-ec2.isolate_instance";
    let store = b.handle();
    assert!(store.take_slot(isolate, 2, hour, t0()).await.unwrap());
    assert!(
        store
            .take_slot(isolate, 2, hour, t0() + minutes(10))
            .await
            .unwrap()
    );
    assert!(
        !store
            .take_slot(isolate, 2, hour, t0() + minutes(20))
            .await
            .unwrap(),
        "a third call inside the hour finds the window full"
    );
    // Another key counts on its own.
    assert!(
        store
            .take_slot("azure-entra.disable_user", 1, hour, t0())
            .await
            .unwrap()
    );

    // A restart keeps the count.
    drop(store);
    b.reopen().await;
    let store = b.handle();
    assert!(
        !store
            .take_slot(isolate, 2, hour, t0() + minutes(30))
            .await
            .unwrap()
    );
    // Once the first slot is older than the window, one call is free again, and only one.
    assert!(
        store
            .take_slot(isolate, 2, hour, t0() + minutes(61))
            .await
            .unwrap()
    );
    assert!(
        !store
            .take_slot(isolate, 2, hour, t0() + minutes(62))
            .await
            .unwrap()
    );

    // Processes sharing the store, racing for the last free slots, get exactly that many.
    let other = b.another_process().await;
    let at = t0() + minutes(200);
    let mut racers = Vec::new();
    for i in 0..20 {
        let store = if i % 2 == 0 {
            b.handle()
        } else {
            other.clone()
        };
        racers.push(tokio::spawn(async move {
            store.take_slot("shared", 5, hour, at).await.unwrap()
        }));
    }
    let mut taken = 0;
    for racer in racers {
        taken += usize::from(racer.await.unwrap());
    }
    assert_eq!(taken, 5, "five slots in all, whichever process asked");
    if !Arc::ptr_eq(&other, &store) {
        other.close().await.unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// The audit log

async fn the_audit_chain_appends_verifies_and_lists(b: &mut Backend) {
    let store = b.store();
    let empty = store.audit_verify().await.unwrap();
    assert!(empty.ok());
    assert_eq!((empty.entries, empty.last_seq), (0, 0));
    assert_eq!(empty.last_hash, GENESIS_HASH);

    store
        .append_audit(vec![
            NewEntry::new("incident.status")
                .actor("cli:alice")
                .detail(json!({ "to": "resolved" })),
        ])
        .await
        .unwrap();
    let r = run("contain", "k", None, None);
    store
        .create_run(
            &r,
            vec![
                NewEntry::new(kind::RUN_STATE)
                    .run(r.id.clone())
                    .detail(json!({ "to": "queued" })),
            ],
        )
        .await
        .unwrap();
    let mut waiting = r.clone();
    waiting.status = RunStatus::Waiting;
    store
        .save_run(
            &waiting,
            vec![
                NewEntry::new(kind::APPROVAL_REQUESTED).step("approve"),
                NewEntry::new(kind::APPROVAL_DECIDED)
                    .step("approve")
                    .actor("slack:U1")
                    .detail(
                        json!({ "decision": "approved", "nested": { "b": 1, "a": [true, null] } }),
                    ),
            ],
            false,
        )
        .await
        .unwrap();

    let report = store.audit_verify().await.unwrap();
    assert!(report.ok(), "{:?}", report.problems);
    assert_eq!((report.entries, report.last_seq), (4, 4));
    let all = store.audit_entries(None, 0).await.unwrap();
    assert_eq!(all.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2, 3, 4]);
    assert_eq!(all[0].prev_hash, GENESIS_HASH);
    for pair in all.windows(2) {
        assert_eq!(pair[1].prev_hash, pair[0].hash);
    }
    for entry in &all {
        assert_eq!(entry.computed_hash().unwrap(), entry.hash);
    }
    assert_eq!(report.last_hash, all[3].hash);
    assert_eq!(all[0].actor.as_deref(), Some("cli:alice"));
    // Entries saved with a run are about that run even when they did not say.
    assert_eq!(all[2].run_id.as_deref(), Some(r.id.as_str()));
    assert_eq!(all[3].detail["nested"]["a"], json!([true, null]));

    let first_two = store.audit_entries(None, 2).await.unwrap();
    assert_eq!(first_two, all[..2]);
    let of_run = store.audit_entries(Some(&r.id), 0).await.unwrap();
    assert_eq!(of_run, all[1..]);
    assert!(
        store
            .audit_entries(Some("other"), 0)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn a_tampered_audit_entry_is_reported(b: &mut Backend) {
    for i in 1..=5 {
        b.store()
            .append_audit(vec![
                NewEntry::new(kind::STEP_FINISHED)
                    .run("run-1")
                    .detail(json!({ "n": i })),
            ])
            .await
            .unwrap();
    }
    let before = b.store().audit_verify().await.unwrap();
    assert!(before.ok());
    b.tamper_audit(3, r#""n":3"#, r#""n":4"#).await;

    let report = b.store().audit_verify().await.unwrap();
    assert!(!report.ok());
    assert_eq!(report.entries, 5);
    assert_eq!(
        report.problems.iter().map(|p| p.seq).collect::<Vec<_>>(),
        [3]
    );
    assert!(
        report.problems[0].what.contains("changed"),
        "{:?}",
        report.problems
    );
    assert_eq!(report.last_hash, before.last_hash, "only entry 3 changed");
}

async fn one_audit_entry_is_read_by_its_sequence_number(b: &mut Backend) {
    assert!(b.store().audit_entry(1).await.unwrap().is_none());
    for i in 1..=3 {
        b.store()
            .append_audit(vec![
                NewEntry::new(kind::STEP_FINISHED).detail(json!({ "n": i })),
            ])
            .await
            .unwrap();
    }
    let all = b.store().audit_entries(None, 0).await.unwrap();
    let second = b.store().audit_entry(2).await.unwrap().expect("entry 2");
    assert_eq!(second, all[1]);
    assert_eq!(second.detail, json!({ "n": 2 }));
    assert!(b.store().audit_entry(4).await.unwrap().is_none());
    assert!(b.store().audit_entry(0).await.unwrap().is_none());
    assert!(b.store().audit_entry(u64::MAX).await.unwrap().is_none());
}

// ---------------------------------------------------------------------------------------------
// Restarts and shutdown

async fn everything_survives_a_restart(b: &mut Backend) {
    let first = alert("aws.guardduty", "A", Some("i-r"), 6);
    let opened = ingest_one(b.store(), first.clone(), t0()).await;
    let active = run("contain", "i-r", Some(&first.id), Some(&opened.incident_id));
    b.store()
        .create_run(
            &active,
            vec![NewEntry::new(kind::RUN_STATE).run(active.id.clone())],
        )
        .await
        .unwrap();
    let entry = OutboxEntry::new("jira", &opened.incident_id, "create", json!({}));
    b.store().outbox_push(vec![entry.clone()]).await.unwrap();
    b.store()
        .meta_put("jira", &opened.incident_id, json!("SEC-1"))
        .await
        .unwrap();
    b.store()
        .set_incident_status(&opened.incident_id, IncidentStatus::Open)
        .await
        .unwrap();
    let before = b.store().audit_verify().await.unwrap();

    b.reopen().await;
    let store = b.store();
    assert_eq!(
        store.alert(&first.id).await.unwrap().map(|a| a.id),
        Some(first.id.clone())
    );
    assert_eq!(store.pending_matches().await.unwrap(), [first.id.as_str()]);
    assert_eq!(store.unfinished_runs().await.unwrap(), [active.id.as_str()]);
    assert_eq!(store.outbox_pending().await.unwrap(), [entry]);
    assert_eq!(
        store.meta_get("jira", &opened.incident_id).await.unwrap(),
        Some(json!("SEC-1"))
    );
    assert_eq!(store.audit_verify().await.unwrap(), before);

    // Dedup, grouping, concurrency keys and the chain carry on from the stored state.
    let mut repeat = alert("aws.guardduty", "A", Some("i-r"), 6);
    repeat.dedup_key = first.dedup_key.clone();
    let again = ingest_one(store, repeat, t0() + minutes(5)).await;
    assert!(again.duplicate && again.repeat_count == 2);
    let joined = ingest_one(
        store,
        alert("falco", "B", Some("i-r"), 2),
        t0() + minutes(6),
    )
    .await;
    assert_eq!(joined.incident_id, opened.incident_id);
    let blocked = run("contain", "i-r", None, None);
    assert_eq!(
        store.create_run(&blocked, Vec::new()).await.unwrap(),
        Some(active.id.clone())
    );
    store
        .append_audit(vec![NewEntry::new(kind::RUN_STATE)])
        .await
        .unwrap();
    let after = store.audit_verify().await.unwrap();
    assert!(after.ok());
    assert_eq!(after.last_seq, before.last_seq + 1);
    let last = store.audit_entries(None, 0).await.unwrap().pop().unwrap();
    assert_eq!(last.prev_hash, before.last_hash);
}

async fn a_closed_store_refuses_work(b: &mut Backend) {
    assert!(b.store().is_ready());
    b.store().close().await.unwrap();
    assert!(!b.store().is_ready());
    let refused = b
        .store()
        .ingest(vec![alert("falco", "A", Some("i-z"), 1)], t0())
        .await;
    assert!(matches!(refused, Err(StoreError::Closed)), "{refused:?}");
    let refused = b
        .store()
        .create_run(&run("p", "k", None, None), Vec::new())
        .await;
    assert!(matches!(refused, Err(StoreError::Closed)), "{refused:?}");
}

// ---------------------------------------------------------------------------------------------
// The PostgreSQL backend's own set-up

#[tokio::test]
async fn postgres_config_needs_a_url_and_keeps_it_secret() {
    let error = cordon::config::parse("store:\n  kind: postgres\n", Path::new("cordon.yaml"))
        .expect_err("no url");
    let text = error.to_string();
    assert!(text.starts_with("cordon.yaml:"), "{text}");
    assert!(text.contains("needs `store.url`"), "{text}");

    let config = cordon::config::parse(
        "store:\n  kind: postgres\n  url: postgres://cordon:hunter2@127.0.0.1:1/cordon\n  pool_size: 3\n",
        Path::new("cordon.yaml"),
    )
    .expect("parses");
    assert_eq!(config.store.kind, StoreKind::Postgres);
    assert_eq!(config.store.pool_size, 3);
    assert!(!format!("{config:?}").contains("hunter2"));

    // Nothing listens on port 1: the error says where it tried, never the password.
    let metrics = Arc::new(cordon::telemetry::Metrics::new());
    let error = match cordon::store::open(&config.store, &config.grouping, metrics).await {
        Ok(_) => panic!("connected to nothing"),
        Err(e) => e.to_string(),
    };
    assert!(error.contains("127.0.0.1:1/cordon"), "{error}");
    assert!(!error.contains("hunter2"), "{error}");
}

#[tokio::test]
async fn the_schema_is_applied_once_and_a_newer_one_is_refused() {
    let (schema, url) = pg::named_schema().await;
    // Replicas starting together: every one opens, and each migration is recorded once.
    let opened = futures_join(&url, 3).await;
    for store in &opened {
        store.close().await.unwrap();
    }
    let db = pg::connect(&url).await;
    let applied: Vec<i32> = db
        .query(
            "SELECT version FROM cordon_migrations ORDER BY version",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(applied, [1, 2, 3, 4, 5], "each migration once, in order");

    db.execute(
        "INSERT INTO cordon_migrations (version, name) VALUES (999, 'from the future')",
        &[],
    )
    .await
    .unwrap();
    let error = match PostgresStore::connect(&url, 1, &grouping()).await {
        Ok(_) => panic!("opened a newer schema"),
        Err(e) => e.to_string(),
    };
    assert!(error.contains("version 999"), "{error}");
    pg::drop_schema(&schema).await;
}

async fn futures_join(url: &str, n: usize) -> Vec<PostgresStore> {
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let url = url.to_owned();
            tokio::spawn(async move { PostgresStore::connect(&url, 1, &grouping()).await })
        })
        .collect();
    let mut out = Vec::new();
    for task in tasks {
        out.push(task.await.unwrap().expect("opens"));
    }
    out
}

// ---------------------------------------------------------------------------------------------
// cordon migrate

fn cordon() -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_cordon"));
    command.env_remove("CORDON_MIGRATE_TO");
    command
}

/// A sled store in `dir` with a bit of everything, closed; answers what it holds.
async fn filled_sled(dir: &Path) -> Filled {
    let store = open_sled(dir).await;
    let first = alert(
        "aws.guardduty",
        "UnauthorizedAccess:EC2/TorRelay",
        Some("i-m"),
        8,
    );
    let opened = ingest_one(store.as_ref(), first.clone(), t0()).await;
    let mut repeat = alert(
        "aws.guardduty",
        "UnauthorizedAccess:EC2/TorRelay",
        Some("i-m"),
        8,
    );
    repeat.dedup_key = first.dedup_key.clone();
    ingest_one(store.as_ref(), repeat, t0() + minutes(1)).await;
    ingest_one(
        store.as_ref(),
        alert("falco", "Shell", Some("i-m"), 5),
        t0() + minutes(2),
    )
    .await;
    ingest_one(
        store.as_ref(),
        identity_alert("Policy:IAMUser/RootCredentialUsage", "root"),
        t0(),
    )
    .await;
    store.matched(&first.id).await.unwrap();

    let mut waiting = run_with_approval("contain", "i-m");
    waiting.alert_id = Some(first.id.clone());
    waiting.incident_id = Some(opened.incident_id.clone());
    store
        .create_run(
            &waiting,
            vec![NewEntry::new(kind::RUN_STATE).run(waiting.id.clone())],
        )
        .await
        .unwrap();
    store
        .save_run(
            &waiting,
            vec![
                NewEntry::new(kind::APPROVAL_DECIDED)
                    .step("approve")
                    .actor("slack:U1")
                    .detail(json!({ "decision": "approved" })),
            ],
            true,
        )
        .await
        .unwrap();
    let done = run("enrich", "x", Some(&first.id), Some(&opened.incident_id));
    store.create_run(&done, Vec::new()).await.unwrap();
    let mut finished = done.clone();
    finished.status = RunStatus::Succeeded;
    store
        .save_run(&finished, vec![NewEntry::new(kind::RUN_STATE)], true)
        .await
        .unwrap();
    store
        .set_incident_value(&opened.incident_id, "verdict", json!("malicious"))
        .await
        .unwrap();
    store
        .add_evidence(
            &opened.incident_id,
            vec![json!({ "kind": "snapshot", "location": "snap-9" })],
        )
        .await
        .unwrap();
    store
        .outbox_push(vec![OutboxEntry::new(
            "jira",
            &opened.incident_id,
            "create",
            json!({ "summary": "Tor" }),
        )])
        .await
        .unwrap();
    store
        .meta_put("jira", &opened.incident_id, json!("SEC-7"))
        .await
        .unwrap();
    store.close().await.unwrap();
    Filled {
        first_alert: first,
        incident_id: opened.incident_id,
        waiting_run: waiting.id,
    }
}

struct Filled {
    first_alert: Alert,
    incident_id: String,
    waiting_run: String,
}

/// Everything a user can read from a store, as JSON, to compare two stores.
async fn everything(store: &dyn Store) -> Value {
    let alerts = store.alerts(&AlertQuery::default()).await.unwrap();
    let incidents = store.incidents(&IncidentQuery::default()).await.unwrap();
    let runs = store.runs(&RunQuery::default()).await.unwrap();
    let mut values = Vec::new();
    for incident in &incidents {
        values.push(store.meta_get("jira", &incident.id).await.unwrap());
    }
    json!({
        "alerts": alerts,
        "incidents": incidents,
        "runs": runs,
        "unfinished": store.unfinished_runs().await.unwrap(),
        "pending": store.pending_matches().await.unwrap(),
        "outbox": store.outbox_pending().await.unwrap(),
        "meta": values,
        "audit": store.audit_entries(None, 0).await.unwrap(),
        "verify": store.audit_verify().await.unwrap().summary(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_copies_a_sled_store_into_postgres_and_carries_on() {
    let dir = tempfile::tempdir().unwrap();
    let filled = filled_sled(dir.path()).await;
    let source = open_sled(dir.path()).await;
    let want = everything(source.as_ref()).await;
    source.close().await.unwrap();
    drop(source);
    assert_eq!(want["verify"]["entries"], 3);

    let (schema, url) = pg::named_schema().await;
    let output = cordon()
        .args(["migrate", "--from"])
        .arg(dir.path().join("store"))
        .env("CORDON_MIGRATE_TO", &url)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("alerts             3"), "{stdout}");
    assert!(stdout.contains("incidents          2"), "{stdout}");
    assert!(stdout.contains("runs               2"), "{stdout}");
    assert!(
        stdout.contains("approvals          1 (1 decisions)"),
        "{stdout}"
    );
    assert!(stdout.contains("audit chain intact: 3 entries"), "{stdout}");

    let copy = open_postgres(&url).await;
    assert_eq!(everything(copy.as_ref()).await, want);

    // The copy carries on: repeats count on the copied alert, the incident takes new alerts, the
    // waiting run still holds its key, and the chain goes on from the copied entries.
    let mut repeat = alert(
        "aws.guardduty",
        "UnauthorizedAccess:EC2/TorRelay",
        Some("i-m"),
        8,
    );
    repeat.dedup_key = filled.first_alert.dedup_key.clone();
    let again = ingest_one(copy.as_ref(), repeat, t0() + minutes(3)).await;
    assert!(again.duplicate);
    assert_eq!(
        (again.alert_id.as_str(), again.repeat_count),
        (filled.first_alert.id.as_str(), 3)
    );
    assert_eq!(again.incident_id, filled.incident_id);
    let blocked = run("contain", "i-m", None, None);
    assert_eq!(
        copy.create_run(&blocked, Vec::new()).await.unwrap(),
        Some(filled.waiting_run.clone())
    );
    copy.append_audit(vec![NewEntry::new(kind::RUN_STATE)])
        .await
        .unwrap();
    let chain = copy.audit_verify().await.unwrap();
    assert!(chain.ok() && chain.last_seq == 4);
    copy.close().await.unwrap();

    // A second migration into a database that holds data is refused and changes nothing.
    let output = cordon()
        .args(["migrate", "--from"])
        .arg(dir.path().join("store"))
        .args(["--to", &url])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("already holds Cordon data"), "{stderr}");
    pg::drop_schema(&schema).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_refuses_a_broken_source_chain_and_never_prints_the_password() {
    let dir = tempfile::tempdir().unwrap();
    filled_sled(dir.path()).await;
    let path: PathBuf = dir.path().join("store");
    {
        let db = open_sled_db(&path).await;
        let tree = db.open_tree("audit").unwrap();
        let stored = tree.get(2u64.to_be_bytes()).unwrap().unwrap();
        let text = String::from_utf8(stored.to_vec()).unwrap();
        tree.insert(
            2u64.to_be_bytes(),
            text.replace("slack:U1", "slack:U2").as_bytes(),
        )
        .unwrap();
        db.flush().unwrap();
    }
    let (schema, url) = pg::named_schema().await;
    let output = cordon()
        .args(["migrate", "--from"])
        .arg(&path)
        .env("CORDON_MIGRATE_TO", &url)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("audit chain is broken (1 problems)"),
        "{stderr}"
    );
    let db = pg::connect(&url).await;
    let copied: i64 = db
        .query_one("SELECT count(*) FROM audit", &[])
        .await
        .map(|r| r.get(0))
        .unwrap_or(0);
    assert_eq!(copied, 0, "nothing copied");
    pg::drop_schema(&schema).await;

    // A database that is not there: the error names where, never the password.
    let output = cordon()
        .args(["migrate", "--from"])
        .arg(&path)
        .env(
            "CORDON_MIGRATE_TO",
            "postgres://cordon:s3cret-pw@127.0.0.1:1/cordon",
        )
        .output()
        .unwrap();
    assert!(!output.status.success());
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(all.contains("127.0.0.1:1/cordon"), "{all}");
    assert!(!all.contains("s3cret-pw"), "{all}");
}

// ---------------------------------------------------------------------------------------------
// Replicas on one PostgreSQL database: leases (sled is one process, and grants every lease)

/// Two replicas' stores on one fresh schema, their leases lasting `ttl`.
async fn two_replicas(ttl: Duration) -> (String, PostgresStore, PostgresStore) {
    let (schema, url) = pg::named_schema().await;
    let mut opened = futures_join(&url, 2).await;
    for store in &opened {
        store.set_lease_ttl(ttl);
    }
    let b = opened.pop().unwrap();
    let a = opened.pop().unwrap();
    assert_ne!(
        a.replica(),
        b.replica(),
        "each replica has an id of its own"
    );
    (schema, a, b)
}

#[tokio::test]
async fn a_run_is_leased_by_one_replica_and_a_stale_writer_is_refused() {
    let (schema, a, b) = two_replicas(Duration::from_secs(60)).await;
    let r = run("contain", "k-lease", None, Some("inc-1"));
    a.create_run(&r, Vec::new()).await.unwrap();

    assert!(a.lease_run(&r.id).await.unwrap(), "a free run is leased");
    assert!(a.lease_run(&r.id).await.unwrap(), "its holder renews it");
    assert!(!b.lease_run(&r.id).await.unwrap(), "not while A holds it");
    assert!(
        b.claim_due_runs(10).await.unwrap().is_empty(),
        "a held run is not handed out"
    );
    assert!(!a.lease_run("no-such-run").await.unwrap());

    // B writing over A's run is refused, and changes nothing.
    let mut stale = r.clone();
    stale.status = RunStatus::Failed;
    match b.save_run(&stale, Vec::new(), true).await {
        Err(StoreError::LeaseLost(id)) => assert_eq!(id, r.id),
        other => panic!("B's write went through: {other:?}"),
    }
    assert_eq!(
        a.run(&r.id).await.unwrap().unwrap().status,
        RunStatus::Queued
    );
    let mut next = r.clone();
    next.status = RunStatus::Running;
    a.save_run(&next, Vec::new(), true)
        .await
        .expect("the holder writes");

    // Released, the run is B's to take; then A is the one refused.
    a.release_run(&r.id, Some(Utc::now())).await.unwrap();
    assert_eq!(b.claim_due_runs(10).await.unwrap(), vec![r.id.clone()]);
    assert!(!a.lease_run(&r.id).await.unwrap());
    assert!(matches!(
        a.save_run(&next, Vec::new(), true).await,
        Err(StoreError::LeaseLost(_))
    ));
    pg::drop_schema(&schema).await;
}

#[tokio::test]
async fn a_dead_replicas_runs_are_taken_over_once_its_leases_run_out() {
    let (schema, a, b) = two_replicas(Duration::from_secs(1)).await;
    let r = run("contain", "k-dead", None, Some("inc-1"));
    a.create_run(&r, Vec::new()).await.unwrap();
    assert!(a.lease_run(&r.id).await.unwrap());

    // While A lives its lease is renewed, well past the lease's length.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(
        b.claim_due_runs(10).await.unwrap().is_empty(),
        "A still holds it"
    );

    // A dies without a word (its renewals stop): B claims the run once the lease has run out.
    drop(a);
    let mut claimed = Vec::new();
    for _ in 0..60 {
        claimed = b.claim_due_runs(10).await.unwrap();
        if !claimed.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(claimed, vec![r.id.clone()], "B took the run over");
    let mut done = r.clone();
    done.status = RunStatus::Succeeded;
    b.save_run(&done, Vec::new(), true)
        .await
        .expect("the new holder writes");
    assert!(
        b.claim_due_runs(10).await.unwrap().is_empty(),
        "finished runs are never due"
    );
    pg::drop_schema(&schema).await;
}

#[tokio::test]
async fn replicas_claiming_at_once_each_get_different_due_runs() {
    let (schema, a, b) = two_replicas(Duration::from_secs(60)).await;
    let mut all = Vec::new();
    for i in 0..60 {
        let r = run("contain", &format!("k-{i}"), None, None);
        a.create_run(&r, Vec::new()).await.unwrap();
        all.push(r.id);
    }
    // A run waiting on an approval is due at its timeout, not before.
    let waiting = run_with_approval("approve", "k-wait");
    a.create_run(&waiting, Vec::new()).await.unwrap();
    let mut waiting_later = waiting.clone();
    if let Some(approval) = waiting_later
        .steps
        .get_mut("approve")
        .and_then(|s| s.approval.as_mut())
    {
        approval.timeout_at = Utc::now() + TimeDelta::hours(1);
    }
    a.save_run(&waiting_later, Vec::new(), true).await.unwrap();

    let (mut got_a, mut got_b) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        let (x, y) = tokio::join!(a.claim_due_runs(15), b.claim_due_runs(15));
        got_a.extend(x.unwrap());
        got_b.extend(y.unwrap());
    }
    assert!(
        got_a.iter().all(|id| !got_b.contains(id)),
        "no run went to both"
    );
    let mut got: Vec<String> = got_a.into_iter().chain(got_b).collect();
    got.sort();
    all.sort();
    assert_eq!(
        got, all,
        "every due run was claimed once, the waiting one not"
    );

    // Given back with its wake time in the past, the waiting run is due.
    assert!(a.lease_run(&waiting.id).await.unwrap());
    a.release_run(&waiting.id, Some(Utc::now() - TimeDelta::seconds(1)))
        .await
        .unwrap();
    assert_eq!(
        b.claim_due_runs(10).await.unwrap(),
        vec![waiting.id.clone()]
    );
    pg::drop_schema(&schema).await;
}

#[tokio::test]
async fn pending_alerts_are_matched_by_one_replica_until_it_dies() {
    let (schema, a, b) = two_replicas(Duration::from_secs(1)).await;
    let now = Utc::now();
    let mut stored = Vec::new();
    for i in 0..5 {
        let accepted = a
            .ingest(
                vec![alert(
                    "generic",
                    &format!("k{i}"),
                    Some(&format!("h{i}")),
                    5,
                )],
                now,
            )
            .await
            .unwrap();
        stored.push(accepted[0].alert_id.clone());
    }
    assert_eq!(
        a.pending_matches().await.unwrap(),
        stored,
        "A claims them all"
    );
    assert!(b.pending_matches().await.unwrap().is_empty(), "and B none");
    a.matched(&stored[0]).await.unwrap();

    drop(a);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(
        b.pending_matches().await.unwrap(),
        stored[1..],
        "B takes over what A left unmatched"
    );
    pg::drop_schema(&schema).await;
}

#[tokio::test]
async fn one_replica_holds_a_named_lease_and_closing_gives_every_lease_back() {
    let (schema, a, b) = two_replicas(Duration::from_secs(60)).await;
    assert!(a.lease("outbox").await.unwrap());
    assert!(a.lease("outbox").await.unwrap(), "renewed by its holder");
    assert!(!b.lease("outbox").await.unwrap());

    let r = run("contain", "k-close", None, None);
    a.create_run(&r, Vec::new()).await.unwrap();
    assert!(a.lease_run(&r.id).await.unwrap());
    a.close().await.unwrap();
    assert!(
        b.lease("outbox").await.unwrap(),
        "a closed replica's leases are free at once"
    );
    assert!(b.lease_run(&r.id).await.unwrap());
    pg::drop_schema(&schema).await;
}

/// The PostgreSQL store commits run creations and saves that arrive together in one transaction;
/// each caller still gets its own answer, and a save fenced by another replica's lease writes
/// nothing (nor its audit entries) while the writes beside it are stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_run_writes_at_once_each_get_their_own_outcome_and_a_fenced_one_writes_nothing() {
    let (schema, a, b) = two_replicas(Duration::from_secs(60)).await;
    let a: Arc<dyn Store> = Arc::new(a);
    let held = run("contain", "k-held", None, Some("inc-1"));
    b.create_run(&held, Vec::new()).await.unwrap();
    assert!(b.lease_run(&held.id).await.unwrap(), "B holds this one");
    let saved: Vec<Run> = (0..100)
        .map(|i| run("contain", &format!("k-saved-{i}"), None, Some("inc-1")))
        .collect();
    for r in &saved {
        a.create_run(r, Vec::new()).await.unwrap();
    }
    let entry = |r: &Run, to: &str| {
        vec![
            NewEntry::new(kind::RUN_STATE)
                .run(r.id.clone())
                .detail(json!({ "to": to })),
        ]
    };

    // All at once: 200 creations (two of them on one concurrency key), 100 saves, and A's save
    // of the run B holds.
    let created: Vec<Run> = (0..200)
        .map(|i| {
            let key = if i == 199 {
                "k-new-0".to_owned()
            } else {
                format!("k-new-{i}")
            };
            run("contain", &key, Some(&format!("alert-{i}")), Some("inc-1"))
        })
        .collect();
    let mut tasks = tokio::task::JoinSet::new();
    for r in created.clone() {
        let (a, audit) = (a.clone(), entry(&r, "queued"));
        tasks.spawn(async move { ("create", r.id.clone(), a.create_run(&r, audit).await) });
    }
    for mut r in saved.clone() {
        r.status = RunStatus::Running;
        let (a, audit) = (a.clone(), entry(&r, "running"));
        tasks.spawn(async move {
            let outcome = a.save_run(&r, audit, true).await.map(|()| None);
            ("save", r.id.clone(), outcome)
        });
    }
    let mut stale = held.clone();
    stale.status = RunStatus::Failed;
    let audit = entry(&stale, "failed");
    let a2 = a.clone();
    tasks.spawn(async move {
        let outcome = a2.save_run(&stale, audit, true).await.map(|()| None);
        ("fenced", stale.id.clone(), outcome)
    });
    let mut answered_by_another = Vec::new();
    let mut refused = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        match joined.unwrap() {
            ("fenced", id, Err(StoreError::LeaseLost(lost))) => {
                assert_eq!(lost, id);
                refused.push(id);
            }
            (what, id, Ok(Some(existing))) => {
                assert_eq!(what, "create", "{id}");
                answered_by_another.push((id, existing));
            }
            (_, _, Ok(None)) => {}
            (what, id, other) => panic!("{what} of {id}: {other:?}"),
        }
    }
    assert_eq!(refused, vec![held.id.clone()], "the fenced save is refused");
    // The two creations on one key: whichever came second is answered the first's run.
    let twins = [created[0].id.clone(), created[199].id.clone()];
    assert_eq!(answered_by_another.len(), 1, "{answered_by_another:?}");
    let (second, first) = &answered_by_another[0];
    assert!(twins.contains(second) && twins.contains(first) && second != first);

    for r in &created {
        let stored = a.run(&r.id).await.unwrap();
        assert_eq!(stored.is_some(), r.id != *second, "{}", r.id);
    }
    for r in &saved {
        assert_eq!(
            a.run(&r.id).await.unwrap().unwrap().status,
            RunStatus::Running
        );
    }
    assert_eq!(
        a.run(&held.id).await.unwrap().unwrap().status,
        RunStatus::Queued,
        "the fenced save changed nothing"
    );
    assert!(
        a.audit_entries(Some(&held.id), 0).await.unwrap().is_empty(),
        "nor logged anything"
    );
    let report = a.audit_verify().await.unwrap();
    assert!(report.ok(), "{:?}", report.problems);
    assert_eq!(report.entries, 300, "one entry per creation and per save");
    pg::drop_schema(&schema).await;
}
