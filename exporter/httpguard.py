"""Connection hygiene for the HTTP server: header and idle timeouts, a connection cap, quiet edge cases.

aiohttp on its own keeps a connection that never completes its request headers for an hour, accepts any
number of connections, and logs a scraper hanging up mid-body or a malformed request as an ERROR with
a traceback. The exporter faces scanners, load balancers and timed-out scrapes every day, so here:

- every connection passes through ``GuardedConnection``, which refuses connections over the cap with a
  503 and closes those that stall (no complete request headers in time, or idle too long);
- aiohttp's server log goes through ``EdgeCaseLog``, which turns the usual edge cases into one line
  (client went away: debug; bad request: info) and keeps real handler failures at ERROR with traceback.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import ssl
import sys
import time
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.typedefs import Handler, Middleware

log = logging.getLogger(__name__)

# Sent to a connection over the cap before closing it, so a scraper sees why rather than a reset.
REFUSAL_BODY = b"503 Service Unavailable: too many open connections\n"
REFUSAL = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: " + str(len(REFUSAL_BODY)).encode() + b"\r\n"
    b"Connection: close\r\n\r\n" + REFUSAL_BODY
)
# Refused connections are logged at WARNING at most this often; each one is logged at debug.
REFUSAL_WARNING_INTERVAL_SECONDS = 60.0
# Longest detail of a bad request quoted in the log (it may carry a client's garbage bytes).
DETAIL_LIMIT = 200


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    read_header_timeout_seconds: float
    idle_timeout_seconds: float
    max_connections: int


class _Phase(enum.Enum):
    HEADERS = "reading request headers"  # from the opening, or from the first byte after idling
    BUSY = "handling a request"  # no deadline: the response is bounded by its own size
    IDLE = "idle"  # between requests on a keep-alive connection


class ConnectionGuard:
    """Counts the open connections of one server, refuses those over the cap, closes those that stall."""

    def __init__(self, limits: ConnectionLimits) -> None:
        self.limits = limits
        self._open: dict[asyncio.BaseTransport, GuardedConnection] = {}
        self._refused_since_warning = 0
        self._last_warning = float("-inf")

    @property
    def open_connections(self) -> int:
        return len(self._open)

    def protocol_factory(self, inner: Callable[[], asyncio.Protocol]) -> Callable[[], asyncio.Protocol]:
        """Wraps aiohttp's protocol factory (its ``web.Server``) for ``loop.create_server``."""
        return lambda: GuardedConnection(self, inner)

    def middleware(self) -> Middleware:
        """Marks where each request starts and ends on its connection; must be the outermost middleware."""

        @web.middleware
        async def connection_phases(request: web.Request, handler: Handler) -> web.StreamResponse:
            connection = self._open.get(request.transport) if request.transport is not None else None
            if connection is None:
                return await handler(request)
            connection.request_started()
            try:
                response = await handler(request)
                # Sent here rather than by aiohttp after the middleware returns: the idle clock starts once
                # the body is handed over, so it cannot fire (and close) before the body is written.
                await response.prepare(request)
                await response.write_eof()
                return response
            finally:
                connection.request_finished()

        return connection_phases

    def admit(self, connection: GuardedConnection, transport: asyncio.BaseTransport) -> bool:
        """Counts the connection in; False (logged) at the cap: the caller answers 503 and closes it."""
        if len(self._open) >= self.limits.max_connections:
            self._refused(transport)
            return False
        self._open[transport] = connection
        return True

    def release(self, transport: asyncio.BaseTransport) -> None:
        self._open.pop(transport, None)

    def _refused(self, transport: asyncio.BaseTransport) -> None:
        peer = _peer(transport)
        log.debug("refused an HTTP connection from %s: %d open (web.max_connections)", peer, len(self._open))
        self._refused_since_warning += 1
        now = time.monotonic()
        if now - self._last_warning >= REFUSAL_WARNING_INTERVAL_SECONDS:
            log.warning(
                "refusing HTTP connections: %d open, the limit (web.max_connections); %d refused",
                len(self._open),
                self._refused_since_warning,
            )
            self._last_warning, self._refused_since_warning = now, 0


class GuardedConnection(asyncio.Protocol):
    """One connection: forwards everything to aiohttp's protocol and closes the connection if it stalls."""

    def __init__(self, guard: ConnectionGuard, inner_factory: Callable[[], asyncio.Protocol]) -> None:
        self._guard = guard
        self._inner_factory = inner_factory
        self._inner: asyncio.Protocol | None = None  # None: refused (or not yet connected)
        self._transport: asyncio.BaseTransport | None = None
        self._phase = _Phase.HEADERS
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport
        if not self._guard.admit(self, transport):
            if isinstance(transport, asyncio.WriteTransport):
                transport.write(REFUSAL)
            transport.close()
            return
        self._inner = self._inner_factory()
        self._enter(_Phase.HEADERS)
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._inner is None:
            return
        if self._phase is _Phase.IDLE:
            self._enter(_Phase.HEADERS)
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._inner is not None else None

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer()
        if self._inner is None or self._transport is None:
            return
        self._guard.release(self._transport)
        self._inner.connection_lost(exc)

    def request_started(self) -> None:
        self._enter(_Phase.BUSY)

    def request_finished(self) -> None:
        self._enter(_Phase.IDLE)

    def _enter(self, phase: _Phase) -> None:
        self._phase = phase
        self._cancel_timer()
        limits = self._guard.limits
        timeout = {
            _Phase.HEADERS: limits.read_header_timeout_seconds,
            _Phase.IDLE: limits.idle_timeout_seconds,
            _Phase.BUSY: None,
        }[phase]
        if timeout is not None:
            self._timer = asyncio.get_running_loop().call_later(timeout, self._expire, phase, timeout)

    def _expire(self, phase: _Phase, timeout: float) -> None:
        self._timer = None
        if self._transport is None or self._transport.is_closing():
            return
        setting = "web.read_header_timeout" if phase is _Phase.HEADERS else "web.idle_timeout"
        log.debug(
            "closed an HTTP connection from %s: %s for %gs (%s)",
            _peer(self._transport),
            phase.value,
            timeout,
            setting,
        )
        self._transport.close()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def _peer(transport: asyncio.BaseTransport) -> str:
    peer = transport.get_extra_info("peername")
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return "an unknown peer"


class EdgeCaseLog(logging.LoggerAdapter[logging.Logger]):
    """aiohttp's server log with the everyday edge cases as one line, never a traceback at ERROR.

    A client that went away (a scrape timeout hangs up mid-body) is logged at debug; a request aiohttp
    cannot parse (a TLS hello on the plain port, a 64 KB header, a malformed request line) at info with
    the reason. Anything else is a failure of the exporter's own handlers and keeps its traceback.
    """

    def __init__(self, logger: logging.Logger) -> None:
        super().__init__(logger, {})

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info")
        if exc is True:
            exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, asyncio.CancelledError, ssl.SSLError)):
            self.logger.debug("%s: the client went away (%s)", _text(msg, args), _describe(exc))
        elif isinstance(exc, HttpProcessingError):
            # At most info: aiohttp itself logs a non-HTTP first request (a TLS hello) at debug.
            self.logger.log(min(level, logging.INFO), "%s: bad request: %s", _text(msg, args), _describe(exc))
        else:
            super().log(level, msg, *args, **kwargs)

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        return msg, kwargs


def _text(msg: object, args: tuple[object, ...]) -> str:
    try:
        return str(msg) % args if args else str(msg)
    except (TypeError, ValueError):
        return str(msg)


def _describe(exc: BaseException) -> str:
    """The exception on one bounded line."""
    detail = " ".join(str(exc).split()) or type(exc).__name__
    if len(detail) > DETAIL_LIMIT:
        detail = detail[:DETAIL_LIMIT] + "..."
    return detail
