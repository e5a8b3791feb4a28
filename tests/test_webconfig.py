"""The exporter-toolkit web config: basic auth, TLS and client certificates against a real aiohttp server."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import re
import shutil
import ssl
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import bcrypt
import pytest
from aiohttp import web
from cryptography import x509
from support.pki import Issued, Pki, client_context, make_authority, make_pki

from exporter import webconfig
from exporter.errors import ConfigError
from exporter.webconfig import BasicAuthChecker, WebConfig, load_web_config

REPO = Path(__file__).resolve().parent.parent
PASSWORD = "s3cret-scrape-password"
# Cost 4 keeps the tests fast; the cache test uses a realistic cost on purpose.
PASSWORD_HASH = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()


# -- a real aiohttp server behind the web config ------------------------------------------------------


@contextlib.asynccontextmanager
async def serving(config: WebConfig) -> AsyncIterator[int]:
    """An aiohttp app with /metrics and /healthz behind the config, on a free loopback port."""

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(text="nats_up 1\n")

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    middleware = config.middleware()
    app = web.Application(middlewares=[middleware] if middleware is not None else [])
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=config.ssl_context())
        await site.start()
        yield int(runner.addresses[0][1])
    finally:
        await runner.cleanup()


async def fetch(url: str, *, auth: tuple[str, str] | None = None, ssl_context: ssl.SSLContext | None = None):
    """(status, headers, body) of one GET, with a deadline."""
    headers = {"Authorization": basic_header(*auth)} if auth else {}
    timeout = aiohttp.ClientTimeout(total=5)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.get(url, headers=headers, ssl=ssl_context if ssl_context is not None else True) as response,
    ):
        return response.status, response.headers, await response.text()


def basic_header(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def write_config(directory: Path, text: str) -> str:
    path = directory / "web.yml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return str(path)


def tls_config(pki: Pki, extra: str = "") -> str:
    return (
        f"tls_server_config:\n  cert_file: {pki.server.cert_file}\n  key_file: {pki.server.key_file}\n"
        + textwrap.indent(textwrap.dedent(extra), "  ")
    )


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki")


# -- basic auth ---------------------------------------------------------------------------------------


async def test_basic_auth_admits_only_the_right_password(tmp_path: Path):
    config = load_web_config(write_config(tmp_path, f"basic_auth_users:\n  prometheus: '{PASSWORD_HASH}'\n"))
    async with serving(config) as port:
        url = f"http://127.0.0.1:{port}/metrics"
        status, headers, _ = await fetch(url)
        assert status == 401
        assert headers["WWW-Authenticate"] == 'Basic realm="nats-jetstream-exporter"'
        assert (await fetch(url, auth=("prometheus", "wrong")))[0] == 401
        assert (await fetch(url, auth=("nobody", PASSWORD)))[0] == 401
        assert (await fetch(url, auth=("prometheus", PASSWORD + "x")))[0] == 401
        status, _, body = await fetch(url, auth=("prometheus", PASSWORD))
        assert (status, body) == (200, "nats_up 1\n")


async def test_malformed_authorization_headers_are_refused(tmp_path: Path):
    config = load_web_config(write_config(tmp_path, f"basic_auth_users:\n  prometheus: '{PASSWORD_HASH}'\n"))
    good = basic_header("prometheus", PASSWORD).removeprefix("Basic ")
    async with serving(config) as port, aiohttp.ClientSession() as session:
        url = f"http://127.0.0.1:{port}/metrics"
        for header in (
            f"Bearer {good}",
            "Basic !!!not-base64",
            "Basic " + base64.b64encode(b"no-colon").decode(),
        ):
            async with session.get(url, headers={"Authorization": header}) as response:
                assert response.status == 401, header
        async with session.get(url, headers={"Authorization": f"Basic {good}"}) as response:
            assert response.status == 200


async def test_probe_paths_need_no_credentials(tmp_path: Path):
    config = load_web_config(write_config(tmp_path, f"basic_auth_users:\n  prometheus: '{PASSWORD_HASH}'\n"))
    async with serving(config) as port:
        assert (await fetch(f"http://127.0.0.1:{port}/healthz"))[0] == 200
        assert (await fetch(f"http://127.0.0.1:{port}/metrics"))[0] == 401


async def test_a_password_longer_than_bcrypt_allows_is_refused_not_an_error(tmp_path: Path):
    long_password = "p" * 80
    hashed = bcrypt.hashpw(long_password[:72].encode(), bcrypt.gensalt(4)).decode()
    checker = BasicAuthChecker({"prometheus": hashed.encode()})
    header = basic_header("prometheus", long_password)
    assert await checker.allows(header) is False


async def test_successful_checks_are_cached_so_scrapes_skip_bcrypt():
    # Cost 12 takes a quarter of a second or more per check; a cached check takes microseconds.
    slow_hash = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(12))
    checker = BasicAuthChecker({"prometheus": slow_hash})
    header = basic_header("prometheus", PASSWORD)
    started = time.perf_counter()
    assert await checker.allows(header)
    first = time.perf_counter() - started
    started = time.perf_counter()
    for _ in range(20):
        assert await checker.allows(header)
    twenty_cached = time.perf_counter() - started
    assert twenty_cached * 10 < first, (first, twenty_cached)


async def test_the_cache_is_bounded_and_holds_only_successes(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(webconfig, "AUTH_CACHE_LIMIT", 3)
    users = {f"user{n}": bcrypt.hashpw(f"pw{n}".encode(), bcrypt.gensalt(4)) for n in range(5)}
    checker = BasicAuthChecker(users)

    assert not await checker.allows(basic_header("user0", "wrong"))
    assert len(checker._verified) == 0
    for n in range(5):
        assert await checker.allows(basic_header(f"user{n}", f"pw{n}"))
        assert len(checker._verified) == min(n + 1, 3)


# -- TLS ----------------------------------------------------------------------------------------------


async def test_tls_serves_the_configured_certificate(tmp_path: Path, pki: Pki):
    config = load_web_config(write_config(tmp_path, tls_config(pki)))
    async with serving(config) as port:
        status, _, body = await fetch(f"https://127.0.0.1:{port}/metrics", ssl_context=client_context(pki))
        assert (status, body) == (200, "nats_up 1\n")
        assert await served_serial(port, pki) == pki.server.serial
        with pytest.raises(aiohttp.ClientError):
            await fetch(f"http://127.0.0.1:{port}/metrics")


async def test_tls_and_basic_auth_together(tmp_path: Path, pki: Pki):
    text = tls_config(pki) + f"basic_auth_users:\n  prometheus: '{PASSWORD_HASH}'\n"
    config = load_web_config(write_config(tmp_path, text))
    async with serving(config) as port:
        url = f"https://127.0.0.1:{port}/metrics"
        assert (await fetch(url, ssl_context=client_context(pki)))[0] == 401
        assert (await fetch(url, auth=("prometheus", PASSWORD), ssl_context=client_context(pki)))[0] == 200


async def test_client_certificates_are_verified_when_required(tmp_path: Path, pki: Pki):
    extra = f"client_auth_type: RequireAndVerifyClientCert\nclient_ca_file: {pki.ca.cert_file}\n"
    config = load_web_config(write_config(tmp_path, tls_config(pki, extra)))
    stranger_ca = make_authority(tmp_path, "stranger-ca")
    stranger = stranger_ca.issue(tmp_path, "stranger", server=False)
    async with serving(config) as port:
        url = f"https://127.0.0.1:{port}/metrics"
        with pytest.raises((aiohttp.ClientError, ssl.SSLError, ConnectionError)):
            await fetch(url, ssl_context=client_context(pki))
        with pytest.raises((aiohttp.ClientError, ssl.SSLError, ConnectionError)):
            await fetch(url, ssl_context=client_context(pki, stranger))
        status, _, body = await fetch(url, ssl_context=client_context(pki, pki.client))
        assert (status, body) == (200, "nats_up 1\n")


async def test_verify_client_cert_if_given_admits_clients_without_one(tmp_path: Path, pki: Pki):
    extra = f"client_auth_type: VerifyClientCertIfGiven\nclient_ca_file: {pki.ca.cert_file}\n"
    config = load_web_config(write_config(tmp_path, tls_config(pki, extra)))
    stranger = make_authority(tmp_path, "stranger-ca").issue(tmp_path, "stranger", server=False)
    async with serving(config) as port:
        url = f"https://127.0.0.1:{port}/metrics"
        assert (await fetch(url, ssl_context=client_context(pki)))[0] == 200
        assert (await fetch(url, ssl_context=client_context(pki, pki.client)))[0] == 200
        with pytest.raises((aiohttp.ClientError, ssl.SSLError, ConnectionError)):
            await fetch(url, ssl_context=client_context(pki, stranger))


async def test_min_version_refuses_older_clients(tmp_path: Path, pki: Pki):
    config = load_web_config(write_config(tmp_path, tls_config(pki, "min_version: TLS13\n")))
    tls12_only = client_context(pki)
    tls12_only.maximum_version = ssl.TLSVersion.TLSv1_2
    async with serving(config) as port:
        url = f"https://127.0.0.1:{port}/metrics"
        with pytest.raises((aiohttp.ClientError, ssl.SSLError)):
            await fetch(url, ssl_context=tls12_only)
        assert (await fetch(url, ssl_context=client_context(pki)))[0] == 200


async def test_a_renewed_certificate_is_served_without_restart(
    tmp_path: Path, pki: Pki, caplog: pytest.LogCaptureFixture
):
    extra = f"client_auth_type: RequireAndVerifyClientCert\nclient_ca_file: {pki.ca.cert_file}\n"
    config = load_web_config(write_config(tmp_path, tls_config(pki, extra)))
    async with serving(config) as port:
        assert await served_serial(port, pki, pki.client) == pki.server.serial
        renewed = pki.ca.issue(tmp_path, "renewed", server=True)
        # Kubernetes swaps a Secret volume's files atomically; Path.replace does the same here.
        renewed.key_file.replace(pki.server.key_file)
        renewed.cert_file.replace(pki.server.cert_file)
        assert await served_serial(port, pki, pki.client) == renewed.serial
        # Client certificates are still required and verified after the switch.
        url = f"https://127.0.0.1:{port}/metrics"
        with pytest.raises((aiohttp.ClientError, ssl.SSLError, ConnectionError)):
            await fetch(url, ssl_context=client_context(pki))
        assert (await fetch(url, ssl_context=client_context(pki, pki.client)))[0] == 200

        # A broken renewal keeps the last good certificate and says so once.
        pki.server.cert_file.write_text("not a certificate\n", encoding="utf-8")
        with caplog.at_level(logging.WARNING, logger="exporter.webconfig"):
            assert await served_serial(port, pki, pki.client) == renewed.serial
            assert await served_serial(port, pki, pki.client) == renewed.serial
        warnings = [
            r.getMessage()
            for r in caplog.records
            if r.name == "exporter.webconfig" and r.levelno >= logging.WARNING
        ]
        assert len(warnings) == 1
        assert "keeping the previous TLS certificate" in warnings[0]


async def served_serial(port: int, pki: Pki, client: Issued | None = None) -> int:
    """The serial number of the certificate the server presents in a fresh handshake."""
    _, writer = await asyncio.wait_for(
        asyncio.open_connection("127.0.0.1", port, ssl=client_context(pki, client)), timeout=5
    )
    try:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await writer.wait_closed()
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


# -- response headers ---------------------------------------------------------------------------------


async def test_configured_headers_are_added_to_every_response(tmp_path: Path):
    text = f"""\
        http_server_config:
          http2: false
          headers:
            X-Frame-Options: deny
            X-Content-Type-Options: nosniff
            Content-Security-Policy: ""
        basic_auth_users:
          prometheus: '{PASSWORD_HASH}'
        """
    config = load_web_config(write_config(tmp_path, text))
    assert config.headers == {"X-Frame-Options": "deny", "X-Content-Type-Options": "nosniff"}
    async with serving(config) as port:
        for path, auth, expected in (
            ("/metrics", None, 401),
            ("/metrics", ("prometheus", PASSWORD), 200),
            ("/missing", ("prometheus", PASSWORD), 404),
        ):
            status, headers, _ = await fetch(f"http://127.0.0.1:{port}{path}", auth=auth)
            assert status == expected
            assert headers["X-Frame-Options"] == "deny"
            assert headers["X-Content-Type-Options"] == "nosniff"


# -- loading ------------------------------------------------------------------------------------------


def test_an_empty_file_means_plain_http_without_auth(tmp_path: Path):
    config = load_web_config(write_config(tmp_path, ""))
    assert config.ssl_context() is None
    assert config.middleware() is None
    assert config.summary() == "plain HTTP"


def test_relative_paths_are_resolved_against_the_config_file(tmp_path: Path, pki: Pki):
    config_dir = pki.server.cert_file.parent
    path = config_dir / "web.yml"
    path.write_text("tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n", encoding="utf-8")
    config = load_web_config(str(path))
    assert config.tls is not None
    assert config.tls.cert_file == str(pki.server.cert_file)
    assert isinstance(config.ssl_context(), ssl.SSLContext)
    assert config.summary() == "TLS (NoClientCert)"


def test_the_documented_example_is_valid(tmp_path: Path, pki: Pki):
    text = (REPO / "docs" / "deployment.md").read_text(encoding="utf-8")
    (example,) = [
        block for block in re.findall(r"```yaml\n(.*?)```", text, re.DOTALL) if "tls_server_config" in block
    ]
    web_dir = tmp_path / "web"
    web_dir.mkdir()
    for source, name in (
        (pki.server.cert_file, "tls.crt"),
        (pki.server.key_file, "tls.key"),
        (pki.ca.cert_file, "ca.crt"),
    ):
        shutil.copy(source, web_dir / name)
    path = write_config(tmp_path, example.replace("/etc/nats-jetstream-exporter/web", str(web_dir)))
    config = load_web_config(path)
    assert (
        config.summary() == "TLS (RequireAndVerifyClientCert), basic auth for 1 user(s), 1 response header(s)"
    )
    assert bcrypt.checkpw(b"change-me", config.basic_auth_users["prometheus"])


def test_summary_names_no_user(tmp_path: Path, pki: Pki):
    extra = f"client_auth_type: RequireAndVerifyClientCert\nclient_ca_file: {pki.ca.cert_file}\n"
    text = tls_config(pki, extra) + f"basic_auth_users:\n  prometheus: '{PASSWORD_HASH}'\n"
    summary = load_web_config(write_config(tmp_path, text)).summary()
    assert summary == "TLS (RequireAndVerifyClientCert), basic auth for 1 user(s)"


def test_every_hash_the_pattern_accepts_is_one_bcrypt_can_check():
    for cost in (4, 5):
        for _ in range(20):
            hashed = bcrypt.hashpw(b"x", bcrypt.gensalt(cost))
            for prefix in (b"$2a$", b"$2b$", b"$2y$"):
                candidate = prefix + hashed[4:]
                assert webconfig.BCRYPT_HASH.fullmatch(candidate.decode())
                assert bcrypt.checkpw(b"x", candidate)


TLS = "tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n"
INVALID_CONFIGS = [
    ("tls_server_confg: {}\n", "tls_server_confg", "did you mean 'tls_server_config'"),
    ("rate_limit: {interval: 1s, burst: 2}\n", "rate_limit", "rate limiting is not supported"),
    ("- a list\n", None, "must be a mapping"),
    ("basic_auth_users: [alice]\n", "basic_auth_users", "must be a mapping"),
    ("basic_auth_users:\n  alice: '$2y$10$tooshort'\n", "basic_auth_users.alice", "not a bcrypt hash"),
    ("basic_auth_users:\n  alice: plaintext-password\n", "basic_auth_users.alice", "not a bcrypt hash"),
    ("basic_auth_users:\n  'a:b': '{hash}'\n", "basic_auth_users.a:b", "contain no ':'"),
    ("tls_server_config:\n  cert_file: {cert}\n", "tls_server_config.key_file", "is required"),
    ("tls_server_config:\n  cert: PEM\n  key: PEM\n", "tls_server_config.cert", "use cert_file"),
    (
        TLS + "  cipher_suites: [TLS_AES_128_GCM_SHA256]\n",
        "tls_server_config.cipher_suites",
        "not supported",
    ),
    (
        "tls_server_config:\n  cert_file: {missing}\n  key_file: {key}\n",
        "tls_server_config.cert_file",
        "No such file or directory",
    ),
    (
        "tls_server_config:\n  cert_file: {cert}\n  key_file: {other_key}\n",
        "tls_server_config.cert_file",
        "matching private key",
    ),
    (
        "tls_server_config:\n  cert_file: {cert}\n  key_file: {cert}\n",
        "tls_server_config.cert_file",
        "matching private key",
    ),
    (
        "tls_server_config:\n  cert_file: {encrypted_cert}\n  key_file: {encrypted_key}\n",
        "tls_server_config.key_file",
        "encrypted",
    ),
    (
        TLS + "  client_auth_type: RequireAndVerify\n",
        "tls_server_config.client_auth_type",
        "did you mean 'RequireAndVerifyClientCert'",
    ),
    (
        TLS + "  client_auth_type: RequireAnyClientCert\n",
        "tls_server_config.client_auth_type",
        "not supported",
    ),
    (
        TLS + "  client_ca_file: {ca}\n",
        "tls_server_config.client_auth_type",
        "never verifies client certificates",
    ),
    (
        TLS + "  client_auth_type: RequireAndVerifyClientCert\n",
        "tls_server_config.client_ca_file",
        "is required with client_auth_type RequireAndVerifyClientCert",
    ),
    (
        TLS + "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: {key}\n",
        "tls_server_config.client_ca_file",
        "not a PEM CA certificate",
    ),
    (
        TLS + "  min_version: TLS10\n",
        "tls_server_config.min_version",
        "obsolete",
    ),
    (
        TLS + "  min_version: TLS13\n  max_version: TLS12\n",
        "tls_server_config.min_version",
        "higher than max_version",
    ),
    (
        "http_server_config:\n  headers:\n    Server: nginx\n",
        "http_server_config.headers.Server",
        "unknown key",
    ),
    (
        "http_server_config:\n  headers:\n    X-Frame-Options: allow-all\n",
        "http_server_config.headers.X-Frame-Options",
        "'allow-all' is not one of deny, sameorigin",
    ),
    ("http_server_config:\n  http2: maybe\n", "http_server_config.http2", "must be true or false"),
    # Worded as the configuration file's errors are (exporter/yamlfiles.py).
    ("http_server_config:\n  http2: 1\n", "http_server_config.http2", "must be true or false, not a number"),
    (
        "http_server_config:\n  keepalive: true\n",
        "http_server_config.keepalive",
        "unknown key 'keepalive' in http_server_config; known keys: http2, headers",
    ),
    (
        "basic_auth_users: {alice: [unclosed\n",
        None,
        "not valid YAML: while parsing a flow sequence at line 1, column 27",
    ),
]


@pytest.mark.parametrize(("template", "key", "message"), INVALID_CONFIGS)
def test_invalid_web_configs_name_the_file_and_key(tmp_path: Path, pki: Pki, template, key, message):
    other = pki.ca.issue(tmp_path, "other", server=True)
    encrypted = pki.ca.issue(tmp_path, "encrypted", server=True, passphrase=b"hunter2")
    placeholders = {
        "cert": pki.server.cert_file,
        "key": pki.server.key_file,
        "other_key": other.key_file,
        "encrypted_cert": encrypted.cert_file,
        "encrypted_key": encrypted.key_file,
        "ca": pki.ca.cert_file,
        "missing": tmp_path / "missing.crt",
        "hash": PASSWORD_HASH,
    }
    text = template
    for name, value in placeholders.items():
        text = text.replace("{" + name + "}", str(value))
    path = write_config(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_web_config(path)
    error = caught.value
    assert error.source == path
    assert error.key == key
    assert message in error.message
    assert "\n" not in str(error)
    assert "$2y$10$tooshort" not in str(error)
    assert "plaintext-password" not in str(error)


def test_an_unreadable_web_config_file_is_a_config_error(tmp_path: Path):
    missing = str(tmp_path / "nope.yml")
    with pytest.raises(ConfigError, match="cannot read the web config file") as caught:
        load_web_config(missing)
    assert caught.value.source == missing


def test_the_same_user_twice_is_refused_not_the_last_hash_kept(tmp_path: Path):
    other_hash = bcrypt.hashpw(b"another-password", bcrypt.gensalt(rounds=4)).decode()
    path = write_config(tmp_path, f"basic_auth_users:\n  alice: {PASSWORD_HASH}\n  alice: {other_hash}\n")
    with pytest.raises(ConfigError) as caught:
        load_web_config(path)
    assert caught.value.source == path
    assert caught.value.message == "not valid YAML: duplicate key 'alice' at line 3, column 3"
    assert PASSWORD_HASH not in str(caught.value)
    assert other_hash not in str(caught.value)


@pytest.mark.timeout(10)
def test_a_fifo_deep_nesting_or_a_huge_web_config_is_one_line(tmp_path: Path):
    fifo = tmp_path / "web.fifo"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match=r"cannot read the web config file: not a regular file \(a FIFO\)"):
        load_web_config(str(fifo))
    deep = write_config(tmp_path, "basic_auth_users: " + "[" * 50_000)
    with pytest.raises(ConfigError, match="nested deeper than 32 levels"):
        load_web_config(deep)
    huge = tmp_path / "huge.yml"
    huge.write_bytes(b"#" * (2 * 1024 * 1024))
    with pytest.raises(ConfigError, match="the web config file is larger than 1024 KiB"):
        load_web_config(str(huge))


def test_the_daemon_exits_2_with_one_line_on_an_invalid_web_config(tmp_path: Path):
    bad = write_config(tmp_path, "basic_auth_users:\n  alice: plaintext-password\ntls_server_confg: {}\n")
    result = subprocess.run(
        [sys.executable, "-m", "exporter", "--web.config.file", bad, "--nats-url", "nats://127.0.0.1:1"],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=REPO,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert bad in lines[0]
    assert "Traceback" not in result.stderr
    assert "plaintext-password" not in result.stderr + result.stdout


async def test_basic_auth_checks_do_not_block_the_event_loop(tmp_path: Path):
    # bcrypt at cost 13 (half a second) runs in a worker thread: a cheap request is answered meanwhile.
    slow_hash = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(13)).decode()
    config = load_web_config(write_config(tmp_path, f"basic_auth_users:\n  prometheus: '{slow_hash}'\n"))
    async with serving(config) as port:
        slow = asyncio.create_task(fetch(f"http://127.0.0.1:{port}/metrics", auth=("prometheus", "wrong")))
        status, _, _ = await fetch(f"http://127.0.0.1:{port}/healthz")
        assert status == 200
        assert not slow.done()
        assert (await slow)[0] == 401
