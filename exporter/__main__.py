"""``python -m exporter``: argv -> settings -> run."""

from __future__ import annotations

import sys

from exporter.cli import run_cli


def main() -> None:
    sys.exit(run_cli(sys.argv[1:]))


if __name__ == "__main__":
    main()
