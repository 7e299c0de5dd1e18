//! The control channel: connection constants and framing of control messages.
//!
//! Each direction of the control stream is a sequence of frames:
//!
//! ```text
//! u32be length || protobuf message (ClientFrame or ServerFrame) of that length
//! ```
//!
//! A reader first decodes the 4-byte prefix with [`frame_len`], which refuses lengths
//! above the reader's limit *before* anything is allocated, then reads exactly that many
//! bytes and decodes them with [`decode_client`] or [`decode_server`]. Writers use
//! [`encode`], or [`encode_server_chunks`] to write a delivered container without
//! copying it. Nothing here does I/O.

use prost::Message;
use prost::bytes::Bytes;
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};
use thiserror::Error;

use crate::v1::{ClientFrame, Event, ServerFrame, event, server_frame};

/// ALPN protocol id of every Conclave QUIC connection.
pub const ALPN: &[u8] = b"conclave/1";

/// Label of the TLS exporter (RFC 8446 section 7.5) that binds device and room proofs
/// to one connection; both sides export [`TLS_EXPORTER_LEN`] bytes with an empty context.
pub const TLS_EXPORTER_LABEL: &[u8] = b"EXPORTER-conclave-auth-v1";

/// Length of the exported TLS binding in bytes.
pub const TLS_EXPORTER_LEN: usize = 32;

/// Length of the frame prefix in bytes.
pub const PREFIX_LEN: usize = 4;

/// Default largest frame (2 MiB): room for a 1 MiB container plus its envelope.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 2 * 1024 * 1024;

/// The protocol version of the control channel this crate speaks.
pub const CONTROL_PROTOCOL_VERSION: u32 = 1;

/// Why a frame could not be decoded.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The announced length exceeds the reader's limit; the stream cannot be resynced.
    #[error("control frame of {len} bytes exceeds the {max}-byte limit")]
    TooLarge {
        /// Announced length.
        len: usize,
        /// The reader's limit.
        max: usize,
    },
    /// A zero-length frame: no valid message encodes to it with a request.
    #[error("empty control frame")]
    Empty,
    /// The frame body is not a valid protobuf message of the expected type.
    #[error("control frame is not a valid protobuf message: {0}")]
    Decode(#[from] prost::DecodeError),
}

/// Decodes a frame prefix and checks it against `max` (bytes).
pub fn frame_len(prefix: [u8; PREFIX_LEN], max: usize) -> Result<usize, FrameError> {
    let len = usize::try_from(u32::from_be_bytes(prefix)).unwrap_or(usize::MAX);
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    if len == 0 {
        return Err(FrameError::Empty);
    }
    Ok(len)
}

/// Encodes `message` as one frame (prefix and body). Fails only if the message is
/// larger than `u32::MAX` bytes, which no bounded sender produces.
pub fn encode(message: &impl Message) -> Result<Vec<u8>, FrameError> {
    let len = message.encoded_len();
    let prefix = u32::try_from(len).map_err(|_| FrameError::TooLarge {
        len,
        max: u32::MAX as usize,
    })?;
    let mut out = Vec::with_capacity(PREFIX_LEN + len);
    out.extend_from_slice(&prefix.to_be_bytes());
    // Invariant: a Vec grows as needed, so encoding into it cannot run out of space.
    message
        .encode(&mut out)
        .map_err(|_| FrameError::TooLarge { len, max: len })?;
    Ok(out)
}

/// A server frame as up to three buffers to write in order: what comes before a
/// delivered container's bytes, the container itself (the same buffer for every
/// recipient, not a copy), and what follows it. Empty buffers are there to be skipped.
pub type ServerFrameChunks = [Bytes; 3];

/// Encodes `frame` like [`encode`], but a mailbox delivery's container stays the buffer
/// it is (a clone of the `Bytes`, no copy): a container sent to many devices connected
/// to one node is held once in memory, however many connections still have it to send.
/// Any other frame is one buffer, the first.
pub fn encode_server_chunks(frame: &ServerFrame) -> Result<ServerFrameChunks, FrameError> {
    let Some(server_frame::Kind::Event(Event {
        event: Some(event::Event::Mailbox(delivery)),
    })) = &frame.kind
    else {
        return Ok([Bytes::from(encode(frame)?), Bytes::new(), Bytes::new()]);
    };
    let frame_len = frame.encoded_len();
    let prefix = u32::try_from(frame_len).map_err(|_| FrameError::TooLarge {
        len: frame_len,
        max: u32::MAX as usize,
    })?;
    // The nesting, outside in: ServerFrame.event (2) > Event.mailbox (1) >
    // MailboxDelivery { mailbox_id = 1, container = 2, stored_at_ms = 3 }, each field
    // written as prost writes it (fields in tag order; proto3 defaults left out).
    let delivery_len = delivery.encoded_len();
    let event_len = key_len(1) + encoded_len_varint(delivery_len as u64) + delivery_len;
    let mut head = Vec::with_capacity(PREFIX_LEN + 32);
    head.extend_from_slice(&prefix.to_be_bytes());
    encode_key(2, WireType::LengthDelimited, &mut head);
    encode_varint(event_len as u64, &mut head);
    encode_key(1, WireType::LengthDelimited, &mut head);
    encode_varint(delivery_len as u64, &mut head);
    if delivery.mailbox_id != 0 {
        encode_key(1, WireType::Varint, &mut head);
        encode_varint(delivery.mailbox_id, &mut head);
    }
    if !delivery.container.is_empty() {
        encode_key(2, WireType::LengthDelimited, &mut head);
        encode_varint(delivery.container.len() as u64, &mut head);
    }
    let mut tail = Vec::new();
    if delivery.stored_at_ms != 0 {
        encode_key(3, WireType::Varint, &mut tail);
        encode_varint(delivery.stored_at_ms, &mut tail);
    }
    Ok([
        Bytes::from(head),
        delivery.container.clone(),
        Bytes::from(tail),
    ])
}

/// Decodes a client-to-server frame body.
pub fn decode_client(body: &[u8]) -> Result<ClientFrame, FrameError> {
    Ok(ClientFrame::decode(body)?)
}

/// Decodes a server-to-client frame body.
pub fn decode_server(body: &[u8]) -> Result<ServerFrame, FrameError> {
    Ok(ServerFrame::decode(body)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1::{ClientFrame, GetTime, client_frame};

    #[test]
    fn roundtrip() {
        let msg = ClientFrame {
            request_id: 7,
            request: Some(client_frame::Request::GetTime(GetTime {})),
        };
        let bytes = encode(&msg).unwrap();
        let (prefix, body) = bytes.split_first_chunk::<PREFIX_LEN>().unwrap();
        assert_eq!(frame_len(*prefix, 100).unwrap(), body.len());
        assert_eq!(decode_client(body).unwrap(), msg);
    }

    #[test]
    fn oversized_and_empty_prefixes_are_refused_before_reading() {
        assert!(matches!(
            frame_len(u32::MAX.to_be_bytes(), DEFAULT_MAX_FRAME_BYTES),
            Err(FrameError::TooLarge { .. })
        ));
        assert!(matches!(frame_len([0; 4], 10), Err(FrameError::Empty)));
    }

    #[test]
    fn chunked_server_frames_are_the_bytes_encode_writes() {
        use crate::v1::{MailboxDelivery, PrekeysLow};
        let frame_of = |event| ServerFrame {
            kind: Some(server_frame::Kind::Event(Event { event: Some(event) })),
        };
        let mut frames = vec![frame_of(event::Event::PrekeysLow(PrekeysLow {
            prekeys_held: 3,
            threshold: 10,
        }))];
        for mailbox_id in [0, 1, 300, u64::MAX] {
            for len in [0, 1, 127, 128, 16_383, 16_384, 70_000] {
                for stored_at_ms in [0, 1_765_000_000_000] {
                    frames.push(frame_of(event::Event::Mailbox(MailboxDelivery {
                        mailbox_id,
                        container: Bytes::from(vec![0xa5; len]),
                        stored_at_ms,
                    })));
                }
            }
        }
        for frame in frames {
            let chunks = encode_server_chunks(&frame).unwrap();
            assert_eq!(chunks.concat(), encode(&frame).unwrap(), "{frame:?}");
            let encoded = encode(&frame).unwrap();
            assert_eq!(decode_server(&encoded[PREFIX_LEN..]).unwrap(), frame);
            if let Some(server_frame::Kind::Event(Event {
                event: Some(event::Event::Mailbox(d)),
            })) = &frame.kind
            {
                // The container is the caller's buffer, not a copy of it.
                assert_eq!(chunks[1].as_ptr(), d.container.as_ptr());
                assert_eq!(chunks[1].len(), d.container.len());
            }
        }
    }

    #[test]
    fn garbage_bodies_are_errors() {
        assert!(decode_client(&[0xff, 0xff, 0xff]).is_err());
        assert!(decode_server(&[0x0a, 0x80]).is_err());
    }
}
