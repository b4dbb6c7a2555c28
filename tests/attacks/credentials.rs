//! Credentials: personal tokens (created, listed, expired, revoked at once on every replica) and
//! OIDC tokens from a real issuer (a wrong audience, an expired token, a forged signature, an
//! email the issuer did not verify, and the issuer rotating its keys).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::oidc::Issuer;
use crate::support::pg::fresh_schema;
use crate::support::*;

/// `GET /v1/whoami` with `bearer`.
async fn whoami(client: &Client, bearer: &str) -> (u16, Value) {
    client
        .send(
            client
                .http
                .get(format!("{}/v1/whoami", client.base))
                .bearer_auth(bearer),
        )
        .await
}

async fn with(
    client: &Client,
    bearer: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = client
        .http
        .request(method, format!("{}{path}", client.base))
        .bearer_auth(bearer);
    if let Some(body) = body {
        request = request.json(&body);
    }
    client.send(request).await
}

const PEOPLE: &str = "people:\n  alice:\n    roles: [responder]\n    identities: [cli:alice, oidc:alice-subject]\n  bob:\n    roles: [viewer]\n    identities: [cli:bob, \"oidc:bob@example.com\"]\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oidc_tokens_are_checked_against_the_issuer_and_mapped_to_people() {
    let issuer = Issuer::start().await;
    let server = TestServer::start_with(&format!(
        "{PEOPLE}oidc:\n  issuer: {}\n  audience: cordon\n  clock_skew: 5s\n",
        issuer.url
    ))
    .await;

    // By subject, and by an email the issuer verified.
    let alice = issuer.token("cordon", &[("sub", "alice-subject")]).await;
    let (status, me) = whoami(&server, &alice).await;
    assert_eq!(
        (status, me["person"].as_str()),
        (200, Some("alice")),
        "{me}"
    );
    assert_eq!(me["identity"], "oidc:alice-subject");
    let bob = issuer
        .token(
            "cordon",
            &[("sub", "bob-123"), ("email", "bob@example.com")],
        )
        .await;
    let (status, me) = whoami(&server, &bob).await;
    assert_eq!((status, me["person"].as_str()), (200, Some("bob")), "{me}");
    // Roles hold with OIDC as with tokens: Bob reads, and may not resolve.
    let (status, body) = with(
        &server,
        &bob,
        reqwest::Method::POST,
        "/v1/incidents/x/resolve",
        None,
    )
    .await;
    assert_eq!(
        (status, body["missing_role"].as_str()),
        (403, Some("responder")),
        "{body}"
    );

    // Refused, each saying why: another audience, an expired token, an email not verified, a
    // subject that is nobody, a token whose signature was tampered with.
    let cases: Vec<(String, &str)> = vec![
        (
            issuer
                .token("another-app", &[("sub", "alice-subject")])
                .await,
            "not for this server",
        ),
        (
            issuer
                .token("cordon", &[("sub", "alice-subject"), ("expired", "1")])
                .await,
            "expired",
        ),
        (
            issuer
                .token(
                    "cordon",
                    &[
                        ("sub", "x"),
                        ("email", "bob@example.com"),
                        ("email_verified", "false"),
                    ],
                )
                .await,
            "no person has the identity `oidc:x`",
        ),
        (
            issuer.token("cordon", &[("sub", "mallory")]).await,
            "no person has the identity `oidc:mallory`",
        ),
        (
            {
                let mut parts: Vec<String> = alice.split('.').map(str::to_owned).collect();
                let claims = base64::Engine::encode(
                    &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                    json!({ "iss": issuer.url, "aud": "cordon", "sub": "alice-subject", "exp": 4102444800u64 }).to_string(),
                );
                parts[1] = claims;
                parts.join(".")
            },
            "signature",
        ),
    ];
    for (token, why) in cases {
        let (status, body) = whoami(&server, &token).await;
        assert_eq!(status, 401, "{why}: {body}");
        assert!(
            body["message"].as_str().unwrap().contains(why),
            "{why}: {body}"
        );
    }

    // The issuer rotates its keys: a token signed with the new key is accepted once Cordon has
    // read the key set again (at once for an unknown key, at most every 5 s).
    let before = issuer.key_ids().await;
    issuer.rotate().await;
    tokio::time::sleep(Duration::from_millis(5500)).await;
    let rotated = issuer.token("cordon", &[("sub", "alice-subject")]).await;
    let header = rotated.split('.').next().unwrap();
    let header: Value = serde_json::from_slice(
        &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, header).unwrap(),
    )
    .unwrap();
    assert!(
        !before.contains(&header["kid"].as_str().unwrap().to_owned()),
        "signed with the new key"
    );
    let (status, me) = whoami(&server, &rotated).await;
    assert_eq!(
        (status, me["person"].as_str()),
        (200, Some("alice")),
        "{me}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn personal_tokens_are_shown_once_listed_without_secrets_expire_and_are_revoked() {
    let server = TestServer::start_with(PEOPLE).await;

    // Only an admin (or the bootstrap token) creates tokens; the secret is in that answer only.
    let (status, created) = with(
        &server,
        ADMIN_TOKEN,
        reqwest::Method::POST,
        "/v1/tokens",
        Some(json!({ "person": "alice", "roles": ["viewer"], "expires": "1h" })),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let secret = created["token"].as_str().unwrap().to_owned();
    let id = created["id"].as_str().unwrap().to_owned();
    assert!(secret.starts_with(&format!("cordon_{id}_")));
    let (status, me) = whoami(&server, &secret).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(
        me["roles"],
        json!(["viewer"]),
        "limited to the roles asked for"
    );
    let (status, body) = with(
        &server,
        &secret,
        reqwest::Method::POST,
        "/v1/tokens",
        Some(json!({ "person": "alice" })),
    )
    .await;
    assert_eq!(
        (status, body["missing_role"].as_str()),
        (403, Some("admin")),
        "{body}"
    );
    // A token cannot hold a role its person lacks.
    let (status, body) = with(
        &server,
        ADMIN_TOKEN,
        reqwest::Method::POST,
        "/v1/tokens",
        Some(json!({ "person": "bob", "roles": ["responder"] })),
    )
    .await;
    assert_eq!(status, 400, "{body}");

    // Listed with id, person, roles, times and state, never the secret or its hash.
    let (status, listed) = with(
        &server,
        ADMIN_TOKEN,
        reqwest::Method::GET,
        "/v1/tokens",
        None,
    )
    .await;
    assert_eq!(status, 200);
    let text = listed.to_string();
    assert!(
        !text.contains(&secret[secret.len() - 20..]) && !text.contains("sha256"),
        "{text}"
    );
    let mine = listed["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == id.as_str())
        .unwrap()
        .clone();
    assert_eq!(
        (mine["person"].as_str(), mine["state"].as_str()),
        (Some("alice"), Some("active"))
    );
    assert!(
        mine["last_used_at"].is_string(),
        "its use was noted: {mine}"
    );
    assert!(mine["expires_at"].is_string());

    // A token stored in the database is nothing without its secret: a guessed secret is refused.
    let (status, _) = whoami(&server, &format!("cordon_{id}_guess")).await;
    assert_eq!(status, 401);

    // Expired: refused, saying so.
    let (_, short) = with(
        &server,
        ADMIN_TOKEN,
        reqwest::Method::POST,
        "/v1/tokens",
        Some(json!({ "person": "bob", "expires": "1s" })),
    )
    .await;
    let short = short["token"].as_str().unwrap().to_owned();
    assert_eq!(whoami(&server, &short).await.0, 200);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, body) = whoami(&server, &short).await;
    assert_eq!(status, 401);
    assert!(
        body["message"].as_str().unwrap().contains("expired"),
        "{body}"
    );

    // Revoked: refused from the next request on; the revocation is audited.
    let (status, _) = with(
        &server,
        ADMIN_TOKEN,
        reqwest::Method::DELETE,
        &format!("/v1/tokens/{id}"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let (status, body) = whoami(&server, &secret).await;
    assert_eq!(status, 401);
    assert!(
        body["message"].as_str().unwrap().contains("revoked"),
        "{body}"
    );
    let audit = server.state.store.audit_entries(None, 0).await.unwrap();
    let kinds: Vec<&str> = audit.iter().map(|e| e.kind.as_str()).collect();
    assert!(
        kinds.contains(&"token.created") && kinds.contains(&"token.revoked"),
        "{kinds:?}"
    );
    assert!(
        !format!("{audit:?}").contains(&secret[secret.len() - 20..]),
        "no secret in the audit"
    );
    server.stop().await;
}

fn replica_config(dir: &Path, name: &str, url: &str) -> PathBuf {
    let config = dir.join(format!("{name}.yaml"));
    std::fs::write(
        &config,
        format!(
            "server:\n  listen: 127.0.0.1:0\n  admin_token: {ADMIN_TOKEN}\n  shutdown_grace: 5s\nstore:\n  kind: postgres\n  url: \"{url}\"\n  pool_size: 2\nlog:\n  format: json\nplaybooks:\n  paths: []\n{PEOPLE}"
        ),
    )
    .unwrap();
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_revoked_on_one_replica_is_refused_at_once_on_the_other() {
    let url = fresh_schema().await;
    let dir = tempfile::tempdir().unwrap();
    let a = Process::start(&replica_config(dir.path(), "a", &url));
    let b = Process::start(&replica_config(dir.path(), "b", &url));

    // Created through one replica, good on both.
    let token = a.token_of("cli:alice").await;
    assert_eq!(whoami(&a, &token).await.0, 200);
    assert_eq!(whoami(&b, &token).await.0, 200);
    let id = token.split('_').nth(1).unwrap().to_owned();

    // Revoked through the other: the very next request to either is refused.
    let (status, _) = with(
        &b,
        ADMIN_TOKEN,
        reqwest::Method::DELETE,
        &format!("/v1/tokens/{id}"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    for replica in [&a, &b] {
        let (status, body) = whoami(replica, &token).await;
        assert_eq!(status, 401, "{body}");
    }
    // A stored person removed on one replica is gone on the other, and so are their tokens.
    let carol = a.token_of("cli:carol").await;
    assert_eq!(whoami(&b, &carol).await.0, 200);
    let (status, _) = with(
        &a,
        ADMIN_TOKEN,
        reqwest::Method::DELETE,
        "/v1/people/cli-carol",
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(whoami(&b, &carol).await.0, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cordon_login_checks_the_token_and_saves_it_for_its_owner_only() {
    let server = TestServer::start_with(PEOPLE).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("cli.yaml");
    std::fs::write(&config, config_text(server.dir.path(), PEOPLE)).unwrap();
    let saved = dir.path().join("credentials.json");
    let login = |token: &str| {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_cordon"))
            .args([
                "--config",
                config.to_str().unwrap(),
                "login",
                "--token-stdin",
            ])
            .args(["--server", &server.base])
            .env("CORDON_CREDENTIALS", &saved)
            .env_remove("CORDON_TOKEN")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        writeln!(child.stdin.take().unwrap(), "{token}").unwrap();
        child.wait_with_output().unwrap()
    };
    // A wrong token is reported and nothing is saved.
    // (The CLI blocks this worker; the in-process server answers on the other.)
    let out = login("cordon_nope_nope");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("refused the credential"));
    assert!(!saved.exists());

    let token = server.token_of("cli:alice").await;
    let out = login(&token);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&saved).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "readable by its owner only");
    // The CLI now acts as Alice with what it saved.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cordon"))
        .args([
            "--config",
            config.to_str().unwrap(),
            "whoami",
            "--server",
            &server.base,
        ])
        .env("CORDON_CREDENTIALS", &saved)
        .env_remove("CORDON_TOKEN")
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.starts_with("alice as token:"), "{said}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cordon_tokens_creates_lists_and_revokes_through_the_server_and_on_the_store() {
    let server = TestServer::start_with(PEOPLE).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("cli.yaml");
    std::fs::write(&config, config_text(server.dir.path(), PEOPLE)).unwrap();
    let base = server.base.clone();
    // The CLI's credential here is the config's bootstrap token (no CORDON_TOKEN, nothing saved).
    let run = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--server", &base]);
        cli(&config, &all)
    };

    let (code, out, err) = run(&[
        "tokens",
        "create",
        "--person",
        "alice",
        "--role",
        "viewer",
        "--expires",
        "1h",
    ]);
    assert_eq!(code, 0, "{err}");
    let token = out.trim().to_owned();
    assert!(
        token.starts_with("cordon_"),
        "only the token on stdout: {out}"
    );
    assert!(err.contains("shown this once"), "{err}");
    let (status, me) = whoami(&server, &token).await;
    assert_eq!(
        (status, me["person"].as_str()),
        (200, Some("alice")),
        "{me}"
    );

    let (code, out, err) = run(&["tokens", "list", "--json"]);
    assert_eq!(code, 0, "{err}");
    let listed: Value = serde_json::from_str(&out).unwrap();
    let id = token.split('_').nth(1).unwrap();
    let row = listed["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == id)
        .unwrap();
    assert_eq!(
        (row["person"].as_str(), row["state"].as_str()),
        (Some("alice"), Some("active"))
    );
    assert!(
        !out.contains(&token[token.len() - 20..]),
        "no secret listed"
    );

    let (code, out, err) = run(&["tokens", "revoke", id]);
    assert_eq!(
        (code, out.trim()),
        (0, format!("{id}: revoked").as_str()),
        "{err}"
    );
    assert_eq!(whoami(&server, &token).await.0, 401);
    // A role the person lacks, or no such person: refused, saying so.
    let (code, _, err) = run(&["tokens", "create", "--person", "bob", "--role", "admin"]);
    assert_eq!(code, 1);
    assert!(err.contains("does not have the role `admin`"), "{err}");
    let (code, _, err) = run(&["tokens", "create", "--person", "nobody"]);
    assert_eq!(code, 1);
    assert!(err.contains("no person `nobody`"), "{err}");

    // With the server stopped, the same commands work on the store itself; the server started
    // again knows the token.
    let dir_kept = server.stop().await;
    let config = dir.path().join("cli.yaml");
    let (code, out, err) = cli(&config, &["tokens", "create", "--person", "bob"]);
    assert_eq!(code, 0, "{err}");
    let offline = out.trim().to_owned();
    let again = TestServer::start_in(dir_kept, PEOPLE).await;
    let (status, me) = whoami(&again, &offline).await;
    assert_eq!((status, me["person"].as_str()), (200, Some("bob")), "{me}");
    again.stop().await;
}
