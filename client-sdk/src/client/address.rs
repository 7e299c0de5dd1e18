//! Where the SFU is: a socket address or a `host:port` name, resolved on every connect.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use crate::transport::{ConnectProblem, TransportError};

/// The SFU's address: an IP socket address, or `host:port` with a DNS name that is
/// resolved on every connect (and stands for every address it resolves to).
///
/// Built from a [`SocketAddr`], or from any string (`"sfu.example.com:4433"`,
/// `"192.0.2.7:4433"`, `"[2001:db8::7]:4433"`); a string that is not `host:port` is
/// refused when the client connects, with an error naming it
/// ([`ConnectProblem::InvalidAddress`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ServerAddress {
    /// An IP address and port.
    Socket(SocketAddr),
    /// `host:port`, resolved with the system resolver.
    Name(String),
}

impl ServerAddress {
    /// The host part of a [`ServerAddress::Name`]: the name the server's certificate
    /// is checked against by default.
    #[must_use]
    pub fn host(&self) -> Option<&str> {
        match self {
            ServerAddress::Socket(_) => None,
            ServerAddress::Name(name) => split_host_port(name).map(|(host, _)| host),
        }
    }

    /// Every address this stands for, resolving a name within `within`.
    pub(crate) async fn resolve(
        &self,
        within: Duration,
    ) -> Result<Vec<SocketAddr>, TransportError> {
        let name = match self {
            ServerAddress::Socket(addr) => return Ok(vec![*addr]),
            ServerAddress::Name(name) => name,
        };
        if split_host_port(name).is_none() {
            return Err(ConnectProblem::InvalidAddress {
                address: name.clone(),
            }
            .into());
        }
        let unresolved = |reason: String| ConnectProblem::Unresolved {
            address: name.clone(),
            reason,
        };
        match tokio::time::timeout(within, tokio::net::lookup_host(name.as_str())).await {
            Ok(Ok(addrs)) => {
                let addrs: Vec<SocketAddr> = addrs.collect();
                if addrs.is_empty() {
                    Err(unresolved("the name has no address".into()).into())
                } else {
                    Ok(addrs)
                }
            }
            Ok(Err(e)) => Err(unresolved(e.to_string()).into()),
            Err(_) => {
                Err(unresolved(format!("no answer from the resolver within {within:?}")).into())
            }
        }
    }
}

/// `host` and `port` of `host:port` (`[v6]:port` included), if it has that form.
fn split_host_port(name: &str) -> Option<(&str, u16)> {
    let (host, port) = name.rsplit_once(':')?;
    let port = port.parse().ok()?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    (!host.is_empty() && (!host.contains(':') || name.starts_with('['))).then_some((host, port))
}

impl fmt::Display for ServerAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerAddress::Socket(addr) => addr.fmt(f),
            ServerAddress::Name(name) => f.write_str(name),
        }
    }
}

impl From<SocketAddr> for ServerAddress {
    fn from(addr: SocketAddr) -> Self {
        ServerAddress::Socket(addr)
    }
}

impl From<&str> for ServerAddress {
    fn from(s: &str) -> Self {
        match s.parse::<SocketAddr>() {
            Ok(addr) => ServerAddress::Socket(addr),
            Err(_) => ServerAddress::Name(s.to_string()),
        }
    }
}

impl From<String> for ServerAddress {
    fn from(s: String) -> Self {
        ServerAddress::from(s.as_str())
    }
}

impl From<&String> for ServerAddress {
    fn from(s: &String) -> Self {
        ServerAddress::from(s.as_str())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn strings_become_socket_addresses_or_names() {
        assert_eq!(
            ServerAddress::from("127.0.0.1:4433"),
            ServerAddress::Socket("127.0.0.1:4433".parse().unwrap())
        );
        assert_eq!(
            ServerAddress::from("[::1]:4433"),
            ServerAddress::Socket("[::1]:4433".parse().unwrap())
        );
        let name = ServerAddress::from("sfu.example.com:4433");
        assert_eq!(name.host(), Some("sfu.example.com"));
        assert_eq!(name.to_string(), "sfu.example.com:4433");
    }

    #[test]
    fn only_host_port_has_the_form() {
        assert_eq!(split_host_port("a.example:1"), Some(("a.example", 1)));
        assert_eq!(
            split_host_port("[2001:db8::1]:443"),
            Some(("2001:db8::1", 443))
        );
        for bad in [
            "sfu.example.com",
            ":4433",
            "host:port",
            "host:70000",
            "2001:db8::1",
        ] {
            assert_eq!(split_host_port(bad), None, "{bad}");
        }
    }

    #[tokio::test]
    async fn a_name_without_a_port_is_refused_naming_it() {
        let err = ServerAddress::from("sfu.example.com")
            .resolve(Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("sfu.example.com"), "{err}");
        assert!(matches!(
            err,
            TransportError::Connect(ConnectProblem::InvalidAddress { .. })
        ));
    }

    #[tokio::test]
    async fn an_unknown_name_is_refused_naming_it() {
        let err = ServerAddress::from("no-such-host.invalid:4433")
            .resolve(Duration::from_secs(2))
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("no-such-host.invalid:4433"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn localhost_resolves_with_its_port() {
        let addrs = ServerAddress::from("localhost:4433")
            .resolve(Duration::from_secs(2))
            .await
            .unwrap();
        assert!(
            addrs
                .iter()
                .all(|a| a.port() == 4433 && a.ip().is_loopback())
        );
    }
}
