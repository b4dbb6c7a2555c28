//! The host functions integration scripts may call, and the sandboxed engine that runs them.
//!
//! Scripts run on a blocking thread (`spawn_blocking`); the call they serve (which integration,
//! which run, the runtime handle for HTTP) is kept in a thread-local for the duration of the call,
//! since Rhai's registered functions are global to the engine.

use std::cell::{Cell, RefCell};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use rhai::{Dynamic, Engine, EvalAltResult, Map, Position};
use serde_json::{Value, json};
use sha2::Digest;

use super::Integration;
use super::auth::AuthError;
use super::ioc::IocIndex;
use crate::engine::exec::ActionCall;
use crate::failure::Failure;
use crate::script::Limits;

/// What a running call may reach.
pub(crate) struct CallEnv {
    pub integration: Arc<Integration>,
    pub call: ActionCall,
    pub handle: tokio::runtime::Handle,
    pub http: reqwest::Client,
    pub ioc: Arc<IocIndex>,
    /// The cloud account the call acts in: the action's `account` input when it has one, else
    /// the account of the run's alert.
    pub account: Option<String>,
    /// The identities the call's requests were signed as (assumed roles), for the audit.
    pub acted_as: std::sync::Mutex<std::collections::BTreeSet<String>>,
}

thread_local! {
    static CURRENT: RefCell<Option<Arc<CallEnv>>> = const { RefCell::new(None) };
    static DEADLINE: Cell<Option<Instant>> = const { Cell::new(None) };
    /// The message of the last retryable failure raised on this thread, to tell it apart from a
    /// script's own `throw` when the error reaches the host.
    static RETRYABLE: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// An error a host function raises: its message, and what it means for trying again (the run
/// retries the step when it may pass by itself).
#[derive(Debug, Clone)]
pub(crate) struct HostError {
    pub message: String,
    pub failure: Failure,
}

impl HostError {
    pub fn new(failure: Failure, message: impl Into<String>) -> HostError {
        HostError {
            message: message.into(),
            failure,
        }
    }

    pub fn permanent(message: impl Into<String>) -> HostError {
        HostError::new(Failure::Permanent, message)
    }

    pub fn retryable(message: impl Into<String>) -> HostError {
        HostError::new(Failure::Retryable, message)
    }
}

impl From<AuthError> for HostError {
    fn from(error: AuthError) -> Self {
        HostError::new(error.failure, error.message)
    }
}

impl From<HostError> for Box<EvalAltResult> {
    fn from(error: HostError) -> Self {
        if error.failure.is_transient() {
            RETRYABLE.with(|r| *r.borrow_mut() = Some(error.message.clone()));
        }
        Box::new(EvalAltResult::ErrorRuntime(
            error.message.into(),
            Position::NONE,
        ))
    }
}

/// Runs `f` with `env` as the current call, under the deadline; clears both after.
pub(crate) fn with_call<T>(env: Arc<CallEnv>, deadline: Duration, f: impl FnOnce() -> T) -> T {
    CURRENT.with(|c| *c.borrow_mut() = Some(env));
    DEADLINE.with(|d| d.set(Some(Instant::now() + deadline)));
    RETRYABLE.with(|r| *r.borrow_mut() = None);
    let out = f();
    CURRENT.with(|c| *c.borrow_mut() = None);
    DEADLINE.with(|d| d.set(None));
    out
}

/// Whether `message` is the last retryable failure raised on this thread.
pub(crate) fn was_retryable(message: &str) -> bool {
    RETRYABLE.with(|r| r.borrow().as_deref() == Some(message))
}

/// `text` without the current call's credentials, for what a script prints.
fn redacted(text: &str) -> String {
    match CURRENT.with(|c| c.borrow().clone()) {
        Some(env) => env.integration.redact(text),
        None => text.to_owned(),
    }
}

fn current() -> Result<Arc<CallEnv>, Box<EvalAltResult>> {
    CURRENT.with(|c| c.borrow().clone()).ok_or_else(|| {
        HostError::permanent("this function is only available inside an action").into()
    })
}

/// In a dry run, refuses a request that may change something: only `GET` and `HEAD` go out, and
/// for the AWS Query API only `Describe*`, `List*` and `Get*` actions. Every host function that
/// sends a request asks this first (docs/integrations.md, "Dry runs").
pub(crate) fn refuse_write_in_dry_run(call: &ActionCall, what: &str) -> Result<(), HostError> {
    if !call.dry_run {
        return Ok(());
    }
    let read = match what.split_once(' ') {
        Some(("aws_query", action)) => ["Describe", "List", "Get"]
            .iter()
            .any(|prefix| action.starts_with(prefix)),
        _ => what.eq_ignore_ascii_case("GET") || what.eq_ignore_ascii_case("HEAD"),
    };
    if read {
        Ok(())
    } else {
        Err(HostError::permanent(format!(
            "dry run: {what} was not sent (a dry run only reads; the action should return its plan instead)"
        )))
    }
}

fn to_dynamic(value: &Value) -> Result<Dynamic, Box<EvalAltResult>> {
    rhai::serde::to_dynamic(value)
}

fn from_dynamic(value: &Dynamic) -> Result<Value, Box<EvalAltResult>> {
    rhai::serde::from_dynamic(value)
}

/// The engine integration scripts run on: the playbook sandbox's limits and the host functions.
pub(crate) fn engine(limits: &Limits) -> Engine {
    let mut engine = limits.sandbox();
    engine.on_print(|text| {
        let text = redacted(text);
        tracing::info!(target: "cordon::integration", "{text}")
    });
    engine.on_debug(|text, _, pos| {
        let text = redacted(text);
        tracing::debug!(target: "cordon::integration", position = %pos, "{text}")
    });
    engine.on_progress(|ops| {
        if ops % 1024 == 0 {
            let late = DEADLINE.with(|d| d.get().is_some_and(|deadline| Instant::now() > deadline));
            if late {
                return Some(Dynamic::from("deadline"));
            }
        }
        None
    });

    engine.register_fn("http", |request: Map| -> Result<Map, Box<EvalAltResult>> {
        let env = current()?;
        let request = from_dynamic(&request.into())?;
        let method = request
            .get("method")
            .and_then(Value::as_str)
            .unwrap_or("GET");
        refuse_write_in_dry_run(&env.call, method)?;
        let response = env.handle.block_on(env.integration.send(&env, &request))?;
        to_dynamic(&response)?
            .try_cast::<Map>()
            .ok_or_else(|| HostError::permanent("the response is not a map").into())
    });
    engine.register_fn("kube", |request: Map| -> Result<Map, Box<EvalAltResult>> {
        let env = current()?;
        let request = from_dynamic(&request.into())?;
        let method = request
            .get("method")
            .and_then(Value::as_str)
            .unwrap_or("GET");
        refuse_write_in_dry_run(&env.call, method)?;
        let response = env.handle.block_on(env.integration.kube(&request))?;
        to_dynamic(&response)?
            .try_cast::<Map>()
            .ok_or_else(|| HostError::permanent("the response is not a map").into())
    });
    engine.register_fn(
        "kube_cluster",
        |name: &str| -> Result<String, Box<EvalAltResult>> {
            Ok(current()?.integration.kube_cluster(name)?)
        },
    );
    engine.register_fn(
        "aws_query",
        |request: Map| -> Result<Dynamic, Box<EvalAltResult>> {
            let env = current()?;
            let request = from_dynamic(&request.into())?;
            let action = request.get("action").and_then(Value::as_str).unwrap_or("");
            refuse_write_in_dry_run(&env.call, &format!("aws_query {action}"))?;
            let answer = env
                .handle
                .block_on(env.integration.aws_query(&env, &request))?;
            to_dynamic(&answer)
        },
    );
    engine.register_fn(
        "xml_parse",
        |text: &str| -> Result<Dynamic, Box<EvalAltResult>> {
            let value = super::xml::parse(text).map_err(HostError::permanent)?;
            to_dynamic(&value)
        },
    );
    engine.register_fn("as_list", |value: Dynamic| -> rhai::Array {
        if value.is_unit() {
            Vec::new()
        } else if value.is_array() {
            value.cast::<rhai::Array>()
        } else {
            vec![value]
        }
    });
    engine.register_fn(
        "json_parse",
        |text: &str| -> Result<Dynamic, Box<EvalAltResult>> {
            let value: Value = serde_json::from_str(text)
                .map_err(|e| HostError::permanent(format!("not valid JSON: {e}")))?;
            to_dynamic(&value)
        },
    );
    engine.register_fn(
        "json_encode",
        |value: Dynamic| -> Result<String, Box<EvalAltResult>> {
            Ok(from_dynamic(&value)?.to_string())
        },
    );
    engine.register_fn("base64_encode", |text: &str| {
        base64::engine::general_purpose::STANDARD.encode(text)
    });
    engine.register_fn(
        "base64_decode",
        |text: &str| -> Result<String, Box<EvalAltResult>> {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(text.trim())
                .map_err(|e| HostError::permanent(format!("not valid base64: {e}")))?;
            String::from_utf8(bytes)
                .map_err(|_| HostError::permanent("the decoded bytes are not UTF-8 text").into())
        },
    );
    engine.register_fn("sha256_hex", |text: &str| {
        hex::encode(sha2::Sha256::digest(text))
    });
    engine.register_fn("md5_hex", |text: &str| hex::encode(md5::Md5::digest(text)));
    engine.register_fn("md5_base64", |text: &str| {
        base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(text))
    });
    engine.register_fn("url_encode", |text: &str| {
        url::form_urlencoded::byte_serialize(text.as_bytes())
            .collect::<String>()
            .replace('+', "%20")
    });
    engine.register_fn("now", || {
        chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    });
    engine.register_fn("now_unix", || chrono::Utc::now().timestamp());
    engine.register_fn(
        "parse_time",
        |text: &str| -> Result<i64, Box<EvalAltResult>> {
            chrono::DateTime::parse_from_rfc3339(text)
                .map(|t| t.timestamp())
                .map_err(|e| {
                    HostError::permanent(format!("`{text}` is not an RFC 3339 time: {e}")).into()
                })
        },
    );
    engine.register_fn(
        "format_time",
        |seconds: i64| -> Result<String, Box<EvalAltResult>> {
            chrono::DateTime::from_timestamp(seconds, 0)
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                .ok_or_else(|| {
                    HostError::permanent(format!("{seconds} is out of range for a time")).into()
                })
        },
    );
    engine.register_fn(
        "setting",
        |name: &str| -> Result<Dynamic, Box<EvalAltResult>> {
            let env = current()?;
            let value = env.integration.setting(name)?;
            to_dynamic(&value)
        },
    );
    engine.register_fn("call_info", || -> Result<Dynamic, Box<EvalAltResult>> {
        let env = current()?;
        let call = &env.call;
        to_dynamic(&json!({
            "run_id": call.run_id,
            "step_id": call.step_id,
            "playbook": call.playbook,
            "incident_id": call.incident_id,
            "idempotency_key": call.idempotency_key,
            "dry_run": call.dry_run,
        }))
    });
    engine.register_fn("dry_run", || -> Result<bool, Box<EvalAltResult>> {
        Ok(current()?.call.dry_run)
    });
    engine.register_fn(
        "ioc_lookup",
        |value: &str| -> Result<Dynamic, Box<EvalAltResult>> {
            let env = current()?;
            let matches = env.ioc.lookup(value);
            to_dynamic(&serde_json::to_value(matches).unwrap_or(Value::Null))
        },
    );
    engine.register_fn(
        "retry_later",
        |message: &str| -> Result<(), Box<EvalAltResult>> {
            Err(HostError::retryable(message).into())
        },
    );
    engine
}
