"""Reading a YAML file a user wrote, and describing what is wrong in it, in one voice for every such file.

The configuration file, the web config file and the demo's platform file are read by ``read_yaml_file``
(bounded in size and depth, duplicate keys refused) and report problems the same way. None of these
descriptions quotes the offending line: it may hold a password or a hash.
"""

from __future__ import annotations

import difflib
import os
import stat
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NoReturn

import yaml

from exporter.durations import format_duration, parse_duration
from exporter.errors import ConfigError


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


# -- reading a YAML file: one path for the configuration, the web config and the platform file ----------

# Every YAML file the exporter reads is a short hand-written document; these bound the work a hostile or
# mistaken one can cause (PyYAML composes nested nodes recursively: unbounded depth ends in RecursionError).
MAX_YAML_BYTES = 1024 * 1024
MAX_YAML_DEPTH = 32


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys and documents nested deeper than MAX_YAML_DEPTH.

    PyYAML keeps the last of two equal keys silently, hiding half a section (or a user's first password hash).
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise yaml.composer.ComposerError(
                    None,
                    None,
                    f"nested deeper than {MAX_YAML_DEPTH} levels",
                    self.peek_event().start_mark,  # type: ignore[no-untyped-call]  # untyped in the stubs
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _construct_mapping_refusing_duplicates(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[tuple[str, str]] = set()
    for key_node, _ in node.value:
        if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
            continue
        identity = (key_node.tag, key_node.value)
        if identity in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {quoted(key_node.value)}", key_node.start_mark
            )
        seen.add(identity)
    return loader.construct_mapping(node)


_StrictLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping_refusing_duplicates,
)


def read_yaml_file(path: str | os.PathLike[str], *, what: str) -> object:
    """The YAML document in the regular file ``path`` (None when empty); ConfigError naming the file.

    ``what`` names the file in messages ("configuration file"). A FIFO, a directory or a device is refused
    before anything is read from it, so a wrong path never hangs the exporter.
    """
    source = str(path)
    try:
        # O_NONBLOCK: opening a FIFO with no writer would otherwise block until one comes.
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError as exc:
        raise ConfigError(f"cannot read the {what}: {_os_reason(exc)}", source=source) from None
    try:
        mode = os.fstat(descriptor).st_mode
        if not stat.S_ISREG(mode):
            raise ConfigError(
                f"cannot read the {what}: not a regular file ({_file_kind(mode)})", source=source
            )
        data = os.read(descriptor, MAX_YAML_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read the {what}: {_os_reason(exc)}", source=source) from None
    finally:
        os.close(descriptor)
    if len(data) > MAX_YAML_BYTES:
        raise ConfigError(f"the {what} is larger than {MAX_YAML_BYTES // 1024} KiB", source=source)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"the {what} is not UTF-8 text", source=source) from None
    return parse_yaml(text, source=source)


def parse_yaml(text: str, *, source: str) -> object:
    """The YAML document in ``text``; ConfigError naming ``source``, one line, never the offending text."""
    if len(text) > MAX_YAML_BYTES:
        raise ConfigError(f"larger than {MAX_YAML_BYTES // 1024} KiB", source=source)
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 (_StrictLoader is a SafeLoader)
    except yaml.YAMLError as exc:
        raise ConfigError(describe_yaml_error(exc), source=source) from None
    except (ValueError, OverflowError):
        # PyYAML converts while constructing: an integer of thousands of digits exceeds int()'s limit.
        raise ConfigError(
            "not valid YAML: a value cannot be converted (a number too long?)", source=source
        ) from None


def _os_reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def _file_kind(mode: int) -> str:
    kinds = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"))
    for test, kind in kinds:
        if test(mode):
            return kind
    return "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "not a file"


# -- quoting what the user wrote --------------------------------------------------------------------------

# Values longer than this are described, not quoted: a long value is more likely a key or a token pasted
# into the wrong setting, and a one-line message stays one readable line.
MAX_QUOTED_LENGTH = 40


def brief(text: str) -> str:
    """``text`` when short and printable; otherwise a description of it that shows none of it."""
    if len(text) <= MAX_QUOTED_LENGTH and text.isprintable():
        return text
    return f"a value of {len(text)} characters (not shown)"


def quoted(text: str) -> str:
    """``repr`` of a short text; a description of a long one (never its content)."""
    shown = brief(text)
    return repr(text) if shown == text else shown


# -- validating a document: one style for the web config and the platform file -----------------------------


class DocumentReader:
    """Typed reads from a parsed YAML document, each failing with a ConfigError naming the file and key.

    Keys are dotted (``tls_server_config.cert_file``) or indexed (``streams[3].max_age``). Values are quoted
    in messages only when short; a subclass reading a secret describes it instead.
    """

    def __init__(self, source: str) -> None:
        self.source = source

    def error(self, key: str, message: str) -> ConfigError:
        return ConfigError(message, source=self.source, key=key or None)

    def fail(self, key: str, message: str) -> NoReturn:
        raise self.error(key, message)

    def mapping(
        self,
        value: object,
        key: str,
        allowed: Sequence[str],
        *,
        unsupported: Mapping[str, str] | None = None,
    ) -> dict[Any, Any]:
        """``value`` as a mapping of ``allowed`` keys; ``unsupported`` maps dotted keys to advice."""
        if not isinstance(value, dict):
            self.fail(
                key, f"must be a mapping with the keys {', '.join(allowed)}, not {describe_type(value)}"
            )
        for name in value:
            dotted = f"{key}.{name}" if key else str(name)
            if unsupported is not None and dotted in unsupported:
                self.fail(dotted, unsupported[dotted])
            if name not in allowed:
                self.fail(dotted, unknown_key_message(str(name), key, allowed))
        return value

    def sequence(self, value: object, key: str, *, required: bool) -> list[Any]:
        if value is None and required:
            self.fail(key, "is required")
        if not isinstance(value, list):
            self.fail(key, f"must be a list, not {describe_type(value)}")
        if required and not value:
            self.fail(key, "must not be empty")
        return value

    def string(self, value: object, key: str) -> str:
        if not isinstance(value, str) or not value:
            self.fail(key, f"must be a non-empty string, not {describe_type(value)}")
        return value

    def choice(self, value: object, key: str, choices: Iterable[str]) -> str:
        options = list(choices)
        text = self.string(value, key)
        if text not in options:
            self.fail(key, f"{quoted(text)} is not one of {', '.join(options)}{did_you_mean(text, options)}")
        return text

    def boolean(self, value: object, key: str) -> bool:
        if not isinstance(value, bool):
            self.fail(key, f"must be true or false, not {describe_type(value)}")
        return value

    def integer(self, value: object, key: str, *, minimum: int, maximum: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(key, f"must be a whole number, not {describe_type(value)}")
        if not minimum <= value <= maximum:
            self.fail(key, f"must be from {minimum} to {maximum}, got {brief(str(value))}")
        return value

    def duration(
        self, value: object, key: str, *, positive: bool = False, at_most: float = 3650 * 86400.0
    ) -> float:
        """A duration string ("30s", "7d"); the number 0 for "unlimited" unless ``positive``."""
        if value == 0 and not positive and not isinstance(value, bool):
            return 0.0
        if not isinstance(value, str):
            self.fail(key, f"expected a duration such as 30s, 5m, 24h or 7d, got {describe_type(value)}")
        if len(value) > MAX_QUOTED_LENGTH:
            self.fail(key, f"invalid duration {quoted(value)}: too long for a duration")
        try:
            seconds = parse_duration(value)
        except ValueError as exc:
            self.fail(key, str(exc))
        if seconds < 0:
            self.fail(key, "must not be negative")
        if positive and seconds == 0:
            self.fail(key, "must be longer than zero")
        if seconds > at_most:
            self.fail(key, f"must be at most {format_duration(at_most)}")
        return seconds
