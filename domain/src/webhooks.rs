//! Outbound webhooks: which targets a subscription may name, which event types it selects, and
//! how long a failed delivery waits before its next attempt.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use crate::{DomainError, FieldError};

/// An IP network in CIDR notation (`127.0.0.0/8`, `::1/128`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    address: IpAddr,
    prefix: u8,
}

impl Network {
    /// Parses `address/prefix`, or a bare address (a network of one).
    pub fn parse(text: &str) -> Option<Network> {
        let text = text.trim();
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let address: IpAddr = address.parse().ok()?;
        let longest = if address.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(prefix) => prefix.parse::<u8>().ok().filter(|p| *p <= longest)?,
            None => longest,
        };
        Some(Network { address, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.address, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// Parses a comma-separated list of networks; the first bad entry is the error.
pub fn parse_networks(text: &str) -> Result<Vec<Network>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .map(|entry| Network::parse(entry).ok_or_else(|| format!("{entry} is not a network")))
        .collect()
}

/// Why deliveries to `ip` are refused unless configured otherwise; `None` for public addresses.
///
/// Refused: loopback, link-local (where cloud metadata services answer), private and
/// shared-address ranges, unspecified, multicast and broadcast addresses.
pub fn refused_range(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => refused_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => refused_v4(v4),
            None => refused_v6(v6),
        },
    }
}

fn refused_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = ip.octets();
    if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_link_local() {
        Some("link-local (cloud metadata)")
    } else if ip.is_private() || (a == 100 && (64..128).contains(&b)) {
        Some("private")
    } else if ip.is_unspecified() || a == 0 {
        Some("unspecified")
    } else if ip.is_multicast() || ip.is_broadcast() || a >= 240 {
        Some("multicast or reserved")
    } else {
        None
    }
}

fn refused_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let first = ip.segments()[0];
    if ip.is_loopback() {
        Some("loopback")
    } else if first & 0xffc0 == 0xfe80 {
        Some("link-local (cloud metadata)")
    } else if first & 0xfe00 == 0xfc00 {
        Some("private")
    } else if ip.is_unspecified() {
        Some("unspecified")
    } else if ip.is_multicast() {
        Some("multicast")
    } else {
        None
    }
}

/// Whether deliveries may go to `ip`: a public address, or one inside an allowed network.
pub fn address_allowed(ip: IpAddr, allowed: &[Network]) -> Result<(), &'static str> {
    match refused_range(ip) {
        Some(range) if !allowed.iter().any(|net| net.contains(ip)) => Err(range),
        _ => Ok(()),
    }
}

/// A subscription's target, checked: `http` or `https`, a host, no credentials in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub url: String,
    /// The host as written (an IP literal without brackets, or a name).
    pub host: String,
}

/// The target URLs every deployment accepts, for the contract: http or https, a host name
/// whose last label is 2 to 8 letters (so neither an IP literal nor `localhost`), an optional
/// port and a path of RFC 3986 characters (no escapes or fragment). `Target::parse` accepts more: IP literals and loopback names
/// in the networks `ITSM_WEBHOOK_ALLOWED_NETWORKS` opens.
pub const PORTABLE_URL_PATTERN: &str =
    "^[Hh][Tt][Tt][Pp][Ss]?://(?:[A-Za-z0-9-]{1,63}\\.){1,8}[A-Za-z]{2,8}(?::[1-9][0-9]{0,3})?(?:/[A-Za-z0-9._~!$&'()*+,;=:@/?-]{0,1000})?$";

impl Target {
    /// Checks `url`; an IP literal in a refused range is refused here, a name when it resolves
    /// (at delivery).
    pub fn parse(url: &str, allowed: &[Network]) -> Result<Target, DomainError> {
        let invalid = |message: &str| DomainError::invalid("url", message);
        let url = url.trim();
        if url.len() > 2000 {
            return Err(invalid("must be at most 2000 characters"));
        }
        let lower = url.to_ascii_lowercase();
        let rest = if lower.starts_with("https://") {
            &url[8..]
        } else if lower.starts_with("http://") {
            &url[7..]
        } else {
            return Err(invalid("must be an http or https URL"));
        };
        if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid("must not contain spaces"));
        }
        // RFC 3986: its characters only, brackets only around an IPv6 host, `%` only as an
        // escape.
        let uri_char = |c: char| c.is_ascii_alphanumeric() || "-._~:/?#[]@!$&'()*+,;=%".contains(c);
        let bytes = url.as_bytes();
        let bad_escape = bytes.iter().enumerate().any(|(i, b)| {
            *b == b'%'
                && !(bytes.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                    && bytes.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
        });
        let after_host = rest.find(['/', '?', '#']).map_or("", |at| &rest[at..]);
        if !url.chars().all(uri_char) || bad_escape || after_host.contains(['[', ']']) {
            return Err(invalid("must be a URL of RFC 3986 characters"));
        }
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        if authority.contains('@') {
            return Err(invalid("must not contain credentials"));
        }
        let host = if let Some(bracketed) = authority.strip_prefix('[') {
            let (host, port) = bracketed
                .split_once(']')
                .ok_or_else(|| invalid("has an unterminated IPv6 address"))?;
            check_port(port)?;
            host.parse::<Ipv6Addr>()
                .map_err(|_| invalid("has an invalid IPv6 address"))?;
            host.to_owned()
        } else {
            let (host, port) = match authority.split_once(':') {
                Some((host, port)) => (host, format!(":{port}")),
                None => (authority, String::new()),
            };
            check_port(&port)?;
            host.to_ascii_lowercase()
        };
        if host.is_empty() {
            return Err(invalid("must name a host"));
        }
        if let Ok(ip) = host.parse::<IpAddr>() {
            address_allowed(ip, allowed).map_err(|range| {
                DomainError::invalid(
                    "url",
                    format!("points at a {range} address, which is refused"),
                )
            })?;
        } else if !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        {
            return Err(invalid("has an invalid host name"));
        } else if host == "localhost" || host.ends_with(".localhost") {
            let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
            address_allowed(loopback, allowed)
                .map_err(|_| invalid("points at a loopback address, which is refused"))?;
        }
        Ok(Target {
            url: url.to_owned(),
            host,
        })
    }
}

fn check_port(port: &str) -> Result<(), DomainError> {
    match port.strip_prefix(':') {
        None if port.is_empty() => Ok(()),
        Some(digits) if digits.parse::<u16>().is_ok_and(|p| p > 0) => Ok(()),
        _ => Err(DomainError::invalid("url", "has an invalid port")),
    }
}

/// An event type filter: `incident.created` exactly, `incident.*` for a family, `*` for all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventTypeFilter {
    Exact(String),
    Prefix(String),
}

/// What `EventTypeFilter::parse` accepts, for the contract: `*`, a family (`incident.*`) or
/// an exact type (`incident.created`), 100 characters at most before the `*`.
pub const EVENT_TYPE_FILTER_PATTERN: &str =
    "^(?:[*]|[a-z0-9_.]{1,99}[.][*]|[a-z0-9_.]{0,99}[a-z0-9_])$";

impl EventTypeFilter {
    pub fn parse(text: &str) -> Option<EventTypeFilter> {
        let name_ok = |name: &str| {
            name.len() <= 100
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'.')
        };
        match text.strip_suffix('*') {
            Some("") => Some(EventTypeFilter::Prefix(String::new())),
            Some(prefix) if prefix.ends_with('.') && name_ok(prefix) && prefix.len() > 1 => {
                Some(EventTypeFilter::Prefix(prefix.to_owned()))
            }
            None if !text.is_empty() && name_ok(text) && !text.ends_with('.') => {
                Some(EventTypeFilter::Exact(text.to_owned()))
            }
            _ => None,
        }
    }

    pub fn matches(&self, event_type: &str) -> bool {
        match self {
            EventTypeFilter::Exact(name) => name == event_type,
            EventTypeFilter::Prefix(prefix) => event_type.starts_with(prefix.as_str()),
        }
    }

    pub fn as_text(&self) -> String {
        match self {
            EventTypeFilter::Exact(name) => name.clone(),
            EventTypeFilter::Prefix(prefix) => format!("{prefix}*"),
        }
    }
}

/// A subscription's filters: one to 50, each valid.
pub fn parse_event_types(values: &[String]) -> Result<Vec<EventTypeFilter>, DomainError> {
    if values.is_empty() || values.len() > 50 {
        return Err(DomainError::invalid(
            "event_types",
            "must list 1 to 50 event types (incident.created), families (incident.*) or *",
        ));
    }
    let mut errors = Vec::new();
    let mut filters = Vec::new();
    for (i, value) in values.iter().enumerate() {
        match EventTypeFilter::parse(value.trim()) {
            Some(filter) => filters.push(filter),
            None => errors.push(FieldError::new(
                format!("event_types[{i}]"),
                "must be an event type (incident.created), a family (incident.*) or *",
            )),
        }
    }
    if errors.is_empty() {
        Ok(filters)
    } else {
        Err(DomainError::Invalid(errors))
    }
}

/// How failed deliveries are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The wait after the first failed attempt; doubled after each further one.
    pub base: Duration,
    /// The longest wait.
    pub max: Duration,
    /// Attempts in all; after the last one fails the delivery is dead-lettered.
    pub max_attempts: u32,
}

impl RetryPolicy {
    /// The wait before attempt `failed + 1` after `failed` failed attempts, or `None` when no
    /// attempt is left. `jitter` in `[0, 1)` spreads the wait over its upper half, so that
    /// deliveries failing together do not retry together.
    pub fn next_delay(&self, failed: u32, jitter: f64) -> Option<Duration> {
        if failed >= self.max_attempts {
            return None;
        }
        let doubling = 2u32.saturating_pow(failed.saturating_sub(1).min(30));
        let full = self.base.saturating_mul(doubling).min(self.max);
        let jitter = jitter.clamp(0.0, 1.0);
        Some(full.mul_f64(0.5 + jitter / 2.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(text: &str) -> Vec<Network> {
        parse_networks(text).unwrap()
    }

    #[test]
    fn networks_contain_their_addresses_only() {
        let net = Network::parse("10.1.0.0/16").unwrap();
        assert!(net.contains("10.1.200.3".parse().unwrap()));
        assert!(!net.contains("10.2.0.1".parse().unwrap()));
        assert!(!net.contains("::1".parse().unwrap()));
        assert!(Network::parse("::1")
            .unwrap()
            .contains("::1".parse().unwrap()));
        assert!(Network::parse("0.0.0.0/0")
            .unwrap()
            .contains("8.8.8.8".parse().unwrap()));
        assert!(Network::parse("10.0.0.0/33").is_none());
        assert!(parse_networks("127.0.0.0/8, nonsense").is_err());
    }

    #[test]
    fn metadata_link_local_private_and_loopback_ranges_are_refused() {
        for ip in [
            "169.254.169.254",
            "127.0.0.1",
            "10.0.0.1",
            "192.168.1.1",
            "172.16.0.1",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "fd00:ec2::254",
            "::ffff:169.254.169.254",
        ] {
            assert!(
                refused_range(ip.parse().unwrap()).is_some(),
                "{ip} should be refused"
            );
        }
        for ip in ["8.8.8.8", "2a00:1450::1", "172.32.0.1"] {
            assert!(refused_range(ip.parse().unwrap()).is_none(), "{ip}");
        }
        let allowed = nets("127.0.0.0/8,::1/128");
        assert!(address_allowed("127.0.0.1".parse().unwrap(), &allowed).is_ok());
        assert!(address_allowed("169.254.169.254".parse().unwrap(), &allowed).is_err());
    }

    #[test]
    fn targets_are_http_urls_with_a_permitted_host() {
        assert!(Target::parse("https://hooks.example.com/itsm?x=1", &[]).is_ok());
        let target = Target::parse("HTTP://Example.com:8080/x", &[]).unwrap();
        assert_eq!(target.host, "example.com");
        for bad in [
            "ftp://example.com/",
            "example.com",
            "http://",
            "http://user:pw@example.com/",
            "http://169.254.169.254/latest/meta-data",
            "http://[fe80::1]/",
            "http://127.0.0.1:8080/",
            "http://localhost/",
            "http://example.com:99999/",
            "http://exa mple.com/",
            "http://[::1/",
        ] {
            assert!(Target::parse(bad, &[]).is_err(), "{bad} should be refused");
        }
        let loopback = nets("127.0.0.0/8,::1");
        assert!(Target::parse("http://127.0.0.1:8080/hook", &loopback).is_ok());
        assert!(Target::parse("http://[::1]:8080/hook", &loopback).is_ok());
        assert!(Target::parse("http://localhost:8080/hook", &loopback).is_ok());
        assert!(Target::parse("http://169.254.169.254/", &loopback).is_err());
    }

    #[test]
    fn event_type_filters_are_exact_families_or_everything() {
        let filters = parse_event_types(&["incident.*".into(), "problem.created".into()]).unwrap();
        assert!(filters[0].matches("incident.updated"));
        assert!(!filters[0].matches("incidents.updated"));
        assert!(filters[1].matches("problem.created"));
        assert!(!filters[1].matches("problem.created2"));
        assert!(EventTypeFilter::parse("*")
            .unwrap()
            .matches("anything.at_all"));
        assert_eq!(filters[0].as_text(), "incident.*");
        assert!(parse_event_types(&[]).is_err());
        for bad in ["in*", "Incident.created", "incident.", ".*", "", "a b"] {
            assert!(parse_event_types(&[bad.into()]).is_err(), "{bad}");
        }
    }

    #[test]
    fn retries_back_off_exponentially_with_jitter_until_the_last_attempt() {
        let policy = RetryPolicy {
            base: Duration::from_secs(10),
            max: Duration::from_secs(60),
            max_attempts: 5,
        };
        assert_eq!(policy.next_delay(1, 0.0), Some(Duration::from_secs(5)));
        assert_eq!(policy.next_delay(1, 1.0), Some(Duration::from_secs(10)));
        assert_eq!(policy.next_delay(2, 1.0), Some(Duration::from_secs(20)));
        assert_eq!(policy.next_delay(3, 1.0), Some(Duration::from_secs(40)));
        assert_eq!(policy.next_delay(4, 1.0), Some(Duration::from_secs(60)));
        assert_eq!(policy.next_delay(5, 0.5), None);
    }
}
