//! Falco alerts.
//!
//! Shapes:
//!
//! - one Falco event as `json_output` writes it and `http_output` posts it: `{"output",
//!   "priority", "rule", "time", "output_fields", "source", "tags", "hostname"}`;
//! - the same event re-posted by Falcosidekick's webhook output (adds `uuid`), or by forwarders
//!   that capitalize keys (`Priority`, `Rule`, `OutputFields`): keys match in any case;
//! - a JSON array of events: one alert each.
//!
//! Follows Falco's JSON output (<https://falco.org/docs/concepts/outputs/channels/>) and
//! Falcosidekick's payload (`types.FalcoPayload`,
//! <https://github.com/falcosecurity/falcosidekick>).
//!
//! | Alert field | From |
//! |---|---|
//! | kind | `rule` |
//! | severity | `priority` (`Emergency` … `Debug`) |
//! | title | `rule`, then the pod or container it fired in |
//! | description | `output` |
//! | resource | for Kubernetes audit events the object named by `ka.target.resource`, `ka.target.namespace`, `ka.target.name` (`k8s.pod`, `k8s.namespace`, `k8s.node`, ...); else `k8s.pod` (`<cluster>/<k8s.ns.name>/<k8s.pod.name>`); ids as [`super::kubernetes`] says; else `container` (`container.id`), else `host` (`hostname`) |
//! | actor | `user.name` (`unix.user`); for Kubernetes audit events `ka.user.name` (`k8s.user`) |
//! | network | `fd.rip`/`fd.rport`/`fd.lip`, else `fd.sip`/`fd.sport`/`fd.cip`; `fd.sip.name` |
//! | labels | `tags`, `source`, `hostname`, `uuid`, the `k8s.*` and `container.*` output fields, and `k8s.cluster` |
//!
//! Falco does not know which cluster it runs in; the cluster is the output field `k8s.cluster.name`
//! or `cluster`, which Falco's `append_output` (`extra_output_fields`) or Falcosidekick's
//! `customfields` add. Without it the pod is `<namespace>/<pod>`, which does not join alerts
//! that name the cluster.
//! | observed_at | `time` |
//! | dedup_key | none: Cordon's fingerprint (rule, resource and user) |
//!
//! Falco writes `<NA>` for a field it could not read, and `host` as the container id of a process
//! outside any container; both count as absent.

use serde_json::Value;
use serde_json::value::RawValue;

use super::json::{self, get, text};
use super::{FormatError, SourceKind, kubernetes};
use crate::alert::{Actor, Alert, Network, Resource, Severity};

pub(super) fn normalize(raw: &RawValue) -> Result<Vec<Alert>, FormatError> {
    let body = json::parse(raw)?;
    if body.is_array() {
        return json::map_elements(raw, "the payload", "", event);
    }
    Ok(vec![event(raw.to_owned(), &body, "")?])
}

fn event(raw: Box<RawValue>, e: &Value, at: &str) -> Result<Alert, FormatError> {
    json::object(e, &json::located("the Falco event", at))?;
    let rule = json::required_text(e, "rule", &format!("{at}rule"))?;
    let priority = json::required_text(e, "priority", &format!("{at}priority"))?;
    let fields = get(e, "output_fields").or_else(|| get(e, "outputFields"));
    let field = |name: &str| {
        fields
            .and_then(|f| get(f, name))
            .and_then(json::as_text)
            .filter(|v| v != "<NA>")
    };

    let mut alert = Alert::new(SourceKind::Falco.name(), rule.clone(), raw);
    alert.severity = Severity::from_label(&priority);
    alert.description = text(e, "output");
    if let Some(at) = json::first_time(e, &["time"]) {
        alert.observed_at = at;
    }

    let hostname = text(e, "hostname");
    let source = text(e, "source");
    let container = field("container.id").filter(|id| id != "host");
    let cluster = kubernetes::cluster(field("k8s.cluster.name").or_else(|| field("cluster")));
    let pod = match (field("k8s.ns.name"), field("k8s.pod.name")) {
        (Some(ns), Some(pod)) => Some(
            kubernetes::Workload {
                cluster: cluster.as_deref(),
                namespace: Some(&ns),
                kind: "pod",
                name: &pod,
            }
            .resource(&mut alert.labels),
        ),
        _ => None,
    };
    // A Kubernetes audit event is about the object the request named (`ka.target.*`).
    let audited = if source.as_deref() == Some("k8s_audit") {
        match (field("ka.target.resource"), field("ka.target.name")) {
            (Some(kind), Some(name)) => {
                let namespace = field("ka.target.namespace");
                Some(
                    kubernetes::Workload {
                        cluster: cluster.as_deref(),
                        namespace: namespace.as_deref(),
                        kind: &kind,
                        name: &name,
                    }
                    .resource(&mut alert.labels),
                )
            }
            _ => None,
        }
    } else {
        None
    };
    let (resource, where_) = if let Some(object) = audited.or(pod) {
        let shown = format!(
            "{} {}",
            object
                .kind
                .as_deref()
                .and_then(|k| k.strip_prefix("k8s."))
                .unwrap_or_default(),
            object.id.as_deref().unwrap_or_default()
        );
        (object, Some(shown))
    } else if let Some(id) = container {
        let name = field("container.name");
        let shown = format!("container {}", name.as_deref().unwrap_or(&id));
        (
            Resource {
                kind: Some("container".into()),
                id: Some(id),
                name,
                ..Resource::default()
            },
            Some(shown),
        )
    } else {
        (
            Resource {
                kind: hostname.as_ref().map(|_| "host".into()),
                id: hostname.clone(),
                ..Resource::default()
            },
            None,
        )
    };
    alert.resource = resource;
    alert.title = match where_ {
        Some(where_) => format!("{rule} ({where_})"),
        None => rule,
    };

    alert.actor = if source.as_deref() == Some("k8s_audit") {
        field("ka.user.name").map(|user| Actor {
            kind: Some("k8s.user".into()),
            id: Some(user.clone()),
            name: Some(user),
            ..Actor::default()
        })
    } else {
        field("user.name").map(|user| Actor {
            kind: Some("unix.user".into()),
            id: Some(user.clone()),
            name: Some(user),
            ..Actor::default()
        })
    };

    let ip = |name: &str| field(name).as_deref().and_then(json::ip);
    let port = |name: &str| fields.and_then(|f| get(f, name)).and_then(json::port);
    alert.network = match ip("fd.rip") {
        Some(remote) => Network {
            remote_ip: Some(remote),
            remote_port: port("fd.rport"),
            local_ip: ip("fd.lip"),
            domain: None,
        },
        None => Network {
            remote_ip: ip("fd.sip"),
            remote_port: port("fd.sport"),
            local_ip: ip("fd.cip"),
            domain: None,
        },
    };
    alert.network.domain = field("fd.sip.name").or_else(|| field("fd.rip.name"));

    let labels = &mut alert.labels;
    let tags = get(e, "tags").map(json::texts).unwrap_or_default();
    if !tags.is_empty() {
        labels.insert("tags".to_owned(), tags.join(","));
    }
    for (label, value) in [
        ("source", source),
        ("hostname", hostname),
        ("uuid", text(e, "uuid")),
    ] {
        if let Some(value) = value {
            labels.insert(label.to_owned(), value);
        }
    }
    for (key, value) in fields.and_then(Value::as_object).into_iter().flatten() {
        let wanted = key.starts_with("k8s.") || key.starts_with("container.");
        if let Some(value) = json::as_text(value).filter(|v| wanted && v != "<NA>") {
            labels.insert(key.clone(), value);
        }
    }
    Ok(alert)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::json::testing::{assert_raw, assert_raw_is_body, error_of, fixture, value};
    use crate::intake::formats::SourceKind;

    #[test]
    fn json_output_shell_in_a_pod() {
        let body = fixture("falco/falco_docs_json_output_shell_in_container.json");
        let alerts = SourceKind::Falco.normalize(&body).expect("normalizes");
        assert_eq!(alerts.len(), 1);
        let a = &alerts[0];
        assert_raw_is_body(a, &body);
        assert_eq!(a.source, "falco");
        assert_eq!(a.kind, "Terminal shell in container");
        assert_eq!(
            (a.severity.score, a.severity.native.as_str()),
            (9, "Critical")
        );
        assert_eq!(a.title, "Terminal shell in container (pod default/kubecon)");
        assert!(
            a.description
                .as_deref()
                .is_some_and(|d| d.starts_with("13:44:05.478445995: Critical A shell was spawned"))
        );
        assert_eq!(a.resource.kind.as_deref(), Some("k8s.pod"));
        assert_eq!(a.resource.id.as_deref(), Some("default/kubecon"));
        assert_eq!(a.resource.name.as_deref(), Some("kubecon"));
        let actor = a.actor.as_ref().expect("actor");
        assert_eq!(
            (actor.kind.as_deref(), actor.id.as_deref()),
            (Some("unix.user"), Some("root"))
        );
        assert_eq!(a.network.remote_ip, None);
        assert_eq!(
            a.labels.get("tags").map(String::as_str),
            Some("container,mitre_execution,shell")
        );
        assert_eq!(
            a.labels.get("k8s.ns.name").map(String::as_str),
            Some("default")
        );
        assert_eq!(
            a.labels.get("container.id").map(String::as_str),
            Some("ee97d9c4186f")
        );
        assert_eq!(
            a.labels.get("hostname").map(String::as_str),
            Some("falco-xczjd")
        );
        assert_eq!(
            a.observed_at.to_rfc3339(),
            "2023-05-25T13:44:05.478445995+00:00"
        );
        assert_eq!(
            a.dedup_key,
            "falco|Terminal shell in container|default/kubecon|root"
        );
    }

    /// A Kubernetes audit event as the k8saudit plugin's rules print it ("Attach/Exec Pod", with
    /// the fields its output names), from a cluster Falcosidekick's `customfields` name.
    #[test]
    fn an_audit_event_is_about_the_object_it_names() {
        let body = json!({
            "output": "Attach/Exec to pod (user=alice pod=web-1 resource=pods ns=shop action=exec command=sh)",
            "priority": "Notice",
            "rule": "Attach/Exec Pod",
            "time": "2026-11-30T08:00:00.000000000Z",
            "source": "k8s_audit",
            "output_fields": {
                "ka.user.name": "alice",
                "ka.target.resource": "pods",
                "ka.target.name": "web-1",
                "ka.target.namespace": "shop",
                "ka.uri.param[command]": "sh",
                "cluster": "prod-eu"
            }
        });
        let a = &SourceKind::Falco
            .normalize(body.to_string().as_bytes())
            .expect("normalizes")[0];
        assert_eq!(a.resource.kind.as_deref(), Some("k8s.pod"));
        assert_eq!(a.resource.id.as_deref(), Some("prod-eu/shop/web-1"));
        assert_eq!(a.title, "Attach/Exec Pod (pod prod-eu/shop/web-1)");
        assert_eq!(a.labels["k8s.cluster"], "prod-eu");
        assert_eq!(a.labels["k8s.pod.name"], "web-1");
        assert_eq!(a.actor.as_ref().unwrap().id.as_deref(), Some("alice"));

        let mut node = body.clone();
        node["output_fields"]["ka.target.resource"] = json!("nodes");
        node["output_fields"]["ka.target.name"] = json!("ip-10-0-1-7");
        node["output_fields"]["ka.target.namespace"] = json!("<NA>");
        let a = &SourceKind::Falco
            .normalize(node.to_string().as_bytes())
            .expect("normalizes")[0];
        assert_eq!(a.resource.kind.as_deref(), Some("k8s.node"));
        assert_eq!(a.resource.id.as_deref(), Some("prod-eu/ip-10-0-1-7"));
    }

    #[test]
    fn falcosidekick_input_write_below_binary_dir_on_a_host() {
        let body = fixture("falco/falcosidekick_readme_falco_event_input.json");
        let alerts = SourceKind::Falco.normalize(&body).expect("normalizes");
        assert_eq!(alerts.len(), 1);
        let a = &alerts[0];
        assert_raw_is_body(a, &body);
        assert_eq!(a.kind, "Write below binary dir");
        assert_eq!((a.severity.score, a.severity.native.as_str()), (7, "Error"));
        assert_eq!(a.title, "Write below binary dir");
        assert_eq!(a.resource.kind.as_deref(), Some("host"));
        assert_eq!(a.resource.id.as_deref(), Some("localhost"));
        let actor = a.actor.as_ref().expect("actor");
        assert_eq!(actor.id.as_deref(), Some("root"));
        assert_eq!(
            a.observed_at.to_rfc3339(),
            "2019-05-17T15:31:56.746609046+00:00"
        );
        assert_eq!(a.dedup_key, "falco|Write below binary dir|localhost|root");
    }

    /// Falcosidekick's webhook adds `uuid`; forwarders capitalize keys; connections carry
    /// addresses; `<NA>` and the `host` container id are absent values.
    #[test]
    fn sidekick_variants_containers_and_connections() {
        let event = json!({"UUID": "77ed2b1d", "Output": "x", "Priority": "Warning", "Rule": "Outbound to miner",
            "Time": "2024-01-01T00:00:00Z", "Hostname": "node-1", "Tags": ["network"],
            "Output_Fields": {"container.id": "3ad7b26ded6d", "container.name": "web", "k8s.ns.name": "<NA>",
                "fd.sip": "203.0.113.50", "fd.sport": 3333, "fd.cip": "10.1.2.3", "user.name": 0}});
        let events = json!([event, {"rule": "r", "priority": "Notice", "hostname": "h",
            "output_fields": {"container.id": "host", "fd.rip": "[2001:db8::1]", "fd.rport": "443"}}]);
        let body = serde_json::to_vec(&events).expect("JSON");
        let alerts = SourceKind::Falco.normalize(&body).expect("normalizes");
        assert_eq!(alerts.len(), 2);
        let (a, b) = (&alerts[0], &alerts[1]);
        assert_raw(a, &body, &value(&body)[0]);
        assert_eq!(
            (a.severity.score, a.title.as_str()),
            (5, "Outbound to miner (container web)")
        );
        assert_eq!(a.resource.kind.as_deref(), Some("container"));
        assert_eq!(a.resource.id.as_deref(), Some("3ad7b26ded6d"));
        assert_eq!(a.network.remote_ip.as_deref(), Some("203.0.113.50"));
        assert_eq!(a.network.remote_port, Some(3333));
        assert_eq!(a.network.local_ip.as_deref(), Some("10.1.2.3"));
        assert_eq!(a.labels.get("uuid").map(String::as_str), Some("77ed2b1d"));
        assert_eq!(a.actor.as_ref().and_then(|x| x.id.as_deref()), Some("0"));
        assert_eq!(b.resource.kind.as_deref(), Some("host"));
        assert_eq!(b.network.remote_ip.as_deref(), Some("2001:db8::1"));
        assert_eq!(b.network.remote_port, Some(443));
    }

    #[test]
    fn missing_fields_are_named() {
        let err = error_of(SourceKind::Falco.normalize(br#"{"output":"x","priority":"Error"}"#));
        assert!(err.contains("`rule`"), "{err}");
        let err = error_of(SourceKind::Falco.normalize(br#"{"rule":"x"}"#));
        assert!(err.contains("`priority`"), "{err}");
        let err = error_of(
            SourceKind::Falco.normalize(br#"[{"rule":"x","priority":"Error"},{"rule":"y"}]"#),
        );
        assert!(err.contains("`[1].priority`"), "{err}");
        let err = error_of(SourceKind::Falco.normalize(br#"["x"]"#));
        assert!(err.contains("must be a JSON object"), "{err}");
    }
}
