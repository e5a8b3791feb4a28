"""The committed Grafana dashboards: generated, well-formed, and every query honours the template variables.

Checks read the committed JSON (what users import), not the generator's objects; the metric contract comes
from exporter.metrics.FAMILIES, so a dashboard cannot query a family the exporter does not export.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from support.dashboard_queries import (
    ALL,
    DASHBOARD_DIR,
    SETUP_NEEDED,
    SINGLE_SERVER,
    PanelQuery,
    all_panels,
    dashboard_files,
    data_panels,
    every_panel_query,
    label_values_query,
    load_dashboard,
    panel_queries,
    referenced_variables,
    runnable,
    variables,
)

from exporter.metrics import FAMILIES

REPO = DASHBOARD_DIR.parent
# Grafana 11.0 writes schemaVersion 39, Grafana 11.6 (the pinned grafana-foundation-sdk build) 41.
GRAFANA_11_SCHEMA_VERSIONS = range(39, 42)
DATASOURCE_REF = {"type": "prometheus", "uid": "${datasource}"}
LABEL_VARIABLES = {"account", "stream", "consumer", "dlq_stream", "instance", "server"}
# Which variables may filter a label: a dead-letter stream's `stream` label is chosen by $dlq_stream; `server`
# names a JetStream server (per-server usage, a stream's or the meta group's peer).
VARIABLES_FOR_LABEL = {
    "account": {"account"},
    "stream": {"stream", "dlq_stream"},
    "consumer": {"consumer"},
    "server": {"server"},
}
FAMILY_LABELS = {family.name: set(family.labels) for family in FAMILIES}
# A histogram is queried through its series: _bucket (labelled le too), _count and _sum.
FAMILY_LABELS |= {
    f"{family.name}{suffix}": set(family.labels) | ({"le"} if suffix == "_bucket" else set())
    for family in FAMILIES
    if family.type == "histogram"
    for suffix in ("_bucket", "_count", "_sum")
}
MIN_DESCRIPTION_LENGTH = 80

_SELECTOR = re.compile(r"\b(nats_[a-z_]+)\b(\{[^}]*\})?")
_MATCHER = re.compile(r'(\w+)\s*(=~|!~|!=|=)\s*"([^"]*)"')
_AGGREGATION = re.compile(
    r"\b(sum|avg|min|max|count|group|stddev|stdvar|quantile|count_values)\s*(?:(by|without)\s*\(([^)]*)\))?\s*\("
)

DASHBOARDS = dashboard_files()
DASHBOARD_IDS = [path.stem for path in DASHBOARDS]


@pytest.fixture(params=DASHBOARDS, ids=DASHBOARD_IDS)
def dashboard(request: pytest.FixtureRequest) -> dict[str, Any]:
    return load_dashboard(request.param)


def test_committed_json_is_exactly_what_the_generator_writes(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "dashboards.build", "--output-dir", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    generated = {path.name: path.read_text(encoding="utf-8") for path in tmp_path.glob("*.json")}
    committed = {path.name: path.read_text(encoding="utf-8") for path in DASHBOARDS}
    assert sorted(committed) == sorted(generated), "a dashboard file is missing or left over"
    stale = [name for name in generated if generated[name] != committed[name]]
    assert not stale, f"out of date: {stale}; run `python -m dashboards.build` and commit the result"


def test_the_seven_dashboards_exist_with_unique_uids() -> None:
    titles = {load_dashboard(path)["title"] for path in DASHBOARDS}
    assert titles == {
        "NATS JetStream / Overview",
        "NATS JetStream / Consumers",
        "NATS JetStream / Dead letters",
        "NATS JetStream / Exporter health",
        "NATS JetStream / Cluster",
        "NATS JetStream / Accounts",
        "NATS JetStream / Servers",
    }
    uids = [load_dashboard(path)["uid"] for path in DASHBOARDS]
    assert len(set(uids)) == len(uids)


def test_the_setup_each_dashboard_needs_names_committed_dashboards() -> None:
    """The end-to-end test queries the dashboards its stack feeds; the rest need a cluster it lacks."""
    names = {path.name for path in DASHBOARDS}
    assert set(SETUP_NEEDED) <= names, f"no such dashboard: {set(SETUP_NEEDED) - names}"
    single = dashboard_files(SINGLE_SERVER)
    assert single
    assert not {path.name for path in single} & set(SETUP_NEEDED)
    assert sorted(single + [path for path in DASHBOARDS if path.name in SETUP_NEEDED]) == DASHBOARDS


def test_schema_version_is_grafana_11s(dashboard: dict[str, Any]) -> None:
    assert dashboard["schemaVersion"] in GRAFANA_11_SCHEMA_VERSIONS


def test_panel_ids_are_unique(dashboard: dict[str, Any]) -> None:
    ids = [panel.get("id") for panel in all_panels(dashboard)]
    assert all(isinstance(panel_id, int) and panel_id > 0 for panel_id in ids), ids
    assert len(set(ids)) == len(ids), f"duplicate panel ids: {sorted(i for i in ids if ids.count(i) > 1)}"


def test_every_panel_has_a_title_and_a_description(dashboard: dict[str, Any]) -> None:
    for panel in data_panels(dashboard):
        assert panel.get("title"), panel["id"]
        description = panel.get("description", "")
        assert len(description) >= MIN_DESCRIPTION_LENGTH, f"panel {panel['title']!r}: {description!r}"


def test_every_panel_and_query_uses_the_datasource_variable(dashboard: dict[str, Any]) -> None:
    datasource_variables = [v for v in variables(dashboard) if v["type"] == "datasource"]
    assert [(v["name"], v["query"]) for v in datasource_variables] == [("datasource", "prometheus")]
    for panel in data_panels(dashboard):
        assert panel["datasource"] == DATASOURCE_REF, panel["title"]
        assert panel["targets"], f"panel {panel['title']!r} has no query"
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE_REF, (panel["title"], target["refId"])
    for variable in variables(dashboard):
        if variable["type"] == "query":
            assert variable["datasource"] == DATASOURCE_REF, variable["name"]


def test_label_variables_are_multi_value_with_all_and_chained(dashboard: dict[str, Any]) -> None:
    defined: set[str] = set()
    for variable in variables(dashboard):
        name = variable["name"]
        if variable["type"] == "query":
            assert name in LABEL_VARIABLES, name
            assert variable["multi"] is True, name
            assert variable["includeAll"] is True, name
            assert variable["allValue"] == ALL, name
            selector, label = label_values_query(variable["query"])
            assert label == ("stream" if name == "dlq_stream" else name)
            # Chained: a variable narrows by the ones above it, and only those exist when it refreshes.
            used = referenced_variables(selector or "")
            assert used <= defined, f"{name} uses {used - defined}, not defined before it"
            expected = {"stream": {"account"}, "consumer": {"account", "stream"}, "dlq_stream": {"account"}}
            if "stream" in defined:  # a stream's peers; without a stream variable, the cluster's servers
                expected["server"] = {"account", "stream"}
            assert used >= expected.get(name, set()), f"{name} is not narrowed by {expected[name] - used}"
        defined.add(name)


def _selectors(expr: str) -> list[tuple[str, dict[str, tuple[str, str]]]]:
    return [
        (metric, {label: (op, value) for label, op, value in _MATCHER.findall(braces or "")})
        for metric, braces in _SELECTOR.findall(expr)
    ]


def _selector_problems(query: PanelQuery) -> list[str]:
    problems = []
    for metric, matchers in _selectors(query.expr):
        if metric not in FAMILY_LABELS:
            problems.append(f"{metric} is not a family the exporter exports")
            continue
        scoped = FAMILY_LABELS[metric] & VARIABLES_FOR_LABEL.keys()
        # Exporter health families carry no JetStream label: the exporter instance chooses them.
        required = {label: VARIABLES_FOR_LABEL[label] for label in scoped} or {"instance": {"instance"}}
        for label, allowed in required.items():
            op, value = matchers.get(label, ("", ""))
            if op != "=~" or value not in {f"${name}" for name in allowed}:
                problems.append(f"{metric} lacks {label}=~ one of {sorted('$' + a for a in allowed)}")
    return problems


@pytest.mark.parametrize("path", DASHBOARDS, ids=DASHBOARD_IDS)
def test_every_selector_honours_the_variables_its_labels_allow(path: Path) -> None:
    queries = panel_queries(path)
    assert queries
    problems = [f"{query.where}: {problem}" for query in queries for problem in _selector_problems(query)]
    assert not problems, "\n".join(problems)


def test_variables_used_are_defined_and_variables_defined_are_used(dashboard: dict[str, Any]) -> None:
    defined = {variable["name"] for variable in variables(dashboard)}
    used = set()
    for panel in data_panels(dashboard):
        for target in panel["targets"]:
            used |= referenced_variables(target["expr"])
    assert used <= defined, f"undefined: {used - defined}"
    assert defined - {"datasource"} <= used, f"never used by a panel: {defined - {'datasource'} - used}"


def test_no_query_aggregates_away_the_exporter_instance() -> None:
    """Never sum over replicas: aggregations name what they fold (e.g. subject), never the instance."""
    problems = []
    for query in every_panel_query():
        for operator, modifier, labels in _AGGREGATION.findall(query.expr):
            names = {label.strip() for label in labels.split(",") if label.strip()}
            if not modifier:
                problems.append(f"{query.where}: bare {operator}() folds every series, replicas included")
            elif modifier == "by" and "instance" not in names:
                problems.append(f"{query.where}: {operator} by ({labels}) folds exporter instances")
            elif modifier == "without" and names & {"instance", "job"}:
                problems.append(f"{query.where}: {operator} without ({labels}) folds exporter instances")
    assert not problems, "\n".join(problems)


def test_every_query_is_valid_promql(tmp_path: Path) -> None:
    """Every panel query and variable selector, with variables substituted, passes `promtool check rules`."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool not found: run `make system-deps` (Debian's prometheus package)")
    expressions = [(query.where, runnable(query.expr)) for query in every_panel_query()]
    for path in DASHBOARDS:
        for variable in variables(load_dashboard(path)):
            if variable["type"] == "query":
                selector, label = label_values_query(variable["query"])
                expressions.append((f"{path.name} variable {variable['name']}", runnable(selector or label)))
    rules = [
        {"record": f"dashboard:query_{index}", "expr": expr} for index, (_, expr) in enumerate(expressions)
    ]
    rule_file = tmp_path / "dashboard-queries.yml"
    rule_file.write_text(
        yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}), encoding="utf-8"
    )
    result = subprocess.run(
        [promtool, "check", "rules", str(rule_file)], capture_output=True, text=True, timeout=30, check=False
    )
    index = {f"dashboard:query_{i}": where for i, (where, _) in enumerate(expressions)}
    output = re.sub(
        r"dashboard:query_\d+", lambda m: index.get(m.group(0), m.group(0)), result.stdout + result.stderr
    )
    assert result.returncode == 0, output
    assert f"SUCCESS: {len(rules)} rules found" in output
