"""The committed Grafana dashboards as data: their panels, their queries, and queries made runnable.

Shared by the dashboard checks and the end-to-end test, so both read exactly what users import.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DASHBOARD_DIR = Path(__file__).resolve().parents[2] / "dashboards"  # tests/support/ -> the repository

# Grafana's own interval variables, replaced as Grafana would for a young Prometheus: the rate window must
# hold at least two scrapes, the range at most the data there is.
GRAFANA_INTERVALS = {"$__rate_interval": "1m", "$__range": "5m"}
ALL = ".*"  # what every label variable's "All" stands for
# What a dashboard needs from NATS before every panel has data. Any JetStream server with streams and
# consumers serves the dashboards not listed; the others need replicated streams with a mirror and a source,
# or the exporter connected as a system-account user to a cluster (per-server usage, the meta group).
SINGLE_SERVER = "single server"
CLUSTER = "cluster with replicated streams, a mirror and a source"
SYSTEM_ACCOUNT = "cluster, exporter connected as a system-account user"
SETUP_NEEDED = {
    "nats-jetstream-cluster.json": CLUSTER,
    "nats-jetstream-servers.json": SYSTEM_ACCOUNT,
}
_VARIABLE = re.compile(r"\$\{?(\w+)\}?")
_LABEL_VALUES = re.compile(r"^label_values\((?:(?P<selector>.+),\s*)?(?P<label>\w+)\)$")


@dataclass(frozen=True)
class PanelQuery:
    dashboard: str  # file name
    panel_id: int
    panel_title: str
    ref_id: str
    expr: str

    @property
    def where(self) -> str:
        return f"{self.dashboard} panel {self.panel_id} '{self.panel_title}' query {self.ref_id}"


def setup_needed(path: Path) -> str:
    return SETUP_NEEDED.get(path.name, SINGLE_SERVER)


def dashboard_files(setup: str | None = None) -> list[Path]:
    """Every committed dashboard, or those whose data the given setup provides."""
    paths = sorted(DASHBOARD_DIR.glob("*.json"))
    return [path for path in paths if setup is None or setup_needed(path) == setup]


def load_dashboard(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return loaded


def all_panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, rows and the panels inside collapsed rows included."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def data_panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    return (panel for panel in all_panels(dashboard) if panel.get("type") != "row")


def panel_queries(path: Path) -> list[PanelQuery]:
    dashboard = load_dashboard(path)
    return [
        PanelQuery(path.name, panel["id"], panel["title"], target["refId"], target["expr"])
        for panel in data_panels(dashboard)
        for target in panel.get("targets", [])
    ]


def every_panel_query(setup: str | None = None) -> list[PanelQuery]:
    return [query for path in dashboard_files(setup) for query in panel_queries(path)]


def variables(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    listed: list[dict[str, Any]] = dashboard.get("templating", {}).get("list", [])
    return listed


def runnable(expr: str) -> str:
    """The query as Prometheus receives it with every variable at "All"."""
    for name, value in GRAFANA_INTERVALS.items():
        expr = expr.replace(name, value)
    return _VARIABLE.sub(ALL, expr)


def referenced_variables(text: str) -> set[str]:
    return {name for name in _VARIABLE.findall(text) if f"${name}" not in GRAFANA_INTERVALS}


def label_values_query(query: str) -> tuple[str | None, str]:
    """(series selector or None, label) of a Prometheus ``label_values(...)`` variable query."""
    match = _LABEL_VALUES.match(query.strip())
    if match is None:
        raise ValueError(f"not a label_values() query: {query!r}")
    return match.group("selector"), match.group("label")
