//! A live connection as the other tasks see it: its id, its QUIC connection, its media
//! tables, and its outbound control queue, bounded in frames and in bytes. Sessions,
//! the mailbox and the room plane push events here; the connection's writer task
//! (`conn`) drains the queue onto the control stream.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use conclave_proto::Message;
use conclave_proto::frame::PREFIX_LEN;
use conclave_proto::v1::{self, ServerFrame, server_frame};
use metrics::counter;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError, mpsc};
use tracing::warn;

use super::close_code;
use crate::media::ConnMedia;
use crate::media::pacer::{PacedSink, Pacer};
use crate::rooms::ConnId;
use crate::telemetry;

/// What the control stream writer sends.
#[derive(Debug)]
pub(crate) enum Outbound {
    /// A frame, holding its share of the connection's queued-bytes budget until it is
    /// written (or dropped with the queue). Boxed: the queue's memory is allocated in
    /// blocks of slots, so an unboxed frame would make every connection's idle queue
    /// cost kilobytes.
    Frame(Box<ServerFrame>, OwnedSemaphorePermit),
    /// Everything before this was written: finish the stream.
    Finish,
}

/// A live connection as other tasks see it.
#[derive(Debug)]
pub(crate) struct ConnHandle {
    pub(crate) id: ConnId,
    /// The shard whose runtime serves this connection.
    pub(crate) shard: usize,
    pub(crate) connection: quinn::Connection,
    /// Frames for the control stream writer, at most `max_queued_events`.
    pub(crate) outbound: mpsc::Sender<Outbound>,
    /// Bytes of queued frames: `max_queued_event_bytes` permits, one per byte. A frame
    /// larger than the whole budget takes all of it (it waits for an empty queue).
    queued_bytes: Arc<Semaphore>,
    max_queued_bytes: u32,
    /// Where the media plane sends this connection's datagrams (its shard's pacer).
    pub(crate) sink: Arc<PacedSink<quinn::Connection>>,
    pub(crate) media: ConnMedia<Arc<PacedSink<quinn::Connection>>>,
    /// The device, once authenticated.
    pub(crate) device: std::sync::OnceLock<crate::store::DeviceIdBytes>,
    /// Mailbox delivery to this connection (see `mailbox::deliver_pass`).
    pub(crate) mailbox: MailboxCursor,
}

/// Where mailbox delivery to one connection stands.
#[derive(Debug, Default)]
pub(crate) struct MailboxCursor {
    /// The id of the last entry delivered; held for a whole delivery pass, so passes
    /// never overlap and each starts where the last ended (entries become visible in
    /// id order, so nothing is skipped).
    pub(crate) delivered: tokio::sync::Mutex<u64>,
    /// A pass is requested and has not started reading yet (coalesces signals).
    pub(crate) requested: AtomicBool,
    /// What the client may have outstanding; passes wait for room in it.
    pub(crate) window: super::window::MailboxWindow,
}

/// Why a connection's outbound queue refused a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Overflow {
    Frames,
    Bytes,
}

impl ConnHandle {
    /// A handle on connection `id` whose control frames go to `outbound`, with a
    /// budget of `max_queued_bytes` queued bytes, and whose datagrams go through
    /// `pacer` (its shard's).
    pub(crate) fn new(
        id: ConnId,
        shard: usize,
        connection: quinn::Connection,
        pacer: &Arc<Pacer<quinn::Connection>>,
        outbound: mpsc::Sender<Outbound>,
        max_queued_bytes: u32,
    ) -> Self {
        ConnHandle {
            id,
            shard,
            sink: pacer.sink(connection.clone()),
            connection,
            outbound,
            queued_bytes: Arc::new(Semaphore::new(max_queued_bytes as usize)),
            max_queued_bytes,
            media: ConnMedia::default(),
            device: std::sync::OnceLock::new(),
            mailbox: MailboxCursor::default(),
        }
    }

    /// Permits `frame` takes of the queued-bytes budget: its encoded size, capped at
    /// the whole budget.
    fn cost(&self, frame: &ServerFrame) -> u32 {
        let len = frame.encoded_len().saturating_add(PREFIX_LEN);
        u32::try_from(len)
            .unwrap_or(u32::MAX)
            .min(self.max_queued_bytes)
    }

    /// Reserves `frame`'s bytes, waiting until the writer has made room. `None` once
    /// the connection is gone.
    pub(crate) async fn reserve(&self, frame: &ServerFrame) -> Option<OwnedSemaphorePermit> {
        let cost = self.cost(frame);
        Arc::clone(&self.queued_bytes)
            .acquire_many_owned(cost)
            .await
            .ok()
    }

    /// Queues an event, waiting while the queue is full (in frames or bytes). Returns
    /// whether it was queued (`false` once the connection is gone).
    pub(crate) async fn send_event(&self, event: v1::event::Event) -> bool {
        let frame = ServerFrame {
            kind: Some(server_frame::Kind::Event(v1::Event { event: Some(event) })),
        };
        let Some(permit) = self.reserve(&frame).await else {
            return false;
        };
        self.outbound
            .send(Outbound::Frame(Box::new(frame), permit))
            .await
            .is_ok()
    }

    /// Queues an event without waiting. A queue over its frame or byte bound closes
    /// the connection (`TOO_SLOW`): the client reconnects and fetches its mailbox.
    pub(crate) fn push_event(&self, event: v1::event::Event) -> bool {
        let frame = ServerFrame {
            kind: Some(server_frame::Kind::Event(v1::Event { event: Some(event) })),
        };
        let cost = self.cost(&frame);
        let permit = match Arc::clone(&self.queued_bytes).try_acquire_many_owned(cost) {
            Ok(permit) => permit,
            Err(TryAcquireError::NoPermits) => {
                self.cut_slow_client(Overflow::Bytes);
                return false;
            }
            Err(TryAcquireError::Closed) => return false,
        };
        match self
            .outbound
            .try_send(Outbound::Frame(Box::new(frame), permit))
        {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.cut_slow_client(Overflow::Frames);
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    fn cut_slow_client(&self, overflow: Overflow) {
        let (bound, reason): (&str, &[u8]) = match overflow {
            Overflow::Frames => (
                "frames",
                b"event queue over max_queued_events: reconnect and fetch your mailbox",
            ),
            Overflow::Bytes => (
                "bytes",
                b"event queue over max_queued_event_bytes: reconnect and fetch your mailbox",
            ),
        };
        warn!(
            conn = self.id,
            bound, "control event queue full; disconnecting slow client"
        );
        counter!(telemetry::SLOW_CLIENTS_CUT, "bound" => bound).increment(1);
        self.connection.close(close_code::TOO_SLOW.into(), reason);
    }

    /// Lets the client send full-size frames: called once it has authenticated.
    pub(crate) fn open_receive_window(&self, max_frame_bytes: usize) {
        self.connection
            .set_receive_window(crate::tls::control_receive_window(max_frame_bytes));
    }
}
