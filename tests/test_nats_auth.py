"""NATS authentication and TLS against real nats-server configurations, and what a rejected login looks like.

Each test starts its own nats-server with an ``authorization`` or ``tls`` block; the exporter's own
connection code (``connect_nats``) logs in and reads ``$JS.API.INFO``. Then the daemon with credentials
the server rejects: ``nats_up 0``, one log line naming the server and the reason while it keeps retrying
with backoff, and no secret anywhere in its logs, errors or metrics.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import secrets
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import nkeys
import pytest
from nats.aio.client import Client
from support.pki import Pki, make_authority, make_pki
from support.waiting import wait_for

from exporter.app import ExporterApp
from exporter.connection import NatsConnectError, connect_nats
from exporter.natsserver import NatsServerProcess, free_port
from exporter.settings import (
    CollectionSettings,
    NatsAuth,
    NatsSettings,
    NatsTls,
    Secret,
    Settings,
    WebSettings,
)

PASSWORD = "nats-pw-" + secrets.token_hex(8)
TOKEN = "nats-token-" + secrets.token_hex(8)


def make_nkey(directory: Path, name: str) -> tuple[Path, str, str]:
    """A user NKey: (seed file, seed, public key)."""
    seed = nkeys.encode_seed(secrets.token_bytes(32), nkeys.PREFIX_BYTE_USER)
    public_key = nkeys.from_seed(bytearray(seed)).public_key.decode()
    seed_file = directory / f"{name}.nk"
    seed_file.write_bytes(seed + b"\n")
    seed_file.chmod(0o600)
    return seed_file, seed.decode(), public_key


@contextlib.contextmanager
def nats_server(tmp_path: Path, extra_config: str) -> Iterator[NatsServerProcess]:
    server = NatsServerProcess(
        store_dir=tmp_path / "store", extra_config=extra_config, log_file=tmp_path / "nats.log"
    )
    server.start()
    try:
        yield server
    finally:
        server.cleanup()


def tls_block(pki: Pki, *, verify: bool) -> str:
    lines = [
        f'  cert_file: "{pki.server.cert_file}"',
        f'  key_file: "{pki.server.key_file}"',
        f'  ca_file: "{pki.ca.cert_file}"',
        "  timeout: 2",
    ]
    if verify:
        lines.append("  verify: true")
    return "tls {\n" + "\n".join(lines) + "\n}\n"


async def jetstream_account_info(nc: Client) -> dict[str, object]:
    reply = await nc.request("$JS.API.INFO", b"", timeout=5)
    info: dict[str, object] = json.loads(reply.data)
    assert "error" not in info, info
    assert info["type"] == "io.nats.jetstream.api.v1.account_info_response"
    return info


async def assert_connects(settings: NatsSettings) -> None:
    nc = await connect_nats(settings, reconnect=False)
    try:
        await jetstream_account_info(nc)
    finally:
        await nc.close()


# -- the login methods the exporter supports ------------------------------------------------------------


async def test_user_and_password(tmp_path: Path):
    with nats_server(tmp_path, f'authorization {{ user: exporter, password: "{PASSWORD}" }}') as server:
        await assert_connects(
            NatsSettings(servers=(server.url,), auth=NatsAuth(user="exporter", password=Secret(PASSWORD)))
        )
        with pytest.raises(NatsConnectError, match="Authorization Violation"):
            await connect_nats(NatsSettings(servers=(server.url,)), reconnect=False)


async def test_token(tmp_path: Path):
    with nats_server(tmp_path, f'authorization {{ token: "{TOKEN}" }}') as server:
        await assert_connects(NatsSettings(servers=(server.url,), auth=NatsAuth(token=Secret(TOKEN))))
        with pytest.raises(NatsConnectError, match="Authorization Violation"):
            await connect_nats(
                NatsSettings(servers=(server.url,), auth=NatsAuth(token=Secret("wrong"))), reconnect=False
            )


async def test_nkey_seed_file(tmp_path: Path):
    seed_file, _, public_key = make_nkey(tmp_path, "exporter")
    with nats_server(tmp_path, f'authorization {{ users = [ {{ nkey: "{public_key}" }} ] }}') as server:
        await assert_connects(
            NatsSettings(servers=(server.url,), auth=NatsAuth(nkey_seed_file=str(seed_file)))
        )
        stranger_seed_file, _, _ = make_nkey(tmp_path, "stranger")
        with pytest.raises(NatsConnectError, match="Authorization Violation"):
            await connect_nats(
                NatsSettings(servers=(server.url,), auth=NatsAuth(nkey_seed_file=str(stranger_seed_file))),
                reconnect=False,
            )


async def test_tls_with_a_test_ca(tmp_path: Path):
    pki = make_pki(tmp_path / "pki")
    with nats_server(tmp_path, tls_block(pki, verify=False)) as server:
        url = f"tls://127.0.0.1:{server.port}"
        await assert_connects(NatsSettings(servers=(url,), tls=NatsTls(ca_file=str(pki.ca.cert_file))))
        # The system CAs do not vouch for the test CA's server certificate.
        stranger_ca = make_authority(tmp_path, "stranger-ca")
        with pytest.raises(NatsConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            await connect_nats(
                NatsSettings(servers=(url,), tls=NatsTls(ca_file=str(stranger_ca.cert_file))), reconnect=False
            )


async def test_tls_with_client_certificates_required(tmp_path: Path):
    pki = make_pki(tmp_path / "pki")
    with nats_server(tmp_path, tls_block(pki, verify=True)) as server:
        url = f"tls://127.0.0.1:{server.port}"
        client_tls = NatsTls(
            ca_file=str(pki.ca.cert_file),
            cert_file=str(pki.client.cert_file),
            key_file=str(pki.client.key_file),
        )
        await assert_connects(NatsSettings(servers=(url,), tls=client_tls))
        # TLS 1.3 refuses a missing client certificate after the client's side of the handshake: the
        # client sees either the server's alert or the connection closing, whichever it reads first.
        with pytest.raises(NatsConnectError):
            await connect_nats(
                NatsSettings(servers=(url,), tls=NatsTls(ca_file=str(pki.ca.cert_file))), reconnect=False
            )


async def test_tls_and_a_password_together(tmp_path: Path):
    pki = make_pki(tmp_path / "pki")
    config = tls_block(pki, verify=False) + f'authorization {{ user: exporter, password: "{PASSWORD}" }}\n'
    with nats_server(tmp_path, config) as server:
        await assert_connects(
            NatsSettings(
                servers=(f"tls://127.0.0.1:{server.port}",),
                auth=NatsAuth(user="exporter", password=Secret(PASSWORD)),
                tls=NatsTls(ca_file=str(pki.ca.cert_file)),
            )
        )


# -- the daemon with credentials the server rejects ---------------------------------------------------


def rejected_setup(tmp_path: Path, kind: str, port: int) -> tuple[str, NatsSettings, str]:
    """(server config, the exporter's wrong settings, the secret that must never show) for one login kind."""
    url = f"nats://127.0.0.1:{port}"
    wrong = "wrong-" + secrets.token_hex(8)
    if kind == "password":
        auth = NatsAuth(user="exporter", password=Secret(wrong))
        return (
            f'authorization {{ user: exporter, password: "{PASSWORD}" }}',
            NatsSettings((url,), auth),
            wrong,
        )
    if kind == "password in the URL":
        config = f'authorization {{ user: exporter, password: "{PASSWORD}" }}'
        return config, NatsSettings((f"nats://exporter:{wrong}@127.0.0.1:{port}",)), wrong
    if kind == "token":
        return (
            f'authorization {{ token: "{TOKEN}" }}',
            NatsSettings((url,), NatsAuth(token=Secret(wrong))),
            wrong,
        )
    _, _, allowed_key = make_nkey(tmp_path, "allowed")
    seed_file, seed, _ = make_nkey(tmp_path, "rejected")
    config = f'authorization {{ users = [ {{ nkey: "{allowed_key}" }} ] }}'
    return config, NatsSettings((url,), NatsAuth(nkey_seed_file=str(seed_file))), seed


def authentication_errors(server_log: Path) -> int:
    """Failed logins as the server counts them, from its own log."""
    try:
        return server_log.read_text(encoding="utf-8", errors="replace").count("authentication error")
    except FileNotFoundError:
        return 0


@pytest.mark.parametrize("kind", ["password", "password in the URL", "token", "nkey"])
async def test_rejected_credentials_log_once_retry_and_leak_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, kind: str
):
    caplog.set_level(logging.DEBUG)
    port = free_port()
    server_config, nats_settings, secret = rejected_setup(tmp_path, kind, port)
    settings = Settings(
        nats=nats_settings,
        web=WebSettings(listen_address="127.0.0.1:0"),
        collection=CollectionSettings(interval_seconds=1.0, deadline_seconds=0.5),
    )
    server_log = tmp_path / "nats.log"
    server = NatsServerProcess(
        store_dir=tmp_path / "store", extra_config=server_config, port=port, log_file=server_log
    )
    exposition = ""
    with server:
        app = ExporterApp(settings)
        await app.start()
        try:
            # Three refused logins take about two seconds with the daemon's backoff (0.5s, doubling).
            await wait_for(lambda: authentication_errors(server_log) >= 3, timeout=20, message="three logins")
            async with (
                aiohttp.ClientSession() as session,
                session.get(f"http://127.0.0.1:{app.port}/metrics") as r,
            ):
                exposition = await r.text()
        finally:
            await app.stop()

    assert re.search(r"^nats_up 0(\.0)?$", exposition, re.MULTILINE), exposition
    reasons = [record for record in caplog.records if "Authorization Violation" in record.getMessage()]
    assert len(reasons) == 1, [record.getMessage() for record in reasons]
    line = reasons[0].getMessage()
    assert f"127.0.0.1:{port}" in line
    assert reasons[0].levelno == logging.WARNING
    assert "\n" not in line
    assert reasons[0].exc_info is None  # a sentence, not a traceback

    everything = caplog.text + "\n".join(record.getMessage() for record in caplog.records) + exposition
    assert secret not in everything
    assert PASSWORD not in everything
    assert TOKEN not in everything
