"""Ephemeral consumers (filters.consumers.ephemeral) against a real server, with consumers that come and go.

A churner creates an ephemeral consumer every 0.1 s and deletes each after the next three, while cycles are
collected and rendered as the daemon would. Under ``aggregate`` and ``exclude`` the set of series stays the
same from cycle to cycle; under ``include`` every cycle brings new ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import nats
import pytest
from nats.aio.client import Client
from support.exposition import SeriesKey, data_series, render_as_daemon
from support.jetstream import js_request
from support.spec_platform import NS, create_consumer, create_stream, publish
from support.waiting import wait_for

from exporter.collectionplan import CollectionPlan
from exporter.ephemeral import AGGREGATE, EXCLUDE, INCLUDE, apply_ephemeral_policy
from exporter.natsserver import NatsServerProcess
from exporter.scope import ScopedSource
from exporter.settings import FilterSettings, Settings
from exporter.snapshot import ConsumerState, EphemeralConsumers, Snapshot, StreamState
from exporter.stages import StageTimings

pytestmark = pytest.mark.timeout(60)

STREAM = "WORK"
DURABLE = "worker"
MESSAGES = 5
CYCLES = 8
ALIVE = 3  # ephemeral consumers alive at once
CHURN_LIMIT = 300  # ephemeral consumers created at most, whatever happens


@dataclass
class Churner:
    """Creates ephemeral consumers on ``STREAM`` and deletes the oldest, keeping ``ALIVE`` of them."""

    nc: Client
    created: int = 0
    alive: deque[str] = field(default_factory=deque)

    async def run(self) -> None:
        while self.created < CHURN_LIMIT:
            reply = await js_request(
                self.nc,
                f"CONSUMER.CREATE.{STREAM}",
                {"stream_name": STREAM, "config": {"ack_policy": "explicit", "inactive_threshold": 30 * NS}},
            )
            self.alive.append(reply["name"])
            self.created += 1
            if len(self.alive) > ALIVE:
                await js_request(self.nc, f"CONSUMER.DELETE.{STREAM}.{self.alive.popleft()}")
            await asyncio.sleep(0.1)  # the churn rate: each ephemeral consumer lives about 0.4 s


@contextlib.asynccontextmanager
async def churning(url: str) -> AsyncIterator[Churner]:
    nc = await nats.connect(url)
    churner = Churner(nc)
    task = asyncio.create_task(churner.run())
    try:
        yield churner
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await nc.close()


async def provision(nc: Client) -> None:
    await create_stream(nc, STREAM, ["work.>"])
    for n in range(MESSAGES):
        await publish(nc, f"work.{n}", b"job")
    await create_consumer(nc, STREAM, {"name": DURABLE, "durable_name": DURABLE, "ack_policy": "explicit"})


async def collect_while_churning(
    url: str, policy: str
) -> tuple[list[set[SeriesKey]], list[dict[SeriesKey, float]]]:
    """``CYCLES`` cycles, each after at least ``ALIVE`` more ephemeral consumers came (and as many went)."""
    settings = Settings(filters=FilterSettings(ephemeral=policy))
    nc = await nats.connect(url)
    key_sets: list[set[SeriesKey]] = []
    expositions: list[dict[SeriesKey, float]] = []
    try:
        source = ScopedSource(nc, settings)
        previous: Snapshot | None = None
        async with churning(url) as churner:
            for _ in range(CYCLES):
                target = churner.created + ALIVE
                await wait_for(lambda t=target: churner.created >= t, message="ephemeral consumers to churn")
                previous = await source.fetch_snapshot(previous, StageTimings(time.monotonic))
                series = data_series(render_as_daemon(settings, previous))
                key_sets.append(set(series))
                expositions.append(series)
    finally:
        await nc.close()
    # The figures the report quotes (run with -s to see them).
    print(
        f"ephemeral {policy}: series per cycle {[len(keys) for keys in key_sets]}, "
        f"distinct over {CYCLES} cycles {len(set().union(*key_sets))}"
    )
    return key_sets, expositions


def consumer_labels(keys: set[SeriesKey]) -> set[str]:
    return {value for _, labels in keys for name, value in labels if name == "consumer"}


@pytest.mark.parametrize("policy", [AGGREGATE, EXCLUDE])
async def test_the_set_of_series_stays_flat_while_ephemeral_consumers_churn(
    nats_server: NatsServerProcess, policy: str
) -> None:
    nc = await nats.connect(nats_server.url)
    await provision(nc)
    await nc.close()
    key_sets, expositions = await collect_while_churning(nats_server.url, policy)
    assert all(keys == key_sets[0] for keys in key_sets), "a cycle added or dropped series"
    # Only the durable consumer has per-consumer series, advisory counters included.
    assert consumer_labels(key_sets[0]) == {DURABLE}
    advisory = ("nats_consumer_naks_total", (("account", "$G"), ("consumer", DURABLE), ("stream", STREAM)))
    assert advisory in key_sets[0]
    stream_labels = (("account", "$G"), ("stream", STREAM))
    if policy == EXCLUDE:
        assert not any(name.startswith("nats_stream_ephemeral_") for name, _ in key_sets[0])
        return
    for series in expositions:
        count = series[("nats_stream_ephemeral_consumers", stream_labels)]
        assert 1 <= count <= ALIVE + 1
        # Each ephemeral consumer delivers all and has delivered nothing: every message is pending.
        assert series[("nats_stream_ephemeral_consumers_pending_messages", stream_labels)] == MESSAGES * count
        assert series[("nats_stream_ephemeral_consumers_ack_pending", stream_labels)] == 0
        assert series[("nats_stream_ephemeral_consumers_lag_seconds", stream_labels)] >= 0


async def test_include_exports_every_ephemeral_consumer_one_by_one(nats_server: NatsServerProcess) -> None:
    nc = await nats.connect(nats_server.url)
    await provision(nc)
    await nc.close()
    key_sets, _ = await collect_while_churning(nats_server.url, INCLUDE)
    seen = set().union(*key_sets)
    # Every cycle saw other ephemeral consumers: series came and went that the other policies never make.
    assert len(consumer_labels(seen)) >= CYCLES * ALIVE
    assert len(seen) > max(len(keys) for keys in key_sets)
    assert not any(name.startswith("nats_stream_ephemeral_") for name, _ in seen)


# --- the transform on hand-built snapshots ----------------------------------------------------------------


def stream(name: str) -> StreamState:
    return StreamState(
        account="A", name=name, subjects=(f"{name}.>",), storage="file", retention="limits", replicas=1,
        allow_direct=False, max_messages=None, max_bytes=None, max_age_seconds=None,
        max_messages_per_subject=None, messages=10, bytes=100, first_seq=1, first_ts=1.0, last_seq=10,
        last_ts=2.0, num_subjects=1, num_deleted=0, consumer_count=3,
    )  # fmt: skip


def consumer(
    stream_name: str, name: str, *, durable: bool, lag: float | None, pending: int = 1
) -> ConsumerState:
    values: dict[str, Any] = dict.fromkeys(
        ("num_redelivered", "num_waiting", "delivered_consumer_seq", "delivered_stream_seq"), 0
    )
    return ConsumerState(
        account="A", stream=stream_name, name=name, durable=durable, pull=True, ack_policy="explicit",
        deliver_policy="all", filter_subjects=(), max_deliver=None, max_ack_pending=None,
        ack_wait_seconds=30.0, num_pending=pending, num_ack_pending=2, delivered_last_active=None,
        ack_floor_consumer_seq=0, ack_floor_stream_seq=0, ack_floor_last_active=None, lag_seconds=lag,
        **values,
    )  # fmt: skip


def test_aggregate_sums_per_stream_and_keeps_durable_consumers() -> None:
    snapshot = Snapshot(
        collected_at=0.0,
        servers=(),
        accounts=(),
        streams=(stream("S"), stream("T"), stream("U")),
        consumers=(
            consumer("S", "d", durable=True, lag=9.0),
            consumer("S", "e1", durable=False, lag=1.5, pending=4),
            consumer("S", "e2", durable=False, lag=None, pending=6),
            consumer("T", "e3", durable=False, lag=None),
        ),
    )
    shaped = apply_ephemeral_policy(snapshot, AGGREGATE)
    assert [c.name for c in shaped.consumers] == ["d"]
    assert shaped.ephemeral_consumers == (
        EphemeralConsumers("A", "S", consumers=2, num_pending=10, num_ack_pending=4, oldest_lag_seconds=1.5),
        # None of them measured: no lag rather than a wrong one.
        EphemeralConsumers("A", "T", consumers=1, num_pending=1, num_ack_pending=2, oldest_lag_seconds=None),
        # No ephemeral consumer: zeros, so the stream's series stay while consumers come and go.
        EphemeralConsumers("A", "U", consumers=0, num_pending=0, num_ack_pending=0, oldest_lag_seconds=0.0),
    )
    excluded = apply_ephemeral_policy(snapshot, EXCLUDE)
    assert ([c.name for c in excluded.consumers], excluded.ephemeral_consumers) == (["d"], ())
    assert apply_ephemeral_policy(snapshot, INCLUDE) == snapshot


def test_the_source_gets_back_its_own_previous_snapshot_with_every_consumer() -> None:
    plan = CollectionPlan(Settings())
    raw = Snapshot(
        collected_at=0.0,
        servers=(),
        accounts=(),
        streams=(stream("S"),),
        consumers=(consumer("S", "e1", durable=False, lag=None),),
    )
    shaped = plan.shape(raw)
    assert shaped.consumers == ()
    # The ephemeral consumer is still there for the source's carry-over of what the server lists as missing.
    assert plan.unshaped(shaped) is raw
    # Any other snapshot (a stale one dropped: None; another connection's) is passed on as it is.
    assert plan.unshaped(None) is None
    assert plan.unshaped(raw) is raw
