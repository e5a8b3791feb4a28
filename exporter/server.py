"""HTTP endpoints: ``/``, ``/metrics``, ``/healthz``, ``/readyz``.

``/metrics`` serves bytes rendered once per collection cycle: a scrape costs a dictionary look-up and a
write, never a NATS request or a render, however many Prometheus replicas scrape.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

from aiohttp import web
from aiohttp.typedefs import Middleware

from exporter import __version__
from exporter.gzipsegments import Segment, gzip_of, plain_chunks

TEXT_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS_CONTENT_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"


@dataclass(frozen=True, slots=True)
class Body:
    """A response body kept compressed only: its gzip form, and the pieces it was assembled from.

    The two formats share the segments of their sample lines. A scraper that does not accept gzip gets
    the pieces decompressed one at a time, so no plain copy of the exposition is ever held.
    """

    segments: tuple[Segment, ...]
    gzip: bytes
    length: int

    @classmethod
    def of(cls, chunks: Sequence[bytes]) -> Body:
        return cls.from_segments([Segment.of(chunk) for chunk in chunks if chunk])

    @classmethod
    def from_segments(cls, segments: Sequence[Segment]) -> Body:
        return cls(tuple(segments), gzip_of(segments), sum(segment.length for segment in segments))

    def chunks(self) -> Iterator[bytes]:
        return plain_chunks(self.segments)


@dataclass(frozen=True, slots=True)
class Exposition:
    """One rendering in both formats, plain and compressed."""

    text: Body
    openmetrics: Body

    @classmethod
    def from_bytes(cls, text: bytes, openmetrics: bytes) -> Exposition:
        return cls(Body.of([text]), Body.of([openmetrics]))


class ExpositionCache:
    """Holds the latest exposition; replaced whole, so a scrape never sees half of two cycles.

    Written by the collection loop and read by the HTTP server's thread: one attribute replaced by
    reference, which needs no lock.
    """

    def __init__(self, initial: Exposition) -> None:
        self.current = initial


def wants_openmetrics(accept: str) -> bool:
    """Content negotiation as Prometheus does it: OpenMetrics only when the scraper asks for it."""
    for part in accept.split(","):
        media_type = part.split(";", 1)[0].strip().lower()
        if media_type == "application/openmetrics-text":
            return _quality(part) > 0
    return False


def accepts_gzip(accept_encoding: str) -> bool:
    for part in accept_encoding.split(","):
        coding = part.split(";", 1)[0].strip().lower()
        if coding == "gzip":
            return _quality(part) > 0
    return False


def _quality(part: str) -> float:
    for parameter in part.split(";")[1:]:
        name, _, value = parameter.strip().partition("=")
        if name.strip().lower() == "q":
            try:
                return float(value)
            except ValueError:
                return 0.0
    return 1.0


_LANDING_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>NATS JetStream exporter</title></head>
<body>
<h1>NATS JetStream exporter</h1>
<p>Version {version}. Streams, consumers, dead letters, delivery failures and lag, collected in the
background every {interval} and served from a cache.</p>
<ul>
<li><a href="metrics">/metrics</a>: the metrics</li>
<li><a href="healthz">/healthz</a>: the process is alive</li>
<li><a href="readyz">/readyz</a>: connected to NATS and a first collection done</li>
</ul>
</body></html>
"""


def build_web_app(
    cache: ExpositionCache,
    *,
    is_ready: Callable[[], bool],
    interval_seconds: float,
    middlewares: Iterable[Middleware] = (),
) -> web.Application:
    landing_page = _LANDING_PAGE.format(
        version=html.escape(__version__), interval=html.escape(f"{interval_seconds:g}s")
    ).encode()

    async def metrics(request: web.Request) -> web.StreamResponse:
        exposition = cache.current
        if wants_openmetrics(request.headers.get("Accept", "")):
            body, content_type = exposition.openmetrics, OPENMETRICS_CONTENT_TYPE
        else:
            body, content_type = exposition.text, TEXT_CONTENT_TYPE
        headers = {"Content-Type": content_type, "Vary": "Accept, Accept-Encoding"}
        if accepts_gzip(request.headers.get("Accept-Encoding", "")):
            headers["Content-Encoding"] = "gzip"
            return web.Response(body=body.gzip, headers=headers)
        response = web.StreamResponse(headers=headers)
        response.content_length = body.length
        await response.prepare(request)
        for chunk in body.chunks():
            await response.write(chunk)
        await response.write_eof()
        return response

    async def landing(_: web.Request) -> web.Response:
        return web.Response(body=landing_page, content_type="text/html", charset="utf-8")

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(_: web.Request) -> web.Response:
        if is_ready():
            return web.Response(text="ready\n")
        return web.Response(status=503, text="not ready: not connected to NATS or no collection yet\n")

    app = web.Application(middlewares=list(middlewares))
    app.router.add_get("/", landing)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app
