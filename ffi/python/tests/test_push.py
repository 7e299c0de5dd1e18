"""Push wake-ups from Python: the device's push keys, wake-ups that must not open, a
server without push, and (with a push-enabled server and a local HTTPS push service)
an offline invitee woken by an encrypted wake-up that the binding opens."""

import asyncio
import base64
import os
import queue
import shutil
import ssl
import subprocess
import tempfile
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

import conclave
from conftest import WAIT, ClientEvents, MeetingRecorder, Person, Sfu

AUDIO = conclave.MediaKind.AUDIO


def test_push_keys_round_trip_and_a_foreign_wake_up_is_refused():
    keys = conclave.PushKeys.generate()
    public_key, auth = keys.public_key(), keys.auth_secret()
    assert len(public_key) == 65 and public_key[0] == 0x04  # uncompressed P-256: p256dh
    assert len(auth) == 16

    stored = keys.export()
    restored = conclave.PushKeys.restore(stored)
    assert restored.public_key() == public_key
    assert restored.auth_secret() == auth
    assert conclave.PushKeys.generate().public_key() != public_key

    # Garbage, random bytes, something shaped like a push body, and an oversized one.
    shaped = os.urandom(16) + (4096).to_bytes(4, "big") + bytes([65]) + b"\x04" + os.urandom(64 + 40)
    for body in (b"", b"garbage", os.urandom(200), shaped, bytes(4097)):
        with pytest.raises(conclave.ConclaveError.InvalidPushMessage):
            conclave.open_wake_up(keys, body)
    # A wake-up encrypted to other keys is as foreign as garbage.
    with pytest.raises(conclave.ConclaveError.InvalidPushMessage) as refused:
        conclave.open_wake_up(conclave.PushKeys.generate(), shaped)
    assert "ignore it" in str(refused.value)

    with pytest.raises(conclave.ConclaveError.Credentials) as damaged:
        conclave.PushKeys.restore(b"junk")
    assert "generate new push keys" in str(damaged.value)
    with pytest.raises(conclave.ConclaveError.Credentials):
        conclave.PushKeys.restore(b"\x09" + stored[1:])  # a version this SDK never wrote


def test_a_server_without_push_says_so(sfu):
    async def run():
        person = await Person.connect("erin", sfu)
        keys = conclave.PushKeys.generate()
        with pytest.raises(conclave.ConclaveError.PushNotOffered):
            await person.client.push_server_key()
        with pytest.raises(conclave.ConclaveError.PushNotOffered):
            await person.client.register_push("https://fcm.googleapis.com/fcm/send/x", keys)
        assert await person.client.unregister_push() is False
        # The client goes on working: a refusal is not a failure of the connection.
        assert len(await person.client.export_credentials()) > 0
        await person.client.disconnect()
        with pytest.raises(conclave.ConclaveError.Closed):
            await person.client.unregister_push()

    asyncio.run(run())


class LocalPushService:
    """A Web Push service on https://localhost:PORT (certificate from a throwaway CA
    that the SFU is told to trust): records each request's path, headers and body, and
    answers 201 Created."""

    def __init__(self, directory: Path):
        self.ca_file = directory / "push-ca.pem"
        leaf, key = directory / "push.pem", directory / "push.key"
        make_certificates(directory, self.ca_file, leaf, key)
        requests = self.requests = queue.Queue()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                requests.put((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(201)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(leaf, key)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def endpoint(self, name: str) -> str:
        return f"https://localhost:{self.port}/push/{name}"

    def next_request(self, what: str):
        try:
            return self.requests.get(timeout=WAIT)
        except queue.Empty:
            raise AssertionError(f"no {what} within {WAIT} s") from None

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def make_certificates(directory: Path, ca: Path, leaf: Path, key: Path) -> None:
    """A CA and a `localhost` server certificate it issued (P-256), with openssl."""

    def openssl(*args):
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", str(ca), "-days", "2",
            "-subj", "/CN=conclave push test CA",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign")
    openssl("req", *ec, "-keyout", str(key), "-out", "push.csr", "-subj", "/CN=localhost")
    (directory / "push.ext").write_text(
        "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n")
    openssl("x509", "-req", "-in", "push.csr", "-CA", str(ca), "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "2", "-extfile", "push.ext", "-out", str(leaf))


@pytest.fixture
def push_sfu(sfu_bin):
    """An SFU that offers push through a `LocalPushService` (woken 100 ms after a
    container is stored); yields both."""
    if shutil.which("openssl") is None:
        pytest.fail("the local push service's certificates are made with the openssl "
                    "command: install it (Debian: apt-get install openssl)")
    with tempfile.TemporaryDirectory(prefix="conclave-pytest-push-") as data:
        data = Path(data)
        service = LocalPushService(data)
        vapid_key = data / "vapid.pem"
        subprocess.run([str(sfu_bin), "--generate-vapid-key", str(vapid_key)],
                       check=True, capture_output=True)
        server = Sfu(sfu_bin, data / "sfu", env={
            "CONCLAVE_PUSH__VAPID_KEY_FILE": str(vapid_key),
            "CONCLAVE_PUSH__CONTACT": "mailto:ops@conclave.test",
            "CONCLAVE_PUSH__ALLOWED_HOSTS": f"localhost:{service.port}",
            "CONCLAVE_PUSH__CA_FILE": str(service.ca_file),
            "CONCLAVE_PUSH__DELAY_MS": "100",
            # The local push service is on 127.0.0.1.
            "CONCLAVE_PUSH__ALLOW_PRIVATE_ADDRESSES": "true",
        })
        server.data_dir.mkdir()
        server.start()
        try:
            yield server, service
        finally:
            server.kill()
            service.stop()


def test_an_offline_invitee_is_woken_and_the_wake_up_opens(push_sfu):
    sfu, service = push_sfu

    async def run():
        alice, carol = [await Person.connect(n, sfu) for n in ("alice", "carol")]
        server_key = await alice.client.push_server_key()
        assert len(server_key) == 65 and server_key[0] == 0x04

        # Endpoints off the server's allow-list are refused, typed.
        keys = conclave.PushKeys.generate()
        for endpoint in ("https://push.example.org/push/alice", service.endpoint("x").replace("https", "http")):
            with pytest.raises(conclave.ConclaveError.PushEndpointRefused):
                await alice.client.register_push(endpoint, keys)
        assert await alice.client.unregister_push() is False

        # Both register (Alice's keys through their stored form), then go offline.
        stored_keys = keys.export()
        await alice.client.register_push(service.endpoint("alice"),
                                         conclave.PushKeys.restore(stored_keys))
        carol_keys = conclave.PushKeys.generate()
        await carol.client.register_push(service.endpoint("carol"), carol_keys)
        alice_stored = await alice.client.export_credentials()
        for person in (alice, carol):
            await person.client.disconnect()

        # Bob calls Alice (invitations are urgent by default); Dave, with urgent
        # invitations turned off, calls Carol.
        bob = await Person.connect("bob", sfu)
        started = await bob.client.start_meeting([alice.user_id], [AUDIO], MeetingRecorder())
        assert started.report.invited_users == [alice.user_id]
        quiet = sfu.options()
        quiet.urgent_invitations = False
        dave_credentials = conclave.Credentials.create(
            f"dave-{uuid.uuid4().hex[:12]}", conclave.UserKey.generate())
        dave = await conclave.connect(quiet, dave_credentials, ClientEvents())
        started = await dave.start_meeting([carol.user_id], [AUDIO], MeetingRecorder())
        assert started.report.invited_users == [carol.user_id]

        wake_ups = {}
        for _ in range(2):
            path, headers, body = await asyncio.to_thread(service.next_request, "wake-up")
            wake_ups[path] = (headers, body)
        headers, body = wake_ups["/push/alice"]
        assert headers["content-encoding"] == "aes128gcm"
        assert headers["urgency"] == "high"
        # Signed with the key the server handed out (RFC 8292 `k=`).
        k = headers["authorization"].split("k=", 1)[1]
        assert base64.urlsafe_b64decode(k + "=" * (-len(k) % 4)) == server_key

        wake = conclave.open_wake_up(conclave.PushKeys.restore(stored_keys), body)
        assert wake.action == conclave.WakeAction.CONNECT_AND_FETCH
        assert wake.urgent is True
        assert wake.pending >= 1
        with pytest.raises(conclave.ConclaveError.InvalidPushMessage):
            conclave.open_wake_up(carol_keys, body)  # not Carol's

        headers, body = wake_ups["/push/carol"]
        assert headers["urgency"] == "normal"
        carol_wake = conclave.open_wake_up(carol_keys, body)
        assert carol_wake.urgent is False and carol_wake.pending >= 1

        # The wake-up's answer: connect, and the invitation is there.
        events = ClientEvents()
        client = await conclave.connect(
            sfu.options(), conclave.Credentials.restore(alice_stored), events)
        invited = await events.wait_for(
            lambda e: isinstance(e, conclave.ClientEvent.INVITED), "Alice's invitation")
        assert invited.invitation.inviter.user_id == bob.user_id
        for c in (client, dave, bob.client):
            await c.disconnect()

    asyncio.run(run())
