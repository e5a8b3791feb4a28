"""The alert rules, checked with the real promtool; their runbooks, thresholds table and PrometheusRule."""

from __future__ import annotations

import functools
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
ALERTS_DIR = ROOT / "alerts"
RULE_FILES = sorted(ALERTS_DIR.glob("*.rules.yml"))
UNIT_TEST_FILES = sorted((ALERTS_DIR / "tests").glob("*.yml"))
BUILDER = ALERTS_DIR / "build_prometheusrule.py"
PROMETHEUS_RULE = ROOT / "deploy" / "prometheus-rule.yaml"
RUNBOOKS = ROOT / "docs" / "runbooks.md"
ALERTS_DOC = ROOT / "docs" / "alerts.md"

SEVERITIES = {"critical", "warning", "info"}
ENTITY_LABELS = ("account", "stream", "consumer", "subject", "source", "server")
RUNBOOK_PARTS = ("**What it means.**", "**What to check.**", "**What to do.**")
ALERT_LINE = re.compile(r"^\s*- alert:\s*(\S+)\s*$")
GROUP_LINE = re.compile(r"^\s*- name:")
NUMBER = re.compile(r"\d+(?:\.\d+)?")


def run(args: list[str], *, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=60, check=False)


def build(*args: str) -> subprocess.CompletedProcess[str]:
    return run([sys.executable, str(BUILDER), *args])


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def rule_groups() -> list[dict[str, Any]]:
    return [group for path in RULE_FILES for group in load_yaml(path)["groups"]]


@functools.cache
def alert_rules() -> dict[str, dict[str, Any]]:
    return {rule["alert"]: rule for group in rule_groups() for rule in group["rules"] if "alert" in rule}


def unit_test_cases() -> list[dict[str, Any]]:
    """Every alert_rule_test entry of every promtool unit test file."""
    return [
        case
        for path in UNIT_TEST_FILES
        for test in load_yaml(path)["tests"]
        for case in test.get("alert_rule_test", [])
    ]


def github_anchor(heading: str) -> str:
    """The fragment GitHub (and GitLab, and Python-Markdown's toc) give a heading made of a plain name."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def runbook_sections() -> dict[str, str]:
    """Heading -> body of each second-level section of docs/runbooks.md."""
    sections: dict[str, str] = {}
    heading = None
    for line in RUNBOOKS.read_text(encoding="utf-8").splitlines():
        if line.startswith("## "):
            heading = line[3:].strip()
            sections[heading] = ""
        elif heading is not None:
            sections[heading] += line + "\n"
    return sections


def rule_blocks(text: str) -> dict[str, list[str]]:
    """Alert name -> the lines of its rule in a rule file's text."""
    blocks: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        match = ALERT_LINE.match(line)
        if match:
            current = blocks.setdefault(match.group(1), [])
        elif GROUP_LINE.match(line):
            current = None
        if current is not None:
            current.append(line)
    return blocks


@functools.cache
def threshold_rows() -> tuple[tuple[str, str], ...]:
    """(alert, line) for each row of the table under docs/alerts.md's "## Thresholds"."""
    text = ALERTS_DOC.read_text(encoding="utf-8")
    section = text.split("\n## Thresholds\n", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0] in alert_rules():
            rows.append((cells[0], cells[3].strip("`")))
    return tuple(rows)


def harder_to_fire(line: str) -> str:
    """``line`` with its threshold or duration raised far beyond anything the unit tests feed it."""
    numbers = list(NUMBER.finditer(line))
    if not numbers:
        return f"{line} * 2"
    last = numbers[-1]
    raised = float(last.group()) + 1_000_000
    text = str(raised) if "." in last.group() else str(int(raised))
    return line[: last.start()] + text + line[last.end() :]


def test_there_are_rule_files_and_unit_tests():
    assert RULE_FILES
    assert UNIT_TEST_FILES


@pytest.mark.parametrize("path", RULE_FILES, ids=lambda path: path.name)
def test_promtool_check_rules_reports_nothing(promtool, path):
    result = run([promtool, "check", "rules", str(path)])
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    rule_count = sum(len(group["rules"]) for group in load_yaml(path)["groups"])
    assert f"SUCCESS: {rule_count} rules found" in output
    assert "WARNING" not in output.upper()


@pytest.mark.parametrize("path", UNIT_TEST_FILES, ids=lambda path: path.name)
def test_promtool_unit_tests_pass(promtool, path):
    result = run([promtool, "test", "rules", str(path)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_has_a_firing_and_a_silent_unit_test():
    firing = {case["alertname"] for case in unit_test_cases() if case.get("exp_alerts")}
    silent = {case["alertname"] for case in unit_test_cases() if not case.get("exp_alerts")}
    alerts = set(alert_rules())
    assert alerts - firing == set(), "alerts without a case where they must fire"
    assert alerts - silent == set(), "alerts without a case where they must not fire"
    assert (firing | silent) - alerts == set(), "unit tests for alerts that do not exist"


def test_firing_cases_expect_exact_labels_and_annotations_that_name_the_entity():
    rules = alert_rules()
    for case in unit_test_cases():
        for expected in case.get("exp_alerts") or []:
            name = case["alertname"]
            labels = expected["exp_labels"]
            annotations = expected["exp_annotations"]
            assert labels["severity"] == rules[name]["labels"]["severity"], name
            assert {"job", "instance"} <= set(labels), f"{name}: test without the target labels"
            assert set(annotations) == {"summary", "description", "runbook_url"}, name
            for label in ENTITY_LABELS:
                if label in labels:
                    assert str(labels[label]) in annotations["description"], f"{name}: {label} not named"
            entity = labels.get("stream", labels.get("server", labels.get("account", labels["instance"])))
            assert str(entity) in annotations["summary"], f"{name}: summary does not name {entity}"


def test_every_alert_has_severity_summary_description_and_runbook():
    for name, rule in alert_rules().items():
        assert rule["labels"]["severity"] in SEVERITIES, name
        assert set(rule["annotations"]) == {"summary", "description", "runbook_url"}, name
        assert "$labels." in rule["annotations"]["summary"], name
        assert "$value" in rule["annotations"]["description"] or rule["expr"].strip().endswith("== 0"), name


def test_runbook_urls_share_one_base_and_point_at_sections_of_the_runbooks():
    anchors = {github_anchor(heading) for heading in runbook_sections()}
    bases = set()
    for name, rule in alert_rules().items():
        base, _, anchor = rule["annotations"]["runbook_url"].partition("#")
        bases.add(base)
        assert anchor == name.lower(), name
        assert anchor in anchors, f"{name}: no section #{anchor} in docs/runbooks.md"
    assert len(bases) == 1
    assert next(iter(bases)) in ALERTS_DOC.read_text(encoding="utf-8"), "docs/alerts.md names the base URL"


def test_runbooks_have_one_complete_section_per_alert():
    sections = runbook_sections()
    assert set(sections) == set(alert_rules())
    for name, body in sections.items():
        for part in RUNBOOK_PARTS:
            assert part in body, f"{name}: missing {part}"
        assert "```promql" in body, f"{name}: no PromQL to check"
        assert "`nats " in body or "`python -m exporter " in body, f"{name}: no command to run"


def test_prometheus_rule_is_what_the_builder_makes(tmp_path):
    output = tmp_path / "prometheus-rule.yaml"
    result = build("--output", str(output))
    assert result.returncode == 0, result.stderr
    assert PROMETHEUS_RULE.read_text(encoding="utf-8") == output.read_text(encoding="utf-8"), (
        "deploy/prometheus-rule.yaml is out of date: run python alerts/build_prometheusrule.py"
    )
    assert build("--check").returncode == 0


def test_prometheus_rule_holds_exactly_the_rule_files_groups():
    manifest = load_yaml(PROMETHEUS_RULE)
    assert manifest["apiVersion"] == "monitoring.coreos.com/v1"
    assert manifest["kind"] == "PrometheusRule"
    assert manifest["metadata"]["name"] == "nats-jetstream-exporter"
    assert manifest["spec"]["groups"] == rule_groups()


def test_prometheus_rule_groups_pass_promtool(promtool, tmp_path):
    rules = tmp_path / "from-prometheus-rule.yml"
    rules.write_text(
        yaml.safe_dump({"groups": load_yaml(PROMETHEUS_RULE)["spec"]["groups"]}), encoding="utf-8"
    )
    result = run([promtool, "check", "rules", str(rules)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_check_reports_a_stale_prometheus_rule(tmp_path):
    stale = tmp_path / "prometheus-rule.yaml"
    stale.write_text(PROMETHEUS_RULE.read_text(encoding="utf-8").replace("for: 2m", "for: 3m", 1))
    result = build("--check", "--output", str(stale))
    assert result.returncode == 1
    assert "out of date" in result.stderr


def test_one_base_url_moves_every_runbook_link(promtool, tmp_path):
    new_base = "https://wiki.example.org/platform/nats/runbooks.md"
    output = tmp_path / "prometheus-rule.yaml"
    rules_dir = tmp_path / "rules"
    result = build(
        "--runbook-base-url", new_base, "--output", str(output), "--rules-output-dir", str(rules_dir)
    )
    assert result.returncode == 0, result.stderr

    def with_base(groups: list[dict[str, Any]], base: str) -> list[dict[str, Any]]:
        for group in groups:
            for rule in group["rules"]:
                anchor = rule["annotations"]["runbook_url"].partition("#")[2]
                assert anchor == rule["alert"].lower()
                rule["annotations"]["runbook_url"] = f"{base}#{anchor}"
        return groups

    original = rule_groups()
    moved = load_yaml(output)["spec"]["groups"]
    assert with_base(moved, "BASE") == with_base(original, "BASE")
    assert all(
        rule["annotations"]["runbook_url"].startswith(f"{new_base}#")
        for group in load_yaml(output)["spec"]["groups"]
        for rule in group["rules"]
    )
    for path in RULE_FILES:
        copy = rules_dir / path.name
        text = copy.read_text(encoding="utf-8")
        assert text == path.read_text(encoding="utf-8").replace(
            "https://nats-jetstream-exporter.invalid/docs/runbooks.md#", f"{new_base}#"
        ), "the copies differ from the rule files in more than the base (comments must survive)"
        assert run([promtool, "check", "rules", str(copy)]).returncode == 0


@pytest.mark.parametrize(
    ("base", "complaint"),
    [
        ("ftp://wiki.example.org/runbooks.md", "absolute http:// or https:// URL"),
        ("runbooks.md", "absolute http:// or https:// URL"),
        ("https://wiki.example.org/runbooks.md#top", "must not contain '#'"),
        ('https://wiki.example.org/"runbooks".md', "must not contain '#', quotes"),
    ],
)
def test_builder_rejects_an_unusable_base_url_in_one_line(tmp_path, base, complaint):
    output = tmp_path / "prometheus-rule.yaml"
    result = build("--runbook-base-url", base, "--output", str(output))
    assert result.returncode == 2
    assert result.stderr.startswith("build_prometheusrule: error: --runbook-base-url")
    assert complaint in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not output.exists()


def test_builder_rejects_rule_files_with_several_runbook_bases(tmp_path):
    alerts = tmp_path / "alerts"
    alerts.mkdir()
    (rule_file,) = (path for path in RULE_FILES if "#natsexporterdown" in path.read_text(encoding="utf-8"))
    text = rule_file.read_text(encoding="utf-8")
    (alerts / rule_file.name).write_text(
        text.replace("invalid/docs/runbooks.md#natsexporterdown", "invalid/other.md#natsexporterdown")
    )
    result = build("--alerts-dir", str(alerts), "--output", str(tmp_path / "out.yaml"))
    assert result.returncode == 2
    assert "must share one base URL" in result.stderr
    assert "NatsExporterDown" in result.stderr


def test_every_documented_threshold_line_is_in_its_alerts_rule():
    rows = threshold_rows()
    blocks = {
        name: lines for path in RULE_FILES for name, lines in rule_blocks(path.read_text("utf-8")).items()
    }
    assert set(blocks) == set(alert_rules())
    assert {alert for alert, _ in rows} == set(alert_rules()), "every alert has a row in docs/alerts.md"
    for alert, line in rows:
        count = sum(1 for rule_line in blocks[alert] if rule_line.strip() == line)
        assert count == 1, f"{alert}: `{line}` appears {count} times in its rule"


def test_changing_any_documented_threshold_line_fails_a_unit_test(promtool, tmp_path):
    rows = threshold_rows()
    assert rows
    unit_test_files = [load_yaml(path) for path in UNIT_TEST_FILES]
    (evaluation_interval,) = {document["evaluation_interval"] for document in unit_test_files}
    tests = [test for document in unit_test_files for test in document["tests"]]
    for number, (alert, line) in enumerate(rows):
        rule_files = []
        for path in RULE_FILES:
            lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
            current = None
            for index, rule_line in enumerate(lines):
                match = ALERT_LINE.match(rule_line)
                current = match.group(1) if match else (None if GROUP_LINE.match(rule_line) else current)
                if current == alert and rule_line.strip() == line:
                    lines[index] = rule_line.replace(line, harder_to_fire(line))
            mutated = tmp_path / f"{number}-{path.name}"
            mutated.write_text("".join(lines), encoding="utf-8")
            rule_files.append(str(mutated))
        # Only this alert's cases, so that 27 promtool runs stay fast.
        cases = [
            {**test, "alert_rule_test": [c for c in test["alert_rule_test"] if c["alertname"] == alert]}
            for test in tests
            if any(case["alertname"] == alert for case in test.get("alert_rule_test", []))
        ]
        unit_test = tmp_path / f"{number}-test.yml"
        unit_test.write_text(
            yaml.safe_dump(
                {"rule_files": rule_files, "evaluation_interval": evaluation_interval, "tests": cases}
            ),
            encoding="utf-8",
        )
        result = run([promtool, "test", "rules", str(unit_test)])
        assert result.returncode != 0, f"{alert}: no unit test notices a change of `{line}`"
        assert f"alertname: {alert}," in result.stdout + result.stderr, f"{alert}: `{line}`"
