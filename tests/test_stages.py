"""Collection stages: one enumeration, and the wall time of each stage in a cycle."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from exporter.stages import TIMED_STAGES, Stage, StageTimings, describe_stages


class SteppingTimer:
    """A monotonic timer that advances one second per reading, so spans count readings."""

    def __init__(self) -> None:
        self._readings = itertools.count()

    def __call__(self) -> float:
        return float(next(self._readings))


def test_every_stage_has_a_meaning_and_a_label() -> None:
    assert [str(stage) for stage in Stage] == [
        "connect", "account", "streams", "consumers", "dlq", "lag", "servers", "account_connect", "metadata",
        "advisories",
        "timeout",
        "collect",
    ]  # fmt: skip
    assert all(stage.meaning for stage in Stage)
    assert describe_stages((Stage.DLQ,)) == f"dlq ({Stage.DLQ.meaning})"


def test_a_stage_entered_several_times_spans_from_first_start_to_last_end() -> None:
    timings = StageTimings(SteppingTimer())
    with timings.measure(Stage.STREAMS):  # readings 0 and 1
        pass
    with timings.measure(Stage.ACCOUNT):  # 2 and 3
        pass
    with timings.measure(Stage.STREAMS):  # 4 and 5
        pass
    durations = timings.durations()
    assert durations == {
        "account": 1.0, "streams": 5.0, "consumers": 0.0, "dlq": 0.0, "lag": 0.0, "servers": 0.0,
    }  # fmt: skip
    assert list(durations) == [str(stage) for stage in TIMED_STAGES]


async def test_concurrent_entries_and_a_cancelled_stage_report_their_time() -> None:
    timings = StageTimings(SteppingTimer())
    release = asyncio.Event()

    async def list_consumers() -> None:
        with timings.measure(Stage.CONSUMERS):
            await release.wait()

    async with asyncio.TaskGroup() as group:
        for _ in range(3):  # starts read 0, 1, 2
            group.create_task(list_consumers())
        await asyncio.sleep(0)
        release.set()  # ends read 3, 4, 5
    lag = asyncio.create_task(list_consumers_in(timings, Stage.LAG))
    await asyncio.sleep(0)  # start reads 6
    lag.cancel()  # end reads 7: the cycle's deadline cut the stage short
    with pytest.raises(asyncio.CancelledError):
        await lag
    assert timings.durations()["consumers"] == 5.0
    assert timings.durations()["lag"] == 1.0


async def list_consumers_in(timings: StageTimings, stage: Stage) -> None:
    with timings.measure(stage):
        await asyncio.Event().wait()
