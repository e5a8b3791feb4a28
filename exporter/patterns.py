"""Name patterns (filters, metric exclusions) compiled with RE2: matching is linear in the name's length.

Python's ``re`` backtracks, so a pattern like ``(a+)+$`` against a long name of ``a``s takes exponential
time, and every collection cycle would pay it. RE2 refuses the constructs that need backtracking
(back-references, look-around) and matches everything else in linear time.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import re2

# RE2 otherwise logs every refused pattern to stderr, breaking the one-line error of check-config.
_OPTIONS = re2.Options()
_OPTIONS.log_errors = False
# A pattern is a short name filter; this bounds the automaton RE2 builds for it.
MAX_PATTERN_LENGTH = 1000


class NamePattern(Protocol):
    """What the exporter needs of a compiled pattern (RE2's and ``re``'s both fit)."""

    @property
    def pattern(self) -> str: ...

    def fullmatch(self, string: str) -> object | None: ...


class PatternError(ValueError):
    """A pattern RE2 refuses; the message is fit for the user (the pattern itself is not in it)."""


def compile_pattern(pattern: str) -> NamePattern:
    """``pattern`` compiled by RE2; PatternError saying why RE2 refuses it."""
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise PatternError(f"longer than {MAX_PATTERN_LENGTH} characters")
    return _compile(pattern)


def _compile(pattern: str) -> NamePattern:
    try:
        compiled: NamePattern = re2.compile(pattern, _OPTIONS)
    except re2.error as exc:
        reason = exc.args[0] if exc.args else b""
        text = reason.decode("utf-8", "replace") if isinstance(reason, bytes) else str(reason)
        # RE2 appends the offending part of the pattern after a colon: kept out, the caller quotes it.
        raise PatternError(text.split(":", 1)[0] or "refused by RE2") from None
    return compiled


def compile_alternatives(patterns: Sequence[str]) -> NamePattern:
    """One pattern matching what any of ``patterns`` matches (each compiled alone first, for its error)."""
    for pattern in patterns:
        compile_pattern(pattern)
    if len(patterns) == 1:
        return compile_pattern(patterns[0])
    return _compile("|".join(f"(?:{pattern})" for pattern in patterns))
