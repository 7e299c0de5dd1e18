//! What the client's connections carried on the network ([`Client::network_stats`]),
//! from QUIC's own counters: how an app shows connection quality, and how the load test
//! tells a cost per frame from a cost per packet.
//!
//! [`Client::network_stats`]: super::Client::network_stats

use std::sync::Mutex;

use crate::client::shared::lock;

/// Totals over every connection this client opened to the SFU (the primary one, and in
/// a cluster the rooms-only ones), since it connected. Take two readings and subtract
/// for a rate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct NetworkStats {
    /// UDP datagrams received (each holds one or more QUIC packets, each packet one or
    /// more media datagrams and control frames).
    pub udp_datagrams_received: u64,
    /// Bytes of those.
    pub udp_bytes_received: u64,
    /// UDP datagrams sent.
    pub udp_datagrams_sent: u64,
    /// Bytes of those.
    pub udp_bytes_sent: u64,
    /// QUIC packets this client sent that were declared lost.
    pub packets_lost: u64,
}

impl NetworkStats {
    fn add(&mut self, stats: &quinn::ConnectionStats) {
        self.udp_datagrams_received += stats.udp_rx.datagrams;
        self.udp_bytes_received += stats.udp_rx.bytes;
        self.udp_datagrams_sent += stats.udp_tx.datagrams;
        self.udp_bytes_sent += stats.udp_tx.bytes;
        self.packets_lost += stats.path.lost_packets;
    }
}

/// The connections whose counters make up [`NetworkStats`], shared by the driver
/// (which opens and closes them) and every clone of the client (which reads them).
#[derive(Debug, Default)]
pub(crate) struct Traffic {
    inner: Mutex<Tally>,
}

#[derive(Debug, Default)]
struct Tally {
    /// What connections closed so far carried.
    ended: NetworkStats,
    /// The open ones (as many as the driver's links: a few).
    open: Vec<quinn::Connection>,
}

impl Traffic {
    /// `conn` opened.
    pub(crate) fn opened(&self, conn: &quinn::Connection) {
        lock(&self.inner).open.push(conn.clone());
    }

    /// `conn` closed: its counters become part of the totals.
    pub(crate) fn closed(&self, conn: &quinn::Connection) {
        let mut tally = lock(&self.inner);
        if let Some(at) = tally
            .open
            .iter()
            .position(|c| c.stable_id() == conn.stable_id())
        {
            let gone = tally.open.swap_remove(at);
            tally.ended.add(&gone.stats());
        }
    }

    /// The totals now.
    pub(crate) fn stats(&self) -> NetworkStats {
        let tally = lock(&self.inner);
        let mut stats = tally.ended;
        for conn in &tally.open {
            stats.add(&conn.stats());
        }
        stats
    }
}
