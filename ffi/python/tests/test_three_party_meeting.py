"""A three-party meeting driven from Python through the bindings, against a real SFU:
safety codes, audio and video both ways, a removal that rekeys, a reconnect."""

import asyncio
import time

import conclave
from conftest import WAIT, MeetingRecorder, Person, send_until_joined

AUDIO = conclave.MediaKind.AUDIO
VIDEO = conclave.MediaKind.VIDEO


class Party:
    """A person in the meeting: their client, meeting and what it received."""

    def __init__(self, person: Person, meeting, recorder: MeetingRecorder, kinds):
        self.person = person
        self.meeting = meeting
        self.recorder = recorder
        self.kinds = kinds


async def three_party_meeting(sfu):
    """Alice invites Bob and Carol; Bob answers with audio, Carol with video."""
    alice, bob, carol = [await Person.connect(n, sfu) for n in ("alice", "bob", "carol")]
    alice_rec = MeetingRecorder()
    started = await alice.client.start_meeting(
        [bob.user_id, carol.user_id], [AUDIO, VIDEO], alice_rec)
    assert sorted(started.report.invited_users) == sorted([bob.user_id, carol.user_id])
    assert started.report.refused == []
    meeting_id = started.meeting.id()
    parties = [Party(alice, started.meeting, alice_rec, [AUDIO, VIDEO])]
    for person, kinds in ((bob, [AUDIO]), (carol, [VIDEO])):
        invitation = await person.invitation()
        assert invitation.meeting_id == meeting_id
        assert invitation.inviter.user_id == alice.user_id
        recorder = MeetingRecorder()
        meeting = await person.client.accept(meeting_id, kinds, recorder)
        parties.append(Party(person, meeting, recorder, kinds))
    return parties


async def wait_for_equal_safety_codes(parties):
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        numbers = {p.meeting.safety_number() for p in parties}
        words = {tuple(w.words) if (w := p.meeting.safety_words()) else None for p in parties}
        if len(numbers) == 1 and None not in numbers and len(words) == 1 and None not in words:
            return numbers.pop(), words.pop()
        await asyncio.sleep(0.02)
    raise AssertionError("safety codes did not become equal: "
                         f"{[(p.meeting.safety_number(), p.meeting.safety_words()) for p in parties]}")


def payload(name: str, kind, n: int, tag: str = "") -> bytes:
    size = 160 if kind == AUDIO else 1200
    head = f"{tag}{name}:{kind.name}:{n}:".encode()
    return head + bytes(size - len(head))


async def exchange_until(parties, condition, tag: str = ""):
    """Every party sends its kinds every 20 ms until `condition()` holds (bounded)."""
    deadline = time.monotonic() + WAIT
    n = 0
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("media did not flow: " + "; ".join(
                f"{p.person.name} got {len(p.recorder.snapshot()[1])} frames" for p in parties))
        for p in parties:
            for kind in p.kinds:
                await send_until_joined(p.meeting, kind, payload(p.person.name, kind, n, tag))
        n += 1
        await asyncio.sleep(0.02)


def received_from(party: Party, sender: Party, kind, tag: str = "", min_epoch: int = 0) -> list:
    _, frames = party.recorder.snapshot()
    prefix = f"{tag}{sender.person.name}:{kind.name}:".encode()
    return [f for f in frames
            if f.user_id == sender.person.user_id and f.kind == kind
            and f.data.startswith(prefix) and f.epoch >= min_epoch]


def everyone_hears_everyone(parties, tag: str = "", min_epoch: int = 0):
    return lambda: all(
        received_from(receiver, sender, kind, tag, min_epoch)
        for receiver in parties for sender in parties if sender is not receiver
        for kind in sender.kinds)


async def close_all(parties):
    for p in parties:
        await p.person.client.disconnect()


def test_three_parties_agree_on_safety_codes_and_exchange_audio_and_video(sfu):
    async def run():
        parties = await three_party_meeting(sfu)
        number, words = await wait_for_equal_safety_codes(parties)
        assert len(number) == 60 and number.isdigit()
        assert len(words) == 2
        await exchange_until(parties, everyone_hears_everyone(parties))
        for receiver in parties:
            for sender in parties:
                if sender is receiver:
                    continue
                for kind in sender.kinds:
                    frame = received_from(receiver, sender, kind)[0]
                    assert frame.data == payload(sender.person.name, kind, int(
                        frame.data.split(b":")[2]))
                    assert frame.sender_index == next(
                        p.sender_index for p in receiver.meeting.participants()
                        if p.user_id == sender.person.user_id)
            stats = receiver.meeting.stats()
            assert stats.decrypt_failures == 0
            assert stats.frames_received > 0
            network = receiver.person.client.network_stats()
            assert network.udp_datagrams_received > 0
            assert network.udp_bytes_received > 0
            assert network.udp_datagrams_sent > 0
        roster = {p.user_id for p in parties[0].meeting.participants()}
        assert roster == {p.person.user_id for p in parties}
        assert parties[0].meeting.is_leader() and not parties[1].meeting.is_leader()
        await close_all(parties)

    asyncio.run(run())


def test_a_removed_participant_stops_receiving_and_the_rest_rekey(sfu):
    async def run():
        alice, bob, carol = parties = await three_party_meeting(sfu)
        await exchange_until(parties, everyone_hears_everyone(parties))
        # The key leader wraps its next Rekey for Bob and Carol ahead of time
        # (ClientOptions.prepare_rekeys, on by default); Carol's entry is left out of
        # the Rekey that removes her.
        await alice.recorder.wait_until(
            lambda _events, _frames: alice.meeting.prepared_rekey_devices() == 2,
            "the key leader's prepared Rekey")
        assert bob.meeting.prepared_rekey_devices() == 0
        old_epoch = alice.meeting.sending_epoch()
        await alice.meeting.remove([carol.person.user_id])

        await carol.recorder.wait_until(
            lambda events, _: any(isinstance(e, conclave.MeetingEvent.ENDED)
                                  and e.reason == conclave.EndReason.REMOVED for e in events),
            "end of the meeting for Carol")
        assert carol.meeting.is_ended()
        for p in (alice, bob):
            await p.recorder.wait_until(
                lambda events, _: any(isinstance(e, conclave.MeetingEvent.EPOCH_CHANGED)
                                      and e.epoch > old_epoch for e in events),
                f"new epoch for {p.person.name}")
        new_epoch = alice.meeting.sending_epoch()
        assert new_epoch > old_epoch and bob.meeting.sending_epoch() == new_epoch
        assert {p.user_id for p in alice.meeting.participants()} == {
            alice.person.user_id, bob.person.user_id}

        # Media of the new epoch reaches Bob, never Carol.
        remaining = [alice, bob]
        await exchange_until(remaining, everyone_hears_everyone(remaining, "after:", new_epoch),
                             "after:")
        _, carol_frames = carol.recorder.snapshot()
        assert [f for f in carol_frames if f.epoch >= new_epoch] == []
        assert [f for f in carol_frames if f.data.startswith(b"after:")] == []
        try:
            carol.meeting.send_frame(VIDEO, False, b"still here?")
            raise AssertionError("a removed participant could still send")
        except conclave.ConclaveError.MeetingEnded:
            pass
        await close_all(parties)

    asyncio.run(run())


def test_the_meeting_resumes_after_the_server_restarts(sfu):
    async def run():
        parties = await three_party_meeting(sfu)
        await exchange_until(parties, everyone_hears_everyone(parties))
        sfu.kill()
        sfu.start()
        for p in parties:
            await p.person.events.wait_for(
                lambda e: isinstance(e, conclave.ClientEvent.RECONNECTED),
                f"reconnect of {p.person.name}")
        await exchange_until(parties, everyone_hears_everyone(parties, "resumed:"), "resumed:")
        await close_all(parties)

    asyncio.run(run())


def messages_from(party: Party, sender: Party, topic: str) -> list:
    events, _ = party.recorder.snapshot()
    return [e.message for e in events
            if isinstance(e, conclave.MeetingEvent.MESSAGE)
            and e.message.user_id == sender.person.user_id and e.message.topic == topic]


def test_chat_reaches_everyone_in_order_and_lossy_data_flows(sfu):
    async def run():
        alice, bob, carol = parties = await three_party_meeting(sfu)
        await exchange_until(parties, everyone_hears_everyone(parties))
        for n in range(5):
            await alice.meeting.send_message(conclave.Delivery.RELIABLE, "chat", f"line {n}".encode())
        for p in (bob, carol):
            await p.recorder.wait_until(
                lambda _e, _f, p=p: len(messages_from(p, alice, "chat")) == 5, "five chat lines")
            got = messages_from(p, alice, "chat")
            assert [m.body for m in got] == [f"line {n}".encode() for n in range(5)]
            assert [m.sequence for m in got] == list(range(5))
            assert all(m.delivery == conclave.Delivery.RELIABLE for m in got)
        # Lossy: resend until Alice sees one of Bob's cursors.
        deadline = time.monotonic() + WAIT
        while not messages_from(alice, bob, "cursor"):
            assert time.monotonic() < deadline, "no lossy message arrived"
            await bob.meeting.send_message(conclave.Delivery.LOSSY, "cursor", b"12,34")
            await asyncio.sleep(0.02)
        assert messages_from(alice, bob, "cursor")[0].body == b"12,34"
        try:
            await alice.meeting.send_message(conclave.Delivery.LOSSY, "cursor", bytes(901))
            raise AssertionError("a lossy message above 900 bytes was sent")
        except conclave.ConclaveError.MessageTooLarge:
            pass
        await close_all(parties)

    asyncio.run(run())
