//! `host:port` endpoints: parsing (pure) and resolution (I/O).
//!
//! Accepted forms: `1.2.3.4:80`, `[2001:db8::1]:80`, `name.example:80`. A bare
//! IPv6 address without brackets (`::1:80`) is rejected because the port is
//! ambiguous. DNS names follow RFC 1123 (letters, digits, `-`, dots, at most
//! 253 characters, labels of 1 to 63 characters).

use std::fmt;
use std::net::{IpAddr, SocketAddr};

/// The host part of an [`Endpoint`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    /// A literal IPv4 or IPv6 address.
    Ip(IpAddr),
    /// A DNS name, resolved at every connection attempt.
    Dns(String),
}

/// A target to connect to: a host (IP or DNS name) and a port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// Address or DNS name.
    pub host: Host,
    /// TCP port, never 0.
    pub port: u16,
}

/// Why a string is not a valid endpoint; the `Display` text completes
/// `"<value>" is not host:port (...)`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    /// No `:port` suffix.
    #[error("missing :port")]
    MissingPort,
    /// The port is not a number in 1..=65535.
    #[error("port must be a number in 1..=65535")]
    BadPort,
    /// The bracketed part is not an IPv6 address.
    #[error("bracketed host is not an IPv6 address")]
    BadIpv6,
    /// The host is neither an IP address nor a valid DNS name.
    #[error("host is neither an IP address nor a valid DNS name")]
    BadHost,
}

impl Endpoint {
    /// Parses `host:port`; `allow_port_zero` is for bind addresses only.
    pub fn parse(s: &str, allow_port_zero: bool) -> Result<Self, EndpointError> {
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (h, p) = rest.split_once("]:").ok_or(if rest.contains(']') {
                EndpointError::MissingPort
            } else {
                EndpointError::BadIpv6
            })?;
            let ip: std::net::Ipv6Addr = h.parse().map_err(|_| EndpointError::BadIpv6)?;
            (Host::Ip(IpAddr::V6(ip)), p)
        } else {
            let (h, p) = s.rsplit_once(':').ok_or(EndpointError::MissingPort)?;
            if h.contains(':') {
                return Err(EndpointError::BadIpv6);
            }
            let host = match h.parse::<std::net::Ipv4Addr>() {
                Ok(ip) => Host::Ip(IpAddr::V4(ip)),
                Err(_) if is_dns_name(h) => Host::Dns(h.to_ascii_lowercase()),
                Err(_) => return Err(EndpointError::BadHost),
            };
            (host, p)
        };
        if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
            return Err(EndpointError::BadPort);
        }
        let port: u16 = port.parse().map_err(|_| EndpointError::BadPort)?;
        if port == 0 && !allow_port_zero {
            return Err(EndpointError::BadPort);
        }
        Ok(Self { host, port })
    }

    /// The socket address when the host is a literal IP.
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        match &self.host {
            Host::Ip(ip) => Some(SocketAddr::new(*ip, self.port)),
            Host::Dns(_) => None,
        }
    }

    /// Resolves the endpoint (DNS if needed) to one or more socket addresses.
    pub async fn resolve(&self) -> std::io::Result<Vec<SocketAddr>> {
        match &self.host {
            Host::Ip(ip) => Ok(vec![SocketAddr::new(*ip, self.port)]),
            Host::Dns(name) => Ok(tokio::net::lookup_host((name.as_str(), self.port)).await?.collect()),
        }
    }

    /// The name to present as TLS SNI; ignored by the pinning verifier.
    pub fn server_name(&self) -> rustls_pki_types::ServerName<'static> {
        match &self.host {
            Host::Ip(ip) => rustls_pki_types::ServerName::IpAddress((*ip).into()),
            Host::Dns(name) => rustls_pki_types::ServerName::try_from(name.clone())
                .unwrap_or_else(|_| rustls_pki_types::ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into())),
        }
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

/// RFC 1123 host name check (no trailing dot, no underscores).
fn is_dns_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
        // An all-numeric dotted name would be a malformed IPv4 address.
        && !s.bytes().all(|b| b.is_ascii_digit() || b == b'.')
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_the_three_forms() {
        let e = Endpoint::parse("10.0.0.5:7000", false).unwrap();
        assert_eq!(e.socket_addr(), Some("10.0.0.5:7000".parse().unwrap()));
        let e = Endpoint::parse("[2001:db8::1]:5101", false).unwrap();
        assert_eq!(e.to_string(), "[2001:db8::1]:5101");
        let e = Endpoint::parse("Producer.ns.svc:80", false).unwrap();
        assert_eq!(e.host, Host::Dns("producer.ns.svc".into()));
    }

    #[test]
    fn rejects_bad_forms() {
        use EndpointError::*;
        for (s, want) in [
            ("1.2.3.4", MissingPort),
            ("1.2.3.4:", BadPort),
            ("1.2.3.4:0", BadPort),
            ("1.2.3.4:65536", BadPort),
            ("1.2.3.4:+80", BadPort),
            ("::1:80", BadIpv6),
            ("[::1]80", MissingPort),
            ("[zz]:80", BadIpv6),
            ("a_b:80", BadHost),
            ("-a:80", BadHost),
            ("1.2.3.400:80", BadHost),
            (":80", BadHost),
        ] {
            assert_eq!(Endpoint::parse(s, false), Err(want), "{s}");
        }
        assert!(Endpoint::parse("127.0.0.1:0", true).is_ok());
    }

    proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,40}") {
            let _ = Endpoint::parse(&s, true);
        }

        #[test]
        fn socket_addrs_round_trip(addr in any::<SocketAddr>()) {
            prop_assume!(addr.port() != 0);
            // Display of SocketAddrV6 may carry flowinfo/scope: normalise.
            let addr = SocketAddr::new(addr.ip(), addr.port());
            let e = Endpoint::parse(&addr.to_string(), false).unwrap();
            prop_assert_eq!(e.socket_addr(), Some(addr));
            prop_assert_eq!(Endpoint::parse(&e.to_string(), false).unwrap(), e);
        }

        #[test]
        fn dns_names_round_trip(labels in prop::collection::vec("[a-z][a-z0-9-]{0,10}[a-z0-9]", 1..4), port in 1u16..) {
            let s = format!("{}:{port}", labels.join("."));
            let e = Endpoint::parse(&s, false).unwrap();
            prop_assert_eq!(e.to_string(), s);
        }
    }
}
