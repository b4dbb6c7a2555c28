//! Guardrails from the config, checked before every side-effect action: protected resources no
//! action may touch, and blast-radius limits on how many calls of an action a window allows.
//!
//! Protected patterns match case-sensitively, except in inputs the action's manifest marks
//! `case_insensitive` (names the system behind them compares without case: Entra UPNs, Azure
//! resource ids, IAM user and role names), where `BreakGlass@contoso.com` is as protected as
//! `breakglass@contoso.com`.
//!
//! The blast radius is counted in the store ([`Store::take_slot`]): a restart does not reset it and
//! replicas sharing a PostgreSQL store share one count. Without a store (`cordon test`) it is
//! counted in memory.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::ActionSpec;
use crate::store::Store;

/// Guardrails from the config: resources no side-effect action may touch, and how many side-effect
/// calls per action a window allows before further calls wait for approval.
#[derive(Default)]
pub struct Guardrails {
    /// Patterns (`*` matches any run of characters) matched against every string input of a
    /// side-effect action: resource ids, ARNs, `key=value` tags.
    pub protected: Vec<String>,
    /// Per action: at most `max` calls per `window`.
    pub blast_radius: BTreeMap<String, (u32, Duration)>,
    /// The group that approves calls over the blast radius.
    pub blast_radius_approvers: String,
    /// Where calls are counted; `None`: in `calls`, for this process only.
    store: Option<Arc<dyn Store>>,
    calls: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl std::fmt::Debug for Guardrails {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guardrails")
            .field("protected", &self.protected)
            .field("blast_radius", &self.blast_radius)
            .field("blast_radius_approvers", &self.blast_radius_approvers)
            .field("counted_in_store", &self.store.is_some())
            .finish()
    }
}

impl Guardrails {
    /// Guardrails counting the blast radius in memory (one process, forgotten on restart).
    pub fn new(
        protected: Vec<String>,
        blast_radius: BTreeMap<String, (u32, Duration)>,
        approvers: String,
    ) -> Guardrails {
        Guardrails {
            protected,
            blast_radius,
            blast_radius_approvers: approvers,
            store: None,
            calls: Mutex::new(HashMap::new()),
        }
    }

    /// The same guardrails counting the blast radius in `store`.
    pub fn counted_in(mut self, store: Arc<dyn Store>) -> Guardrails {
        self.store = Some(store);
        self
    }

    /// The protected value and pattern an input touches, if any. `spec` says which inputs compare
    /// without case; without it every input compares exactly.
    pub fn protected_hit(
        &self,
        inputs: &Value,
        spec: Option<&ActionSpec>,
    ) -> Option<(String, String)> {
        let mut strings = Vec::new();
        match inputs {
            Value::Object(map) => {
                for (name, value) in map {
                    let fold = spec
                        .and_then(|s| s.inputs.get(name))
                        .is_some_and(|i| i.case_insensitive);
                    if let Value::String(s) = value {
                        strings.push((format!("{name}={s}"), fold));
                    }
                    collect_strings(value, fold, &mut strings);
                }
            }
            other => collect_strings(other, false, &mut strings),
        }
        for (value, fold) in strings {
            // The whole value, and each segment of an ARN, URL or path: `i-0abc` is as protected
            // inside `arn:aws:ec2:…:instance/i-0abc` or `https://…/isolate/i-0abc` as on its own.
            let segments = value
                .split(['/', ':', '?', '&', '=', ',', ' '])
                .filter(|s| !s.is_empty());
            for candidate in std::iter::once(value.as_str()).chain(segments) {
                for pattern in &self.protected {
                    let hit = if fold {
                        glob(&pattern.to_lowercase(), &candidate.to_lowercase())
                    } else {
                        glob(pattern, candidate)
                    };
                    if hit {
                        return Some((candidate.to_owned(), pattern.clone()));
                    }
                }
            }
        }
        None
    }

    /// Counts a call of `action`; `Err` with the limit when the window is full (or, counted in
    /// the store, when the store cannot count it: a guardrail that cannot count holds the call).
    pub async fn take(&self, action: &str) -> Result<(), String> {
        let Some((max, window)) = self.blast_radius.get(action) else {
            return Ok(());
        };
        let full = || {
            format!(
                "`{action}` reached its blast radius of {max} calls per {}",
                crate::config::HumanDuration(*window)
            )
        };
        if let Some(store) = &self.store {
            return match store
                .take_slot(action, *max, *window, chrono::Utc::now())
                .await
            {
                Ok(true) => Ok(()),
                Ok(false) => Err(full()),
                Err(e) => {
                    tracing::warn!(action, error = %e, "cannot count a call against its blast radius; holding it for approval");
                    Err(format!(
                        "`{action}` could not be counted against its blast radius ({max} calls per {}): the store is unavailable",
                        crate::config::HumanDuration(*window)
                    ))
                }
            };
        }
        let Ok(mut calls) = self.calls.lock() else {
            return Err(full());
        };
        let recent = calls.entry(action.to_owned()).or_default();
        let now = Instant::now();
        while recent
            .front()
            .is_some_and(|t| now.duration_since(*t) > *window)
        {
            recent.pop_front();
        }
        if recent.len() >= *max as usize {
            return Err(full());
        }
        recent.push_back(now);
        Ok(())
    }
}

/// Every string in `value`, and `key=value` for each string in a map (tags), with `fold`.
fn collect_strings(value: &Value, fold: bool, out: &mut Vec<(String, bool)>) {
    match value {
        Value::String(s) => out.push((s.clone(), fold)),
        Value::Array(items) => items.iter().for_each(|v| collect_strings(v, fold, out)),
        Value::Object(map) => map.iter().for_each(|(k, v)| {
            if let Value::String(s) = v {
                out.push((format!("{k}={s}"), fold));
            }
            collect_strings(v, fold, out)
        }),
        _ => {}
    }
}

/// `*` matches any run of characters; everything else matches itself.
pub fn glob(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let mut rest = text;
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            let Some(r) = rest.strip_prefix(part) else {
                return false;
            };
            rest = r;
        } else if i == parts.len() - 1 {
            return rest.ends_with(part);
        } else {
            let Some(at) = rest.find(part) else {
                return false;
            };
            rest = &rest[at + part.len()..];
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_star_matches_any_run_of_characters_and_the_rest_matches_itself() {
        assert!(glob("i-0abc", "i-0abc"));
        assert!(!glob("i-0abc", "i-0abcd"));
        assert!(glob("i-*", "i-0abc"));
        assert!(glob("*-prod", "db-prod"));
        assert!(glob(
            "arn:*:role/*admin*",
            "arn:aws:iam::1:role/break-glass-admin-1"
        ));
        assert!(!glob("arn:*:role/*admin*", "arn:aws:iam::1:user/admin"));
        assert!(glob("*", ""));
        assert!(!glob("a*b", "ab-c"));
    }

    #[test]
    fn a_protected_value_is_found_whole_inside_an_arn_or_url_and_as_a_tag() {
        let rails = Guardrails::new(
            vec!["i-0protected".into(), "env=prod".into()],
            BTreeMap::new(),
            "secops".into(),
        );
        let arn = json!({ "resource": "arn:aws:ec2:eu-west-1:1:instance/i-0protected" });
        assert_eq!(
            rails.protected_hit(&arn, None),
            Some(("i-0protected".into(), "i-0protected".into()))
        );
        let url =
            json!({ "targets": ["i-0other", "https://edr.example/isolate/i-0protected?now=1"] });
        assert!(rails.protected_hit(&url, None).is_some());
        let tag = json!({ "tags": { "env": "prod" } });
        assert_eq!(
            rails.protected_hit(&tag, None),
            Some(("env=prod".into(), "env=prod".into()))
        );
        assert_eq!(
            rails.protected_hit(&json!({ "instance": "i-0other", "n": 3 }), None),
            None
        );
    }

    #[test]
    fn inputs_marked_case_insensitive_match_protected_patterns_without_case() {
        let rails = Guardrails::new(
            vec!["breakglass@contoso.com".into(), "i-0abc".into()],
            BTreeMap::new(),
            "secops".into(),
        );
        let mut spec = crate::actions::builtin_specs().remove(0);
        let input = |case_insensitive| crate::actions::InputSpec {
            kind: crate::actions::InputType::String,
            required: true,
            description: String::new(),
            pattern: None,
            allowed: None,
            case_insensitive,
        };
        spec.inputs = BTreeMap::from([
            ("user_id".into(), input(true)),
            ("instance_id".into(), input(false)),
        ]);
        let upn = json!({ "user_id": "BreakGlass@Contoso.com" });
        assert_eq!(
            rails.protected_hit(&upn, Some(&spec)),
            Some((
                "BreakGlass@Contoso.com".into(),
                "breakglass@contoso.com".into()
            ))
        );
        // Without the manifest's word, and in inputs not marked, case still counts.
        assert_eq!(rails.protected_hit(&upn, None), None);
        let instance = json!({ "instance_id": "I-0ABC" });
        assert_eq!(rails.protected_hit(&instance, Some(&spec)), None);
    }

    #[tokio::test]
    async fn the_blast_radius_counts_calls_per_action_in_its_window() {
        let rails = Guardrails::new(
            Vec::new(),
            BTreeMap::from([(
                "aws-ec2.isolate_instance".into(),
                (2, Duration::from_secs(3600)),
            )]),
            "secops".into(),
        );
        assert!(rails.take("aws-ec2.isolate_instance").await.is_ok());
        assert!(rails.take("aws-ec2.isolate_instance").await.is_ok());
        let refused = rails
            .take("aws-ec2.isolate_instance")
            .await
            .expect_err("over the limit");
        assert!(refused.contains("blast radius of 2 calls per"), "{refused}");
        // Actions without a limit, and other actions, are not counted.
        for _ in 0..5 {
            assert!(rails.take("core.log").await.is_ok());
        }
    }
}
