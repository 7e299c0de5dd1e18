//! Reaching the service: the configured server and [`ClientConfig::more_servers`],
//! tried as a staggered race. The next address starts when the ones before have
//! failed or have not answered within [`STAGGER`]; the first handshake to complete
//! wins and the others are dropped. Each connect starts after the address this
//! client last reached, so a cluster node that just died is tried last, not first.
//! Names are resolved on every connect, and a name stands for every address it
//! resolves to (a DNS name with one record per node).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::task::JoinSet;

use crate::client::ClientConfig;
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
    /// Connects to the first candidate to complete a handshake.
    pub(super) async fn connect(
        &mut self,
        config: &ClientConfig,
    ) -> Result<(ControlConnection, EventStream), TransportError> {
        let mut order = candidates(config).await;
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
            let (name, trust, idle) = (
                config.server_name.clone(),
                config.trust.clone(),
                config.idle_timeout,
            );
            attempts.spawn(async move {
                let result =
                    ControlConnection::connect_with_idle_timeout(addr, &name, &trust, idle).await;
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

/// The configured server, then every address of `more_servers`, without repeats.
async fn candidates(config: &ClientConfig) -> Vec<SocketAddr> {
    let mut out = vec![config.server];
    let add = |out: &mut Vec<SocketAddr>, addr: SocketAddr| {
        if out.len() < MAX_CANDIDATES && !out.contains(&addr) {
            out.push(addr);
        }
    };
    for name in &config.more_servers {
        if out.len() >= MAX_CANDIDATES {
            break;
        }
        match name.parse::<SocketAddr>() {
            Ok(addr) => add(&mut out, addr),
            Err(_) => {
                match tokio::time::timeout(RESOLVE_WITHIN, tokio::net::lookup_host(name.as_str()))
                    .await
                {
                    Ok(Ok(addrs)) => addrs.for_each(|addr| add(&mut out, addr)),
                    Ok(Err(e)) => {
                        tracing::warn!(server = %name, error = %e, "cannot resolve a server")
                    }
                    Err(_) => tracing::warn!(server = %name, "resolving a server timed out"),
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::ServerTrust;

    fn config(server: &str, more: &[&str]) -> ClientConfig {
        let mut config = ClientConfig::new(
            server.parse().expect("a socket address"),
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
        let got = candidates(&c).await;
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
        let got = candidates(&config("127.0.0.1:4433", &more)).await;
        assert_eq!(got.len(), MAX_CANDIDATES);
        assert_eq!(got[0], "127.0.0.1:4433".parse().unwrap());
    }
}
