//! How a packet finds its shard: by the first byte of its destination connection ID.
//!
//! Every connection ID a shard issues starts with a byte `b` where `b % shards` is the
//! shard's index (`ShardCids`); the kernel program of `shards::bpf` computes the same
//! from each datagram, so a connection's packets always reach the socket of the shard
//! that holds it. A client's first packets carry a destination connection ID the client
//! chose: random ones land on a random shard, and a client sent to another shard by a
//! redirect starts its ID with the byte the redirect named ([`steering_byte`]).
//!
//! Pure functions and a quinn generator; no sockets here.

use std::time::Duration;

use rand_core::{OsRng, RngCore};

/// Most shards a node runs (one per core; the steering byte has 256 values, and each
/// shard keeps at least two of them so that its IDs do not all start alike).
pub const MAX_SHARDS: usize = 128;

/// Length of the connection IDs the server issues (quinn's default length).
pub(crate) const CID_LEN: usize = 8;

/// The shard that receives a packet whose destination connection ID starts with
/// `first`, among `shards` (at least 1).
#[must_use]
pub fn shard_of_byte(first: u8, shards: usize) -> usize {
    usize::from(first) % shards.max(1)
}

/// A first byte for a connection ID that [`shard_of_byte`] maps to `shard`, picked from
/// all such bytes by `random`. `shard` must be below `shards` ≤ [`MAX_SHARDS`].
#[must_use]
pub fn steering_byte(random: u8, shard: usize, shards: usize) -> u8 {
    let shards = shards.clamp(1, MAX_SHARDS);
    let shard = shard % shards;
    // The bytes of this shard are shard, shard + shards, ...: `groups` of them fit in
    // 0..=255 for every shard.
    let groups = 256 / shards;
    let k = usize::from(random) % groups;
    u8::try_from(k * shards + shard).unwrap_or(0)
}

/// The shard that serves the room with routing id `routing_id`, among `shards`.
/// Routing ids are hashes, so rooms spread evenly.
#[must_use]
pub fn shard_of_room(routing_id: &[u8; 32], shards: usize) -> usize {
    let [a, b, ..] = *routing_id;
    usize::from(u16::from_be_bytes([a, b])) % shards.max(1)
}

/// Issues the connection IDs of one shard: random, with a first byte that steers to it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ShardCids {
    shard: usize,
    shards: usize,
}

impl ShardCids {
    pub(crate) fn new(shard: usize, shards: usize) -> Self {
        ShardCids { shard, shards }
    }
}

impl quinn::ConnectionIdGenerator for ShardCids {
    fn generate_cid(&mut self) -> quinn::ConnectionId {
        let mut bytes = [0u8; CID_LEN];
        OsRng.fill_bytes(&mut bytes);
        let [first, ..] = &mut bytes;
        *first = steering_byte(*first, self.shard, self.shards);
        quinn::ConnectionId::new(&bytes)
    }

    fn cid_len(&self) -> usize {
        CID_LEN
    }

    fn cid_lifetime(&self) -> Option<Duration> {
        None
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use quinn::ConnectionIdGenerator as _;

    use super::*;

    #[test]
    fn every_steering_byte_lands_on_its_shard_for_every_shard_count() {
        for shards in 1..=MAX_SHARDS {
            for shard in 0..shards {
                for random in 0..=255u8 {
                    let b = steering_byte(random, shard, shards);
                    assert_eq!(shard_of_byte(b, shards), shard, "{shards} shards");
                }
            }
        }
    }

    #[test]
    fn steering_bytes_vary_within_a_shard() {
        let seen: std::collections::HashSet<u8> =
            (0..=255u8).map(|r| steering_byte(r, 1, 2)).collect();
        assert_eq!(seen.len(), 128);
    }

    #[test]
    fn a_shard_issues_ids_that_steer_to_it() {
        for shards in [1, 2, 3, 16] {
            for shard in 0..shards {
                let mut cids = ShardCids::new(shard, shards);
                for _ in 0..64 {
                    let cid = cids.generate_cid();
                    assert_eq!(cid.len(), CID_LEN);
                    assert_eq!(shard_of_byte(cid[0], shards), shard);
                }
            }
        }
    }

    #[test]
    fn rooms_spread_over_shards() {
        let mut counts = [0usize; 4];
        for i in 0..4096u32 {
            let id: [u8; 32] = sha2::Digest::finalize(sha2::Digest::chain_update(
                <sha2::Sha256 as sha2::Digest>::new(),
                i.to_be_bytes(),
            ))
            .into();
            counts[shard_of_room(&id, 4)] += 1;
        }
        assert!(counts.iter().all(|&c| c > 800), "{counts:?}");
    }
}
