//! Packing: a receiver's small datagrams wait up to the pack window, then go to quinn
//! together, so that they share QUIC packets.
//!
//! Without it, each forwarded audio frame (about 150 bytes) leaves in a QUIC packet of
//! its own, because quinn sends what is queued as soon as its connection task runs, and
//! frames from different speakers rarely arrive in the same turn of the runtime. Every
//! packet costs the SFU an encryption and a share of a `sendmsg`, and costs the
//! receiver a wake-up, a `recvmsg`, a decryption and quinn's bookkeeping: the
//! receiver's cost is per packet, not per frame (docs/benchmarks.md, "Client receive
//! path"). A receiver in a 60-person audio call gets about 3,000 frames a second, so a
//! 2 ms window gathers about six of them, which then fill one packet.
//!
//! # Data flow
//! A [`PacedSink`]'s [`DatagramSink::send`] (called by the
//! [`Forwarder`](super::Forwarder) for each receiver) queues a datagram of at most half
//! the path's packet size and, if the receiver had nothing queued, lists the receiver
//! with its shard's [`Pacer`]. The pacer's task
//! ([`Pacer::run`], one per shard) sleeps one window after the first listing and then
//! hands every listed receiver's queue to quinn in order. A larger datagram (a video
//! fragment, which fills a packet alone) goes at once, with whatever small ones were
//! queued before it, so a receiver's datagrams leave in the order they were forwarded.
//!
//! # Bounds
//! A receiver's queue holds at most [`MAX_QUEUED_BYTES`]; reaching it sends the queue
//! at once. Queued bytes count against the receiver's datagram send buffer
//! ([`DatagramSink::send_buffer_space`]), so the congestion drops of the forwarder see
//! them. A window of zero sends everything at once (no packing).

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Notify;

use super::{DatagramSink, SinkError};

/// Bytes queued for one receiver at most before they are sent without waiting.
pub const MAX_QUEUED_BYTES: usize = 8 * 1024;

/// A shard's pack window and the receivers with datagrams waiting in it. `C` is a
/// receiver's connection (`quinn::Connection` in the server).
#[derive(Debug)]
pub struct Pacer<C> {
    window: Duration,
    listed: Mutex<Vec<Arc<PacedSink<C>>>>,
    wake: Notify,
}

impl<C: DatagramSink> Pacer<C> {
    /// A pacer that holds small datagrams for up to `window` (zero: never).
    #[must_use]
    pub fn new(window: Duration) -> Arc<Self> {
        Arc::new(Pacer {
            window,
            listed: Mutex::new(Vec::new()),
            wake: Notify::new(),
        })
    }

    /// The sink of one receiver's connection.
    #[must_use]
    pub fn sink(self: &Arc<Self>, connection: C) -> Arc<PacedSink<C>> {
        Arc::new(PacedSink {
            connection,
            pacer: Arc::downgrade(self),
            window: !self.window.is_zero(),
            queue: Mutex::new(Queue::default()),
        })
    }

    /// Sends the listed receivers' datagrams one window after the first is listed,
    /// forever (abort the task to stop it; what is queued then is dropped, like the
    /// datagrams of a closing connection).
    pub async fn run(self: Arc<Self>) {
        loop {
            self.wake.notified().await;
            tokio::time::sleep(self.window).await;
            self.flush_listed();
        }
    }

    /// Sends every listed receiver's queue now.
    pub fn flush_listed(&self) {
        let listed = std::mem::take(&mut *lock(&self.listed));
        for sink in listed {
            sink.flush();
        }
    }

    fn list(&self, sink: Arc<PacedSink<C>>) {
        let mut listed = lock(&self.listed);
        listed.push(sink);
        if listed.len() == 1 {
            // The task sleeps one window from here; later listings ride along.
            self.wake.notify_one();
        }
    }
}

/// One receiver's connection, with the small datagrams waiting for the pack window.
#[derive(Debug)]
pub struct PacedSink<C> {
    connection: C,
    pacer: Weak<Pacer<C>>,
    window: bool,
    queue: Mutex<Queue>,
}

#[derive(Debug, Default)]
struct Queue {
    datagrams: Vec<Bytes>,
    bytes: usize,
    /// Listed with the pacer (so listed once per window).
    listed: bool,
}

impl<C: DatagramSink> PacedSink<C> {
    /// Hands the queued datagrams to quinn now.
    pub fn flush(&self) {
        let datagrams = {
            let mut queue = lock(&self.queue);
            queue.listed = false;
            queue.bytes = 0;
            std::mem::take(&mut queue.datagrams)
        };
        self.send_all(datagrams);
    }

    fn send_all(&self, datagrams: Vec<Bytes>) {
        for datagram in datagrams {
            // The size was checked when it was queued; a connection that closed since
            // drops what it had, as it would have at once.
            let _ = self.connection.send(datagram);
        }
    }
}

impl<C: DatagramSink> DatagramSink for Arc<PacedSink<C>> {
    fn send_buffer_space(&self) -> usize {
        let queued = lock(&self.queue).bytes;
        self.connection.send_buffer_space().saturating_sub(queued)
    }

    fn max_datagram_size(&self) -> Option<usize> {
        self.connection.max_datagram_size()
    }

    fn send(&self, datagram: Bytes) -> Result<(), SinkError> {
        let max = self.connection.max_datagram_size().ok_or(SinkError::Gone)?;
        if datagram.len() > max {
            return Err(SinkError::TooLarge);
        }
        let small = datagram.len() <= max / 2;
        let mut queue = lock(&self.queue);
        queue.bytes += datagram.len();
        queue.datagrams.push(datagram);
        if !self.window || !small || queue.bytes >= MAX_QUEUED_BYTES {
            queue.bytes = 0;
            let datagrams = std::mem::take(&mut queue.datagrams);
            drop(queue);
            self.send_all(datagrams);
            return Ok(());
        }
        if !queue.listed {
            queue.listed = true;
            drop(queue);
            if let Some(pacer) = self.pacer.upgrade() {
                pacer.list(Arc::clone(self));
            } else {
                // The shard is stopping: nobody would send it later.
                self.flush();
            }
        }
        Ok(())
    }
}

/// Locks `mutex`; a panic elsewhere while it was held leaves a queue of datagrams that
/// is still consistent (each field is updated before anything can panic).
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    /// A receiver's connection that records each datagram it is handed, with the
    /// number of the flush (turn) it came in.
    #[derive(Debug, Default)]
    struct Wire {
        sent: Mutex<Vec<(u32, Bytes)>>,
        turn: Mutex<u32>,
        space: usize,
    }

    thread_local! {
        static GONE: Cell<bool> = const { Cell::new(false) };
    }

    impl DatagramSink for Arc<Wire> {
        fn send_buffer_space(&self) -> usize {
            self.space
        }
        fn send(&self, datagram: Bytes) -> Result<(), SinkError> {
            let turn = *lock(&self.turn);
            lock(&self.sent).push((turn, datagram));
            Ok(())
        }
        fn max_datagram_size(&self) -> Option<usize> {
            (!GONE.with(Cell::get)).then_some(1_200)
        }
    }

    impl Wire {
        fn new() -> Arc<Self> {
            Arc::new(Wire {
                space: 1 << 20,
                ..Wire::default()
            })
        }
        fn next_turn(&self) {
            *lock(&self.turn) += 1;
        }
        /// (turn, first byte) of everything sent so far.
        fn log(&self) -> Vec<(u32, u8)> {
            lock(&self.sent).iter().map(|(t, d)| (*t, d[0])).collect()
        }
    }

    fn datagram(tag: u8, len: usize) -> Bytes {
        Bytes::from(vec![tag; len])
    }

    #[test]
    fn small_datagrams_wait_for_the_window_and_leave_together_in_order() {
        let pacer = Pacer::new(Duration::from_millis(2));
        let wire = Wire::new();
        let sink = pacer.sink(Arc::clone(&wire));
        for tag in 1..=5 {
            sink.send(datagram(tag, 150)).unwrap();
        }
        assert!(
            wire.log().is_empty(),
            "nothing leaves before the window ends"
        );
        // Listed once for the five.
        assert_eq!(lock(&pacer.listed).len(), 1);
        wire.next_turn();
        pacer.flush_listed();
        assert_eq!(wire.log(), vec![(1, 1), (1, 2), (1, 3), (1, 4), (1, 5)]);
        assert!(lock(&pacer.listed).is_empty());
        // The next datagram lists the receiver again.
        sink.send(datagram(6, 150)).unwrap();
        assert_eq!(lock(&pacer.listed).len(), 1);
    }

    #[test]
    fn a_large_datagram_goes_at_once_with_the_small_ones_before_it() {
        let pacer = Pacer::new(Duration::from_millis(2));
        let wire = Wire::new();
        let sink = pacer.sink(Arc::clone(&wire));
        sink.send(datagram(1, 150)).unwrap();
        sink.send(datagram(2, 150)).unwrap();
        sink.send(datagram(3, 1_100)).unwrap(); // a video fragment: over half of 1,200
        assert_eq!(wire.log(), vec![(0, 1), (0, 2), (0, 3)]);
        // The receiver stays listed; the flush at the window's end finds nothing.
        wire.next_turn();
        pacer.flush_listed();
        assert_eq!(wire.log().len(), 3);
    }

    #[test]
    fn a_full_queue_is_sent_without_waiting() {
        let pacer = Pacer::new(Duration::from_millis(2));
        let wire = Wire::new();
        let sink = pacer.sink(Arc::clone(&wire));
        let per = 512;
        let fit = MAX_QUEUED_BYTES / per;
        for _ in 0..fit - 1 {
            sink.send(datagram(1, per)).unwrap();
        }
        assert!(wire.log().is_empty());
        sink.send(datagram(2, per)).unwrap();
        assert_eq!(wire.log().len(), fit, "reaching the bound sends the queue");
    }

    #[test]
    fn queued_bytes_count_against_the_receivers_send_buffer() {
        let pacer = Pacer::new(Duration::from_millis(2));
        let wire = Wire::new();
        let sink = pacer.sink(Arc::clone(&wire));
        sink.send(datagram(1, 300)).unwrap();
        sink.send(datagram(2, 200)).unwrap();
        assert_eq!(sink.send_buffer_space(), (1 << 20) - 500);
        pacer.flush_listed();
        assert_eq!(sink.send_buffer_space(), 1 << 20);
    }

    #[test]
    fn a_zero_window_sends_every_datagram_at_once() {
        let pacer = Pacer::new(Duration::ZERO);
        let wire = Wire::new();
        let sink = pacer.sink(Arc::clone(&wire));
        sink.send(datagram(1, 150)).unwrap();
        sink.send(datagram(2, 150)).unwrap();
        assert_eq!(wire.log(), vec![(0, 1), (0, 2)]);
        assert!(lock(&pacer.listed).is_empty());
    }

    #[test]
    fn oversized_datagrams_and_gone_receivers_are_refused_not_queued() {
        let pacer = Pacer::new(Duration::from_millis(2));
        let wire = Wire::new();
        let sink = pacer.sink(Arc::clone(&wire));
        assert_eq!(sink.send(datagram(1, 1_201)), Err(SinkError::TooLarge));
        GONE.with(|g| g.set(true));
        assert_eq!(sink.send(datagram(2, 100)), Err(SinkError::Gone));
        GONE.with(|g| g.set(false));
        assert_eq!(sink.send_buffer_space(), 1 << 20);
        assert!(lock(&pacer.listed).is_empty());
    }

    #[test]
    fn without_its_pacer_a_sink_sends_rather_than_holds() {
        let pacer = Pacer::new(Duration::from_millis(2));
        let wire = Wire::new();
        let sink = pacer.sink(Arc::clone(&wire));
        drop(pacer);
        sink.send(datagram(1, 150)).unwrap();
        assert_eq!(wire.log(), vec![(0, 1)]);
    }

    #[tokio::test(start_paused = true)]
    async fn the_task_sends_one_window_after_the_first_listing() {
        let window = Duration::from_millis(2);
        let pacer = Pacer::new(window);
        let task = tokio::spawn(Arc::clone(&pacer).run());
        let wire = Wire::new();
        let sink = pacer.sink(Arc::clone(&wire));
        let start = tokio::time::Instant::now();
        sink.send(datagram(1, 150)).unwrap();
        tokio::time::sleep(window / 2).await;
        sink.send(datagram(2, 150)).unwrap();
        assert!(wire.log().is_empty());
        // Virtual time: the task's sleep ends exactly one window after the listing.
        while wire.log().is_empty() {
            tokio::time::sleep(Duration::from_micros(100)).await;
        }
        let waited = start.elapsed();
        assert!(waited >= window && waited < 2 * window, "{waited:?}");
        assert_eq!(wire.log(), vec![(0, 1), (0, 2)]);
        task.abort();
    }
}
