"""Command line: the daemon's flags and the subcommands.

SKELETON: the configuration work fills this in (flags, check-config, error handling).
Subcommand modules listed in SUBCOMMAND_MODULES expose ``add_subcommand(subparsers, common)`` which
adds a subparser (with ``parents=[common]`` for the shared flags) and sets ``handler`` via
``set_defaults(handler=...)``; a handler takes the parsed ``argparse.Namespace`` and returns an exit code.
"""

from __future__ import annotations

SUBCOMMAND_MODULES: tuple[str, ...] = ()


def run_cli(argv: list[str]) -> int:
    raise NotImplementedError(argv)
