//! Where the AWS integrations' credentials come from: keys in the config, or the default provider
//! chain AWS's SDKs use (environment, shared profile files, a web identity token file, the
//! ECS/EKS container credentials endpoint, IMDSv2), and, per account, a role assumed through STS.
//!
//! Written here rather than taken from `aws-config`: that crate brings the SDK's runtime, its STS,
//! SSO and SSO-OIDC clients and an HTTP stack of its own, for what is five documented lookups and
//! two STS calls over the reqwest client and SigV4 signer Cordon already has
//! (docs/dependencies.md).
//!
//! Credentials are cached per identity (Cordon's own, and each role) until five minutes before
//! they expire, or half their life when that is shorter; callers of one identity share one
//! request, and callers of other identities do not wait for it.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use reqwest::header::CONTENT_TYPE;
use serde_json::Value;
use tokio::time::Instant;

use super::auth::{AuthError, AwsCredentials, sign_sigv4};
use super::glob;
use crate::config::{AwsRole, Credentials, Secret};
use crate::failure::Failure;

/// How long one request for credentials may take.
const TIMEOUT: Duration = Duration::from_secs(10);
/// Credentials are renewed this long before they expire.
const EARLY: Duration = Duration::from_secs(300);
/// What an assumed role's credentials last (STS's default).
const ROLE_SECONDS: u32 = 3600;
/// The STS API version of AssumeRole and AssumeRoleWithWebIdentity.
const STS_VERSION: &str = "2011-06-15";

/// The environment the chain reads: the process's, or a map in tests.
pub type Env = HashMap<String, String>;

/// Cordon's AWS identity, and the roles it assumes per account.
pub struct AwsProvider {
    http: reqwest::Client,
    base: Base,
    roles: BTreeMap<String, AwsRole>,
    /// The region of the STS endpoint roles are assumed through.
    region: String,
    /// Host pattern → base URL, as for every request of the integration (tests, VPC endpoints).
    endpoints: BTreeMap<String, String>,
    slots: Mutex<HashMap<String, Arc<Slot>>>,
}

/// Where Cordon's own credentials come from.
enum Base {
    Static(AwsCredentials),
    Chain { env: Env, profile: Option<String> },
}

/// One identity's credentials; callers queue on the lock, so one request is in flight.
#[derive(Default)]
struct Slot {
    state: tokio::sync::Mutex<Option<Held>>,
}

#[derive(Clone)]
struct Held {
    credentials: AwsCredentials,
    /// Renew after this; `None`: never (keys from the config).
    renew_at: Option<Instant>,
    /// What the audit calls this identity: the role ARN, or where the credentials came from.
    identity: String,
}

/// Credentials to sign one request with, and who they are.
pub struct Signing {
    pub credentials: AwsCredentials,
    /// The ARN of the role assumed for the resource's account; `None` when Cordon's own identity
    /// signs.
    pub role: Option<String>,
    /// Where the credentials came from: the role ARN, or Cordon's own identity (`config`,
    /// `environment`, `profile NAME`, `web identity ROLE`, `container`, `instance profile ROLE`).
    pub identity: String,
}

impl AwsProvider {
    /// The provider for a credentials entry: its keys when it has them, else the default chain on
    /// `env`; its `roles`, assumed through STS in `region` (the entry's, else `AWS_REGION`, else
    /// us-east-1).
    pub fn new(http: reqwest::Client, c: &Credentials, env: Env) -> Result<AwsProvider, String> {
        let base = match (&c.access_key_id, &c.secret_access_key) {
            (Some(id), Some(secret)) => Base::Static(AwsCredentials {
                access_key_id: id.clone(),
                secret_access_key: secret.clone(),
                session_token: c.session_token.clone(),
            }),
            (None, None) => Base::Chain {
                profile: c.profile.clone(),
                env: env.clone(),
            },
            _ => {
                return Err(
                    "give both access_key_id and secret_access_key, or neither (to use the default credential chain)"
                        .into(),
                );
            }
        };
        for (account, role) in &c.roles {
            if account != "*"
                && !(account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit()))
            {
                return Err(format!(
                    "roles: `{account}` is not an AWS account id (12 digits) or `*`"
                ));
            }
            if !role.role_arn.starts_with("arn:aws") || !role.role_arn.contains(":role/") {
                return Err(format!(
                    "roles.{account}: `{}` is not a role ARN (arn:aws:iam::ACCOUNT:role/NAME)",
                    role.role_arn
                ));
            }
        }
        let region = c
            .region
            .clone()
            .or_else(|| env.get("AWS_REGION").cloned())
            .or_else(|| env.get("AWS_DEFAULT_REGION").cloned())
            .unwrap_or_else(|| "us-east-1".to_owned());
        Ok(AwsProvider {
            http,
            base,
            roles: c.roles.clone(),
            region,
            endpoints: c.endpoints.clone(),
            slots: Mutex::default(),
        })
    }

    /// The role for resources in `account`: its own entry, else `*`; none when no account is
    /// known or no role is configured (Cordon's own identity then acts).
    pub fn role_for(&self, account: Option<&str>) -> Option<&AwsRole> {
        let account = account?;
        self.roles.get(account).or_else(|| self.roles.get("*"))
    }

    /// Credentials for a request about a resource in `account`.
    pub async fn signing(&self, account: Option<&str>) -> Result<Signing, AuthError> {
        let (held, role) = match self.role_for(account) {
            None => (self.held("", || self.fetch_base()).await?, None),
            Some(role) => {
                let key = format!(
                    "{}|{}",
                    role.role_arn,
                    role.external_id.as_deref().unwrap_or("")
                );
                let held = self.held(&key, || self.assume(role)).await?;
                (held, Some(role.role_arn.clone()))
            }
        };
        Ok(Signing {
            credentials: held.credentials,
            role,
            identity: held.identity,
        })
    }

    async fn held<F, Fut>(&self, key: &str, fetch: F) -> Result<Held, AuthError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Held, AuthError>>,
    {
        let slot = {
            let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
            Arc::clone(slots.entry(key.to_owned()).or_default())
        };
        let mut state = slot.state.lock().await;
        if let Some(held) = &*state
            && held.renew_at.is_none_or(|at| Instant::now() < at)
        {
            return Ok(held.clone());
        }
        let fresh = fetch().await?;
        *state = Some(fresh.clone());
        Ok(fresh)
    }

    /// Cordon's own credentials.
    async fn fetch_base(&self) -> Result<Held, AuthError> {
        match &self.base {
            Base::Static(credentials) => Ok(Held {
                credentials: credentials.clone(),
                renew_at: None,
                identity: "config".to_owned(),
            }),
            Base::Chain { env, profile } => self.chain(env, profile.as_deref()).await,
        }
    }

    /// The default chain, in the order AWS's SDKs follow.
    async fn chain(&self, env: &Env, profile: Option<&str>) -> Result<Held, AuthError> {
        let var = |name: &str| env.get(name).filter(|v| !v.is_empty());
        // 1. The environment.
        if let (Some(id), Some(secret)) = (var("AWS_ACCESS_KEY_ID"), var("AWS_SECRET_ACCESS_KEY")) {
            return Ok(Held {
                credentials: AwsCredentials {
                    access_key_id: Secret::new(id),
                    secret_access_key: Secret::new(secret),
                    session_token: var("AWS_SESSION_TOKEN").map(|t| Secret::new(t.as_str())),
                },
                renew_at: None,
                identity: "environment".to_owned(),
            });
        }
        // 2. The shared config and credentials files.
        let named = profile
            .map(str::to_owned)
            .or_else(|| var("AWS_PROFILE").cloned());
        let name = named.clone().unwrap_or_else(|| "default".to_owned());
        match Profile::read(env, &name)? {
            Some(found) => return self.profile_credentials(env, &name, found).await,
            None if named.is_some() => {
                return Err(AuthError::permanent(format!(
                    "AWS profile `{name}` is in neither the shared credentials file nor the config file"
                )));
            }
            None => {}
        }
        // 3. A web identity token file (EKS IAM roles for service accounts).
        if let (Some(file), Some(role)) = (var("AWS_WEB_IDENTITY_TOKEN_FILE"), var("AWS_ROLE_ARN"))
        {
            let session = var("AWS_ROLE_SESSION_NAME").map_or("cordon", String::as_str);
            return self.web_identity(Path::new(file), role, session).await;
        }
        // 4. The ECS or EKS Pod Identity container credentials endpoint.
        if let Some(url) = container_url(env)? {
            return self.container(env, &url).await;
        }
        // 5. The instance profile, through IMDSv2.
        if var("AWS_EC2_METADATA_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
            return Err(AuthError::permanent(
                "no AWS credentials: none in the config, the environment, the shared files, a web identity token file or a container endpoint, and the instance metadata service is disabled (AWS_EC2_METADATA_DISABLED)",
            ));
        }
        let endpoint = var("AWS_EC2_METADATA_SERVICE_ENDPOINT")
            .map_or("http://169.254.169.254", String::as_str);
        self.instance_profile(endpoint.trim_end_matches('/')).await
    }

    async fn profile_credentials(
        &self,
        env: &Env,
        name: &str,
        p: Profile,
    ) -> Result<Held, AuthError> {
        if let Some(role) = p.get("role_arn") {
            let session = p.get("role_session_name").unwrap_or("cordon");
            if let Some(file) = p.get("web_identity_token_file") {
                return self.web_identity(Path::new(file), role, session).await;
            }
            let Some(source) = p.get("source_profile") else {
                return Err(AuthError::permanent(format!(
                    "AWS profile `{name}` has role_arn without source_profile or web_identity_token_file"
                )));
            };
            let Some(source_profile) = Profile::read(env, source)? else {
                return Err(AuthError::permanent(format!(
                    "AWS profile `{name}` names source_profile `{source}`, which does not exist"
                )));
            };
            let Some(keys) = source_profile.keys() else {
                return Err(AuthError::permanent(format!(
                    "AWS profile `{source}` (source_profile of `{name}`) has no keys; Cordon assumes roles from keys only"
                )));
            };
            let role = AwsRole {
                role_arn: role.to_owned(),
                external_id: p.get("external_id").map(str::to_owned),
                session_name: Some(session.to_owned()),
            };
            return self.assume_with(&keys, &role).await;
        }
        if let Some(keys) = p.keys() {
            return Ok(Held {
                credentials: keys,
                renew_at: None,
                identity: format!("profile {name}"),
            });
        }
        let unsupported = ["credential_process", "sso_session", "sso_start_url"]
            .into_iter()
            .find(|key| p.get(key).is_some());
        Err(AuthError::permanent(match unsupported {
            Some(key) => format!(
                "AWS profile `{name}` uses `{key}`, which Cordon does not run: give it keys, a role with a web identity token file, or use the instance or container credentials"
            ),
            None => format!("AWS profile `{name}` has no credentials"),
        }))
    }

    /// `sts:AssumeRoleWithWebIdentity` with the token in `file` (read afresh each time: the
    /// kubelet rotates it). The call is not signed: the token is the credential.
    async fn web_identity(
        &self,
        file: &Path,
        role: &str,
        session: &str,
    ) -> Result<Held, AuthError> {
        let token = std::fs::read_to_string(file).map_err(|e| {
            AuthError::permanent(format!(
                "cannot read the web identity token file {}: {e}",
                file.display()
            ))
        })?;
        let form = [
            ("Action", "AssumeRoleWithWebIdentity"),
            ("Version", STS_VERSION),
            ("RoleArn", role),
            ("RoleSessionName", session),
            ("WebIdentityToken", token.trim()),
            ("DurationSeconds", &ROLE_SECONDS.to_string()),
        ];
        let request = self.sts_request(&form)?;
        let answer = self.send_sts(request, "AssumeRoleWithWebIdentity").await?;
        sts_credentials(
            &answer,
            "AssumeRoleWithWebIdentity",
            format!("web identity {role}"),
        )
    }

    /// `sts:AssumeRole` of `role`, signed with Cordon's own credentials.
    async fn assume(&self, role: &AwsRole) -> Result<Held, AuthError> {
        let base = self.held("", || self.fetch_base()).await?;
        self.assume_with(&base.credentials, role).await
    }

    async fn assume_with(&self, keys: &AwsCredentials, role: &AwsRole) -> Result<Held, AuthError> {
        let seconds = ROLE_SECONDS.to_string();
        let mut form = vec![
            ("Action", "AssumeRole"),
            ("Version", STS_VERSION),
            ("RoleArn", role.role_arn.as_str()),
            (
                "RoleSessionName",
                role.session_name.as_deref().unwrap_or("cordon"),
            ),
            ("DurationSeconds", seconds.as_str()),
        ];
        if let Some(external) = &role.external_id {
            form.push(("ExternalId", external));
        }
        let mut request = self.sts_request(&form)?;
        sign_sigv4(&mut request, keys, &self.region, "sts", SystemTime::now())?;
        let answer = self.send_sts(request, "AssumeRole").await?;
        sts_credentials(&answer, "AssumeRole", role.role_arn.clone())
    }

    /// A form POST to the regional STS endpoint (or the configured endpoint for its host).
    fn sts_request(&self, form: &[(&str, &str)]) -> Result<reqwest::Request, AuthError> {
        let host = format!("sts.{}.amazonaws.com", self.region);
        let base = self
            .endpoints
            .iter()
            .find(|(pattern, _)| glob(pattern, &host))
            .map_or_else(|| format!("https://{host}"), |(_, base)| base.clone());
        let url = format!("{}/", base.trim_end_matches('/'));
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        self.http
            .post(&url)
            .header(
                CONTENT_TYPE,
                "application/x-www-form-urlencoded; charset=utf-8",
            )
            .body(body)
            .timeout(TIMEOUT)
            .build()
            .map_err(|e| {
                AuthError::permanent(format!("the STS endpoint `{url}` is not usable: {e}"))
            })
    }

    async fn send_sts(&self, request: reqwest::Request, action: &str) -> Result<Value, AuthError> {
        let response = self
            .http
            .execute(request)
            .await
            .map_err(|e| transport(&format!("STS {action}"), e))?;
        let status = response.status();
        let failure = Failure::from_response(status.as_u16(), response.headers());
        let text = response.text().await.unwrap_or_default();
        let parsed = super::xml::parse(&text).unwrap_or(Value::Null);
        if let Some(failure) = failure {
            let error = parsed
                .as_object()
                .and_then(|root| root.values().next())
                .and_then(|root| root.get("Error"))
                .cloned()
                .unwrap_or(Value::Null);
            let code = error["Code"].as_str().unwrap_or("Unknown");
            let message = error["Message"].as_str().unwrap_or("");
            return Err(AuthError {
                message: format!("STS {action} refused ({status}): {code}: {message}"),
                failure,
            });
        }
        Ok(parsed)
    }

    /// The container credentials endpoint (ECS task role, EKS Pod Identity).
    async fn container(&self, env: &Env, url: &str) -> Result<Held, AuthError> {
        let mut request = self.http.get(url).timeout(TIMEOUT);
        let token = match env.get("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE") {
            // Read afresh each time: EKS Pod Identity rotates it.
            Some(file) => Some(std::fs::read_to_string(file).map_err(|e| {
                AuthError::permanent(format!(
                    "cannot read AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE {file}: {e}"
                ))
            })?),
            None => env.get("AWS_CONTAINER_AUTHORIZATION_TOKEN").cloned(),
        };
        if let Some(token) = token {
            request = request.header("Authorization", token.trim());
        }
        let answer = get_json(request, "the container credentials endpoint").await?;
        json_credentials(
            &answer,
            "the container credentials endpoint",
            "container".to_owned(),
        )
    }

    /// IMDSv2: a session token (PUT), the instance profile's role name, then its credentials.
    async fn instance_profile(&self, endpoint: &str) -> Result<Held, AuthError> {
        let what = "the instance metadata service";
        let token = self
            .http
            .put(format!("{endpoint}/latest/api/token"))
            .header("X-aws-ec2-metadata-token-ttl-seconds", "21600")
            .timeout(TIMEOUT)
            .send()
            .await
            .map_err(|e| {
                transport(
                    &format!("no AWS credentials in the config, the environment, the shared files or a container endpoint, and {what}"),
                    e,
                )
            })?;
        let token = checked(token, what).await?;
        let path = format!("{endpoint}/latest/meta-data/iam/security-credentials/");
        let names = self
            .http
            .get(&path)
            .header("X-aws-ec2-metadata-token", token.trim())
            .timeout(TIMEOUT)
            .send()
            .await
            .map_err(|e| transport(what, e))?;
        let names = checked(names, what).await?;
        let Some(role) = names.lines().map(str::trim).find(|l| !l.is_empty()) else {
            return Err(AuthError::permanent(
                "the instance has no instance profile (the metadata service lists no role)",
            ));
        };
        let request = self
            .http
            .get(format!("{path}{role}"))
            .header("X-aws-ec2-metadata-token", token.trim())
            .timeout(TIMEOUT);
        let answer = get_json(request, what).await?;
        if let Some(code) = answer["Code"].as_str()
            && code != "Success"
        {
            return Err(AuthError::permanent(format!(
                "{what} answered Code `{code}` for role `{role}`"
            )));
        }
        json_credentials(&answer, what, format!("instance profile {role}"))
    }
}

/// The container endpoint the environment names, checked as AWS's SDKs check it: a relative URI
/// on the ECS agent's address, or a full URI that is HTTPS or a loopback or the ECS/EKS
/// link-local address.
fn container_url(env: &Env) -> Result<Option<String>, AuthError> {
    if let Some(relative) = env.get("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI") {
        return Ok(Some(format!("http://169.254.170.2{relative}")));
    }
    let Some(full) = env.get("AWS_CONTAINER_CREDENTIALS_FULL_URI") else {
        return Ok(None);
    };
    let url = url::Url::parse(full).map_err(|e| {
        AuthError::permanent(format!(
            "AWS_CONTAINER_CREDENTIALS_FULL_URI `{full}` is not a URL: {e}"
        ))
    })?;
    let allowed = url.scheme() == "https"
        || match url.host() {
            Some(url::Host::Ipv4(ip)) => {
                ip.is_loopback()
                    || ip == std::net::Ipv4Addr::new(169, 254, 170, 2)
                    || ip == std::net::Ipv4Addr::new(169, 254, 170, 23)
            }
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            Some(url::Host::Domain(name)) => name == "localhost",
            None => false,
        };
    if !allowed {
        return Err(AuthError::permanent(format!(
            "AWS_CONTAINER_CREDENTIALS_FULL_URI `{full}` must be HTTPS, a loopback address or the ECS/EKS agent's address"
        )));
    }
    Ok(Some(full.clone()))
}

fn transport(what: &str, e: reqwest::Error) -> AuthError {
    let failure = Failure::from_transport(&e);
    AuthError {
        message: format!("{what} failed: {}", e.without_url()),
        failure,
    }
}

/// The body of a 2xx answer, else an error classed by its status.
async fn checked(response: reqwest::Response, what: &str) -> Result<String, AuthError> {
    let status = response.status();
    let failure = Failure::from_response(status.as_u16(), response.headers());
    let text = response.text().await.map_err(|e| transport(what, e))?;
    match failure {
        Some(failure) => Err(AuthError {
            message: format!("{what} answered {status}"),
            failure,
        }),
        None => Ok(text),
    }
}

async fn get_json(request: reqwest::RequestBuilder, what: &str) -> Result<Value, AuthError> {
    let response = request.send().await.map_err(|e| transport(what, e))?;
    let text = checked(response, what).await?;
    serde_json::from_str(&text)
        .map_err(|e| AuthError::permanent(format!("{what} did not answer JSON: {e}")))
}

/// `{AccessKeyId, SecretAccessKey, Token, Expiration}`, as the container endpoint and IMDS answer.
fn json_credentials(answer: &Value, what: &str, identity: String) -> Result<Held, AuthError> {
    let field = |name: &str| {
        answer[name]
            .as_str()
            .filter(|v| !v.is_empty())
            .ok_or_else(|| AuthError::permanent(format!("{what} answered without `{name}`")))
    };
    Ok(Held {
        credentials: AwsCredentials {
            access_key_id: Secret::new(field("AccessKeyId")?),
            secret_access_key: Secret::new(field("SecretAccessKey")?),
            session_token: answer["Token"].as_str().map(Secret::new),
        },
        renew_at: renew_at(answer["Expiration"].as_str()),
        identity,
    })
}

/// The credentials of an STS answer (`<Action>Response.<Action>Result.Credentials`).
fn sts_credentials(answer: &Value, action: &str, identity: String) -> Result<Held, AuthError> {
    let credentials =
        &answer[format!("{action}Response")][format!("{action}Result")]["Credentials"];
    let field = |name: &str| {
        credentials[name]
            .as_str()
            .filter(|v| !v.is_empty())
            .ok_or_else(|| AuthError::permanent(format!("STS {action} answered without `{name}`")))
    };
    Ok(Held {
        credentials: AwsCredentials {
            access_key_id: Secret::new(field("AccessKeyId")?),
            secret_access_key: Secret::new(field("SecretAccessKey")?),
            session_token: Some(Secret::new(field("SessionToken")?)),
        },
        renew_at: renew_at(credentials["Expiration"].as_str()).or(Some(Instant::now())),
        identity,
    })
}

/// When to renew credentials that expire at `expiration` (RFC 3339): five minutes before, or
/// halfway when they last less than ten; at once when the time is missing or unreadable.
fn renew_at(expiration: Option<&str>) -> Option<Instant> {
    let expiration = expiration?;
    let Ok(at) = DateTime::parse_from_rfc3339(expiration) else {
        return Some(Instant::now());
    };
    let left = (at.with_timezone(&Utc) - Utc::now())
        .to_std()
        .unwrap_or_default();
    let keep = left.saturating_sub(EARLY).max(left / 2);
    Some(Instant::now() + keep)
}

/// One profile of the shared files: the credentials file's section merged over the config file's.
struct Profile(BTreeMap<String, String>);

impl Profile {
    /// The profile `name` from `AWS_SHARED_CREDENTIALS_FILE` (default ~/.aws/credentials) and
    /// `AWS_CONFIG_FILE` (default ~/.aws/config, where it is `[profile NAME]` except `default`).
    fn read(env: &Env, name: &str) -> Result<Option<Profile>, AuthError> {
        let home = env.get("HOME").map(PathBuf::from);
        let file = |var: &str, default: &str| {
            env.get(var)
                .map(PathBuf::from)
                .or_else(|| home.as_ref().map(|h| h.join(default)))
        };
        let mut found: Option<BTreeMap<String, String>> = None;
        let config_section = if name == "default" {
            "default".to_owned()
        } else {
            format!("profile {name}")
        };
        for (path, section) in [
            (
                file("AWS_CONFIG_FILE", ".aws/config"),
                config_section.as_str(),
            ),
            (
                file("AWS_SHARED_CREDENTIALS_FILE", ".aws/credentials"),
                name,
            ),
        ] {
            let Some(path) = path else { continue };
            let text = match std::fs::read_to_string(&path) {
                Ok(text) => text,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    return Err(AuthError::permanent(format!(
                        "cannot read {}: {e}",
                        path.display()
                    )));
                }
            };
            if let Some(values) = ini_section(&text, section) {
                found.get_or_insert_default().extend(values);
            }
        }
        Ok(found.map(Profile))
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    fn keys(&self) -> Option<AwsCredentials> {
        Some(AwsCredentials {
            access_key_id: Secret::new(self.get("aws_access_key_id")?),
            secret_access_key: Secret::new(self.get("aws_secret_access_key")?),
            session_token: self.get("aws_session_token").map(Secret::new),
        })
    }
}

/// The `key = value` lines of `[section]` in an INI text (comments `#` and `;`; keys lower case).
fn ini_section(text: &str, section: &str) -> Option<BTreeMap<String, String>> {
    let mut current: Option<bool> = None;
    let mut values: Option<BTreeMap<String, String>> = None;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let here = name.split_whitespace().collect::<Vec<_>>().join(" ") == section;
            current = Some(here);
            if here {
                values.get_or_insert_default();
            }
            continue;
        }
        if current == Some(true)
            && let Some((key, value)) = line.split_once('=')
        {
            values
                .get_or_insert_default()
                .insert(key.trim().to_ascii_lowercase(), value.trim().to_owned());
        }
    }
    values
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_are_read_from_both_files_the_credentials_file_winning() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("config"),
            "[default]\nregion = eu-west-1\n\n[profile ops]\nrole_arn = arn:aws:iam::111122223333:role/ops\nsource_profile = default\n# a comment\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("credentials"),
            "[default]\naws_access_key_id = AKIADEFAULT\naws_secret_access_key = s3cr3t\n[ops]\nregion = us-west-2\n",
        )
        .unwrap();
        let env: Env = [
            ("AWS_CONFIG_FILE", dir.path().join("config")),
            (
                "AWS_SHARED_CREDENTIALS_FILE",
                dir.path().join("credentials"),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.display().to_string()))
        .collect();
        let default = Profile::read(&env, "default").unwrap().unwrap();
        assert_eq!(
            default.keys().unwrap().access_key_id.expose(),
            "AKIADEFAULT"
        );
        assert_eq!(default.get("region"), Some("eu-west-1"));
        let ops = Profile::read(&env, "ops").unwrap().unwrap();
        assert_eq!(
            ops.get("role_arn"),
            Some("arn:aws:iam::111122223333:role/ops")
        );
        assert_eq!(ops.get("region"), Some("us-west-2"));
        assert!(ops.keys().is_none());
        assert!(Profile::read(&env, "absent").unwrap().is_none());
    }

    #[test]
    fn a_full_container_uri_must_be_local_or_https() {
        let env = |uri: &str| -> Env {
            [(
                "AWS_CONTAINER_CREDENTIALS_FULL_URI".to_owned(),
                uri.to_owned(),
            )]
            .into()
        };
        for good in [
            "http://169.254.170.23/v1/credentials",
            "http://127.0.0.1:9999/creds",
            "https://creds.example.com/x",
        ] {
            assert!(container_url(&env(good)).unwrap().is_some(), "{good}");
        }
        let error = container_url(&env("http://10.0.0.8/creds")).unwrap_err();
        assert!(error.message.contains("must be HTTPS"), "{error}");
    }

    #[test]
    fn credentials_are_renewed_before_they_expire() {
        let in_an_hour = (Utc::now() + chrono::TimeDelta::hours(1)).to_rfc3339();
        let at = renew_at(Some(&in_an_hour)).unwrap();
        let left = at - Instant::now();
        assert!(
            left > Duration::from_secs(3200) && left < Duration::from_secs(3300),
            "{left:?}"
        );
        let soon = (Utc::now() + chrono::TimeDelta::minutes(4)).to_rfc3339();
        let left = renew_at(Some(&soon)).unwrap() - Instant::now();
        assert!(
            left > Duration::from_secs(100) && left <= Duration::from_secs(120),
            "{left:?}"
        );
        assert!(renew_at(None).is_none());
    }
}
