//! Which endpoints a webhook may reach (the SSRF guard). A customer chooses the URL, and
//! simgate POSTs to it from inside the operator's network, so by default only public addresses
//! over https are reached: loopback, private, carrier-NAT, link-local, unique-local, multicast,
//! unspecified, reserved and cloud-metadata targets are refused, at creation (the URL) and again
//! at connect time (every address a name resolves to, since a name may point elsewhere later).
//! An operator allow-list of hosts and CIDRs (`[webhooks] allow_hosts`) opens exceptions, e.g.
//! for a receiver on the same machine in a test harness.
//!
//! The classification is pure; [`GuardedResolver`] applies it to what a [`Lookup`] returns.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use futures::future::BoxFuture;
use ipnet::IpNet;

/// Why a target is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Not https (or http when allowed).
    Scheme,
    /// `user:password@` in the URL.
    Userinfo,
    NoHost,
    Loopback,
    Private,
    LinkLocal,
    UniqueLocal,
    Multicast,
    Unspecified,
    Metadata,
    Reserved,
    /// A name that only means something inside a network (`localhost`, single labels, `.local`).
    LocalName,
}

impl Refusal {
    pub fn describe(self) -> &'static str {
        match self {
            Refusal::Scheme => {
                "must be an https:// URL (http:// only where the operator allows it)"
            }
            Refusal::Userinfo => "must not contain a user name or password",
            Refusal::NoHost => "must name a host",
            Refusal::Loopback => "must not point at a loopback address",
            Refusal::Private => "must not point at a private address",
            Refusal::LinkLocal => "must not point at a link-local address",
            Refusal::UniqueLocal => "must not point at a unique-local address",
            Refusal::Multicast => "must not point at a multicast or broadcast address",
            Refusal::Unspecified => "must not point at an unspecified address",
            Refusal::Metadata => "must not point at a cloud metadata service",
            Refusal::Reserved => "must not point at a reserved or non-routable address",
            Refusal::LocalName => "must not use a local-only host name",
        }
    }
}

fn v4_in(ip: Ipv4Addr, net: [u8; 4], prefix: u8) -> bool {
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    };
    u32::from(ip) & mask == u32::from(Ipv4Addr::from(net)) & mask
}

fn classify_v4(ip: Ipv4Addr) -> Option<Refusal> {
    // Metadata first: both live inside ranges refused for another reason, but the precise
    // reason is the useful one.
    if ip == Ipv4Addr::new(169, 254, 169, 254) || ip == Ipv4Addr::new(100, 100, 100, 200) {
        return Some(Refusal::Metadata);
    }
    let table: &[([u8; 4], u8, Refusal)] = &[
        ([0, 0, 0, 0], 8, Refusal::Unspecified),
        ([127, 0, 0, 0], 8, Refusal::Loopback),
        ([10, 0, 0, 0], 8, Refusal::Private),
        ([172, 16, 0, 0], 12, Refusal::Private),
        ([192, 168, 0, 0], 16, Refusal::Private),
        // Shared address space (carrier-grade NAT): internal to a provider.
        ([100, 64, 0, 0], 10, Refusal::Private),
        ([169, 254, 0, 0], 16, Refusal::LinkLocal),
        ([192, 0, 0, 0], 24, Refusal::Reserved),
        ([192, 0, 2, 0], 24, Refusal::Reserved),
        ([198, 18, 0, 0], 15, Refusal::Reserved),
        ([198, 51, 100, 0], 24, Refusal::Reserved),
        ([203, 0, 113, 0], 24, Refusal::Reserved),
        ([224, 0, 0, 0], 4, Refusal::Multicast),
        ([255, 255, 255, 255], 32, Refusal::Multicast),
        ([240, 0, 0, 0], 4, Refusal::Reserved),
    ];
    table
        .iter()
        .find(|(net, prefix, _)| v4_in(ip, *net, *prefix))
        .map(|(_, _, r)| *r)
}

fn classify_v6(ip: Ipv6Addr) -> Option<Refusal> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return classify_v4(v4);
    }
    let s = ip.segments();
    let embedded = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    if ip.is_unspecified() {
        return Some(Refusal::Unspecified);
    }
    if ip.is_loopback() {
        return Some(Refusal::Loopback);
    }
    // AWS's IPv6 metadata endpoint.
    if ip == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) {
        return Some(Refusal::Metadata);
    }
    // IPv4-compatible (deprecated): ::a.b.c.d.
    if s[..6] == [0; 6] {
        return Some(Refusal::Reserved);
    }
    // NAT64 reaches the embedded IPv4 address: judge that one.
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return classify_v4(embedded(s[6], s[7]));
    }
    // 6to4 carries an IPv4 address in bits 16..48.
    if s[0] == 0x2002 {
        return classify_v4(embedded(s[1], s[2]));
    }
    match s[0] {
        x if x & 0xfe00 == 0xfc00 => return Some(Refusal::UniqueLocal),
        x if x & 0xffc0 == 0xfe80 => return Some(Refusal::LinkLocal),
        // Site-local (deprecated), still routed inside some networks.
        x if x & 0xffc0 == 0xfec0 => return Some(Refusal::Private),
        x if x & 0xff00 == 0xff00 => return Some(Refusal::Multicast),
        _ => {}
    }
    // Teredo, documentation, ORCHID, discard-only, NAT64 local use.
    let teredo_doc_orchid =
        s[0] == 0x2001 && (s[1] == 0 || s[1] == 0xdb8 || matches!(s[1] & 0xfff0, 0x10 | 0x20));
    if teredo_doc_orchid
        || (s[0] == 0x0100 && s[1..4] == [0, 0, 0])
        || (s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1)
    {
        return Some(Refusal::Reserved);
    }
    // Only global unicast (2000::/3) is routed on the Internet.
    if s[0] & 0xe000 != 0x2000 {
        return Some(Refusal::Reserved);
    }
    None
}

/// Why an address may not be reached by default; None for a public address.
pub fn classify(ip: IpAddr) -> Option<Refusal> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

/// Lower case without the trailing dot: how names are compared.
fn normal_name(host: &str) -> String {
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// Why a host name is refused before it is even resolved.
pub fn classify_name(host: &str) -> Option<Refusal> {
    let name = normal_name(host);
    const METADATA: &[&str] = &[
        "metadata",
        "metadata.google.internal",
        "metadata.goog",
        "instance-data",
        "instance-data.ec2.internal",
    ];
    if METADATA.contains(&name.as_str()) {
        return Some(Refusal::Metadata);
    }
    if name == "localhost" || name.ends_with(".localhost") || name == "localhost.localdomain" {
        return Some(Refusal::Loopback);
    }
    // A single label is completed by the resolver's search domains, i.e. an internal host.
    let local_suffix = [".local", ".internal", ".home.arpa", ".lan"]
        .iter()
        .any(|s| name.ends_with(s));
    if !name.contains('.') || local_suffix {
        return Some(Refusal::LocalName);
    }
    None
}

/// The operator's policy: whether plain http is allowed and which hosts and networks are
/// reachable despite the default refusals.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TargetPolicy {
    allow_http: bool,
    hosts: Vec<String>,
    nets: Vec<IpNet>,
}

impl TargetPolicy {
    /// From `[webhooks] allow_hosts` (host names, IP addresses or CIDRs) and `allow_http`.
    pub fn new(allow_hosts: &[String], allow_http: bool) -> Result<TargetPolicy, String> {
        let mut policy = TargetPolicy {
            allow_http,
            ..TargetPolicy::default()
        };
        for entry in allow_hosts {
            let e = entry.trim();
            if let Ok(net) = e.parse::<IpNet>() {
                policy.nets.push(net.trunc());
            } else if let Ok(ip) = e.trim_matches(['[', ']']).parse::<IpAddr>() {
                policy.nets.push(IpNet::from(ip));
            } else if !e.is_empty()
                && !e.contains('/')
                && e.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
            {
                policy.hosts.push(normal_name(e));
            } else {
                return Err(format!(
                    "webhooks.allow_hosts: {entry:?} is not a host name, an IP address or a CIDR"
                ));
            }
        }
        Ok(policy)
    }

    fn host_listed(&self, host: &str) -> bool {
        let name = normal_name(host);
        self.hosts.contains(&name)
    }

    /// Whether an address may be connected to (listed, or public).
    pub fn permits_ip(&self, ip: IpAddr) -> Result<(), Refusal> {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        if self.nets.iter().any(|n| n.contains(&ip)) {
            return Ok(());
        }
        classify(ip).map_or(Ok(()), Err)
    }

    /// The creation check (and the check of IP-literal URLs before every send, which never
    /// reach the resolver).
    pub fn check_url(&self, url: &url::Url) -> Result<(), Refusal> {
        match url.scheme() {
            "https" => {}
            "http" if self.allow_http => {}
            _ => return Err(Refusal::Scheme),
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(Refusal::Userinfo);
        }
        match url.host() {
            None => Err(Refusal::NoHost),
            Some(url::Host::Ipv4(ip)) => self.permits_ip(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => self.permits_ip(IpAddr::V6(ip)),
            Some(url::Host::Domain(name)) => {
                if self.host_listed(name) {
                    Ok(())
                } else {
                    classify_name(name).map_or(Ok(()), Err)
                }
            }
        }
    }

    /// Of what `host` resolved to, the addresses that may be connected to. A listed host may
    /// reach whatever it resolves to: the operator vouched for the name.
    pub fn permitted(&self, host: &str, resolved: Vec<IpAddr>) -> Vec<IpAddr> {
        if self.host_listed(host) {
            return resolved;
        }
        if classify_name(host).is_some() {
            return Vec::new();
        }
        resolved
            .into_iter()
            .filter(|ip| self.permits_ip(*ip).is_ok())
            .collect()
    }
}

/// Resolves a host name to addresses; injectable so tests can point names anywhere without
/// touching DNS.
pub trait Lookup: Send + Sync + 'static {
    fn lookup(&self, host: &str) -> BoxFuture<'static, std::io::Result<Vec<IpAddr>>>;
}

/// The system resolver.
pub struct SystemLookup;

impl Lookup for SystemLookup {
    fn lookup(&self, host: &str) -> BoxFuture<'static, std::io::Result<Vec<IpAddr>>> {
        let host = host.to_string();
        Box::pin(async move {
            Ok(tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .map(|a| a.ip())
                .collect())
        })
    }
}

/// reqwest's resolver: resolves through a [`Lookup`] and hands the connector only permitted
/// addresses, so a name that resolves to an internal address fails to connect.
pub struct GuardedResolver {
    pub policy: Arc<TargetPolicy>,
    pub lookup: Arc<dyn Lookup>,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy.clone();
        let lookup = self.lookup.clone();
        let host = name.as_str().to_string();
        Box::pin(async move {
            let resolved = lookup.lookup(&host).await?;
            let ok = policy.permitted(&host, resolved);
            if ok.is_empty() {
                return Err(Box::new(std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    format!("{host} resolves to no permitted address"),
                ))
                    as Box<dyn std::error::Error + Send + Sync>);
            }
            // Port 0: the connector puts the URL's port in.
            let addrs: reqwest::dns::Addrs =
                Box::new(ok.into_iter().map(|ip| SocketAddr::new(ip, 0)));
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(policy: &TargetPolicy, url: &str) -> Result<(), Refusal> {
        let u = url::Url::parse(url).map_err(|_| Refusal::NoHost)?;
        policy.check_url(&u)
    }

    #[test]
    fn internal_targets_are_refused_in_every_spelling() {
        let p = TargetPolicy::new(&[], false).unwrap();
        use Refusal::*;
        let table: &[(&str, Refusal)] = &[
            ("https://localhost/x", Loopback),
            ("https://LOCALHOST./x", Loopback),
            ("https://app.localhost/x", Loopback),
            ("https://127.0.0.1/x", Loopback),
            ("https://2130706433/x", Loopback),
            ("https://0x7f000001/x", Loopback),
            ("https://127.1/x", Loopback),
            ("https://0177.0.0.1/x", Loopback),
            ("https://127.255.255.254:8443/x", Loopback),
            ("https://user:pw@127.0.0.1/x", Userinfo),
            ("https://user@example.com/x", Userinfo),
            ("https://169.254.169.254/latest/meta-data", Metadata),
            ("https://[::ffff:169.254.169.254]/", Metadata),
            ("https://[fd00:ec2::254]/", Metadata),
            ("https://100.100.100.200/", Metadata),
            ("https://metadata.google.internal/", Metadata),
            ("https://metadata/", Metadata),
            ("https://169.254.1.1/", LinkLocal),
            ("https://10.0.0.1/", Private),
            ("https://172.16.0.1/", Private),
            ("https://172.31.255.255/", Private),
            ("https://192.168.1.1/", Private),
            ("https://100.64.0.1/", Private),
            ("https://0.0.0.0/", Unspecified),
            ("https://0/", Unspecified),
            ("https://[::]/", Unspecified),
            ("https://[::1]/", Loopback),
            ("https://[::ffff:127.0.0.1]/", Loopback),
            ("https://[::ffff:10.1.2.3]/", Private),
            ("https://[::127.0.0.1]/", Reserved),
            ("https://[64:ff9b::a00:1]/", Private),
            ("https://[2002:7f00:1::]/", Loopback),
            ("https://[fd00::1]/", UniqueLocal),
            ("https://[fc00::1]/", UniqueLocal),
            ("https://[fe80::1]/", LinkLocal),
            ("https://[ff02::1]/", Multicast),
            ("https://224.0.0.1/", Multicast),
            ("https://255.255.255.255/", Multicast),
            ("https://240.0.0.1/", Reserved),
            ("https://192.0.2.1/", Reserved),
            ("https://[2001:db8::1]/", Reserved),
            ("https://intranet/", LocalName),
            ("https://printer.local/", LocalName),
            ("https://db.corp.internal/", LocalName),
            ("http://example.com/", Scheme),
            ("ftp://example.com/", Scheme),
        ];
        for (url, want) in table {
            assert_eq!(check(&p, url), Err(*want), "{url}");
        }
        for url in [
            "https://example.com/hook",
            "https://93.184.215.14:8443/hook",
            "https://[2606:4700::1111]/hook",
            "https://172.32.0.1/",
            "https://[2002:5db8:d70e::]/",
        ] {
            assert_eq!(check(&p, url), Ok(()), "{url}");
        }
    }

    #[test]
    fn the_allow_list_opens_hosts_and_networks_and_http_is_a_switch() {
        let p = TargetPolicy::new(
            &["127.0.0.0/8".into(), "Receiver.Test".into(), "::1".into()],
            true,
        )
        .unwrap();
        assert_eq!(check(&p, "http://127.0.0.1:8080/x"), Ok(()));
        assert_eq!(check(&p, "http://2130706433/x"), Ok(()));
        assert_eq!(check(&p, "http://[::1]:9/x"), Ok(()));
        assert_eq!(check(&p, "http://[::ffff:127.0.0.1]/x"), Ok(()));
        assert_eq!(check(&p, "http://receiver.test./x"), Ok(()));
        // Listing one network opens nothing else, and userinfo stays refused.
        assert_eq!(check(&p, "http://10.0.0.1/x"), Err(Refusal::Private));
        assert_eq!(check(&p, "http://localhost/x"), Err(Refusal::Loopback));
        assert_eq!(check(&p, "http://u:p@127.0.0.1/x"), Err(Refusal::Userinfo));
        assert!(TargetPolicy::new(&["10.0.0.0/33".into()], false).is_err());
        assert!(TargetPolicy::new(&["not a host".into()], false).is_err());
    }

    #[test]
    fn resolved_addresses_are_filtered_at_connect_time() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let p = TargetPolicy::new(&["trusted.example".into()], false).unwrap();
        assert_eq!(
            p.permitted(
                "rebind.example",
                vec![ip("127.0.0.1"), ip("93.184.215.14"), ip("::ffff:10.0.0.1")]
            ),
            vec![ip("93.184.215.14")]
        );
        assert!(p
            .permitted("rebind.example", vec![ip("169.254.169.254")])
            .is_empty());
        assert_eq!(
            p.permitted("trusted.example", vec![ip("10.0.0.7")]),
            vec![ip("10.0.0.7")]
        );
        assert!(p
            .permitted("localhost", vec![ip("93.184.215.14")])
            .is_empty());
    }
}
