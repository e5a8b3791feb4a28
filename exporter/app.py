"""Lifecycle: the collection loop, the HTTP server, signals and shutdown.

One connection (kept by ``supervisor``), one collection loop. Each cycle fetches a snapshot under a
deadline, renders it once in a worker thread and swaps the cached exposition; scrapes only read the
cache. NATS outages never stop the HTTP server: they show as ``nats_up 0`` and a counted stage, and the
last good data is served for a bounded time (``collection.stale_data_ttl``) before it is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections import Counter
from collections.abc import Callable
from typing import Protocol

from nats.aio.client import Client
from nats.aio.subscription import Subscription

from exporter.account_extras import AccountExtras
from exporter.collectionplan import rendered_families
from exporter.connection import redact_url
from exporter.errors import ConfigError
from exporter.intake import EventIntake
from exporter.jsapi import DeniedSubjects
from exporter.logs import StateLog
from exporter.memory import fix_mmap_threshold
from exporter.metrics import Renderer
from exporter.probe import Probe
from exporter.scope import ScopedSource
from exporter.server import Body, Exposition, ExpositionCache
from exporter.serving import WebServer
from exporter.settings import Settings
from exporter.snapshot import ExporterHealth, Snapshot
from exporter.source import CollectionError
from exporter.stages import Stage, StageTimings
from exporter.supervisor import ConnectionSupervisor

log = logging.getLogger(__name__)


class SnapshotSource(Protocol):
    """What the collection loop reads a cycle from (``ScopedSource``: one account, or the whole cluster)."""

    async def fetch_snapshot(self, previous: Snapshot | None, timings: StageTimings) -> Snapshot: ...


SourceFactory = Callable[[Client, Settings, DeniedSubjects], SnapshotSource]


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


class ExporterApp:
    """The daemon: start() binds HTTP and starts collecting; stop() ends everything.

    ``source`` builds the snapshot source for each new connection (default: ``ScopedSource``),
    ``renderer`` turns snapshots into expositions, ``clock`` gives the wall time of a success and
    ``timer`` measures durations (monotonic).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        source: SourceFactory | None = None,
        renderer: Renderer | None = None,
        clock: Callable[[], float] = time.time,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        # Cluster scope: connections inside the accounts listed in `accounts`, for the daemon's lifetime.
        self._extras = AccountExtras(settings)
        self._new_source = source if source is not None else self._scoped_source
        self._clock = clock
        self._timer = timer
        self._connection = ConnectionSupervisor(
            settings.nats,
            on_connected=self._connected,
            on_reconnected=self._wake_collection,
            on_slow_consumer=self._intake_dropped,
        )
        self._source: SnapshotSource | None = None
        self._advisories: EventIntake | None = None
        self._probe = (
            Probe(
                settings.probe,
                domain=settings.nats.domain,
                interval_seconds=settings.collection.interval_seconds,
            )
            if settings.probe.enabled
            else None
        )
        self._errors: Counter[str] = Counter(dict.fromkeys(map(str, Stage), 0))
        self._stage_durations: dict[str, float] = {}
        self._snapshot: Snapshot | None = None
        self._up = False
        self._last_success: float | None = None
        self._last_duration: float | None = None
        self._serving_data = False  # the cached exposition holds collected data, not only health
        self._collection_log = StateLog(log)
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._web: WebServer | None = None
        self._port = 0
        self._renderer = renderer if renderer is not None else Renderer(families=rendered_families(settings))
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
        return self._connection.connected and self._serving_data

    async def start(self) -> None:
        self._web = WebServer(
            self._settings.web,
            self._cache,
            is_ready=lambda: self.ready,
            interval_seconds=self._settings.collection.interval_seconds,
        )
        try:
            await self._web.start()
        except OSError as exc:
            self._web = None
            raise ConfigError(
                f"cannot listen on {self._settings.web.listen_address}: {exc.strerror or exc}",
                source="--web.listen-address",
            ) from None
        self._port = self._web.port
        self._tasks = [
            asyncio.create_task(self._connection.run(), name="nats-connection"),
            asyncio.create_task(self._collect_forever(), name="collection-loop"),
        ]
        if self._probe is not None:
            self._tasks.append(asyncio.create_task(self._probe_forever(self._probe), name="probe-loop"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self._advisories is not None:
            await self._advisories.close()
        await self._extras.close()
        if self._probe is not None:
            await self._probe.close()
        await self._connection.close()
        if self._web is not None:
            await self._web.stop()
            self._web = None

    # -- connection --------------------------------------------------------------------------------

    def _scoped_source(self, nc: Client, settings: Settings, denied: DeniedSubjects) -> SnapshotSource:
        return ScopedSource(nc, settings, denied, extras=self._extras)

    async def _connected(self, nc: Client) -> None:
        self._source = self._new_source(nc, self._settings, self._connection.denied)
        if self._advisories is not None:
            await self._subscribe_advisories()
        self._wake_collection()

    def _intake_dropped(self, subscription: Subscription | None) -> bool:
        return self._advisories is not None and self._advisories.client_dropped(subscription)

    def _wake_collection(self) -> None:
        self._wake.set()

    async def _subscribe_advisories(self) -> None:
        nc = self._connection.client
        if self._advisories is None or nc is None:
            return
        try:
            await self._advisories.subscribe(nc)
        except Exception:  # noqa: BLE001 (a failed subscription must not stop collection)
            self._errors[Stage.ADVISORIES] += 1
            log.warning("cannot subscribe to JetStream advisories; delivery-failure counters are paused")

    # -- collection --------------------------------------------------------------------------------

    async def _collect_forever(self) -> None:
        interval = self._settings.collection.interval_seconds
        # The first cycle waits for the first connection attempt, so a start-up is not reported as an outage.
        await self._connection.first_attempt_done()
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            self._wake.clear()
            try:
                await self._collect_once()
            except Exception:
                # A bug must not silently freeze /metrics at its last state: count it, say it, go on.
                self._errors[Stage.COLLECT] += 1
                self._up = False
                log.exception("collection cycle failed unexpectedly")
            remaining = interval - (loop.time() - started)
            if remaining > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), remaining)

    async def _probe_forever(self, probe: Probe) -> None:
        """One probe per interval, beside collection: a probe waiting for its timeout delays no cycle, and
        its result shows in the next cycle's exposition."""
        interval = self._settings.collection.interval_seconds
        await self._connection.first_attempt_done()
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            await probe.run(self._connection.client)  # never raises: failures are counted by stage
            await asyncio.sleep(max(0.0, interval - (loop.time() - started)))

    async def _collect_once(self) -> None:
        timings = StageTimings(self._timer)
        started = self._timer()
        failure = await self._fetch(timings)
        self._last_duration = self._timer() - started
        self._stage_durations = timings.durations()
        if failure is None:
            self._collection_log.enter("ok", logging.INFO, "collection succeeded")
        else:
            stage, message = failure
            self._errors[stage] += 1
            self._up = False
            failed = f"collection failed at {stage}: {message}"
            self._collection_log.enter(failed, logging.WARNING, "%s", failed)
            self._drop_stale_snapshot()
        snapshot = self._snapshot
        for intake in self._intakes():
            # Every cycle, failed or not, so that nothing published between cycles can grow the state.
            intake.retain_snapshot(snapshot)
        self._cache.current = await build_exposition(self._renderer, snapshot, self._health())
        self._serving_data = snapshot is not None

    async def _fetch(self, timings: StageTimings) -> tuple[Stage, str] | None:
        """One cycle's fetch; returns (stage, reason) when it failed."""
        source = self._source
        if source is None or not self._connection.connected:
            return Stage.CONNECT, f"not connected to NATS at {self._connection.servers}"
        deadline = self._settings.collection.deadline_seconds
        try:
            async with asyncio.timeout(deadline):
                snapshot = await source.fetch_snapshot(self._snapshot, timings)
        except CollectionError as exc:
            return exc.stage, str(exc)
        except TimeoutError:
            return Stage.TIMEOUT, f"the cycle did not finish within its deadline of {deadline:g}s"
        except Exception as exc:  # an unexpected failure is counted, shown and survived
            log.debug("collection failed unexpectedly", exc_info=True)
            return Stage.COLLECT, f"{type(exc).__name__}: {exc}"
        self._errors.update(snapshot.partial_errors)
        self._snapshot = snapshot
        self._up = True
        self._last_success = self._clock()
        if self._advisories is None and not snapshot.cluster_scope:
            # The connection is inside the account: its events are the account's. (In cluster scope it is
            # the system account's; events come through the connections inside the listed accounts.)
            account = snapshot.accounts[0].account if snapshot.accounts else "$G"
            self._advisories = EventIntake(account, ack_latency_buckets=self._settings.ack_latency.buckets)
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

    def _intakes(self) -> tuple[EventIntake, ...]:
        """Every event intake: the connection's own (account scope), and one per listed account."""
        own = () if self._advisories is None else (self._advisories,)
        return own + self._extras.intakes

    def _health(self) -> ExporterHealth:
        intakes = self._intakes()
        # Keys hold the account, so the intakes' maps never overlap.
        event_accounts = self._extras.event_accounts()
        if self._advisories is not None:
            event_accounts |= {self._advisories.account}
        return ExporterHealth(
            up=self._up,
            collection_duration_seconds=self._last_duration,
            last_success_timestamp=self._last_success,
            collection_errors=dict(self._errors),
            advisory_counts={k: v for intake in intakes for k, v in intake.counts().items()},
            malformed_advisories=sum(intake.malformed for intake in intakes),
            stream_event_counts={k: v for intake in intakes for k, v in intake.stream_counts().items()},
            ack_histograms={k: v for intake in intakes for k, v in intake.ack_histograms().items()},
            dropped_advisories=sum(intake.dropped for intake in intakes),
            collection_interval_seconds=self._settings.collection.interval_seconds,
            stage_durations=self._stage_durations,
            servers_expected=self._settings.collection.expected_servers,
            event_accounts=event_accounts,
            probe=self._probe.health() if self._probe is not None else None,
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
