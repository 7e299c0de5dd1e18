"""Fixtures: a real `conclave-sfu` process on 127.0.0.1, and clients made from Python.

The SFU binary is ``$CONCLAVE_SFU_BIN`` when set, else it is built with cargo from the
workspace (profile ``$CONCLAVE_SFU_PROFILE``, default dev).
Waits are bounded by ``WAIT`` and only bound them: no test asserts on timing.
"""

import asyncio
import json
import os
import queue
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pytest

import conclave

WORKSPACE = Path(__file__).resolve().parents[3]
WAIT = 45.0


def sfu_binary() -> Path:
    explicit = os.environ.get("CONCLAVE_SFU_BIN")
    if explicit:
        return Path(explicit)
    cargo = os.environ.get("CARGO", "cargo")
    profile = os.environ.get("CONCLAVE_SFU_PROFILE", "dev")
    subprocess.run([cargo, "build", "--locked", "--profile", profile, "-p", "conclave-sfu",
                    "--bin", "conclave-sfu"], cwd=WORKSPACE, check=True)
    meta = json.loads(subprocess.run(
        [cargo, "metadata", "--format-version", "1", "--no-deps", "--locked"],
        cwd=WORKSPACE, check=True, capture_output=True).stdout)
    return Path(meta["target_directory"]) / ("debug" if profile == "dev" else profile) / "conclave-sfu"


class Sfu:
    """One `conclave-sfu` process with a development certificate in its data dir."""

    def __init__(self, binary: Path, data_dir: Path, env: dict = None):
        self.binary = binary
        self.data_dir = data_dir
        self.env = dict(env or {})  # more settings (CONCLAVE_...), over the tests' own
        self.listen = "127.0.0.1:0"
        self.process = None
        self.addr = None
        self.fingerprint = None
        self.log = data_dir / "sfu.log"

    def start(self) -> None:
        env = dict(os.environ)
        # Every test client registers from 127.0.0.1 (security review H3 limits
        # registrations per address).
        env["CONCLAVE_LIMITS__REGISTRATIONS_PER_IP_BURST"] = "10000"
        env["CONCLAVE_LIMITS__REGISTRATIONS_PER_IP_PER_HOUR"] = "10000"
        env.setdefault("RUST_LOG", "warn")
        env.update(self.env)
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [str(self.binary), "--listen", self.listen, "--data-dir", str(self.data_dir),
                 "--metrics-listen", "off"],
                stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL, env=env, text=True)
        lines = queue.Queue()

        def drain(stream):
            for line in stream:
                lines.put(line.strip())

        threading.Thread(target=drain, args=(self.process.stdout,), daemon=True).start()
        deadline = time.monotonic() + WAIT
        while self.addr is None or self.fingerprint is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.process.poll() is not None:
                raise RuntimeError(f"conclave-sfu did not start; log: {self.log.read_text()[-4000:]}")
            try:
                line = lines.get(timeout=min(remaining, 1.0))
            except queue.Empty:
                continue
            if line.startswith("conclave-sfu listening on "):
                self.addr = line.split()[3]
            elif line.startswith("certificate sha-256 fingerprint: "):
                self.fingerprint = line.split(": ", 1)[1]
        # A restart listens on the same address (and keeps data and certificate).
        self.listen = self.addr

    def kill(self) -> None:
        """Kills the process at once (no drain), as a crash would."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=WAIT)

    def options(self) -> "conclave.ClientOptions":
        return conclave.ClientOptions(
            server=self.addr,
            trust=conclave.ServerTrust.PINNED_SHA256(fingerprint=self.fingerprint),
            idle_timeout_ms=1500,
        )


@pytest.fixture(scope="session")
def sfu_bin() -> Path:
    return sfu_binary()


@pytest.fixture
def sfu(sfu_bin):
    with tempfile.TemporaryDirectory(prefix="conclave-pytest-") as data:
        server = Sfu(sfu_bin, Path(data))
        server.start()
        try:
            yield server
        finally:
            server.kill()


class ClientEvents(conclave.ClientListener):
    """Records a client's events (called from the SDK's threads)."""

    def __init__(self):
        self.events = queue.Queue()
        self.seen = []

    def on_event(self, event):
        self.events.put(event)

    async def wait_for(self, predicate, what: str):
        """The first event (seen before or arriving within WAIT) matching `predicate`."""
        for event in self.seen:
            if predicate(event):
                return event
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            try:
                event = self.events.get_nowait()
            except queue.Empty:
                await asyncio.sleep(0.01)
                continue
            self.seen.append(event)
            if predicate(event):
                return event
        raise AssertionError(f"no {what} within {WAIT} s; events: {self.seen}")


class MeetingRecorder(conclave.MeetingListener):
    """Records a meeting's events and frames (called from the SDK's threads)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.events = []
        self.frames = []

    def on_event(self, event):
        with self.lock:
            self.events.append(event)

    def on_frames(self, frames):
        with self.lock:
            self.frames.extend(frames)

    def snapshot(self):
        with self.lock:
            return list(self.events), list(self.frames)

    async def wait_until(self, condition, what: str):
        """Waits (bounded) until `condition(events, frames)` holds."""
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            events, frames = self.snapshot()
            if condition(events, frames):
                return events, frames
            await asyncio.sleep(0.01)
        events, frames = self.snapshot()
        raise AssertionError(f"no {what} within {WAIT} s; events: {events}; {len(frames)} frames")


class Person:
    """A user with one device, connected to the SFU."""

    def __init__(self, name: str, client, events: ClientEvents, credentials, user_key):
        self.name = name
        self.client = client
        self.events = events
        self.credentials = credentials
        self.user_key = user_key
        self.user_id = client.user_id()

    @classmethod
    async def connect(cls, name: str, sfu: Sfu) -> "Person":
        # A username is owned by the first identity key that registers it: unique per test.
        username = f"{name}-{uuid.uuid4().hex[:12]}"
        user_key = conclave.UserKey.generate()
        credentials = conclave.Credentials.create(username, user_key)
        events = ClientEvents()
        client = await conclave.connect(sfu.options(), credentials, events)
        return cls(name, client, events, credentials, user_key)

    async def invitation(self) -> "conclave.Invitation":
        event = await self.events.wait_for(
            lambda e: isinstance(e, conclave.ClientEvent.INVITED), f"invitation for {self.name}")
        return event.invitation


async def send_until_joined(meeting, kind, data: bytes) -> None:
    """Sends one frame, retrying while the meeting's room is not joined yet."""
    deadline = time.monotonic() + WAIT
    while True:
        try:
            meeting.send_frame(kind, False, data)
            return
        except (conclave.ConclaveError.NotJoined, conclave.ConclaveError.SendingPaused):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.02)
