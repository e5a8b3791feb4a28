"""Hostile and broken HTTP clients against the real server (its own thread, the real aiohttp stack).

Each case asserts what an operator sees: one short log line at debug or info, never an ERROR and never a
traceback; stalled connections closed within the configured timeouts; the connection cap enforced.
Timeouts are small here; every wait is bounded.
"""

from __future__ import annotations

import asyncio
import gzip
import logging
import re
import ssl
import threading
import time
from collections.abc import AsyncIterator, Callable

import aiohttp
import pytest
from support.pki import client_context, make_pki

from exporter.app import ExporterApp
from exporter.natsserver import free_port
from exporter.server import Body, Exposition, ExpositionCache
from exporter.serving import THREAD_NAME, WebServer
from exporter.settings import NatsSettings, Settings, WebSettings

HEADER_TIMEOUT = 0.5
IDLE_TIMEOUT = 1.0
# Generous multiples of the configured timeouts: the machine is shared, so no exact timing is asserted,
# only that the connection was closed by the timeout rather than left open.
CLOSE_BOUND = 10.0
# A body far larger than the socket buffers, so a client that hangs up does so mid-body.
BIG_BODY_CHUNKS = [b'nats_stream_messages{stream="S%06d"} 1.0\n' % index for index in range(200_000)]


def settings(**overrides: object) -> WebSettings:
    options: dict[str, object] = {
        "listen_address": "127.0.0.1:0",
        "read_header_timeout_seconds": HEADER_TIMEOUT,
        "idle_timeout_seconds": IDLE_TIMEOUT,
        "max_connections": 100,
    } | overrides
    return WebSettings(**options)  # type: ignore[arg-type]


async def started(web_settings: WebSettings) -> WebServer:
    cache = ExpositionCache(Exposition(Body.of(BIG_BODY_CHUNKS), Body.of([*BIG_BODY_CHUNKS, b"# EOF\n"])))
    server = WebServer(web_settings, cache, is_ready=lambda: True, interval_seconds=15)
    await server.start()
    return server


@pytest.fixture
async def server(caplog: pytest.LogCaptureFixture) -> AsyncIterator[WebServer]:
    caplog.set_level(logging.DEBUG, logger="aiohttp")
    caplog.set_level(logging.DEBUG, logger="exporter")
    web = await started(settings())
    try:
        yield web
    finally:
        await web.stop()


async def eventually(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + CLOSE_BOUND
    while not condition():
        assert time.monotonic() < deadline, f"not within {CLOSE_BOUND}s: {what}"
        await asyncio.sleep(0.02)


def logged(caplog: pytest.LogCaptureFixture, text: str, level: int) -> bool:
    return any(text in record.getMessage() and record.levelno == level for record in caplog.records)


def assert_quiet(caplog: pytest.LogCaptureFixture) -> None:
    """Nothing at WARNING or above, no traceback, every HTTP log record on one line."""
    for record in caplog.records:
        assert record.levelno < logging.WARNING, record.getMessage()
        assert record.exc_info is None, record.getMessage()
        assert "\n" not in record.getMessage(), record.getMessage()


async def closed_by_server(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sent until it closed the connection (bounded)."""
    return await asyncio.wait_for(reader.read(), CLOSE_BOUND)


async def test_a_scraper_hanging_up_mid_body_is_one_debug_line(server, caplog):
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept-Encoding: identity\r\n\r\n")
    assert (await reader.readexactly(4096)).startswith(b"HTTP/1.1 200")
    writer.transport.abort()  # as a Prometheus scrape timeout does: gone with most of the body unread

    await eventually(lambda: logged(caplog, "the client went away", logging.DEBUG), "went-away line")
    assert_quiet(caplog)


async def test_a_64_kb_header_is_a_400_and_one_info_line(server, caplog):
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 65536 + b"\r\n\r\n")
    answer = await closed_by_server(reader)
    writer.close()

    assert answer.split(b" ", 2)[1] == b"400"
    await eventually(lambda: logged(caplog, "bad request", logging.INFO), "bad-request line")
    assert_quiet(caplog)


@pytest.mark.parametrize("request_line", [b"BREW /metrics HTTP/1.1", b"G\x01T /metrics HTTP/1.1"])
async def test_an_unknown_method_is_answered_without_an_error(server, caplog, request_line):
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(request_line + b"\r\nHost: x\r\nConnection: close\r\n\r\n")
    answer = await closed_by_server(reader)
    writer.close()

    assert answer.split(b" ", 2)[1] in (b"400", b"405")
    assert_quiet(caplog)


async def test_a_tls_hello_on_the_plain_port_is_refused_quietly(server, caplog):
    client = ssl.create_default_context()
    client.check_hostname = False
    client.verify_mode = ssl.CERT_NONE
    with pytest.raises((ssl.SSLError, ConnectionError)):
        await asyncio.wait_for(asyncio.open_connection("127.0.0.1", server.port, ssl=client), CLOSE_BOUND)

    await eventually(lambda: logged(caplog, "bad request", logging.DEBUG), "bad-request line")
    assert_quiet(caplog)


async def test_a_silent_connection_is_closed_after_the_header_timeout(server, caplog):
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    assert await closed_by_server(reader) == b""
    writer.close()

    assert logged(caplog, "reading request headers for 0.5s (web.read_header_timeout)", logging.DEBUG)
    assert_quiet(caplog)


async def test_a_connection_trickling_its_headers_is_closed_after_the_header_timeout(server, caplog):
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    request = b"GET /metrics HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: " + b"a" * 1000
    closing = asyncio.create_task(reader.read())
    sent = 0
    # One byte every 0.1s would take 100s to finish; the server must close the connection long before.
    while not closing.done():
        assert sent < CLOSE_BOUND / 0.1, "still open while trickling"
        writer.write(request[sent : sent + 1])
        sent += 1
        await asyncio.sleep(0.1)  # the pace of the trickle, not a wait for a condition
    assert closing.result() == b""
    writer.close()

    assert logged(caplog, "(web.read_header_timeout)", logging.DEBUG)
    assert_quiet(caplog)


async def test_an_idle_keep_alive_connection_is_closed_after_the_idle_timeout(server, caplog):
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    status = await asyncio.wait_for(reader.readline(), CLOSE_BOUND)
    assert status.startswith(b"HTTP/1.1 200")
    await closed_by_server(reader)  # the rest of the response, then the close
    writer.close()

    assert logged(caplog, "idle for 1s (web.idle_timeout)", logging.DEBUG)
    assert_quiet(caplog)


@pytest.mark.parametrize("encoding", ["identity", "gzip"])
async def test_a_slow_reader_gets_the_whole_body_though_it_takes_longer_than_the_idle_timeout(
    server, encoding
):
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port, limit=1 << 16)
    writer.write(
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        b"Accept-Encoding: " + encoding.encode() + b"\r\n\r\n"
    )
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), CLOSE_BOUND)
    assert head.startswith(b"HTTP/1.1 200")
    length = int(re.search(rb"(?i)content-length: (\d+)", head).group(1))  # type: ignore[union-attr]
    body = bytearray()
    started = time.monotonic()
    while chunk := await asyncio.wait_for(reader.read(1 << 14), CLOSE_BOUND):
        body += chunk
        # The pace of a slow reader (the whole body in twice the idle timeout), not a wait for a condition.
        await asyncio.sleep(len(chunk) / length * 2 * IDLE_TIMEOUT)
    writer.close()

    expected = b"".join(BIG_BODY_CHUNKS)
    assert (gzip.decompress(body) if encoding == "gzip" else body) == expected
    assert time.monotonic() - started > IDLE_TIMEOUT  # the case under test: a response outlasting it


async def test_a_keep_alive_connection_serves_requests_until_it_idles(server):
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as session:
        for _ in range(3):
            async with session.get(f"http://127.0.0.1:{server.port}/metrics") as response:
                assert response.status == 200
                assert len(await response.read()) == sum(map(len, BIG_BODY_CHUNKS))
        assert server.open_connections == 1


async def test_connections_over_the_cap_get_503_and_are_closed(caplog):
    caplog.set_level(logging.DEBUG, logger="exporter")
    web = await started(settings(max_connections=2, read_header_timeout_seconds=60, idle_timeout_seconds=60))
    try:
        held = [await asyncio.open_connection("127.0.0.1", web.port) for _ in range(2)]
        await eventually(lambda: web.open_connections == 2, "two connections open")

        reader, writer = await asyncio.open_connection("127.0.0.1", web.port)
        answer = await closed_by_server(reader)
        writer.close()
        assert answer.split(b" ", 2)[1] == b"503"
        assert logged(caplog, "refusing HTTP connections: 2 open", logging.WARNING)

        held[0][1].close()
        await eventually(lambda: web.open_connections == 1, "a slot freed")
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{web.port}/healthz") as response,
        ):
            assert response.status == 200
        held[1][1].close()
    finally:
        await web.stop()


async def test_stop_ends_the_thread_even_with_a_client_mid_body(caplog):
    web = await started(settings(idle_timeout_seconds=60))
    assert any(thread.name == THREAD_NAME for thread in threading.enumerate())
    reader, writer = await asyncio.open_connection("127.0.0.1", web.port)
    writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept-Encoding: identity\r\n\r\n")
    await reader.readexactly(4096)  # and then reads nothing more: the server's writes block

    await asyncio.wait_for(web.stop(), CLOSE_BOUND)
    writer.close()

    assert not any(thread.name == THREAD_NAME for thread in threading.enumerate())
    assert_quiet(caplog)


async def test_port_in_use_is_an_os_error_and_leaves_no_thread():
    first = await started(settings())
    try:
        with pytest.raises(OSError):
            await started(settings(listen_address=f"127.0.0.1:{first.port}"))
        assert sum(thread.name == THREAD_NAME for thread in threading.enumerate()) == 1
    finally:
        await first.stop()


async def test_plain_http_on_the_tls_port_is_refused_quietly_and_tls_serves(tmp_path, caplog):
    caplog.set_level(logging.DEBUG, logger="aiohttp")
    caplog.set_level(logging.DEBUG, logger="asyncio")
    pki = make_pki(tmp_path / "pki")
    config = tmp_path / "web.yml"
    config.write_text(
        f"tls_server_config:\n  cert_file: {pki.server.cert_file}\n  key_file: {pki.server.key_file}\n",
        encoding="utf-8",
    )
    web = await started(settings(config_file=str(config)))
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", web.port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        await closed_by_server(reader)
        writer.close()

        async with (
            aiohttp.ClientSession() as session,
            session.get(f"https://127.0.0.1:{web.port}/healthz", ssl=client_context(pki)) as response,
        ):
            assert response.status == 200
    finally:
        await web.stop()
    assert_quiet(caplog)


async def test_the_exporter_serves_and_stops_without_leaving_its_server_thread():
    # No NATS at this address: the exporter keeps retrying, and serves /healthz all the while.
    app = ExporterApp(
        Settings(
            nats=NatsSettings(servers=(f"nats://127.0.0.1:{free_port()}",), connect_timeout_seconds=0.5),
            web=WebSettings(listen_address="127.0.0.1:0"),
        )
    )
    await app.start()
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{app.port}/healthz") as response:
                assert response.status == 200
            async with session.get(f"http://127.0.0.1:{app.port}/readyz") as response:
                assert response.status == 503
    finally:
        await asyncio.wait_for(app.stop(), CLOSE_BOUND)
    assert not any(thread.name == THREAD_NAME for thread in threading.enumerate())
