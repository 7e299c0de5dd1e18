//! The kernel's half of the steering: a classic BPF program on the node's
//! `SO_REUSEPORT` group that hands each datagram to the socket of shard
//! `first byte of the destination connection ID % shards` (Linux only).
//!
//! A QUIC packet with the long header (first bit set: Initial, Handshake, 0-RTT,
//! Retry) carries its destination connection ID's length at byte 5 and the ID from
//! byte 6; a short-header packet carries the ID from byte 1 (RFC 9000, 17.2 and
//! 17.3). The program reads that byte and returns it modulo the shard count, the index
//! of a socket in the group (sockets are numbered in the order they were bound). A
//! datagram too short to hold the byte ends the program with 0: shard 0 receives it,
//! and quinn drops it as the garbage it is.

use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};

// Classic BPF opcodes (linux/filter.h, linux/bpf_common.h).
const BPF_LD: u16 = 0x00;
const BPF_ALU: u16 = 0x04;
const BPF_JMP: u16 = 0x05;
const BPF_RET: u16 = 0x06;
const BPF_B: u16 = 0x10;
const BPF_ABS: u16 = 0x20;
const BPF_JA: u16 = 0x00;
const BPF_JSET: u16 = 0x40;
const BPF_K: u16 = 0x00;
const BPF_MOD: u16 = 0x90;
const BPF_A: u16 = 0x10;

/// The first bit of a QUIC packet: set for the long header.
const LONG_HEADER: u32 = 0x80;
/// Offset of the destination connection ID in a long-header packet.
const LONG_DCID_AT: u32 = 6;
/// Offset of the destination connection ID in a short-header packet.
const SHORT_DCID_AT: u32 = 1;

/// One classic BPF instruction, as the kernel lays it out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Insn {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

const fn insn(code: u16, jt: u8, jf: u8, k: u32) -> Insn {
    Insn { code, jt, jf, k }
}

/// The steering program for `shards` sockets (at least 2).
pub(crate) fn program(shards: u32) -> [Insn; 7] {
    [
        // A = packet[0]
        insn(BPF_LD | BPF_B | BPF_ABS, 0, 0, 0),
        // long header? go on at 2, else at 4
        insn(BPF_JMP | BPF_JSET | BPF_K, 0, 2, LONG_HEADER),
        insn(BPF_LD | BPF_B | BPF_ABS, 0, 0, LONG_DCID_AT),
        insn(BPF_JMP | BPF_JA, 0, 0, 1),
        insn(BPF_LD | BPF_B | BPF_ABS, 0, 0, SHORT_DCID_AT),
        // A %= shards; the socket index
        insn(BPF_ALU | BPF_MOD | BPF_K, 0, 0, shards),
        insn(BPF_RET | BPF_A, 0, 0, 0),
    ]
}

/// Runs [`program`] the way the kernel does, for tests and for documentation: the
/// socket index a datagram with this payload goes to.
#[cfg(test)]
pub(crate) fn run(program: &[Insn], packet: &[u8]) -> u32 {
    let mut a: u32 = 0;
    let mut pc = 0usize;
    while let Some(i) = program.get(pc) {
        pc += 1;
        match i.code {
            c if c == BPF_LD | BPF_B | BPF_ABS => match packet.get(i.k as usize) {
                Some(&b) => a = u32::from(b),
                None => return 0,
            },
            c if c == BPF_JMP | BPF_JSET | BPF_K => {
                pc += usize::from(if a & i.k != 0 { i.jt } else { i.jf });
            }
            c if c == BPF_JMP | BPF_JA => pc += i.k as usize,
            c if c == BPF_ALU | BPF_MOD | BPF_K => a %= i.k,
            c if c == BPF_RET | BPF_A => return a,
            _ => return 0,
        }
    }
    0
}

/// Binds `shards` UDP sockets to `addr` in one `SO_REUSEPORT` group steered by
/// [`program`]; with port 0, the first socket's port is used for the others. Returned
/// in group order: socket `i` receives the packets of shard `i`.
pub(crate) fn bind_group(
    addr: SocketAddr,
    shards: usize,
) -> std::io::Result<Vec<std::net::UdpSocket>> {
    let mut sockets = Vec::with_capacity(shards);
    let mut at = addr;
    for i in 0..shards {
        let socket = Socket::new(Domain::for_address(at), Type::DGRAM, Some(Protocol::UDP))?;
        if shards > 1 {
            socket.set_reuse_port(true)?;
        }
        socket.bind(&at.into())?;
        if i == 0 {
            if let Some(bound) = socket.local_addr()?.as_socket() {
                at = bound;
            }
            if shards > 1 {
                attach(&socket, shards)?;
            }
        }
        sockets.push(socket.into());
    }
    Ok(sockets)
}

#[cfg(target_os = "linux")]
fn attach(socket: &Socket, shards: usize) -> std::io::Result<()> {
    let shards = u32::try_from(shards).map_err(|_| std::io::ErrorKind::InvalidInput)?;
    let mut filter: Vec<libc::sock_filter> = program(shards)
        .iter()
        .map(|i| libc::sock_filter {
            code: i.code,
            jt: i.jt,
            jf: i.jf,
            k: i.k,
        })
        .collect();
    let prog = libc::sock_fprog {
        len: u16::try_from(filter.len()).map_err(|_| std::io::ErrorKind::InvalidInput)?,
        filter: filter.as_mut_ptr(),
    };
    nix::sys::socket::setsockopt(
        socket,
        nix::sys::socket::sockopt::AttachReusePortCbpf,
        &prog,
    )
    .map_err(std::io::Error::from)
}

#[cfg(not(target_os = "linux"))]
fn attach(_socket: &Socket, _shards: usize) -> std::io::Result<()> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "more than one shard needs Linux (SO_ATTACH_REUSEPORT_CBPF)",
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    #[test]
    fn the_program_reads_the_destination_id_of_both_header_forms() {
        let p = program(4);
        // Initial: 0xc0 | type, version, DCID length 8, DCID starting with 0x07.
        let initial = [0xc3, 0, 0, 0, 1, 8, 0x07, 1, 2, 3, 4, 5, 6, 7];
        assert_eq!(run(&p, &initial), 3);
        // 1-RTT: 0x40 | bits, DCID starting with 0x0a.
        let short = [0x41, 0x0a, 1, 2, 3, 4, 5, 6, 7, 9, 9];
        assert_eq!(run(&p, &short), 2);
        // Too short for the byte: shard 0.
        assert_eq!(run(&p, &[0xc0, 0, 0]), 0);
        assert_eq!(run(&p, &[0x40]), 0);
        assert_eq!(run(&p, &[]), 0);
    }

    /// The real kernel: datagrams whose first ID byte names shard 1 arrive on socket
    /// 1, and those naming shard 0 on socket 0, whatever the sending port.
    #[cfg(target_os = "linux")]
    #[test]
    fn the_kernel_steers_datagrams_to_the_socket_of_their_shard() {
        use std::time::Duration;
        let sockets = bind_group("127.0.0.1:0".parse().unwrap(), 2).unwrap();
        let addr = sockets[0].local_addr().unwrap();
        assert_eq!(sockets[1].local_addr().unwrap(), addr);
        for s in &sockets {
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        }
        for round in 0..8u8 {
            // A fresh source port each round: plain SO_REUSEPORT would hash these.
            let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            for shard in 0..2u8 {
                let first = round.wrapping_mul(2).wrapping_add(shard);
                client
                    .send_to(&[0x40, first, 1, 2, 3, 4, 5, 6, 7], addr)
                    .unwrap();
                client
                    .send_to(&[0xc0, 0, 0, 0, 1, 8, first, 1, 2, 3, 4, 5, 6, 7], addr)
                    .unwrap();
                let mut buf = [0u8; 64];
                for _ in 0..2 {
                    let (n, _) = sockets[usize::from(shard)].recv_from(&mut buf).unwrap();
                    let at = if buf[0] & 0x80 != 0 { 6 } else { 1 };
                    assert!(n > at && buf[at] == first, "round {round}");
                }
            }
        }
    }
}
