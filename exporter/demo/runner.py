"""The demo's lifecycle: a nats-server, the platform, its traffic and the exporter, then a clean stop.

Everything started here is stopped here, in reverse order, whatever ends the demo (``--duration``, Ctrl-C,
SIGTERM, or a part failing): traffic, exporter, connection, and the nats-server with its temporary store.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import signal
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TextIO

from exporter.connection import close_quietly, connect_nats
from exporter.demo.chaos import Chaos, ChaosOptions
from exporter.demo.chathandler import CHAT_CONSUMER, CHAT_STREAM, ChatHandler, HandlerOptions
from exporter.demo.cluster import (
    CLUSTER_REPLICAS,
    CLUSTER_SIZE,
    MIRROR_STREAM,
    SYSTEM_ACCOUNT,
    SYSTEM_EXPORTER_ADDRESS,
    SYSTEM_USER,
    DemoCluster,
    clustered_platform,
)
from exporter.demo.messages import DEAD_LETTER_CHAT_SUBJECT
from exporter.demo.platform import PlatformSpec, load_platform
from exporter.demo.provisioning import apply_platform
from exporter.demo.traffic import PlatformTraffic, TrafficOptions
from exporter.durations import format_duration
from exporter.jsapi import JetStreamApi
from exporter.natsserver import NatsCluster, NatsServerProcess
from exporter.settings import NatsSettings, Settings, split_listen_address

DEAD_LETTER_STREAM = "AI_DLQ"
API_TIMEOUT_SECONDS = 5.0
STOP_DEADLINE_SECONDS = 5.0  # per part, while stopping
PLATFORM_ACCOUNT = "AI_PLATFORM"
PLATFORM_USER = "ai-platform"


def demo_cluster() -> DemoCluster:
    """The demo's cluster, with the platform's account and a system account whose password is new."""
    system_password = secrets.token_urlsafe(18)
    cluster = NatsCluster(
        size=CLUSTER_SIZE,
        name="ai-platform-demo",
        extra_config=platform_account_config(system_password=system_password),
    )
    return DemoCluster(cluster, system_password)


def platform_account_config(*, system_password: str | None = None) -> str:
    """nats-server configuration for the platform's account, with JetStream limits of its own.

    The limits give the account-limit gauges and the dashboards' "used of limit" panels something to show.
    Clients without credentials land in the account (``no_auth_user``); the password is new on every call
    and never shown, since nobody needs to type it. With ``system_password``, the configuration also names
    a system account with the user ``SYSTEM_USER``, for an exporter that reads the whole cluster.
    """
    password = secrets.token_urlsafe(18)
    system = (
        ""
        if system_password is None
        else f'  {SYSTEM_ACCOUNT}: {{users: [{{user: "{SYSTEM_USER}", password: "{system_password}"}}]}}\n'
    )
    return (
        "accounts {\n"
        f"  {PLATFORM_ACCOUNT}: {{\n"
        "    jetstream: {max_memory: 64MB, max_file: 512MB}\n"
        f'    users: [{{user: "{PLATFORM_USER}", password: "{password}"}}]\n'
        "  }\n"
        f"{system}"
        "}\n"
        f'no_auth_user: "{PLATFORM_USER}"\n'
        + ("" if system_password is None else f'system_account: "{SYSTEM_ACCOUNT}"\n')
    )


@dataclass(frozen=True, slots=True)
class DemoOptions:
    # The exporter's settings. Unless ``use_existing_server``, nats.servers is replaced by the demo's own.
    settings: Settings = field(default_factory=Settings)
    use_existing_server: bool = False
    duration_seconds: float | None = None  # None: until Ctrl-C or SIGTERM
    platform_file: Path | None = None  # None: the built-in platform.yaml
    traffic: TrafficOptions = field(default_factory=TrafficOptions)
    handler: HandlerOptions = field(default_factory=HandlerOptions)
    cluster: bool = False  # a three-node cluster of the demo's own, streams on three replicas, a mirror
    chaos: ChaosOptions | None = None  # with ``cluster``: stop and restart a member on this schedule


async def run_demo(
    options: DemoOptions, *, out: TextIO = sys.stdout, stop: asyncio.Event | None = None
) -> int:
    """Run the demo until ``stop`` is set, the duration ends, or SIGINT/SIGTERM; 1 when a part failed.

    Raises ConfigError (bad platform file, listen address, overlapping subjects), NatsServerError and
    ProvisioningError before anything keeps running; what was started by then is stopped first.
    """
    stop = stop or asyncio.Event()
    platform = load_platform(options.platform_file)
    if options.cluster:
        platform = clustered_platform(platform)
    started = time.monotonic()
    with _signals_set(stop):
        async with contextlib.AsyncExitStack() as stack:
            nats_settings, server, cluster = await _start_nats(options, stack, out)
            settings = replace(options.settings, nats=nats_settings)
            if server is not None or cluster is not None:
                # The demo's own servers show the end-to-end probe too; its stream goes with them. On an
                # existing server the probe runs only if configured, since its stream would stay there.
                # On the cluster its stream is replicated like the platform's, so chaos does not take it away.
                replicas = CLUSTER_REPLICAS if cluster is not None else settings.probe.replicas
                settings = replace(settings, probe=replace(settings.probe, enabled=True, replicas=replicas))
            nc = await connect_nats(settings.nats, name="nats-jetstream-exporter-demo")
            stack.push_async_callback(close_quietly, nc, STOP_DEADLINE_SECONDS)
            api = JetStreamApi(nc, domain=settings.nats.domain, timeout_seconds=API_TIMEOUT_SECONDS)
            report = await apply_platform(api, platform)
            _say(out, report.render())

            from exporter.app import ExporterApp  # noqa: PLC0415 (the daemon's dependencies, only when run)

            app = ExporterApp(settings)
            await app.start()
            stack.push_async_callback(app.stop)

            traffic = PlatformTraffic(nc, options.traffic)
            handler = ChatHandler(nc, options.handler, domain=settings.nats.domain)
            workers = [
                asyncio.create_task(traffic.run(), name="demo-traffic"),
                asyncio.create_task(handler.run(), name="demo-chat-handler"),
            ]
            if cluster is not None and options.chaos is not None:
                chaos = Chaos(cluster.cluster, api, options.chaos, lambda line: _say(out, line))
                workers.append(asyncio.create_task(chaos.run(), name="demo-chaos"))
            stack.push_async_callback(_cancel, workers)
            where = _where(settings.nats.servers[0], server, cluster)
            extra = "" if cluster is None else _cluster_guide(options, cluster)
            _say(out, _guide(options, platform, settings, app.port, where=where, cluster_text=extra))

            failure = await _wait_for_end(stop, workers, options.duration_seconds)
            if failure is not None:
                _say(out, f"Stopping: {failure}")
            own_servers = " and nats-server ..." if server else " and the cluster ..." if cluster else " ..."
            _say(out, "Stopping the traffic and the exporter" + own_servers)
        elapsed = format_duration(round(time.monotonic() - started))
        stats = handler.stats
        _say(
            out,
            f"Stopped after {elapsed}. Published {sum(traffic.published.values())} messages; "
            f"chat-handler acked {stats.acked}, NAKed {stats.naked}, dead-lettered {stats.dead_lettered}."
            + ("" if server is None else " nats-server is stopped and its temporary store removed.")
            + ("" if cluster is None else " The cluster is stopped and its temporary stores removed."),
        )
    return 1 if failure is not None else 0


async def _start_nats(
    options: DemoOptions, stack: contextlib.AsyncExitStack, out: TextIO
) -> tuple[NatsSettings, NatsServerProcess | None, DemoCluster | None]:
    """The demo's own server or cluster, started, its stop registered on ``stack``; or the user's NATS."""
    if options.cluster:
        cluster = demo_cluster()
        # Registered before start(): a start that fails half-way still leaves nothing behind.
        stack.push_async_callback(asyncio.to_thread, cluster.cluster.cleanup)
        _say(out, f"Starting a {CLUSTER_SIZE}-node nats-server cluster with JetStream on loopback ...")
        await asyncio.to_thread(cluster.start)
        return NatsSettings(servers=tuple(cluster.cluster.urls)), None, cluster
    if options.use_existing_server:
        return options.settings.nats, None, None
    server = NatsServerProcess(server_name="ai-platform-demo", extra_config=platform_account_config())
    stack.push_async_callback(asyncio.to_thread, server.cleanup)
    _say(out, "Starting nats-server with JetStream on loopback ...")
    await asyncio.to_thread(server.start)
    return NatsSettings(servers=(server.url,)), server, None


async def _wait_for_end(
    stop: asyncio.Event, workers: list[asyncio.Task[None]], duration: float | None
) -> str | None:
    """None when stopped or timed out as asked; the reason when a worker ended by itself."""
    stopped = asyncio.create_task(stop.wait())
    try:
        done, _ = await asyncio.wait(
            {stopped, *workers}, timeout=duration, return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        stopped.cancel()
    for worker in workers:
        if worker in done:
            error = worker.exception()
            # The traffic's task group wraps its failure: show the failure itself.
            while isinstance(error, BaseExceptionGroup) and error.exceptions:
                error = error.exceptions[0]
            reason = f"{type(error).__name__}: {error}" if error is not None else "no error"
            return f"{worker.get_name()} ended unexpectedly ({reason})"
    return None


async def _cancel(tasks: list[asyncio.Task[None]]) -> None:
    """Cancel and wait, but never let a stuck task hold up the rest of the teardown."""
    for task in tasks:
        task.cancel()
    await asyncio.wait(tasks, timeout=STOP_DEADLINE_SECONDS)


@contextlib.contextmanager
def _signals_set(stop: asyncio.Event) -> Iterator[None]:
    """SIGINT and SIGTERM set ``stop`` instead of killing the process, so the teardown runs."""
    loop = asyncio.get_running_loop()
    installed = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(signum, stop.set)
        except (NotImplementedError, RuntimeError, ValueError):
            continue  # not the main thread (tests) or not supported: the caller sets `stop` itself
        installed.append(signum)
    try:
        yield
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)


def _say(out: TextIO, text: str) -> None:
    print(text, file=out, flush=True)


def exporter_base_url(listen_address: str, port: int) -> str:
    """The URL to open for a listen address: all interfaces are shown as ``localhost``."""
    host, _ = split_listen_address(listen_address)
    if host in (None, "", "0.0.0.0", "::"):  # noqa: S104 (recognising the wildcard, not binding it)
        host = "localhost"
    elif ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


_GUIDE = """
The AI platform's JetStream is running, with traffic.
  {where}
  Exporter: {base}/         (landing page)
            {base}/metrics  (collected every {interval})

What to look at in /metrics:
  * the {stream_count} streams:
    {streams}.
    nats_stream_messages_total{{stream="..."}} grows with the traffic; rate() of it is each message rate.
  * the {consumer} consumer on {chat_stream} fails on purpose: {failure:.0%} of the chat messages fail
    on every delivery, are NAKed with a {nak_delay} delay and, on delivery {max_deliver} (max_deliver),
    republished to {dlq_subject} and terminated; {retry:.0%} fail once, then succeed; {abandon:.0%} hit
    a handler bug (NAKed even on their last delivery, so the server gives up on them):
    nats_consumer_pending_messages, nats_consumer_ack_pending, nats_consumer_redelivered_messages,
    nats_consumer_naks_total, nats_consumer_terminated_messages_total,
    nats_consumer_max_deliveries_exceeded_total.
  * dead letters land in {dlq}: nats_dlq_messages{{stream="{dlq}",subject="{dlq_subject}"}};
    read them with: python -m exporter dlq list --nats-url {nats_url}
{probe}{cluster}
{stop}"""

_CLUSTER_GUIDE = """  * the cluster (the Cluster dashboard): every stream has {replicas} replicas, {mirror}
    mirrors {chat_stream}: nats_stream_replicas_current, nats_stream_replica_current{{server}},
    nats_stream_replica_lag_operations{{server}}, nats_stream_info{{leader}},
    nats_stream_leader_elections_total, nats_stream_source_lag_messages{{stream="{mirror}"}}.
{chaos}  * the whole cluster (the Servers and Accounts dashboards) through the system account {system}: run a
    second exporter as its user {user} on {system_address}:
      python -m exporter --config {system_config}
"""
_CHAOS_GUIDE = """  * chaos: every {every} a server is stopped (every other time the leader of {chat_stream})
    and restarted {down} later; each step is logged below as it happens.
"""

_PROBE_GUIDE = """\
  * the end-to-end probe publishes to its stream {stream} and reads the message back every interval:
    nats_probe_up, nats_probe_publish_ack_seconds, nats_probe_round_trip_seconds,
    nats_probe_failures_total{{stage="..."}}.
"""


def _where(nats_url: str, server: NatsServerProcess | None, cluster: DemoCluster | None) -> str:
    if cluster is not None:
        pids = ", ".join(str(member.pid) for member in cluster.cluster.members)
        return (
            f"NATS:     {', '.join(cluster.cluster.urls)}\n"
            f"            (the demo's {CLUSTER_SIZE}-node cluster, pids {pids}, account {PLATFORM_ACCOUNT},\n"
            f"            temporary stores in {cluster.directory})"
        )
    if server is not None and server.store_dir is not None:
        return (
            f"NATS:     {nats_url} (the demo's nats-server, pid {server.pid}, account {PLATFORM_ACCOUNT},\n"
            f"            temporary store {server.store_dir.parent})"
        )
    return f"NATS:     {nats_url} (an existing server: the platform's streams stay there after the demo)"


def _cluster_guide(options: DemoOptions, cluster: DemoCluster) -> str:
    chaos = options.chaos
    chaos_text = (
        ""
        if chaos is None
        else _CHAOS_GUIDE.format(
            every=format_duration(chaos.every_seconds),
            down=format_duration(chaos.down_seconds),
            chat_stream=CHAT_STREAM,
        )
    )
    return _CLUSTER_GUIDE.format(
        replicas=CLUSTER_REPLICAS,
        mirror=MIRROR_STREAM,
        chat_stream=CHAT_STREAM,
        chaos=chaos_text,
        system=SYSTEM_ACCOUNT,
        user=SYSTEM_USER,
        system_address=SYSTEM_EXPORTER_ADDRESS,
        system_config=cluster.system_config,
    )


def _guide(  # noqa: PLR0913 (what the guide tells comes from each of these)
    options: DemoOptions,
    platform: PlatformSpec,
    settings: Settings,
    port: int,
    *,
    where: str,
    cluster_text: str = "",
) -> str:
    nats_url = settings.nats.servers[0]
    consumer = next(
        (c for c in platform.consumers if (c.stream, c.name) == (CHAT_STREAM, CHAT_CONSUMER)),
        None,
    )
    handler = options.handler
    if options.duration_seconds is not None:
        stop = f"Stops by itself after {format_duration(options.duration_seconds)}; Ctrl-C stops it earlier."
    else:
        stop = "Press Ctrl-C to stop: everything the demo started is stopped and removed."
    return _GUIDE.format(
        where=where,
        base=exporter_base_url(settings.web.listen_address, port),
        interval=format_duration(settings.collection.interval_seconds),
        stream_count=len(platform.streams),
        streams=textwrap.fill(
            ", ".join(s.name for s in platform.streams), width=100, subsequent_indent="    "
        ),
        consumer=CHAT_CONSUMER,
        chat_stream=CHAT_STREAM,
        failure=handler.failure_ratio,
        retry=handler.retry_ratio,
        abandon=handler.abandon_ratio,
        nak_delay=format_duration(handler.nak_delay_seconds),
        max_deliver=consumer.max_deliver if consumer is not None else "(not configured)",
        dlq=DEAD_LETTER_STREAM,
        dlq_subject=DEAD_LETTER_CHAT_SUBJECT,
        nats_url=nats_url,
        probe=_PROBE_GUIDE.format(stream=settings.probe.stream) if settings.probe.enabled else "",
        cluster=cluster_text,
        stop=stop,
    )
