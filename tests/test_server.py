"""The HTTP layer: content negotiation, gzip, readiness, landing page — on a real aiohttp server."""

from __future__ import annotations

import gzip
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from exporter.server import (
    OPENMETRICS_CONTENT_TYPE,
    TEXT_CONTENT_TYPE,
    Body,
    Exposition,
    ExpositionCache,
    accepts_gzip,
    build_web_app,
    wants_openmetrics,
)

TEXT = b"# HELP nats_up up\n# TYPE nats_up gauge\nnats_up 1.0\n"
OPENMETRICS = b"# HELP nats_up up\n# TYPE nats_up gauge\nnats_up 1.0\n# EOF\n"


@pytest.fixture
async def served() -> AsyncIterator[tuple[str, ExpositionCache, list[bool]]]:
    cache = ExpositionCache(Exposition.from_bytes(TEXT, OPENMETRICS))
    ready = [False]
    app = build_web_app(cache, is_ready=lambda: ready[0], interval_seconds=15)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}", cache, ready
    finally:
        await runner.cleanup()


async def test_metrics_plain_text_by_default(served):
    base, _, _ = served
    async with (
        aiohttp.ClientSession(auto_decompress=False) as session,
        session.get(f"{base}/metrics", headers={"Accept-Encoding": "identity"}) as response,
    ):
        assert response.status == 200
        assert response.headers["Content-Type"] == TEXT_CONTENT_TYPE
        assert "Content-Encoding" not in response.headers
        assert await response.read() == TEXT


async def test_metrics_openmetrics_and_gzip_when_asked(served):
    base, _, _ = served
    headers = {
        "Accept": "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
        "Accept-Encoding": "gzip",
    }
    async with (
        aiohttp.ClientSession(auto_decompress=False) as session,
        session.get(f"{base}/metrics", headers=headers) as response,
    ):
        assert response.headers["Content-Type"] == OPENMETRICS_CONTENT_TYPE
        assert response.headers["Content-Encoding"] == "gzip"
        assert gzip.decompress(await response.read()) == OPENMETRICS


async def test_metrics_serves_whatever_the_cache_holds_now(served):
    base, cache, _ = served
    cache.current = Exposition.from_bytes(b"nats_up 0.0\n", b"nats_up 0.0\n# EOF\n")
    async with aiohttp.ClientSession() as session, session.get(f"{base}/metrics") as response:
        assert await response.read() == b"nats_up 0.0\n"


async def test_a_body_in_chunks_is_served_whole_plain_and_compressed(served):
    base, cache, _ = served
    chunks = [b"# HELP a x\n# TYPE a gauge\n", b"a 1.0\n", b"# HELP b y\n# TYPE b gauge\n", b"b 2.0\n"]
    cache.current = Exposition(Body.of(chunks), Body.of([*chunks, b"# EOF\n"]))
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        async with session.get(f"{base}/metrics", headers={"Accept-Encoding": "identity"}) as response:
            assert response.headers["Content-Length"] == str(len(b"".join(chunks)))
            assert await response.read() == b"".join(chunks)
        async with session.get(f"{base}/metrics", headers={"Accept-Encoding": "gzip"}) as response:
            assert gzip.decompress(await response.read()) == b"".join(chunks)


async def test_health_readiness_and_landing(served):
    base, _, ready = served
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{base}/healthz") as response:
            assert response.status == 200
        async with session.get(f"{base}/readyz") as response:
            assert response.status == 503
        ready[0] = True
        async with session.get(f"{base}/readyz") as response:
            assert response.status == 200
        async with session.get(f"{base}/") as response:
            page = await response.text()
            assert response.status == 200
            assert 'href="metrics"' in page
            assert 'href="readyz"' in page


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        ("", False),
        ("text/plain", False),
        ("application/openmetrics-text", True),
        ("application/openmetrics-text;version=1.0.0;q=0.7,text/plain;q=0.3", True),
        ("application/openmetrics-text;q=0", False),
        ("*/*", False),
    ],
)
def test_wants_openmetrics(accept, expected):
    assert wants_openmetrics(accept) is expected


@pytest.mark.parametrize(
    ("accept_encoding", "expected"),
    [("", False), ("gzip", True), ("deflate, gzip;q=1.0", True), ("gzip;q=0", False), ("br", False)],
)
def test_accepts_gzip(accept_encoding, expected):
    assert accepts_gzip(accept_encoding) is expected
