"""Ringing from Python: an unanswered call becomes a missed call for the invitee and
"no answer" for the caller, whose meeting rekeys without the invitee."""

import asyncio

import conclave
from conftest import ClientEvents, MeetingRecorder, Person


def test_an_unanswered_call_is_missed_and_the_caller_rekeys_without_the_invitee(sfu):
    async def run():
        alice, bob = [await Person.connect(n, sfu) for n in ("alice", "bob")]
        await alice.client.disconnect()
        options = sfu.options()
        options.ring_timeout_ms = 5000  # short, yet long enough to arrive on a busy machine
        caller_events = ClientEvents()
        alice_client = await conclave.connect(options, alice.credentials, caller_events)
        recorder = MeetingRecorder()
        started = await alice_client.start_meeting(
            [bob.user_id], [conclave.MediaKind.AUDIO], recorder)
        invitation = await bob.invitation()
        missed = await bob.events.wait_for(
            lambda e: isinstance(e, conclave.ClientEvent.MISSED_CALL), "missed call")
        assert missed.invitation.meeting_id == invitation.meeting_id
        assert missed.invitation.inviter.user_id == alice.user_id
        try:
            await bob.client.accept(invitation.meeting_id, [conclave.MediaKind.AUDIO],
                                    MeetingRecorder())
            raise AssertionError("a missed call could still be accepted")
        except conclave.ConclaveError.NoInvitation:
            pass
        # The caller waits 15 s past the deadline for an answer on its way
        # (ANSWER_GRACE) before it rings the invitee out.
        await recorder.wait_until(
            lambda events, _: any(isinstance(e, conclave.MeetingEvent.UNANSWERED)
                                  and e.participant.user_id == bob.user_id for e in events),
            "no answer from Bob")
        await recorder.wait_until(
            lambda *_: [p.user_id for p in started.meeting.participants()] == [alice.user_id]
            and started.meeting.sending_epoch() > 0,
            "the rekey without Bob")
        await alice_client.disconnect()
        await bob.client.disconnect()

    asyncio.run(run())
