"""Frames per second through the Python binding: the cost at the boundary.

    python frame_rate.py --server HOST:PORT --pin FINGERPRINT [--size 160] [--rate 10000]

Two clients in this process join one meeting on a running conclave-sfu. Then:

* send: ``--sends`` calls of ``Meeting.send_frame`` in a tight loop (each encrypts with
  SFrame and hands the datagrams to QUIC; congestion may drop some on the way, which
  does not slow the call): calls per second.
* receive: the sender sends ``--rate`` frames per second for ``--seconds``; the
  receiver's ``MeetingListener.on_frames`` counts what arrives: frames per second
  delivered to Python, the loss, and this process's CPU time per delivered frame
  (sending, receiving and both sides of the binding).

`frame_rate.rs` in ffi/examples does the same through the Rust API; docs/benchmarks.md
has both. Prints one JSON object.
"""

import argparse
import asyncio
import json
import threading
import time
import uuid

import conclave


class Null(conclave.ClientListener):
    def on_event(self, event):
        pass


class Counter(conclave.MeetingListener):
    def __init__(self):
        self.lock = threading.Lock()
        self.frames = 0
        self.invited = None

    def on_event(self, event):
        pass

    def on_frames(self, frames):
        with self.lock:
            self.frames += len(frames)

    def count(self):
        with self.lock:
            return self.frames


class Invites(conclave.ClientListener):
    def __init__(self):
        self.meeting_id = None

    def on_event(self, event):
        if isinstance(event, conclave.ClientEvent.INVITED):
            self.meeting_id = event.invitation.meeting_id


async def connect(name, options, listener):
    credentials = conclave.Credentials.create(
        f"{name}-{uuid.uuid4().hex[:10]}", conclave.UserKey.generate())
    return await conclave.connect(options, credentials, listener)


async def main(args):
    options = conclave.ClientOptions(
        server=args.server, trust=conclave.ServerTrust.PINNED_SHA256(fingerprint=args.pin))
    kind = conclave.MediaKind.AUDIO if args.size <= 300 else conclave.MediaKind.VIDEO
    invites = Invites()
    sender = await connect("sender", options, Null())
    receiver = await connect("receiver", options, invites)
    started = await sender.start_meeting([receiver.user_id()], [kind], Counter())
    while invites.meeting_id is None:
        await asyncio.sleep(0.01)
    counter = Counter()
    await receiver.accept(invites.meeting_id, [kind], counter)
    meeting = started.meeting
    frame = bytes(args.size)

    # Until the receiver's room is joined and frames arrive.
    while counter.count() == 0:
        try:
            meeting.send_frame(kind, False, frame)
        except (conclave.ConclaveError.NotJoined, conclave.ConclaveError.SendingPaused):
            pass
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.5)

    # Send: a tight loop of calls.
    t0 = time.perf_counter()
    for _ in range(args.sends):
        meeting.send_frame(kind, False, frame)
    send_seconds = time.perf_counter() - t0
    await asyncio.sleep(1.0)

    # Receive: a paced stream.
    before = counter.count()
    cpu0, t0 = time.process_time(), time.perf_counter()
    sent = 0
    while (elapsed := time.perf_counter() - t0) < args.seconds:
        due = int(elapsed * args.rate)
        while sent < due:
            meeting.send_frame(kind, False, frame)
            sent += 1
        await asyncio.sleep(0.0005)
    await asyncio.sleep(0.5)  # frames still on their way
    cpu = time.process_time() - cpu0
    delivered = counter.count() - before
    result = {
        "api": "python",
        "frame_bytes": args.size,
        "send_calls_per_second": round(args.sends / send_seconds),
        "offered_frames_per_second": args.rate,
        "delivered_frames_per_second": round(delivered / args.seconds),
        "loss_percent": round(100.0 * (sent - delivered) / sent, 2),
        "process_cpu_us_per_delivered_frame": round(1e6 * cpu / delivered, 2) if delivered else None,
    }
    print(json.dumps(result))
    await sender.disconnect()
    await receiver.disconnect()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", required=True)
    parser.add_argument("--pin", required=True)
    parser.add_argument("--size", type=int, default=160, help="frame bytes (<= 300: audio)")
    parser.add_argument("--sends", type=int, default=20000)
    parser.add_argument("--rate", type=int, default=10000, help="frames per second offered")
    parser.add_argument("--seconds", type=float, default=3.0)
    asyncio.run(main(parser.parse_args()))
