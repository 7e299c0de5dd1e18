//! Reaching the service: the configured server and [`ClientConfig::more_servers`],
//! tried as a staggered race. The next address starts when the ones before have
//! failed or have not answered within [`STAGGER`]; the first handshake to complete
//! wins and the others are dropped. Each connect starts after the address this
//! client last reached, so a cluster node that just died is tried last, not first.
//! Names (the server's and the others') are resolved on every connect, and a name
//! stands for every address it resolves to (a DNS name with one record per node).
//! The whole connect is bounded by [`ClientConfig::connect_timeout`]; its errors name
//! the addresses tried.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::task::JoinSet;

use crate::client::{ClientConfig, ServerAddress};
use crate::transport::{ConnectProblem, ControlConnection, EventStream, TransportError};

/// How long one attempt has before the next address is tried alongside it.
const STAGGER: Duration = Duration::from_millis(250);
/// Most addresses one connect tries (names can resolve to many).
const MAX_CANDIDATES: usize = 16;
/// How long one name may take to resolve before it is skipped for this connect.
const RESOLVE_WITHIN: Duration = Duration::from_secs(2);

/// Where the last connection went.
#[derive(Debug, Default)]
pub(super) struct Bootstrap {
    last: Option<SocketAddr>,
}

type Attempt = (
    SocketAddr,
    Result<(ControlConnection, EventStream), TransportError>,
);

impl Bootstrap {
    /// The address the last connection reached.
    pub(super) fn last(&self) -> Option<SocketAddr> {
        self.last
    }

    /// Connects to the first candidate to complete a handshake, within
    /// [`ClientConfig::connect_timeout`]. A failure names the addresses tried.
    pub(super) async fn connect(
        &mut self,
        config: &ClientConfig,
    ) -> Result<(ControlConnection, EventStream), TransportError> {
        let mut tried = Tried::default();
        match tokio::time::timeout(config.connect_timeout, self.race(config, &mut tried)).await {
            Ok(Ok(connected)) => Ok(connected),
            // A refused certificate says what is wrong on its own, and must stay
            // recognizable as such (it is not a reason to retry).
            Ok(Err(e @ TransportError::Certificate(_))) => Err(e),
            Ok(Err(e)) if tried.addresses.is_empty() => Err(e),
            Ok(Err(e)) => Err(TransportError::Unreachable {
                addresses: tried.describe(),
                source: Box::new(e),
            }),
            Err(_) => Err(TransportError::ConnectTimedOut {
                addresses: tried.describe_or(&config.server),
                after: config.connect_timeout,
            }),
        }
    }

    async fn race(
        &mut self,
        config: &ClientConfig,
        tried: &mut Tried,
    ) -> Result<(ControlConnection, EventStream), TransportError> {
        let mut order = candidates(config, tried).await?;
        if let Some(at) = self
            .last
            .and_then(|last| order.iter().position(|a| *a == last))
        {
            order.rotate_left(at + 1);
        }
        let mut next = order.into_iter();
        let mut attempts: JoinSet<Attempt> = JoinSet::new();
        let mut failure = None;
        let start = |attempts: &mut JoinSet<Attempt>, addr: SocketAddr| {
            let (name, trust, idle, budget) = (
                config.server_name.clone(),
                config.trust.clone(),
                config.idle_timeout,
                config.event_budget(),
            );
            attempts.spawn(async move {
                let result =
                    ControlConnection::connect_with(addr, &name, &trust, idle, None, budget).await;
                (addr, result)
            });
        };
        loop {
            if attempts.is_empty() {
                match next.next() {
                    Some(addr) => start(&mut attempts, addr),
                    None => {
                        return Err(failure.unwrap_or(TransportError::Connect(
                            ConnectProblem::UnresolvedAddress,
                        )));
                    }
                }
            }
            tokio::select! {
                done = attempts.join_next() => match done {
                    Some(Ok((addr, Ok(connected)))) => {
                        self.last = Some(addr);
                        close_losers(attempts);
                        return Ok(connected);
                    }
                    Some(Ok((addr, Err(e)))) => {
                        tracing::debug!(%addr, error = %e, "server unreachable; trying the next");
                        failure = Some(e);
                        if let Some(addr) = next.next() {
                            start(&mut attempts, addr);
                        }
                    }
                    // An attempt task cannot panic short of a bug in quinn; the
                    // others go on.
                    Some(Err(_)) | None => {}
                },
                () = tokio::time::sleep(STAGGER), if next.len() > 0 => {
                    if let Some(addr) = next.next() {
                        start(&mut attempts, addr);
                    }
                }
            }
        }
    }
}

/// The addresses one connect tried, for its error: each as configured, with what a
/// name resolved to.
#[derive(Debug, Default)]
struct Tried {
    addresses: Vec<String>,
}

impl Tried {
    fn note(&mut self, configured: &ServerAddress, resolved: &[SocketAddr]) {
        self.addresses.push(match configured {
            ServerAddress::Socket(addr) => addr.to_string(),
            ServerAddress::Name(name) => {
                let list: Vec<String> = resolved.iter().map(ToString::to_string).collect();
                format!("{name} ({})", list.join(", "))
            }
        });
    }

    fn describe(&self) -> String {
        self.addresses.join(", ")
    }

    fn describe_or(&self, server: &ServerAddress) -> String {
        if self.addresses.is_empty() {
            server.to_string()
        } else {
            self.describe()
        }
    }
}

/// Stops the attempts still running and closes any that completed meanwhile (a
/// finished connection dropped unclosed would keep its socket and keep-alives until the
/// server gave up on it).
fn close_losers(mut attempts: JoinSet<Attempt>) {
    attempts.abort_all();
    tokio::spawn(async move {
        while let Some(done) = attempts.join_next().await {
            if let Ok((_, Ok((connection, _)))) = done {
                connection.close().await;
            }
        }
    });
}

/// The configured server's addresses, then every address of `more_servers`, without
/// repeats. Fails only if the configured server does not resolve and no other
/// address does either.
async fn candidates(
    config: &ClientConfig,
    tried: &mut Tried,
) -> Result<Vec<SocketAddr>, TransportError> {
    let mut out = Vec::new();
    let add = |out: &mut Vec<SocketAddr>, addr: SocketAddr| {
        if out.len() < MAX_CANDIDATES && !out.contains(&addr) {
            out.push(addr);
        }
    };
    let mut first_failure = None;
    let more = config.more_servers.iter().map(ServerAddress::from);
    for (i, address) in std::iter::once(config.server.clone())
        .chain(more)
        .enumerate()
    {
        if out.len() >= MAX_CANDIDATES {
            break;
        }
        match address.resolve(RESOLVE_WITHIN).await {
            Ok(addrs) => {
                tried.note(&address, &addrs);
                addrs.into_iter().for_each(|addr| add(&mut out, addr));
            }
            Err(e) => {
                tracing::warn!(server = %address, error = %e, "cannot resolve a server");
                if i == 0 {
                    first_failure = Some(e);
                }
            }
        }
    }
    match first_failure {
        Some(e) if out.is_empty() => Err(e),
        _ => Ok(out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::ServerTrust;

    fn config(server: &str, more: &[&str]) -> ClientConfig {
        let mut config = ClientConfig::new(
            server.parse::<SocketAddr>().expect("a socket address"),
            ServerTrust::PinnedSha256([0; 32]),
        );
        config.more_servers = more.iter().map(|s| (*s).to_string()).collect();
        config
    }

    #[tokio::test]
    async fn candidates_are_the_server_then_every_other_address_once() {
        let c = config(
            "127.0.0.1:4433",
            &["127.0.0.2:4433", "127.0.0.1:4433", "localhost:4434"],
        );
        let got = candidates(&c, &mut Tried::default()).await.unwrap();
        assert_eq!(got[0], "127.0.0.1:4433".parse().unwrap());
        assert_eq!(got[1], "127.0.0.2:4433".parse().unwrap());
        assert!(got[2..].iter().all(|a| a.port() == 4434), "{got:?}");
        assert!(got.len() >= 3, "localhost resolves: {got:?}");
    }

    #[tokio::test]
    async fn an_unresolvable_name_is_skipped_and_the_list_is_bounded() {
        let many: Vec<String> = (1..40).map(|i| format!("127.0.0.{i}:4433")).collect();
        let mut more: Vec<&str> = vec!["no-such-host.invalid:4433"];
        more.extend(many.iter().map(String::as_str));
        let got = candidates(&config("127.0.0.1:4433", &more), &mut Tried::default())
            .await
            .unwrap();
        assert_eq!(got.len(), MAX_CANDIDATES);
        assert_eq!(got[0], "127.0.0.1:4433".parse().unwrap());
    }
}
