"""Rendering a snapshot as the daemon would, and reading an exposition back as series: (name, sorted
labels) -> value, for comparing whole expositions (the exporter's own health left out or kept)."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from exporter.collectionplan import rendered_families
from exporter.metrics import Renderer
from exporter.settings import Settings
from exporter.snapshot import ExporterHealth, Snapshot

SeriesKey = tuple[str, tuple[tuple[str, str], ...]]
# Families that describe the exporter itself: one set per replica, whatever it collects.
EXPORTER_HEALTH_PREFIXES = ("nats_up", "nats_exporter_")


def series_of(text: str) -> dict[SeriesKey, float]:
    """Every sample of an exposition, keyed by name and sorted label pairs."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def data_series(text: str) -> dict[SeriesKey, float]:
    """The series of an exposition without the exporter's own health."""
    return {
        key: value
        for key, value in series_of(text).items()
        if not key[0].startswith(EXPORTER_HEALTH_PREFIXES)
    }


def render_as_daemon(settings: Settings, snapshot: Snapshot) -> str:
    """What the daemon with ``settings`` serves for ``snapshot`` (families chosen by the settings)."""
    health = ExporterHealth(
        up=True, collection_duration_seconds=0.1, last_success_timestamp=snapshot.collected_at
    )
    rendering = Renderer(families=rendered_families(settings)).render(snapshot, health)
    return b"".join(rendering.text_chunks()).decode()
