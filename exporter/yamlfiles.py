"""Describing what is wrong in a YAML file a user wrote, in one voice for every such file.

The configuration file, the web config file and the demo's platform file report problems the same way.
None of these descriptions quotes a value: the offending line or value may be a password or a hash.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping

import yaml


def describe_yaml_error(exc: yaml.YAMLError) -> str:
    """``not valid YAML: <context> at line L, column C; <problem> at line L, column C``, without the text."""
    # str(exc) quotes the offending line, which may be the one holding a password: rebuilt without it.
    if not isinstance(exc, yaml.MarkedYAMLError):
        return "not valid YAML"
    parts = [
        f"{text} at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else text
        for text, mark in ((exc.context, exc.context_mark), (exc.problem, exc.problem_mark))
        if text
    ]
    return f"not valid YAML: {'; '.join(parts)}" if parts else "not valid YAML"


def describe_type(value: object) -> str:
    """The kind of a value ("a number", "a list", ...), never the value itself (it may be a secret)."""
    kinds: tuple[tuple[type | tuple[type, ...], str], ...] = (
        (bool, "true/false"),
        ((int, float), "a number"),
        (str, "a string"),
        (list, "a list"),
        (dict, "a mapping"),
        (type(None), "an empty value"),
    )
    for kind, description in kinds:
        if isinstance(value, kind):
            return description
    return f"a YAML {type(value).__name__}"


def did_you_mean(word: str, choices: Iterable[str], *, full_names: Mapping[str, str] | None = None) -> str:
    """``; did you mean 'x'?`` for the choice closest to ``word``, or "" when none is close.

    With ``full_names`` the closest choice is named by its full name there (a key's last part matched, its
    full dotted name suggested).
    """
    close = difflib.get_close_matches(word, list(choices), n=1)
    if not close:
        return ""
    suggestion = (full_names or {}).get(close[0], close[0])
    return f"; did you mean {suggestion!r}?"


def unknown_key_message(
    name: str, section: str, known: Iterable[str], *, elsewhere: Mapping[str, str] | None = None
) -> str:
    """Why ``name`` is refused in ``section`` ("" for the top level): the closest known key, else all of them.

    ``elsewhere`` maps the last part of every key of the file to its full name, so that a key in the wrong
    section (``interval`` at the top level) is pointed to where it belongs.
    """
    known = list(known)
    where = f"in {section}" if section else "at the top level"
    hint = did_you_mean(name, known) or did_you_mean(name, elsewhere or {}, full_names=elsewhere)
    if hint:
        return f"unknown key {name!r} {where}{hint}"
    return f"unknown key {name!r} {where}; known keys: {', '.join(known)}"
