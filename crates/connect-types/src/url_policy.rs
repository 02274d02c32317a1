//! Where Connect may send a request: provider endpoints (`*_url` connector config), OIDC discovery
//! and `jwks_uri`.
//!
//! A destination is `https://`, carries no userinfo, and is not a loopback, private, link-local,
//! CGNAT, unique-local, multicast, reserved or cloud-metadata address. The registry applies
//! [`UrlPolicy::check_url`] when it stores a value; the broker applies it again before each request
//! and [`UrlPolicy::check_resolved`] to every address a host name resolves to at connect time, so
//! a name that resolves to `10.0.0.1` (DNS rebinding included) does not help. Two operator choices
//! relax it, and only explicitly: `allow_insecure_loopback` (loopback destinations, plain `http`
//! allowed to them; for development and tests) and `allowed_hosts` (a host name or network the
//! operator trusts, e.g. an internal provider).
//!
//! Refusals describe the rule that was broken; the broker logs them and tells its callers nothing
//! more than that the provider is unavailable.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    str::FromStr,
};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use url::{Host, Url};

/// Why a URL or an address is not an allowed destination.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UrlRefusal(String);

impl UrlRefusal {
    fn new(why: impl Into<String>) -> Self {
        Self(why.into())
    }
}

/// A destination the operator allows although the policy would refuse it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostRule {
    /// A host name, compared without regard to case; its addresses are not checked.
    Name(String),
    /// Every address in a network, e.g. `10.20.0.0/16`, or one address.
    Net(IpNet),
}

impl FromStr for HostRule {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let value = value.trim();
        if let Ok(net) = value.parse::<IpNet>() {
            return Ok(Self::Net(net));
        }
        if let Ok(ip) = value.trim_matches(['[', ']']).parse::<IpAddr>() {
            return Ok(Self::Net(IpNet::from(ip)));
        }
        match Host::parse(value) {
            Ok(Host::Domain(name)) if !name.is_empty() => Ok(Self::Name(name)),
            Ok(Host::Ipv4(ip)) => Ok(Self::Net(IpNet::from(IpAddr::V4(ip)))),
            Ok(Host::Ipv6(ip)) => Ok(Self::Net(IpNet::from(IpAddr::V6(ip)))),
            _ => Err(format!(
                "{value:?} is neither a host name nor an address or CIDR network"
            )),
        }
    }
}

impl fmt::Display for HostRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Name(name) => f.write_str(name),
            Self::Net(net) => net.fmt(f),
        }
    }
}

/// The outbound-URL policy of one process.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UrlPolicy {
    pub allow_insecure_loopback: bool,
    pub allowed_hosts: Vec<HostRule>,
}

/// Networks no request may reach unless the operator allows them by name or network.
fn forbidden(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => forbidden_v6(v6),
    }
}

fn in_v4(ip: Ipv4Addr, nets: &[(&str, &'static str)]) -> Option<&'static str> {
    nets.iter().find_map(|(net, what)| {
        net.parse::<Ipv4Net>()
            .is_ok_and(|n| n.contains(&ip))
            .then_some(*what)
    })
}

fn forbidden_v4(ip: Ipv4Addr) -> Option<&'static str> {
    if ip.is_loopback() {
        return Some("a loopback address");
    }
    in_v4(
        ip,
        &[
            ("169.254.169.254/32", "a cloud metadata address"),
            ("100.100.100.200/32", "a cloud metadata address"),
            ("0.0.0.0/8", "an unspecified address"),
            ("10.0.0.0/8", "a private address"),
            ("172.16.0.0/12", "a private address"),
            ("192.168.0.0/16", "a private address"),
            ("100.64.0.0/10", "a shared (CGNAT) address"),
            ("169.254.0.0/16", "a link-local address"),
            ("192.0.0.0/24", "a reserved address"),
            ("192.0.2.0/24", "a documentation address"),
            ("198.51.100.0/24", "a documentation address"),
            ("203.0.113.0/24", "a documentation address"),
            ("198.18.0.0/15", "a benchmarking address"),
            ("224.0.0.0/4", "a multicast address"),
            ("240.0.0.0/4", "a reserved address"),
        ],
    )
}

fn forbidden_v6(ip: Ipv6Addr) -> Option<&'static str> {
    // Addresses that carry an IPv4 address are judged by it.
    if let Some(v4) = ip.to_ipv4_mapped() {
        return forbidden_v4(v4);
    }
    let segments = ip.segments();
    let embedded = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return forbidden_v4(embedded(segments[6], segments[7]));
    }
    // IPv4-translated (SIIT, RFC 2765 `::ffff:0:a.b.c.d`): a translator sends it to the IPv4
    // address.
    if segments[..6] == [0, 0, 0, 0, 0xffff, 0] {
        return forbidden_v4(embedded(segments[6], segments[7]));
    }
    if segments[0] == 0x2002 {
        return forbidden_v4(embedded(segments[1], segments[2]));
    }
    if ip.is_loopback() {
        return Some("a loopback address");
    }
    if ip.is_unspecified() {
        return Some("an unspecified address");
    }
    let nets: [(&str, &'static str); 9] = [
        ("fd00:ec2::254/128", "a cloud metadata address"),
        ("fc00::/7", "a unique-local address"),
        ("fe80::/10", "a link-local address"),
        ("fec0::/10", "a site-local address"),
        // RFC 8215: NAT64 for local use, translating to addresses of the operator's choosing.
        ("64:ff9b:1::/48", "a local-use NAT64 address"),
        // Teredo tunnels to an IPv4 address hidden (inverted) in the last bits.
        ("2001::/32", "a Teredo tunnel address"),
        ("ff00::/8", "a multicast address"),
        ("2001:db8::/32", "a documentation address"),
        ("::/96", "a deprecated IPv4-compatible address"),
    ];
    nets.iter().find_map(|(net, what)| {
        net.parse::<Ipv6Net>()
            .is_ok_and(|n| n.contains(&ip))
            .then_some(*what)
    })
}

fn is_loopback_name(name: &str) -> bool {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost" || name.ends_with(".localhost")
}

impl UrlPolicy {
    /// The default: public `https` destinations only.
    pub fn strict() -> Self {
        Self::default()
    }

    /// The policy of a development stack or a test: loopback allowed, plain `http` to it too.
    pub fn loopback() -> Self {
        Self {
            allow_insecure_loopback: true,
            allowed_hosts: Vec::new(),
        }
    }

    fn allows_name(&self, name: &str) -> bool {
        let name = name.trim_end_matches('.');
        self.allowed_hosts
            .iter()
            .any(|rule| matches!(rule, HostRule::Name(n) if n.eq_ignore_ascii_case(name)))
    }

    fn allows_ip(&self, ip: IpAddr) -> bool {
        self.allowed_hosts
            .iter()
            .any(|rule| matches!(rule, HostRule::Net(net) if net.contains(&ip)))
    }

    /// Whether a request may reach `ip` (a literal in a URL, or a resolved address).
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), UrlRefusal> {
        if self.allows_ip(ip) {
            return Ok(());
        }
        if self.allow_insecure_loopback && ip.to_canonical().is_loopback() {
            return Ok(());
        }
        match forbidden(ip) {
            Some(what) => Err(UrlRefusal::new(format!(
                "the destination {ip} is {what}, which requests may not reach"
            ))),
            None => Ok(()),
        }
    }

    /// Whether a request for `host` may connect to `ip`, one of the addresses `host` resolved to.
    pub fn check_resolved(&self, host: &str, ip: IpAddr) -> Result<(), UrlRefusal> {
        if self.allows_name(host) {
            return Ok(());
        }
        self.check_ip(ip)
            .map_err(|e| UrlRefusal::new(format!("{host} resolves to {ip}: {e}")))
    }

    /// Parses `raw` and checks everything that can be known without resolving its host.
    pub fn check_url(&self, raw: &str) -> Result<Url, UrlRefusal> {
        let url = Url::parse(raw).map_err(|e| UrlRefusal::new(format!("not a URL ({e})")))?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(UrlRefusal::new("the URL must not carry user credentials"));
        }
        let host = url
            .host()
            .ok_or_else(|| UrlRefusal::new("the URL must name a host"))?;
        let loopback = match &host {
            Host::Domain(name) => is_loopback_name(name),
            Host::Ipv4(ip) => ip.is_loopback(),
            Host::Ipv6(ip) => ip.is_loopback(),
        };
        match url.scheme() {
            "https" => {}
            "http" if loopback && self.allow_insecure_loopback => {}
            "http" if loopback => {
                return Err(UrlRefusal::new(
                    "plain http to a loopback host needs --allow-insecure-loopback",
                ));
            }
            _ => return Err(UrlRefusal::new("the URL must use https")),
        }
        match host {
            Host::Domain(name) if is_loopback_name(name) => {
                if !(self.allow_insecure_loopback || self.allows_name(name)) {
                    return Err(UrlRefusal::new(
                        "the URL names a loopback host, which requests may not reach",
                    ));
                }
            }
            Host::Domain(_) => {}
            Host::Ipv4(ip) => self.check_ip(IpAddr::V4(ip))?,
            Host::Ipv6(ip) => self.check_ip(IpAddr::V6(ip))?,
        }
        Ok(url)
    }
}

/// Whether a connector config key names a destination (`token_url`, `api_url`, …): such values
/// are checked by the policy, and the connector's secrets are bound to them.
pub fn is_destination_key(key: &str) -> bool {
    key.ends_with("_url")
}

/// Whether `url` is plain `http` to a literal loopback host (`127.0.0.0/8`, `[::1]`,
/// `localhost`): the one kind of plain-http issuer identity Connect accepts.
pub fn is_loopback_http(url: &str) -> bool {
    let Ok(parsed) = Url::parse(url) else {
        return false;
    };
    if parsed.scheme() != "http" || !parsed.username().is_empty() || parsed.password().is_some() {
        return false;
    }
    match parsed.host() {
        Some(Host::Domain(name)) => name == "localhost",
        Some(Host::Ipv4(ip)) => ip.is_loopback(),
        Some(Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_strict_policy_refuses_every_unsafe_shape() {
        let strict = UrlPolicy::strict();
        for bad in [
            "http://localhost.x/token",
            "http://127.0.0.1.x/token",
            "http://user@host.example/token",
            "https://user:pw@host.example/token",
            "https://10.0.0.1/token",
            "https://172.20.1.1/token",
            "https://192.168.1.1/token",
            "https://[::1]/token",
            "https://127.0.0.1/token",
            "https://localhost/token",
            "https://api.localhost/token",
            "https://169.254.169.254/latest/meta-data",
            "https://100.64.0.1/token",
            "https://[fd00::1]/token",
            "https://[fe80::1]/token",
            "https://[::ffff:10.0.0.1]/token",
            "https://[64:ff9b::a00:1]/token",
            "https://[64:ff9b:1::a00:1]/token",
            "https://[fec0::1]/token",
            "https://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/token",
            "https://0.0.0.0/token",
            "https://0x7f.1/token",
            "http://example.com/token",
            "ftp://example.com/token",
            "file:///etc/passwd",
            "not a url",
        ] {
            assert!(strict.check_url(bad).is_err(), "{bad} was accepted");
        }
        for good in [
            "https://oauth.example.com/token",
            "https://8.8.8.8/x",
            "https://[2606:4700::1111]/x",
        ] {
            assert!(strict.check_url(good).is_ok(), "{good} was refused");
        }
    }

    #[test]
    fn loopback_is_allowed_only_by_the_operator_flag_and_never_private_ranges() {
        let dev = UrlPolicy::loopback();
        assert!(dev.check_url("http://127.0.0.1:8080/token").is_ok());
        assert!(dev.check_url("http://localhost:8080/token").is_ok());
        assert!(dev.check_url("http://[::1]:8080/token").is_ok());
        assert!(dev.check_url("https://127.0.0.1/token").is_ok());
        assert!(dev.check_url("http://127.0.0.1.x/token").is_err());
        assert!(dev.check_url("http://localhost.x/token").is_err());
        assert!(dev.check_url("http://10.0.0.1/token").is_err());
        assert!(dev.check_url("https://169.254.169.254/").is_err());
        assert!(dev.check_url("http://user@127.0.0.1/").is_err());
    }

    #[test]
    fn resolved_addresses_are_checked_unless_the_host_is_allowed_by_name() {
        let strict = UrlPolicy::strict();
        let private: IpAddr = "10.0.0.1".parse().unwrap();
        let metadata: IpAddr = "169.254.169.254".parse().unwrap();
        let public: IpAddr = "93.184.216.34".parse().unwrap();
        assert!(strict.check_resolved("idp.example", private).is_err());
        assert!(strict.check_resolved("idp.example", metadata).is_err());
        assert!(strict.check_resolved("idp.example", public).is_ok());

        let operator = UrlPolicy {
            allow_insecure_loopback: false,
            allowed_hosts: vec![
                "idp.internal".parse().unwrap(),
                "10.20.0.0/16".parse().unwrap(),
            ],
        };
        assert!(operator.check_resolved("idp.internal", private).is_ok());
        assert!(operator.check_resolved("IDP.internal.", private).is_ok());
        assert!(operator.check_resolved("other.example", private).is_err());
        assert!(
            operator
                .check_resolved("other.example", "10.20.3.4".parse().unwrap())
                .is_ok()
        );
        assert!(operator.check_url("https://10.20.3.4/token").is_ok());
        assert!(operator.check_url("https://10.21.3.4/token").is_err());
    }

    #[test]
    fn host_rules_parse_names_addresses_and_networks() {
        assert_eq!(
            "idp.internal".parse::<HostRule>(),
            Ok(HostRule::Name("idp.internal".into()))
        );
        assert!(matches!(
            "10.0.0.0/8".parse::<HostRule>(),
            Ok(HostRule::Net(_))
        ));
        assert!(matches!("[::1]".parse::<HostRule>(), Ok(HostRule::Net(_))));
        assert!("not a host!".parse::<HostRule>().is_err());
    }

    #[test]
    fn only_literal_loopback_hosts_count_as_loopback_http() {
        for yes in [
            "http://127.0.0.1:8080",
            "http://localhost/x",
            "http://[::1]:9/a",
            "http://127.5.5.5",
        ] {
            assert!(is_loopback_http(yes), "{yes}");
        }
        for no in [
            "https://127.0.0.1",
            "http://127.0.0.1.evil.com",
            "http://10.0.0.1",
            "http://[::2]",
            "http://localhost.evil",
            "http://u@127.0.0.1",
        ] {
            assert!(!is_loopback_http(no), "{no}");
        }
    }

    mod laws {
        use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

        use proptest::prelude::*;

        use super::super::*;

        /// Every refused IPv4 network, as (base, prefix length).
        const REFUSED_V4: [([u8; 4], u32); 16] = [
            ([127, 0, 0, 0], 8),
            ([0, 0, 0, 0], 8),
            ([10, 0, 0, 0], 8),
            ([172, 16, 0, 0], 12),
            ([192, 168, 0, 0], 16),
            ([100, 64, 0, 0], 10),
            ([169, 254, 0, 0], 16),
            ([192, 0, 0, 0], 24),
            ([192, 0, 2, 0], 24),
            ([198, 51, 100, 0], 24),
            ([203, 0, 113, 0], 24),
            ([198, 18, 0, 0], 15),
            ([224, 0, 0, 0], 4),
            ([240, 0, 0, 0], 4),
            ([100, 100, 100, 200], 32),
            ([169, 254, 169, 254], 32),
        ];

        fn refused_v4() -> impl Strategy<Value = Ipv4Addr> {
            (0..REFUSED_V4.len(), any::<u32>()).prop_map(|(i, r)| {
                let (base, len) = REFUSED_V4[i];
                let host_bits = if len == 32 { 0 } else { r >> len };
                Ipv4Addr::from(u32::from_be_bytes(base) | host_bits)
            })
        }

        /// The IPv6 forms that carry an IPv4 address: mapped, IPv4-translated (SIIT), NAT64,
        /// 6to4, and the deprecated compatible form.
        fn carriers(v4: Ipv4Addr) -> Vec<Ipv6Addr> {
            let [a, b, c, d] = v4.octets();
            let (hi, lo) = (u16::from_be_bytes([a, b]), u16::from_be_bytes([c, d]));
            vec![
                v4.to_ipv6_mapped(),
                Ipv6Addr::new(0, 0, 0, 0, 0xffff, 0, hi, lo),
                Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, hi, lo),
                Ipv6Addr::new(0x2002, hi, lo, 0, 0, 0, 0, 1),
                Ipv6Addr::new(0, 0, 0, 0, 0, 0, hi, lo),
            ]
        }

        fn url(ip: IpAddr) -> String {
            match ip {
                IpAddr::V4(v4) => format!("https://{v4}/token"),
                IpAddr::V6(v6) => format!("https://[{v6}]/token"),
            }
        }

        proptest! {
            /// Nothing in a refused range is reachable, however it is spelled: as the URL's
            /// literal, as a resolved address, or inside an IPv6 address; a development policy
            /// opens loopback only.
            #[test]
            fn no_url_reaches_a_refused_range(v4 in refused_v4()) {
                let strict = UrlPolicy::strict();
                let dev = UrlPolicy::loopback();
                let mut spellings = vec![IpAddr::V4(v4)];
                spellings.extend(carriers(v4).into_iter().map(IpAddr::V6));
                for ip in spellings {
                    prop_assert!(strict.check_ip(ip).is_err(), "{ip} is reachable");
                    prop_assert!(strict.check_url(&url(ip)).is_err(), "{} is accepted", url(ip));
                    prop_assert!(strict.check_resolved("api.example.com", ip).is_err());
                    if !v4.is_loopback() {
                        prop_assert!(dev.check_ip(ip).is_err(), "{ip} is reachable in development");
                    }
                }
            }

            /// The literal in a URL and a resolved address are judged alike, for any address.
            #[test]
            fn literals_and_resolved_addresses_agree(bits in any::<u128>(), v4 in any::<u32>()) {
                let strict = UrlPolicy::strict();
                for ip in [IpAddr::V6(Ipv6Addr::from(bits)), IpAddr::V4(Ipv4Addr::from(v4))] {
                    let resolved = strict.check_resolved("api.example.com", ip).is_ok();
                    prop_assert_eq!(strict.check_ip(ip).is_ok(), resolved);
                    prop_assert_eq!(strict.check_url(&url(ip)).is_ok(), resolved, "{}", url(ip));
                }
            }
        }
    }
}
