"""Cluster benchmark: ``python -m bench.cluster`` (or ``make bench-cluster``).

A 3-node loopback cluster with a system account and one JetStream account holding N R3 memory streams x 10
consumers, built in batches under a time budget (the streams built when it runs out are the size measured).
Side by side in one run, interleaved, medians:

1. the exporter's full account-scope cycle (fetch, snapshot, render, compress) against the raw floor of the
   same requests (INFO, STREAM.NAMES pages, STREAM.INFO and CONSUMER.LIST per stream, same concurrency);
2. the cluster scope against the account scope: (a) requests per cycle, from the client's own message
   counters and from the servers' JetStream API counters (JSZ ``api.total`` summed over servers);
   (b) cycle time; (c) the servers' CPU time (utime+stime of the three nats-server processes) over windows
   with one operation every interval: nothing, an account-scope cycle, a cluster-scope cycle, the cluster
   scope's JSZ request with ``stream_leader_only`` true, and one ``/jsz`` HTTP read per server with accounts,
   streams, consumers and config (what prometheus-nats-exporter does at every scrape).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import nats
import nats.errors
from nats.aio.client import Client

from bench.common import (
    CONCURRENCY,
    REQUEST_TIMEOUT_SECONDS,
    Results,
    build_streams,
    paged,
    request_json,
    timed,
    verdict,
)
from exporter.app import build_exposition
from exporter.cluster_source import ACCOUNTS_PER_PAGE, JSZ_SUBJECT
from exporter.metrics import Renderer
from exporter.natsserver import NatsCluster
from exporter.scope import ACCOUNT, CLUSTER, ScopedSource
from exporter.settings import CollectionSettings, Settings
from exporter.snapshot import ExporterHealth, Snapshot
from exporter.stages import StageTimings

ACCOUNT_NAME = "JS"
ACCOUNTS_CONFIG = (
    "accounts {\n"
    '  SYS: { users: [ {user: "sys", password: "sys"} ] }\n'
    f'  {ACCOUNT_NAME}: {{ jetstream: enabled, users: [ {{user: "js", password: "js"}} ] }}\n'
    "}\n"
    "system_account: SYS\n"
)
BUILD_BATCH = 50  # streams created at once between checks of the build budget
NAMES_PAGE = 1024  # STREAM.NAMES page size on the server
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# --- the floor and the exporter's cycle ---------------------------------------------------------------


async def account_scope_floor(nc: Client) -> int:
    """The requests the account scope must make on a cluster, raw JSON and nothing more."""
    semaphore = asyncio.Semaphore(CONCURRENCY)

    async def info() -> None:
        async with semaphore:
            await request_json(nc, "$JS.API.INFO")

    async def stream(name: str) -> int:
        async with semaphore:
            await request_json(nc, f"$JS.API.STREAM.INFO.{name}")
        return len(await paged(nc, semaphore, f"$JS.API.CONSUMER.LIST.{name}", "consumers"))

    account = asyncio.create_task(info())
    names = await paged(nc, semaphore, "$JS.API.STREAM.NAMES", "streams")
    counts = await asyncio.gather(*(stream(str(name)) for name in names))
    await account
    return sum(counts)


@dataclass
class ExporterCycle:
    """The daemon's cycle on one connection: one source and one renderer for its lifetime."""

    source: ScopedSource
    renderer: Renderer
    previous: Snapshot | None = None

    @classmethod
    def on(cls, nc: Client, scope: str) -> ExporterCycle:
        settings = Settings(
            collection=CollectionSettings(
                concurrency=CONCURRENCY,
                deadline_seconds=120,
                interval_seconds=300,
                request_timeout_seconds=30,
                scope=scope,
            )
        )
        return cls(ScopedSource(nc, settings), Renderer())

    async def fetch(self) -> Snapshot:
        """The cycle's fetch and snapshot alone, without rendering."""
        snapshot = await self.source.fetch_snapshot(self.previous, StageTimings(time.monotonic))
        self.previous = snapshot
        return snapshot

    async def run(self) -> int:
        snapshot = await self.fetch()
        health = ExporterHealth(up=True, collection_duration_seconds=1.0, last_success_timestamp=time.time())
        exposition = await build_exposition(self.renderer, snapshot, health)
        return exposition.text.length


# --- raw cluster-wide requests ------------------------------------------------------------------------


async def raw_jsz(nc: Client, servers: int, *, leader_only: bool, gzip: bool = True) -> int:
    """One JSZ page (every account fits in one) from every server, as the cluster source asks it.

    ``gzip``: whether the replies are asked compressed, as the cluster source asks them.
    """
    request = {
        "accounts": True,
        "streams": True,
        "consumer": True,
        "config": True,
        "stream_leader_only": leader_only,
        "offset": 0,
        "limit": ACCOUNTS_PER_PAGE,
    }
    inbox = nc.new_inbox()
    subscription = await nc.subscribe(inbox, max_msgs=servers)
    headers = {"Accept-Encoding": "gzip"} if gzip else None
    await nc.publish(JSZ_SUBJECT, json.dumps(request).encode(), reply=inbox, headers=headers)
    size = 0
    for _ in range(servers):
        size += len((await subscription.next_msg(timeout=30)).data)
    return size


async def http_jsz(session: aiohttp.ClientSession, monitor_ports: list[int]) -> int:
    """prometheus-nats-exporter's scrape: every server's /jsz with accounts, streams, consumers and config."""
    query = "accounts=true&streams=true&consumers=true&config=true"

    async def one(port: int) -> int:
        async with session.get(f"http://127.0.0.1:{port}/jsz?{query}") as response:
            return len(await response.read())

    return sum(await asyncio.gather(*(one(port) for port in monitor_ports)))


# --- the servers' own counters ------------------------------------------------------------------------


def api_total(cluster: NatsCluster) -> int:
    """JetStream API requests the servers counted, summed over servers."""
    return sum(int(cluster.jsz(member)["api"]["total"]) for member in cluster.members)


def servers_cpu_seconds(cluster: NatsCluster) -> float:
    """utime + stime of every nats-server process so far."""
    total = 0
    for member in cluster.members:
        fields = Path(f"/proc/{member.pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime: fields 14 and 15 of the whole line
    return total / CLOCK_TICKS


@dataclass(frozen=True)
class Counted:
    client_requests: int
    client_replies: int
    reply_bytes: int
    server_api_requests: int


async def counted(nc: Client, cluster: NatsCluster, operation: Callable[[], Awaitable[object]]) -> Counted:
    """One operation's messages from the client's counters and JetStream API requests from the servers'."""
    before_api = await asyncio.to_thread(api_total, cluster)
    out_msgs, in_msgs, in_bytes = nc.stats["out_msgs"], nc.stats["in_msgs"], nc.stats["in_bytes"]
    await operation()
    after_api = await asyncio.to_thread(api_total, cluster)
    return Counted(
        nc.stats["out_msgs"] - out_msgs,
        nc.stats["in_msgs"] - in_msgs,
        nc.stats["in_bytes"] - in_bytes,
        after_api - before_api,
    )


async def cpu_window(
    cluster: NatsCluster, operation: Callable[[], Awaitable[object]] | None, seconds: float, interval: float
) -> float:
    """The servers' CPU seconds over ``seconds``, ``operation`` started every ``interval`` (None: idle)."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    before = servers_cpu_seconds(cluster)
    tick = 0
    while (due := started + tick * interval) < started + seconds:
        await asyncio.sleep(max(0.0, due - loop.time()))
        if operation is not None:
            await operation()
        tick += 1
    await asyncio.sleep(max(0.0, started + seconds - loop.time()))
    return servers_cpu_seconds(cluster) - before


# --- the run ------------------------------------------------------------------------------------------


async def build_within(nc: Client, streams: int, budget_seconds: float, results: Results) -> int:
    """R3 streams in batches until ``streams`` exist, the budget is spent or a create is not answered
    within the request timeout (the cluster's limit on this machine); returns how many streams exist."""
    started = time.perf_counter()
    built = 0
    stopped = ""
    while built < streams:
        if time.perf_counter() - started > budget_seconds:
            stopped = f" (budget of {budget_seconds:.0f} s spent)"
            break
        batch = min(BUILD_BATCH, streams - built)
        try:
            await build_streams(nc, built, batch, replicas=3, parallel=16)
        except nats.errors.TimeoutError:
            stopped = f" (a create was not answered within {REQUEST_TIMEOUT_SECONDS} s: building stopped)"
            break
        built += batch
    elapsed = time.perf_counter() - started
    await asyncio.sleep(REQUEST_TIMEOUT_SECONDS if stopped else 0)  # creates still in flight settle
    names = await paged(nc, asyncio.Semaphore(1), "$JS.API.STREAM.NAMES", "streams")
    consumers = (await request_json(nc, "$JS.API.INFO"))["consumers"]
    results.add(
        f"built {len(names)} R3 memory streams, {consumers} consumers in {elapsed:.1f} s, "
        f"{elapsed / max(1, built) * 1000:.0f} ms per stream{stopped}"
    )
    return len(names)


async def run(args: argparse.Namespace, results: Results) -> None:
    with NatsCluster(extra_config=ACCOUNTS_CONFIG) as cluster:
        urls = cluster.members[0].url
        # The users of ACCOUNTS_CONFIG, on a loopback cluster that lives as long as this run.
        account_nc = await nats.connect(urls, user="js", password="js")  # noqa: S106
        system_nc = await nats.connect(urls, user="sys", password="sys")  # noqa: S106
        try:
            streams = await build_within(account_nc, args.streams, args.build_budget, results)
            await measure(
                cluster=cluster,
                account_nc=account_nc,
                system_nc=system_nc,
                streams=streams,
                args=args,
                results=results,
            )
        finally:
            await account_nc.close()
            await system_nc.close()


async def measure(
    *,
    cluster: NatsCluster,
    account_nc: Client,
    system_nc: Client,
    streams: int,
    args: argparse.Namespace,
    results: Results,
) -> None:
    servers = len(cluster.members)
    account_cycle = ExporterCycle.on(account_nc, ACCOUNT)
    cluster_cycle = ExporterCycle.on(system_nc, CLUSTER)
    # Warm-up: server caches, imports, the label memo, and the cluster source learns the cluster's size.
    await account_scope_floor(account_nc)
    size = await account_cycle.run()
    cluster_size = await cluster_cycle.run()
    consumers_seen = sum(1 for _ in (cluster_cycle.previous.consumers if cluster_cycle.previous else ()))
    results.add(
        f"exposition: account scope {size / 1e6:.1f} MB, cluster scope {cluster_size / 1e6:.1f} MB "
        f"({consumers_seen} consumers)"
    )

    floors: list[float] = []
    accounts: list[float] = []
    clusters: list[float] = []
    all_replicas: list[float] = []
    leaders_only: list[float] = []
    fetches: dict[str, list[float]] = {ACCOUNT: [], CLUSTER: []}
    for _ in range(args.repeats):
        floors += await timed(lambda: account_scope_floor(account_nc), 1)
        accounts += await timed(account_cycle.run, 1)
        fetches[ACCOUNT] += await timed(account_cycle.fetch, 1)
        fetches[CLUSTER] += await timed(cluster_cycle.fetch, 1)
        clusters += await timed(cluster_cycle.run, 1)
        all_replicas += await timed(lambda: raw_jsz(system_nc, servers, leader_only=False), 1)
        leaders_only += await timed(lambda: raw_jsz(system_nc, servers, leader_only=True), 1)
    floor, account, clustered = (statistics.median(values) for values in (floors, accounts, clusters))
    results.add(f"(1) floor: raw account-scope requests         {floor:8.3f} s (median of {args.repeats})")
    results.add(f"    account scope full cycle                  {account:8.3f} s")
    results.add(
        f"    ratio cycle / floor = {account / floor:.2f}   target <= 2.0   {verdict(account / floor <= 2.0)}"
    )
    results.add(f"(2b) cluster scope full cycle                {clustered:8.3f} s")
    results.add(
        f"    ratio cluster / account = {clustered / account:.2f}   target <= 1.0   "
        f"{verdict(clustered <= account)}"
    )
    results.add(
        f"    its floor, the raw JSZ request (stream_leader_only=false) "
        f"{statistics.median(all_replicas):.3f} s; with stream_leader_only=true "
        f"{statistics.median(leaders_only):.3f} s"
    )
    results.add(
        f"    fetch and snapshot alone (no render, no compression): account scope "
        f"{statistics.median(fetches[ACCOUNT]):.3f} s, "
        f"cluster scope {statistics.median(fetches[CLUSTER]):.3f} s"
    )

    account_counts = [await counted(account_nc, cluster, account_cycle.run) for _ in range(3)]
    cluster_counts = [await counted(system_nc, cluster, cluster_cycle.run) for _ in range(3)]
    expected = 1 + math.ceil(streams / NAMES_PAGE) + 2 * streams
    pages = math.ceil(3 / ACCOUNTS_PER_PAGE)  # SYS, JS and the global account
    for label, counts in (("account", account_counts), ("cluster", cluster_counts)):
        median = {
            field: statistics.median(getattr(count, field) for count in counts)
            for field in ("client_requests", "client_replies", "reply_bytes", "server_api_requests")
        }
        results.add(
            f"(2a) {label} scope per cycle: {median['client_requests']:.0f} requests sent, "
            f"{median['client_replies']:.0f} replies ({median['reply_bytes'] / 1e6:.1f} MB), "
            f"JetStream API requests counted by the servers (summed) {median['server_api_requests']:.0f}"
        )
    results.add(
        f"    account scope expected 1 + ceil(N/1024) + 2N = {expected}; cluster scope expected "
        f"pages = {pages} request(s), servers x pages = {servers * pages} replies, 0 JetStream API requests"
    )

    await cpu_comparison(
        cluster=cluster,
        account_cycle=account_cycle,
        cluster_cycle=cluster_cycle,
        system_nc=system_nc,
        args=args,
        results=results,
    )


async def cpu_comparison(
    *,
    cluster: NatsCluster,
    account_cycle: ExporterCycle,
    cluster_cycle: ExporterCycle,
    system_nc: Client,
    args: argparse.Namespace,
    results: Results,
) -> None:
    servers = len(cluster.members)
    ports = [member.monitor_port for member in cluster.members]
    async with aiohttp.ClientSession() as session:
        operations: dict[str, Callable[[], Awaitable[object]] | None] = {
            "idle (nothing asked)": None,
            "account scope cycle": account_cycle.run,
            "cluster scope cycle": cluster_cycle.run,
            "JSZ stream_leader_only=false (raw)": lambda: raw_jsz(system_nc, servers, leader_only=False),
            "JSZ stream_leader_only=true (raw)": lambda: raw_jsz(system_nc, servers, leader_only=True),
            "JSZ stream_leader_only=false, no gzip (raw)": lambda: raw_jsz(
                system_nc, servers, leader_only=False, gzip=False
            ),
            "/jsz HTTP per server": lambda: http_jsz(session, ports),
        }
        sizes = {
            "JSZ stream_leader_only=false (raw)": await raw_jsz(system_nc, servers, leader_only=False),
            "JSZ stream_leader_only=true (raw)": await raw_jsz(system_nc, servers, leader_only=True),
            "JSZ stream_leader_only=false, no gzip (raw)": await raw_jsz(
                system_nc, servers, leader_only=False, gzip=False
            ),
            "/jsz HTTP per server": await http_jsz(session, ports),
        }
        cpu: dict[str, list[float]] = {name: [] for name in operations}
        for _ in range(args.cpu_rounds):
            for name, operation in operations.items():
                cpu[name].append(await cpu_window(cluster, operation, args.cpu_seconds, args.cpu_interval))
        per_operation = await per_operation_cpu(cluster, operations, args.op_repeats)
    per_window = args.cpu_seconds / args.cpu_interval
    idle = statistics.median(cpu["idle (nothing asked)"])
    results.add(
        f"(2c) servers' CPU (utime+stime of {servers} nats-server processes), "
        f"{args.cpu_seconds:g} s windows, one operation every {args.cpu_interval:g} s, "
        f"median of {args.cpu_rounds} interleaved rounds:"
    )
    for name, values in cpu.items():
        median = statistics.median(values)
        above_idle = (median - idle) / per_window if name != "idle (nothing asked)" else 0.0
        size = f", {sizes[name] / 1e6:.1f} MB replied" if name in sizes else ""
        results.add(
            f"    {name:<44} {median:6.2f} CPU s per window, {median / per_window:5.3f} per interval, "
            f"{above_idle:5.3f} above idle{size}"
        )
    report_per_operation(*per_operation, args.op_repeats, results)


IDLE_SAMPLE_SECONDS = 0.5


async def cpu_during(cluster: NatsCluster, operation: Callable[[], Awaitable[object]]) -> tuple[float, float]:
    """The servers' CPU seconds and the wall seconds while one operation runs."""
    before, started = servers_cpu_seconds(cluster), time.perf_counter()
    await operation()
    return servers_cpu_seconds(cluster) - before, time.perf_counter() - started


async def per_operation_cpu(
    cluster: NatsCluster, operations: dict[str, Callable[[], Awaitable[object]] | None], repeats: int
) -> tuple[float, dict[str, list[tuple[float, float]]]]:
    """Each operation's servers' CPU and wall seconds, read right around it; and the idle CPU rate.

    The replicated groups' heartbeats keep the servers busy at idle; reading the CPU right around each
    operation, interleaved with idle samples, separates its cost from that background better than windows.
    """
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in operations}
    for _ in range(repeats):
        for name, operation in operations.items():
            work = operation or (lambda: asyncio.sleep(IDLE_SAMPLE_SECONDS))
            samples[name].append(await cpu_during(cluster, work))
    idle_name = next(name for name, operation in operations.items() if operation is None)
    idle_rate = statistics.median(cpu / wall for cpu, wall in samples.pop(idle_name))
    return idle_rate, samples


def report_per_operation(
    idle_rate: float, samples: dict[str, list[tuple[float, float]]], repeats: int, results: Results
) -> None:
    """Each operation's cost: its CPU less the idle rate over its duration, median over the repeats."""
    results.add(
        f"(2c') servers' CPU per operation, read right around it, less the idle rate "
        f"({idle_rate:.2f} CPU s/s) over its duration, median of {repeats} interleaved:"
    )
    costs = {}
    for name, values in samples.items():
        costs[name] = statistics.median(cpu - idle_rate * wall for cpu, wall in values)
        wall = statistics.median(w for _, w in values)
        results.add(f"    {name:<44} {costs[name]:6.3f} CPU s  ({wall:.3f} s wall)")
    cluster_cost, jsz_cost = costs["cluster scope cycle"], costs["/jsz HTTP per server"]
    results.add(
        f"    cluster scope / /jsz read = {cluster_cost / jsz_cost:.2f}   target <= 1.0   "
        f"{verdict(cluster_cost <= jsz_cost)}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.cluster", description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=1000, help="N R3 streams (each with 10 consumers)")
    parser.add_argument(
        "--build-budget", type=float, default=420, help="seconds the streams may take to build"
    )
    parser.add_argument("--repeats", type=int, default=5, help="interleaved repeats of the cycle comparison")
    parser.add_argument("--cpu-seconds", type=float, default=30, help="length of each CPU window")
    parser.add_argument("--cpu-interval", type=float, default=5, help="one operation every this many seconds")
    parser.add_argument("--cpu-rounds", type=int, default=2, help="interleaved rounds of CPU windows")
    parser.add_argument(
        "--op-repeats", type=int, default=10, help="interleaved repeats of each operation's CPU"
    )
    parser.add_argument("--output", type=Path, help="also write the results to this file")
    args = parser.parse_args()
    results = Results([])
    results.header(
        "bench.cluster",
        f"python -m bench.cluster --streams {args.streams} --build-budget {args.build_budget:g} "
        f"--repeats {args.repeats} --cpu-seconds {args.cpu_seconds:g} --cpu-interval {args.cpu_interval:g} "
        f"--cpu-rounds {args.cpu_rounds} --op-repeats {args.op_repeats}",
    )
    asyncio.run(run(args, results))
    results.write(args.output)


if __name__ == "__main__":
    main()
