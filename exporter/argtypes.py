"""Argument types shared by the command line's subcommands: each turns one flag's text into a value or
raises ``argparse.ArgumentTypeError`` with a message naming what is wrong.
"""

from __future__ import annotations

import argparse

from exporter.settings import validate_stream_name
from exporter.subjects import has_wildcard, subject_problem


def positive_int(text: str) -> int:
    """Counts and sequence numbers: a whole number of at least 1."""
    digits = text.strip()
    if not (digits.isascii() and digits.isdigit()) or int(digits) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return int(digits)


def stream_name(text: str) -> str:
    """A JetStream stream name, as the server would accept it."""
    problem = validate_stream_name(text)
    if problem is not None:
        raise argparse.ArgumentTypeError(f"invalid stream name {text!r}: {problem}")
    return text


def subject_filter(text: str) -> str:
    """A subject with NATS wildcards: ``*`` for one part, ``>`` for the rest (last part only)."""
    problem = subject_problem(text)
    if problem is not None:
        raise argparse.ArgumentTypeError(f"invalid subject {text!r}: {problem}")
    return text


def literal_subject(text: str) -> str:
    """A subject to publish to: valid, and without wildcards."""
    subject_filter(text)
    if has_wildcard(text):
        raise argparse.ArgumentTypeError(f"cannot publish to {text!r}: a target subject has no wildcards")
    return text
