"""Connecting from Python: server authentication and stored credentials."""

import asyncio

import pytest

import conclave
from conftest import ClientEvents, Person


def test_a_server_whose_certificate_is_not_the_pinned_one_is_refused(sfu):
    async def run():
        credentials = conclave.Credentials.create("mallory-target", conclave.UserKey.generate())
        wrong_pin = "00" * 32
        options = conclave.ClientOptions(
            server=sfu.addr, trust=conclave.ServerTrust.PINNED_SHA256(fingerprint=wrong_pin))
        with pytest.raises(conclave.ConclaveError.Certificate):
            await conclave.connect(options, credentials, ClientEvents())

    asyncio.run(run())


def test_a_malformed_pin_is_an_invalid_argument(sfu):
    async def run():
        credentials = conclave.Credentials.create("pin-typo", conclave.UserKey.generate())
        options = conclave.ClientOptions(
            server=sfu.addr, trust=conclave.ServerTrust.PINNED_SHA256(fingerprint="not hex"))
        with pytest.raises(conclave.ConclaveError.InvalidArgument):
            await conclave.connect(options, credentials, ClientEvents())

    asyncio.run(run())


def test_exported_credentials_come_back_as_the_same_device(sfu):
    async def run():
        person = await Person.connect("dana", sfu)
        stored = await person.client.export_credentials()
        device = person.client.device_id()
        await person.client.disconnect()
        with pytest.raises(conclave.ConclaveError.Closed):
            await person.client.export_credentials()

        restored = conclave.Credentials.restore(stored)
        assert restored.device_id() == device
        client = await conclave.connect(sfu.options(), restored, ClientEvents())
        assert client.device_id() == device
        assert client.user_id() == person.user_id
        await client.disconnect()

        key_back = conclave.UserKey.restore(person.user_key.export())
        assert key_back.public_key() == person.user_key.public_key()

    asyncio.run(run())


def test_bad_stored_bytes_and_ids_are_typed_errors():
    with pytest.raises(conclave.ConclaveError.Credentials):
        conclave.Credentials.restore(b"not credentials")
    with pytest.raises(conclave.ConclaveError.Credentials):
        conclave.UserKey.restore(b"short")
    with pytest.raises(conclave.ConclaveError.InvalidArgument):
        conclave.user_id_for_username("   ")
    assert conclave.user_id_for_username(" Alice ") == conclave.user_id_for_username("alice")


def test_the_documented_example_runs(sfu):
    """examples/three_party_meeting.py, as docs/bindings.md tells a developer to run it."""
    import subprocess
    import sys
    from pathlib import Path

    example = Path(__file__).resolve().parents[1] / "examples" / "three_party_meeting.py"
    done = subprocess.run(
        [sys.executable, str(example), "--server", sfu.addr, "--pin", sfu.fingerprint],
        capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "rekeyed from epoch" in done.stdout
