"""What happens when Python lets go: objects the app does not keep, and an interpreter
that exits while the SDK's threads still deliver events."""

import asyncio
import subprocess
import sys
import textwrap

import conclave
from conftest import MeetingRecorder, Person, send_until_joined

AUDIO = conclave.MediaKind.AUDIO


def test_a_meeting_object_the_app_does_not_keep_still_delivers_to_its_listener(sfu):
    async def run():
        alice, bob = [await Person.connect(n, sfu) for n in ("alice", "bob")]
        started = await alice.client.start_meeting([bob.user_id], [AUDIO], MeetingRecorder())
        invitation = await bob.invitation()
        recorder = MeetingRecorder()
        # The returned Meeting is dropped at once.
        await bob.client.accept(invitation.meeting_id, [AUDIO], recorder)
        await asyncio.sleep(0)
        while not recorder.snapshot()[1]:
            await send_until_joined(started.meeting, AUDIO, b"still listening?")
            await asyncio.sleep(0.02)
        for person in (alice, bob):
            await person.client.disconnect()

    asyncio.run(run())


def test_an_interpreter_exiting_with_connected_clients_exits_cleanly(sfu):
    """The SDK's threads calling into an interpreter that is finalizing (a listener,
    or the completion of an awaited call) must not abort the process: a thread ended
    by the interpreter used to unwind through the SDK ("FATAL: exception not
    rethrown", SIGABRT, about one exit in fifteen here, so ten exits catch it about half
    the time; a loop of 30 caught it every time). `shutdown` at exit stops them."""
    script = textwrap.dedent(f"""
        import asyncio, sys
        import conclave

        class Busy(conclave.ClientListener):
            def on_event(self, event):
                pass

        async def main():
            options = conclave.ClientOptions(
                server={sfu.addr!r},
                trust=conclave.ServerTrust.PINNED_SHA256(fingerprint={sfu.fingerprint!r}))
            clients = []
            for i in range(3):
                key = conclave.UserKey.generate()
                creds = conclave.Credentials.create(f"exit-{{i}}-{{id(key)}}", key)
                clients.append(await conclave.connect(options, creds, Busy()))
            return clients

        clients = asyncio.run(main())
        sys.exit(3)  # without disconnecting: events (prekey uploads) are still arriving
    """)
    for _ in range(10):
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 3, done.stderr[-2000:]
        assert "FATAL" not in done.stderr
