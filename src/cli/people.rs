//! `cordon tokens`, `cordon people`, `cordon login` and `cordon whoami`.
//!
//! Tokens and people are managed through the running server's API with the CLI's credential
//! (an `admin`'s token, or the bootstrap admin token from the config). When no server holds the
//! store (an embedded store with the server stopped), they are managed in the store directly:
//! whoever can open the store's folder is trusted with it anyway.

use std::io::BufRead;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, anyhow, bail};
use clap::{Args, Subcommand};
use cordon::config::HumanDuration;
use cordon::model::people::{Person, Role};
use cordon::store::StoreError;
use cordon::trust::{Directory, TrustError, person_roles};
use reqwest::Method;
use serde_json::{Value, json};

use super::commands::load_config;
use super::reader::{SavedCredentials, call, credentials_path, server_base};

#[derive(Debug, Subcommand)]
pub(super) enum TokensCommand {
    /// Create a personal token; it is printed once, and only its hash is kept.
    Create {
        /// Whose token it is.
        #[arg(long)]
        person: String,
        /// Limit the token to these roles (repeat; default: all of the person's).
        #[arg(long = "role", value_name = "ROLE")]
        roles: Vec<String>,
        /// When it expires: `90d`, `12h` (default: never).
        #[arg(long, value_name = "DURATION")]
        expires: Option<String>,
        #[arg(long, value_name = "URL")]
        server: Option<String>,
    },
    /// Every token: id, person, roles, created, last used, expiry, state (never a secret).
    List {
        #[arg(long, value_name = "URL")]
        server: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token: refused from the next request on, on every replica.
    Revoke {
        id: String,
        #[arg(long, value_name = "URL")]
        server: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub(super) enum PeopleCommand {
    /// Everyone: the config's people and the stored ones.
    List {
        #[arg(long, value_name = "URL")]
        server: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Add or replace a stored person.
    Add {
        id: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        email: Option<String>,
        /// `viewer`, `responder`, `approver`, `author`, `admin` (repeat).
        #[arg(long = "role", value_name = "ROLE")]
        roles: Vec<String>,
        /// `slack:U123`, `discord:42`, `oidc:alice@example.com`, ... (repeat).
        #[arg(long = "identity", value_name = "IDENTITY")]
        identities: Vec<String>,
        /// An approver group to join (repeat).
        #[arg(long = "group", value_name = "GROUP")]
        groups: Vec<String>,
        #[arg(long, value_name = "URL")]
        server: Option<String>,
    },
    /// Remove a stored person and revoke their tokens.
    Remove {
        id: String,
        #[arg(long, value_name = "URL")]
        server: Option<String>,
    },
}

#[derive(Debug, Args)]
pub(super) struct LoginArgs {
    /// The server to log in to (saved with the credential).
    #[arg(long, value_name = "URL")]
    server: Option<String>,
    /// Read the token from standard input instead of asking for it.
    #[arg(long)]
    token_stdin: bool,
    /// Log in with the configured OIDC issuer (device authorization grant) instead of a token.
    #[arg(long)]
    oidc: bool,
}

fn roles(names: &[String]) -> anyhow::Result<Vec<Role>> {
    names
        .iter()
        .map(|n| {
            Role::parse(n).ok_or_else(|| {
                anyhow!("`{n}` is not a role: viewer, responder, approver, author, admin")
            })
        })
        .collect()
}

/// The embedded store with its people, when no server holds it; `None` when one does.
async fn local(config_path: &Path, server: Option<&str>) -> anyhow::Result<Option<Directory>> {
    if server.is_some() {
        return Ok(None);
    }
    let config =
        load_config(config_path).map_err(|_| anyhow!("the config has errors (see above)"))?;
    if config.store.kind != cordon::config::StoreKind::Sled {
        return Ok(None);
    }
    let metrics = Arc::new(cordon::telemetry::Metrics::new());
    match cordon::store::open(&config.store, &config.grouping, metrics).await {
        Ok(store) => Ok(Some(Directory::new(&config, store))),
        Err(StoreError::Locked(_)) => Ok(None),
        Err(e) => Err(anyhow!("cannot open the store: {e}")),
    }
}

fn trust(e: TrustError) -> anyhow::Error {
    anyhow!("{e}")
}

pub(super) async fn tokens(config: &Path, command: TokensCommand) -> anyhow::Result<ExitCode> {
    match command {
        TokensCommand::Create {
            person,
            roles: names,
            expires,
            server,
        } => {
            let roles = roles(&names)?;
            let answer = match local(config, server.as_deref()).await? {
                Some(directory) => {
                    let expires = match &expires {
                        Some(text) => {
                            let d: HumanDuration =
                                text.parse().map_err(|e| anyhow!("--expires: {e}"))?;
                            Some(
                                chrono::TimeDelta::from_std(d.0)
                                    .context("--expires: too far away")?,
                            )
                        }
                        None => None,
                    };
                    let now = chrono::Utc::now();
                    let (record, secret) = directory
                        .create_token(&person, roles, expires, "cli:local-store", now)
                        .await
                        .map_err(trust)?;
                    let mut answer = record.summary(now);
                    answer["token"] = json!(secret);
                    answer
                }
                None => {
                    let body = json!({ "person": person, "roles": roles, "expires": expires });
                    call(
                        config,
                        server.as_deref(),
                        Method::POST,
                        "/v1/tokens",
                        Some(body),
                    )
                    .await?
                }
            };
            eprintln!(
                "token {} for {} (roles: {}; expires: {}). It is shown this once; Cordon keeps only its hash:",
                answer["id"].as_str().unwrap_or("?"),
                answer["person"].as_str().unwrap_or("?"),
                answer["roles"],
                answer["expires_at"].as_str().unwrap_or("never"),
            );
            println!("{}", answer["token"].as_str().unwrap_or_default());
        }
        TokensCommand::List { server, json } => {
            let tokens = match local(config, server.as_deref()).await? {
                Some(directory) => {
                    let now = chrono::Utc::now();
                    let all = directory.tokens().await?;
                    json!({ "tokens": all.iter().map(|t| t.summary(now)).collect::<Vec<_>>() })
                }
                None => call(config, server.as_deref(), Method::GET, "/v1/tokens", None).await?,
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&tokens)?);
            } else {
                println!(
                    "{:<14} {:<16} {:<8} {:<26} {:<26} {:<26} ROLES",
                    "ID", "PERSON", "STATE", "CREATED", "LAST USED", "EXPIRES"
                );
                for t in tokens["tokens"].as_array().into_iter().flatten() {
                    let s = |k: &str| t[k].as_str().unwrap_or("-").to_owned();
                    println!(
                        "{:<14} {:<16} {:<8} {:<26} {:<26} {:<26} {}",
                        s("id"),
                        super::print::safe(&s("person")),
                        s("state"),
                        s("created_at"),
                        s("last_used_at"),
                        s("expires_at"),
                        t["roles"]
                    );
                }
            }
        }
        TokensCommand::Revoke { id, server } => {
            match local(config, server.as_deref()).await? {
                Some(directory) => {
                    directory
                        .revoke_token(&id, chrono::Utc::now())
                        .await
                        .map_err(trust)?;
                }
                None => {
                    call(
                        config,
                        server.as_deref(),
                        Method::DELETE,
                        &format!("/v1/tokens/{id}"),
                        None,
                    )
                    .await?;
                }
            }
            println!("{id}: revoked");
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn people(config: &Path, command: PeopleCommand) -> anyhow::Result<ExitCode> {
    match command {
        PeopleCommand::List { server, json } => {
            let people = match local(config, server.as_deref()).await? {
                Some(directory) => {
                    let all = directory.people().await?;
                    json!({ "people": all.iter().map(|(p, source)| json!({ "id": p.id, "name": p.name, "email": p.email, "roles": person_roles(p).iter().collect::<Vec<_>>(), "identities": p.identities, "groups": p.groups, "defined_in": source })).collect::<Vec<_>>() })
                }
                None => call(config, server.as_deref(), Method::GET, "/v1/people", None).await?,
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&people)?);
            } else {
                for p in people["people"].as_array().into_iter().flatten() {
                    let list = |k: &str| {
                        p[k].as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(Value::as_str)
                            .map(super::print::safe)
                            .collect::<Vec<_>>()
                            .join(", ")
                    };
                    println!(
                        "{} ({}, {}): roles {}; identities {}",
                        super::print::safe(p["id"].as_str().unwrap_or("?")),
                        super::print::safe(p["name"].as_str().unwrap_or("-")),
                        p["defined_in"].as_str().unwrap_or("?"),
                        list("roles"),
                        list("identities")
                    );
                }
            }
        }
        PeopleCommand::Add {
            id,
            name,
            email,
            roles: names,
            identities,
            groups,
            server,
        } => {
            let roles = roles(&names)?;
            let groups: Vec<String> = groups
                .into_iter()
                .map(|g| {
                    if g.starts_with("group:") {
                        g
                    } else {
                        format!("group:{g}")
                    }
                })
                .collect();
            match local(config, server.as_deref()).await? {
                Some(directory) => {
                    let person = Person {
                        id: id.clone(),
                        name,
                        email,
                        roles: if roles.is_empty() {
                            vec![Role::Viewer]
                        } else {
                            roles
                        },
                        identities,
                        groups,
                    };
                    directory.put_person(person).await.map_err(trust)?;
                }
                None => {
                    let body = json!({ "name": name, "email": email, "roles": roles, "identities": identities, "groups": groups });
                    call(
                        config,
                        server.as_deref(),
                        Method::PUT,
                        &format!("/v1/people/{id}"),
                        Some(body),
                    )
                    .await?;
                }
            }
            println!("{id}: saved");
        }
        PeopleCommand::Remove { id, server } => {
            match local(config, server.as_deref()).await? {
                Some(directory) => directory
                    .remove_person(&id, chrono::Utc::now())
                    .await
                    .map_err(trust)?,
                None => {
                    call(
                        config,
                        server.as_deref(),
                        Method::DELETE,
                        &format!("/v1/people/{id}"),
                        None,
                    )
                    .await?;
                }
            }
            println!("{id}: removed, and their tokens revoked");
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn whoami(config: &Path, server: Option<&str>) -> anyhow::Result<ExitCode> {
    let me = call(config, server, Method::GET, "/v1/whoami", None).await?;
    match me["person"].as_str() {
        Some(person) => println!(
            "{} as {} (roles: {})",
            super::print::safe(person),
            super::print::safe(me["identity"].as_str().unwrap_or("?")),
            me["roles"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        None => println!("the bootstrap admin token: it manages people and tokens only"),
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn login(config_path: &Path, args: LoginArgs) -> anyhow::Result<ExitCode> {
    let config =
        load_config(config_path).map_err(|_| anyhow!("the config has errors (see above)"))?;
    let server = server_base(&config, args.server.as_deref()).ok();
    let token = if args.oidc {
        let oidc = config.oidc.as_ref().ok_or_else(|| {
            anyhow!("the config names no `oidc` issuer; paste a personal token instead")
        })?;
        device_login(oidc).await?
    } else {
        if !args.token_stdin {
            eprintln!("Paste your personal token (from `cordon tokens create`), then Enter:");
        }
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        line.trim().to_owned()
    };
    if token.is_empty() {
        bail!("no token given");
    }
    let Some(path) = credentials_path() else {
        bail!("cannot tell where to save the credential: set CORDON_CREDENTIALS or HOME");
    };
    let saved = SavedCredentials {
        token: token.clone(),
        server: server.clone(),
    };
    // Checked before it is saved: a mistyped token is reported, not stored.
    if let Some(base) = &server {
        let me = reqwest::Client::new()
            .get(format!("{base}/v1/whoami"))
            .bearer_auth(&token)
            .send()
            .await
            .with_context(|| format!("cannot reach the server at {base}"))?;
        let status = me.status();
        let body: Value = me.json().await.unwrap_or_default();
        if !status.is_success() {
            bail!(
                "the server refused the credential: {} ({status})",
                body["message"].as_str().unwrap_or("")
            );
        }
        eprintln!(
            "logged in as {}",
            super::print::safe(
                body["person"]
                    .as_str()
                    .unwrap_or("the bootstrap admin token")
            )
        );
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    write_private(&path, &serde_json::to_vec_pretty(&saved)?)
        .with_context(|| format!("cannot write {}", path.display()))?;
    eprintln!("saved to {} (readable by you only)", path.display());
    Ok(ExitCode::SUCCESS)
}

/// Writes `bytes` to a file only its owner can read.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    file.write_all(bytes)
}

/// The OAuth 2.0 device authorization grant (RFC 8628) against the configured issuer: prints
/// where to go and the code to enter, then polls for the token. The ID token is what is saved
/// (its audience is the client id, which the server checks).
async fn device_login(oidc: &cordon::config::OidcConfig) -> anyhow::Result<String> {
    let http = reqwest::Client::new();
    let discovery: Value = http
        .get(format!(
            "{}/.well-known/openid-configuration",
            oidc.issuer.trim_end_matches('/')
        ))
        .send()
        .await
        .context("cannot read the issuer's discovery document")?
        .json()
        .await
        .context("the issuer's discovery document is not JSON")?;
    let device = discovery["device_authorization_endpoint"]
        .as_str()
        .ok_or_else(|| {
            anyhow!(
                "the issuer offers no device authorization grant; paste a personal token instead"
            )
        })?;
    let token_url = discovery["token_endpoint"]
        .as_str()
        .ok_or_else(|| anyhow!("the issuer's discovery document names no token endpoint"))?;
    let client_id = oidc.client_id.as_deref().unwrap_or(&oidc.audience);
    let start: Value = http
        .post(device)
        .form(&[("client_id", client_id), ("scope", "openid email profile")])
        .send()
        .await?
        .json()
        .await?;
    let device_code = start["device_code"]
        .as_str()
        .ok_or_else(|| anyhow!("the issuer did not start a device login: {start}"))?;
    eprintln!(
        "Open {} and enter the code {}",
        start["verification_uri_complete"]
            .as_str()
            .or(start["verification_uri"].as_str())
            .unwrap_or("?"),
        start["user_code"].as_str().unwrap_or("?")
    );
    let mut interval = start["interval"].as_u64().unwrap_or(5);
    let deadline = std::time::Instant::now()
        + std::time::Duration::from_secs(start["expires_in"].as_u64().unwrap_or(600));
    while std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_secs(interval)).await;
        let answer: Value = http
            .post(token_url)
            .form(&[
                ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
                ("device_code", device_code),
                ("client_id", client_id),
            ])
            .send()
            .await?
            .json()
            .await?;
        if let Some(token) = answer["id_token"].as_str() {
            return Ok(token.to_owned());
        }
        match answer["error"].as_str() {
            Some("authorization_pending") => {}
            Some("slow_down") => interval += 5,
            Some(other) => bail!("the issuer refused the login: {other}"),
            None => bail!("the issuer answered neither a token nor an error"),
        }
    }
    bail!("the device login expired before it was completed")
}
