"""End to end on a cluster: real Prometheus scrapes two real exporters watching one 3-node NATS cluster.

The cluster runs the demo's clustered platform (every stream on three replicas, a mirror of the chat stream)
plus a stream that sources the dead letters, with the demo's traffic and failing chat handler. One exporter
reads the platform's account, the other the whole cluster as a system-account user. Every panel query of
the Cluster dashboard returns data from the first, every query of the Servers and Accounts dashboards from
the second; every shipped rule file loads; and stopping a server sends NatsStreamUnderReplicated through a
real Alertmanager. One stack for the module; everything runs on loopback and is stopped at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
import yaml
from support.cluster import create_placed_stream
from support.dashboard_queries import (
    CLUSTER,
    DASHBOARD_DIR,
    SYSTEM_ACCOUNT,
    dashboard_files,
    every_panel_query,
    panel_queries,
)
from support.promstack import (
    PrometheusApi,
    WebhookReceiver,
    address,
    alertmanager_process,
    base_url,
    find_rule,
    prometheus_process,
    rules_for_the_test,
    shipped_rule_files,
)
from support.waiting import cancel_and_raise, wait_for

from exporter.app import ExporterApp
from exporter.connection import connect_nats
from exporter.demo.chathandler import CHAT_STREAM, ChatHandler, HandlerOptions
from exporter.demo.cluster import CLUSTER_SIZE, MIRROR_STREAM, SYSTEM_USER, clustered_platform
from exporter.demo.platform import load_platform
from exporter.demo.provisioning import apply_platform
from exporter.demo.runner import DEAD_LETTER_STREAM, PLATFORM_ACCOUNT, platform_account_config
from exporter.demo.traffic import PlatformTraffic, TrafficOptions
from exporter.jsapi import JetStreamApi
from exporter.natsserver import NatsCluster
from exporter.settings import (
    CollectionSettings,
    NatsAuth,
    NatsSettings,
    Secret,
    Settings,
    WebSettings,
)

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(180)]

SOURCING_STREAM = "DEAD_LETTER_ARCHIVE"  # sources AI_DLQ, so the mirrors-and-sources row has a source too
UNDER_REPLICATED_ALERT = "NatsStreamUnderReplicated"  # alerts/nats-jetstream-cluster.rules.yml
ACCOUNTS_DASHBOARD = "nats-jetstream-accounts.json"
TRAFFIC = TrafficOptions(users=4, chat_rate=10.0, voice_rate=1.0, login_rate=1.0, seed=7)
HANDLER = HandlerOptions(
    failure_ratio=0.2, retry_ratio=0.2, abandon_ratio=0.1, nak_delay_seconds=0.2, processing_seconds=0.01
)
DATA_DEADLINE_SECONDS = 90.0
# A stopped follower is marked not current by the leader after about 10 s; then one scrape, one evaluation.
ALERT_DEADLINE_SECONDS = 60.0
STOP_DEADLINE_SECONDS = 30.0


@dataclass
class ClusterStack:
    cluster: NatsCluster
    prometheus: PrometheusApi
    receiver: WebhookReceiver
    rule_files: list[Path]
    account_instance: str  # the exporter reading the platform's account
    system_instance: str  # the exporter reading the whole cluster as a system-account user


def exporter_settings(cluster: NatsCluster, *, auth: NatsAuth | None = None) -> Settings:
    return Settings(
        nats=NatsSettings(servers=tuple(cluster.urls), auth=auth or NatsAuth(), connect_timeout_seconds=1.0),
        web=WebSettings(listen_address="127.0.0.1:0"),
        collection=CollectionSettings(
            interval_seconds=1.0,
            deadline_seconds=0.9,
            expected_servers=CLUSTER_SIZE if auth is not None else None,
        ),
        dead_letter_streams=(DEAD_LETTER_STREAM,),
    )


async def stop_exporter(app: ExporterApp) -> None:
    """Stop ``app`` within a deadline; a stop that hangs fails with the stack of every task, to say where."""
    try:
        await asyncio.wait_for(app.stop(), STOP_DEADLINE_SECONDS)
    except TimeoutError:
        stacks = io.StringIO()
        for task in asyncio.all_tasks():
            task.print_stack(file=stacks)
        pytest.fail(
            f"the exporter did not stop within {STOP_DEADLINE_SECONDS:g}s; tasks:\n{stacks.getvalue()}"
        )


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[ClusterStack]:
    workdir = tmp_path_factory.mktemp("e2e-cluster")
    rule_files = shipped_rule_files()
    system_password = secrets.token_urlsafe(18)
    cluster = NatsCluster(
        workdir / "cluster", extra_config=platform_account_config(system_password=system_password)
    )
    async with contextlib.AsyncExitStack() as cleanup:
        cleanup.push_async_callback(asyncio.to_thread, cluster.cleanup)
        await asyncio.to_thread(cluster.start)

        nc = await connect_nats(NatsSettings(servers=tuple(cluster.urls)), name="e2e-cluster-platform")
        cleanup.push_async_callback(nc.close)
        platform = clustered_platform(load_platform())
        await apply_platform(JetStreamApi(nc, domain=None, timeout_seconds=5), platform)
        await create_placed_stream(
            nc, SOURCING_STREAM, [], num_replicas=3, sources=[{"name": DEAD_LETTER_STREAM}]
        )
        traffic, handler = PlatformTraffic(nc, TRAFFIC), ChatHandler(nc, HANDLER)
        workers = [asyncio.create_task(traffic.run()), asyncio.create_task(handler.run())]
        cleanup.push_async_callback(cancel_and_raise, workers)

        account_exporter = ExporterApp(exporter_settings(cluster))
        system_auth = NatsAuth(user=SYSTEM_USER, password=Secret(system_password))
        system_exporter = ExporterApp(exporter_settings(cluster, auth=system_auth))
        for app in (account_exporter, system_exporter):
            await app.start()
            cleanup.push_async_callback(stop_exporter, app)

        receiver = WebhookReceiver()
        await receiver.start()
        cleanup.push_async_callback(receiver.stop)
        alertmanager = alertmanager_process(workdir / "alertmanager", webhook_url=receiver.url)
        cleanup.callback(alertmanager.stop)
        await alertmanager.start()
        targets = [f"127.0.0.1:{app.port}" for app in (account_exporter, system_exporter)]
        prometheus = prometheus_process(
            workdir / "prometheus",
            scrape_targets=targets,
            rule_files=rules_for_the_test(rule_files, workdir / "rules", UNDER_REPLICATED_ALERT),
            alertmanager=address(alertmanager),
        )
        cleanup.callback(prometheus.stop)
        await prometheus.start()
        session = await cleanup.enter_async_context(aiohttp.ClientSession())
        yield ClusterStack(
            cluster,
            PrometheusApi(session, base_url(prometheus)),
            receiver,
            rule_files,
            account_instance=targets[0],
            system_instance=targets[1],
        )


async def assert_every_query_has_data(stack: ClusterStack, queries: list[Any], instance: str) -> None:
    empty: list[str] = []

    async def all_have_data() -> bool:
        empty[:] = await stack.prometheus.queries_without_data(queries, instance=instance)
        return not empty

    try:
        await wait_for(
            all_have_data, timeout=DATA_DEADLINE_SECONDS, interval=1.0, message="every panel's data"
        )
    except pytest.fail.Exception:
        pytest.fail(f"panel queries without data from {instance}:\n" + "\n".join(empty))


async def test_every_cluster_panel_has_data_from_the_account_exporter(stack: ClusterStack) -> None:
    queries = every_panel_query(CLUSTER)
    assert queries
    await assert_every_query_has_data(stack, queries, stack.account_instance)


async def test_every_servers_and_accounts_panel_has_data_from_the_system_account_exporter(
    stack: ClusterStack,
) -> None:
    queries = every_panel_query(SYSTEM_ACCOUNT) + panel_queries(DASHBOARD_DIR / ACCOUNTS_DASHBOARD)
    assert {query.dashboard for query in queries} == {"nats-jetstream-servers.json", ACCOUNTS_DASHBOARD}
    await assert_every_query_has_data(stack, queries, stack.system_instance)
    # The system-account exporter reports every account: the platform's streams are among them.
    accounts = await stack.prometheus.query(f'nats_stream_info{{instance="{stack.system_instance}"}}')
    assert PLATFORM_ACCOUNT in {series["metric"]["account"] for series in accounts}


async def test_every_variable_of_the_cluster_dashboards_offers_a_value(stack: ClusterStack) -> None:
    dashboards = dashboard_files(CLUSTER) + dashboard_files(SYSTEM_ACCOUNT)
    offered = await stack.prometheus.variable_values(dashboards, timeout=DATA_DEADLINE_SECONDS)
    servers = {member.server_name for member in stack.cluster.members}
    assert set(offered["nats-jetstream-cluster.json", "server"]) == servers
    assert set(offered["nats-jetstream-servers.json", "server"]) == servers
    assert PLATFORM_ACCOUNT in offered["nats-jetstream-cluster.json", "account"]


async def test_every_shipped_rule_file_loads_and_evaluates_cleanly(stack: ClusterStack) -> None:
    names = {path.name for path in stack.rule_files}
    assert {"nats-jetstream.rules.yml", "nats-jetstream-cluster.rules.yml"} <= names, names
    shipped = [
        group["name"]
        for path in stack.rule_files
        for group in yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]
    ]
    problems: list[str] = []

    async def all_evaluated() -> bool:
        groups = await stack.prometheus.rule_groups()
        problems[:] = [
            f"{rule['name']}: {rule['health']} {rule.get('lastError', '')}"
            for group in groups
            for rule in group["rules"]
            if rule["health"] != "ok"
        ]
        return sorted(group["name"] for group in groups) == sorted(shipped) and not problems

    try:
        await wait_for(all_evaluated, timeout=30, interval=1.0, message="every rule group evaluated")
    except pytest.fail.Exception:
        pytest.fail(f"rule groups {sorted(shipped)} not all loaded, or failing:\n" + "\n".join(problems))


async def test_a_stopped_server_sends_the_under_replicated_alert_through_alertmanager(
    stack: ClusterStack,
) -> None:
    rule = find_rule(stack.rule_files, UNDER_REPLICATED_ALERT)
    # A follower of the chat stream: its leader stays, so the stream is under-replicated, not leaderless.
    leader = await stack_stream_leader(stack, CHAT_STREAM)
    follower = next(m for m in stack.cluster.members if m.server_name != leader)
    wanted = {
        "alertname": UNDER_REPLICATED_ALERT,
        "stream": CHAT_STREAM,
        "account": PLATFORM_ACCOUNT,
        "severity": rule["labels"]["severity"],
    }

    def matches(alert: dict[str, Any]) -> bool:
        return wanted.items() <= alert["labels"].items()

    def matches_but_stream(alert: dict[str, Any]) -> bool:
        labels = {**alert["labels"], "stream": CHAT_STREAM}
        return alert["status"] == "firing" and wanted.items() <= labels.items()

    await asyncio.to_thread(follower.stop)
    try:
        # The mirror of the chat stream has replicas on the same servers: it is under-replicated too.
        await wait_for(
            lambda: (
                {CHAT_STREAM, MIRROR_STREAM}
                <= {a["labels"]["stream"] for a in stack.receiver.alerts if matches_but_stream(a)}
            ),
            timeout=ALERT_DEADLINE_SECONDS,
            interval=0.5,
            message=f"{UNDER_REPLICATED_ALERT} for {CHAT_STREAM} and {MIRROR_STREAM} at the webhook receiver",
        )
    finally:
        await asyncio.to_thread(follower.start)
    received = next(a for a in stack.receiver.alerts if matches(a))
    assert received["annotations"]["runbook_url"].endswith(f"#{UNDER_REPLICATED_ALERT.lower()}")
    assert CHAT_STREAM in received["annotations"]["summary"]


async def stack_stream_leader(stack: ClusterStack, stream: str) -> str:
    """The stream's leader as the account exporter last reported it (nats_stream_info{leader})."""
    result = await stack.prometheus.query(
        f'nats_stream_info{{instance="{stack.account_instance}", stream="{stream}"}}'
    )
    leaders = {series["metric"].get("leader") for series in result} - {None, ""}
    assert len(leaders) == 1, result
    return str(leaders.pop())
