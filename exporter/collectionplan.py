"""What one exporter collects and renders, decided once from the settings and read by both sources.

Three settings narrow the work: ``metrics.exclude`` (families not rendered, and not computed where that
saves requests: lag look-ups, dead-letter reads), ``filters.consumers.ephemeral`` (see exporter.ephemeral)
and ``collection.shard`` (see exporter.sharding). The account scope and the cluster scope ask this plan
the same questions, so a setting means the same in both.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from exporter.ephemeral import AGGREGATE, EXCLUDE, apply_ephemeral_policy, is_ephemeral
from exporter.metrics import (
    ACCOUNT,
    FAMILIES,
    HEALTH,
    JETSTREAM_SERVER,
    META_CLUSTER,
    META_PEER,
    SERVER,
    Family,
)
from exporter.patterns import NamePattern
from exporter.settings import MetricsSettings, Settings
from exporter.sharding import exports_whole_system, in_shard
from exporter.snapshot import ConsumerState, Snapshot

CONSUMER_LAG = "nats_consumer_lag_seconds"
EPHEMERAL_LAG = "nats_stream_ephemeral_consumers_lag_seconds"
DEAD_LETTER_PREFIX = "nats_dlq_"
# Families describing a whole account or server: one replica of a sharded exporter exports them.
WHOLE_SYSTEM_SCOPES = (SERVER, ACCOUNT, JETSTREAM_SERVER, META_CLUSTER, META_PEER)


def protected(family: Family[Any]) -> bool:
    """nats_up and the exporter's own health: what tells whether the exporter works is always exported."""
    return family.scope.section == HEALTH.section


def exclusion_problem(metrics: MetricsSettings, families: Sequence[Family[Any]] = FAMILIES) -> str | None:
    """Why ``metrics.exclude`` is refused: it drops a protected family, or matches none (a typo)."""
    for pattern in metrics.exclude:
        matched = [family for family in families if pattern.fullmatch(family.name) is not None]
        if not matched:
            return f"{_show(pattern)} matches no metric family (the families are listed in docs/metrics.md)"
        for family in matched:
            if protected(family):
                return (
                    f"{_show(pattern)} would exclude {family.name}, which reports the exporter's own health "
                    "and cannot be excluded"
                )
    return None


def _show(pattern: NamePattern) -> str:
    return repr(pattern.pattern)


def rendered_families(settings: Settings) -> tuple[Family[Any], ...]:
    """The families this exporter renders: all but the excluded ones, and, past shard 0, the per-replica."""
    whole_system = exports_whole_system(settings.collection.shard)
    return tuple(
        family
        for family in FAMILIES
        if not settings.metrics.family_excluded(family.name)
        and (whole_system or all(family.scope is not scope for scope in WHOLE_SYSTEM_SCOPES))
    )


class CollectionPlan:
    """The questions a source asks about what to read, and the snapshot transform both sources share."""

    def __init__(self, settings: Settings) -> None:
        self._filters = settings.filters
        self._shard = settings.collection.shard
        self._rendered = frozenset(family.name for family in rendered_families(settings))
        self._last: tuple[Snapshot, Snapshot] | None = None  # the last snapshot shaped, and its source's

    def renders(self, family_name: str) -> bool:
        return family_name in self._rendered

    def stream_selected(self, account: str, stream: str) -> bool:
        """The stream filters, and this replica's shard: decided before the stream's consumers are listed."""
        return self._filters.stream_selected(stream) and self.in_shard(account, stream)

    def in_shard(self, account: str, stream: str) -> bool:
        return in_shard(self._shard, account, stream)

    def lag_wanted(self, consumer: ConsumerState) -> bool:
        """Whether a look-up of the consumer's oldest unacknowledged message would be rendered at all."""
        if not is_ephemeral(consumer):
            return self.renders(CONSUMER_LAG)
        policy = self._filters.ephemeral
        if policy == EXCLUDE:
            return False
        return self.renders(EPHEMERAL_LAG if policy == AGGREGATE else CONSUMER_LAG)

    def dead_letter_streams(self, account: str, names: Sequence[str]) -> tuple[str, ...]:
        """The configured dead-letter streams this replica reads: none when every nats_dlq_* is excluded."""
        if not any(name.startswith(DEAD_LETTER_PREFIX) for name in self._rendered):
            return ()
        return tuple(name for name in names if self.in_shard(account, name))

    def shape(self, snapshot: Snapshot) -> Snapshot:
        """The source's snapshot as this exporter exports it (ephemeral consumers per the policy)."""
        shaped = apply_ephemeral_policy(snapshot, self._filters.ephemeral)
        self._last = (shaped, snapshot)
        return shaped

    def unshaped(self, previous: Snapshot | None) -> Snapshot | None:
        """The source's own snapshot behind ``previous`` (the last one shaped here), else ``previous``.

        A source keeps the last values of what the server lists as missing from its previous snapshot; given
        the shaped one, it would not find the ephemeral consumers that shaping summed or dropped.
        """
        if self._last is not None and previous is self._last[0]:
            return self._last[1]
        return previous
