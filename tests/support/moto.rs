//! moto, the AWS emulator, as a child process on 127.0.0.1 for tests that need a real AWS API.
//!
//! `Moto::start()` runs the `moto_server` named by `CORDON_TEST_MOTO_SERVER` on a free port (it
//! binds port 0 and prints the port it got) and waits until it answers; dropping the `Moto` kills
//! it. The helpers call moto's APIs directly to set up resources and read state back: moto takes
//! any credentials and checks no signature, only the signing scope (which picks the service).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The account id moto reports for every resource.
pub const ACCOUNT: &str = "123456789012";

/// An AWS Query API (a service, the region it is signed for, its version), as EC2 and IAM are.
#[derive(Clone, Copy)]
pub struct QueryApi<'a> {
    pub service: &'a str,
    pub region: &'a str,
    pub version: &'a str,
}

impl<'a> QueryApi<'a> {
    /// IAM, global (signed for us-east-1).
    pub const IAM: QueryApi<'static> = QueryApi {
        service: "iam",
        region: "us-east-1",
        version: "2010-05-08",
    };

    pub fn ec2(region: &'a str) -> QueryApi<'a> {
        QueryApi {
            service: "ec2",
            region,
            version: "2016-11-15",
        }
    }
}

pub struct Moto {
    /// `http://127.0.0.1:<port>`
    pub base: String,
    pub http: reqwest::Client,
    child: Child,
}

impl Moto {
    /// Starts moto; panics with what to do when `CORDON_TEST_MOTO_SERVER` is unset or moto does not
    /// come up.
    pub async fn start() -> Moto {
        let program = std::env::var("CORDON_TEST_MOTO_SERVER").unwrap_or_else(|_| {
            panic!(
                "CORDON_TEST_MOTO_SERVER is not set: point it at moto's `moto_server` (moto 5.2.5, \
                 `pip install 'moto[server]==5.2.5'`), or run the tests with scripts/test, which sets it"
            )
        });
        let mut child = Command::new(&program)
            .args(["-H", "127.0.0.1", "-p", "0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
        // moto logs every request on stderr: read it to the end so it never blocks on a full pipe,
        // and pass on the line that says where it listens.
        let stderr = child.stderr.take().expect("stderr is piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(at) = line.find("Running on http://") {
                    let address = line[at + "Running on ".len()..].trim().to_owned();
                    let _ = tx.send(address);
                }
            }
        });
        let base = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(base) => base,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{program} did not say where it listens within 30 s");
            }
        };
        let moto = Moto {
            base,
            http: reqwest::Client::new(),
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = moto
                .http
                .get(format!("{}/moto-api/", moto.base))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                return moto;
            }
            assert!(
                Instant::now() < deadline,
                "moto at {} never answered",
                moto.base
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The signature header moto reads the service and region from.
    fn authorization(service: &str, region: &str) -> String {
        Moto::authorization_as("AKIAIOSFODNN7EXAMPLE", service, region)
    }

    /// The same with another access key id: moto acts in the account a key from STS belongs to.
    fn authorization_as(key: &str, service: &str, region: &str) -> String {
        format!(
            "AWS4-HMAC-SHA256 Credential={key}/20240101/{region}/{service}/aws4_request, \
             SignedHeaders=host, Signature=0"
        )
    }

    /// An access key id of `role_arn` (moto's STS `AssumeRole`): requests with it act in the
    /// role's account.
    pub async fn key_in(&self, role_arn: &str) -> String {
        let xml = self
            .query(
                QueryApi {
                    service: "sts",
                    region: "us-east-1",
                    version: "2011-06-15",
                },
                "AssumeRole",
                &[("RoleArn", role_arn), ("RoleSessionName", "test-setup")],
            )
            .await;
        xml_value(&xml, "AccessKeyId")
    }

    /// A Query API call signed with the access key id `key`; panics unless moto answers 2xx.
    pub async fn query_as(
        &self,
        key: &str,
        api: QueryApi<'_>,
        action: &str,
        params: &[(&str, &str)],
    ) -> String {
        let mut form = vec![("Action", action), ("Version", api.version)];
        form.extend_from_slice(params);
        let response = self
            .http
            .post(format!("{}/", self.base))
            .header(
                "Authorization",
                Moto::authorization_as(key, api.service, api.region),
            )
            .form(&form)
            .send()
            .await
            .expect("moto answers");
        let status = response.status().as_u16();
        let body = response.text().await.unwrap();
        assert!(
            (200..300).contains(&status),
            "moto {} {action} answered {status}: {body}",
            api.service
        );
        body
    }

    /// A Query API call (EC2, IAM); panics unless moto answers 2xx. Gives the XML.
    pub async fn query(&self, api: QueryApi<'_>, action: &str, params: &[(&str, &str)]) -> String {
        let (status, body) = self.try_query(api, action, params).await;
        assert!(
            (200..300).contains(&status),
            "moto {} {action} answered {status}: {body}",
            api.service
        );
        body
    }

    /// A Query API call; gives the status and the XML whatever they are.
    pub async fn try_query(
        &self,
        api: QueryApi<'_>,
        action: &str,
        params: &[(&str, &str)],
    ) -> (u16, String) {
        let mut form = vec![("Action", action), ("Version", api.version)];
        form.extend_from_slice(params);
        let response = self
            .http
            .post(format!("{}/", self.base))
            .header(
                "Authorization",
                Moto::authorization(api.service, api.region),
            )
            .form(&form)
            .send()
            .await
            .expect("moto answers");
        let status = response.status().as_u16();
        (status, response.text().await.unwrap())
    }

    pub async fn ec2(&self, region: &str, action: &str, params: &[(&str, &str)]) -> String {
        self.query(QueryApi::ec2(region), action, params).await
    }

    pub async fn iam(&self, action: &str, params: &[(&str, &str)]) -> String {
        self.query(QueryApi::IAM, action, params).await
    }

    /// An S3 REST call on a path (`/bucket?publicAccessBlock`); gives status and body.
    pub async fn s3(
        &self,
        method: reqwest::Method,
        region: &str,
        path: &str,
        body: &str,
    ) -> (u16, String) {
        let response = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("Authorization", Moto::authorization("s3", region))
            .header("Content-Type", "application/xml")
            .body(body.to_owned())
            .send()
            .await
            .expect("moto answers");
        let status = response.status().as_u16();
        (status, response.text().await.unwrap())
    }

    /// A JSON-protocol call (`X-Amz-Target: <target>`); panics unless 200.
    pub async fn json(&self, service: &str, region: &str, target: &str, body: Value) -> Value {
        let response = self
            .http
            .post(format!("{}/", self.base))
            .header("Authorization", Moto::authorization(service, region))
            .header("Content-Type", "application/x-amz-json-1.1")
            .header("X-Amz-Target", target)
            .body(body.to_string())
            .send()
            .await
            .expect("moto answers");
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        assert_eq!(status, 200, "moto {target} answered {status}: {text}");
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("moto {target}: {e}: {text}"))
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The text of every `<tag>…</tag>` in `xml`, in order (moto's answers have no attributes on the
/// elements the tests read).
pub fn xml_values(xml: &str, tag: &str) -> Vec<String> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let mut values = Vec::new();
    let mut rest = xml;
    while let Some(start) = rest.find(&open) {
        let after = &rest[start + open.len()..];
        let Some(end) = after.find(&close) else { break };
        values.push(after[..end].to_owned());
        rest = &after[end + close.len()..];
    }
    values
}

/// The first `<tag>…</tag>` of `xml`; panics when there is none.
pub fn xml_value(xml: &str, tag: &str) -> String {
    xml_values(xml, tag)
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no <{tag}> in {xml}"))
}
