//! Two real `cordon serve` processes on one PostgreSQL database, as a SOC runs several replicas:
//! a decision may reach either replica, whichever holds the run, and the run resumes once; a
//! timer armed by a replica that died fires on the one still standing. The database is a fresh
//! schema of `CORDON_TEST_DATABASE_URL` (scripts/test sets it); without it these tests fail.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};
use support::pg::fresh_schema;
use support::{ADMIN_TOKEN, Client, FakeApi, INTAKE_TOKEN, Process, wait_until, write_playbook};

/// How long the replica tests wait for a state: a minute (replicas poll each second; the machine
/// may be busy).
const WAIT: Duration = Duration::from_secs(60);

/// The config of one replica: its own folder, the shared database and playbooks.
fn replica_config(dir: &Path, name: &str, url: &str, playbooks: &Path) -> PathBuf {
    let config = dir.join(format!("{name}.yaml"));
    std::fs::write(
        &config,
        format!(
            "server:\n  listen: 127.0.0.1:0\n  admin_token: {ADMIN_TOKEN}\n  shutdown_grace: 5s\nstore:\n  kind: postgres\n  url: \"{url}\"\n  pool_size: 4\n  lease_ttl: 3s\nlog:\n  format: json\n  level: info\nplaybooks:\n  paths: [{}]\n  http_allow: {{ gate: [\"127.0.0.1\"], timed: [\"127.0.0.1\"] }}\napprovers:\n  soc: [cli:alice, cli:bob]\nsources:\n  generic:\n    auth:\n      bearer:\n        token: {INTAKE_TOKEN}\n",
            playbooks.display()
        ),
    )
    .unwrap();
    config
}

/// Playbook `id`: ask `soc` (`approval` adds to the step), then POST `{api}/contain/{host}`.
fn contain(id: &str, api: &str, approval: &str) -> String {
    format!(
        "id: {id}\nname: {id}\nvars: {{ api: \"{api}\" }}\non:\n  source: generic\nsteps:\n  - id: ok\n    approval:\n      prompt: contain?\n      approvers: soc\n{approval}  - id: contain\n    uses: core.http\n    with: {{ url: \"${{{{ vars.api }}}}/contain/${{{{ alert.resource.id }}}}\", method: POST }}\n"
    )
}

async fn post_alert(replica: &Client, kind: &str, host: &str) -> String {
    let body = json!({ "title": kind, "kind": kind, "severity": 7, "resource": { "kind": "host", "id": host } });
    let (_, answer) = replica.post_alert("generic", body.to_string()).await;
    answer["alerts"][0]["alert_id"]
        .as_str()
        .unwrap_or_else(|| panic!("not stored: {answer}"))
        .to_owned()
}

async fn runs(replica: &Client, playbook: &str) -> Vec<Value> {
    replica
        .admin(&format!("/v1/runs?playbook={playbook}&limit=1000"))
        .await["runs"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn status(run: &Value) -> &str {
    run["status"].as_str().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decision_on_either_replica_resumes_the_run_once() {
    let url = fresh_schema().await;
    let api = FakeApi::start(Duration::ZERO).await;
    let dir = tempfile::tempdir().unwrap();
    let playbooks = dir.path().join("playbooks");
    std::fs::create_dir_all(&playbooks).unwrap();
    write_playbook(&playbooks, "gate", &contain("gate", &api.base, ""));
    let a = Process::start(&replica_config(dir.path(), "a", &url, &playbooks));
    let b = Process::start(&replica_config(dir.path(), "b", &url, &playbooks));

    // Alerts arrive at both replicas; each replica's runs are visible from the other.
    const RUNS: usize = 20;
    for i in 0..RUNS {
        let replica = if i % 2 == 0 { &a } else { &b };
        post_alert(replica, "gate", &format!("host-{i}")).await;
    }
    wait_until(
        WAIT,
        || "every run waiting for its approval".into(),
        async || {
            let all = runs(&b, "gate").await;
            all.len() == RUNS && all.iter().all(|r| status(r) == "waiting")
        },
    )
    .await;

    // Each decision is sent to both replicas at once, as by two analysts clicking together:
    // one decides, the other is told the approval is settled (or counts as the same person's).
    let all = runs(&a, "gate").await;
    for (i, run) in all.iter().enumerate() {
        let id = run["id"].as_str().unwrap();
        let (first, second) = if i % 2 == 0 {
            ((&a, "cli:alice"), (&b, "cli:bob"))
        } else {
            ((&b, "cli:alice"), (&a, "cli:alice"))
        };
        let ((x, _), (y, _)) = tokio::join!(
            first.0.decide(id, "ok", "approve", first.1),
            second.0.decide(id, "ok", "approve", second.1)
        );
        let codes = [x, y];
        assert!(
            codes.contains(&200),
            "one of the two decisions was taken: {codes:?}"
        );
    }

    wait_until(
        WAIT,
        || "every run finished".into(),
        async || {
            runs(&a, "gate")
                .await
                .iter()
                .all(|r| status(r) == "succeeded")
        },
    )
    .await;
    // Give a second resume, if there were one, time to show.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let calls = api.calls();
    for i in 0..RUNS {
        let call = format!("POST /contain/host-{i}");
        assert_eq!(
            calls.iter().filter(|c| **c == call).count(),
            1,
            "host-{i} was contained once"
        );
    }
    assert_eq!(api.count("POST /contain/"), RUNS);
    for run in runs(&b, "gate").await {
        let decided = &run["steps"]["ok"]["approval"]["decisions"];
        assert_eq!(
            decided.as_array().map(Vec::len),
            Some(1),
            "one decision recorded on {run}"
        );
    }
    let verify = b.admin("/v1/audit/verify").await;
    assert_eq!(verify["ok"], true, "{verify}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timer_armed_by_a_replica_that_died_fires_on_the_other() {
    let url = fresh_schema().await;
    let api = FakeApi::start(Duration::ZERO).await;
    let dir = tempfile::tempdir().unwrap();
    let playbooks = dir.path().join("playbooks");
    std::fs::create_dir_all(&playbooks).unwrap();
    let timeout = "      timeout: 4s\n      on_timeout: approve\n";
    write_playbook(&playbooks, "timed", &contain("timed", &api.base, timeout));
    let mut a = Process::start(&replica_config(dir.path(), "a", &url, &playbooks));
    post_alert(&a, "timed", "host-t").await;
    wait_until(
        WAIT,
        || "the run waiting on A".into(),
        async || {
            runs(&a, "timed")
                .await
                .first()
                .is_some_and(|r| status(r) == "waiting")
        },
    )
    .await;

    // B starts, A dies with the timer in its memory: B fires it from the database.
    let b = Process::start(&replica_config(dir.path(), "b", &url, &playbooks));
    a.child.kill().unwrap();
    a.child.wait().unwrap();
    wait_until(
        WAIT,
        || "the timed-out approval carried out by B".into(),
        async || {
            runs(&b, "timed")
                .await
                .first()
                .is_some_and(|r| status(r) == "succeeded")
        },
    )
    .await;
    let run = runs(&b, "timed").await.remove(0);
    let approval = &run["steps"]["ok"]["approval"];
    assert_eq!(approval["outcome"], true, "{run}");
    assert_eq!(approval["decisions"][0]["via"], "timeout", "{run}");
    assert_eq!(api.count("POST /contain/host-t"), 1);
}

/// What was delivered: by which replica, the entry's key, its payload.
type Deliveries = std::sync::Arc<std::sync::Mutex<Vec<(&'static str, String, String)>>>;

/// Records what each replica's outbox delivered.
struct Recorder {
    replica: &'static str,
    delivered: Deliveries,
}

#[async_trait::async_trait]
impl cordon::outbox::Deliver for Recorder {
    async fn deliver(
        &self,
        entry: &cordon::outbox::OutboxEntry,
    ) -> Result<(), cordon::outbox::DeliveryError> {
        self.delivered.lock().unwrap().push((
            self.replica,
            entry.key.clone(),
            entry.payload.as_str().unwrap_or_default().to_owned(),
        ));
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outbox_is_delivered_once_in_order_by_one_replica_and_taken_over_when_it_dies() {
    use cordon::outbox::{Outbox, OutboxEntry};
    use cordon::store::{PostgresStore, Store};
    use std::sync::{Arc, Mutex};

    let url = fresh_schema().await;
    let grouping = cordon::config::GroupingConfig::default();
    let open = async || {
        let store = PostgresStore::connect(&url, 2, &grouping).await.unwrap();
        store.set_lease_ttl(Duration::from_secs(1));
        Arc::new(store) as Arc<dyn Store>
    };
    let (a_store, b_store) = (open().await, open().await);
    let delivered = Arc::new(Mutex::new(Vec::new()));
    let fast = Duration::from_millis(10);
    let a = Outbox::start_with(a_store.clone(), fast, fast);
    let b = Outbox::start_with(b_store.clone(), fast, fast);
    for (outbox, replica) in [(&a, "a"), (&b, "b")] {
        outbox.register(
            "ticket",
            Arc::new(Recorder {
                replica,
                delivered: delivered.clone(),
            }),
        );
    }

    // Entries pushed through both replicas, five keys, ten each.
    let entry = |key: usize, n: usize| {
        OutboxEntry::new(
            "ticket",
            &format!("INC-{key}"),
            "comment",
            json!(format!("{key}.{n}")),
        )
    };
    for n in 0..10 {
        for key in 0..5 {
            let outbox = if (n + key) % 2 == 0 { &a } else { &b };
            outbox.push(vec![entry(key, n)]).await.unwrap();
        }
    }
    wait_until(
        WAIT,
        || "all 50 delivered".into(),
        async || delivered.lock().unwrap().len() >= 50,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let first: Vec<_> = delivered.lock().unwrap().clone();
    assert_eq!(first.len(), 50, "each entry delivered once");
    let holders: std::collections::BTreeSet<&str> = first.iter().map(|d| d.0).collect();
    assert_eq!(holders.len(), 1, "one replica delivered: {holders:?}");
    for key in 0..5 {
        let of_key: Vec<&str> = first
            .iter()
            .filter(|d| d.1 == format!("INC-{key}"))
            .map(|d| d.2.as_str())
            .collect();
        let expected: Vec<String> = (0..10).map(|n| format!("{key}.{n}")).collect();
        assert_eq!(of_key, expected, "INC-{key} in push order");
    }

    // The delivering replica dies (no goodbye): the other takes over once its lease runs out.
    let (dead, dead_store, survivor, survivor_name) = if holders.contains("a") {
        (a, a_store, b, "b")
    } else {
        (b, b_store, a, "a")
    };
    drop(dead);
    drop(dead_store);
    survivor.push(vec![entry(9, 0), entry(9, 1)]).await.unwrap();
    wait_until(
        WAIT,
        || "the survivor delivers".into(),
        async || delivered.lock().unwrap().len() >= 52,
    )
    .await;
    let after: Vec<_> = delivered.lock().unwrap()[50..].to_vec();
    assert_eq!(
        after,
        [
            (survivor_name, "INC-9".to_owned(), "9.0".to_owned()),
            (survivor_name, "INC-9".to_owned(), "9.1".to_owned())
        ]
    );
}
