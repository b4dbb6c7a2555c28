//! Guardrails from the config, checked before every side-effect action: protected resources no
//! action may touch, and blast-radius limits on how many calls of an action a window allows.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Guardrails from the config: resources no side-effect action may touch, and how many side-effect
/// calls per action a window allows before further calls wait for approval.
#[derive(Debug, Default)]
pub struct Guardrails {
    /// Patterns (`*` matches any run of characters) matched against every string input of a
    /// side-effect action: resource ids, ARNs, `key=value` tags.
    pub protected: Vec<String>,
    /// Per action: at most `max` calls per `window`.
    pub blast_radius: BTreeMap<String, (u32, Duration)>,
    /// The group that approves calls over the blast radius.
    pub blast_radius_approvers: String,
    calls: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl Guardrails {
    pub fn new(
        protected: Vec<String>,
        blast_radius: BTreeMap<String, (u32, Duration)>,
        approvers: String,
    ) -> Guardrails {
        Guardrails {
            protected,
            blast_radius,
            blast_radius_approvers: approvers,
            calls: Mutex::new(HashMap::new()),
        }
    }

    /// The protected value and pattern an input touches, if any.
    pub fn protected_hit(&self, inputs: &Value) -> Option<(String, String)> {
        let mut strings = Vec::new();
        collect_strings(inputs, &mut strings);
        for value in strings {
            // The whole value, and each segment of an ARN, URL or path: `i-0abc` is as protected
            // inside `arn:aws:ec2:…:instance/i-0abc` or `https://…/isolate/i-0abc` as on its own.
            let segments = value
                .split(['/', ':', '?', '&', '=', ',', ' '])
                .filter(|s| !s.is_empty());
            for candidate in std::iter::once(value.as_str()).chain(segments) {
                for pattern in &self.protected {
                    if glob(pattern, candidate) {
                        return Some((candidate.to_owned(), pattern.clone()));
                    }
                }
            }
        }
        None
    }

    /// Counts a call of `action`; `Err` with the limit when the window is full.
    pub fn take(&self, action: &str) -> Result<(), String> {
        let Some((max, window)) = self.blast_radius.get(action) else {
            return Ok(());
        };
        let Ok(mut calls) = self.calls.lock() else {
            return Ok(());
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
            return Err(format!(
                "`{action}` reached its blast radius of {max} calls per {}",
                crate::config::HumanDuration(*window)
            ));
        }
        recent.push_back(now);
        Ok(())
    }
}

fn collect_strings(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::String(s) => out.push(s.clone()),
        Value::Array(items) => items.iter().for_each(|v| collect_strings(v, out)),
        Value::Object(map) => map.iter().for_each(|(k, v)| {
            if let Value::String(s) = v {
                out.push(format!("{k}={s}"));
            }
            collect_strings(v, out)
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
            rails.protected_hit(&arn),
            Some(("i-0protected".into(), "i-0protected".into()))
        );
        let url =
            json!({ "targets": ["i-0other", "https://edr.example/isolate/i-0protected?now=1"] });
        assert!(rails.protected_hit(&url).is_some());
        let tag = json!({ "tags": { "env": "prod" } });
        assert_eq!(
            rails.protected_hit(&tag),
            Some(("env=prod".into(), "env=prod".into()))
        );
        assert_eq!(
            rails.protected_hit(&json!({ "instance": "i-0other", "n": 3 })),
            None
        );
    }

    #[test]
    fn the_blast_radius_counts_calls_per_action_in_its_window() {
        let rails = Guardrails::new(
            Vec::new(),
            BTreeMap::from([(
                "aws-ec2.isolate_instance".into(),
                (2, Duration::from_secs(3600)),
            )]),
            "secops".into(),
        );
        assert!(rails.take("aws-ec2.isolate_instance").is_ok());
        assert!(rails.take("aws-ec2.isolate_instance").is_ok());
        let refused = rails
            .take("aws-ec2.isolate_instance")
            .expect_err("over the limit");
        assert!(refused.contains("blast radius of 2 calls per"), "{refused}");
        // Actions without a limit, and other actions, are not counted.
        for _ in 0..5 {
            assert!(rails.take("core.log").is_ok());
        }
    }
}
