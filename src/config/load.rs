//! Loading the config: every error at once, each at `file:line:column`.
//!
//! serde_yaml stops at the first error. To report all of them, the document is read several times,
//! each time checking one part strictly (one top-level key, one section, one source) and skipping
//! the rest; each pass finds at most one error, located by serde_yaml in the original text. So a
//! config with a typo in `server` and another in `sources.falco` gets both in one run; two errors in
//! the same section need two runs, which is the price of keeping serde's derived checks.

use std::fmt;
use std::path::Path;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};

use super::{
    Config, Diagnostic, Diagnostics, GroupingConfig, LogConfig, ServerConfig, SourceConfig,
    StoreConfig,
};
use crate::intake::formats::SourceKind;

const TOP_KEYS: &[&str] = &[
    "server",
    "store",
    "grouping",
    "log",
    "playbooks",
    "people",
    "oidc",
    "approvers",
    "guardrails",
    "integrations",
    "chat",
    "sources",
    "tickets",
    "audit",
    "email",
    "retention",
    "yara",
    "streams",
    "intake",
    "console",
];

/// Reads and parses the config at `path`.
pub fn load(path: &Path) -> Result<Config, Diagnostics> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Diagnostics(vec![Diagnostic::new(
            path,
            0,
            0,
            format!("cannot read the config file: {e}"),
        )])
    })?;
    parse(&text, path)
}

/// Parses config `text`; `file` names it in diagnostics.
pub fn parse(text: &str, file: &Path) -> Result<Config, Diagnostics> {
    let tree: serde_yaml::Value = match serde_yaml::from_str(text) {
        Ok(tree) => tree,
        Err(e) => return Err(Diagnostics(vec![yaml_error(text, file, &e)])),
    };
    match &tree {
        serde_yaml::Value::Null => return Ok(Config::default()),
        serde_yaml::Value::Mapping(_) => {}
        _ => {
            return Err(Diagnostics(vec![
                Diagnostic::new(file, 1, 1, "the config must be a mapping of sections")
                    .with_hint(format!("top-level keys are {}", TOP_KEYS.join(", "))),
            ]));
        }
    }

    let mut found = Vec::new();
    for focus in focuses(&tree) {
        let result = FocusSeed(&focus).deserialize(serde_yaml::Deserializer::from_str(text));
        if let Err(e) = result {
            found.push(Diagnostics::from_yaml(file, &e));
        }
    }
    if found.is_empty() {
        // What the passes cannot see (a duplicated key, say) still fails the full parse.
        let config = serde_yaml::from_str::<Config>(text)
            .map_err(|e| Diagnostics(vec![Diagnostics::from_yaml(file, &e)]))?;
        let mut problems = super::people::check(&config, text, file);
        problems.extend(crate::email::config::check(&config, text, file));
        return if problems.is_empty() {
            Ok(config)
        } else {
            Err(Diagnostics(problems))
        };
    }
    found.sort_by(|a, b| (a.line, a.column, &a.message).cmp(&(b.line, b.column, &b.message)));
    found.dedup();
    Err(Diagnostics(found))
}

/// A YAML error at its place. serde_yaml gives none for its alias limit ("repetition limit
/// exceeded"), so the YAML is read again by the position index, which refuses the same document at
/// the alias that goes over (or nesting too deep) and says where.
fn yaml_error(text: &str, file: &Path, error: &serde_yaml::Error) -> Diagnostic {
    let found = Diagnostics::from_yaml(file, error);
    if found.line != 0 {
        return found;
    }
    match crate::playbook::position::index(text) {
        Err(refused) => Diagnostic::new(
            file,
            refused.marker().line(),
            refused.marker().col() + 1,
            format!("YAML: {}", refused.info()),
        ),
        Ok(_) => found,
    }
}

/// One part of the document checked strictly in a pass.
#[derive(Debug)]
enum Focus {
    TopKey(String),
    Source(String),
}

fn focuses(tree: &serde_yaml::Value) -> Vec<Focus> {
    let mut out = Vec::new();
    let Some(map) = tree.as_mapping() else {
        return out;
    };
    for (key, value) in map {
        let Some(key) = key.as_str() else { continue };
        out.push(Focus::TopKey(key.to_owned()));
        if key == "sources"
            && let Some(sources) = value.as_mapping()
        {
            out.extend(
                sources
                    .keys()
                    .filter_map(|k| k.as_str())
                    .map(|k| Focus::Source(k.to_owned())),
            );
        }
    }
    out
}

struct FocusSeed<'a>(&'a Focus);

impl<'de> DeserializeSeed<'de> for FocusSeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for FocusSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a mapping of config sections")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let focus = match self.0 {
            Focus::TopKey(k) => Some(k.as_str()),
            Focus::Source(_) => None,
        };
        while let Some(key) = map.next_key_seed(KeySeed {
            focus,
            known: Some(TOP_KEYS),
        })? {
            match (self.0, key.as_str()) {
                (Focus::TopKey(k), "server") if k == "server" => {
                    map.next_value::<ServerConfig>()?;
                }
                (Focus::TopKey(k), "store") if k == "store" => {
                    map.next_value::<StoreConfig>()?;
                }
                (Focus::TopKey(k), "grouping") if k == "grouping" => {
                    map.next_value::<GroupingConfig>()?;
                }
                (Focus::TopKey(k), "playbooks") if k == "playbooks" => {
                    map.next_value::<super::PlaybooksConfig>()?;
                }
                (Focus::TopKey(k), "people") if k == "people" => {
                    map.next_value::<std::collections::BTreeMap<String, super::PersonConfig>>()?;
                }
                (Focus::TopKey(k), "oidc") if k == "oidc" => {
                    map.next_value::<Option<super::OidcConfig>>()?;
                }
                (Focus::TopKey(k), "approvers") if k == "approvers" => {
                    map.next_value::<std::collections::BTreeMap<String, Vec<String>>>()?;
                }
                (Focus::TopKey(k), "guardrails") if k == "guardrails" => {
                    map.next_value::<super::GuardrailsConfig>()?;
                }
                (Focus::TopKey(k), "chat") if k == "chat" => {
                    map.next_value::<crate::chat::ChatConfig>()?;
                }
                (Focus::TopKey(k), "integrations") if k == "integrations" => {
                    map.next_value::<super::IntegrationsConfig>()?;
                }
                (Focus::TopKey(k), "tickets") if k == "tickets" => {
                    map.next_value::<crate::tickets::TicketsConfig>()?;
                }
                (Focus::TopKey(k), "audit") if k == "audit" => {
                    map.next_value::<crate::audit::AuditConfig>()?;
                }
                (Focus::TopKey(k), "email") if k == "email" => {
                    map.next_value::<crate::email::EmailConfig>()?;
                }
                (Focus::TopKey(k), "retention") if k == "retention" => {
                    map.next_value::<crate::retention::RetentionConfig>()?;
                }
                (Focus::TopKey(k), "yara") if k == "yara" => {
                    map.next_value::<crate::yara::YaraConfig>()?;
                }
                (Focus::TopKey(k), "streams") if k == "streams" => {
                    map.next_value::<crate::streams::StreamsConfig>()?;
                }
                (Focus::TopKey(k), "intake") if k == "intake" => {
                    map.next_value::<crate::streams::IntakeConfig>()?;
                }
                (Focus::TopKey(k), "log") if k == "log" => {
                    map.next_value::<LogConfig>()?;
                }
                (Focus::TopKey(k), "sources") if k == "sources" => {
                    map.next_value_seed(SourcesSeed(None))?
                }
                (Focus::Source(name), "sources") => map.next_value_seed(SourcesSeed(Some(name)))?,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

/// The `sources` mapping: with `Some(name)`, checks that one source strictly; with `None`, only
/// that it is a mapping.
struct SourcesSeed<'a>(Option<&'a str>);

impl<'de> DeserializeSeed<'de> for SourcesSeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for SourcesSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a mapping from source name to its settings")
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key_seed(KeySeed {
            focus: self.0,
            known: None,
        })? {
            if Some(key.as_str()) == self.0 {
                map.next_value::<SourceConfig>()?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(())
    }
}

/// A mapping key. When it is the focused one and not a known name (top-level keys from `known`,
/// or source names when `known` is `None`), it is refused here, inside serde_yaml's own call, so the
/// error points at the key.
struct KeySeed<'a> {
    focus: Option<&'a str>,
    known: Option<&'static [&'static str]>,
}

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = String;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<String, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_> {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a name")
    }

    fn visit_str<E: de::Error>(self, name: &str) -> Result<String, E> {
        if self.focus == Some(name) {
            match self.known {
                Some(known) if !known.contains(&name) => {
                    return Err(de::Error::unknown_field(name, known));
                }
                None if SourceKind::from_name(name).is_none() => {
                    let known: Vec<String> =
                        SourceKind::ALL.iter().map(|s| format!("`{s}`")).collect();
                    return Err(de::Error::custom(format!(
                        "unknown source `{name}`, expected one of {}",
                        known.join(", ")
                    )));
                }
                _ => {}
            }
        }
        Ok(name.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AuthConfig, HmacAuth};

    fn errors(text: &str) -> Vec<String> {
        parse(text, Path::new("cordon.yaml"))
            .unwrap_err()
            .0
            .iter()
            .map(|d| d.to_string())
            .collect()
    }

    #[test]
    fn an_empty_file_is_all_defaults() {
        let config = parse("# nothing yet\n", Path::new("c.yaml")).unwrap();
        assert_eq!(config.server.listen.to_string(), "127.0.0.1:8080");
        assert!(config.sources.is_empty());
    }

    #[test]
    fn reports_every_broken_section_at_once_with_locations_and_hints() {
        let text = "\
server:
  lisen: 127.0.0.1:9000
store:
  path: data
grouping:
  dedup_window: 5 minutes
sources:
  falco:
    auth:
      bearer:
        token: abc
  aws.gaurdduty:
    auth:
      bearer: { token: abc }
  generic:
    enabled: true
colour: blue
";
        let errors = errors(text);
        assert_eq!(errors.len(), 5, "{errors:#?}");
        assert!(
            errors[0].starts_with("cordon.yaml:2:3: error: server: unknown field `lisen`"),
            "{}",
            errors[0]
        );
        assert!(
            errors[0].ends_with("hint: did you mean `listen`?"),
            "{}",
            errors[0]
        );
        assert!(
            errors[1]
                .starts_with("cordon.yaml:6:3: error: grouping: `5 minutes` is not a duration"),
            "{}",
            errors[1]
        );
        assert!(
            errors[2]
                .starts_with("cordon.yaml:12:3: error: sources: unknown source `aws.gaurdduty`"),
            "{}",
            errors[2]
        );
        assert!(
            errors[2].contains("hint: did you mean `aws.guardduty`?"),
            "{}",
            errors[2]
        );
        assert!(
            errors[3].starts_with("cordon.yaml:16:5: error: sources.generic: missing field `auth`"),
            "{}",
            errors[3]
        );
        assert!(
            errors[4].starts_with("cordon.yaml:17:1: error: unknown field `colour`"),
            "{}",
            errors[4]
        );
    }

    #[test]
    fn an_alias_bomb_is_refused_at_the_alias_that_goes_over() {
        let mut text = String::from("approvers:\n  l0: &l0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..9 {
            let p = i - 1;
            text.push_str(&format!(
                "  l{i}: &l{i} [*l{p}, *l{p}, *l{p}, *l{p}, *l{p}, *l{p}, *l{p}, *l{p}, *l{p}, *l{p}]\n"
            ));
        }
        let errors = errors(&text);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].starts_with("cordon.yaml:6:")
                && errors[0].contains("more than 100000 values once aliases are expanded"),
            "{}",
            errors[0]
        );
    }

    #[test]
    fn a_syntax_error_is_located() {
        let errors = errors("server:\n  listen: \"127.0.0.1:80\n");
        assert_eq!(errors.len(), 1);
        assert!(
            errors[0].starts_with("cordon.yaml:3:1: error: "),
            "{}",
            errors[0]
        );
    }

    #[test]
    fn an_unset_secret_variable_is_an_error_at_its_line() {
        let text = "sources:\n  generic:\n    auth:\n      bearer:\n        token: ${CORDON_TEST_SURELY_UNSET_VAR}\n";
        let errors = errors(text);
        assert!(errors[0].starts_with("cordon.yaml:5:16: error: sources.generic.auth.bearer.token: environment variable `CORDON_TEST_SURELY_UNSET_VAR` is not set"), "{}", errors[0]);
        assert!(
            errors[0].contains("hint: export the variable"),
            "{}",
            errors[0]
        );
    }

    #[test]
    fn a_valid_config_parses_and_keeps_secrets_redacted() {
        let text = "sources:\n  generic:\n    auth:\n      hmac:\n        secret: ${CORDON_TEST_UNSET_HMAC:-local-only}\n        replay_window: 2m\n";
        let config = parse(text, Path::new("c.yaml")).unwrap();
        let AuthConfig::Hmac(HmacAuth {
            secret,
            signature_header,
            replay_window,
            ..
        }) = &config.sources["generic"].auth
        else {
            panic!("expected hmac auth");
        };
        assert_eq!(secret.expose(), "local-only");
        assert_eq!(signature_header, "x-cordon-signature");
        assert_eq!(replay_window.0.as_secs(), 120);
        assert_eq!(
            config.secrets_using_defaults(),
            vec!["CORDON_TEST_UNSET_HMAC".to_owned()]
        );
        assert!(!format!("{config:?}").contains("local-only"));
    }

    #[test]
    fn chat_and_ticket_secrets_on_local_defaults_are_warned_about() {
        let text = "chat:\n  discord:\n    application_id: \"1457469483726668048\"\n    public_key: 0000000000000000000000000000000000000000000000000000000000000000\n    bot_token: ${CORDON_TEST_UNSET_DISCORD:-local-bot}\n    channel_id: \"1457510428359004343\"\n";
        let config = parse(text, Path::new("c.yaml")).unwrap_or_else(|d| panic!("{d}"));
        assert_eq!(
            config.secrets_using_defaults(),
            vec!["CORDON_TEST_UNSET_DISCORD".to_owned()]
        );
    }
}
