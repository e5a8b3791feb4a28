"""Write the dashboards' JSON, or check that the committed JSON is what the code generates.

python -m dashboards.build            # regenerate dashboards/*.json
python -m dashboards.build --check    # exit 1 and name the stale files when they differ
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import Dashboard

from dashboards import accounts, cluster, consumers, dead_letters, exporter_health, overview, servers

OUTPUT_DIR = Path(__file__).resolve().parent

DASHBOARDS: dict[str, Callable[[], Dashboard]] = {
    "nats-jetstream-overview.json": overview.build_dashboard,
    "nats-jetstream-consumers.json": consumers.build_dashboard,
    "nats-jetstream-dead-letters.json": dead_letters.build_dashboard,
    "nats-jetstream-exporter.json": exporter_health.build_dashboard,
    "nats-jetstream-cluster.json": cluster.build_dashboard,
    "nats-jetstream-accounts.json": accounts.build_dashboard,
    "nats-jetstream-servers.json": servers.build_dashboard,
}


def render_dashboard(build: Callable[[], Dashboard]) -> str:
    """The dashboard as Grafana's JSON model, in a stable layout that diffs well."""
    return json.dumps(build(), cls=JSONEncoder, indent=2, ensure_ascii=False) + "\n"


def render_all() -> dict[str, str]:
    return {name: render_dashboard(build) for name, build in DASHBOARDS.items()}


def stale_files(output_dir: Path) -> list[str]:
    """Names of dashboard files that are missing or differ from what the code generates."""
    stale = []
    for name, text in render_all().items():
        path = output_dir / name
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            stale.append(name)
    return stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dashboards.build", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the committed JSON is out of date")
    parser.add_argument("--output-dir", type=Path, default=OUTPUT_DIR, help="where the JSON files go")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_files(args.output_dir)
        if stale:
            print(
                f"out of date: {', '.join(stale)}; run `python -m dashboards.build` and commit the result",
                file=sys.stderr,
            )
            return 1
        return 0
    args.output_dir.mkdir(parents=True, exist_ok=True)
    for name, text in render_all().items():
        (args.output_dir / name).write_text(text, encoding="utf-8")
        print(args.output_dir / name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
