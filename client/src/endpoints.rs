//! Broker addresses: the access points a user configures and the endpoints a route names.

use std::fmt;
use std::net::IpAddr;

use crate::error::Error;

/// How the addresses of an [`Endpoints`] are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Scheme {
    Ipv4,
    Ipv6,
    DomainName,
}

/// One `host:port`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Address {
    pub(crate) host: String,
    pub(crate) port: u16,
}

/// A set of addresses that serve as one logical endpoint (one broker, or the access point).
///
/// Two `Endpoints` are equal when they list the same addresses in the same order; the client
/// keeps one channel and one telemetry session per distinct value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Endpoints {
    pub(crate) scheme: Scheme,
    pub(crate) addresses: Vec<Address>,
}

impl Endpoints {
    /// Parses an access point: `host:port`, or several separated by `;` or `,`.
    ///
    /// A DNS name must stand alone (the name may resolve to many brokers); IP addresses may be
    /// listed, all of one family. IPv6 addresses are written in brackets: `[::1]:8081`.
    pub(crate) fn parse(spec: &str) -> Result<Endpoints, Error> {
        let parts: Vec<&str> = spec
            .split([';', ','])
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        if parts.is_empty() {
            return Err(Error::Config(format!(
                "access point {spec:?} names no address"
            )));
        }
        let mut addresses = Vec::with_capacity(parts.len());
        let mut schemes = Vec::with_capacity(parts.len());
        for part in parts {
            let (address, scheme) = parse_address(part)?;
            addresses.push(address);
            schemes.push(scheme);
        }
        let scheme = schemes[0];
        if schemes.iter().any(|s| *s != scheme) {
            return Err(Error::Config(format!(
                "access point {spec:?} mixes address kinds; list IPv4 or IPv6 addresses, or one DNS name"
            )));
        }
        if scheme == Scheme::DomainName && addresses.len() > 1 {
            return Err(Error::Config(format!(
                "access point {spec:?} lists several DNS names; give one name (it may resolve to many brokers)"
            )));
        }
        Ok(Endpoints { scheme, addresses })
    }

    /// The URIs to dial, one per address.
    pub(crate) fn uris(&self, tls: bool) -> Vec<String> {
        let scheme = if tls { "https" } else { "http" };
        self.addresses
            .iter()
            .map(|a| match self.scheme {
                Scheme::Ipv6 => format!("{scheme}://[{}]:{}", a.host, a.port),
                _ => format!("{scheme}://{}:{}", a.host, a.port),
            })
            .collect()
    }
}

impl fmt::Display for Endpoints {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, a) in self.addresses.iter().enumerate() {
            if i > 0 {
                f.write_str(";")?;
            }
            match self.scheme {
                Scheme::Ipv6 => write!(f, "[{}]:{}", a.host, a.port)?,
                _ => write!(f, "{}:{}", a.host, a.port)?,
            }
        }
        Ok(())
    }
}

fn parse_address(part: &str) -> Result<(Address, Scheme), Error> {
    let bad = |why: &str| Error::Config(format!("bad address {part:?}: {why}"));
    let (host, port) = if let Some(rest) = part.strip_prefix('[') {
        let (host, tail) = rest
            .split_once(']')
            .ok_or_else(|| bad("missing ']' after an IPv6 address"))?;
        let port = tail
            .strip_prefix(':')
            .ok_or_else(|| bad("expected ':port' after ']'"))?;
        (host, port)
    } else {
        part.rsplit_once(':')
            .ok_or_else(|| bad("expected host:port"))?
    };
    let port: u16 = port
        .parse()
        .map_err(|_| bad("the port is not a number in 1..=65535"))?;
    if port == 0 {
        return Err(bad("port 0"));
    }
    if host.is_empty() {
        return Err(bad("empty host"));
    }
    let scheme = match host.parse::<IpAddr>() {
        Ok(IpAddr::V4(_)) => Scheme::Ipv4,
        Ok(IpAddr::V6(_)) => Scheme::Ipv6,
        Err(_) => {
            let valid = host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'));
            if !valid {
                return Err(bad("the host is neither an IP address nor a DNS name"));
            }
            Scheme::DomainName
        }
    };
    Ok((
        Address {
            host: host.to_owned(),
            port,
        },
        scheme,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ipv4_lists() {
        let e = Endpoints::parse("127.0.0.1:8081; 10.0.0.2:9000").unwrap();
        assert_eq!(e.scheme, Scheme::Ipv4);
        assert_eq!(e.addresses.len(), 2);
        assert_eq!(e.addresses[1].port, 9000);
        assert_eq!(e.to_string(), "127.0.0.1:8081;10.0.0.2:9000");
        assert_eq!(
            e.uris(false),
            vec!["http://127.0.0.1:8081", "http://10.0.0.2:9000"]
        );
    }

    #[test]
    fn parses_dns_and_ipv6() {
        let e = Endpoints::parse("mq.example.com:8081").unwrap();
        assert_eq!(e.scheme, Scheme::DomainName);
        assert_eq!(e.uris(true), vec!["https://mq.example.com:8081"]);
        let e = Endpoints::parse("[::1]:8081").unwrap();
        assert_eq!(e.scheme, Scheme::Ipv6);
        assert_eq!(e.addresses[0].host, "::1");
        assert_eq!(e.uris(false), vec!["http://[::1]:8081"]);
    }

    #[test]
    fn rejects_bad_access_points() {
        for spec in [
            "",
            ";",
            "localhost",
            "host:0",
            "host:99999",
            ":8081",
            "a.com:1;b.com:2",
            "127.0.0.1:1;[::1]:2",
            "bad host:1",
        ] {
            assert!(Endpoints::parse(spec).is_err(), "{spec:?} accepted");
        }
    }
}
