"""NATS subject patterns: validity, overlap and containment, with the server's wildcard semantics.

Shared by the demo's platform file and the dead-letter inspector's flags, so both accept exactly what the
server accepts.

A subject is dot-separated parts ("tokens" in the NATS docs). ``*`` matches exactly one part; ``>`` matches
one or more trailing parts and may only come last.
"""

from __future__ import annotations

ONE = "*"
REST = ">"


def subject_problem(pattern: str) -> str | None:
    """Why ``pattern`` is not a valid subject pattern, or None when it is."""
    if not pattern:
        return "is empty"
    if any(character.isspace() for character in pattern):
        return "contains white space"
    parts = pattern.split(".")
    if any(part == "" for part in parts):
        return "has an empty part (leading, trailing or double dot)"
    for index, part in enumerate(parts):
        if part not in (ONE, REST) and (ONE in part or REST in part):
            return f"part {part!r} mixes a wildcard with other characters"
        if part == REST and index != len(parts) - 1:
            return "'>' is only allowed as the last part"
    return None


def has_wildcard(pattern: str) -> bool:
    """True when ``pattern`` matches more than one subject: it cannot be published to."""
    return any(part in (ONE, REST) for part in pattern.split("."))


def subjects_overlap(first: str, second: str) -> bool:
    """True when some subject matches both patterns (NATS rejects such subjects on two streams)."""
    a, b = first.split("."), second.split(".")
    for index in range(max(len(a), len(b))):
        part_a = a[index] if index < len(a) else None
        part_b = b[index] if index < len(b) else None
        if REST in (part_a, part_b):
            # `>` needs at least one part here; the other pattern supplies one unless it has ended.
            return part_a is not None and part_b is not None
        if part_a is None or part_b is None:
            return False  # one pattern ends, the other wants more parts: lengths can never agree
        if part_a != part_b and ONE not in (part_a, part_b):
            return False
    return True


def subject_within(inner: str, outer: str) -> bool:
    """True when every subject matching ``inner`` also matches ``outer`` (a valid consumer filter)."""
    a, b = inner.split("."), outer.split(".")
    for index, part_b in enumerate(b):
        if part_b == REST:
            return index < len(a)
        if index >= len(a):
            return False
        part_a = a[index]
        if part_a == REST:
            return False  # inner reaches any depth, outer has a fixed length
        if part_b not in (ONE, part_a):
            return False  # part_a is `*` (wider than a literal) or a different literal
    return len(a) == len(b)
