"""Build deploy/prometheus-rule.yaml, the Kubernetes PrometheusRule, from the rule files in alerts/.

The rule files (alerts/*.rules.yml) are the source: a plain Prometheus loads them as they are, and this
script wraps their groups, unchanged, in a PrometheusRule for the Prometheus Operator.

Every runbook_url in the rule files is ``<base>#<section anchor>``, one base for all rules.
``--runbook-base-url URL`` swaps that base for the address of your own copy of docs/runbooks.md, in the
PrometheusRule and, with ``--rules-output-dir``, in copies of the rule files for a plain Prometheus. The swap
is textual, so the copies keep the rule files' comments and layout.

    python alerts/build_prometheusrule.py            # regenerate deploy/prometheus-rule.yaml
    python alerts/build_prometheusrule.py --check    # exit 1 when the committed file is out of date
    python alerts/build_prometheusrule.py --runbook-base-url https://wiki.example.org/nats/runbooks.md \\
        --output my/prometheus-rule.yaml --rules-output-dir my/rules
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

ALERTS_DIR = Path(__file__).resolve().parent
DEFAULT_OUTPUT = ALERTS_DIR.parent / "deploy" / "prometheus-rule.yaml"
RULE_FILE_PATTERN = "*.rules.yml"
RESOURCE_NAME = "nats-jetstream-exporter"
PROG = "build_prometheusrule"


class BuildError(Exception):
    """A problem with the rule files or the arguments, told to the user in one line."""


@dataclass(frozen=True, slots=True)
class RuleFile:
    path: Path
    text: str
    groups: list[dict[str, Any]]


def load_rule_files(alerts_dir: Path) -> list[RuleFile]:
    """Every rule file in ``alerts_dir``, sorted by name, with its text and parsed groups."""
    paths = sorted(alerts_dir.glob(RULE_FILE_PATTERN))
    if not paths:
        raise BuildError(f"no {RULE_FILE_PATTERN} files in {alerts_dir}")
    return [_load_rule_file(path) for path in paths]


def _load_rule_file(path: Path) -> RuleFile:
    text = path.read_text(encoding="utf-8")
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise BuildError(f"{path}: not valid YAML: {error}") from None
    groups = document.get("groups") if isinstance(document, dict) else None
    if not isinstance(groups, list) or not all(isinstance(group, dict) for group in groups):
        raise BuildError(f"{path}: expected a mapping with a list of rule groups under 'groups'")
    return RuleFile(path=path, text=text, groups=groups)


def all_groups(rule_files: list[RuleFile]) -> list[dict[str, Any]]:
    """The groups of all rule files in order; group names must be unique across files."""
    groups: list[dict[str, Any]] = []
    seen: dict[str, Path] = {}
    for rule_file in rule_files:
        for group in rule_file.groups:
            name = str(group.get("name", ""))
            if name in seen:
                raise BuildError(f"{rule_file.path}: group {name!r} is already defined in {seen[name]}")
            seen[name] = rule_file.path
            groups.append(group)
    return groups


def runbook_urls(groups: list[dict[str, Any]]) -> dict[str, str]:
    """Alert name -> its runbook_url annotation."""
    urls: dict[str, str] = {}
    for group in groups:
        for rule in group.get("rules", []):
            if "alert" in rule:
                urls[rule["alert"]] = str(rule.get("annotations", {}).get("runbook_url", ""))
    return urls


def shared_runbook_base_url(groups: list[dict[str, Any]]) -> str:
    """The one base that every runbook_url starts with (the part before '#')."""
    bases: dict[str, list[str]] = {}
    for alert, url in runbook_urls(groups).items():
        base, separator, anchor = url.partition("#")
        if not separator or not anchor:
            raise BuildError(f"alert {alert}: runbook_url {url!r} has no #section anchor")
        bases.setdefault(base, []).append(alert)
    if len(bases) != 1:
        described = "; ".join(f"{base} ({', '.join(alerts)})" for base, alerts in sorted(bases.items()))
        raise BuildError(f"the runbook_url annotations must share one base URL, found: {described}")
    return next(iter(bases))


def checked_base_url(url: str) -> str:
    """``url`` if it can serve as a runbook base: absolute http(s), no fragment, nothing YAML would mangle."""
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.netloc:
        raise BuildError(f"--runbook-base-url {url!r}: expected an absolute http:// or https:// URL")
    if any(character in url for character in "#\"'\\") or any(character.isspace() for character in url):
        raise BuildError(f"--runbook-base-url {url!r}: must not contain '#', quotes, backslashes or spaces")
    return url


def rebased_text(text: str, old_base: str, new_base: str) -> str:
    """The rule file text with every ``<old_base>#`` replaced by ``<new_base>#``."""
    return text.replace(f"{old_base}#", f"{new_base}#")


def prometheus_rule(groups: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": RESOURCE_NAME,
            "labels": {
                "app.kubernetes.io/name": RESOURCE_NAME,
                "app.kubernetes.io/component": "alerting-rules",
            },
        },
        "spec": {"groups": groups},
    }


class _ManifestDumper(yaml.SafeDumper):
    """Block style for multi-line strings (PromQL stays readable) and indented lists."""

    # The signature is PyYAML's (it passes both flags); `indentless` is ignored so that every list is
    # indented under its key, as kubectl and most Kubernetes manifests show them.
    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:  # noqa: FBT001, FBT002, ARG002 (see above)
        super().increase_indent(flow=flow, indentless=False)


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_ManifestDumper.add_representer(str, _represent_str)


def render_prometheus_rule(rule_files: list[RuleFile]) -> str:
    """The PrometheusRule manifest for ``rule_files``, as committed in deploy/prometheus-rule.yaml."""
    sources = ", ".join(f"alerts/{rule_file.path.name}" for rule_file in rule_files)
    header = (
        f"# Generated by alerts/build_prometheusrule.py from {sources}: do not edit.\n"
        "# Change the rule files, then run `python alerts/build_prometheusrule.py`.\n"
    )
    body = yaml.dump(
        prometheus_rule(all_groups(rule_files)),
        Dumper=_ManifestDumper,
        sort_keys=False,
        allow_unicode=True,
        width=4096,
    )
    return header + body


def rebased_rule_files(rule_files: list[RuleFile], new_base: str) -> list[RuleFile]:
    """The rule files with every runbook_url moved to ``new_base``."""
    old_base = shared_runbook_base_url(all_groups(rule_files))
    rebased = []
    for rule_file in rule_files:
        text = rebased_text(rule_file.text, old_base, new_base)
        rebased.append(RuleFile(path=rule_file.path, text=text, groups=yaml.safe_load(text)["groups"]))
    if shared_runbook_base_url(all_groups(rebased)) != new_base:
        raise BuildError(f"could not move every runbook_url from {old_base} to {new_base}")
    return rebased


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Write the Kubernetes PrometheusRule made from the alert rule files.",
    )
    parser.add_argument("--alerts-dir", type=Path, default=ALERTS_DIR, help="where the *.rules.yml files are")
    parser.add_argument(
        "--output",
        default=str(DEFAULT_OUTPUT),
        help="file to write the PrometheusRule to, '-' for standard output (default: %(default)s)",
    )
    parser.add_argument(
        "--runbook-base-url",
        help="base URL of your copy of docs/runbooks.md; every runbook_url becomes <this>#<section>",
    )
    parser.add_argument(
        "--rules-output-dir",
        type=Path,
        help="also write the rule files, with the new runbook base URL, into this directory",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 if the output file differs from what would be written",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    try:
        rule_files = load_rule_files(args.alerts_dir)
        if args.runbook_base_url is not None:
            rule_files = rebased_rule_files(rule_files, checked_base_url(args.runbook_base_url))
        else:
            shared_runbook_base_url(all_groups(rule_files))
        manifest = render_prometheus_rule(rule_files)
    except BuildError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2
    if args.check:
        return _check(Path(args.output), manifest)
    if args.output == "-":
        sys.stdout.write(manifest)
    else:
        Path(args.output).write_text(manifest, encoding="utf-8")
    if args.rules_output_dir is not None:
        args.rules_output_dir.mkdir(parents=True, exist_ok=True)
        for rule_file in rule_files:
            (args.rules_output_dir / rule_file.path.name).write_text(rule_file.text, encoding="utf-8")
    return 0


def _check(output: Path, manifest: str) -> int:
    current = output.read_text(encoding="utf-8") if output.exists() else None
    if current == manifest:
        return 0
    print(f"{PROG}: {output} is out of date: run python alerts/build_prometheusrule.py", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
