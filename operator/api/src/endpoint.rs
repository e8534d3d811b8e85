//! Endpoints written `host:port`: `192.0.2.7:5100`, `[2001:db8::7]:5100`, `dtn1.example.org:5100`.
//!
//! Admission checks the syntax with [`ENDPOINT_PATTERN`]; [`Endpoint::from_str`] accepts
//! exactly the same strings (a property test holds the two together) and additionally
//! checks that a bracketed IPv6 address is a real one.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    str::FromStr,
};

/// Longest endpoint string accepted (a 253-character DNS name, `:` and a 5-digit port).
pub const ENDPOINT_MAX_LENGTH: u32 = 259;

/// Schema pattern (RE2 syntax, as the API server evaluates it) for `host:port`.
pub const ENDPOINT_PATTERN: &str = concat!(
    "^(",
    // IPv4, each octet 0-255 without leading zeros
    r"((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])",
    // bracketed IPv6
    r"|\[[0-9A-Fa-f:.]{2,45}\]",
    // DNS name: labels of letters, digits and inner hyphens; the last label starts with a letter
    r"|([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*[A-Za-z]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?",
    "):",
    // port 1-65535 without leading zeros
    r"(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3})$",
);

/// The host part of an endpoint.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Host {
    /// An IPv4 or IPv6 address.
    Ip(IpAddr),
    /// A DNS name, resolved where the connection is made.
    Dns(String),
}

/// A parsed `host:port`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// Address or name.
    pub host: Host,
    /// TCP port, 1..=65535.
    pub port: u16,
}

/// Why an endpoint string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not host:port ({why}); write e.g. 192.0.2.7:5100, [2001:db8::7]:5100 or dtn1.example.org:5100")]
pub struct EndpointError {
    text: String,
    why: &'static str,
}

impl Endpoint {
    /// An endpoint for a socket address.
    pub fn from_socket_addr(addr: SocketAddr) -> Self {
        Self { host: Host::Ip(addr.ip()), port: addr.port() }
    }

    /// The socket address, when the host is an IP address.
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        match self.host {
            Host::Ip(ip) => Some(SocketAddr::new(ip, self.port)),
            Host::Dns(_) => None,
        }
    }
}

fn valid_dns_name(name: &str) -> bool {
    if name.is_empty() || name.len() > 253 {
        return false;
    }
    let labels: Vec<&str> = name.split('.').collect();
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    labels.iter().all(|l| label_ok(l)) && labels.last().is_some_and(|l| l.as_bytes()[0].is_ascii_alphabetic())
}

fn parse_ipv4_strict(text: &str) -> Option<Ipv4Addr> {
    // Rust's parser already refuses leading zeros ("01.2.3.4"), as the pattern does.
    text.parse().ok()
}

fn parse_port(text: &str) -> Option<u16> {
    if text.is_empty() || text.len() > 5 || text.starts_with('0') || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok().filter(|p| *p != 0)
}

impl FromStr for Endpoint {
    type Err = EndpointError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let err = |why| EndpointError { text: text.to_owned(), why };
        if text.len() > ENDPOINT_MAX_LENGTH as usize {
            return Err(err("too long"));
        }
        let (host, port) = text.rsplit_once(':').ok_or_else(|| err("no port"))?;
        let port = parse_port(port).ok_or_else(|| err("port must be 1-65535"))?;
        let host = if let Some(inner) = host.strip_prefix('[') {
            let inner = inner.strip_suffix(']').ok_or_else(|| err("unclosed ["))?;
            if !(2..=45).contains(&inner.len()) {
                return Err(err("bad IPv6 address"));
            }
            let ip: Ipv6Addr = inner.parse().map_err(|_| err("bad IPv6 address"))?;
            Host::Ip(IpAddr::V6(ip))
        } else if let Some(ip) = parse_ipv4_strict(host) {
            Host::Ip(IpAddr::V4(ip))
        } else if host.contains(':') {
            return Err(err("IPv6 addresses must be in brackets"));
        } else if valid_dns_name(host) {
            Host::Dns(host.to_owned())
        } else {
            return Err(err("bad host name"));
        };
        Ok(Self { host, port })
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]:{}", self.port),
            Host::Ip(IpAddr::V4(ip)) => write!(f, "{ip}:{}", self.port),
            Host::Dns(name) => write!(f, "{name}:{}", self.port),
        }
    }
}

/// Parses a list of endpoints, naming the index of the first bad one.
pub fn parse_list(items: &[String]) -> Result<Vec<Endpoint>, (usize, EndpointError)> {
    items.iter().enumerate().map(|(i, s)| s.parse().map_err(|e| (i, e))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_the_three_forms() {
        for ok in [
            "192.0.2.7:5100",
            "0.0.0.0:1",
            "[2001:db8::7]:5100",
            "[::1]:65535",
            "dtn1.example.org:5100",
            "localhost:80",
            "a-b.c:9",
            "10.0.0.1.nip.io:5000",
        ] {
            let parsed: Endpoint = ok.parse().unwrap_or_else(|e| panic!("{ok}: {e}"));
            assert_eq!(parsed.to_string(), ok);
        }
    }

    #[test]
    fn refuses_what_admission_refuses() {
        for bad in [
            "192.0.2.7",
            "192.0.2.7:0",
            "192.0.2.7:65536",
            "192.0.2.7:05100",
            "256.1.1.1:80",
            "01.2.3.4:80",
            "2001:db8::7:5100",
            "[2001:db8::7:5100",
            "[zz::1]:80",
            "-bad.example:80",
            "bad-.example:80",
            "example.123:80",
            "under_score.example:80",
            ":80",
            "",
        ] {
            assert!(bad.parse::<Endpoint>().is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn list_names_the_bad_index() {
        let items = vec!["192.0.2.1:1".to_owned(), "nope".to_owned()];
        assert_eq!(parse_list(&items).unwrap_err().0, 1);
    }

    fn pattern() -> regex::Regex {
        regex::Regex::new(ENDPOINT_PATTERN).unwrap()
    }

    proptest! {
        /// Whatever admission accepts, the parser accepts (except bracketed strings that are
        /// not real IPv6 addresses, which only the parser can tell), and vice versa.
        #[test]
        fn parser_agrees_with_pattern(text in "(\\[[0-9a-f:.]{0,8}\\]|[a-z0-9.-]{0,12}|[0-9]{1,3}(\\.[0-9]{1,3}){3}):[0-9]{0,6}") {
            let by_pattern = pattern().is_match(&text);
            let by_parser = text.parse::<Endpoint>().is_ok();
            if text.starts_with('[') {
                prop_assert!(by_pattern || !by_parser, "{}", text);
            } else {
                prop_assert_eq!(by_pattern, by_parser, "{}", text);
            }
        }

        /// Socket addresses round-trip through Display and the parser, and match the pattern.
        #[test]
        fn socket_addrs_round_trip(addr in any::<SocketAddr>().prop_filter("port 0", |a| a.port() != 0)) {
            let addr = match addr { SocketAddr::V6(v6) => SocketAddr::new(IpAddr::V6(*v6.ip()), v6.port()), v4 => v4 };
            let ep = Endpoint::from_socket_addr(addr);
            let text = ep.to_string();
            prop_assert!(pattern().is_match(&text), "{}", text);
            prop_assert_eq!(text.parse::<Endpoint>(), Ok(ep));
        }
    }
}
