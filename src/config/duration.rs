//! Durations written as `500ms`, `30s`, `5m`, `4h`, `7d` in config and playbooks.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A duration read from text: a whole number followed by `ms`, `s`, `m`, `h` or `d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    pub const fn secs(secs: u64) -> HumanDuration {
        HumanDuration(Duration::from_secs(secs))
    }
}

impl FromStr for HumanDuration {
    type Err = String;

    fn from_str(text: &str) -> Result<HumanDuration, String> {
        let text = text.trim();
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let bad = || {
            format!(
                "`{text}` is not a duration: write a whole number and a unit, e.g. `30s`, `5m`, `4h` (units: ms, s, m, h, d)"
            )
        };
        let n: u64 = number.parse().map_err(|_| bad())?;
        let millis_per = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(bad()),
        };
        let millis = n
            .checked_mul(millis_per)
            .ok_or_else(|| format!("`{text}` is too long a duration"))?;
        Ok(HumanDuration(Duration::from_millis(millis)))
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        for (unit, per) in [
            ("d", 86_400_000),
            ("h", 3_600_000),
            ("m", 60_000),
            ("s", 1_000),
        ] {
            if ms >= per && ms.is_multiple_of(per) {
                return write!(f, "{}{unit}", ms / per);
            }
        }
        write!(f, "{ms}ms")
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<HumanDuration, D::Error> {
        String::deserialize(deserializer)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_unit_and_prints_back() {
        for (text, ms) in [
            ("250ms", 250),
            ("30s", 30_000),
            ("5m", 300_000),
            ("4h", 14_400_000),
            ("2d", 172_800_000),
        ] {
            let d: HumanDuration = text.parse().unwrap();
            assert_eq!(d.0.as_millis(), ms);
            assert_eq!(d.to_string(), text);
        }
    }

    #[test]
    fn explains_what_is_wrong() {
        assert!(
            "5 minutes"
                .parse::<HumanDuration>()
                .unwrap_err()
                .contains("units: ms, s, m, h, d")
        );
        assert!("m".parse::<HumanDuration>().is_err());
        assert!(
            "99999999999999999d"
                .parse::<HumanDuration>()
                .unwrap_err()
                .contains("too long")
        );
    }
}
