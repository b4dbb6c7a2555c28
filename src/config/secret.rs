//! Secrets: values that come from the environment and never show up in logs, errors or output.

use std::fmt;

use serde::{Deserialize, Deserializer};

/// A secret value from the config. `Debug` and `Display` print `**redacted**`; the only way to the
/// value is [`Secret::expose`], which call sites use at the moment they compare or send it.
///
/// In YAML a secret is written as `${VAR}` (the value of environment variable `VAR`; an error if it
/// is unset) or `${VAR:-default}` (the default when `VAR` is unset: for local use only, and the
/// server warns at start while a default is in use). A literal value is accepted too, but the
/// example config never uses one.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    value: String,
    /// The variable whose written default is in use, if any.
    default_of: Option<String>,
}

impl Secret {
    /// A secret from a value in code (tests and the CLI); never from user text.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret {
            value: value.into(),
            default_of: None,
        }
    }

    /// The secret itself. Call it only where the value is compared or sent.
    pub fn expose(&self) -> &str {
        &self.value
    }

    /// The environment variable whose `:-default` is in use, when it is.
    pub fn default_in_use(&self) -> Option<&str> {
        self.default_of.as_deref()
    }

    /// Expands `${VAR}` and `${VAR:-default}` in `text`, reading variables with `lookup`.
    pub fn expand(text: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<Secret, String> {
        let mut out = String::new();
        let mut default_of = None;
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let end = after
                .find('}')
                .ok_or_else(|| format!("unclosed `${{` in secret reference `{text}`"))?;
            let reference = &after[..end];
            let (name, default) = match reference.split_once(":-") {
                Some((name, default)) => (name, Some(default)),
                None => (reference, None),
            };
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!(
                    "`${{{reference}}}` is not a valid environment variable reference"
                ));
            }
            match (lookup(name).filter(|v| !v.is_empty()), default) {
                (Some(value), _) => out.push_str(&value),
                (None, Some(default)) => {
                    out.push_str(default);
                    default_of = Some(name.to_owned());
                }
                (None, None) => return Err(format!("environment variable `{name}` is not set")),
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        if out.is_empty() {
            return Err("secret is empty".to_owned());
        }
        Ok(Secret {
            value: out,
            default_of,
        })
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("**redacted**")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("**redacted**")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Secret, D::Error> {
        // Expanding inside serde_yaml's own call makes an error point at the value.
        struct SecretVisitor;
        impl serde::de::Visitor<'_> for SecretVisitor {
            type Value = Secret;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a secret: `${VAR}` or `${VAR:-local default}`")
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Secret, E> {
                Secret::expand(text, |name| std::env::var(name).ok()).map_err(E::custom)
            }
        }
        deserializer.deserialize_str(SecretVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        (name == "SET").then(|| "from-env".to_owned())
    }

    #[test]
    fn expands_variables_and_defaults() {
        assert_eq!(Secret::expand("${SET}", env).unwrap().expose(), "from-env");
        let local = Secret::expand("${UNSET:-dev-token}", env).unwrap();
        assert_eq!(
            (local.expose(), local.default_in_use()),
            ("dev-token", Some("UNSET"))
        );
        let set = Secret::expand("${SET:-dev-token}", env).unwrap();
        assert_eq!((set.expose(), set.default_in_use()), ("from-env", None));
        assert_eq!(
            Secret::expand("Bearer ${SET}", env).unwrap().expose(),
            "Bearer from-env"
        );
    }

    #[test]
    fn refuses_unset_and_malformed_references() {
        assert_eq!(
            Secret::expand("${UNSET}", env).unwrap_err(),
            "environment variable `UNSET` is not set"
        );
        assert!(
            Secret::expand("${SET", env)
                .unwrap_err()
                .contains("unclosed")
        );
        assert!(
            Secret::expand("${BAD NAME}", env)
                .unwrap_err()
                .contains("not a valid")
        );
        assert_eq!(Secret::expand("", env).unwrap_err(), "secret is empty");
    }

    #[test]
    fn never_prints_its_value() {
        let secret = Secret::new("hunter2");
        assert_eq!(format!("{secret} {secret:?}"), "**redacted** **redacted**");
    }
}
