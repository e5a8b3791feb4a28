"""The collection stages: where a cycle can fail, and what each costs in wall time.

One enumeration for the source (which times and names its stages), the app (which counts failures),
the metric table, the reference and the dashboards. ``nats_exporter_collection_errors_total`` has a
series for every stage from the start, at 0, so that ``increase()`` sees the first failure;
``nats_exporter_stage_duration_seconds`` has one for every timed stage once a cycle has finished.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Iterator, Mapping
from enum import StrEnum
from typing import TypeVar

_T = TypeVar("_T")


class Stage(StrEnum):
    """A step of a collection cycle; the value is the ``stage`` label."""

    CONNECT = "connect"
    ACCOUNT = "account"
    STREAMS = "streams"
    CONSUMERS = "consumers"
    DLQ = "dlq"
    LAG = "lag"
    SERVERS = "servers"
    ACCOUNT_CONNECT = "account_connect"
    METADATA = "metadata"
    ADVISORIES = "advisories"
    TIMEOUT = "timeout"
    COLLECT = "collect"

    @property
    def meaning(self) -> str:
        """What a failure at this stage means, for the reference and the dashboards."""
        return _MEANINGS[self]


_MEANINGS: Mapping[Stage, str] = {
    Stage.CONNECT: "NATS unreachable, authentication refused, or the user cannot collect the configured "
    "scope",
    Stage.ACCOUNT: "the account's JetStream info ($JS.API.INFO) failed or timed out",
    Stage.STREAMS: "listing streams failed or timed out",
    Stage.CONSUMERS: "listing a stream's consumers failed or timed out",
    Stage.DLQ: "a dead-letter stream could not be read (partial: the rest of the data is kept)",
    Stage.LAG: "an oldest-unacknowledged-message look-up failed (partial: the rest of the data is kept)",
    Stage.SERVERS: "cluster scope: no server's JetStream report ($SYS.REQ.SERVER.PING.JSZ) arrived, or one "
    "was unusable (partial: the other servers' data is kept)",
    Stage.ACCOUNT_CONNECT: "cluster scope: connecting inside an account listed in accounts failed (partial: "
    "that account's dead letters, lag seconds and events are missing; retried with backoff)",
    Stage.METADATA: "an io.nats.monitor metadata value could not be read and is ignored (partial: logged "
    "once, the rest of the data is kept)",
    Stage.ADVISORIES: "the advisory subscription failed, so delivery-failure counters pause",
    Stage.TIMEOUT: "the whole cycle overran its deadline",
    Stage.COLLECT: "an unexpected error in the exporter (a bug: the log has the traceback)",
}

# The stages that request JetStream and are timed; stages that overlap (consumer listings start while
# stream pages arrive, dead letters are read alongside) each report their own wall time.
TIMED_STAGES = (Stage.ACCOUNT, Stage.STREAMS, Stage.CONSUMERS, Stage.DLQ, Stage.LAG, Stage.SERVERS)


def describe_stages(stages: tuple[Stage, ...] = tuple(Stage)) -> str:
    """``connect (NATS unreachable ...), account (...)``: the stage list for docs and dashboards."""
    return ", ".join(f"{stage} ({stage.meaning})" for stage in stages)


class StageTimings:
    """The wall time of each stage in one cycle: from its first start to its last end.

    A stage entered several times, or by concurrent tasks, spans all of its entries. A stage cut short
    by the cycle's deadline still reports the time it took until then.
    """

    def __init__(self, timer: Callable[[], float]) -> None:
        self._timer = timer
        self._spans: dict[Stage, tuple[float, float]] = {}

    @contextlib.contextmanager
    def measure(self, stage: Stage) -> Iterator[None]:
        started = self._timer()
        try:
            yield
        finally:
            ended = self._timer()
            first, last = self._spans.get(stage, (started, ended))
            self._spans[stage] = (min(first, started), max(last, ended))

    async def timed(self, stage: Stage, work: Awaitable[_T]) -> _T:
        """Await ``work`` measured as ``stage`` (for stages that run as tasks beside others)."""
        with self.measure(stage):
            return await work

    def durations(self) -> dict[str, float]:
        """Seconds per timed stage; 0 for a stage the cycle did not reach or did not need."""
        return {
            str(stage): (self._spans[stage][1] - self._spans[stage][0]) if stage in self._spans else 0.0
            for stage in TIMED_STAGES
        }


class ProbeStage(StrEnum):
    """Where an end-to-end probe (exporter.probe) failed; the value is the ``stage`` label of
    ``nats_probe_failures_total``, which has a series for every stage from the start, at 0."""

    CONNECT = "connect"
    SETUP = "setup"
    PUBLISH = "publish"
    RECEIVE = "receive"

    @property
    def meaning(self) -> str:
        """What a failure at this stage means, for the reference, the runbooks and the dashboards."""
        return _PROBE_MEANINGS[self]


_PROBE_MEANINGS: Mapping[ProbeStage, str] = {
    ProbeStage.CONNECT: "the exporter had no NATS connection",
    ProbeStage.SETUP: "the probe stream could not be looked up or created, or the probe's consumer could not "
    "be created",
    ProbeStage.PUBLISH: "JetStream did not acknowledge the probe message: refused (a stream limit with "
    "discard new, storage full), no stream stores it, or no answer in time (no quorum)",
    ProbeStage.RECEIVE: "the acknowledged message did not come back through the probe's consumer in time",
}
