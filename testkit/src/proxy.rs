//! A TCP proxy a test can cut: stands between a node and PostgreSQL, so that a test
//! can take the database away from one node while the others keep it.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// Forwards every connection on its loopback address to `target` until cut.
pub struct TcpProxy {
    /// Where to connect instead of the target.
    pub addr: SocketAddr,
    target: SocketAddr,
    cut: Arc<Notify>,
    task: Option<JoinHandle<()>>,
}

impl TcpProxy {
    /// Starts forwarding to `target`.
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port is free");
        let addr = listener
            .local_addr()
            .expect("a bound listener has an address");
        let cut = Arc::new(Notify::new());
        let task = tokio::spawn(serve(listener, target, Arc::clone(&cut)));
        TcpProxy {
            addr,
            target,
            cut,
            task: Some(task),
        }
    }

    /// Closes every forwarded connection and refuses new ones: the far side looks
    /// unreachable.
    pub async fn cut(&mut self) {
        self.cut.notify_waiters();
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

impl TcpProxy {
    /// Forwards again, on the same address, after [`TcpProxy::cut`].
    pub async fn restore(&mut self) {
        if self.task.is_some() {
            return;
        }
        let listener = TcpListener::bind(self.addr)
            .await
            .expect("the proxy's own port is free again");
        self.task = Some(tokio::spawn(serve(
            listener,
            self.target,
            Arc::clone(&self.cut),
        )));
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// Accepts and forwards until cut; the connections are tasks of a set dropped with it.
async fn serve(listener: TcpListener, target: SocketAddr, cut: Arc<Notify>) {
    let mut links = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((mut inbound, _)) = accepted else { continue };
                links.spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
            () = cut.notified() => return,
        }
    }
}
