"""The HTTP server on its own thread and event loop, so that no amount of scraping delays a collection cycle.

Serving multi-megabyte bodies to many scrapers on the collection's event loop queued the NATS client's
replies behind the writes: cycles slowed down and, on a busy machine, missed their deadline (a false
``nats_up 0``). Here the server has a loop of its own; it shares only the exposition cache (replaced
whole by reference, so a scrape reads one cycle's bytes) and the readiness callable (reads of plain
attributes). ``stop()`` closes the connections, ends the loop and joins the thread: nothing is left behind.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import ssl
import threading
from collections.abc import Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

from exporter.httpguard import ConnectionGuard, ConnectionLimits, EdgeCaseLog
from exporter.server import ExpositionCache, build_web_app
from exporter.settings import WebSettings, split_listen_address

# Open responses get this long to finish at shutdown before their connections are closed.
SHUTDOWN_GRACE_SECONDS = 2.0
THREAD_NAME = "http-server"
# Added to the server thread's nice value: 10 gives it about a tenth of the CPU share of the collection
# when both want to run (Linux CFS weights 110 against 1024).
SERVER_NICENESS = 10


class WebServer:
    """Binds on ``start()``, serves from its own thread until ``stop()``."""

    def __init__(
        self,
        settings: WebSettings,
        cache: ExpositionCache,
        *,
        is_ready: Callable[[], bool],
        interval_seconds: float,
    ) -> None:
        self._settings = settings
        self._host, self._requested_port = split_listen_address(settings.listen_address)
        self._ssl_context, security = _web_security(settings)
        self._guard = ConnectionGuard(
            ConnectionLimits(
                read_header_timeout_seconds=settings.read_header_timeout_seconds,
                idle_timeout_seconds=settings.idle_timeout_seconds,
                max_connections=settings.max_connections,
            )
        )
        self._app = build_web_app(
            cache,
            is_ready=is_ready,
            interval_seconds=interval_seconds,
            middlewares=[self._guard.middleware(), *security],
        )
        self._port = self._requested_port
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_requested: asyncio.Event | None = None
        self._bound: concurrent.futures.Future[int] = concurrent.futures.Future()

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        return self._port

    @property
    def open_connections(self) -> int:
        return self._guard.open_connections

    async def start(self) -> None:
        """Start the thread and wait until the socket is bound; raises ``OSError`` if it cannot be."""
        self._thread = threading.Thread(target=self._run, name=THREAD_NAME, daemon=True)
        self._thread.start()
        try:
            self._port = await asyncio.wrap_future(self._bound)
        except BaseException:
            await asyncio.to_thread(self._thread.join)
            self._thread = None
            raise

    async def stop(self) -> None:
        """Close every connection, end the server's loop and join its thread."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        if self._loop is not None and self._stop_requested is not None:
            self._loop.call_soon_threadsafe(self._stop_requested.set)
        await asyncio.to_thread(thread.join)

    def _run(self) -> None:
        _yield_cpu_to_collection()
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self._serve())
        finally:
            if not self._bound.done():  # ended before binding without an exception: start() must not hang
                self._bound.set_exception(RuntimeError("the HTTP server thread ended before binding"))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())  # bcrypt's worker threads
            loop.close()

    async def _serve(self) -> None:
        self._stop_requested = asyncio.Event()
        runner = web.AppRunner(
            self._app,
            access_log=None,
            handle_signals=False,
            logger=EdgeCaseLog(logging.getLogger("aiohttp.server")),
            shutdown_timeout=SHUTDOWN_GRACE_SECONDS,
        )
        server: asyncio.Server | None = None
        try:
            await runner.setup()
            server = await asyncio.get_running_loop().create_server(
                self._guard.protocol_factory(_protocol_factory(runner)),
                self._host,
                self._requested_port,
                ssl=self._ssl_context,
                # A TLS handshake is part of reading a request's headers.
                ssl_handshake_timeout=(
                    self._settings.read_header_timeout_seconds if self._ssl_context is not None else None
                ),
            )
        except Exception as exc:  # noqa: BLE001 (handed to start(), which raises it)
            await runner.cleanup()
            self._bound.set_exception(exc)
            return
        self._loop = asyncio.get_running_loop()
        self._bound.set_result(_bound_port(server, self._requested_port))
        try:
            await self._stop_requested.wait()
        finally:
            server.close()
            await runner.cleanup()
            await server.wait_closed()


def _yield_cpu_to_collection() -> None:
    """Lower this thread's scheduling priority, so that on a busy machine collection gets the CPU first.

    Continuous scrapers keep the server busy for as long as they run; at equal priority they take CPU time
    from the collection's thread and its rendering workers, and a cycle can miss its deadline. Linux
    schedules threads individually (``setpriority`` with a thread id); lowering one's own priority needs
    no privilege. Elsewhere this is a no-op.
    """
    with contextlib.suppress(OSError, AttributeError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), SERVER_NICENESS)


def _protocol_factory(runner: web.AppRunner) -> web.Server:
    if runner.server is None:
        raise RuntimeError("the HTTP runner is not set up")
    return runner.server


def _bound_port(server: asyncio.Server, requested: int) -> int:
    for sock in server.sockets:
        address = sock.getsockname()
        if isinstance(address, tuple) and len(address) >= 2:
            return int(address[1])
    return requested


def _web_security(settings: WebSettings) -> tuple[ssl.SSLContext | None, list[Middleware]]:
    """TLS and basic auth from ``--web.config.file``; plain HTTP without one."""
    if settings.config_file is None:
        return None, []
    from exporter.webconfig import load_web_config  # noqa: PLC0415 (bcrypt and yaml only when configured)

    web_config = load_web_config(settings.config_file)
    middleware = web_config.middleware()
    return web_config.ssl_context(), [middleware] if middleware is not None else []
