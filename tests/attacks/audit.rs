//! The audit log: an attacker who can write the store (a stolen disk, a database login) cuts or
//! rewrites the tail of the log to hide what happened, recomputing every hash so the chain alone
//! still verifies, and may forge a checkpoint of their own. A checkpoint signed by the server
//! (`POST /v1/audit/checkpoints`, delivered by the outbox to a folder and to an object-locked S3
//! bucket in moto) shows all three to `cordon audit verify --checkpoint`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use cordon::audit::checkpoint::{Checkpoint, SigningKey};
use cordon::audit::{AuditEntry, NewEntry};
use serde_json::{Value, json};

use crate::support::moto::Moto;
use crate::support::*;

/// The server's signing key (base64 of a 32-byte seed): in a real deployment it comes from a
/// secret the store's host cannot read.
fn server_seed() -> String {
    base64::engine::general_purpose::STANDARD.encode([7u8; 32])
}

/// The generic source and the `audit` section: the signing key, checkpoints on demand only, to
/// the `anchors` folder if given, and `sinks` (more lines of `audit.checkpoints`, then other
/// sections).
fn extra(anchors: Option<&Path>, sinks: &str) -> String {
    let file = anchors.map_or(String::new(), |a| format!("    file: {}\n", a.display()));
    format!(
        "sources:\n  generic:\n    auth:\n      bearer:\n        token: {INTAKE_TOKEN}\naudit:\n  signing_key: {}\n  checkpoints:\n    every: 0s\n{file}{sinks}",
        server_seed(),
    )
}

/// A server whose log holds a few entries (an incident resolved and reopened), a checkpoint of its
/// head delivered to the anchors folder, then stopped. The folder, the config file (for the CLI),
/// the checkpoint file, and the log as stored.
async fn anchored() -> (tempfile::TempDir, PathBuf, PathBuf, Vec<AuditEntry>) {
    let dir = tempfile::tempdir().unwrap();
    let anchors = dir.path().join("anchors");
    let extra = extra(Some(&anchors), "");
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, config_text(dir.path(), &extra)).unwrap();
    let server = TestServer::start_in(dir, &extra).await;
    let (status, body) = server
        .post_alert("generic", generic_alert("Beaconing", "h-1"))
        .await;
    assert_eq!(status, 202, "{body}");
    let incident = body["alerts"][0]["incident_id"]
        .as_str()
        .unwrap()
        .to_owned();
    for change in ["resolve", "reopen", "resolve", "reopen"] {
        let (status, body) = server
            .act(&format!("/v1/incidents/{incident}/{change}"), "cli:lead")
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, body) = server.admin_post("/v1/audit/checkpoints", json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["queued"], json!(["file"]));
    let seq = body["checkpoint"]["seq"].as_u64().unwrap();
    assert!(seq >= 4, "{body}");
    let delivered = anchors.clone();
    wait_until(
        Duration::from_secs(10),
        || "the checkpoint file".into(),
        async || checkpoint_file(&delivered).is_some(),
    )
    .await;
    let dir = server.stop().await;
    let file = checkpoint_file(&anchors).expect("a checkpoint file");
    let written: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(written, body["checkpoint"]);
    let entries = stored(&dir.path().join("store"));
    assert_eq!(entries.last().unwrap().seq, seq);
    (dir, config, file, entries)
}

/// The checkpoint file the outbox delivered to `folder` (not one being written).
fn checkpoint_file(folder: &Path) -> Option<PathBuf> {
    std::fs::read_dir(folder)
        .ok()?
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.extension().is_some_and(|e| e == "json")
                && p.file_name()
                    .is_some_and(|n| !n.to_string_lossy().starts_with('.'))
        })
}

/// The sled tree of the audit log, opened behind Cordon's back (the server is stopped; its last
/// tasks may still hold the store's file lock for a moment on a loaded machine).
fn audit_tree(store: &Path) -> (sled::Db, sled::Tree) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let db = loop {
        match sled::open(store) {
            Ok(db) => break db,
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("the store opens: {e:?}"),
        }
    };
    let tree = db.open_tree("audit").expect("audit tree");
    (db, tree)
}

fn stored(store: &Path) -> Vec<AuditEntry> {
    let (_db, tree) = audit_tree(store);
    tree.iter()
        .map(|row| serde_json::from_slice(&row.unwrap().1).unwrap())
        .collect()
}

/// Replaces entries from `from` on by new ones chained properly onto the entry before: the chain
/// verifies, and only an outside anchor shows the change.
fn rewrite_tail(store: &Path, entries: &[AuditEntry], from: u64) {
    let (db, tree) = audit_tree(store);
    let before = &entries[(from - 2) as usize];
    let forged: Vec<NewEntry> = entries[(from - 1) as usize..]
        .iter()
        .map(|e| NewEntry::new(e.kind.as_str()).actor("cli:someone-else"))
        .collect();
    for entry in cordon::audit::chain(&forged, from, before.hash.clone()).unwrap() {
        tree.insert(entry.seq.to_be_bytes(), serde_json::to_vec(&entry).unwrap())
            .unwrap();
    }
    db.flush().unwrap();
}

fn verify(config: &Path, checkpoint: Option<&Path>) -> (i32, String) {
    let mut args = vec!["audit", "verify"];
    if let Some(path) = checkpoint {
        args.extend(["--checkpoint", path.to_str().unwrap()]);
    }
    let (code, out, err) = cli(config, &args);
    (code, format!("{out}{err}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_tail_is_detected_by_the_checkpoint() {
    let (dir, config, checkpoint, entries) = anchored().await;
    let (code, out) = verify(&config, Some(&checkpoint));
    assert_eq!(code, 0, "{out}");

    // Remove the last two entries: what remains is a perfect chain.
    let store = dir.path().join("store");
    {
        let (db, tree) = audit_tree(&store);
        for entry in &entries[entries.len() - 2..] {
            tree.remove(entry.seq.to_be_bytes()).unwrap();
        }
        db.flush().unwrap();
    }
    let (code, out) = verify(&config, None);
    assert_eq!(code, 0, "the chain alone cannot show a cut: {out}");
    let (code, out) = verify(&config, Some(&checkpoint));
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("cut"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rewritten_tail_is_detected_by_the_checkpoint() {
    let (dir, config, checkpoint, entries) = anchored().await;
    let last = entries.last().unwrap().seq;
    rewrite_tail(&dir.path().join("store"), &entries, last - 1);

    let (code, out) = verify(&config, None);
    assert_eq!(code, 0, "the chain alone cannot show a rewrite: {out}");
    let (code, out) = verify(&config, Some(&checkpoint));
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("rewritten"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_signed_with_another_key_is_refused() {
    let (dir, config, _checkpoint, entries) = anchored().await;
    let last = entries.last().unwrap().seq;
    rewrite_tail(&dir.path().join("store"), &entries, last - 1);

    // The attacker signs the rewritten head with a key of their own, and names that key.
    let forged_head = stored(&dir.path().join("store")).pop().unwrap();
    let attacker = SigningKey::from_secret(&cordon::config::Secret::new(
        base64::engine::general_purpose::STANDARD.encode([9u8; 32]),
    ))
    .unwrap();
    let forged = Checkpoint::sign(&attacker, forged_head.seq, &forged_head.hash);
    let path = dir.path().join("forged.json");
    std::fs::write(&path, serde_json::to_string(&forged).unwrap()).unwrap();

    let (code, out) = verify(&config, Some(&path));
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("does not verify"), "{out}");
    // Naming the attacker's key on the command line is what it takes to accept it.
    let (code, out, err) = cli(
        &config,
        &[
            "audit",
            "verify",
            "--checkpoint",
            path.to_str().unwrap(),
            "--public-key",
            &attacker.public(),
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_anchor_is_an_object_locked_s3_object_the_store_cannot_reach() {
    let moto = Moto::start().await;
    let region = "eu-west-1";
    // A bucket created with Object Lock (which turns versioning on).
    let created = moto
        .http
        .put(format!("{}/cordon-anchors", moto.base))
        .header(
            "Authorization",
            format!("AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20240101/{region}/s3/aws4_request, SignedHeaders=host, Signature=0"),
        )
        .header("x-amz-bucket-object-lock-enabled", "true")
        .body(format!(
            "<CreateBucketConfiguration><LocationConstraint>{region}</LocationConstraint></CreateBucketConfiguration>"
        ))
        .send()
        .await
        .unwrap();
    assert!(
        created.status().is_success(),
        "{}",
        created.text().await.unwrap()
    );

    let dir = tempfile::tempdir().unwrap();
    let s3 = format!(
        "    s3:\n      bucket: cordon-anchors\n      region: {region}\n      credentials: anchor\n      endpoint: {}\n      lock_mode: compliance\n      retain: 30d\nintegrations:\n  credentials:\n    anchor:\n      access_key_id: AKIAIOSFODNN7EXAMPLE\n      secret_access_key: wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\n",
        moto.base
    );
    let server = TestServer::start_in(dir, &extra(None, &s3)).await;
    let (status, body) = server.admin_post("/v1/audit/checkpoints", json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["queued"], json!(["s3"]));
    let seq = body["checkpoint"]["seq"].as_u64().unwrap();

    let mut key = String::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while key.is_empty() {
        let (status, listing) = moto
            .s3(
                reqwest::Method::GET,
                region,
                "/cordon-anchors?list-type=2",
                "",
            )
            .await;
        assert_eq!(status, 200, "{listing}");
        key = crate::support::moto::xml_values(&listing, "Key")
            .into_iter()
            .next()
            .unwrap_or_default();
        let pending = server.state.outbox.pending().await.unwrap();
        assert!(pending.iter().all(|e| !e.dead), "{pending:#?}");
        assert!(
            std::time::Instant::now() < deadline,
            "no object; outbox: {pending:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        key.starts_with(&format!("cordon/audit-checkpoints/checkpoint-{seq:020}-")),
        "{key}"
    );
    let object = moto
        .http
        .get(format!("{}/cordon-anchors/{key}", moto.base))
        .header(
            "Authorization",
            format!("AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20240101/{region}/s3/aws4_request, SignedHeaders=host, Signature=0"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(object.status(), 200);
    let header = |name: &str| {
        object
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    // Locked in compliance mode for the configured 30 days: no one can delete or replace it.
    assert_eq!(header("x-amz-object-lock-mode"), "COMPLIANCE");
    let until: chrono::DateTime<chrono::Utc> = header("x-amz-object-lock-retain-until-date")
        .parse()
        .expect("a retain-until date");
    let days = (until - chrono::Utc::now()).num_days();
    assert!((29..=30).contains(&days), "{until}");
    let stored: Value = object.json().await.unwrap();
    assert_eq!(stored, body["checkpoint"]);
    server.stop().await;
}
