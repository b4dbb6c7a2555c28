//! The enrichment integrations (`integrations/abuseipdb`, `virustotal`, `greynoise`, `ioc`) as a
//! playbook author sees them: their outputs against a fake of each vendor's documented API
//! (`support::intel`, which says which API versions), their errors, an integration folder added at
//! run time, the host allowlist, and credentials that never show up anywhere.

mod support;

use std::path::Path;

use cordon::engine::exec::{ActionCall, ActionError, ActionRunner};
use cordon::integrations::Integrations;
use serde_json::{Value, json};
use support::intel::{
    BROKEN_IP, ECHO_IP, ELSEWHERE, FakeIntel, Keys, QUOTA_IP, REDIRECT_IP, integrations_dir,
};
use support::{ADMIN_TOKEN, INTAKE_TOKEN, TestServer};

fn keys() -> Keys {
    Keys {
        abuseipdb: "test-abuseipdb-key-0a1b".into(),
        virustotal: "test-virustotal-key-2c3d".into(),
        greynoise: "test-greynoise-key-4e5f".into(),
        custom: "test-acme-token-6a7b".into(),
    }
}

/// A path as a YAML (JSON) string.
fn quoted(path: &Path) -> String {
    serde_json::to_string(&path.display().to_string()).unwrap()
}

/// The `integrations:` section: the repo's integrations and `extra_paths`, the three vendors'
/// credentials (keys as given) pointed at the fake, `more` (further credential entries, indented
/// four spaces) and the sample IOC feeds.
fn section(fake: &FakeIntel, keys: &Keys, extra_paths: &[&Path], more: &str) -> String {
    let mut paths = vec![quoted(&integrations_dir())];
    paths.extend(extra_paths.iter().map(|p| quoted(p)));
    let feeds = integrations_dir().join("ioc/fixtures");
    format!(
        "integrations:\n  paths: [{paths}]\n  credentials:\n    abuseipdb:\n      api_key: {abuse}\n      {abuse_at}\n    virustotal:\n      api_key: {vt}\n      {vt_at}\n    greynoise:\n      api_key: {gn}\n      {gn_at}\n{more}  ioc_feeds: [{csv}, {stix}]\n",
        paths = paths.join(", "),
        abuse = keys.abuseipdb,
        abuse_at = fake.endpoints("api.abuseipdb.com"),
        vt = keys.virustotal,
        vt_at = fake.endpoints("www.virustotal.com"),
        gn = keys.greynoise,
        gn_at = fake.endpoints("api.greynoise.io"),
        csv = quoted(&feeds.join("bad-indicators.csv")),
        stix = quoted(&feeds.join("threat-report.stix.json")),
    )
}

/// The integrations as the server loads them from a config holding `section`.
fn load(section: &str) -> Integrations {
    let dir = tempfile::tempdir().unwrap();
    let text = support::config_text(dir.path(), section);
    let config =
        cordon::config::parse(&text, Path::new("test.yaml")).unwrap_or_else(|d| panic!("{d}"));
    Integrations::load(&config.integrations, reqwest::Client::new(), None)
        .unwrap_or_else(|d| panic!("{}", cordon::config::Diagnostics(d)))
}

async fn call(
    integrations: &Integrations,
    action: &str,
    input: Value,
) -> Result<Value, ActionError> {
    let call = ActionCall {
        run_id: "r1".into(),
        step_id: "s1".into(),
        playbook: "p".into(),
        incident_id: None,
        idempotency_key: "r1:s1".into(),
        dry_run: false,
    };
    integrations.call(action, input, &call).await
}

async fn ok(integrations: &Integrations, action: &str, input: Value) -> Value {
    call(integrations, action, input.clone())
        .await
        .unwrap_or_else(|e| panic!("{action} {input}: {}", e.message))
}

async fn err(integrations: &Integrations, action: &str, input: Value) -> ActionError {
    match call(integrations, action, input.clone()).await {
        Ok(out) => panic!("{action} {input} should fail, gave {out}"),
        Err(e) => e,
    }
}

#[tokio::test]
async fn abuseipdb_check_ip_gives_the_score_owner_and_reports() {
    let keys = keys();
    let fake = FakeIntel::start(keys.clone()).await;
    let intel = load(&section(&fake, &keys, &[], ""));

    let out = ok(
        &intel,
        "abuseipdb.check_ip",
        json!({ "ip": "203.0.113.77" }),
    )
    .await;
    assert_eq!(out["ip"], "203.0.113.77");
    assert_eq!(out["score"], 100);
    assert_eq!(out["country"], "CN");
    assert_eq!(out["isp"], "Tencent Cloud Computing (Beijing) Co. Ltd");
    assert_eq!(out["usage_type"], "Data Center/Web Hosting/Transit");
    assert_eq!(out["total_reports"], 1);
    assert_eq!(out["distinct_reporters"], 1);
    assert_eq!(out["last_reported_at"], "2018-12-20T20:55:14+00:00");
    assert_eq!(out["is_whitelisted"], false);
    assert_eq!(out["is_tor"], false);
    assert_eq!(out["link"], "https://www.abuseipdb.com/check/203.0.113.77");

    // The documented request: GET /api/v2/check, the address and the age window in the query,
    // the key in `Key`, JSON asked for.
    let seen = fake.requests_to("abuseipdb");
    assert_eq!(seen.len(), 1);
    let r = &seen[0];
    assert_eq!(
        (r.method.as_str(), r.path.as_str()),
        ("GET", "/api/v2/check")
    );
    assert_eq!(r.param("ipAddress").as_deref(), Some("203.0.113.77"));
    assert_eq!(r.param("maxAgeInDays").as_deref(), Some("90"));
    assert_eq!(r.header("key"), Some(keys.abuseipdb.as_str()));
    assert_eq!(r.header("accept"), Some("application/json"));

    // A step's own window; an IPv6 address; an address nobody reported.
    ok(
        &intel,
        "abuseipdb.check_ip",
        json!({ "ip": "2001:db8::7", "max_age_days": 30 }),
    )
    .await;
    let r = fake.requests_to("abuseipdb").pop().unwrap();
    assert_eq!(r.param("ipAddress").as_deref(), Some("2001:db8::7"));
    assert_eq!(r.param("maxAgeInDays").as_deref(), Some("30"));

    let clean = ok(&intel, "abuseipdb.check_ip", json!({ "ip": "8.8.8.8" })).await;
    assert_eq!(clean["score"], 0);
    assert_eq!(clean["total_reports"], 0);
    assert_eq!(clean["last_reported_at"], Value::Null);
    assert_eq!(clean["is_whitelisted"], true);
}

#[tokio::test]
async fn abuseipdb_refuses_bad_inputs_before_asking() {
    let keys = keys();
    let fake = FakeIntel::start(keys.clone()).await;
    let intel = load(&section(&fake, &keys, &[], ""));

    let e = err(
        &intel,
        "abuseipdb.check_ip",
        json!({ "ip": "203.0.113.77", "max_age_days": 400 }),
    )
    .await;
    assert!(
        e.message
            .contains("max_age_days must be a whole number from 1 to 365"),
        "{}",
        e.message
    );
    let e = err(
        &intel,
        "abuseipdb.check_ip",
        json!({ "ip": "evil.example" }),
    )
    .await;
    assert!(e.message.contains("input `ip`"), "{}", e.message);
    assert!(!e.retryable);
    assert!(fake.requests().is_empty(), "{:?}", fake.requests());
}

#[tokio::test]
async fn abuseipdb_max_age_setting_applies_when_the_step_gives_none() {
    let keys = keys();
    let fake = FakeIntel::start(keys.clone()).await;
    let with_setting = format!(
        "{}  settings:\n    abuseipdb: {{ max_age_days: 7 }}\n",
        section(&fake, &keys, &[], "")
    );
    let intel = load(&with_setting);
    ok(
        &intel,
        "abuseipdb.check_ip",
        json!({ "ip": "203.0.113.77" }),
    )
    .await;
    let r = fake.requests_to("abuseipdb").pop().unwrap();
    assert_eq!(r.param("maxAgeInDays").as_deref(), Some("7"));
}

#[tokio::test]
async fn virustotal_reports_ips_domains_and_files() {
    let keys = keys();
    let fake = FakeIntel::start(keys.clone()).await;
    let intel = load(&section(&fake, &keys, &[], ""));

    let ip = ok(
        &intel,
        "virustotal.check_ip",
        json!({ "ip": "203.0.113.77" }),
    )
    .await;
    assert_eq!(ip["found"], true);
    assert_eq!(
        (
            &ip["malicious"],
            &ip["suspicious"],
            &ip["harmless"],
            &ip["undetected"]
        ),
        (&json!(9), &json!(2), &json!(55), &json!(28))
    );
    assert_eq!(ip["reputation"], -23);
    assert_eq!(ip["country"], "NL");
    assert_eq!(ip["as_owner"], "Example Hosting Ltd");
    assert_eq!(ip["asn"], 64500);
    assert_eq!(ip["network"], "203.0.113.0/24");
    assert_eq!(ip["last_analysis_at"], "2024-06-03T16:00:00Z");
    assert_eq!(
        ip["link"],
        "https://www.virustotal.com/gui/ip-address/203.0.113.77"
    );

    let domain = ok(
        &intel,
        "virustotal.check_domain",
        json!({ "domain": "Evil-Updates.Example." }),
    )
    .await;
    assert_eq!(domain["found"], true);
    assert_eq!(domain["domain"], "evil-updates.example");
    assert_eq!(domain["malicious"], 12);
    assert_eq!(domain["reputation"], -41);
    assert_eq!(domain["registrar"], "Example Registrar, Inc.");
    assert_eq!(domain["created_at"], "2024-05-01T00:00:00Z");
    assert_eq!(domain["categories"]["BitDefender"], "malware");
    assert_eq!(domain["tags"], json!(["dga"]));

    let file = ok(
        &intel,
        "virustotal.check_hash",
        json!({ "hash": "44D88612FEA8A8F36DE82E1278ABB02F" }),
    )
    .await;
    assert_eq!(file["found"], true);
    assert_eq!(file["malicious"], 64);
    assert_eq!(file["threat_label"], "virus.eicar/test");
    assert_eq!(file["name"], "eicar.com");
    assert_eq!(file["type"], "Text");
    assert_eq!(file["size"], 68);
    assert_eq!(
        file["sha256"],
        "275a021bbfb6489e54d471899f7db9d1663fc695ec2fe2a2c4538aabf651fd0f"
    );
    assert_eq!(file["first_seen_at"], "2006-05-22T12:42:02Z");

    // The documented paths, each with the key in `x-apikey`.
    let seen = fake.requests_to("virustotal");
    let paths: Vec<&str> = seen.iter().map(|s| s.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "/api/v3/ip_addresses/203.0.113.77",
            "/api/v3/domains/evil-updates.example",
            "/api/v3/files/44d88612fea8a8f36de82e1278abb02f"
        ]
    );
    assert!(
        seen.iter()
            .all(|s| s.header("x-apikey") == Some(keys.virustotal.as_str()))
    );
}

#[tokio::test]
async fn virustotal_has_never_seen_it_is_found_false_not_an_error() {
    let keys = keys();
    let fake = FakeIntel::start(keys.clone()).await;
    let intel = load(&section(&fake, &keys, &[], ""));

    for (action, input) in [
        ("virustotal.check_ip", json!({ "ip": "198.51.100.9" })),
        (
            "virustotal.check_domain",
            json!({ "domain": "nothing-here.example" }),
        ),
        (
            "virustotal.check_hash",
            json!({ "hash": "0123456789abcdef0123456789abcdef01234567" }),
        ),
    ] {
        let out = ok(&intel, action, input).await;
        assert_eq!(out["found"], false, "{action}: {out}");
        // Zeros, so `steps.vt.output.malicious > 3` works without checking `found` first.
        assert_eq!(out["malicious"], 0, "{action}");
        assert_eq!(out["reputation"], 0, "{action}");
        assert_eq!(out["last_analysis_at"], Value::Null, "{action}");
    }
    assert_eq!(fake.requests_to("virustotal").len(), 3);
}

#[tokio::test]
async fn greynoise_tells_noise_from_business_services_and_not_seen() {
    let keys = keys();
    let fake = FakeIntel::start(keys.clone()).await;
    let intel = load(&section(&fake, &keys, &[], ""));

    let scanner = ok(
        &intel,
        "greynoise.check_ip",
        json!({ "ip": "203.0.113.77" }),
    )
    .await;
    assert_eq!(scanner["seen"], true);
    assert_eq!(scanner["noise"], true);
    assert_eq!(scanner["riot"], false);
    assert_eq!(scanner["classification"], "malicious");
    assert_eq!(scanner["last_seen"], "2024-06-02");
    assert_eq!(scanner["link"], "https://viz.greynoise.io/ip/203.0.113.77");

    let dns = ok(&intel, "greynoise.check_ip", json!({ "ip": "8.8.8.8" })).await;
    assert_eq!(dns["riot"], true);
    assert_eq!(dns["classification"], "benign");
    assert_eq!(dns["name"], "Google Public DNS");

    let quiet = ok(
        &intel,
        "greynoise.check_ip",
        json!({ "ip": "198.51.100.9" }),
    )
    .await;
    assert_eq!(quiet["seen"], false);
    assert_eq!(quiet["noise"], false);
    assert_eq!(quiet["riot"], false);
    assert_eq!(quiet["classification"], Value::Null);
    assert_eq!(
        quiet["message"],
        "IP not observed scanning the internet or contained in RIOT data set."
    );

    let seen = fake.requests_to("greynoise");
    assert_eq!(seen.len(), 3);
    assert_eq!(seen[0].path, "/v3/community/203.0.113.77");
    assert!(
        seen.iter()
            .all(|s| s.header("key") == Some(keys.greynoise.as_str()))
    );

    // A private address is GreyNoise's 400; IPv6 is refused by the input pattern, unsent.
    let e = err(&intel, "greynoise.check_ip", json!({ "ip": "10.0.0.5" })).await;
    assert!(
        e.message.contains(
            "GreyNoise cannot look 10.0.0.5 up: Request is not a valid routable IPv4 address"
        ),
        "{}",
        e.message
    );
    let e = err(&intel, "greynoise.check_ip", json!({ "ip": "2001:db8::1" })).await;
    assert!(e.message.contains("input `ip`"), "{}", e.message);
    assert_eq!(fake.requests_to("greynoise").len(), 4);
}

#[tokio::test]
async fn greynoise_works_without_a_key() {
    let keys = keys();
    let fake = FakeIntel::start(keys.clone()).await;
    // An entry that only routes to the fake, with no key: the Community API's keyless tier.
    let text = format!(
        "integrations:\n  paths: [{}]\n  credentials:\n    greynoise:\n      {}\n",
        quoted(&integrations_dir()),
        fake.endpoints("api.greynoise.io")
    );
    let intel = load(&text);
    let out = ok(&intel, "greynoise.check_ip", json!({ "ip": "8.8.8.8" })).await;
    assert_eq!(out["riot"], true);
    let seen = fake.requests_to("greynoise");
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].header("key"), None);
}

#[tokio::test]
async fn a_refused_key_is_a_clear_error_that_is_not_retried() {
    let keys = keys();
    let fake = FakeIntel::start(keys.clone()).await;
    let wrong = Keys {
        abuseipdb: "wrong-abuseipdb-key".into(),
        virustotal: "wrong-virustotal-key".into(),
        greynoise: "wrong-greynoise-key".into(),
        custom: String::new(),
    };
    let intel = load(&section(&fake, &wrong, &[], ""));

    for (action, vendor, config_key) in [
        ("abuseipdb.check_ip", "AbuseIPDB (HTTP 401)", "abuseipdb"),
        (
            "virustotal.check_ip",
            "VirusTotal (HTTP 401 WrongCredentialsError)",
            "virustotal",
        ),
        ("greynoise.check_ip", "GreyNoise (HTTP 401)", "greynoise"),
    ] {
        let e = err(&intel, action, json!({ "ip": "203.0.113.77" })).await;
        assert!(
            e.message
                .contains(&format!("the API key was refused by {vendor}")),
            "{action}: {}",
            e.message
        );
        assert!(
            e.message
                .contains(&format!("integrations.credentials.{config_key}.api_key")),
            "{action}: {}",
            e.message
        );
        assert!(
            !e.retryable,
            "{action}: a refused key does not get better by retrying"
        );
        assert!(!e.message.contains("wrong-"), "{action}: {}", e.message);
    }
    // Each API was asked, with the configured (wrong) key in its header.
    for (vendor, header, key) in [
        ("abuseipdb", "key", &wrong.abuseipdb),
        ("virustotal", "x-apikey", &wrong.virustotal),
        ("greynoise", "key", &wrong.greynoise),
    ] {
        let seen = fake.requests_to(vendor);
        assert_eq!(seen.len(), 1, "{vendor}");
        assert_eq!(seen[0].header(header), Some(key.as_str()), "{vendor}");
    }
}

#[tokio::test]
async fn quotas_and_server_errors_are_retryable() {
    let keys = keys();
    let fake = FakeIntel::start(keys.clone()).await;
    let intel = load(&section(&fake, &keys, &[], ""));

    for action in [
        "abuseipdb.check_ip",
        "virustotal.check_ip",
        "greynoise.check_ip",
    ] {
        let e = err(&intel, action, json!({ "ip": QUOTA_IP })).await;
        assert!(e.retryable, "{action} over quota: {}", e.message);
        assert!(e.message.contains("429"), "{action}: {}", e.message);
        let e = err(&intel, action, json!({ "ip": BROKEN_IP })).await;
        assert!(e.retryable, "{action} on a 5xx: {}", e.message);
    }
    assert_eq!(fake.requests().len(), 6);
}

#[tokio::test]
async fn a_redirect_is_not_followed_with_the_key() {
    let keys = keys();
    let fake = FakeIntel::start(keys.clone()).await;
    let intel = load(&section(&fake, &keys, &[], ""));
    let e = err(&intel, "abuseipdb.check_ip", json!({ "ip": REDIRECT_IP })).await;
    assert!(
        e.message.contains("AbuseIPDB answered HTTP 302"),
        "{}",
        e.message
    );
    assert!(
        fake.requests().iter().all(|s| s.path != ELSEWHERE),
        "the redirect was followed: {:?}",
        fake.requests()
    );
}

#[tokio::test]
async fn a_key_an_api_repeats_in_its_error_is_blanked_out() {
    let keys = keys();
    let fake = FakeIntel::start(keys.clone()).await;
    let intel = load(&section(&fake, &keys, &[], ""));
    let e = err(&intel, "abuseipdb.check_ip", json!({ "ip": ECHO_IP })).await;
    // The vendor's message reached the step, with the key replaced.
    assert!(
        e.message.contains("Rejected request with headers"),
        "{}",
        e.message
    );
    assert!(e.message.contains("key: **redacted**"), "{}", e.message);
    assert!(!e.message.contains(&keys.abuseipdb), "{}", e.message);
    // It was really sent, so the check above is not vacuous.
    let seen = fake.requests_to("abuseipdb");
    assert_eq!(seen[0].header("key"), Some(keys.abuseipdb.as_str()));
}

/// A server taking every source and running playbook `name` (its `text`), with the
/// integrations of `section`; the playbooks' folder lives as long as the second value.
async fn serve(name: &str, text: &str, section: &str) -> (TestServer, tempfile::TempDir) {
    let playbooks = tempfile::tempdir().unwrap();
    support::write_playbook(playbooks.path(), name, text);
    let extra = format!(
        "{}playbooks:\n  paths: [{}]\n{section}",
        support::all_sources(),
        quoted(playbooks.path()),
    );
    (TestServer::start_with(&extra).await, playbooks)
}

/// Writes the integration `name` (its manifest and script) in a new folder; the folder to add to
/// `integrations.paths`.
fn added_integration(name: &str, manifest: &str, script: &str) -> tempfile::TempDir {
    let added = tempfile::tempdir().unwrap();
    let folder = added.path().join(name);
    std::fs::create_dir(&folder).unwrap();
    std::fs::write(folder.join("manifest.yaml"), manifest).unwrap();
    std::fs::write(folder.join("actions.rhai"), script).unwrap();
    added
}

/// Waits until the run of the alert `answer` accepted is finished; the run's JSON.
async fn finished_run(server: &TestServer, answer: &Value) -> Value {
    let alert_id = answer["alerts"][0]["alert_id"].as_str().unwrap();
    let run_id = server.run_for_alert(alert_id).await;
    server
        .wait_run(&run_id, "finished", |r| {
            r["status"] == "succeeded" || r["status"] == "failed"
        })
        .await["run"]
        .clone()
}

#[tokio::test]
async fn ioc_lookup_matches_the_configured_feeds_end_to_end() {
    let keys = keys();
    let fake = FakeIntel::start(keys.clone()).await;
    let (server, _playbooks) = serve(
        "ioc-check",
        r#"id: ioc-check
name: Look the alert's address and domain up in the local feeds
on: { source: generic }
steps:
  - id: ip
    uses: ioc.lookup
    with: { value: "${{ alert.network.remote_ip }}" }
  - id: domain
    uses: ioc.lookup
    with: { value: "${{ alert.network.domain }}" }
  - id: clean
    uses: ioc.lookup
    with: { value: "192.0.2.200" }
outputs:
  ip_matched: "${{ steps.ip.output.matched }}"
  ip_match: "${{ steps.ip.output.matches[0] }}"
  domain_matched: "${{ steps.domain.output.matched }}"
  domain_match: "${{ steps.domain.output.matches[0] }}"
  clean: "${{ steps.clean.output }}"
"#,
        &section(&fake, &keys, &[], ""),
    )
    .await;
    let alert = json!({
        "title": "Beacon to a known C2",
        "kind": "c2.beacon",
        "severity": 8,
        "resource": { "kind": "host", "id": "web-7" },
        "network": { "remote_ip": "198.51.100.23", "domain": "cdn.c2.badcdn.example" }
    });
    let (status, answer) = server.post_generic(alert.to_string().as_bytes()).await;
    assert_eq!(status, 202, "{answer}");
    let run = finished_run(&server, &answer).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let out = &run["outputs"];
    assert_eq!(out["ip_matched"], true);
    assert_eq!(
        out["ip_match"],
        json!({
            "indicator": "198.51.100.0/24",
            "kind": "cidr",
            "feed": "bad-indicators.csv",
            "description": "Bulletproof hosting range used for payload staging",
            "labels": ["hosting", "c2"],
            "confidence": 60,
            "id": null
        })
    );
    assert_eq!(out["domain_matched"], true);
    assert_eq!(out["domain_match"]["indicator"], "c2.badcdn.example");
    assert_eq!(out["domain_match"]["feed"], "threat-report.stix.json");
    assert_eq!(
        out["domain_match"]["id"],
        "indicator--8e2e2d2b-17d4-4cbf-938f-98ee46b3cd3f"
    );
    assert_eq!(
        out["clean"],
        json!({ "value": "192.0.2.200", "matched": false, "count": 0, "matches": [] })
    );
    // Local feeds: nothing went out.
    assert!(fake.requests().is_empty());
    server.stop().await;
}

#[tokio::test]
async fn a_rate_limited_lookup_is_retried_by_the_step_retry() {
    let keys = keys();
    let fake = FakeIntel::start(keys.clone()).await;
    let (server, _playbooks) = serve(
        "abuse-retry",
        &format!(
            r##"id: abuse-retry
name: Check an address, retrying a quota
on: {{ source: generic }}
steps:
  - id: abuse
    uses: abuseipdb.check_ip
    with: {{ ip: "{QUOTA_IP}" }}
    retry: {{ attempts: 2, backoff: 1s }}
    on_error: continue
  - id: after
    script: "#{{ went_on: !steps.abuse.ok }}"
"##
        ),
        &section(&fake, &keys, &[], ""),
    )
    .await;
    let (status, answer) = server
        .post_generic(&support::generic_alert("Quota test", "web-8"))
        .await;
    assert_eq!(status, 202, "{answer}");
    let run = finished_run(&server, &answer).await;
    let step = &run["steps"]["abuse"];
    assert_eq!(step["status"], "failed", "{run}");
    assert_eq!(step["attempts"], 2, "{run}");
    assert!(step["error"].as_str().unwrap().contains("429"), "{step}");
    assert_eq!(run["steps"]["after"]["output"]["went_on"], true);
    assert_eq!(fake.requests_to("abuseipdb").len(), 2);
    server.stop().await;
}

const ACME_MANIFEST: &str = r#"name: acme-intel
description: Reputation from ACME Intel, a service Cordon ships nothing for.
auth:
  kind: bearer
  credentials: acme
hosts: [intel.acme.example]
actions:
  check_ip:
    description: ACME's verdict on an address.
    kind: enrichment
    side_effect: false
    idempotent: true
    inputs:
      ip: { type: string, required: true, description: The address. }
    outputs: verdict, score, ip.
"#;

const ACME_SCRIPT: &str = r#"
fn check_ip(input) {
    let r = http(#{ url: `https://intel.acme.example/v1/reputation/${input.ip}` });
    if r.status != 200 { throw `ACME answered ${r.status}`; }
    #{ ip: r.json.ip, verdict: r.json.verdict, score: r.json.score, source: "acme" }
}
"#;

#[tokio::test]
async fn a_manifest_defined_enrichment_added_in_a_test_folder_works_without_rebuilding() {
    let keys = keys();
    let fake = FakeIntel::start(keys.clone()).await;
    // A brand-new integration, written now, next to the repository's.
    let added = added_integration("acme-intel", ACME_MANIFEST, ACME_SCRIPT);

    let acme = format!(
        "    acme:\n      token: {}\n      {}\n",
        keys.custom,
        fake.endpoints("intel.acme.example")
    );
    let (server, _playbooks) = serve(
        "acme-enrich",
        r#"id: acme-enrich
name: Ask ACME about the remote address
on: { source: aws.guardduty }
steps:
  - id: acme
    uses: acme-intel.check_ip
    with: { ip: "${{ alert.network.remote_ip }}" }
outputs:
  verdict: "${{ steps.acme.output.verdict }}"
"#,
        &section(&fake, &keys, &[added.path()], &acme),
    )
    .await;
    // A real GuardDuty finding whose remote address is 198.51.100.0.
    let finding = support::read_fixture(
        "alerts/aws_guardduty/sekoia_detail_instance_network__UnauthorizedAccess_EC2_TorRelay.json",
    );
    let answer = server.accept("aws.guardduty", finding).await;
    let run = finished_run(&server, &answer).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(
        run["steps"]["acme"]["output"],
        json!({ "ip": "198.51.100.0", "verdict": "malicious", "score": 87, "source": "acme" })
    );
    assert_eq!(run["outputs"]["verdict"], "malicious");
    let seen = fake.requests_to("custom");
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].path, "/v1/reputation/198.51.100.0");
    assert_eq!(
        seen[0].header("authorization"),
        Some(format!("Bearer {}", keys.custom).as_str())
    );
    server.stop().await;
}

const LEAKY_MANIFEST: &str = r#"name: leaky
description: Claims one host, calls another.
auth:
  kind: api_key
  credentials: leaky
  header: Key
hosts: [api.leaky.example]
actions:
  check_ip:
    description: Sends the address somewhere it should not.
    kind: enrichment
    side_effect: false
    idempotent: true
    inputs:
      ip: { type: string, required: true }
"#;

const LEAKY_SCRIPT: &str = r#"
fn check_ip(input) {
    let r = http(#{ url: "https://api.abuseipdb.com/api/v2/check", query: #{ ipAddress: input.ip } });
    #{ status: r.status }
}
"#;

#[tokio::test]
async fn a_host_outside_the_manifest_fails_the_step_and_sends_nothing() {
    let keys = keys();
    let fake = FakeIntel::start(keys.clone()).await;
    let added = added_integration("leaky", LEAKY_MANIFEST, LEAKY_SCRIPT);

    // Its credentials would route the foreign host to the fake, had the call been allowed.
    let leaky = format!(
        "    leaky:\n      api_key: {}\n      endpoints: {{ \"api.abuseipdb.com\": \"{base}\", \"api.leaky.example\": \"{base}\" }}\n",
        keys.abuseipdb,
        base = fake.base
    );
    let (server, _playbooks) = serve(
        "leaky-enrich",
        r#"id: leaky-enrich
name: Use the leaky integration
on: { source: generic }
steps:
  - id: leak
    uses: leaky.check_ip
    with: { ip: "${{ alert.network.remote_ip }}" }
"#,
        &section(&fake, &keys, &[added.path()], &leaky),
    )
    .await;
    let alert = json!({
        "title": "Outbound to a stranger",
        "severity": 6,
        "resource": { "kind": "host", "id": "web-9" },
        "network": { "remote_ip": "203.0.113.77" }
    });
    let (status, answer) = server.post_generic(alert.to_string().as_bytes()).await;
    assert_eq!(status, 202, "{answer}");
    let run = finished_run(&server, &answer).await;
    assert_eq!(run["status"], "failed", "{run}");
    let error = run["steps"]["leak"]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("host `api.abuseipdb.com` is not in the hosts of integration `leaky`"),
        "{run}"
    );
    assert_eq!(run["steps"]["leak"]["attempts"], 1, "not retried: {run}");
    assert!(fake.requests().is_empty(), "{:?}", fake.requests());
    server.stop().await;
}

/// A value nobody could guess, so finding it anywhere means it leaked.
fn distinctive(name: &str) -> String {
    format!("{name}-{}", uuid::Uuid::now_v7().simple())
}

/// Whether any of `secrets` is in `text`: the ones found.
fn leaks<'a>(text: &str, secrets: &'a [String]) -> Vec<&'a str> {
    secrets
        .iter()
        .filter(|s| text.contains(s.as_str()))
        .map(String::as_str)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_show_up_in_no_log_run_audit_or_store() {
    let abuse_key = distinctive("AIPDBKEY");
    let vt_key = distinctive("VTKEY");
    let gn_key = distinctive("GNKEY");
    let secrets = vec![abuse_key.clone(), vt_key.clone(), gn_key.clone()];
    // VirusTotal's fake expects another key, so Cordon's is refused (401) while still being sent.
    let fake = FakeIntel::start(Keys {
        abuseipdb: abuse_key.clone(),
        virustotal: "the-key-virustotal-would-take".into(),
        greynoise: gn_key.clone(),
        custom: String::new(),
    })
    .await;

    let dir = tempfile::tempdir().unwrap();
    let playbooks = dir.path().join("playbooks");
    std::fs::create_dir(&playbooks).unwrap();
    // Succeeds: AbuseIPDB and GreyNoise answer.
    support::write_playbook(
        &playbooks,
        "intel-ok",
        r#"id: intel-ok
name: Enrich, all answering
on: { source: generic }
steps:
  - id: abuse
    uses: abuseipdb.check_ip
    with: { ip: "${{ alert.network.remote_ip }}" }
  - id: noise
    uses: greynoise.check_ip
    with: { ip: "${{ alert.network.remote_ip }}" }
"#,
    );
    // Fails: VirusTotal refuses the key. The error is logged by the playbook, then fails the run.
    support::write_playbook(
        &playbooks,
        "intel-refused",
        r#"id: intel-refused
name: Enrich, the key refused
on: { source: generic }
steps:
  - id: vt
    uses: virustotal.check_ip
    with: { ip: "${{ alert.network.remote_ip }}" }
    on_error: continue
  - id: tell
    uses: core.log
    with: { level: warn, message: "virustotal: ${{ steps.vt.error }}" }
  - id: vt_again
    uses: virustotal.check_ip
    with: { ip: "${{ alert.network.remote_ip }}" }
"#,
    );
    // Fails: AbuseIPDB's error repeats the request headers, key included.
    support::write_playbook(
        &playbooks,
        "intel-echo",
        &format!(
            r#"id: intel-echo
name: Enrich, the API repeating the request
on: {{ source: generic }}
steps:
  - id: echo
    uses: abuseipdb.check_ip
    with: {{ ip: "{ECHO_IP}" }}
    on_error: continue
  - id: tell
    uses: core.log
    with: {{ level: warn, message: "abuseipdb: ${{{{ steps.echo.error }}}}" }}
  - id: echo_again
    uses: abuseipdb.check_ip
    with: {{ ip: "{ECHO_IP}" }}
"#
        ),
    );
    let config = dir.path().join("cordon.yaml");
    let text = format!(
        "server:\n  listen: 127.0.0.1:0\n  admin_token: {ADMIN_TOKEN}\nstore:\n  path: {store}\nlog:\n  format: json\n  level: debug\nsources:\n  generic:\n    auth:\n      bearer:\n        token: {INTAKE_TOKEN}\nplaybooks:\n  paths: [{playbooks}]\nintegrations:\n  paths: [{integrations}]\n  credentials:\n    abuseipdb:\n      api_key: ${{ABUSEIPDB_API_KEY}}\n      {abuse_at}\n    virustotal:\n      api_key: ${{VIRUSTOTAL_API_KEY}}\n      {vt_at}\n    greynoise:\n      api_key: ${{GREYNOISE_API_KEY}}\n      {gn_at}\n",
        store = quoted(&dir.path().join("store")),
        playbooks = quoted(&playbooks),
        integrations = quoted(&integrations_dir()),
        abuse_at = fake.endpoints("api.abuseipdb.com"),
        vt_at = fake.endpoints("www.virustotal.com"),
        gn_at = fake.endpoints("api.greynoise.io"),
    );
    std::fs::write(&config, &text).unwrap();
    assert!(
        leaks(&text, &secrets).is_empty(),
        "the config file names variables only"
    );
    let env = [
        ("ABUSEIPDB_API_KEY", abuse_key.as_str()),
        ("VIRUSTOTAL_API_KEY", vt_key.as_str()),
        ("GREYNOISE_API_KEY", gn_key.as_str()),
    ];
    let mut server = support::Process::start_with_env(&config, &env);

    let alert = json!({
        "title": "Connection to a scanner",
        "severity": 7,
        "resource": { "kind": "host", "id": "web-3" },
        "network": { "remote_ip": "203.0.113.77" }
    });
    let answer = server.accept("generic", alert.to_string()).await;
    let alert_id = answer["alerts"][0]["alert_id"].as_str().unwrap().to_owned();
    let admin = async |path: &str| server.admin(path).await.to_string();

    // Three runs, one per playbook, all finished.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let runs: Vec<Value> = loop {
        let list = server.admin("/v1/runs?limit=1000").await;
        let runs: Vec<Value> = list["runs"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["alert_id"] == alert_id.as_str())
            .cloned()
            .collect();
        let done = runs
            .iter()
            .filter(|r| r["status"] == "succeeded" || r["status"] == "failed")
            .count();
        if runs.len() == 3 && done == 3 {
            break runs;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "runs never finished: {list}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };

    let mut shown = String::new();
    for run in &runs {
        let id = run["id"].as_str().unwrap();
        let body = admin(&format!("/v1/runs/{id}")).await;
        let parsed: Value = serde_json::from_str(&body).unwrap();
        let expected = if parsed["run"]["playbook"] == "intel-ok" {
            "succeeded"
        } else {
            "failed"
        };
        assert_eq!(parsed["run"]["status"], expected, "{body}");
        shown.push_str(&body);
    }
    assert!(
        shown.contains("the API key was refused by VirusTotal"),
        "{shown}"
    );
    assert!(shown.contains("Rejected request with headers"), "{shown}");
    assert!(shown.contains("**redacted**"), "{shown}");
    let incident = answer["alerts"][0]["incident_id"].as_str().unwrap();
    shown.push_str(&admin(&format!("/v1/incidents/{incident}")).await);
    shown.push_str(&admin("/v1/audit/verify").await);
    shown.push_str(&admin("/v1/alerts?limit=1000").await);
    assert_eq!(leaks(&shown, &secrets), Vec::<&str>::new(), "{shown}");

    // Stopped, then the log, the CLI's views of the audit chain and runs, and the store's files.
    server.signal("-TERM");
    assert!(server.child.wait().unwrap().success());
    let logged = server.whole_log();
    // The errors reached the log (through the playbooks' core.log), so it is worth searching.
    assert!(
        logged.contains("virustotal: the API key was refused by VirusTotal")
            && logged
                .contains("abuseipdb: AbuseIPDB answered HTTP 422: Rejected request with headers"),
        "the errors are not in the log: {}",
        logged
            .lines()
            .filter(|l| l.contains("\"target\":\"cordon"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(leaks(&logged, &secrets), Vec::<&str>::new(), "{logged}");
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(support::BIN)
            .arg("--config")
            .arg(&config)
            .args(args)
            .env_remove("RUST_LOG")
            .envs(env.iter().copied())
            .output()
            .unwrap();
        assert!(out.status.success(), "cordon {args:?}: {out:?}");
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    let verified = cli(&["audit", "verify"]);
    assert!(verified.contains("audit chain intact"), "{verified}");
    assert_eq!(leaks(&verified, &secrets), Vec::<&str>::new());
    for run in &runs {
        let shown = cli(&["runs", "show", run["id"].as_str().unwrap(), "--json"]);
        assert!(shown.contains("\"audit\""), "{shown}");
        assert_eq!(leaks(&shown, &secrets), Vec::<&str>::new(), "{shown}");
    }
    let mut stored = Vec::new();
    for entry in walk(&dir.path().join("store")) {
        stored.extend(std::fs::read(entry).unwrap());
    }
    assert!(!stored.is_empty());
    let stored = String::from_utf8_lossy(&stored);
    assert_eq!(leaks(&stored, &secrets), Vec::<&str>::new());

    // Not vacuous: each API received its key.
    let sent = |vendor: &str, header: &str| {
        fake.requests_to(vendor)
            .iter()
            .filter_map(|s| s.header(header).map(str::to_owned))
            .collect::<Vec<_>>()
    };
    assert!(sent("abuseipdb", "key").contains(&abuse_key));
    assert!(sent("virustotal", "x-apikey").contains(&vt_key));
    assert!(sent("greynoise", "key").contains(&gn_key));
}

/// Every file under `dir`.
fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}
