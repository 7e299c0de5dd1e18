"""A three-party meeting from Python, against a running conclave-sfu.

    cargo run -p conclave-sfu -- --listen 127.0.0.1:4433 --data-dir /tmp/conclave-sfu
    # prints: certificate sha-256 fingerprint: <64 hex digits>
    python three_party_meeting.py --server 127.0.0.1:4433 --pin <64 hex digits>

Alice starts a meeting with Bob and Carol; Bob answers with audio, Carol with video.
They compare safety words, exchange frames, then Carol leaves: the meeting rekeys to a
new epoch only Alice and Bob hold, and they carry on. Exits 0 when everything happened.
"""

import argparse
import asyncio
import queue
import threading
import time
import uuid

import conclave

WAIT = 30.0  # seconds: an upper bound for each step, never a timing requirement


class Inbox(conclave.ClientListener):
    """A client's events, queued (the SDK calls on_event from its own threads)."""

    def __init__(self):
        self.events = queue.Queue()

    def on_event(self, event):
        self.events.put(event)

    async def invitation(self):
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            try:
                event = self.events.get_nowait()
            except queue.Empty:
                await asyncio.sleep(0.01)
                continue
            if isinstance(event, conclave.ClientEvent.INVITED):
                return event.invitation
        raise TimeoutError("no invitation")


class MeetingInbox(conclave.MeetingListener):
    """A meeting's events and frames (on_frames gets frames that arrived together)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.events, self.frames = [], []

    def on_event(self, event):
        with self.lock:
            self.events.append(event)

    def on_frames(self, frames):
        with self.lock:
            self.frames.extend(frames)

    def frames_from(self, user_id, epoch=0):
        with self.lock:
            return [f for f in self.frames if f.user_id == user_id and f.epoch >= epoch]


async def until(condition, what):
    deadline = time.monotonic() + WAIT
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        await asyncio.sleep(0.02)


async def join(name, options):
    # A real app creates these once, then stores user_key.export() and
    # client.export_credentials() encrypted, and restores them on the next start.
    user_key = conclave.UserKey.generate()
    credentials = conclave.Credentials.create(f"{name}-{uuid.uuid4().hex[:8]}", user_key)
    inbox = Inbox()
    client = await conclave.connect(options, credentials, inbox)
    return client, inbox


def send(meeting, kind, data):
    """Sends one frame; False while the room is still being joined."""
    try:
        meeting.send_frame(kind, False, data)
        return True
    except (conclave.ConclaveError.NotJoined, conclave.ConclaveError.SendingPaused):
        return False


async def main(server, pin):
    options = conclave.ClientOptions(
        server=server, trust=conclave.ServerTrust.PINNED_SHA256(fingerprint=pin))
    (alice, _), (bob, bob_inbox), (carol, carol_inbox) = [
        await join(n, options) for n in ("alice", "bob", "carol")]
    audio, video = conclave.MediaKind.AUDIO, conclave.MediaKind.VIDEO

    alice_in = MeetingInbox()
    started = await alice.start_meeting([bob.user_id(), carol.user_id()], [audio, video], alice_in)
    alice_m = started.meeting
    print(f"alice invited {len(started.report.invited_devices)} devices")

    bob_in, carol_in = MeetingInbox(), MeetingInbox()
    bob_m = await bob.accept((await bob_inbox.invitation()).meeting_id, [audio], bob_in)
    carol_m = await carol.accept((await carol_inbox.invitation()).meeting_id, [video], carol_in)

    meetings = (alice_m, bob_m, carol_m)
    await until(lambda: len({str(m.safety_words()) for m in meetings}) == 1
                and alice_m.safety_words() is not None, "equal safety words")
    print("safety words:", " ".join(alice_m.safety_words().words), "(the same on every screen)")

    n = 0
    while not (bob_in.frames_from(alice.user_id()) and alice_in.frames_from(carol.user_id())
               and carol_in.frames_from(bob.user_id())):
        send(alice_m, audio, b"alice audio %d" % n)
        send(alice_m, video, b"alice video %d" % n + bytes(1000))
        send(bob_m, audio, b"bob audio %d" % n)
        send(carol_m, video, b"carol video %d" % n + bytes(1000))
        n += 1
        await asyncio.sleep(0.02)
        if n > WAIT / 0.02:
            raise TimeoutError("media did not flow")
    print(f"frames flow: bob has {len(bob_in.frames_from(alice.user_id()))} from alice")

    old_epoch = alice_m.sending_epoch()
    await carol_m.leave()
    await until(lambda: alice_m.sending_epoch() > old_epoch
                and bob_m.sending_epoch() == alice_m.sending_epoch(), "rekey after Carol left")
    epoch = alice_m.sending_epoch()
    print(f"carol left; the meeting rekeyed from epoch {old_epoch} to {epoch}")
    await until(lambda: send(alice_m, audio, b"after the rekey")
                and bob_in.frames_from(alice.user_id(), epoch), "media on the new epoch")
    print("alice and bob carry on under the new key; carol's keys are gone")

    for client in (alice, bob, carol):
        await client.disconnect()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", required=True, help="the SFU's HOST:PORT")
    parser.add_argument("--pin", required=True, help="its certificate's SHA-256 fingerprint")
    args = parser.parse_args()
    asyncio.run(main(args.server, args.pin))
