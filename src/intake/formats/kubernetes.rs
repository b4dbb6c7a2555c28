//! Kubernetes workloads as every source names them, so that alerts about one pod from two sources
//! (a Falco event and a GuardDuty EKS finding, say) share one entity and land in one incident.
//!
//! | resource kind | id |
//! |---|---|
//! | `k8s.pod` | `<cluster>/<namespace>/<pod>`, or `<namespace>/<pod>` when the source does not say which cluster |
//! | `k8s.deployment`, `k8s.statefulset`, `k8s.daemonset`, ... | `<cluster>/<namespace>/<name>` (the workload kind, lower case) |
//! | `k8s.namespace` | `<cluster>/<namespace>` |
//! | `k8s.node` | `<cluster>/<node>` |
//!
//! (each without `<cluster>/` when the source does not say which cluster).
//!
//! An alert about a workload also carries the labels the stock playbooks and the `kubernetes`
//! integration read: `k8s.cluster` (when known), `k8s.ns.name`, `k8s.pod.name` (for a pod), and
//! `k8s.node.name` (for a node), `k8s.workload.kind`/`k8s.workload.name` (for other workloads). The cluster is the name
//! the `kubernetes` integration's config gives it (`clusters.<name>`), so that an action reaches the
//! cluster the alert came from: an EKS finding names its cluster; a Falco event names it when Falco
//! or Falcosidekick adds it as an output field (docs/integrations.md, "Kubernetes").

use std::collections::BTreeMap;

use crate::alert::Resource;

/// A Kubernetes object named by the source: a workload in a namespace, or a node or namespace
/// (`namespace: None`).
pub(super) struct Workload<'a> {
    pub cluster: Option<&'a str>,
    pub namespace: Option<&'a str>,
    /// `pod`, `deployment`, ... (singular, any case: GuardDuty writes `pods`, `Deployment`).
    pub kind: &'a str,
    pub name: &'a str,
}

impl Workload<'_> {
    /// The resource, and its labels added to `labels`.
    pub fn resource(&self, labels: &mut BTreeMap<String, String>) -> Resource {
        let kind = workload_kind(self.kind);
        let id = [self.cluster, self.namespace, Some(self.name)]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join("/");
        if let Some(cluster) = self.cluster {
            labels.insert("k8s.cluster".to_owned(), cluster.to_owned());
        }
        if let Some(namespace) = self.namespace {
            labels.insert("k8s.ns.name".to_owned(), namespace.to_owned());
        }
        if kind == "pod" {
            labels.insert("k8s.pod.name".to_owned(), self.name.to_owned());
        } else if kind == "namespace" {
            labels.insert("k8s.ns.name".to_owned(), self.name.to_owned());
        } else if kind == "node" {
            labels.insert("k8s.node.name".to_owned(), self.name.to_owned());
        } else {
            labels.insert("k8s.workload.kind".to_owned(), kind.clone());
            labels.insert("k8s.workload.name".to_owned(), self.name.to_owned());
        }
        Resource {
            kind: Some(format!("k8s.{kind}")),
            id: Some(id),
            name: Some(self.name.to_owned()),
            ..Resource::default()
        }
    }
}

/// `pods` → `pod`, `Deployment` → `deployment`, `StatefulSets` → `statefulset`.
fn workload_kind(kind: &str) -> String {
    let kind = kind.trim().to_ascii_lowercase();
    match kind.strip_suffix('s') {
        Some(singular) if !kind.ends_with("ss") => singular.to_owned(),
        _ if kind.is_empty() => "pod".to_owned(),
        _ => kind,
    }
}

/// A cluster name as a source gives it: trimmed, and absent when empty or Falco's `<NA>`.
pub(super) fn cluster(name: Option<String>) -> Option<String> {
    name.map(|n| n.trim().to_owned())
        .filter(|n| !n.is_empty() && n != "<NA>")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pod_is_named_by_cluster_namespace_and_name() {
        let mut labels = BTreeMap::new();
        let pod = Workload {
            cluster: Some("prod-eu"),
            namespace: Some("shop"),
            kind: "pods",
            name: "web-7d9f",
        }
        .resource(&mut labels);
        assert_eq!(pod.kind.as_deref(), Some("k8s.pod"));
        assert_eq!(pod.id.as_deref(), Some("prod-eu/shop/web-7d9f"));
        assert_eq!(labels["k8s.cluster"], "prod-eu");
        assert_eq!(labels["k8s.ns.name"], "shop");
        assert_eq!(labels["k8s.pod.name"], "web-7d9f");

        let mut labels = BTreeMap::new();
        let unknown = Workload {
            cluster: None,
            namespace: Some("shop"),
            kind: "Pod",
            name: "web-7d9f",
        }
        .resource(&mut labels);
        assert_eq!(unknown.id.as_deref(), Some("shop/web-7d9f"));
        assert!(!labels.contains_key("k8s.cluster"));
    }

    #[test]
    fn other_workloads_keep_their_kind() {
        let mut labels = BTreeMap::new();
        let deployment = Workload {
            cluster: Some("c"),
            namespace: Some("ns"),
            kind: "Deployments",
            name: "api",
        }
        .resource(&mut labels);
        assert_eq!(deployment.kind.as_deref(), Some("k8s.deployment"));
        assert_eq!(deployment.id.as_deref(), Some("c/ns/api"));
        assert_eq!(labels["k8s.workload.kind"], "deployment");
        assert!(!labels.contains_key("k8s.pod.name"));
        assert_eq!(workload_kind("daemonsets"), "daemonset");

        let mut labels = BTreeMap::new();
        let node = Workload {
            cluster: Some("c"),
            namespace: None,
            kind: "nodes",
            name: "ip-10-0-1-7",
        }
        .resource(&mut labels);
        assert_eq!(node.kind.as_deref(), Some("k8s.node"));
        assert_eq!(node.id.as_deref(), Some("c/ip-10-0-1-7"));
        assert_eq!(labels["k8s.node.name"], "ip-10-0-1-7");
        assert_eq!(cluster(Some(" <NA> ".into())), None);
    }
}
