"""End to end: real Prometheus scrapes the real exporter watching a real nats-server with the platform's
streams and failing traffic; every dashboard query returns data, every shipped rule evaluates, and the
dead-letter alert travels through a real Alertmanager to a webhook receiver.

One stack for the module (about 30 s to fill with data); everything runs on loopback and is stopped at the
end, whatever happens.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
import yaml
from prometheus_client.parser import text_string_to_metric_families
from support.dashboard_queries import (
    SINGLE_SERVER,
    dashboard_files,
    every_panel_query,
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
from exporter.demo.chathandler import ChatHandler, HandlerOptions
from exporter.demo.platform import load_platform
from exporter.demo.provisioning import apply_platform
from exporter.demo.runner import PLATFORM_ACCOUNT, platform_account_config
from exporter.demo.traffic import PlatformTraffic, TrafficOptions
from exporter.jsapi import JetStreamApi
from exporter.natsserver import NatsServerProcess
from exporter.settings import CollectionSettings, NatsSettings, ProbeSettings, Settings, WebSettings

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(150)]

DEAD_LETTER_STREAM = "AI_DLQ"
DEAD_LETTER_SUBJECT = "ai.dlq.chat"
DEAD_LETTER_ALERT = "NatsDeadLetterQueueNotEmpty"  # alerts/nats-jetstream.rules.yml
# The demo's account with JetStream limits of its own, so the "against limits" panels have a limit to show;
# clients without credentials land in it, as the demo's do.
ACCOUNT = PLATFORM_ACCOUNT
# Failures well above the demo's defaults and short NAK delays, so NAKs, max-deliveries, terminations
# and dead letters all exist within seconds.
TRAFFIC = TrafficOptions(users=4, chat_rate=20.0, voice_rate=1.0, login_rate=1.0, seed=5)
HANDLER = HandlerOptions(
    failure_ratio=0.2, retry_ratio=0.2, abandon_ratio=0.2, nak_delay_seconds=0.2, processing_seconds=0.01
)
DATA_DEADLINE_SECONDS = 90.0
ALERT_DEADLINE_SECONDS = 60.0


@dataclass
class Stack:
    prometheus: PrometheusApi
    receiver: WebhookReceiver
    rule_files: list[Path]
    dead_letter_rule: dict[str, Any]


def exporter_settings(nats_url: str) -> Settings:
    return Settings(
        nats=NatsSettings(servers=(nats_url,), connect_timeout_seconds=0.5),
        web=WebSettings(listen_address="127.0.0.1:0"),
        collection=CollectionSettings(interval_seconds=1.0, deadline_seconds=0.9),
        probe=ProbeSettings(enabled=True),  # the dashboards' probe panels need its series
        dead_letter_streams=(DEAD_LETTER_STREAM,),
    )


async def exposition_has(session: aiohttp.ClientSession, port: int, name: str, **labels: str) -> bool:
    async with session.get(f"http://127.0.0.1:{port}/metrics") as response:
        text = await response.text()
    return any(
        sample.name == name and labels.items() <= sample.labels.items()
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    )


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    workdir = tmp_path_factory.mktemp("e2e")
    rule_files = shipped_rule_files()
    assert rule_files, "no Prometheus rule file in alerts/"
    dead_letter_rule = find_rule(rule_files, DEAD_LETTER_ALERT)
    nats_server = NatsServerProcess(
        store_dir=workdir / "nats" / "store", extra_config=platform_account_config()
    )
    async with contextlib.AsyncExitStack() as cleanup, aiohttp.ClientSession() as session:
        cleanup.push_async_callback(asyncio.to_thread, nats_server.cleanup)

        # The exporter starts before NATS, as it may in production: the failed "connect" stage is what
        # the errors-by-stage panel shows, and the exporter must connect by itself once NATS is up.
        app = ExporterApp(exporter_settings(nats_server.url))
        await app.start()
        cleanup.push_async_callback(app.stop)
        await wait_for(
            lambda: exposition_has(
                session, app.port, "nats_exporter_collection_errors_total", stage="connect"
            ),
            timeout=10,
            message="the exporter to count its failed connection",
        )
        await asyncio.to_thread(nats_server.start)

        nc = await connect_nats(NatsSettings(servers=(nats_server.url,)), name="e2e-platform")
        cleanup.push_async_callback(nc.close)
        await apply_platform(JetStreamApi(nc, domain=None, timeout_seconds=5), load_platform())
        traffic, handler = PlatformTraffic(nc, TRAFFIC), ChatHandler(nc, HANDLER)
        workers = [asyncio.create_task(traffic.run()), asyncio.create_task(handler.run())]
        cleanup.push_async_callback(cancel_and_raise, workers)

        receiver = WebhookReceiver()
        await receiver.start()
        cleanup.push_async_callback(receiver.stop)
        alertmanager = alertmanager_process(workdir / "alertmanager", webhook_url=receiver.url)
        cleanup.callback(alertmanager.stop)
        await alertmanager.start()
        prometheus = prometheus_process(
            workdir / "prometheus",
            scrape_targets=[f"127.0.0.1:{app.port}"],
            rule_files=rules_for_the_test(rule_files, workdir / "rules", DEAD_LETTER_ALERT),
            alertmanager=address(alertmanager),
        )
        cleanup.callback(prometheus.stop)
        await prometheus.start()

        yield Stack(PrometheusApi(session, base_url(prometheus)), receiver, rule_files, dead_letter_rule)


async def test_every_dashboard_query_returns_data(stack: Stack) -> None:
    queries = every_panel_query(SINGLE_SERVER)
    assert len(queries) > 40
    empty: list[str] = []

    async def all_have_data() -> bool:
        empty[:] = await stack.prometheus.queries_without_data(queries)
        return not empty

    try:
        await wait_for(
            all_have_data, timeout=DATA_DEADLINE_SECONDS, interval=1.0, message="every panel's data"
        )
    except pytest.fail.Exception:
        pytest.fail("panel queries without data:\n" + "\n".join(empty))


async def test_every_variable_offers_a_value(stack: Stack) -> None:
    """Each template variable's label_values() query, as Grafana sends it, lists the demo's values."""
    expected = {"account": ACCOUNT, "stream": DEAD_LETTER_STREAM, "dlq_stream": DEAD_LETTER_STREAM}
    expected |= {"consumer": "chat-handler"}
    offered = await stack.prometheus.variable_values(
        dashboard_files(SINGLE_SERVER), timeout=DATA_DEADLINE_SECONDS
    )
    for (dashboard, name), values in offered.items():
        if name in expected:
            assert expected[name] in values, (dashboard, name, values)


async def test_every_shipped_rule_loads_and_evaluates_cleanly(stack: Stack) -> None:
    shipped = sum(len(yaml.safe_load(p.read_text(encoding="utf-8"))["groups"]) for p in stack.rule_files)
    problems: list[str] = []

    async def all_evaluated() -> bool:
        groups = await stack.prometheus.rule_groups()
        rules = [rule for group in groups for rule in group["rules"]]
        problems[:] = [f"{rule['name']}: {rule['health']} {rule.get('lastError', '')}" for rule in rules]
        problems[:] = [p for p, rule in zip(problems, rules, strict=True) if rule["health"] != "ok"]
        return len(groups) == shipped and bool(rules) and not problems

    try:
        await wait_for(all_evaluated, timeout=30, interval=1.0, message="every rule evaluated")
    except pytest.fail.Exception:
        pytest.fail("rules not loaded or failing:\n" + "\n".join(problems))


async def test_the_dead_letter_alert_reaches_the_receiver_through_alertmanager(stack: Stack) -> None:
    severity = stack.dead_letter_rule["labels"]["severity"]
    wanted = {
        "alertname": DEAD_LETTER_ALERT,
        "stream": DEAD_LETTER_STREAM,
        "subject": DEAD_LETTER_SUBJECT,
        "account": ACCOUNT,
        "severity": severity,
    }

    def matches(alert: dict[str, Any]) -> bool:
        return wanted.items() <= alert["labels"].items()

    async def firing_in_prometheus() -> bool:
        return any(matches(a) and a["state"] == "firing" for a in await stack.prometheus.alerts())

    await wait_for(firing_in_prometheus, timeout=ALERT_DEADLINE_SECONDS, interval=0.5, message="alert firing")
    await wait_for(
        lambda: any(matches(a) and a["status"] == "firing" for a in stack.receiver.alerts),
        timeout=ALERT_DEADLINE_SECONDS,
        interval=0.2,
        message=f"{DEAD_LETTER_ALERT} at the webhook receiver",
    )
    received = next(a for a in stack.receiver.alerts if matches(a))
    assert received["annotations"]["runbook_url"].endswith(f"#{DEAD_LETTER_ALERT.lower()}")
    assert DEAD_LETTER_STREAM in received["annotations"]["summary"]
