//! Outbound policy. Deny by default: a call may reach only the origins its adapter declares,
//! plus the origins of URL-valued crmConfig fields the adapter marks as endpoints. Once a
//! request is allowed, `--upstream HOST=URL` may route it elsewhere (tests, demos).

use crate::error::FieldError;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::net::IpAddr;

/// One allowed origin: `scheme://host[:port]`, the host possibly `*.domain` (subdomains only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginRule {
    scheme: String,
    host: HostPattern,
    port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    Exact(String),
    /// `*.planfix.com` is stored as `.planfix.com`.
    Subdomains(String),
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "https" => Some(443),
        "http" => Some(80),
        _ => None,
    }
}

impl OriginRule {
    /// Parses an adapter's declared outbound host. Anything that would allow "everything"
    /// (`*`, `https://*`, `*.com`) is refused, as are paths, queries and credentials.
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = |why: &str| format!("outbound host '{text}' {why}; expected scheme://host[:port]");
        let (scheme, rest) = text.split_once("://").ok_or_else(|| bad("has no scheme"))?;
        let scheme = scheme.to_ascii_lowercase();
        let port_default = default_port(&scheme).ok_or_else(|| bad("must use http or https"))?;
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.is_empty() || authority.contains(['/', '?', '#', '@']) {
            return Err(bad("must be an origin only (no path, query or credentials)"));
        }
        if authority.starts_with('[') {
            return Err(bad("must name a host, not an IPv6 literal"));
        }
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) => (h, p.parse::<u16>().map_err(|_| bad("has an invalid port"))?),
            None => (authority, port_default),
        };
        let host = host.to_ascii_lowercase();
        let pattern = match host.strip_prefix("*.") {
            Some(domain) => {
                // `*.com` would allow a whole top-level domain.
                if domain.is_empty() || !domain.contains('.') || domain.contains('*') {
                    return Err(bad("is a wildcard too broad to allow"));
                }
                HostPattern::Subdomains(format!(".{domain}"))
            }
            None if host.contains('*') => return Err(bad("may use '*' only as a leading '*.' label")),
            None => HostPattern::Exact(host),
        };
        Ok(OriginRule { scheme, host: pattern, port })
    }

    /// The exact origin of a URL (an endpoint field's value).
    pub fn of_url(url: &url::Url) -> Option<Self> {
        let scheme = url.scheme().to_ascii_lowercase();
        let port = url.port().or_else(|| default_port(&scheme))?;
        let host = url.host_str()?.trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
        Some(OriginRule { scheme, host: HostPattern::Exact(host), port })
    }

    pub fn matches(&self, scheme: &str, host: &str, port: u16) -> bool {
        let host = host.to_ascii_lowercase();
        self.scheme == scheme
            && self.port == port
            && match &self.host {
                HostPattern::Exact(h) => *h == host,
                HostPattern::Subdomains(suffix) => host.ends_with(suffix.as_str()) && host.len() > suffix.len(),
            }
    }
}

impl std::fmt::Display for OriginRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let host = match &self.host {
            HostPattern::Exact(h) => h.clone(),
            HostPattern::Subdomains(s) => format!("*{s}"),
        };
        if default_port(&self.scheme) == Some(self.port) {
            write!(f, "{}://{host}", self.scheme)
        } else {
            write!(f, "{}://{host}:{}", self.scheme, self.port)
        }
    }
}

/// An endpoint field's value as a URL that egress can be derived from: http or https, with a
/// host. The one rule for endpoint URLs, at tenant validation and in the policy alike.
pub fn endpoint_url(value: &str) -> Option<url::Url> {
    url::Url::parse(value.trim()).ok().filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
}

/// Every endpoint field a crmConfig sets (null counts as unset) holds an [`endpoint_url`].
pub fn check_endpoint_fields(endpoint_fields: &[String], crm_config: &Map<String, Value>) -> Result<(), FieldError> {
    for field in endpoint_fields {
        if let Some(v) = crm_config.get(field).filter(|v| !v.is_null()) {
            if v.as_str().and_then(endpoint_url).is_none() {
                return Err(FieldError { field: field.clone(), message: format!("crmConfig.{field}: must be an http(s) URL") });
            }
        }
    }
    Ok(())
}

/// The origins one call may reach.
#[derive(Debug, Clone, Default)]
pub struct EgressPolicy {
    rules: Vec<OriginRule>,
    /// The first `declared` rules are the adapter's own; the rest come from the tenant.
    declared: usize,
}

impl EgressPolicy {
    pub fn new(rules: Vec<OriginRule>) -> Self {
        EgressPolicy { declared: rules.len(), rules }
    }

    /// The origins a tenant's calls may reach: its adapter's declared hosts, plus the origin
    /// of each endpoint field of its crmConfig.
    pub fn for_tenant(declared: &[OriginRule], endpoint_fields: &[String], crm_config: &Map<String, Value>) -> Self {
        let mut rules = declared.to_vec();
        for field in endpoint_fields {
            rules.extend(crm_config.get(field).and_then(Value::as_str).and_then(endpoint_url).and_then(|u| OriginRule::of_url(&u)));
        }
        EgressPolicy { rules, declared: declared.len() }
    }

    /// What metrics call an allowed origin: the adapter's declared rule that allowed it (an
    /// admin deployed it), or `endpoint` for a tenant's endpoint field (it names the
    /// customer, and a caller could make it up).
    pub fn metric_label(&self, scheme: &str, host: &str, port: u16) -> String {
        match self.rules[..self.declared].iter().find(|r| r.matches(scheme, host, port)) {
            Some(rule) => rule.to_string(),
            None => "endpoint".to_string(),
        }
    }

    pub fn check(&self, scheme: &str, host: &str, port: u16) -> Result<(), String> {
        if self.rules.iter().any(|r| r.matches(scheme, host, port)) {
            return Ok(());
        }
        let allowed: Vec<String> = self.rules.iter().map(ToString::to_string).collect();
        Err(format!(
            "{scheme}://{host}:{port} is not an allowed outbound origin (allowed: {})",
            if allowed.is_empty() { "none".to_string() } else { allowed.join(", ") }
        ))
    }
}

/// `--upstream HOST=URL` routes: where requests for HOST really go. HOST may be
/// `*.domain` for every subdomain (CRMs like Planfix give each customer one); an exact host
/// wins over a wildcard, a longer wildcard over a shorter one.
#[derive(Debug, Clone, Default)]
pub struct Upstreams {
    routes: HashMap<String, url::Url>,
    /// `(".planfix.com", url)`, longest suffix first.
    wildcards: Vec<(String, url::Url)>,
}

impl Upstreams {
    /// Parses `HOST=URL` (URL: http(s), host, optional port and base path).
    pub fn add(&mut self, spec: &str) -> Result<(), String> {
        let (host, target) = spec
            .split_once('=')
            .ok_or_else(|| format!("--upstream '{spec}': expected HOST=URL, e.g. plando.co.il=http://127.0.0.1:8081"))?;
        let host = host.trim().to_ascii_lowercase();
        let (wildcard, name) = match host.strip_prefix("*.") {
            Some(domain) => (true, domain),
            None => (false, host.as_str()),
        };
        if name.is_empty() || name.contains(['/', ':', '*']) {
            return Err(format!(
                "--upstream '{spec}': HOST must be a bare host name like plando.co.il, or *.domain for its subdomains"
            ));
        }
        let url = url::Url::parse(target.trim()).map_err(|e| format!("--upstream '{spec}': bad URL: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(format!("--upstream '{spec}': URL must be http(s) with a host"));
        }
        if wildcard {
            self.wildcards.push((format!(".{name}"), url));
            self.wildcards.sort_by_key(|(suffix, _)| std::cmp::Reverse(suffix.len()));
        } else {
            self.routes.insert(host, url);
        }
        Ok(())
    }

    pub fn route(&self, host: &str) -> Option<&url::Url> {
        let host = host.to_ascii_lowercase();
        self.routes.get(&host).or_else(|| {
            self.wildcards.iter().find(|(suffix, _)| host.ends_with(suffix.as_str()) && host.len() > suffix.len()).map(|(_, u)| u)
        })
    }
}

/// Whether an address is on the public internet. Requests that are not routed by
/// `--upstream` may only reach public addresses: an endpoint field pointing at
/// 127.0.0.1 or 169.254.169.254 must not turn a tenant's config into a way into the host's
/// network.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_documentation()
                || v4.is_multicast()
                || o[0] == 0
                || (o[0] == 100 && (o[1] & 0xc0) == 64) // 100.64/10, carrier-grade NAT
                || (o[0] == 198 && (o[1] & 0xfe) == 18) // 198.18/15, benchmarking
                || o[0] >= 240)
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            // Forms that carry an IPv4 address inside are judged by that address:
            // IPv4-mapped (::ffff:a.b.c.d), IPv4-compatible (::a.b.c.d, deprecated but still
            // routed by some stacks), NAT64 (64:ff9b::/96) and 6to4 (2002::/16).
            let embedded = |hi: u16, lo: u16| std::net::Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8);
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            if s[..6] == [0; 6] && !v6.is_loopback() && !v6.is_unspecified() {
                return is_public(IpAddr::V4(embedded(s[6], s[7])));
            }
            if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                return is_public(IpAddr::V4(embedded(s[6], s[7])));
            }
            if s[0] == 0x2002 {
                return is_public(IpAddr::V4(embedded(s[1], s[2])));
            }
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local
                || (s[0] & 0xffc0) == 0xfe80 // link local
                || (s[0] & 0xffc0) == 0xfec0 // site local (deprecated)
                || (s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1) // local-use NAT64, 64:ff9b:1::/48
                || (s[0] == 0x100 && s[1..4] == [0, 0, 0]) // discard-only, 100::/64
                || (s[0] == 0x2001 && s[1] == 0) // Teredo: a tunnel to an address we cannot see
                || (s[0] == 0x2001 && s[1] == 0x0db8)) // documentation
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_parse_and_match() {
        let r = OriginRule::parse("https://plando.co.il").unwrap();
        assert!(r.matches("https", "PLANDO.co.il", 443));
        assert!(!r.matches("http", "plando.co.il", 80));
        assert!(!r.matches("https", "plando.co.il", 8443));
        assert!(!r.matches("https", "evil-plando.co.il", 443));
        let w = OriginRule::parse("https://*.planfix.com").unwrap();
        assert!(w.matches("https", "acme.planfix.com", 443));
        assert!(!w.matches("https", "planfix.com", 443));
        assert!(!w.matches("https", "acme.planfix.com.evil.test", 443));
        assert_eq!(OriginRule::parse("http://x.test:8080/").unwrap().to_string(), "http://x.test:8080");
    }

    #[test]
    fn too_broad_or_malformed_rules_are_refused() {
        for bad in ["*", "https://*", "https://*.com", "plando.co.il", "ftp://x.test", "https://x.test/path", "https://u@x.test", "https://a.*.test"] {
            assert!(OriginRule::parse(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn policy_explains_denials() {
        let p = EgressPolicy::new(vec![OriginRule::parse("https://plando.co.il").unwrap()]);
        assert!(p.check("https", "plando.co.il", 443).is_ok());
        let e = p.check("https", "evil.test", 443).unwrap_err();
        assert!(e.contains("evil.test") && e.contains("https://plando.co.il"), "{e}");
    }

    #[test]
    fn endpoint_origins_are_exact() {
        let u = url::Url::parse("https://proxy.leadim.xyz/apiproxy/1/api/leads_get.ashx").unwrap();
        let r = OriginRule::of_url(&u).unwrap();
        assert!(r.matches("https", "proxy.leadim.xyz", 443));
        assert!(!r.matches("https", "other.leadim.xyz", 443));
    }

    #[test]
    fn upstreams_parse() {
        let mut u = Upstreams::default();
        u.add("plando.co.il=http://127.0.0.1:9000").unwrap();
        assert_eq!(u.route("Plando.co.il").unwrap().port(), Some(9000));
        assert!(u.add("plando.co.il").is_err());
        assert!(u.add("https://x=http://127.0.0.1").is_err());
        assert!(u.add("x=ftp://127.0.0.1").is_err());
        assert!(u.add("*.=http://127.0.0.1").is_err());
    }

    #[test]
    fn wildcard_upstreams_route_subdomains_only() {
        let mut u = Upstreams::default();
        u.add("*.planfix.com=http://127.0.0.1:9001").unwrap();
        u.add("*.eu.planfix.com=http://127.0.0.1:9002").unwrap();
        u.add("special.planfix.com=http://127.0.0.1:9003").unwrap();
        let port = |h: &str| u.route(h).and_then(|x| x.port());
        assert_eq!(port("acme.planfix.com"), Some(9001));
        assert_eq!(port("ACME.eu.planfix.com"), Some(9002), "the longer wildcard wins");
        assert_eq!(port("special.planfix.com"), Some(9003), "an exact host wins");
        assert_eq!(port("planfix.com"), None, "subdomains only");
        assert_eq!(port("evilplanfix.com"), None);
    }

    #[test]
    fn private_addresses_are_not_public() {
        let internal = [
            // loopback, in its spellings
            "127.0.0.1", "127.255.255.254", "::1", "::ffff:127.0.0.1", "::127.0.0.1", "64:ff9b::7f00:1", "2002:7f00:1::",
            // unspecified (dials the local host on Linux)
            "0.0.0.0", "0.1.2.3", "::", "::ffff:0.0.0.0",
            // private
            "10.1.2.3", "172.16.0.1", "172.31.255.255", "192.168.1.1", "fd00::1", "fec0::1", "::ffff:10.0.0.1", "::10.0.0.1",
            // link-local, cloud metadata
            "169.254.169.254", "fe80::1", "::ffff:169.254.169.254", "64:ff9b::a9fe:a9fe",
            // carrier-grade NAT
            "100.64.0.1", "100.127.255.255",
            // multicast, broadcast, reserved, benchmarking, documentation
            "224.0.0.251", "239.255.255.250", "ff02::1", "255.255.255.255", "240.0.0.1", "198.18.0.1", "192.0.2.1", "2001:db8::1",
            // tunnels and NAT64 local use
            "2001:0:4136:e378::1", "64:ff9b:1::1", "100::1",
        ];
        for ip in internal {
            assert!(!is_public(ip.parse().unwrap()), "{ip} must not count as public");
        }
        for ip in ["1.1.1.1", "93.184.216.34", "100.128.0.1", "172.32.0.1", "2606:4700::1111", "::ffff:1.1.1.1", "64:ff9b::101:101", "2002:101:101::"] {
            assert!(is_public(ip.parse().unwrap()), "{ip} is public");
        }
    }
}
