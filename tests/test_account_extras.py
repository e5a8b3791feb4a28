"""Cluster scope with ``accounts``: connections inside the listed accounts add dead letters, lag and events.

A real 3-node cluster with a system account and two JetStream accounts, A and B, each with a work stream,
a pull consumer with unacknowledged messages, and a dead-letter stream of the same name. Only A is listed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import nats
import pytest
from nats.js.api import ConsumerConfig, StreamConfig
from support.scraping import Samples, sample, scrape
from support.spec_platform import publish_when_routed
from support.system_cluster import SYSTEM_USER, accounts_block, system_cluster, user_of, wait_for_meta_leader
from support.waiting import wait_for

from exporter.account_extras import AccountExtras
from exporter.app import ExporterApp
from exporter.cli import build_parser
from exporter.config import settings_from_args
from exporter.errors import ConfigError
from exporter.natsserver import NatsServerProcess
from exporter.settings import (
    AccountEntry,
    CollectionSettings,
    NatsAuth,
    NatsSettings,
    Secret,
    Settings,
    WebSettings,
)
from exporter.snapshot import Snapshot
from exporter.stages import StageTimings

ACCOUNTS = ("A", "B")
DEAD_LETTERS = "DLQ"
# The families only a connection inside an account can fill.
INSIDE_ONLY = (
    "nats_consumer_lag_seconds",
    "nats_dlq_stream_present",
    "nats_dlq_messages",
    "nats_dlq_oldest_message_timestamp_seconds",
    "nats_consumer_naks_total",
    "nats_consumer_max_deliveries_exceeded_total",
    "nats_consumer_terminated_messages_total",
    "nats_consumer_leader_elections_total",
    "nats_stream_leader_elections_total",
    "nats_stream_quorum_lost_total",
)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[NatsServerProcess]]:
    with system_cluster(tmp_path_factory.mktemp("account-extras"), ACCOUNTS) as started:
        asyncio.run(_provision(started.members[0].url))
        yield started.members


async def _provision(url: str) -> None:
    """Per account: WORK (R3) with a pull consumer and 3 unacknowledged messages; DLQ with 3 dead letters."""
    for account in ACCOUNTS:
        nc = await nats.connect(url, **user_of(account))
        js = nc.jetstream()
        await wait_for_meta_leader(js)
        await js.add_stream(StreamConfig(name="WORK", subjects=["WORK.>"], num_replicas=3))
        await js.add_consumer("WORK", ConsumerConfig(durable_name="work", ack_policy="explicit"))
        for index in range(3):
            # The stream was created a moment ago: its interest may not have reached this server yet.
            await publish_when_routed(nc, "WORK.job", f"{index}".encode())
        await js.add_stream(StreamConfig(name=DEAD_LETTERS, subjects=["DLQ.>"]))
        for subject in ("DLQ.orders", "DLQ.orders", "DLQ.payments"):
            await publish_when_routed(nc, subject, b"{}")
        await nc.close()


def settings_for(cluster: list[NatsServerProcess], *entries: AccountEntry) -> Settings:
    return Settings(
        nats=NatsSettings(
            servers=tuple(server.url for server in cluster),
            auth=NatsAuth(user=SYSTEM_USER["user"], password=Secret(SYSTEM_USER["password"])),
            connect_timeout_seconds=2.0,
        ),
        web=WebSettings(listen_address="127.0.0.1:0"),
        collection=CollectionSettings(
            interval_seconds=1.0, deadline_seconds=0.9, request_timeout_seconds=0.8, scope="cluster"
        ),
        dead_letter_streams=(DEAD_LETTERS,),
        accounts=entries,
    )


def entry(account: str, password: str | None = None) -> AccountEntry:
    user = user_of(account)
    return AccountEntry(account, NatsAuth(user=user["user"], password=Secret(password or user["password"])))


@contextlib.asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[ExporterApp]:
    app = ExporterApp(settings)
    await app.start()
    try:
        yield app
    finally:
        await app.stop()


async def exposition(port: int) -> str:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/metrics") as response,
    ):
        return await response.text()


def series_of(samples: Samples, name: str, account: str) -> list[frozenset[tuple[str, str]]]:
    return [labels for (found, labels) in samples if found == name and ("account", account) in labels]


async def test_a_listed_account_gets_lag_dead_letters_and_events_the_others_none(
    cluster: list[NatsServerProcess],
) -> None:
    work = {"account": "A", "stream": "WORK", "consumer": "work"}
    async with running(settings_for(cluster, entry("A"))) as app:
        latest: Samples = {}

        async def collected() -> bool:
            nonlocal latest
            _, latest = await scrape(app.port)
            return (
                sample(latest, "nats_consumer_naks_total", **work) == 0
                and sample(latest, "nats_consumer_lag_seconds", **work) is not None
                and sample(
                    latest, "nats_dlq_messages", account="A", stream=DEAD_LETTERS, subject="DLQ.orders"
                )
                == 2
            )

        await wait_for(
            collected, timeout=30, interval=0.2, message="A's lag, dead letters and event counters"
        )
        assert sample(latest, "nats_consumer_lag_seconds", **work) > 0  # type: ignore[operator]
        assert (
            sample(latest, "nats_dlq_messages", account="A", stream=DEAD_LETTERS, subject="DLQ.payments") == 1
        )
        assert sample(latest, "nats_dlq_stream_present", account="A", stream=DEAD_LETTERS) == 1

        # A NAK inside A is counted for A's consumer.
        nc = await nats.connect(cluster[1].url, **user_of("A"))
        try:
            subscription = await nc.jetstream().pull_subscribe("WORK.>", durable="work", stream="WORK")
            (message,) = await subscription.fetch(1, timeout=5)
            await message.nak()
            await nc.flush()

            async def nak_counted() -> bool:
                _, samples = await scrape(app.port)
                return sample(samples, "nats_consumer_naks_total", **work) == 1

            await wait_for(nak_counted, timeout=20, interval=0.2, message="the NAK counted for A/WORK/work")
        finally:
            await nc.close()

        text = await exposition(app.port)
        _, latest = await scrape(app.port)
    # B is read through the cluster view only: its streams and consumers, none of the inside families.
    assert sample(latest, "nats_consumer_pending_messages", account="B", stream="WORK", consumer="work") == 3
    for name in INSIDE_ONLY:
        assert series_of(latest, name, "B") == [], name
    assert sample(latest, "nats_up") == 1
    # Every series once: the connection inside A adds no stream or consumer series of its own.
    lines = [line.rsplit(" ", 1)[0] for line in text.splitlines() if line and not line.startswith("#")]
    assert [series for series, count in Counter(lines).items() if count > 1] == []


async def test_a_wrong_password_is_a_partial_failure_logged_once(
    cluster: list[NatsServerProcess], caplog: pytest.LogCaptureFixture
) -> None:
    settings = settings_for(cluster, entry("A"), entry("B", password="wrong"))
    with caplog.at_level(logging.INFO):
        async with running(settings) as app:
            up: list[float | None] = []
            latest: Samples = {}

            async def failures_counted() -> bool:
                nonlocal latest
                _, latest = await scrape(app.port)
                up.append(sample(latest, "nats_up"))
                failures = (
                    sample(latest, "nats_exporter_collection_errors_total", stage="account_connect") or 0
                )
                return failures >= 3

            await wait_for(failures_counted, timeout=30, interval=0.2, message="three failed cycles for B")
    assert set(up[up.index(1.0) :]) == {1.0}  # from the first collection on, B's failures never fail a cycle
    assert (
        sample(latest, "nats_consumer_lag_seconds", account="A", stream="WORK", consumer="work") is not None
    )
    for name in INSIDE_ONLY:
        assert series_of(latest, name, "B") == [], name
    refused = [r.getMessage() for r in caplog.records if "account 'B'" in r.getMessage()]
    assert len(refused) == 1, refused
    assert "account_connect" in refused[0]
    assert "wrong" not in caplog.text


def test_entries_are_read_from_the_yaml_file(tmp_path: Path) -> None:

    seed = tmp_path / "a.nk"
    seed.write_text("SUAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n")
    config = tmp_path / "config.yaml"
    config.write_text(
        "accounts:\n  - {name: A, user: a, password: secret-a}\n  - {name: B, nkey_seed_file: a.nk}\n"
    )
    settings = settings_from_args(build_parser().parse_args(["--config", str(config)]), environ={})
    assert settings.accounts == (
        AccountEntry("A", NatsAuth(user="a", password=Secret("secret-a"))),
        AccountEntry("B", NatsAuth(nkey_seed_file=str(seed))),
    )
    assert "secret-a" not in repr(settings)


@pytest.mark.parametrize(
    ("entries", "error"),
    [
        (
            "[{name: A, user: a, pasword: x}]",
            "accounts[0].pasword: unknown key 'pasword'; did you mean 'password'?",
        ),
        ("[{name: A}, {user: b, password: x}]", "accounts[1].name: the account's name is required"),
        ("[{name: A, user: a}]", "accounts[0].password: user and password go together"),
        ("[{name: A, token: t1, user: a, password: p}]", "accounts[0]: more than one authentication method"),
        ("[{name: A}, {name: A}]", "accounts[1].name: account 'A' is listed twice"),
        ("[{name: A, password: [x]}]", "accounts[0].password: expected a string, got a list"),
        ("{name: A}", "accounts: expected a non-empty list of accounts, got a mapping"),
        ("[A]", "accounts[0]: expected a mapping"),
    ],
)
def test_a_bad_entry_names_the_file_index_and_key(tmp_path: Path, entries: str, error: str) -> None:

    config = tmp_path / "config.yaml"
    config.write_text(f"accounts: {entries}\n")
    with pytest.raises(ConfigError) as failure:
        settings_from_args(build_parser().parse_args(["--config", str(config)]), environ={})
    message = str(failure.value)
    assert message.startswith(f"{config}: {error}"), message
    assert "\n" not in message
    for secret in ("t1", "'p'", "'x'"):
        assert secret not in message


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_a_failed_connection_is_retried_with_a_growing_backoff(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    server = NatsServerProcess(
        store_dir=tmp_path / "store", extra_config=accounts_block(ACCOUNTS), log_file=log
    )
    server.start()
    clock = FakeClock()
    settings = Settings(
        nats=NatsSettings(servers=(server.url,), connect_timeout_seconds=2.0),
        collection=CollectionSettings(scope="cluster"),
        accounts=(entry("A", password="wrong"),),
    )
    extras = AccountExtras(settings, clock=clock)
    snapshot = Snapshot(collected_at=0.0, servers=(), accounts=())

    def refusals() -> int:
        return log.read_text(encoding="utf-8").count("authentication error")

    async def cycle() -> tuple[str, ...]:
        return (await extras.complete(snapshot, None, StageTimings(time.monotonic))).partial_errors

    try:
        assert await cycle() == ("account_connect",)
        await wait_for(lambda: refusals() > 0, message="the server's refusal in its log")
        tried = refusals()
        for _ in range(3):  # within the first backoff (1 s): counted, not tried again
            assert await cycle() == ("account_connect",)
        assert refusals() == tried
        clock.now += 1.0
        assert await cycle() == ("account_connect",)
        await wait_for(lambda: refusals() > tried, message="a second attempt once the backoff passed")
        tried = refusals()
        clock.now += 1.0  # the backoff has doubled to 2 s
        assert await cycle() == ("account_connect",)
        assert refusals() == tried
    finally:
        await extras.close()
        server.cleanup()
