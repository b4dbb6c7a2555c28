//! The JSON Schema (draft 2020-12) of the playbook format, for editors: completion, hover text and
//! squiggles while a playbook is written. Written by hand to match [`super::model`] (descriptions are
//! its doc comments); a test walks a fully-populated playbook through it so the two cannot drift
//! apart silently. The loader remains the judge: the schema cannot know approver groups, step ids or
//! what Rhai accepts.

use serde_json::{Map, Value, json};

use super::model::TEST_STATUSES;
use crate::actions::{Catalog, InputType};
use crate::intake::formats::SourceKind;

/// The schema of a playbook file. `uses` is an enum of the catalog's actions, and each action's
/// `with` lists its inputs (with their types, descriptions and which are required).
pub fn playbook_schema(catalog: &dyn Catalog) -> Value {
    let actions = catalog.names();
    let uses = if actions.is_empty() {
        json!({ "type": "string" })
    } else {
        json!({ "enum": actions })
    };
    let with_by_action: Vec<Value> = actions
        .iter()
        .filter_map(|name| catalog.action(name))
        .map(|spec| {
            let properties: Map<String, Value> = spec
                .inputs
                .iter()
                .map(|(key, input)| (key.clone(), input_schema(input.kind, &input.description)))
                .collect();
            let required: Vec<&String> = spec
                .inputs
                .iter()
                .filter(|(_, input)| input.required)
                .map(|(key, _)| key)
                .collect();
            let mut then = json!({
                "properties": {
                    "with": {
                        "type": "object",
                        "properties": properties,
                        "required": required,
                        "additionalProperties": false,
                    }
                }
            });
            if !required.is_empty() {
                then["required"] = json!(["with"]);
            }
            json!({
                "if": { "properties": { "uses": { "const": spec.name } }, "required": ["uses"] },
                "then": then,
            })
        })
        .collect();
    let sources: Vec<&str> = SourceKind::ALL.iter().map(|s| s.name()).collect();

    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Cordon playbook",
        "description": "One playbook file: which alerts start it, and the steps it runs.",
        "type": "object",
        "additionalProperties": false,
        "required": ["id", "name", "steps"],
        "properties": {
            "id": {
                "type": "string",
                "minLength": 1,
                "description": "Unique, stable id: `aws-ec2-compromise`. Runs, tests and `call` steps name it.",
            },
            "name": { "type": "string", "description": "One line for humans." },
            "description": {
                "type": ["string", "null"],
                "description": "More words for humans: what it does and when.",
            },
            "on": { "$ref": "#/$defs/trigger" },
            "concurrency": {
                "type": ["string", "null"],
                "description": "Rhai expression giving the concurrency key: one active run per key and playbook (default `incident.id`: one run per incident). Later alerts of the incident are visible to the running run as `incident.alerts`.",
            },
            "dry_run": {
                "type": "boolean",
                "default": false,
                "description": "Record what side-effect steps would do, without doing it.",
            },
            "inputs": {
                "type": "object",
                "description": "Inputs a `call` step (or a manual trigger) passes in, by name.",
                "additionalProperties": { "$ref": "#/$defs/input" },
            },
            "vars": {
                "type": "object",
                "description": "Constants for the steps, as `vars.<name>`; values may be `${{ }}` templates.",
                "additionalProperties": true,
            },
            "steps": {
                "type": "array",
                "minItems": 1,
                "description": "What it does, in order.",
                "items": { "$ref": "#/$defs/step" },
            },
            "outputs": {
                "type": "object",
                "description": "What the run returns (to a caller, and in `cordon runs show`), as templates.",
                "additionalProperties": true,
            },
            "tests": {
                "type": "array",
                "description": "Offline test cases for `cordon test`.",
                "items": { "$ref": "#/$defs/test" },
            },
        },
        "$defs": {
            "duration": {
                "type": "string",
                "pattern": "^\\s*[0-9]+(ms|s|m|h|d)\\s*$",
                "description": "A whole number and a unit: `500ms`, `30s`, `5m`, `4h`, `7d`.",
            },
            "source": {
                "enum": sources,
                "description": "A source name, as in `POST /v1/alerts/{source}`.",
            },
            "trigger": {
                "type": "object",
                "description": "Which alerts start it. A playbook without `on` runs only when called or triggered by hand.",
                "additionalProperties": false,
                "required": ["source"],
                "properties": {
                    "source": {
                        "description": "Source names (`aws.guardduty`, ...); one name or a list.",
                        "oneOf": [
                            { "$ref": "#/$defs/source" },
                            { "type": "array", "minItems": 1, "items": { "$ref": "#/$defs/source" } },
                        ],
                    },
                    "state": {
                        "description": "The alert's state at its source that starts it: `firing`, `resolved` or `suppressed`, one or a list. Absent means `firing` only, so a source's \"resolved\" starts no playbook written for the alert itself.",
                        "oneOf": [
                            { "$ref": "#/$defs/alert_state" },
                            { "type": "array", "minItems": 1, "items": { "$ref": "#/$defs/alert_state" } },
                        ],
                    },
                    "when": {
                        "type": ["string", "null"],
                        "description": "Rhai condition over `alert` and `incident`; absent means every alert of those sources.",
                    },
                },
            },
            "alert_state": {
                "enum": ["firing", "resolved", "suppressed"],
                "description": "An alert's state at its source (docs/alerts.md lists each source's words for it).",
            },
            "input": {
                "type": "object",
                "description": "An input of a called playbook.",
                "additionalProperties": false,
                "properties": {
                    "type": {
                        "enum": ["string", "number", "bool", "list", "map", "any"],
                        "default": "any",
                        "description": "`string`, `number`, `bool`, `list`, `map` or `any` (default).",
                    },
                    "required": {
                        "type": "boolean",
                        "default": false,
                        "description": "A caller must give it (unless it has a `default`).",
                    },
                    "default": { "description": "The value when a caller does not give it." },
                    "description": { "type": ["string", "null"], "description": "What it is for." },
                },
            },
            "step": {
                "type": "object",
                "description": "One step. Exactly one of `uses`, `script`, `approval`, `foreach`, `parallel`, `call`.",
                "additionalProperties": false,
                "required": ["id"],
                "properties": {
                    "id": {
                        "type": "string",
                        "minLength": 1,
                        "description": "Unique within the playbook; later steps read `steps.<id>`.",
                    },
                    "if": {
                        "type": ["string", "null"],
                        "description": "Rhai condition; the step is skipped when false.",
                    },
                    "uses": {
                        "description": "An action by name (`core.log`, `aws-ec2.isolate_instance`) ... This schema lists the actions of the config it was printed with: for integrations of your own, print yours with `cordon --config <your config> schema playbook`.",
                        "anyOf": [uses, { "type": "null" }],
                    },
                    "with": {
                        "type": "object",
                        "description": "... with these inputs (values may be `${{ }}` templates).",
                        "additionalProperties": true,
                    },
                    "script": {
                        "type": ["string", "null"],
                        "description": "A Rhai script; its last expression is the step's output.",
                    },
                    "approval": {
                        "description": "Wait for people to approve.",
                        "anyOf": [{ "$ref": "#/$defs/approval" }, { "type": "null" }],
                    },
                    "foreach": {
                        "description": "Run nested steps for each item of a list.",
                        "anyOf": [{ "$ref": "#/$defs/foreach" }, { "type": "null" }],
                    },
                    "parallel": {
                        "type": ["array", "null"],
                        "description": "Run branches of steps side by side.",
                        "items": { "$ref": "#/$defs/branch" },
                    },
                    "call": {
                        "description": "Run another playbook with inputs; its outputs are this step's output.",
                        "anyOf": [{ "$ref": "#/$defs/call" }, { "type": "null" }],
                    },
                    "retry": {
                        "description": "Try again when the step fails.",
                        "anyOf": [{ "$ref": "#/$defs/retry" }, { "type": "null" }],
                    },
                    "timeout": {
                        "description": "Longest one attempt may take.",
                        "anyOf": [{ "$ref": "#/$defs/duration" }, { "type": "null" }],
                    },
                    "on_error": {
                        "enum": ["fail", "continue"],
                        "default": "fail",
                        "description": "`fail` (default) ends the run when the step fails; `continue` goes on, with `steps.<id>.ok == false` and `steps.<id>.error` set.",
                    },
                },
                "oneOf": [
                    { "required": ["uses"] },
                    { "required": ["script"] },
                    { "required": ["approval"] },
                    { "required": ["foreach"] },
                    { "required": ["parallel"] },
                    { "required": ["call"] },
                ],
                "allOf": with_by_action,
            },
            "retry": {
                "type": "object",
                "description": "Retries of a failing step, with exponential backoff.",
                "additionalProperties": false,
                "properties": {
                    "attempts": {
                        "type": "integer",
                        "minimum": 1,
                        "default": 3,
                        "description": "Attempts in all, the first included (default 3).",
                    },
                    "backoff": {
                        "$ref": "#/$defs/duration",
                        "default": "1s",
                        "description": "Wait before the second attempt; doubled for each further one (default `1s`).",
                    },
                    "max_delay": {
                        "$ref": "#/$defs/duration",
                        "default": "1m",
                        "description": "Longest wait between attempts (default `1m`).",
                    },
                },
            },
            "approval": {
                "type": "object",
                "description": "An approval request.",
                "additionalProperties": false,
                "required": ["prompt", "approvers"],
                "properties": {
                    "prompt": { "type": "string", "description": "What people are asked (a template)." },
                    "approvers": { "type": "string", "description": "The approver group from the config." },
                    "quorum": {
                        "type": "integer",
                        "minimum": 1,
                        "default": 1,
                        "description": "Distinct approvers needed (default 1).",
                    },
                    "timeout": {
                        "$ref": "#/$defs/duration",
                        "default": "1h",
                        "description": "How long to wait (default `1h`).",
                    },
                    "on_timeout": {
                        "enum": ["reject", "approve"],
                        "default": "reject",
                        "description": "The decision when the timeout falls (default `reject`).",
                    },
                },
            },
            "foreach": {
                "type": "object",
                "description": "Nested steps for each item of a list.",
                "additionalProperties": false,
                "required": ["items", "steps"],
                "properties": {
                    "items": { "type": "string", "description": "Rhai expression giving the list." },
                    "as": {
                        "type": "string",
                        "pattern": "^[A-Za-z_][A-Za-z0-9_]*$",
                        "default": "item",
                        "description": "The name the item has in the nested steps (default `item`).",
                    },
                    "concurrency": {
                        "type": "integer",
                        "minimum": 1,
                        "default": 1,
                        "description": "Items run at once (default 1).",
                    },
                    "steps": {
                        "type": "array",
                        "minItems": 1,
                        "description": "The steps run for each item.",
                        "items": { "$ref": "#/$defs/step" },
                    },
                },
            },
            "branch": {
                "type": "object",
                "description": "One branch of a `parallel` step.",
                "additionalProperties": false,
                "required": ["steps"],
                "properties": {
                    "steps": {
                        "type": "array",
                        "minItems": 1,
                        "description": "The branch's steps, in order.",
                        "items": { "$ref": "#/$defs/step" },
                    },
                },
            },
            "call": {
                "type": "object",
                "description": "A call of another playbook.",
                "additionalProperties": false,
                "required": ["playbook"],
                "properties": {
                    "playbook": { "type": "string", "description": "The called playbook's id." },
                    "inputs": {
                        "type": "object",
                        "description": "Its inputs, by name (values may be `${{ }}` templates).",
                        "additionalProperties": true,
                    },
                },
            },
            "test": {
                "type": "object",
                "description": "One offline test case.",
                "additionalProperties": false,
                "required": ["name", "expect"],
                "properties": {
                    "name": { "type": "string", "description": "What the case shows, for the test report." },
                    "alert": {
                        "type": ["string", "null"],
                        "description": "The alert: a file (relative to the playbook file) holding a source payload ...",
                    },
                    "source": {
                        "description": "... of this source (default: the playbook's first trigger source).",
                        "anyOf": [{ "$ref": "#/$defs/source" }, { "type": "null" }],
                    },
                    "actions": {
                        "type": "object",
                        "description": "Canned results per action step id: `{output: ...}` or `{error: \"...\"}`, or a list of them, one per call in order (each attempt is a call; the last is used again when the list runs out), to test polling: `[{error: pending, retryable: true}, {output: {...}}]`.",
                        "additionalProperties": {
                            "anyOf": [
                                { "$ref": "#/$defs/canned" },
                                { "type": "array", "minItems": 1, "items": { "$ref": "#/$defs/canned" } },
                            ],
                        },
                    },
                    "approvals": {
                        "type": "object",
                        "description": "Decisions per approval step id: `approve`, `deny` or `timeout`.",
                        "additionalProperties": { "enum": ["approve", "deny", "timeout"] },
                    },
                    "inputs": {
                        "type": "object",
                        "description": "Inputs, for playbooks that take them.",
                        "additionalProperties": true,
                    },
                    "expect": { "$ref": "#/$defs/expect" },
                },
            },
            "canned": {
                "type": "object",
                "description": "A canned action result in a test.",
                "additionalProperties": false,
                "properties": {
                    "output": { "description": "The action's output, as if it succeeded." },
                    "error": {
                        "type": ["string", "null"],
                        "description": "The action's error, as if it failed.",
                    },
                    "retryable": {
                        "type": "boolean",
                        "default": false,
                        "description": "With `error`: a failure that may pass by itself (an outage, a rate limit, an integration's `retry_later`), so the step's `retry` applies. Default false: the step fails at once.",
                    },
                },
            },
            "expect": {
                "type": "object",
                "description": "What a test case expects.",
                "additionalProperties": false,
                "required": ["status"],
                "properties": {
                    "status": {
                        "enum": TEST_STATUSES,
                        "description": "Final run status: `succeeded`, `failed`, `cancelled`, `waiting`, `needs_decision`, or `not_matched` (the trigger's `when` was false).",
                    },
                    "steps": {
                        "type": ["array", "null"],
                        "items": { "type": "string" },
                        "description": "Step ids that ran (not skipped), in order. Absent: not checked.",
                    },
                    "skipped": {
                        "type": ["array", "null"],
                        "items": { "type": "string" },
                        "description": "Step ids that were skipped. Absent: not checked.",
                    },
                    "outputs": {
                        "type": "object",
                        "description": "Outputs the run must return (only the keys listed are checked).",
                        "additionalProperties": true,
                    },
                    "inputs": {
                        "type": "object",
                        "description": "Per action step id, the inputs its action was called with, templates rendered: the keys listed are compared (in maps within too), others may be there. A map is the last call's inputs; a list gives one map per call, in order (each attempt and each `foreach` item is a call).",
                        "additionalProperties": { "type": ["object", "array"] },
                    },
                    "inputs_exact": {
                        "type": "object",
                        "description": "As `inputs`, compared whole: no key may be missing or added.",
                        "additionalProperties": { "type": ["object", "array"] },
                    },
                    "attempts": {
                        "type": "object",
                        "description": "Per step id, the attempts it took (the first included).",
                        "additionalProperties": { "type": "integer", "minimum": 0 },
                    },
                    "values": {
                        "type": "object",
                        "description": "Values set with `core.set`, by key (the last value set; only the keys listed are checked).",
                        "additionalProperties": true,
                    },
                },
            },
        },
    })
}

/// An action input: its type, or a `${{ }}` template (whose value is only known when it renders).
fn input_schema(kind: InputType, description: &str) -> Value {
    let template = json!({ "type": "string", "pattern": "\\$\\{\\{" });
    let typed = match kind {
        InputType::String => return json!({ "type": "string", "description": description }),
        InputType::Any => return json!({ "description": description }),
        InputType::Number => json!({ "type": "number" }),
        InputType::Bool => json!({ "type": "boolean" }),
        InputType::List => json!({ "type": "array" }),
        InputType::Map => json!({ "type": "object" }),
    };
    json!({ "description": description, "anyOf": [typed, template] })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::actions::{SpecCatalog, builtin_specs};
    use crate::playbook::Playbook;

    /// Every struct of the model, with every field set (`Option`s too, so their structs appear).
    const FULL: &str = r#"
id: full
name: Every field
description: Each struct of the model, filled in.
on: { source: [aws.guardduty], when: "alert.severity.score > 5" }
concurrency: incident.id
dry_run: true
inputs:
  who: { type: string, required: true, default: nobody, description: Who. }
vars: { region: eu-west-1 }
steps:
  - id: ask
    if: "true"
    uses: core.log
    with: { message: hi }
    script: "1"
    approval: { prompt: ok?, approvers: soc-l2, quorum: 1, timeout: 1h, on_timeout: approve }
    foreach:
      items: "[1]"
      as: n
      concurrency: 2
      steps: [{ id: inner, script: n }]
    parallel:
      - steps: [{ id: side, script: "2" }]
    call: { playbook: other, inputs: { who: me } }
    retry: { attempts: 2, backoff: 1s, max_delay: 5s }
    timeout: 30s
    on_error: continue
outputs: { done: "yes" }
tests:
  - name: it runs
    alert: a.json
    source: aws.guardduty
    actions:
      ask: { output: { ok: true }, error: boom, retryable: true }
      poll: [{ error: pending, retryable: true }, { output: { done: true } }]
    approvals: { ask: approve }
    inputs: { who: me }
    expect:
      status: succeeded
      steps: [ask]
      skipped: []
      outputs: { done: "yes" }
      inputs: { ask: { message: hi } }
      inputs_exact: { ask: [{ message: hi }] }
      attempts: { ask: 1 }
      values: { verdict: bad }
"#;

    fn schema() -> Value {
        playbook_schema(&SpecCatalog::new(builtin_specs()))
    }

    fn resolve<'a>(schema: &'a Value, root: &'a Value, pointer: &mut String) -> &'a Value {
        match schema.get("$ref").and_then(Value::as_str) {
            Some(r) => {
                let target = r.trim_start_matches('#');
                *pointer = target.to_owned();
                root.pointer(target)
                    .unwrap_or_else(|| panic!("dangling $ref {r}"))
            }
            None => schema,
        }
    }

    /// Walks `value` through `schema`, recording each (object schema, key) met, and failing on a
    /// key the schema does not list.
    fn walk(
        value: &Value,
        schema: &Value,
        root: &Value,
        pointer: String,
        seen: &mut BTreeSet<(String, String)>,
    ) {
        let mut pointer = pointer;
        let schema = resolve(schema, root, &mut pointer);
        match value {
            Value::Object(map) => {
                if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
                    for (key, v) in map {
                        let property = properties
                            .get(key)
                            .unwrap_or_else(|| panic!("`{key}` is not in the schema at {pointer}"));
                        seen.insert((pointer.clone(), key.clone()));
                        walk(
                            v,
                            property,
                            root,
                            format!("{pointer}/properties/{key}"),
                            seen,
                        );
                    }
                } else if let Some(each) =
                    schema.get("additionalProperties").filter(|a| a.is_object())
                {
                    for v in map.values() {
                        walk(
                            v,
                            each,
                            root,
                            format!("{pointer}/additionalProperties"),
                            seen,
                        );
                    }
                } else if let Some(branch) = pick(schema, "object") {
                    walk(value, branch, root, pointer, seen);
                }
            }
            Value::Array(items) => {
                if let Some(each) = schema.get("items") {
                    for v in items {
                        walk(v, each, root, format!("{pointer}/items"), seen);
                    }
                } else if let Some(branch) = pick(schema, "array") {
                    walk(value, branch, root, pointer, seen);
                }
            }
            _ => {}
        }
    }

    /// The `anyOf`/`oneOf` branch for a value of JSON type `kind` (a `$ref` branch for objects).
    fn pick<'a>(schema: &'a Value, kind: &str) -> Option<&'a Value> {
        let branches = schema
            .get("anyOf")
            .or_else(|| schema.get("oneOf"))?
            .as_array()?;
        branches.iter().find(|b| {
            b.get("type").and_then(Value::as_str) == Some(kind)
                || (kind == "object" && b.get("$ref").is_some())
        })
    }

    /// Every (object schema, key) of the schema reachable without `allOf` (the per-action `with`).
    fn declared(schema: &Value, pointer: &str, out: &mut BTreeSet<(String, String)>) {
        let Some(map) = schema.as_object() else {
            return;
        };
        if let Some(properties) = map.get("properties").and_then(Value::as_object) {
            assert_eq!(
                map.get("additionalProperties"),
                Some(&Value::Bool(false)),
                "{pointer}: the model denies unknown fields"
            );
            for (key, property) in properties {
                out.insert((pointer.to_owned(), key.clone()));
                declared(property, &format!("{pointer}/properties/{key}"), out);
            }
            for required in map
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                assert!(
                    properties.contains_key(required.as_str().unwrap()),
                    "{pointer}: {required}"
                );
            }
        }
        for key in ["items", "additionalProperties"] {
            if let Some(inner) = map.get(key) {
                declared(inner, &format!("{pointer}/{key}"), out);
            }
        }
        if let Some(defs) = map.get("$defs").and_then(Value::as_object) {
            for (name, def) in defs {
                declared(def, &format!("/$defs/{name}"), out);
            }
        }
    }

    #[test]
    fn the_schema_and_the_model_have_the_same_fields() {
        let schema = schema();
        let text = serde_json::to_string_pretty(&schema).unwrap();
        let reparsed: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(reparsed, schema);
        assert_eq!(
            schema["$schema"],
            "https://json-schema.org/draft/2020-12/schema"
        );

        let full: Playbook = serde_yaml::from_str(FULL).unwrap();
        let value = serde_json::to_value(&full).unwrap();
        let mut seen = BTreeSet::new();
        walk(&value, &schema, &schema, String::new(), &mut seen);
        let mut declared_fields = BTreeSet::new();
        declared(&schema, "", &mut declared_fields);
        let stale: Vec<_> = declared_fields.difference(&seen).collect();
        assert!(
            stale.is_empty(),
            "in the schema but not in the model (or not in FULL): {stale:?}"
        );
    }

    #[test]
    fn actions_and_their_inputs_come_from_the_catalog() {
        let schema = schema();
        let step = &schema["$defs"]["step"];
        let uses = &step["properties"]["uses"]["anyOf"][0]["enum"];
        assert!(uses.as_array().unwrap().contains(&json!("core.log")));
        let log = step["allOf"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["if"]["properties"]["uses"]["const"] == "core.log")
            .unwrap();
        let with = &log["then"]["properties"]["with"];
        assert_eq!(with["required"], json!(["message"]));
        assert_eq!(with["additionalProperties"], json!(false));
        assert_eq!(log["then"]["required"], json!(["with"]));
        assert_eq!(
            schema["$defs"]["step"]["oneOf"].as_array().unwrap().len(),
            6
        );
    }
}
