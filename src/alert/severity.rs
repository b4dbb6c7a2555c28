//! Severity on one 0–10 scale, whatever scale the source uses.

use serde::{Deserialize, Serialize};

/// A severity: Cordon's score (0 = informational … 10 = critical) and the source's own value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Severity {
    /// 0–10.
    pub score: u8,
    /// The source's own value as it was written (`"8.0"`, `"HIGH"`, `"Sev1"`, `"Critical"`).
    pub native: String,
}

impl Severity {
    /// A severity with `score` clamped to 0–10.
    pub fn new(score: u8, native: impl Into<String>) -> Severity {
        Severity {
            score: score.min(10),
            native: native.into(),
        }
    }

    /// From a number on a scale whose top is `max` (GuardDuty: 0–10, Security Hub normalized: 0–100).
    pub fn from_scaled(value: f64, max: f64, native: impl Into<String>) -> Severity {
        let score = if value.is_finite() && max > 0.0 {
            (value / max * 10.0).round().clamp(0.0, 10.0) as u8
        } else {
            0
        };
        Severity::new(score, native)
    }

    /// From a word most products use: critical, high, medium, low, informational, and the Syslog
    /// and Falco priorities (emergency … debug). Unknown words score 5 so they are neither lost
    /// nor paged as critical.
    pub fn from_label(label: &str) -> Severity {
        let score = match label.trim().to_ascii_lowercase().as_str() {
            "emergency" | "fatal" => 10,
            "critical" | "crit" | "alert" => 9,
            "high" | "error" | "err" | "severe" => 7,
            "medium" | "moderate" | "warning" | "warn" => 5,
            "low" | "notice" | "minor" => 3,
            "informational" | "information" | "info" | "debug" | "none" | "ok" => 1,
            _ => 5,
        };
        Severity::new(score, label)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scales_onto_zero_to_ten() {
        assert_eq!(Severity::from_scaled(8.0, 10.0, "8.0").score, 8);
        assert_eq!(Severity::from_scaled(70.0, 100.0, "70").score, 7);
        assert_eq!(Severity::from_scaled(250.0, 100.0, "250").score, 10);
        assert_eq!(Severity::from_scaled(f64::NAN, 10.0, "NaN").score, 0);
    }

    #[test]
    fn words_map_to_scores_and_keep_the_native_value() {
        let s = Severity::from_label("HIGH");
        assert_eq!((s.score, s.native.as_str()), (7, "HIGH"));
        assert_eq!(Severity::from_label("Critical").score, 9);
        assert_eq!(Severity::from_label("Informational").score, 1);
        assert_eq!(Severity::from_label("whatever").score, 5);
    }
}
