"""The committed metric reference (docs/metrics.md) is the one the metric table generates."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from exporter.metrics import FAMILIES
from exporter.reference import render_reference

REPO = Path(__file__).resolve().parent.parent
REFERENCE = REPO / "docs" / "metrics.md"


def test_committed_reference_is_up_to_date() -> None:
    assert REFERENCE.read_text() == render_reference(), (
        "docs/metrics.md is out of date: run `make docs` (python -m exporter.reference > docs/metrics.md)"
    )


def test_module_prints_the_reference() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "exporter.reference"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert result.stdout == render_reference()


def test_reference_has_a_row_for_every_family() -> None:
    rows = {
        line.split(" | ")[0].removeprefix("| ").strip("`"): line
        for line in render_reference().splitlines()
        if line.startswith("| `nats_")
    }
    assert set(rows) == {family.name for family in FAMILIES}
    for family in FAMILIES:
        row = rows[family.name]
        assert f" | {family.type} | " in row
        assert f" | {family.help} | " in row
        assert f"`{family.source}`" in row
        assert all(f"`{label}`" in row for label in family.labels)


def test_families_beyond_the_contract_are_explained() -> None:
    reference = render_reference()
    section = reference.split("## Families beyond the metric contract", 1)[1]
    beyond = {
        "nats_dlq_stream_present",
        "nats_exporter_lag_lookups_skipped",
        "nats_exporter_malformed_advisories_total",
        "nats_exporter_collection_interval_seconds",
        "nats_stream_ephemeral_consumers",
    }
    assert {line.split("`")[1] for line in section.splitlines() if line.startswith("- `")} == beyond
