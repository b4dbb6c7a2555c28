//! aws-ssm's `capture_memory` to the end: the command sent once, the run waiting durably while it
//! runs on the instance, the image recorded with its size and SHA-256, a failure on the instance
//! becoming the step's error, and the stock EC2 playbook capturing memory before it isolates.
//!
//! SSM Run Command and S3 are moto (5.2.5). moto runs nothing on an instance: it answers
//! `GetCommandInvocation` with `Success` at once and empty output. So a small fake, [`Instance`],
//! sits in front of moto's SSM: it forwards every call to moto and rewrites only the answer to
//! `GetCommandInvocation`, in the fields the SSM API reference (API version 2014-11-06,
//! GetCommandInvocation) gives it: `Status` (Pending | InProgress | Delayed | Success | Cancelled
//! | TimedOut | Failed | Cancelling), `StatusDetails`, `ResponseCode` (-1 while the command
//! runs), `ExecutionEndDateTime`, `StandardOutputContent`, `StandardErrorContent`. Each command
//! reads `InProgress` for the test's number of polls, then ends as the test chose. When it ends
//! well, the fake does on moto what the default capture command does on an instance: it reads the
//! command line moto stored, uploads the image to the `s3://` address in it (one PUT, or a
//! multipart upload; S3 (moto) computes the SHA-256 checksum itself), and prints the `sha256sum`
//! and `stat -c '%s %n'` lines.

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use cordon::engine::exec::{ActionCall, ActionRunner};
use cordon::integrations::Integrations;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use support::moto::{Moto, xml_value};
use support::*;

const REGION: &str = "eu-west-2";
const BUCKET: &str = "cordon-evidence";
const SECRET_KEY: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
/// A run id as the engine makes them (UUIDv7).
const RUN: &str = "0190f6f0-1c2d-7b3a-8c4d-5e6f70819203";
/// An instance id for the tests that need no EC2 instance (moto's SSM does not look).
const INSTANCE: &str = "i-0a1b2c3d4e5f67890";

// ---------------------------------------------------------------------------------------------
// The instance: a fake in front of moto's SSM

/// How each command sent to the instance ends.
#[derive(Clone)]
enum End {
    /// The capture works: `image` is uploaded where the command says, and the command prints the
    /// SHA-256 and size of `claims` (a lying or broken instance), or of the image.
    Uploads {
        image: Vec<u8>,
        multipart: bool,
        claims: Option<Vec<u8>>,
    },
    /// The command fails on the instance with this status and output.
    Fails {
        status: &'static str,
        details: &'static str,
        code: i64,
        stderr: &'static str,
        stdout: &'static str,
    },
}

struct Script {
    /// Reads of a command's invocation that answer `InProgress` before its end.
    polls: usize,
    end: End,
}

struct InstanceState {
    moto: Arc<Moto>,
    script: Mutex<Script>,
    /// Reads of each command's invocation so far.
    reads: Mutex<HashMap<String, usize>>,
    /// The `X-Amz-Target` of every SSM call, in order.
    calls: Mutex<Vec<String>>,
}

#[derive(Clone)]
struct Instance {
    base: String,
    state: Arc<InstanceState>,
}

impl Instance {
    async fn start(moto: Arc<Moto>, polls: usize, end: End) -> Instance {
        let state = Arc::new(InstanceState {
            moto,
            script: Mutex::new(Script { polls, end }),
            reads: Mutex::default(),
            calls: Mutex::default(),
        });
        let fake = fake::serve(Router::new().fallback(ssm).with_state(state.clone())).await;
        Instance {
            base: fake.base,
            state,
        }
    }

    /// How many SSM calls of `action` (`SendCommand`) the instance's endpoint received.
    fn calls(&self, action: &str) -> usize {
        let target = format!("AmazonSSM.{action}");
        self.state
            .calls
            .lock()
            .unwrap()
            .iter()
            .filter(|t| **t == target)
            .count()
    }

    /// From now on, each command reads `InProgress` `polls` times (counting the reads so far),
    /// then ends with `end`.
    fn script(&self, polls: usize, end: End) {
        *self.state.script.lock().unwrap() = Script { polls, end };
    }

    /// Reads of command invocations so far, all commands together.
    fn reads(&self) -> usize {
        self.state.reads.lock().unwrap().values().sum()
    }
}

async fn ssm(State(state): State<Arc<InstanceState>>, headers: HeaderMap, body: Bytes) -> Response {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let target = header("x-amz-target");
    state.calls.lock().unwrap().push(target.clone());
    let mut forward = state
        .moto
        .http
        .post(format!("{}/", state.moto.base))
        .body(body);
    for name in [
        "authorization",
        "content-type",
        "x-amz-target",
        "x-amz-date",
    ] {
        forward = forward.header(name, header(name));
    }
    let answer = forward.send().await.expect("moto answers");
    let status = StatusCode::from_u16(answer.status().as_u16()).unwrap();
    let text = answer.text().await.unwrap();
    let json_type = [("content-type", "application/x-amz-json-1.1")];
    if target != "AmazonSSM.GetCommandInvocation" || status != StatusCode::OK {
        return (status, json_type, text).into_response();
    }
    let mut invocation: Value = serde_json::from_str(&text).unwrap();
    let command = invocation["CommandId"].as_str().unwrap().to_owned();
    let read = {
        let mut reads = state.reads.lock().unwrap();
        let read = reads.entry(command.clone()).or_default();
        *read += 1;
        *read
    };
    let (polls, end) = {
        let script = state.script.lock().unwrap();
        (script.polls, script.end.clone())
    };
    let fields = if read <= polls {
        json!({
            "Status": "InProgress", "StatusDetails": "InProgress", "ResponseCode": -1,
            "ExecutionEndDateTime": "", "StandardOutputContent": "", "StandardErrorContent": "",
        })
    } else {
        match end {
            End::Uploads {
                image,
                multipart,
                claims,
            } => {
                let listed = state
                    .moto
                    .json(
                        "ssm",
                        REGION,
                        "AmazonSSM.ListCommands",
                        json!({ "CommandId": command }),
                    )
                    .await;
                let line = listed["Commands"][0]["Parameters"]["commands"][0]
                    .as_str()
                    .unwrap()
                    .to_owned();
                let (file, s3_uri) = upload_target(&line);
                // Only the first read at the end runs the upload; later ones read its result.
                if read == polls + 1 {
                    upload(&state.moto, &s3_uri, &image, multipart).await;
                }
                let printed = claims.unwrap_or(image);
                json!({
                    "Status": "Success", "StatusDetails": "Success", "ResponseCode": 0,
                    "StandardOutputContent": format!(
                        "{}  {file}\n{} {file}\n", sha256_hex(&printed), printed.len()
                    ),
                    "StandardErrorContent": "",
                })
            }
            End::Fails {
                status,
                details,
                code,
                stderr,
                stdout,
            } => json!({
                "Status": status, "StatusDetails": details, "ResponseCode": code,
                "StandardOutputContent": stdout, "StandardErrorContent": stderr,
            }),
        }
    };
    for (key, value) in fields.as_object().unwrap() {
        invocation[key] = value.clone();
    }
    (StatusCode::OK, json_type, invocation.to_string()).into_response()
}

/// The local file and the `s3://` address of the default command's `aws s3 cp '<file>' '<uri>'`.
fn upload_target(command: &str) -> (String, String) {
    let after = command
        .split_once("aws s3 cp '")
        .unwrap_or_else(|| panic!("no upload in {command}"))
        .1;
    let mut quoted = after.split('\'');
    let file = quoted.next().unwrap().to_owned();
    assert_eq!(quoted.next(), Some(" "), "{command}");
    let uri = quoted.next().unwrap().to_owned();
    (file, uri)
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The Authorization header moto picks the service and region from (it checks no signature).
fn scope(service: &str) -> String {
    format!(
        "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20240101/{REGION}/{service}/aws4_request, \
         SignedHeaders=host, Signature=0"
    )
}

/// Puts `image` at `s3_uri` in moto as the AWS CLI does with `--checksum-algorithm SHA256`:
/// S3 computes the checksum (one PUT: of the object; multipart: of the parts' checksums).
async fn upload(moto: &Moto, s3_uri: &str, image: &[u8], multipart: bool) {
    let path = s3_uri.strip_prefix("s3://").unwrap();
    let url = format!("{}/{path}", moto.base);
    let send = async |request: reqwest::RequestBuilder| {
        let response = request
            .header("Authorization", scope("s3"))
            .send()
            .await
            .unwrap();
        let status = response.status();
        let etag = response
            .headers()
            .get("etag")
            .map(|v| v.to_str().unwrap().to_owned());
        let text = response.text().await.unwrap();
        assert!(status.is_success(), "moto S3 answered {status}: {text}");
        (etag, text)
    };
    if !multipart {
        send(
            moto.http
                .put(&url)
                .header("x-amz-sdk-checksum-algorithm", "SHA256")
                .header("Content-Type", "application/octet-stream")
                .body(image.to_vec()),
        )
        .await;
        return;
    }
    let (_, created) = send(
        moto.http
            .post(format!("{url}?uploads"))
            .header("x-amz-checksum-algorithm", "SHA256"),
    )
    .await;
    let upload = xml_value(&created, "UploadId");
    let (etag, _) = send(
        moto.http
            .put(format!("{url}?partNumber=1&uploadId={upload}"))
            .header("x-amz-sdk-checksum-algorithm", "SHA256")
            .header("Content-Type", "application/octet-stream")
            .body(image.to_vec()),
    )
    .await;
    let etag = etag.expect("a part's ETag");
    send(moto.http.post(format!("{url}?uploadId={upload}")).header("Content-Type", "application/xml").body(format!(
        "<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>{etag}</ETag></Part></CompleteMultipartUpload>"
    )))
    .await;
}

/// moto's answer to a HEAD of `s3_uri`: its status.
async fn head(moto: &Moto, s3_uri: &str) -> u16 {
    let path = s3_uri.strip_prefix("s3://").unwrap();
    moto.http
        .head(format!("{}/{path}", moto.base))
        .header("Authorization", scope("s3"))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn create_bucket(moto: &Moto) {
    let (status, body) = moto
        .s3(
            reqwest::Method::PUT,
            REGION,
            &format!("/{BUCKET}"),
            &format!(
                "<CreateBucketConfiguration><LocationConstraint>{REGION}</LocationConstraint></CreateBucketConfiguration>"
            ),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

/// Bytes that look like nothing in particular, `len` of them.
fn image(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u64).wrapping_mul(2_654_435_761).to_le_bytes()[1] ^ seed)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Set-up

/// The `integrations:` section: the repo's integrations, SSM through the instance fake, EC2 and
/// S3 on moto.
fn integrations_yaml(moto: &str, ssm: &str) -> String {
    format!(
        r#"integrations:
  paths: ["{repo}/integrations"]
  credentials:
    aws:
      access_key_id: AKIAIOSFODNN7EXAMPLE
      secret_access_key: {SECRET_KEY}
      endpoints:
        "ec2.*.amazonaws.com": "{moto}"
        "ssm.*.amazonaws.com": "{ssm}"
        "s3.*.amazonaws.com": "{moto}"
  settings:
    aws-ssm: {{ evidence_bucket: {BUCKET} }}
"#,
        repo = env!("CARGO_MANIFEST_DIR"),
    )
}

/// moto with the evidence bucket, and the instance in front of its SSM.
async fn world(polls: usize, end: End) -> (Arc<Moto>, Instance) {
    let moto = Arc::new(Moto::start().await);
    create_bucket(&moto).await;
    let instance = Instance::start(moto.clone(), polls, end).await;
    (moto, instance)
}

fn load(moto: &Moto, instance: &Instance) -> Integrations {
    let yaml = integrations_yaml(&moto.base, &instance.base);
    let config = cordon::config::parse(&yaml, std::path::Path::new("test.yaml"))
        .unwrap_or_else(|d| panic!("{d}"));
    Integrations::load(&config.integrations, reqwest::Client::new(), None)
        .unwrap_or_else(|d| panic!("integrations load: {d:?}"))
}

fn call(step: &str) -> ActionCall {
    ActionCall {
        run_id: RUN.into(),
        step_id: step.into(),
        playbook: "test".into(),
        incident_id: Some("inc-9".into()),
        idempotency_key: format!("{RUN}:{step}"),
        dry_run: false,
        account: None,
    }
}

/// One attempt of `aws-ssm.capture_memory` on [`INSTANCE`] as step `step`.
async fn attempt(
    aws: &Integrations,
    step: &str,
) -> Result<Value, cordon::engine::exec::ActionError> {
    aws.call(
        "aws-ssm.capture_memory",
        json!({ "instance_id": INSTANCE, "region": REGION }),
        &call(step),
    )
    .await
}

fn uri_of(step: &str) -> String {
    format!("s3://{BUCKET}/cordon/memory/inc-9/{INSTANCE}/{RUN}-{step}.lime")
}

/// The commands moto holds for [`INSTANCE`].
async fn commands(moto: &Moto) -> Vec<Value> {
    let listed = moto
        .json(
            "ssm",
            REGION,
            "AmazonSSM.ListCommands",
            json!({ "InstanceId": INSTANCE }),
        )
        .await;
    listed["Commands"].as_array().unwrap().clone()
}

// ---------------------------------------------------------------------------------------------
// The action

#[tokio::test]
async fn a_capture_is_sent_once_polled_while_it_runs_and_recorded_with_the_images_size_and_sha256()
{
    // A multipart upload, as every real image is (above the CLI's 8 MiB threshold): S3's checksum
    // is then one of the parts' checksums, and the image's own digest is the instance's.
    let bytes = image(300_000, 7);
    let (moto, instance) = world(
        2,
        End::Uploads {
            image: bytes.clone(),
            multipart: true,
            claims: None,
        },
    )
    .await;
    let aws = load(&moto, &instance);
    let uri = uri_of("memory");

    for poll in 1..=2 {
        let waiting = attempt(&aws, "memory").await.unwrap_err();
        assert!(waiting.retryable, "poll {poll}: {}", waiting.message);
        assert!(
            waiting
                .message
                .starts_with(&format!("memory capture on {INSTANCE} is InProgress")),
            "{}",
            waiting.message
        );
        assert_eq!(head(&moto, &uri).await, 404, "no image yet");
    }
    let out = attempt(&aws, "memory").await.unwrap();
    let digest = sha256_hex(&bytes);
    assert_eq!(out["status"], "Success");
    assert_eq!(out["s3_uri"], uri.as_str());
    assert_eq!(out["size_bytes"], 300_000);
    assert_eq!(out["sha256"], digest.as_str());
    assert_eq!(out["sha256_source"], "instance");
    let evidence = &out["evidence"][0];
    assert_eq!(evidence["kind"], "memory-image");
    assert_eq!(evidence["location"], uri.as_str());
    assert_eq!(evidence["sha256"], digest.as_str());
    let details = &evidence["details"];
    assert_eq!(details["size_bytes"], 300_000);
    assert_eq!(details["sha256_source"], "instance");
    // moto's HeadObject gives the checksum of the parts' checksums without its `-1` and type;
    // the ETag's `-1` says it is a one-part multipart upload.
    assert_eq!(details["s3_parts"], 1, "{details}");
    assert!(details["s3_checksum_sha256"].is_string(), "{details}");
    assert_eq!(details["command_id"], out["command_id"]);

    // One command, sent once for the three attempts, with the upload asking S3 for a checksum.
    assert_eq!(instance.calls("SendCommand"), 1);
    assert_eq!(instance.calls("GetCommandInvocation"), 3);
    let sent = commands(&moto).await;
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0]["CommandId"], out["command_id"]);
    assert_eq!(sent[0]["DocumentName"], "AWS-RunShellScript");
    assert_eq!(sent[0]["Comment"], format!("cordon {RUN}:memory"));
    let script = sent[0]["Parameters"]["commands"][0].as_str().unwrap();
    let file = format!("/tmp/cordon-memory-{RUN}-memory.lime");
    for part in [
        format!("avml '{file}'"),
        format!("sha256sum '{file}'"),
        format!("stat -c '%s %n' '{file}'"),
        format!("aws s3 cp '{file}' '{uri}' --checksum-algorithm SHA256"),
        format!("rm -f '{file}'"),
    ] {
        assert!(script.contains(&part), "{part} in {script}");
    }

    // A repeat of the step (a crash after the answer) records the same image, sending nothing.
    let again = attempt(&aws, "memory").await.unwrap();
    let without_time = |v: &Value| {
        let mut v = v["evidence"][0].clone();
        v.as_object_mut().unwrap().remove("collected_at");
        v
    };
    assert_eq!(without_time(&again), without_time(&out));
    assert_eq!(instance.calls("SendCommand"), 1);
    assert_eq!(commands(&moto).await.len(), 1);

    // One PUT (an image below the multipart threshold): S3's own SHA-256 of the object is the
    // hash, and what the instance printed must agree with it.
    let small = image(70_000, 3);
    instance.script(
        0,
        End::Uploads {
            image: small.clone(),
            multipart: false,
            claims: None,
        },
    );
    let out = attempt(&aws, "single").await.unwrap();
    assert_eq!(out["sha256"], sha256_hex(&small).as_str());
    assert_eq!(out["sha256_source"], "s3", "{out}");
    assert_eq!(out["size_bytes"], 70_000);
    assert_eq!(out["evidence"][0]["details"]["sha256_source"], "s3");

    // An instance whose printed hash is not that of what reached S3: refused, not recorded.
    let mut other = small.clone();
    other[100] ^= 1;
    instance.script(
        0,
        End::Uploads {
            image: small.clone(),
            multipart: false,
            claims: Some(other.clone()),
        },
    );
    let refused = attempt(&aws, "lying").await.unwrap_err();
    assert!(!refused.retryable, "{}", refused.message);
    assert_eq!(
        refused.message,
        format!(
            "{} has SHA-256 {} in S3, but the image on {INSTANCE} had {}: the upload is not the image",
            uri_of("lying"),
            sha256_hex(&small),
            sha256_hex(&other)
        )
    );

    // ... and one whose image was larger than what arrived (a multipart upload: no S3 digest).
    instance.script(
        0,
        End::Uploads {
            image: small.clone(),
            multipart: true,
            claims: Some(image(80_000, 3)),
        },
    );
    let refused = attempt(&aws, "short").await.unwrap_err();
    assert!(!refused.retryable, "{}", refused.message);
    assert_eq!(
        refused.message,
        format!(
            "{} is 70000 bytes, but the image on {INSTANCE} was 80000: the upload is not the image",
            uri_of("short")
        )
    );
}

#[tokio::test]
async fn a_command_that_fails_on_the_instance_fails_the_step_with_the_end_of_its_output() {
    let (moto, instance) = world(
        1,
        End::Fails {
            status: "Failed",
            details: "Failed",
            code: 1,
            stderr: "\nError: unable to read memory: no source available (/proc/kcore, /dev/crash, /dev/mem)\n",
            stdout: "",
        },
    )
    .await;
    let aws = load(&moto, &instance);

    let waiting = attempt(&aws, "memory").await.unwrap_err();
    assert!(waiting.retryable, "{}", waiting.message);
    let failed = attempt(&aws, "memory").await.unwrap_err();
    assert!(
        !failed.retryable,
        "a failure on the instance is not retried"
    );
    let command = commands(&moto).await[0]["CommandId"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        failed.message,
        format!(
            "memory capture on {INSTANCE} failed: Failed, exit code 1; stderr: Error: unable to read \
             memory: no source available (/proc/kcore, /dev/crash, /dev/mem) (SSM command {command})"
        )
    );
    assert_eq!(head(&moto, &uri_of("memory")).await, 404);

    // Run Command stopping a capture that ran past execution_timeout, with a long output: the
    // error keeps its end.
    instance.script(
        0,
        End::Fails {
            status: "TimedOut",
            details: "ExecutionTimedOut",
            code: -1,
            stderr: "",
            stdout: Box::leak(
                format!("{}uploading: 93%\n", "avml: reading memory\n".repeat(100))
                    .into_boxed_str(),
            ),
        },
    );
    let timed_out = attempt(&aws, "memory2").await.unwrap_err();
    assert!(!timed_out.retryable);
    let command = commands(&moto).await[1]["CommandId"]
        .as_str()
        .unwrap()
        .to_owned();
    let kept = format!("{}uploading: 93%", "avml: reading memory\n".repeat(100));
    let kept = &kept[kept.len() - 400..];
    assert_eq!(
        timed_out.message,
        format!(
            "memory capture on {INSTANCE} failed: TimedOut (ExecutionTimedOut); stdout: …{kept} (SSM command {command})"
        )
    );
    assert!(!timed_out.message.contains(SECRET_KEY));
    assert_eq!(instance.calls("SendCommand"), 2, "one command per step");
}

// ---------------------------------------------------------------------------------------------
// Through the server

/// A config for a `cordon serve` process on `dir`, with `playbooks` and the integrations.
fn process_config(
    dir: &std::path::Path,
    playbooks: &std::path::Path,
    integrations: &str,
) -> std::path::PathBuf {
    let config = dir.join("cordon.yaml");
    std::fs::write(
        &config,
        format!(
            "server:\n  listen: 127.0.0.1:0\n  admin_token: {ADMIN_TOKEN}\nstore:\n  path: {}\nlog:\n  format: json\nplaybooks:\n  paths: [{}]\n{integrations}{}",
            dir.join("store").display(),
            playbooks.display(),
            all_sources(),
        ),
    )
    .unwrap();
    config
}

/// A generic alert about `instance` in [`REGION`].
fn alert_about(instance: &str) -> String {
    json!({
        "title": "Suspicious process", "kind": "suspicious-process", "severity": 8,
        "resource": { "kind": "aws.ec2.instance", "id": instance, "region": REGION },
    })
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_run_waits_for_the_capture_as_a_retrying_step_and_a_sigkill_in_between_changes_nothing()
{
    let bytes = image(50_000, 11);
    let end = End::Uploads {
        image: bytes.clone(),
        multipart: true,
        claims: None,
    };
    let (moto, instance) = world(usize::MAX, end.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let playbooks = dir.path().join("playbooks");
    std::fs::create_dir_all(&playbooks).unwrap();
    write_playbook(
        &playbooks,
        "memory",
        r#"id: memory
name: Capture memory
on:
  source: generic
steps:
  - id: memory
    uses: aws-ssm.capture_memory
    with: { instance_id: "${{ alert.resource.id }}", region: "${{ alert.resource.region }}" }
    retry: { attempts: 100, backoff: 100ms, max_delay: 200ms }
outputs:
  sha256: "${{ steps.memory.output.sha256 }}"
"#,
    );
    let config = process_config(
        dir.path(),
        &playbooks,
        &integrations_yaml(&moto.base, &instance.base),
    );
    let server = Process::start(&config);
    let (status, answer) = server.post_generic(alert_about(INSTANCE).as_bytes()).await;
    assert_eq!(status, 202, "{answer}");
    let alert = answer["alerts"][0]["alert_id"].as_str().unwrap().to_owned();
    let run = server.run_for_alert(&alert).await;

    // The capture runs: the run waits with the step retrying at a due time, no worker held.
    wait_until(
        Duration::from_secs(10),
        || "three polls".into(),
        async || instance.reads() >= 3,
    )
    .await;
    let shown = server.admin(&format!("/v1/runs/{run}")).await;
    let step = &shown["run"]["steps"]["memory"];
    assert_eq!(shown["run"]["status"], "waiting", "{shown}");
    assert_eq!(step["status"], "retrying", "{step}");
    assert!(step["due_at"].is_string(), "{step}");
    assert!(
        step["error"].as_str().unwrap().contains("is InProgress"),
        "{step}"
    );

    let mut server = server;
    server.child.kill().unwrap(); // SIGKILL, in the middle of the wait
    server.child.wait().unwrap();
    let polls_before = instance.reads();
    // Two more polls after the restart, then the capture is done.
    instance.script(polls_before + 2, end);

    let server = Process::start(&config);
    let done = server.wait_run(&run, "finished", finished).await;
    assert_eq!(done["run"]["status"], "succeeded", "{}", done["run"]);
    assert_eq!(
        done["run"]["outputs"]["sha256"],
        sha256_hex(&bytes).as_str()
    );
    assert_eq!(
        instance.calls("SendCommand"),
        1,
        "sent once, across the restart"
    );
    assert_eq!(instance.reads(), polls_before + 3);
    let attempts = done["run"]["steps"]["memory"]["attempts"].as_u64().unwrap();
    assert!(attempts as usize >= polls_before + 3, "{attempts}");

    let incident = done["run"]["incident_id"].as_str().unwrap();
    let incident = server.admin(&format!("/v1/incidents/{incident}")).await;
    let evidence = &incident["incident"]["evidence"][0];
    assert_eq!(evidence["kind"], "memory-image");
    assert_eq!(evidence["sha256"], sha256_hex(&bytes).as_str());
    assert_eq!(evidence["details"]["size_bytes"], 50_000);
}

/// The server config for the stock EC2 playbook.
fn stock_config(moto: &str, ssm: &str) -> String {
    format!(
        "playbooks:\n  paths: [\"{}/playbooks/aws-ec2-compromise.yaml\"]\napprovers:\n  on-call: [cli:analyst]\n{}{}",
        env!("CARGO_MANIFEST_DIR"),
        integrations_yaml(moto, ssm),
        all_sources()
    )
}

/// An EC2 instance in moto's default VPC; its id.
async fn ec2_instance(moto: &Moto) -> String {
    let launched = moto
        .ec2(
            REGION,
            "RunInstances",
            &[
                ("ImageId", "ami-12c6146b"),
                ("InstanceType", "t3.micro"),
                ("MinCount", "1"),
                ("MaxCount", "1"),
            ],
        )
        .await;
    xml_value(&launched, "instanceId")
}

/// The group ids of the instance's interfaces, as moto has them.
async fn instance_groups(moto: &Moto, instance: &str) -> Vec<String> {
    let xml = moto
        .ec2(
            REGION,
            "DescribeNetworkInterfaces",
            &[
                ("Filter.1.Name", "attachment.instance-id"),
                ("Filter.1.Value.1", instance),
            ],
        )
        .await;
    support::moto::xml_values(&xml, "groupId")
}

fn tor_relay(instance: &str) -> Vec<u8> {
    let mut finding: Value = serde_json::from_slice(&read_fixture(
        "alerts/aws_guardduty/sekoia_detail_instance_network__UnauthorizedAccess_EC2_TorRelay.json",
    ))
    .unwrap();
    finding["id"] = json!(format!("tor-relay-{instance}"));
    finding["region"] = json!(REGION);
    finding["resource"]["instanceDetails"]["instanceId"] = json!(instance);
    serde_json::to_vec(&finding).unwrap()
}

#[tokio::test]
async fn the_stock_ec2_playbook_captures_memory_before_it_asks_and_says_why_when_it_could_not() {
    let bytes = image(120_000, 5);
    let (moto, instance) = world(
        0,
        End::Uploads {
            image: bytes.clone(),
            multipart: true,
            claims: None,
        },
    )
    .await;
    let id = ec2_instance(&moto).await;
    let groups = instance_groups(&moto, &id).await;
    let server = TestServer::start_with(&stock_config(&moto.base, &instance.base)).await;
    let answer = server.accept("aws.guardduty", tor_relay(&id)).await;
    let alert = answer["alerts"][0]["alert_id"].as_str().unwrap().to_owned();
    let run = server.run_for_alert(&alert).await;

    let prompt = server.wait_prompt(&run, "approve").await;
    let shown = server.admin(&format!("/v1/runs/{run}")).await;
    let incident = shown["run"]["incident_id"].as_str().unwrap().to_owned();
    let uri = format!("s3://{BUCKET}/cordon/memory/{incident}/{id}/{run}-memory.lime");
    let digest = sha256_hex(&bytes);
    assert!(
        prompt.contains(&format!("; memory image at {uri} (SHA-256 {digest})")),
        "{prompt}"
    );
    // The image is in S3 while the instance still has its network.
    assert_eq!(head(&moto, &uri).await, 200);
    assert_eq!(instance_groups(&moto, &id).await, groups);

    let (status, body) = server
        .decide(&run, "approve", "approve", "cli:analyst")
        .await;
    assert_eq!(status, 200, "{body}");
    let done = server.wait_run(&run, "finished", finished).await;
    assert_eq!(done["run"]["status"], "succeeded", "{}", done["run"]);
    let outputs = &done["run"]["outputs"];
    assert_eq!(outputs["isolated"], true);
    assert_eq!(outputs["memory_image"], uri.as_str());
    assert_eq!(outputs["memory_sha256"], digest.as_str());
    let quarantine = outputs["quarantine_group"].as_str().unwrap();
    assert_eq!(instance_groups(&moto, &id).await, [quarantine]);

    let shown = server.admin(&format!("/v1/incidents/{incident}")).await;
    let evidence = shown["incident"]["evidence"].as_array().unwrap();
    let memory: Vec<&Value> = evidence
        .iter()
        .filter(|e| e["kind"] == "memory-image")
        .collect();
    assert_eq!(memory.len(), 1, "{evidence:?}");
    assert_eq!(memory[0]["location"], uri.as_str());
    assert_eq!(memory[0]["sha256"], digest.as_str());
    assert_eq!(memory[0]["details"]["size_bytes"], 120_000);
    assert_eq!(instance.calls("SendCommand"), 1);

    // Another instance, where the capture cannot run: the on-call is told why, and still decides.
    instance.script(
        0,
        End::Fails {
            status: "Failed",
            details: "Failed",
            code: 127,
            stderr: "/var/lib/amazon/ssm/i-0/document/orchestration/x/awsrunShellScript/0.awsrunShellScript/_script.sh: line 1: avml: command not found",
            stdout: "",
        },
    );
    let id = ec2_instance(&moto).await;
    let groups = instance_groups(&moto, &id).await;
    let answer = server.accept("aws.guardduty", tor_relay(&id)).await;
    let alert = answer["alerts"][0]["alert_id"].as_str().unwrap().to_owned();
    let run = server.run_for_alert(&alert).await;

    let prompt = server.wait_prompt(&run, "approve").await;
    assert!(
        prompt.contains(&format!(
            "; no memory image: memory capture on {id} failed: Failed, exit code 127; stderr: "
        )) && prompt.contains("avml: command not found"),
        "{prompt}"
    );
    let shown = server.admin(&format!("/v1/runs/{run}")).await;
    let step = &shown["run"]["steps"]["memory"];
    assert_eq!(step["status"], "failed", "{step}");
    assert_eq!(
        step["attempts"], 1,
        "a failure on the instance is not polled again"
    );

    let (status, body) = server.decide(&run, "approve", "deny", "cli:analyst").await;
    assert_eq!(status, 200, "{body}");
    let done = server.wait_run(&run, "finished", finished).await;
    assert_eq!(done["run"]["status"], "succeeded", "{}", done["run"]);
    assert_eq!(done["run"]["outputs"]["isolated"], false);
    assert_eq!(done["run"]["outputs"]["memory_image"], Value::Null);
    assert_eq!(instance_groups(&moto, &id).await, groups);
}
