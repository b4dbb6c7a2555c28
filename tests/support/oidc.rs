//! An OpenID Connect issuer for the tests: oauth2-mock-server (pinned by scripts/peers, which sets
//! `CORDON_TEST_OIDC_MODULE`) run by `tests/data/oidc/issuer.mjs` on a free port of 127.0.0.1. It
//! serves discovery and its key set as a real issuer does and signs RS256 tokens; a test asks for
//! the claims it needs, and [`Issuer::rotate`] makes it sign with a new key. Dropping it stops it.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub struct Issuer {
    /// The issuer URL, as its discovery document and tokens say it.
    pub url: String,
    base: String,
    http: reqwest::Client,
    child: Child,
}

impl Issuer {
    /// Starts the issuer; panics with what to do when the peer is missing.
    pub async fn start() -> Issuer {
        let module = std::env::var("CORDON_TEST_OIDC_MODULE").unwrap_or_else(|_| {
            panic!(
                "CORDON_TEST_OIDC_MODULE is not set: point it at oauth2-mock-server 8.2.3's \
                 dist/index.mjs (`npm install oauth2-mock-server@8.2.3`), or run the tests with \
                 scripts/test, which installs it and sets it"
            )
        });
        let port = super::free_port();
        let script = super::data("oidc/issuer.mjs");
        let child = Command::new("node")
            .arg(&script)
            .arg(&module)
            .arg(port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run node for the OIDC issuer: {e}"));
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        let url = loop {
            let answer = http
                .get(format!("{base}/.well-known/openid-configuration"))
                .send()
                .await;
            if let Ok(answer) = answer
                && let Ok(doc) = answer.json::<Value>().await
            {
                break doc["issuer"].as_str().unwrap().to_owned();
            }
            assert!(
                Instant::now() < deadline,
                "the OIDC issuer did not come up on {base}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        Issuer {
            url,
            base,
            http,
            child,
        }
    }

    /// A token for audience `aud` with the claims in `claims` (`sub`, `email`, `email_verified`,
    /// `expired`), from the issuer's token endpoint.
    pub async fn token(&self, aud: &str, claims: &[(&str, &str)]) -> String {
        let mut form = vec![("grant_type", "client_credentials"), ("aud", aud)];
        form.extend_from_slice(claims);
        let answer: Value = self
            .http
            .post(format!("{}/token", self.base))
            .form(&form)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        answer["access_token"]
            .as_str()
            .unwrap_or_else(|| panic!("no token: {answer}"))
            .to_owned()
    }

    /// The ids of the keys the issuer publishes.
    pub async fn key_ids(&self) -> Vec<String> {
        let jwks: Value = self
            .http
            .get(format!("{}/jwks", self.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap().to_owned())
            .collect()
    }

    /// Adds a signing key, which signs every token from now on.
    pub async fn rotate(&self) {
        let before = self.key_ids().await.len();
        let status = Command::new("kill")
            .args(["-USR2", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.key_ids().await.len() == before {
            assert!(Instant::now() < deadline, "the issuer did not add a key");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Issuer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
