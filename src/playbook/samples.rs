//! What `cordon validate` checks a playbook's Rhai against ([`super::validate`]):
//!
//! - the shape of `alert` and `incident`, from the Rust types runs serialize them from
//!   ([`Shape::of`]): every field, the optional ones included, with what each holds, so a field
//!   added to the model is known at once;
//! - one sample normalized alert per source, each with its incident, to evaluate conditions and
//!   templates on.
//!
//! The samples are recorded payloads embedded in the binary (`samples/<source>.json`: byte-for-byte
//! copies of files of the shared fixtures, `../shared/fixtures/alerts/`, and for `generic` the
//! example of its format's documentation), run through the real normalizer when first needed. A
//! change to a normalizer therefore changes its sample with it; a hand-written normalized sample
//! would not. A test keeps the copies equal to the shared fixtures and checks that each normalizes.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use serde_json::{Value, json};

use crate::alert::{Alert, Incident};
use crate::intake::formats::SourceKind;
use crate::script::shape::Shape;

/// Each source's sample payload, with the shared fixture it copies (`None`: the documented example).
/// The Azure fixtures are API reference examples (`{parameters, responses: {"200": {body}}}`):
/// their payload is the body ([`ARM_BODY`]).
const PAYLOADS: [(SourceKind, Option<&str>, &[u8]); 10] = [
    (
        SourceKind::AwsGuardDuty,
        Some("aws_guardduty/sekoia_detail_instance_network__UnauthorizedAccess_EC2_TorRelay.json"),
        include_bytes!("samples/aws.guardduty.json"),
    ),
    (
        SourceKind::AwsSecurityHub,
        Some("aws_securityhub/eventbridge_imported_afsbp_ec2.7.json"),
        include_bytes!("samples/aws.securityhub.json"),
    ),
    (
        SourceKind::AwsCloudTrail,
        Some("aws_cloudtrail/stratus_authorize_security_group_ingress_port22.json"),
        include_bytes!("samples/aws.cloudtrail.json"),
    ),
    (
        SourceKind::AzureDefender,
        Some("azure/defender_for_cloud_alert_arm_example_2022-01-01.json"),
        include_bytes!("samples/azure.defender.json"),
    ),
    (
        SourceKind::AzureSentinel,
        Some("azure/sentinel_incident_arm_example_2024-09-01.json"),
        include_bytes!("samples/azure.sentinel.json"),
    ),
    (
        SourceKind::AzureMonitor,
        Some("azure/azure_monitor_common_alert_schema_metric_sample.json"),
        include_bytes!("samples/azure.monitor.json"),
    ),
    (
        SourceKind::GcpScc,
        Some("gcp_scc/sra_notification_etd_bad_ip.json"),
        include_bytes!("samples/gcp.scc.json"),
    ),
    (
        SourceKind::Falco,
        Some("falco/falco_docs_json_output_shell_in_container.json"),
        include_bytes!("samples/falco.json"),
    ),
    (
        SourceKind::Alertmanager,
        Some("alertmanager/prometheus_msteams_webhook_v4_firing.json"),
        include_bytes!("samples/alertmanager.json"),
    ),
    (
        SourceKind::Generic,
        None,
        include_bytes!("samples/generic.json"),
    ),
];

/// Where the payload is in an Azure API example.
const ARM_BODY: &str = "/responses/200/body";

/// A source's sample: its alert and incident as expressions see them in a run.
#[derive(Debug, Clone)]
pub(crate) struct Sample {
    pub alert: Value,
    pub incident: Value,
}

/// The shapes of the names expressions read whose shape Cordon knows: `alert` and `incident`.
pub(crate) fn roots() -> &'static BTreeMap<&'static str, Shape> {
    static ROOTS: LazyLock<BTreeMap<&'static str, Shape>> = LazyLock::new(|| {
        // `incident.alerts` is added by the engine (a summary of each alert of the incident).
        let incident =
            Shape::of::<Incident>().with_field("alerts", Shape::List(Box::new(Shape::Any)));
        BTreeMap::from([("alert", Shape::of::<Alert>()), ("incident", incident)])
    });
    &ROOTS
}

/// The sample of `source`, when it has one that normalizes.
pub(crate) fn sample(source: &str) -> Option<&'static Sample> {
    static SAMPLES: LazyLock<BTreeMap<&'static str, Sample>> = LazyLock::new(|| {
        PAYLOADS
            .iter()
            .filter_map(|(kind, _, body)| Some((kind.name(), normalized(*kind, body).ok()?)))
            .collect()
    });
    SAMPLES.get(source)
}

/// `body` normalized as `kind`, with an incident opened for it as the store would.
fn normalized(kind: SourceKind, body: &[u8]) -> Result<Sample, String> {
    let arm = matches!(kind, SourceKind::AzureDefender | SourceKind::AzureSentinel);
    let body = if arm {
        let example: Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
        let payload = example.pointer(ARM_BODY).ok_or("no example body")?;
        serde_json::to_vec(payload).map_err(|e| e.to_string())?
    } else {
        body.to_vec()
    };
    let mut alert = kind
        .normalize(&body)
        .map_err(|e| e.to_string())?
        .into_iter()
        .next()
        .ok_or("no alert")?;
    let incident = Incident::open_for(&alert);
    alert.incident_id = incident.id.clone();
    let mut incident_value = serde_json::to_value(&incident).map_err(|e| e.to_string())?;
    incident_value["alerts"] = json!([{
        "id": alert.id, "source": alert.source, "kind": alert.kind, "title": alert.title,
        "severity": alert.severity.score, "resource": alert.resource, "actor": alert.actor,
        "network": alert.network, "repeat_count": alert.repeat_count,
    }]);
    Ok(Sample {
        alert: serde_json::to_value(&alert).map_err(|e| e.to_string())?,
        incident: incident_value,
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn every_source_has_a_sample_that_normalizes() {
        for kind in SourceKind::ALL {
            let (_, _, body) = PAYLOADS
                .iter()
                .find(|(k, ..)| *k == kind)
                .unwrap_or_else(|| panic!("no sample for {kind}"));
            let sample = normalized(kind, body).unwrap_or_else(|e| panic!("{kind}: {e}"));
            assert_eq!(sample.alert["source"], kind.name());
            assert!(sample.alert["severity"]["score"].is_u64(), "{kind}");
            assert!(super::sample(kind.name()).is_some());
        }
    }

    #[test]
    fn the_samples_are_the_shared_fixtures_byte_for_byte() {
        let shared = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/alerts");
        for (kind, origin, body) in PAYLOADS {
            match origin {
                Some(origin) => {
                    let fixture = std::fs::read(shared.join(origin))
                        .unwrap_or_else(|e| panic!("{kind}: {origin}: {e}"));
                    assert!(fixture == body, "{kind}: samples/ differs from {origin}");
                }
                None => {
                    // The generic format's documented example, as its normalizer's doc shows it.
                    let doc = include_str!("../intake/formats/generic.rs");
                    let example: String = doc
                        .lines()
                        .skip_while(|l| *l != "//! ```json")
                        .skip(1)
                        .take_while(|l| *l != "//! ```")
                        .map(|l| l.trim_start_matches("//!").trim_start_matches(' '))
                        .collect::<Vec<_>>()
                        .join("\n");
                    let example: Value = serde_json::from_str(&example).unwrap();
                    assert_eq!(serde_json::from_slice::<Value>(body).unwrap(), example);
                }
            }
        }
    }

    #[test]
    fn the_alert_s_shape_has_every_field_of_the_model() {
        let alert = &roots()["alert"];
        let Shape::Record(fields) = alert else {
            panic!("{alert:?}");
        };
        // Optional fields too, which a serialized sample leaves out when they are empty.
        for field in [
            "description",
            "actor",
            "last_seen_at",
            "raw",
            "labels",
            "network",
        ] {
            assert!(fields.contains_key(field), "{field}");
        }
        assert_eq!(
            alert.field("severity").unwrap().field("score"),
            Some(&Shape::Number)
        );
        assert_eq!(fields["raw"], Shape::Any);
        assert_eq!(fields["labels"], Shape::Dict(Box::new(Shape::String)));
        let incident = &roots()["incident"];
        assert!(incident.field("alerts").is_some() && incident.field("status").is_some());
    }
}
