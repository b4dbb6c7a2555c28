//! The `chat.discord` config section.

use std::fmt;

use serde::{Deserialize, Deserializer};

use crate::config::Secret;

/// Discord's HTTP API, version 10.
pub const DEFAULT_API_BASE: &str = "https://discord.com/api/v10";

/// The `chat.discord` config section: the application Cordon acts as and the channel its cards go
/// to. Setup: `integrations/discord/README.md`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscordConfig {
    /// The application's id (Developer Portal → General Information → Application ID).
    pub application_id: Snowflake,
    /// The application's public key in hex (General Information → Public Key): every interaction
    /// Discord sends is signed with its private half.
    pub public_key: PublicKey,
    /// The bot's token (Developer Portal → Bot → Reset Token), sent as `Authorization: Bot ...`.
    pub bot_token: Secret,
    /// The text channel incident cards are posted in (Developer Mode → right-click → Copy ID).
    pub channel_id: Snowflake,
    /// The HTTP API base URL; Discord's unless a test or an egress proxy needs another.
    #[serde(default = "default_api_base")]
    pub api_base_url: url::Url,
}

fn default_api_base() -> url::Url {
    url::Url::parse(DEFAULT_API_BASE).expect("the default base URL parses")
}

/// A Discord id (a "snowflake"): digits, written as a string or a number.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Snowflake(String);

impl Snowflake {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `text` is a snowflake as Discord writes them.
    pub fn valid(text: &str) -> bool {
        !text.is_empty() && text.len() <= 20 && text.bytes().all(|b| b.is_ascii_digit())
    }
}

impl fmt::Debug for Snowflake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for Snowflake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Snowflake {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Snowflake, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Snowflake;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a Discord id (digits, e.g. \"1457469483726668048\")")
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Snowflake, E> {
                if Snowflake::valid(text) {
                    Ok(Snowflake(text.to_owned()))
                } else {
                    Err(E::custom(format!(
                        "`{text}` is not a Discord id: Discord ids are digits only (turn on Developer Mode and use Copy ID)"
                    )))
                }
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<Snowflake, E> {
                Ok(Snowflake(n.to_string()))
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<Snowflake, E> {
                u64::try_from(n)
                    .map(|n| Snowflake(n.to_string()))
                    .map_err(|_| E::custom("a Discord id is not negative"))
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// An application's Ed25519 public key, checked at load (64 hex digits, a valid key).
#[derive(Clone)]
pub struct PublicKey {
    hex: String,
    verifier: serenity::interactions_endpoint::Verifier,
}

impl PublicKey {
    /// The verifier of interaction signatures.
    pub fn verifier(&self) -> &serenity::interactions_endpoint::Verifier {
        &self.verifier
    }

    /// Parses a hex public key.
    pub fn parse(text: &str) -> Result<PublicKey, String> {
        let text = text.trim();
        let bytes: [u8; 32] = hex::decode(text)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| {
                "the public key is 64 hex digits (Developer Portal → General Information → Public Key)"
                    .to_owned()
            })?;
        let verifier = serenity::interactions_endpoint::Verifier::try_new(bytes)
            .map_err(|_| "the public key is not a valid Ed25519 key".to_owned())?;
        Ok(PublicKey {
            hex: text.to_ascii_lowercase(),
            verifier,
        })
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.hex)
    }
}

impl<'de> Deserialize<'de> for PublicKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<PublicKey, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = PublicKey;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("the application's public key (64 hex digits)")
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<PublicKey, E> {
                PublicKey::parse(text).map_err(E::custom)
            }
        }
        deserializer.deserialize_str(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_full_section_and_refuses_bad_ids_and_keys() {
        let yaml = "application_id: \"1457469483726668048\"\npublic_key: 67c6bd767ca099e79efac9fcce4d2022a63bf7dea780e7f3d813f694c1597089\nbot_token: literal-token\nchannel_id: 1457510428359004343\n";
        let config: DiscordConfig = serde_yaml::from_str(yaml).unwrap();
        assert_eq!(config.application_id.as_str(), "1457469483726668048");
        assert_eq!(config.channel_id.as_str(), "1457510428359004343");
        assert_eq!(config.api_base_url.as_str(), DEFAULT_API_BASE);
        assert!(!format!("{config:?}").contains("literal-token"));

        let bad_id = yaml.replace("\"1457469483726668048\"", "my-app");
        let e = serde_yaml::from_str::<DiscordConfig>(&bad_id).unwrap_err();
        assert!(e.to_string().contains("not a Discord id"), "{e}");

        let bad_key = yaml.replace("67c6bd", "zz");
        let e = serde_yaml::from_str::<DiscordConfig>(&bad_key).unwrap_err();
        assert!(e.to_string().contains("64 hex digits"), "{e}");
    }
}
