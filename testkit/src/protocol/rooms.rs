//! Rooms and media for the protocol client: a meeting's room keys without the invite
//! machinery ([`TestRoom`]), open/join/rotate/leave requests, and media datagrams.

use std::time::Duration;

use bytes::Bytes;
use conclave_core::meeting::{Epoch, MeetingId, MeetingKey, RoomAuthKey, RoutingId};
use conclave_core::{DeviceId, UserId};
use conclave_proto::datagram::{DatagramHeader, MediaKind, RoomHandle, Slot};
use conclave_proto::v1::{self, client_frame::Request, response};
use conclave_sdk::transport::TransportError;
use rand_core::OsRng;

use super::TestClient;
use crate::clock::now;

/// A meeting's room keys (the crypto core's derivation; no invites needed here).
pub struct TestRoom {
    /// The room's routing id.
    pub routing: RoutingId,
    /// The current epoch's meeting key.
    pub key: MeetingKey,
}

impl TestRoom {
    /// A fresh meeting at epoch 1.
    pub fn new() -> Self {
        let meeting = MeetingId::generate(
            &UserId::from_username("room-owner").expect("a valid username"),
            &DeviceId::random(&mut OsRng),
            now(),
            2,
            &mut OsRng,
        );
        TestRoom {
            routing: meeting.routing_id(),
            key: MeetingKey::generate(Epoch(1), &mut OsRng),
        }
    }

    /// The current epoch's room key.
    pub fn auth(&self) -> RoomAuthKey {
        self.key.room_auth_key(&self.routing)
    }

    /// Moves to a fresh key at the next epoch; returns the old auth key.
    pub fn rekey(&mut self) -> RoomAuthKey {
        let old = self.auth();
        let next = self
            .key
            .epoch()
            .next()
            .expect("test epochs stay far below u64::MAX");
        self.key = MeetingKey::generate(next, &mut OsRng);
        old
    }
}

impl Default for TestRoom {
    fn default() -> Self {
        Self::new()
    }
}

/// The room handle a member got, as datagram headers carry it.
pub fn handle_of(joined: &v1::RoomJoined) -> RoomHandle {
    RoomHandle(joined.room_handle)
}

/// The slot a member got, as the `u16` datagram headers carry.
pub fn slot_of(joined: &v1::RoomJoined) -> Slot {
    Slot(u16::try_from(joined.slot).expect("slots fit the datagram header"))
}

impl TestClient {
    /// This connection's join proof for `key`'s epoch.
    pub fn join_signature(&self, key: &RoomAuthKey) -> Vec<u8> {
        key.sign_join(self.conn.tls_binding(), &self.challenge)
            .expect("join signature")
            .to_vec()
    }

    async fn room_request(&self, r: Request) -> Result<v1::RoomJoined, TransportError> {
        match self.request(r).await? {
            response::Result::RoomJoined(j) => Ok(j),
            other => panic!("expected RoomJoined, got {other:?}"),
        }
    }

    /// Opens (or joins) a room with `key`; this device alone may rotate it.
    pub async fn open_room(
        &self,
        key: &RoomAuthKey,
        routing: &RoutingId,
    ) -> Result<v1::RoomJoined, TransportError> {
        self.open_room_listing(key, routing, Vec::new()).await
    }

    /// Opens (or joins) a room with `key`, listing the devices that may rotate it.
    pub async fn open_room_listing(
        &self,
        key: &RoomAuthKey,
        routing: &RoutingId,
        leaders: Vec<Vec<u8>>,
    ) -> Result<v1::RoomJoined, TransportError> {
        self.room_request(Request::OpenRoom(v1::OpenRoom {
            routing_id: routing.as_bytes().to_vec(),
            epoch: key.epoch(),
            room_auth_public_key: key.public().to_bytes().to_vec(),
            join_signature: self.join_signature(key),
            leader_device_ids: leaders,
        }))
        .await
    }

    /// Joins an open room with `key`'s proof.
    pub async fn join_room(
        &self,
        key: &RoomAuthKey,
        routing: &RoutingId,
    ) -> Result<v1::RoomJoined, TransportError> {
        self.room_request(Request::JoinRoom(v1::JoinRoom {
            routing_id: routing.as_bytes().to_vec(),
            epoch: key.epoch(),
            join_signature: self.join_signature(key),
        }))
        .await
    }

    /// Rotates the room from `current` to `next`; returns the new epoch.
    pub async fn rotate_room(
        &self,
        current: &RoomAuthKey,
        next: &RoomAuthKey,
        routing: &RoutingId,
    ) -> Result<u64, TransportError> {
        let rotation = current.sign_rotation(next).expect("rotation signature");
        match self
            .request(Request::RotateRoom(v1::RotateRoom {
                routing_id: routing.as_bytes().to_vec(),
                next_epoch: next.epoch(),
                next_room_auth_public_key: next.public().to_bytes().to_vec(),
                rotation_signature: rotation.to_vec(),
                join_signature: self.join_signature(next),
                next_leader_device_ids: Vec::new(),
            }))
            .await?
        {
            response::Result::RoomRotated(r) => Ok(r.epoch),
            other => panic!("expected RoomRotated, got {other:?}"),
        }
    }

    /// Leaves the room.
    pub async fn leave_room(&self, routing: &RoutingId) -> Result<(), TransportError> {
        match self
            .request(Request::LeaveRoom(v1::LeaveRoom {
                routing_id: routing.as_bytes().to_vec(),
            }))
            .await?
        {
            response::Result::RoomLeft(_) => Ok(()),
            other => panic!("expected RoomLeft, got {other:?}"),
        }
    }

    /// Sends a media datagram with `payload` in room `handle`, claiming `slot`.
    pub fn send_media(
        &self,
        handle: RoomHandle,
        slot: Slot,
        kind: MediaKind,
        frame: u32,
        payload: &[u8],
    ) {
        let header = DatagramHeader {
            room_handle: handle,
            sender_slot: slot,
            media_kind: kind,
            keyframe: false,
            frame_number: frame,
            fragment_index: 0,
            fragment_count: 1,
        };
        let mut d = header.encode().expect("a valid header").to_vec();
        d.extend_from_slice(payload);
        self.conn
            .send_datagram(Bytes::from(d))
            .expect("send a datagram");
    }

    /// Receives a datagram within `within`, or `None`.
    pub async fn recv_media(&self, within: Duration) -> Option<(DatagramHeader, Vec<u8>)> {
        let d = tokio::time::timeout(within, self.conn.read_datagram())
            .await
            .ok()?
            .ok()?;
        let (h, p) = DatagramHeader::decode(&d).expect("the server forwards valid headers");
        Some((h, p.to_vec()))
    }
}
