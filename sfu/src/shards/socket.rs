//! The shard's UDP socket as quinn sees it: tokio's, with the GSO batch capped.
//!
//! quinn gives every connection a transmit buffer that it reserves for a whole batch of
//! packets (one MTU per segment, as many segments as one `sendmsg` may carry: quinn
//! allows 10) before it writes the first, and keeps for the connection's life. Because
//! the path MTU grows after the first reservation, the buffer ends up near
//! `(2 × segments − 1) × MTU`: 27 KiB per connection at 10 segments, most of an idle
//! participant's memory. At [`MAX_GSO_SEGMENTS`] = 4 it is at most about 10 KiB. Four
//! segments still carry a 1 Mbit/s video frame's fragments to one receiver in one
//! `sendmsg`; a larger burst goes in the next. Measured (docs/benchmarks.md, "SFU
//! memory per participant"): the 4 × 8 video run's forwarding efficiency is the same
//! at 4 and 10 segments (0.83, five runs each), lower at 2 (0.75) and at 1 (0.68).

use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, Runtime, UdpPoller};

/// Packets per `sendmsg` at most (the platform's GSO limit if lower).
pub const MAX_GSO_SEGMENTS: usize = 4;

/// A runtime's UDP socket whose GSO batches hold at most `max_segments` packets.
pub(crate) struct CappedSocket {
    inner: Arc<dyn AsyncUdpSocket>,
    max_segments: usize,
}

impl CappedSocket {
    /// Wraps `socket` for `runtime` (registering it with the runtime entered now).
    pub(crate) fn wrap(
        runtime: &dyn Runtime,
        socket: std::net::UdpSocket,
        max_segments: usize,
    ) -> io::Result<Arc<dyn AsyncUdpSocket>> {
        Ok(Arc::new(CappedSocket {
            inner: runtime.wrap_udp_socket(socket)?,
            max_segments: max_segments.max(1),
        }))
    }
}

impl fmt::Debug for CappedSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CappedSocket")
            .field("inner", &self.inner)
            .field("max_segments", &self.max_segments)
            .finish()
    }
}

impl AsyncUdpSocket for CappedSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        Arc::clone(&self.inner).create_io_poller()
    }

    fn try_send(&self, transmit: &Transmit<'_>) -> io::Result<()> {
        self.inner.try_send(transmit)
    }

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        self.inner.poll_recv(cx, bufs, meta)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        self.inner.max_transmit_segments().min(self.max_segments)
    }

    fn max_receive_segments(&self) -> usize {
        self.inner.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        self.inner.may_fragment()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_batch_is_capped_below_the_platform_limit_and_never_zero() {
        let runtime = quinn::TokioRuntime;
        let bind = || std::net::UdpSocket::bind("127.0.0.1:0").expect("loopback binds");
        let platform = runtime
            .wrap_udp_socket(bind())
            .expect("tokio wraps a socket")
            .max_transmit_segments();
        let capped = CappedSocket::wrap(&runtime, bind(), 4).expect("tokio wraps a socket");
        assert_eq!(capped.max_transmit_segments(), platform.min(4));
        let zero = CappedSocket::wrap(&runtime, bind(), 0).expect("tokio wraps a socket");
        assert_eq!(zero.max_transmit_segments(), 1);
    }
}
