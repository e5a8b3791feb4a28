"""Decoding and displaying message payloads: MessagePack first, then JSON, UTF-8 text, else hex.

The platform's messages are MessagePack maps that may carry raw bytes, such as a voice message's ``audio``.
People need to read the fields, not megabytes of audio, so bytes are shown as their size and digest. A
value that cannot be converted is shown as its raw bytes with a note, so no dead letter, however
malformed, stops the inspector. Pure functions, no I/O.
"""

from __future__ import annotations

import binascii
import datetime as dt
import hashlib
import json
import math
import unicodedata
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from exporter.dlq.unpack import MAX_DEPTH, Undecodable, unpack

# Fields that tie a dead letter to a request and a user in the platform's logs (the spec's common schema).
CORRELATION_FIELDS: Final = ("request_id", "user_id")
# One level more than the decoder keeps, so the raw bytes it keeps for the deepest value are shown.
MAX_DISPLAY_DEPTH: Final = MAX_DEPTH + 1
DIGEST_CHARS: Final = 16
HEX_PREVIEW_BYTES: Final = 4096
RAW_PREVIEW_BYTES: Final = 32  # of a value that could not be converted, shown inline
ELLIPSIS: Final = "…"
_TEXT_CONTROLS: Final = frozenset("\t\n\r")
# Zero-width (non-)joiners are format characters that only shape emoji and scripts: harmless on a terminal.
_HARMLESS_FORMAT: Final = frozenset("\u200c\u200d")


class Encoding(StrEnum):
    MSGPACK = "msgpack"
    JSON = "json"
    TEXT = "utf-8"
    HEX = "hex"
    EMPTY = "empty"


@dataclass(frozen=True, slots=True)
class DecodedPayload:
    """A payload and how it was read; ``value`` is the decoded object, the text, or the raw bytes (hex).

    ``note`` says why hex bytes are not MessagePack, e.g. where a declared length runs past the end.
    """

    encoding: Encoding
    value: Any
    size: int
    note: str | None = None


def decode_payload(data: bytes) -> DecodedPayload:
    """Decode ``data`` as MessagePack, JSON, UTF-8 text or (failing all) raw bytes shown as hex.

    Almost any short byte string is *some* valid MessagePack (``b"7"`` is the integer 55), so a MessagePack
    scalar is only believed when the bytes are not readable text: a map or an array always is.
    """
    size = len(data)
    if not data:
        return DecodedPayload(Encoding.EMPTY, b"", 0)
    unpacked = unpack(data)
    is_msgpack = unpacked.problem is None
    if is_msgpack and isinstance(unpacked.value, dict | list):
        return DecodedPayload(Encoding.MSGPACK, unpacked.value, size)
    text = _as_text(data)
    if text is not None:
        try:
            return DecodedPayload(Encoding.JSON, json.loads(text), size)
        except (ValueError, RecursionError):
            return DecodedPayload(Encoding.TEXT, text, size)
    if is_msgpack:
        return DecodedPayload(Encoding.MSGPACK, unpacked.value, size)
    return DecodedPayload(Encoding.HEX, bytes(data), size, note=f"not MessagePack: {unpacked.problem}")


def _as_text(data: bytes) -> str | None:
    """The UTF-8 text, when it decodes strictly and has no control characters besides tab and newlines."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if any(unicodedata.category(char) == "Cc" and char not in _TEXT_CONTROLS for char in text):
        return None
    return text


def describe_bytes(data: bytes, *, digest_chars: int = DIGEST_CHARS) -> str:
    """``<N bytes sha256:abcd...>``: identifies binary content without dumping it."""
    digest = hashlib.sha256(data).hexdigest()[:digest_chars]
    return f"<{len(data)} bytes sha256:{digest}>"


def describe_raw(data: bytes) -> str:
    """``N bytes`` and their hex, the first ``RAW_PREVIEW_BYTES`` of them and a digest when longer."""
    if len(data) <= RAW_PREVIEW_BYTES:
        return f"{len(data)} bytes {data.hex()}"
    digest = hashlib.sha256(data).hexdigest()[:DIGEST_CHARS]
    return f"{len(data)} bytes {data[:RAW_PREVIEW_BYTES].hex()}{ELLIPSIS} sha256:{digest}"


def truncate(text: str, limit: int | None) -> str:
    """``text`` cut to ``limit`` characters, the cut marked with an ellipsis."""
    if limit is None or len(text) <= limit:
        return text
    return text[: max(limit - 1, 0)] + ELLIPSIS


def displayable(value: Any, *, max_string: int | None = None, _depth: int = 0) -> Any:  # noqa: PLR0911 (one return per value type)
    """A JSON-safe copy of a decoded value: bytes described, strings cut to ``max_string``.

    Map keys become strings, non-finite floats become their names (JSON has no NaN), MessagePack
    timestamps become RFC 3339, and values that could not be converted show their raw bytes and why.
    """
    if _depth >= MAX_DISPLAY_DEPTH:
        return f"<nested deeper than {MAX_DISPLAY_DEPTH} levels>"
    deeper = _depth + 1
    if isinstance(value, dt.datetime):
        return format_datetime(value)
    if isinstance(value, Undecodable):
        return f"<{value.note}: {describe_raw(value.data)}>"
    if isinstance(value, dict):
        return {
            _display_key(key): displayable(item, max_string=max_string, _depth=deeper)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [displayable(item, max_string=max_string, _depth=deeper) for item in value]
    if isinstance(value, str):
        return truncate(value, max_string)
    if isinstance(value, bytes | bytearray | memoryview):
        return describe_bytes(bytes(value))
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    return truncate(repr(value), max_string)


def _display_key(key: Any) -> str:
    if isinstance(key, str):
        return key
    if isinstance(key, bytes):
        text = _as_text(key)
        return text if text is not None else describe_bytes(key)
    shown = displayable(key)
    return shown if isinstance(shown, str) else json.dumps(shown, ensure_ascii=False)


def undecodable_count(decoded: DecodedPayload) -> int:
    """Values shown as raw bytes with a note; a payload that is not MessagePack counts as one."""
    if decoded.note is not None:
        return 1
    count, pending = 0, [decoded.value]
    while pending:  # no recursion: the decoder bounds the depth, this walk does not rely on it
        value = pending.pop()
        if isinstance(value, Undecodable):
            count += 1
        elif isinstance(value, dict):
            pending.extend(value.keys())
            pending.extend(value.values())
        elif isinstance(value, list):
            pending.extend(value)
    return count


def payload_document(decoded: DecodedPayload, *, max_string: int | None = None) -> Any:
    """The payload as one JSON-safe value: the decoded structure, the text, or the hex string."""
    if decoded.encoding is Encoding.HEX:
        return binascii.hexlify(decoded.value).decode("ascii")
    if decoded.encoding is Encoding.EMPTY:
        return ""
    return displayable(decoded.value, max_string=max_string)


def correlation_ids(decoded: DecodedPayload) -> dict[str, str]:
    """The spec's correlation fields (``request_id``, ``user_id``) found at the payload's top level."""
    if not isinstance(decoded.value, dict):
        return {}
    found: dict[str, str] = {}
    for name in CORRELATION_FIELDS:
        value = decoded.value.get(name)
        if value is not None:
            shown = displayable(value)
            found[name] = shown if isinstance(shown, str) else json.dumps(shown, ensure_ascii=False)
    return found


def summarize_payload(decoded: DecodedPayload, *, width: int = 80, max_string: int = 40) -> str:
    """One line for the table: the correlation fields, else the first fields, else the text or digest."""
    if decoded.encoding is Encoding.EMPTY:
        return "(empty)"
    if decoded.encoding is Encoding.HEX:
        return describe_bytes(decoded.value)
    value = decoded.value
    if isinstance(value, dict):
        ids = correlation_ids(decoded)
        items = (
            list(ids.items())
            if ids
            else [(_display_key(key), _compact(item, max_string)) for key, item in list(value.items())[:3]]
        )
        line = " ".join(f"{key}={truncate(text, max_string)}" for key, text in items) or "{}"
    else:
        line = _compact(value, max_string)
    return truncate(terminal_safe(line, keep_newlines=False), width)


def _compact(value: Any, max_string: int) -> str:
    shown = displayable(value, max_string=max_string)
    return shown if isinstance(shown, str) else json.dumps(shown, ensure_ascii=False, separators=(",", ":"))


def pretty_payload(decoded: DecodedPayload) -> str:
    """The whole payload for a person: indented structure, full text, or a bounded hex dump."""
    if decoded.encoding is Encoding.EMPTY:
        return "(empty)"
    if decoded.encoding is Encoding.HEX:
        return hex_dump(decoded.value)
    if decoded.encoding is Encoding.TEXT:
        return terminal_safe(decoded.value, keep_newlines=True)
    rendered = json.dumps(displayable(decoded.value), ensure_ascii=False, indent=2)
    return terminal_safe(rendered, keep_newlines=True)


def hex_dump(data: bytes, *, limit: int = HEX_PREVIEW_BYTES) -> str:
    """Offset, 16 bytes in hex and their printable ASCII per line; the first ``limit`` bytes only."""
    lines = [describe_bytes(data, digest_chars=64)]
    for offset in range(0, min(len(data), limit), 16):
        chunk = data[offset : offset + 16]
        ascii_column = "".join(chr(byte) if 0x20 <= byte < 0x7F else "." for byte in chunk)
        lines.append(f"{offset:08x}  {chunk.hex(' '):<47}  {ascii_column}")
    if len(data) > limit:
        lines.append(f"... {len(data) - limit} more bytes")
    return "\n".join(lines)


def terminal_safe(text: str, *, keep_newlines: bool) -> str:
    """``text`` with control and format characters escaped, so a dead letter cannot drive the terminal."""
    kept = _HARMLESS_FORMAT | _TEXT_CONTROLS if keep_newlines else _HARMLESS_FORMAT
    return "".join(
        char if char in kept or unicodedata.category(char) not in {"Cc", "Cf"} else _escape(char)
        for char in text
    )


_SHORT_ESCAPES: Final = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}


def _escape(char: str) -> str:
    if char in _SHORT_ESCAPES:
        return _SHORT_ESCAPES[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def format_timestamp(unix_seconds: float) -> str:
    """RFC 3339 in UTC with millisecond precision, e.g. ``2026-02-01T19:30:05.123Z``."""
    return format_datetime(dt.datetime.fromtimestamp(unix_seconds, tz=dt.UTC))


def format_datetime(moment: dt.datetime) -> str:
    """``moment`` (aware) as RFC 3339 in UTC with millisecond precision."""
    return moment.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
