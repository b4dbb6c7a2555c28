//! Where outbound requests from playbooks (`core.http`) and integration scripts may go, by address.
//!
//! The host allowlists (`playbooks.http_allow`, a manifest's `hosts`) say which *names* a request
//! may use; this module says which *addresses* it may reach. Loopback, link-local, private, shared
//! (CGNAT), unspecified, multicast and cloud metadata addresses are refused unless the operator
//! named the address explicitly ([`Egress`]), because a name is only as trustworthy as whoever
//! answers for it in DNS: `internal.attacker.example` can resolve to `127.0.0.1` or
//! `169.254.169.254` as easily as to a public address.
//!
//! The check runs on the addresses DNS returned, inside the HTTP client's resolver
//! ([`GuardedResolver`]), so the connection is made to an address that was checked: a name that
//! answers differently on a second lookup (DNS rebinding) gains nothing. Addresses written in the
//! URL itself never reach a resolver and are checked by [`Egress::check_url`].
//!
//! Response bodies are read through [`read_capped`], which stops at the configured size while the
//! body streams in, instead of buffering whatever the other side sends first.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use ipnet::IpNet;

/// The addresses an operator allowed explicitly, on top of the public internet.
#[derive(Debug, Clone, Default)]
pub struct Egress {
    /// Addresses and ranges named in an allowlist (`127.0.0.1`, `10.20.0.0/16`, `::1`).
    nets: Vec<IpNet>,
    /// Exact host names whose every address is allowed (integration endpoint overrides).
    hosts: Vec<String>,
}

/// Why a request was not sent: the address it would have reached is not for outbound calls.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "`{host}` is {address}, {kind}; outbound requests may reach it only when the config names that address ({hint})"
)]
pub struct Refused {
    pub host: String,
    pub address: IpAddr,
    pub kind: &'static str,
    pub hint: &'static str,
}

impl Egress {
    /// The addresses and ranges among `entries` (allowlist entries; host names and patterns among
    /// them name no address and are skipped).
    pub fn from_entries<'a>(entries: impl IntoIterator<Item = &'a String>) -> Egress {
        Egress {
            nets: entries
                .into_iter()
                .filter_map(|e| address_entry(e))
                .collect(),
            hosts: Vec::new(),
        }
    }

    /// Also allows every address of the exact host `host` (lowercase, no port), or the address it
    /// is when it is one.
    pub fn allow_host(&mut self, host: &str) {
        match address_entry(host) {
            Some(net) => self.nets.push(net),
            None => self
                .hosts
                .push(host.trim_end_matches('.').to_ascii_lowercase()),
        }
    }

    /// Whether `address`, reached under the name `host`, may be called.
    fn permits(&self, host: &str, address: IpAddr) -> Result<(), &'static str> {
        let Some(kind) = special(address) else {
            return Ok(());
        };
        let host = host.trim_end_matches('.');
        if self.nets.iter().any(|net| net.contains(&address))
            || self.hosts.iter().any(|h| h.eq_ignore_ascii_case(host))
        {
            return Ok(());
        }
        Err(kind)
    }

    /// Refuses `url` when its host is an address (no DNS lookup happens then) that may not be
    /// called. Names are checked after they resolve, by the client's resolver.
    pub fn check_url(&self, url: &url::Url, hint: &'static str) -> Result<(), Refused> {
        let address = match url.host() {
            Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip),
            Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip),
            _ => return Ok(()),
        };
        let host = url.host_str().unwrap_or_default();
        self.permits(host, address).map_err(|kind| Refused {
            host: host.to_owned(),
            address,
            kind,
            hint,
        })
    }

    /// An HTTP client whose every connection goes to an address this allows: it resolves names
    /// through [`GuardedResolver`], follows no redirects (callers that follow them check each
    /// hop) and ignores `HTTP(S)_PROXY`, since through a proxy the address check would see the
    /// proxy's address and not the destination's.
    pub fn client(self, hint: &'static str) -> Result<reqwest::Client, String> {
        self.builder(hint)
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))
    }

    /// The builder of [`Egress::client`], for a caller that adds TLS settings of its own (a
    /// Kubernetes cluster's CA and client certificate).
    pub fn builder(self, hint: &'static str) -> reqwest::ClientBuilder {
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .dns_resolver(Arc::new(GuardedResolver {
                egress: Arc::new(self),
                hint,
            }))
    }
}

/// An allowlist entry that names addresses: an address (`127.0.0.1`, `::1`, `[::1]`) or a range
/// (`10.0.0.0/8`).
fn address_entry(entry: &str) -> Option<IpNet> {
    let entry = entry.trim();
    let bare = entry
        .strip_prefix('[')
        .and_then(|e| e.strip_suffix(']'))
        .unwrap_or(entry);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Some(IpNet::from(ip));
    }
    entry.parse::<IpNet>().ok()
}

/// What kind of address `ip` is, when it is one outbound calls must not reach by default.
pub fn special(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => special_v4(v4),
        IpAddr::V6(v6) => {
            // An IPv4 address written as IPv6 reaches the IPv4 address.
            if let Some(v4) = v6.to_ipv4_mapped() {
                return special_v4(v4);
            }
            let s = v6.segments();
            // NAT64 (64:ff9b::/96) also reaches the IPv4 address in its last 32 bits.
            if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                let [a, b] = s[6].to_be_bytes();
                let [c, d] = s[7].to_be_bytes();
                return special_v4(Ipv4Addr::new(a, b, c, d));
            }
            special_v6(v6)
        }
    }
}

fn special_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = ip.octets();
    Some(match () {
        _ if ip == Ipv4Addr::new(169, 254, 169, 254) || ip == Ipv4Addr::new(100, 100, 100, 200) => {
            "a cloud metadata address"
        }
        _ if ip.is_loopback() => "a loopback address",
        _ if a == 0 => "an unspecified address",
        _ if ip.is_link_local() => "a link-local address",
        _ if ip.is_private() => "a private address",
        _ if a == 100 && (64..128).contains(&b) => "a shared (CGNAT) address",
        _ if ip.is_multicast() || ip.is_broadcast() => "not a unicast address",
        _ => return None,
    })
}

fn special_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let first = ip.segments()[0];
    Some(match () {
        _ if ip == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) => "a cloud metadata address",
        _ if ip.is_loopback() => "a loopback address",
        _ if ip.is_unspecified() => "an unspecified address",
        _ if first & 0xffc0 == 0xfe80 => "a link-local address",
        _ if first & 0xfe00 == 0xfc00 => "a private (unique local) address",
        _ if ip.is_multicast() => "not a unicast address",
        _ => return None,
    })
}

/// The resolver of an [`Egress`] client: the system's lookup, then only the addresses the egress
/// rules allow. A name with none left fails the request with [`Refused`].
struct GuardedResolver {
    egress: Arc<Egress>,
    hint: &'static str,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let egress = self.egress.clone();
        let hint = self.hint;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut refused = None;
            let kept: Vec<SocketAddr> = found
                .into_iter()
                .filter(|addr| match egress.permits(&host, addr.ip()) {
                    Ok(()) => true,
                    Err(kind) => {
                        refused.get_or_insert((addr.ip(), kind));
                        false
                    }
                })
                .collect();
            if kept.is_empty()
                && let Some((address, kind)) = refused
            {
                return Err(Box::new(Refused {
                    host,
                    address,
                    kind,
                    hint,
                })
                    as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(kept.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The [`Refused`] behind a failed request, if the egress rules are why it failed.
pub fn refused(error: &reqwest::Error) -> Option<Refused> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(err) = source {
        if let Some(refused) = err.downcast_ref::<Refused>() {
            return Some(refused.clone());
        }
        source = err.source();
    }
    None
}

/// Why a response body was not read whole.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The body is larger than the cap; reading stopped there.
    #[error("the answer is larger than {cap} bytes (config: {key})")]
    TooLarge { cap: usize, key: &'static str },
    /// The connection failed while the body came in.
    #[error("reading the answer failed: {0}")]
    Transport(reqwest::Error),
}

/// Reads `response`'s body, stopping as soon as it passes `cap` bytes (at once when the declared
/// length already does). `key` names the config key of the cap, for the error.
pub async fn read_capped(
    mut response: reqwest::Response,
    cap: usize,
    key: &'static str,
) -> Result<Vec<u8>, ReadError> {
    if response.content_length().is_some_and(|n| n > cap as u64) {
        return Err(ReadError::TooLarge { cap, key });
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| ReadError::Transport(e.without_url()))?
    {
        if body.len() + chunk.len() > cap {
            return Err(ReadError::TooLarge { cap, key });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn internal_and_metadata_addresses_are_special_and_public_ones_are_not() {
        for (address, kind) in [
            ("127.0.0.1", "a loopback address"),
            ("127.8.9.10", "a loopback address"),
            ("::1", "a loopback address"),
            ("0.0.0.0", "an unspecified address"),
            ("::", "an unspecified address"),
            ("169.254.169.254", "a cloud metadata address"),
            ("169.254.1.1", "a link-local address"),
            ("fe80::1", "a link-local address"),
            ("fd00:ec2::254", "a cloud metadata address"),
            ("100.100.100.200", "a cloud metadata address"),
            ("10.1.2.3", "a private address"),
            ("172.16.0.1", "a private address"),
            ("172.31.255.255", "a private address"),
            ("192.168.1.1", "a private address"),
            ("fc00::1", "a private (unique local) address"),
            ("fd12:3456::1", "a private (unique local) address"),
            ("100.64.0.1", "a shared (CGNAT) address"),
            ("100.127.255.255", "a shared (CGNAT) address"),
            ("::ffff:127.0.0.1", "a loopback address"),
            ("::ffff:169.254.169.254", "a cloud metadata address"),
            ("64:ff9b::a9fe:a9fe", "a cloud metadata address"),
            ("224.0.0.1", "not a unicast address"),
            ("255.255.255.255", "not a unicast address"),
        ] {
            assert_eq!(special(ip(address)), Some(kind), "{address}");
        }
        for address in [
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "203.0.113.7",
            "2606:4700::1111",
        ] {
            assert_eq!(special(ip(address)), None, "{address}");
        }
    }

    #[test]
    fn only_an_entry_naming_the_address_or_its_range_allows_it() {
        let entries: Vec<String> = [
            "127.0.0.1",
            "10.20.0.0/16",
            "[::1]",
            "*.example.com",
            "localhost",
        ]
        .map(String::from)
        .to_vec();
        let egress = Egress::from_entries(&entries);
        assert!(egress.permits("x", ip("127.0.0.1")).is_ok());
        assert!(egress.permits("x", ip("127.0.0.2")).is_err());
        assert!(egress.permits("x", ip("10.20.3.4")).is_ok());
        assert!(egress.permits("x", ip("10.21.3.4")).is_err());
        assert!(egress.permits("x", ip("::1")).is_ok());
        // A host name in the allowlist names no address: `localhost` still may not reach 127/8.
        assert_eq!(
            egress.permits("localhost", ip("127.0.0.2")),
            Err("a loopback address")
        );
        assert!(egress.permits("api.example.com", ip("8.8.8.8")).is_ok());

        let mut endpoints = Egress::default();
        endpoints.allow_host("moto.internal");
        endpoints.allow_host("127.0.0.1");
        assert!(
            endpoints
                .permits("MOTO.internal.", ip("172.18.0.5"))
                .is_ok()
        );
        assert!(
            endpoints
                .permits("other.internal", ip("172.18.0.5"))
                .is_err()
        );
        assert!(endpoints.permits("anything", ip("127.0.0.1")).is_ok());
    }

    #[test]
    fn an_address_in_the_url_is_checked_without_a_lookup() {
        let egress = Egress::default();
        for url in [
            "http://127.0.0.1:8080/x",
            "http://[::1]/",
            "http://169.254.169.254/latest/meta-data/",
            "http://0x7f.1/",
            "http://2130706433/",
            "http://[::ffff:7f00:1]/",
        ] {
            let url = url::Url::parse(url).unwrap();
            let error = egress.check_url(&url, "test").unwrap_err();
            assert!(
                error
                    .to_string()
                    .contains("outbound requests may reach it only"),
                "{error}"
            );
        }
        let public = url::Url::parse("https://203.0.113.7/").unwrap();
        assert!(egress.check_url(&public, "test").is_ok());
        let named = url::Url::parse("http://localhost/").unwrap();
        assert!(
            egress.check_url(&named, "test").is_ok(),
            "names are checked when they resolve"
        );
    }

    #[tokio::test]
    async fn a_name_resolving_to_loopback_is_refused_before_any_connection() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let client = Egress::default().client("test hint").unwrap();
        let error = client
            .get(format!("http://localhost:{port}/"))
            .send()
            .await
            .unwrap_err();
        let refused = refused(&error).expect("refused by the egress rules");
        assert_eq!(refused.host, "localhost");
        assert_eq!(refused.kind, "a loopback address");
        assert!(refused.to_string().contains("(test hint)"), "{refused}");
        // Nothing connected.
        let accepted =
            tokio::time::timeout(std::time::Duration::from_millis(50), listener.accept()).await;
        assert!(accepted.is_err(), "a connection was made");
    }
}
