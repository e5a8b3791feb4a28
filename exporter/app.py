"""Lifecycle: the NATS connection, the collection loop, the HTTP server, signals and shutdown.

One connection, one collection loop. Each cycle fetches a snapshot under a deadline, renders it once in a
worker thread and swaps the cached exposition; scrapes only read the cache. NATS outages never stop the
HTTP server: they show as ``nats_up 0`` and a counted stage, and the last good data is served for a
bounded time (``collection.stale_data_ttl``) before it is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import signal
import ssl
import time
from collections import Counter
from collections.abc import Callable

from aiohttp import web
from aiohttp.typedefs import Middleware
from nats.aio.client import Client
from nats.errors import SlowConsumerError

from exporter.connection import NatsConnectError, close_quietly, connect_nats, redact_url
from exporter.errors import ConfigError
from exporter.intake import EventIntake
from exporter.memory import fix_mmap_threshold
from exporter.metrics import Renderer
from exporter.server import Body, Exposition, ExpositionCache, build_web_app
from exporter.settings import Settings, split_listen_address
from exporter.snapshot import ExporterHealth, Snapshot
from exporter.source import CollectionError, JetStreamSource

log = logging.getLogger(__name__)

# Every stage a cycle can fail at, exported at 0 from the start so that increase() sees the first failure.
COLLECTION_STAGES = (
    "connect",
    "account",
    "streams",
    "consumers",
    "dlq",
    "lag",
    "advisories",
    "timeout",
    "collect",
)
RECONNECT_BACKOFF_INITIAL_SECONDS = 0.5
RECONNECT_BACKOFF_MAX_SECONDS = 30.0
CLOSE_TIMEOUT_SECONDS = 2.0


async def build_exposition(
    renderer: Renderer, snapshot: Snapshot | None, health: ExporterHealth
) -> Exposition:
    """A cycle's whole rendering cost, off the event loop: both formats, then both compressed at once
    (zlib releases the GIL, so the two compressions use both cores)."""
    rendering = await asyncio.to_thread(renderer.render, snapshot, health)
    text, openmetrics = await asyncio.gather(
        asyncio.to_thread(Body.of, rendering.text_chunks()),
        asyncio.to_thread(Body.of, rendering.openmetrics_chunks()),
    )
    return Exposition(text, openmetrics)


class _StateLog:
    """Logs a state change once, instead of once per attempt."""

    def __init__(self) -> None:
        self._state: tuple[str, str] | None = None

    def enter(self, level: int, state: str, message: str) -> None:
        if self._state == (state, message):
            return
        self._state = (state, message)
        log.log(level, message)


class ExporterApp:
    """The daemon: start() binds HTTP and starts collecting; stop() ends everything."""

    def __init__(self, settings: Settings, *, clock: Callable[[], float] = time.time) -> None:
        self._settings = settings
        self._clock = clock
        self._nc: Client | None = None
        self._source: JetStreamSource | None = None
        self._advisories: EventIntake | None = None
        self._errors: Counter[str] = Counter(dict.fromkeys(COLLECTION_STAGES, 0))
        self._snapshot: Snapshot | None = None
        self._up = False
        self._last_success: float | None = None
        self._last_duration: float | None = None
        self._serving_data = False  # the cached exposition holds collected data, not only health
        self._stopping = False
        self._connection_log = _StateLog()
        self._collection_log = _StateLog()
        self._client_error_log = _StateLog()
        self._wake = asyncio.Event()
        self._connection_closed = asyncio.Event()
        self._first_attempt_done = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._runner: web.AppRunner | None = None
        self._port = 0
        self._servers = ", ".join(redact_url(server) for server in settings.nats.servers)
        self._renderer = Renderer()
        initial = self._renderer.render(None, self._health())
        self._cache = ExpositionCache(
            Exposition(Body.of(initial.text_chunks()), Body.of(initial.openmetrics_chunks()))
        )

    @property
    def port(self) -> int:
        """The bound HTTP port (useful with port 0)."""
        return self._port

    @property
    def ready(self) -> bool:
        """Connected, and the cache holds the data of a successful collection."""
        return self._nc is not None and self._nc.is_connected and self._serving_data

    async def start(self) -> None:
        ssl_context, middlewares = self._web_security()
        host, port = split_listen_address(self._settings.web.listen_address)
        app = build_web_app(
            self._cache,
            is_ready=lambda: self.ready,
            interval_seconds=self._settings.collection.interval_seconds,
            middlewares=middlewares,
        )
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, ssl_context=ssl_context)
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            raise ConfigError(
                f"cannot listen on {self._settings.web.listen_address}: {exc.strerror or exc}",
                source="--web.listen-address",
            ) from None
        self._port = self._bound_port(port)
        self._tasks = [
            asyncio.create_task(self._maintain_connection(), name="nats-connection"),
            asyncio.create_task(self._collect_forever(), name="collection-loop"),
        ]

    async def stop(self) -> None:
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self._advisories is not None:
            await self._advisories.close()
        await self._close_connection()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- web ---------------------------------------------------------------------------------------

    def _web_security(self) -> tuple[ssl.SSLContext | None, list[Middleware]]:
        config_file = self._settings.web.config_file
        if config_file is None:
            return None, []
        from exporter.webconfig import load_web_config  # noqa: PLC0415 (only when configured)

        web_config = load_web_config(config_file)
        middleware = web_config.middleware()
        return web_config.ssl_context(), [middleware] if middleware is not None else []

    def _bound_port(self, requested: int) -> int:
        if self._runner is None:
            return requested
        for address in self._runner.addresses:
            if isinstance(address, tuple) and len(address) >= 2:
                return int(address[1])
        return requested

    # -- connection --------------------------------------------------------------------------------

    async def _maintain_connection(self) -> None:
        """Connect, and reconnect from scratch if the client ever closes; backoff between attempts."""
        delay = RECONNECT_BACKOFF_INITIAL_SECONDS
        while True:
            if self._nc is None or self._nc.is_closed:
                # Cleared before connecting: a close reported while _connect still awaits is not lost.
                self._connection_closed.clear()
                try:
                    await self._connect()
                except NatsConnectError as exc:
                    self._first_attempt_done.set()
                    self._connection_log.enter(logging.WARNING, "down", f"{exc}; retrying with backoff")
                    await asyncio.sleep(delay * random.uniform(0.8, 1.2))  # noqa: S311 (jitter, not crypto)
                    delay = min(delay * 2, RECONNECT_BACKOFF_MAX_SECONDS)
                    continue
                delay = RECONNECT_BACKOFF_INITIAL_SECONDS
                self._first_attempt_done.set()
            await self._connection_closed.wait()

    async def _connect(self) -> None:
        async def on_disconnected() -> None:
            if self._stopping:
                return
            self._connection_log.enter(
                logging.WARNING, "down", f"lost the connection to NATS at {self._servers}; reconnecting"
            )

        async def on_reconnected() -> None:
            self._announce_connected()
            self._wake.set()

        async def on_closed() -> None:
            self._connection_closed.set()

        async def on_error(exc: Exception) -> None:
            intake = self._advisories
            if isinstance(exc, SlowConsumerError) and intake is not None and intake.client_dropped(exc.sub):
                return  # counted in nats_exporter_dropped_advisories_total, logged there (rate-limited)
            # Reconnect attempts are reported by the state log; what else the client reports (a permission
            # denied on a subscription, a slow consumer) would otherwise go unseen.
            if self._nc is not None and self._nc.is_connected:
                self._client_error_log.enter(logging.WARNING, "error", f"NATS client error: {exc}")

        nc = await connect_nats(
            self._settings.nats,
            error_cb=on_error,
            disconnected_cb=on_disconnected,
            reconnected_cb=on_reconnected,
            closed_cb=on_closed,
        )
        self._nc = nc
        self._source = JetStreamSource(nc, self._settings)
        self._announce_connected()
        if self._advisories is not None:
            await self._subscribe_advisories()
        self._wake.set()

    def _announce_connected(self) -> None:
        server = ""
        if self._nc is not None and self._nc.connected_url is not None:
            server = redact_url(self._nc.connected_url.geturl())
        self._connection_log.enter(logging.INFO, "up", f"connected to NATS at {server or self._servers}")

    async def _close_connection(self) -> None:
        nc, self._nc = self._nc, None
        if nc is not None:
            await close_quietly(nc, CLOSE_TIMEOUT_SECONDS)

    async def _subscribe_advisories(self) -> None:
        if self._advisories is None or self._nc is None:
            return
        try:
            await self._advisories.subscribe(self._nc)
        except Exception:  # noqa: BLE001 (a failed subscription must not stop collection)
            self._errors["advisories"] += 1
            log.warning("cannot subscribe to JetStream advisories; delivery-failure counters are paused")

    # -- collection --------------------------------------------------------------------------------

    async def _collect_forever(self) -> None:
        interval = self._settings.collection.interval_seconds
        # The first cycle waits for the first connection attempt, so a start-up is not reported as an outage.
        await self._first_attempt_done.wait()
        while True:
            started = time.monotonic()
            self._wake.clear()
            try:
                await self._collect_once()
            except Exception:
                # A bug must not silently freeze /metrics at its last state: count it, say it, go on.
                self._errors["collect"] += 1
                self._up = False
                log.exception("collection cycle failed unexpectedly")
            remaining = interval - (time.monotonic() - started)
            if remaining > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), remaining)

    async def _collect_once(self) -> None:
        started = time.monotonic()
        failure = await self._fetch()
        self._last_duration = time.monotonic() - started
        if failure is None:
            self._collection_log.enter(logging.INFO, "ok", "collection succeeded")
        else:
            stage, message = failure
            self._errors[stage] += 1
            self._up = False
            self._collection_log.enter(logging.WARNING, "failed", f"collection failed at {stage}: {message}")
            self._drop_stale_snapshot()
        snapshot = self._snapshot
        if self._advisories is not None:
            # Every cycle, failed or not, so that nothing published between cycles can grow the state.
            self._advisories.retain_snapshot(snapshot)
        self._cache.current = await build_exposition(self._renderer, snapshot, self._health())
        self._serving_data = snapshot is not None

    async def _fetch(self) -> tuple[str, str] | None:
        """One cycle's fetch; returns (stage, reason) when it failed."""
        nc, source = self._nc, self._source
        if nc is None or source is None or not nc.is_connected:
            return "connect", f"not connected to NATS at {self._servers}"
        deadline = self._settings.collection.deadline_seconds
        try:
            async with asyncio.timeout(deadline):
                snapshot = await source.fetch_snapshot(self._snapshot)
        except CollectionError as exc:
            return exc.stage, str(exc)
        except TimeoutError:
            return "timeout", f"the cycle did not finish within its deadline of {deadline:g}s"
        except Exception as exc:  # an unexpected failure is counted, shown and survived
            log.debug("collection failed unexpectedly", exc_info=True)
            return "collect", f"{type(exc).__name__}: {exc}"
        self._errors.update(snapshot.partial_errors)
        self._snapshot = snapshot
        self._up = True
        self._last_success = self._clock()
        if self._advisories is None:
            account = snapshot.account.account if snapshot.account is not None else "$G"
            self._advisories = EventIntake(account)
        # Every cycle: a no-op while subscribed, a retry after a failed subscription.
        await self._subscribe_advisories()
        return None

    def _drop_stale_snapshot(self) -> None:
        if self._snapshot is None or self._last_success is None:
            return
        age = self._clock() - self._last_success
        ttl = self._settings.collection.stale_data_ttl_seconds
        if age > ttl:
            self._snapshot = None
            log.warning(
                "dropping JetStream data collected %.0fs ago (stale_data_ttl %gs); serving health only",
                age,
                ttl,
            )

    def _health(self) -> ExporterHealth:
        advisories = self._advisories
        return ExporterHealth(
            up=self._up,
            collection_duration_seconds=self._last_duration,
            last_success_timestamp=self._last_success,
            collection_errors=dict(self._errors),
            advisory_counts=advisories.counts() if advisories is not None else {},
            malformed_advisories=advisories.malformed if advisories is not None else 0,
            stream_event_counts=advisories.stream_counts() if advisories is not None else {},
            ack_histograms=advisories.ack_histograms() if advisories is not None else {},
            dropped_advisories=advisories.dropped if advisories is not None else 0,
            collection_interval_seconds=self._settings.collection.interval_seconds,
        )


async def run_daemon(settings: Settings) -> int:
    """Run until SIGTERM or SIGINT, then stop everything."""
    fix_mmap_threshold()
    app = ExporterApp(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await app.start()
    log.info(
        "listening on %s (port %d); collecting from %s every %gs",
        settings.web.listen_address,
        app.port,
        ", ".join(redact_url(server) for server in settings.nats.servers),
        settings.collection.interval_seconds,
    )
    await stop.wait()
    log.info("stopping")
    await app.stop()
    return 0
