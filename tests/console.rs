//! The web console, attacked and used: sessions and their cookies, CSRF, roles, the OIDC sign-in
//! (state, nonce, PKCE, where it redirects), escaping, the list's filters, live events; and the
//! browser test, real Chromium driven by Playwright for Python (`tests/browser/console_test.py`),
//! signing in through a real OIDC issuer, with axe-core checking accessibility.
//!
//! Peers: the OIDC issuer (oauth2-mock-server, `CORDON_TEST_OIDC_MODULE`) behind the sign-in page
//! of `tests/browser/issuer.mjs`; for the browser test, `CORDON_TEST_CHROMIUM`,
//! `CORDON_TEST_PLAYWRIGHT_PYTHON` and `CORDON_TEST_AXE` (scripts/peers installs them all).

mod support;

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{TestServer, all_sources, approval_playbook, people_yaml, write_playbook};

/// The OIDC issuer with a sign-in page of its own (tests/browser/issuer.mjs).
struct Issuer {
    url: String,
    child: Child,
}

impl Issuer {
    async fn start() -> Issuer {
        let module = std::env::var("CORDON_TEST_OIDC_MODULE").unwrap_or_else(|_| {
            panic!(
                "CORDON_TEST_OIDC_MODULE is not set: point it at oauth2-mock-server 8.2.3's \
                 dist/index.mjs, or run the tests with scripts/test, which installs it and sets it"
            )
        });
        let port = support::free_port();
        let script =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/issuer.mjs");
        let child = Command::new("node")
            .arg(&script)
            .arg(&module)
            .arg(port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run node for the OIDC issuer: {e}"));
        let url = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let up = http
                .get(format!("{url}/.well-known/openid-configuration"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if up {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the OIDC issuer did not come up on {url}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Issuer { url, child }
    }
}

impl Drop for Issuer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const PEOPLE: &[(&str, &[&str], &[&str])] = &[
    ("alice", &["oidc:alice"], &["responder"]),
    ("bob", &["oidc:bob"], &["responder"]),
    ("victor", &["oidc:victor"], &["viewer"]),
];

/// A server with the console, the issuer, alice and bob in approver group `soc`, victor a viewer,
/// and a playbook on GuardDuty findings that waits for `soc`'s approval, then isolates.
async fn console_server(issuer: &Issuer, extra: &str) -> TestServer {
    let playbooks = tempfile::tempdir().unwrap();
    write_playbook(
        playbooks.path(),
        "contain.yaml",
        &approval_playbook(
            ("contain", "Contain the identity"),
            "aws.guardduty",
            "Disable the access key?",
            "soc",
            1,
        ),
    );
    let dir = playbooks.keep();
    let yaml = format!(
        "{}{}oidc:\n  issuer: {}\n  audience: cordon\napprovers:\n  soc: [alice, bob]\nplaybooks:\n  paths: [{}]\n{extra}",
        all_sources(),
        people_yaml(PEOPLE),
        issuer.url,
        dir.display()
    );
    TestServer::start_with(&yaml).await
}

/// A browser without a cookie jar of its own: cookies kept here by hand, redirects not followed.
struct Browser {
    base: String,
    http: reqwest::Client,
    cookies: HashMap<String, String>,
    /// Every `Set-Cookie` seen, as sent.
    set_cookies: Vec<String>,
}

impl Browser {
    fn new(base: &str) -> Browser {
        Browser {
            base: base.to_owned(),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            cookies: HashMap::new(),
            set_cookies: Vec::new(),
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn keep(&mut self, response: &reqwest::Response) {
        for value in response.headers().get_all("set-cookie") {
            let text = value.to_str().unwrap().to_owned();
            let pair = text.split(';').next().unwrap();
            let (k, v) = pair.split_once('=').unwrap();
            if text.contains("Max-Age=0") {
                self.cookies.remove(k);
            } else {
                self.cookies.insert(k.to_owned(), v.to_owned());
            }
            self.set_cookies.push(text);
        }
    }

    /// GET an absolute URL or a path here: status, `Location`, body.
    async fn get(&mut self, url: &str) -> (u16, String, String) {
        let url = if url.starts_with("http") {
            url.to_owned()
        } else {
            format!("{}{url}", self.base)
        };
        let response = self
            .http
            .get(&url)
            .header("cookie", self.cookie_header())
            .send()
            .await
            .unwrap();
        self.keep(&response);
        let status = response.status().as_u16();
        let location = response
            .headers()
            .get("location")
            .map(|l| l.to_str().unwrap().to_owned())
            .unwrap_or_default();
        (status, location, response.text().await.unwrap())
    }

    /// POST a form as a browser of this console would (its Origin), with `fields`.
    async fn post(
        &mut self,
        path: &str,
        fields: &[(&str, &str)],
        origin: Option<&str>,
    ) -> (u16, String, String) {
        let mut request = self
            .http
            .post(format!("{}{path}", self.base))
            .header("cookie", self.cookie_header())
            .form(fields);
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        let response = request.send().await.unwrap();
        self.keep(&response);
        let status = response.status().as_u16();
        let location = response
            .headers()
            .get("location")
            .map(|l| l.to_str().unwrap().to_owned())
            .unwrap_or_default();
        (status, location, response.text().await.unwrap())
    }

    fn origin(&self) -> String {
        self.base.clone()
    }

    /// Starts an OIDC sign-in: the issuer's authorization URL and the attempt's state cookie.
    async fn start_oidc(&mut self, next: &str) -> (String, String) {
        let (status, location, body) = self
            .get(&format!("/login/oidc?next={}", urlencode(next)))
            .await;
        assert_eq!(status, 303, "{body}");
        let state = self
            .cookies
            .get("cordon_login")
            .cloned()
            .expect("the attempt's cookie");
        (location, state)
    }

    /// Signs in at the issuer as `user` for an authorization URL: the callback URL it sends back.
    async fn at_issuer(&mut self, authorize: &str, user: &str) -> String {
        let (status, location, body) = self
            .get(&format!("{authorize}&cordon_test_user={user}"))
            .await;
        assert_eq!(status, 302, "the issuer's answer: {body}");
        location
    }

    /// The whole OIDC sign-in as `user`; the final redirect.
    async fn sign_in(&mut self, user: &str, next: &str) -> String {
        let (authorize, _) = self.start_oidc(next).await;
        let callback = self.at_issuer(&authorize, user).await;
        let (status, location, body) = self.get(&callback).await;
        assert_eq!(status, 303, "the callback: {body}");
        assert!(
            self.cookies.contains_key("cordon_session"),
            "no session after sign-in"
        );
        location
    }

    /// The CSRF token of a page's forms.
    async fn csrf(&mut self, path: &str) -> String {
        let (status, _, body) = self.get(path).await;
        assert_eq!(status, 200, "{path}: {body}");
        csrf_in(&body).unwrap_or_else(|| panic!("no CSRF field on {path}"))
    }
}

fn csrf_in(body: &str) -> Option<String> {
    let at = body.find("name=\"csrf\" value=\"")? + "name=\"csrf\" value=\"".len();
    Some(body[at..].split('"').next()?.to_owned())
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// GuardDuty's IAM user finding about `user`, with finding id `id`.
fn guardduty(user: &str, id: &str) -> Vec<u8> {
    let mut finding: Value = serde_json::from_slice(&support::read_fixture(
        "alerts/aws_guardduty/sekoia_detail_accesskey_apicall__UnauthorizedAccess_IAMUser_MaliciousIPCaller.json",
    ))
    .unwrap();
    finding["id"] = json!(id);
    finding["resource"]["accessKeyDetails"]["userName"] = json!(user);
    serde_json::to_vec(&finding).unwrap()
}

/// Posts a finding about `user` and waits for its run to wait for approval: (incident, run).
async fn waiting_run(server: &TestServer, user: &str) -> (String, String) {
    let accepted = server
        .accept("aws.guardduty", guardduty(user, &format!("f-{user}-1")))
        .await;
    let alert = accepted["alerts"][0]["alert_id"]
        .as_str()
        .or(accepted["alert_id"].as_str())
        .unwrap_or_else(|| panic!("no alert id: {accepted}"))
        .to_owned();
    let incident = accepted["alerts"][0]["incident_id"]
        .as_str()
        .or(accepted["incident_id"].as_str())
        .unwrap()
        .to_owned();
    let run = server.run_for_alert(&alert).await;
    server.wait_prompt(&run, "approve").await;
    (incident, run)
}

#[tokio::test]
async fn oidc_sign_in_gives_a_session_cookie_that_scripts_cannot_read_and_sign_out_ends_it() {
    let issuer = Issuer::start().await;
    let server = console_server(&issuer, "").await;
    let mut alice = Browser::new(&server.base);

    // Without a session, a page sends the browser to sign in, keeping where it was going.
    let (status, location, _) = alice.get("/incidents?q=x").await;
    assert_eq!(
        (status, location.as_str()),
        (303, "/login?next=%2Fincidents%3Fq%3Dx")
    );

    assert_eq!(alice.sign_in("alice", "/incidents").await, "/incidents");
    let session = alice
        .set_cookies
        .iter()
        .find(|c| c.starts_with("cordon_session=") && !c.contains("Max-Age=0"))
        .unwrap()
        .clone();
    for flag in ["HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(session.contains(flag), "{session} lacks {flag}");
    }
    assert!(
        !session.contains("Secure"),
        "plain HTTP gets no Secure cookie: {session}"
    );
    let (status, _, page) = alice.get("/incidents").await;
    assert_eq!(status, 200);
    assert!(
        page.contains("Signed in as <strong>alice</strong>"),
        "{page}"
    );

    // The store keeps the session under the SHA-256 of its id, not the id the browser holds.
    let id = alice.cookies["cordon_session"].clone();
    let stored = server
        .state
        .store
        .meta_list("console_sessions")
        .await
        .unwrap();
    assert_eq!(stored.len(), 1);
    assert_ne!(stored[0].0, id);
    assert!(!stored[0].1.to_string().contains(&id));

    // Sign-out needs the CSRF token too, then forgets the session: the old cookie is worthless.
    let csrf = alice.csrf("/incidents").await;
    let (status, _, _) = alice.post("/logout", &[], Some(&alice.origin())).await;
    assert_eq!(status, 403, "sign-out without the token is refused");
    let (status, location, _) = alice
        .post("/logout", &[("csrf", &csrf)], Some(&alice.origin()))
        .await;
    assert_eq!((status, location.as_str()), (303, "/login"));
    assert!(
        server
            .state
            .store
            .meta_list("console_sessions")
            .await
            .unwrap()
            .is_empty()
    );
    alice.cookies.insert("cordon_session".into(), id);
    let (status, location, _) = alice.get("/incidents").await;
    assert_eq!(
        (status, location.as_str()),
        (303, "/login?next=%2Fincidents")
    );

    // A made-up session id is no session.
    let mut mallory = Browser::new(&server.base);
    mallory
        .cookies
        .insert("cordon_session".into(), "x".repeat(43));
    assert_eq!(mallory.get("/incidents").await.0, 303);
}

#[tokio::test]
async fn the_sign_in_refuses_a_wrong_state_a_wrong_nonce_and_a_code_made_for_another_verifier() {
    let issuer = Issuer::start().await;
    let server = console_server(&issuer, "").await;

    // State: a callback for attempt A in a browser that started attempt B (login CSRF, a stolen
    // callback URL) signs no one in.
    let mut victim = Browser::new(&server.base);
    let mut attacker = Browser::new(&server.base);
    let (authorize_a, _) = attacker.start_oidc("/").await;
    let callback_a = attacker.at_issuer(&authorize_a, "alice").await;
    victim.start_oidc("/").await;
    let (status, _, body) = victim.get(&callback_a).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("state mismatch"), "{body}");
    assert!(!victim.cookies.contains_key("cordon_session"));
    // Without any attempt cookie, likewise.
    let mut bare = Browser::new(&server.base);
    assert_eq!(bare.get(&callback_a).await.0, 400);

    // A used attempt cannot be used again.
    let mut alice = Browser::new(&server.base);
    let (authorize, _) = alice.start_oidc("/").await;
    let callback = alice.at_issuer(&authorize, "alice").await;
    assert_eq!(alice.get(&callback).await.0, 303);
    let state = url::Url::parse(&callback)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "state")
        .unwrap()
        .1
        .into_owned();
    alice.cookies.insert("cordon_login".into(), state);
    alice.cookies.remove("cordon_session");
    let (status, _, body) = alice.get(&callback).await;
    assert_eq!(status, 400, "{body}");
    assert!(!alice.cookies.contains_key("cordon_session"));

    // PKCE: a code the issuer made for attempt A's challenge, delivered to attempt B's callback
    // (code injection), is redeemed with B's verifier, and the issuer refuses it.
    let mut browser = Browser::new(&server.base);
    let (authorize_a, _) = browser.start_oidc("/").await;
    let code_a = url::Url::parse(&browser.at_issuer(&authorize_a, "alice").await)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "code")
        .unwrap()
        .1
        .into_owned();
    let (_, state_b) = browser.start_oidc("/").await;
    let (status, _, body) = browser
        .get(&format!("/login/callback?code={code_a}&state={state_b}"))
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("did not accept the authorization code"),
        "{body}"
    );
    assert!(!browser.cookies.contains_key("cordon_session"));

    // Nonce: an ID token minted for another nonce (a replayed or swapped token) is refused.
    let mut browser = Browser::new(&server.base);
    let (authorize, _) = browser.start_oidc("/").await;
    let mut url = url::Url::parse(&authorize).unwrap();
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .map(|(k, v)| {
            let v = if k == "nonce" {
                "someone-elses".into()
            } else {
                v.into_owned()
            };
            (k.into_owned(), v)
        })
        .collect();
    url.query_pairs_mut().clear().extend_pairs(pairs);
    let callback = browser.at_issuer(url.as_str(), "alice").await;
    let (status, _, body) = browser.get(&callback).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("nonce"), "{body}");
    assert!(!browser.cookies.contains_key("cordon_session"));

    // Someone the issuer knows but Cordon does not: no session.
    let mut stranger = Browser::new(&server.base);
    let (authorize, _) = stranger.start_oidc("/").await;
    let callback = stranger.at_issuer(&authorize, "mallory").await;
    let (status, _, body) = stranger.get(&callback).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("oidc:mallory"), "{body}");
    assert!(!stranger.cookies.contains_key("cordon_session"));
}

#[tokio::test]
async fn after_sign_in_the_browser_goes_only_to_a_page_of_this_console() {
    let issuer = Issuer::start().await;
    let server = console_server(&issuer, "").await;
    for next in [
        "https://evil.example/",
        "//evil.example/x",
        "/\\evil.example",
        "http:/evil.example",
    ] {
        let mut browser = Browser::new(&server.base);
        assert_eq!(browser.sign_in("alice", next).await, "/", "next={next}");
    }
    let mut browser = Browser::new(&server.base);
    assert_eq!(
        browser.sign_in("alice", "/runs?status=waiting").await,
        "/runs?status=waiting"
    );

    // The token sign-in too.
    let token = server.token_of("oidc:alice").await;
    let mut browser = Browser::new(&server.base);
    let origin = browser.origin();
    let (status, location, body) = browser
        .post(
            "/login/token",
            &[("token", &token), ("next", "https://evil.example/")],
            Some(&origin),
        )
        .await;
    assert_eq!((status, location.as_str()), (303, "/"), "{body}");
}

#[tokio::test]
async fn a_post_without_this_sessions_csrf_token_or_from_another_site_is_refused_and_changes_nothing()
 {
    let issuer = Issuer::start().await;
    let server = console_server(&issuer, "").await;
    let (incident, run) = waiting_run(&server, "csrf-target").await;
    let mut alice = Browser::new(&server.base);
    alice.sign_in("alice", "/").await;
    let csrf = alice.csrf(&format!("/incidents/{incident}")).await;
    let origin = alice.origin();
    let approve = format!("/runs/{run}/approvals/approve");

    let mut other = Browser::new(&server.base);
    other.sign_in("bob", "/").await;
    let bobs = other.csrf("/incidents").await;
    for (fields, from, why) in [
        (
            vec![("decision", "approve")],
            Some(origin.as_str()),
            "no token",
        ),
        (
            vec![("decision", "approve"), ("csrf", "forged")],
            Some(origin.as_str()),
            "a made-up token",
        ),
        (
            vec![("decision", "approve"), ("csrf", bobs.as_str())],
            Some(origin.as_str()),
            "another session's token",
        ),
        (
            vec![("decision", "approve"), ("csrf", csrf.as_str())],
            Some("https://evil.example"),
            "another site's origin",
        ),
    ] {
        let (status, _, body) = alice.post(&approve, &fields, from).await;
        assert_eq!(status, 403, "{why}: {body}");
        assert!(body.contains("nothing was changed"), "{why}: {body}");
    }
    for path in [
        format!("/incidents/{incident}/resolve"),
        "/playbooks/trigger".into(),
    ] {
        assert_eq!(
            alice
                .post(&path, &[("playbook", "contain")], Some(&origin))
                .await
                .0,
            403,
            "{path}"
        );
    }
    let shown = server.admin(&format!("/v1/runs/{run}")).await;
    assert_eq!(shown["run"]["status"], "waiting", "{shown}");
    assert!(
        shown["run"]["steps"]["approve"]["approval"]["decisions"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        server.admin(&format!("/v1/incidents/{incident}")).await["incident"]["status"],
        "open"
    );

    // With its token, from its own origin, the same approval goes through, audited as alice via
    // the console.
    let (status, location, body) = alice
        .post(
            &approve,
            &[("decision", "approve"), ("csrf", &csrf)],
            Some(&origin),
        )
        .await;
    assert_eq!(status, 303, "{body}");
    assert_eq!(location, format!("/incidents/{incident}?note=approved"));
    let shown = server.wait_run(&run, "finished", support::finished).await;
    assert_eq!(shown["run"]["status"], "succeeded", "{shown}");
    let decided = shown["audit"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "approval.decided")
        .unwrap_or_else(|| panic!("no decision audited: {shown}"));
    assert_eq!(decided["detail"]["via"], "console", "{decided}");
    assert_eq!(decided["detail"]["person"], "alice", "{decided}");
    assert_eq!(decided["actor"], "oidc:alice", "{decided}");
}

#[tokio::test]
async fn a_viewer_gets_no_approve_button_and_is_refused_the_post_and_the_api_call() {
    let issuer = Issuer::start().await;
    let server = console_server(&issuer, "").await;
    let (incident, run) = waiting_run(&server, "viewer-target").await;
    let mut victor = Browser::new(&server.base);
    victor.sign_in("victor", "/").await;
    let (status, _, page) = victor.get(&format!("/incidents/{incident}")).await;
    assert_eq!(status, 200);
    assert!(
        page.contains("Disable the access key?"),
        "the viewer reads the approval"
    );
    assert!(
        !page.contains(">Approve<"),
        "no Approve button for a viewer: {page}"
    );
    assert!(
        !page.contains("Resolve incident"),
        "no Resolve for a viewer"
    );
    let csrf = csrf_in(&page).unwrap();
    let origin = victor.origin();
    let (status, _, body) = victor
        .post(
            &format!("/runs/{run}/approvals/approve"),
            &[("decision", "approve"), ("csrf", &csrf)],
            Some(&origin),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    let (status, _, body) = victor
        .post(
            &format!("/incidents/{incident}/resolve"),
            &[("csrf", &csrf)],
            Some(&origin),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("needs the role `responder`"), "{body}");
    // The API says the same to victor's own token.
    let (status, body) = server
        .decide(&run, "approve", "approve", "oidc:victor")
        .await;
    assert_eq!(status, 403, "{body}");
    let shown = server.admin(&format!("/v1/runs/{run}")).await;
    assert_eq!(shown["run"]["status"], "waiting");
    // The console's refusal is audited as the API's are, saying it came through the console.
    let log = server.state.store.audit_entries(None, 0).await.unwrap();
    assert!(
        log.iter().any(|e| e.kind == "access.refused"
            && e.detail["via"] == "console"
            && e.detail["person"] == "victor"),
        "no audited console refusal"
    );
}

#[tokio::test]
async fn alert_text_is_shown_escaped_on_every_page() {
    let issuer = Issuer::start().await;
    let server = console_server(&issuer, "").await;
    let evil = "<script>alert(1)</script><img src=x onerror=alert(2)>\"'";
    let (status, body) = server
        .post_generic(&support::generic_alert(evil, "host-<b>1</b>"))
        .await;
    assert_eq!(status, 202, "{body}");
    let incident = server.stored_incidents().await[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut alice = Browser::new(&server.base);
    alice.sign_in("alice", "/").await;
    for path in [
        "/incidents".to_owned(),
        format!("/incidents/{incident}"),
        format!("/incidents?q={}", urlencode(evil)),
        format!("/audit?person={}", urlencode(evil)),
    ] {
        let (status, _, page) = alice.get(&path).await;
        assert_eq!(status, 200, "{path}");
        assert!(
            !page.contains("<script>alert"),
            "{path} carries the script unescaped"
        );
        assert!(
            !page.contains("<img src=x"),
            "{path} carries the tag unescaped"
        );
        assert!(
            !page.contains("<b>1</b>"),
            "{path} carries the tag unescaped"
        );
        if !path.starts_with("/audit") {
            assert!(
                page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
                "{path} does not show the title"
            );
        }
    }
    // And no script from anywhere but this console runs: the pages say so.
    let response = reqwest::get(format!("{}/login", server.base))
        .await
        .unwrap();
    let csp = response.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
}

#[tokio::test]
async fn sessions_end_when_idle_and_after_their_absolute_lifetime_and_when_the_token_is_revoked() {
    let issuer = Issuer::start().await;
    let idle = console_server(&issuer, "console:\n  idle_timeout: 1s\n").await;
    let mut alice = Browser::new(&idle.base);
    alice.sign_in("alice", "/").await;
    assert_eq!(alice.get("/incidents").await.0, 200);
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_eq!(alice.get("/incidents").await.0, 303, "idle past 1s");

    let absolute = console_server(&issuer, "console:\n  absolute_timeout: 2s\n").await;
    let mut alice = Browser::new(&absolute.base);
    alice.sign_in("alice", "/").await;
    for _ in 0..3 {
        assert_eq!(alice.get("/incidents").await.0, 200);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        alice.get("/incidents").await.0,
        303,
        "past the absolute 2s though in use"
    );

    // A personal token signs in once; revoking it ends the session at the next request.
    let token = absolute.token_of("oidc:bob").await;
    let mut bob = Browser::new(&absolute.base);
    let origin = bob.origin();
    let (status, _, body) = bob
        .post(
            "/login/token",
            &[("token", &token), ("next", "/runs")],
            Some(&origin),
        )
        .await;
    assert_eq!(status, 303, "{body}");
    assert_eq!(bob.get("/runs").await.0, 200);
    let id = token.split('_').nth(1).unwrap();
    let (status, body) = absolute
        .send(
            absolute
                .http
                .delete(format!("{}/v1/tokens/{id}", absolute.base))
                .bearer_auth(support::ADMIN_TOKEN),
        )
        .await;
    assert!(status == 200 || status == 204, "{status} {body}");
    assert_eq!(
        bob.get("/runs").await.0,
        303,
        "a revoked token's session is over"
    );
    // The bootstrap admin token and made-up tokens do not sign in.
    for bad in [support::ADMIN_TOKEN, "cordon_abc_def"] {
        let (status, _, body) = Browser::new(&absolute.base)
            .post("/login/token", &[("token", bad)], Some(&origin))
            .await;
        assert_eq!(status, 401, "{bad}: {body}");
    }
}

#[tokio::test]
async fn secure_cookies_and_the_origin_follow_the_public_url() {
    let issuer = Issuer::start().await;
    let server = console_server(
        &issuer,
        "console:\n  public_url: https://cordon.example.com\n",
    )
    .await;
    let token = server.token_of("oidc:alice").await;
    let mut alice = Browser::new(&server.base);
    let (status, _, _) = alice
        .post("/login/token", &[("token", &token)], Some(&alice.origin()))
        .await;
    assert_eq!(
        status, 403,
        "the public URL is the only origin forms may come from"
    );
    let (status, _, body) = alice
        .post(
            "/login/token",
            &[("token", &token)],
            Some("https://cordon.example.com"),
        )
        .await;
    assert_eq!(status, 303, "{body}");
    let cookie = alice
        .set_cookies
        .iter()
        .find(|c| c.starts_with("cordon_session="))
        .unwrap();
    assert!(cookie.contains("; Secure"), "{cookie}");
    // The OIDC redirect URI is the public URL's.
    let (authorize, _) = alice.start_oidc("/").await;
    assert!(
        authorize.contains("redirect_uri=https%3A%2F%2Fcordon.example.com%2Flogin%2Fcallback"),
        "{authorize}"
    );
    assert!(
        authorize.contains("code_challenge_method=S256"),
        "{authorize}"
    );
}

#[tokio::test]
async fn the_list_filters_pages_by_cursor_and_searches_title_and_entity() {
    let issuer = Issuer::start().await;
    let server = console_server(&issuer, "").await;
    for n in 0..55 {
        let body = json!({
            "title": format!("Beacon {n}"),
            "kind": "test.beacon",
            "severity": if n % 5 == 0 { 9 } else { 3 },
            "resource": { "kind": "host", "id": format!("web-{n:02}") },
        });
        let (status, answer) = server
            .post_generic(&serde_json::to_vec(&body).unwrap())
            .await;
        assert_eq!(status, 202, "{answer}");
    }
    let mut alice = Browser::new(&server.base);
    alice.sign_in("alice", "/").await;
    let rows = |page: &str| page.matches("<tr class=\"row\"").count();
    let (_, _, first) = alice.get("/incidents").await;
    assert_eq!(rows(&first), 50);
    assert!(
        first.contains("Beacon 54") && !first.contains("Beacon 4<"),
        "newest first"
    );
    let at =
        first.find("rel=\"next\" href=\"").expect("a next page") + "rel=\"next\" href=\"".len();
    let next = first[at..].split('"').next().unwrap().replace("&amp;", "&");
    let (_, _, second) = alice.get(&next).await;
    assert_eq!(rows(&second), 5);
    assert!(second.contains("Beacon 0<") && !second.contains("Beacon 54"));
    let (_, _, critical) = alice.get("/incidents?severity_min=9").await;
    assert_eq!(rows(&critical), 11);
    assert!(critical.contains("critical 9"), "severity has its word");
    let (_, _, found) = alice.get("/incidents?q=WEB-07").await;
    assert_eq!(rows(&found), 1, "case-insensitive, on the entity");
    let (_, _, found) = alice.get("/incidents?q=beacon%2012").await;
    assert_eq!(rows(&found), 1, "on the title");
    // A query with fields is the search language of `cordon search`.
    let (_, _, found) = alice.get("/incidents?q=severity%3A%3E%3D9").await;
    assert_eq!(rows(&found), 11, "severity:>=9 as severity_min=9");
    let (_, _, found) = alice
        .get("/incidents?q=severity%3A%3E%3D9%20beacon%2050")
        .await;
    assert_eq!(rows(&found), 1, "fields and words together");
    let (status, _, bad) = alice.get("/incidents?q=colour%3Ared").await;
    assert_eq!(status, 200);
    assert!(bad.contains("search: column 1: unknown field"), "{bad}");
    let (status, _, bad) = alice.get("/incidents?severity_min=eleven").await;
    assert_eq!(status, 200);
    assert!(bad.contains("severity `eleven` is not 0 to 10"), "{bad}");
}

#[tokio::test]
async fn a_decision_reaches_another_browser_watching_the_incident_as_a_server_sent_event() {
    let issuer = Issuer::start().await;
    let server = console_server(&issuer, "").await;
    let (incident, run) = waiting_run(&server, "live-target").await;
    let mut bob = Browser::new(&server.base);
    bob.sign_in("bob", "/").await;
    let mut events = bob
        .http
        .get(format!("{}/events?incident={incident}", server.base))
        .header("cookie", bob.cookie_header())
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), 200);
    assert_eq!(events.headers()["content-type"], "text/event-stream");
    let ready = events.chunk().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&ready).contains("event: ready"));

    let mut alice = Browser::new(&server.base);
    alice.sign_in("alice", "/").await;
    let csrf = alice.csrf(&format!("/incidents/{incident}")).await;
    let origin = alice.origin();
    let decided_at = Instant::now();
    let (status, _, _) = alice
        .post(
            &format!("/runs/{run}/approvals/approve"),
            &[("decision", "approve"), ("csrf", &csrf)],
            Some(&origin),
        )
        .await;
    assert_eq!(status, 303);
    let mut seen = String::new();
    while !seen.contains("approval.decided") {
        let chunk = tokio::time::timeout(Duration::from_secs(5), events.chunk())
            .await
            .expect("an event within 5 s")
            .unwrap()
            .expect("the stream stays open");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    println!(
        "decision heard by the other browser after {:?}",
        decided_at.elapsed()
    );
    assert!(
        seen.contains(&format!("\"incident\":\"{incident}\"")),
        "{seen}"
    );
    // Without a session there is no stream.
    let (status, _, _) = Browser::new(&server.base)
        .get(&format!("/events?incident={incident}"))
        .await;
    assert_eq!(status, 303);
}

/// The browser test: real Chromium through Playwright for Python, signing in at the issuer's page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_chromium_people_sign_in_investigate_and_decide_and_others_see_it_live() {
    let need = |name: &str| {
        std::env::var(name).unwrap_or_else(|_| {
            panic!("{name} is not set: run scripts/peers (it installs Debian's chromium, Playwright for Python and axe-core) and source what it prints, or use scripts/test")
        })
    };
    let (chromium, python, axe) = (
        need("CORDON_TEST_CHROMIUM"),
        need("CORDON_TEST_PLAYWRIGHT_PYTHON"),
        need("CORDON_TEST_AXE"),
    );
    let issuer = Issuer::start().await;
    let server = console_server(&issuer, "").await;
    // The shared GuardDuty findings, and a burst of repeats about one user for the timeline.
    let folder = support::fixture("alerts/aws_guardduty");
    let mut names: Vec<_> = std::fs::read_dir(&folder)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    for path in names
        .iter()
        .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with("sns_"))
    {
        let (status, body) = server
            .post_alert("aws.guardduty", std::fs::read(path).unwrap())
            .await;
        assert_eq!(status, 202, "{}: {body}", path.display());
    }
    let (incident, run) = waiting_run(&server, "build-bot").await;
    for n in 2..40 {
        server
            .accept(
                "aws.guardduty",
                guardduty("build-bot", &format!("f-build-bot-{n}")),
            )
            .await;
    }
    let artifacts =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/console-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let victor_token = server.token_of("oidc:victor").await;
    let settings = json!({
        "base": server.base,
        "chromium": chromium,
        "axe": axe,
        "artifacts": artifacts,
        "incident": incident,
        "run": run,
        "victor_token": victor_token,
    });
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/console_test.py");
    let output = tokio::task::spawn_blocking(move || {
        Command::new(&python)
            .arg(&script)
            .arg(settings.to_string())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {python}: {e}"))
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "the browser test failed:\n{stdout}\n{stderr}"
    );
    // The run went on after the approval made in the browser.
    let shown = server.wait_run(&run, "finished", support::finished).await;
    assert_eq!(shown["run"]["status"], "succeeded", "{shown}");
    assert_eq!(
        shown["run"]["steps"]["isolate"]["status"], "succeeded",
        "{shown}"
    );
    for shot in ["list.png", "incident.png", "run.png"] {
        let bytes = std::fs::metadata(artifacts.join(shot))
            .map(|m| m.len())
            .unwrap_or(0);
        assert!(bytes > 10_000, "{shot} was not written ({bytes} bytes)");
    }
}

/// The list's filter reads alike on both backends, across PostgreSQL's batches and cursors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_list_filter_reads_the_same_on_sled_and_on_postgres() {
    use cordon::config::{GroupingConfig, StoreConfig, StoreKind};
    use cordon::store::IncidentFilter;
    let dir = tempfile::tempdir().unwrap();
    let metrics = std::sync::Arc::new(cordon::telemetry::Metrics::new());
    let sled = cordon::store::open(
        &StoreConfig {
            path: dir.path().join("store"),
            ..StoreConfig::default()
        },
        &GroupingConfig::default(),
        metrics.clone(),
    )
    .await
    .unwrap();
    let (schema, url) = support::pg::named_schema().await;
    let postgres = cordon::store::open(
        &StoreConfig {
            kind: StoreKind::Postgres,
            url: Some(cordon::config::Secret::new(&url)),
            pool_size: 2,
            ..StoreConfig::default()
        },
        &GroupingConfig::default(),
        metrics,
    )
    .await
    .unwrap_or_else(|e| panic!("open postgres: {e}"));
    let now = chrono::Utc::now();
    let alerts: Vec<cordon::alert::Alert> = (0..1200)
        .map(|n| {
            let raw = serde_json::value::to_raw_value(&json!({ "n": n })).unwrap();
            let mut a =
                cordon::alert::Alert::new(if n % 3 == 0 { "falco" } else { "generic" }, "t.x", raw);
            a.title = format!("Finding {n} on Web");
            a.severity = cordon::alert::Severity::new((n % 11) as u8, "x");
            a.resource.kind = Some("host".into());
            a.resource.id = Some(format!("web-{n:04}"));
            a.dedup_key = format!("k{n}");
            a.finish()
        })
        .collect();
    for store in [&sled, &postgres] {
        for chunk in alerts.chunks(300) {
            store.ingest(chunk.to_vec(), now).await.unwrap();
        }
    }
    let ids =
        |list: Vec<cordon::alert::Incident>| list.into_iter().map(|i| i.title).collect::<Vec<_>>();
    let filters = [
        IncidentFilter {
            limit: 51,
            ..IncidentFilter::default()
        },
        IncidentFilter {
            severity_min: Some(10),
            limit: 51,
            ..IncidentFilter::default()
        },
        IncidentFilter {
            severity_min: Some(2),
            severity_max: Some(3),
            source: Some("falco".into()),
            limit: 40,
            ..IncidentFilter::default()
        },
        IncidentFilter {
            text: Some("WEB-00".into()),
            limit: 0,
            ..IncidentFilter::default()
        },
        IncidentFilter {
            entity: Some("web-11".into()),
            limit: 0,
            ..IncidentFilter::default()
        },
        IncidentFilter {
            text: Some("finding 7".into()),
            limit: 5,
            ..IncidentFilter::default()
        },
    ];
    for filter in filters {
        let on_sled = ids(sled.incident_page(&filter).await.unwrap());
        let on_postgres = ids(postgres.incident_page(&filter).await.unwrap());
        assert!(!on_sled.is_empty(), "{filter:?} finds nothing");
        assert_eq!(on_sled, on_postgres, "{filter:?}");
    }
    // Page by page with the cursor, every incident once, newest first, on both.
    for store in [&sled, &postgres] {
        let mut seen = Vec::new();
        let mut before = None;
        loop {
            let page = store
                .incident_page(&IncidentFilter {
                    severity_min: Some(5),
                    before: before.clone(),
                    limit: 97,
                    ..IncidentFilter::default()
                })
                .await
                .unwrap();
            if page.is_empty() {
                break;
            }
            before = page.last().map(|i| i.id.clone());
            seen.extend(page.into_iter().map(|i| i.id));
        }
        let expected = alerts.iter().filter(|a| a.severity.score >= 5).count();
        assert_eq!(seen.len(), expected);
        let mut sorted = seen.clone();
        sorted.sort();
        sorted.reverse();
        sorted.dedup();
        assert_eq!(sorted, seen, "newest first, no repeats");
    }
    sled.close().await.unwrap();
    postgres.close().await.unwrap();
    support::pg::drop_schema(&schema).await;
}

/// The first-run example needs no set-up: its bootstrap token makes a personal token for one of
/// its people, which signs in to the console.
#[tokio::test]
async fn the_example_config_signs_in_with_a_personal_token_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let example = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config.example.yaml"),
    )
    .unwrap();
    assert!(example.contains("listen: 127.0.0.1:8080") && example.contains("path: data/cordon"));
    let text = example
        .replace("listen: 127.0.0.1:8080", "listen: 127.0.0.1:0")
        .replace(
            "path: data/cordon",
            &format!("path: {}", dir.path().join("store").display()),
        );
    let config = cordon::config::parse(&text, std::path::Path::new("config.example.yaml"))
        .unwrap_or_else(|d| panic!("{d}"));
    let admin = config
        .server
        .admin_token
        .as_ref()
        .unwrap()
        .expose()
        .to_owned();
    let server = cordon::app::Server::bind(config).await.unwrap();
    let base = format!("http://{}", server.local_addr());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));
    let created: Value = reqwest::Client::new()
        .post(format!("{base}/v1/tokens"))
        .bearer_auth(&admin)
        .json(&json!({ "person": "analyst" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = created["token"]
        .as_str()
        .unwrap_or_else(|| panic!("{created}"));
    let mut browser = Browser::new(&base);
    let (status, _, page) = browser.get("/login").await;
    assert_eq!(status, 200);
    assert!(
        page.contains("Personal token") && !page.contains("Sign in with your identity provider")
    );
    let origin = browser.origin();
    let (status, location, body) = browser
        .post(
            "/login/token",
            &[("token", token), ("next", "/incidents")],
            Some(&origin),
        )
        .await;
    assert_eq!((status, location.as_str()), (303, "/incidents"), "{body}");
    let (status, _, page) = browser.get("/incidents").await;
    assert_eq!(status, 200);
    assert!(
        page.contains("Signed in as <strong>analyst</strong>"),
        "{page}"
    );
    let (status, _, page) = browser.get("/playbooks").await;
    assert_eq!(status, 200);
    assert!(
        page.contains(">valid<"),
        "the example's playbooks are listed as valid"
    );
    let _ = stop.send(());
    task.await.unwrap().unwrap();
}
