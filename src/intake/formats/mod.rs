//! One normalizer per source: each turns the source's own payload into one or more [`Alert`]s.
//!
//! Normalizers are pure functions of the request body: no I/O, no clock other than
//! `received_at`, no panics on any input. They are lenient about what is optional (missing fields,
//! field-name case, new fields) and strict about what is required: a payload that is not the
//! source's format gets a [`FormatError`] that names what is missing or wrong.

use serde_json::value::RawValue;

use crate::alert::{Alert, AlertState};

mod alertmanager;
mod aws_cloudtrail;
mod aws_guardduty;
mod aws_securityhub;
mod azure_defender;
mod azure_monitor;
mod azure_sentinel;
mod falco;
mod gcp_scc;
mod generic;
mod identity;
mod json;
mod kubernetes;

/// The sources Cordon understands, by the name used in `POST /v1/alerts/{source}` and in config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SourceKind {
    AwsGuardDuty,
    AwsSecurityHub,
    AwsCloudTrail,
    AzureDefender,
    AzureSentinel,
    AzureMonitor,
    GcpScc,
    Falco,
    Alertmanager,
    Generic,
}

impl SourceKind {
    /// Every source, in the order the docs list them.
    pub const ALL: [SourceKind; 10] = [
        SourceKind::AwsGuardDuty,
        SourceKind::AwsSecurityHub,
        SourceKind::AwsCloudTrail,
        SourceKind::AzureDefender,
        SourceKind::AzureSentinel,
        SourceKind::AzureMonitor,
        SourceKind::GcpScc,
        SourceKind::Falco,
        SourceKind::Alertmanager,
        SourceKind::Generic,
    ];

    /// The name in URLs and config.
    pub fn name(self) -> &'static str {
        match self {
            SourceKind::AwsGuardDuty => "aws.guardduty",
            SourceKind::AwsSecurityHub => "aws.securityhub",
            SourceKind::AwsCloudTrail => "aws.cloudtrail",
            SourceKind::AzureDefender => "azure.defender",
            SourceKind::AzureSentinel => "azure.sentinel",
            SourceKind::AzureMonitor => "azure.monitor",
            SourceKind::GcpScc => "gcp.scc",
            SourceKind::Falco => "falco",
            SourceKind::Alertmanager => "alertmanager",
            SourceKind::Generic => "generic",
        }
    }

    /// The source named `name`, if Cordon knows it.
    pub fn from_name(name: &str) -> Option<SourceKind> {
        SourceKind::ALL.into_iter().find(|s| s.name() == name)
    }

    /// The states at the source its alerts can be in (see [`AlertState`]): Falco and CloudTrail
    /// report events, which never resolve; the others have a lifecycle.
    pub fn states(self) -> &'static [AlertState] {
        use AlertState::{Firing, Resolved, Suppressed};
        match self {
            SourceKind::AwsCloudTrail | SourceKind::Falco => &[Firing],
            SourceKind::Alertmanager | SourceKind::AzureMonitor => &[Firing, Resolved],
            SourceKind::AwsGuardDuty => &[Firing, Suppressed],
            SourceKind::AwsSecurityHub
            | SourceKind::AzureDefender
            | SourceKind::AzureSentinel
            | SourceKind::GcpScc
            | SourceKind::Generic => &[Firing, Resolved, Suppressed],
        }
    }

    /// Whether AWS may deliver this source through SNS (an SNS envelope around the payload).
    pub fn is_aws(self) -> bool {
        matches!(
            self,
            SourceKind::AwsGuardDuty | SourceKind::AwsSecurityHub | SourceKind::AwsCloudTrail
        )
    }

    /// Parses `body` (the source's payload, already authenticated and unwrapped from any
    /// transport envelope) into alerts. Always at least one alert on success.
    pub fn normalize(self, body: &[u8]) -> Result<Vec<Alert>, FormatError> {
        let raw: &RawValue = serde_json::from_slice(body)
            .map_err(|e| FormatError::new(format!("body is not valid JSON: {e}")))?;
        let alerts = match self {
            SourceKind::AwsGuardDuty => aws_guardduty::normalize(raw)?,
            SourceKind::AwsSecurityHub => aws_securityhub::normalize(raw)?,
            SourceKind::AwsCloudTrail => aws_cloudtrail::normalize(raw)?,
            SourceKind::AzureDefender => azure_defender::normalize(raw)?,
            SourceKind::AzureSentinel => azure_sentinel::normalize(raw)?,
            SourceKind::AzureMonitor => azure_monitor::normalize(raw)?,
            SourceKind::GcpScc => gcp_scc::normalize(raw)?,
            SourceKind::Falco => falco::normalize(raw)?,
            SourceKind::Alertmanager => alertmanager::normalize(raw)?,
            SourceKind::Generic => generic::normalize(raw)?,
        };
        if alerts.is_empty() {
            return Err(FormatError::new("the payload holds no alerts"));
        }
        Ok(alerts.into_iter().map(Alert::finish).collect())
    }
}

impl std::fmt::Display for SourceKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A payload that is not the source's format: the message says what is missing or wrong, and is
/// shown to the sender in the 400 answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct FormatError {
    pub message: String,
}

impl FormatError {
    pub fn new(message: impl Into<String>) -> FormatError {
        FormatError {
            message: message.into(),
        }
    }

    /// A required field is missing: `missing("detail.type")`.
    pub fn missing(path: &str) -> FormatError {
        FormatError::new(format!("missing required field `{path}`"))
    }
}
