"""A MessagePack decoder for dead letters, which may hold anything: it never raises.

``msgpack.unpackb`` returns values that cannot be shown (a timestamp beyond Python's datetime range fails
only when formatted), and one bad string or length sinks the whole message. Here each value that cannot be
converted (an out-of-range or malformed timestamp, an extension type, invalid UTF-8, nesting deeper than
``MAX_DEPTH``) becomes an ``Undecodable``: its raw bytes and why, so the rest of the message stays readable.
Bytes that are not one MessagePack value (data ending before a declared length, a reserved type byte,
bytes after the value) are reported as the ``problem``; nothing is allocated from a declared length before
the bytes are there.
"""

from __future__ import annotations

import datetime as dt
import struct
from dataclasses import dataclass
from enum import Enum, auto
from typing import Any, Final

MAX_DEPTH: Final = 32  # maps and arrays deeper than this are kept as raw bytes
TIMESTAMP_EXT: Final = -1  # the one extension type the MessagePack spec defines
NANOSECONDS_PER_SECOND: Final = 1_000_000_000
_EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


@dataclass(frozen=True, slots=True)
class Undecodable:
    """A value kept as its raw bytes because it cannot be converted; ``note`` says why."""

    note: str
    data: bytes


@dataclass(frozen=True, slots=True)
class Unpacked:
    """The decoded value, and why the bytes are not exactly one MessagePack value (None when they are)."""

    value: Any
    problem: str | None


def unpack(data: bytes) -> Unpacked:
    """``data`` as one MessagePack value: strings as text, ``bin`` as bytes, timestamps as datetimes."""
    cursor = _Cursor(data)
    try:
        value = _value(cursor, depth=0)
    except _BrokenError as exc:
        return Unpacked(None, str(exc))
    if cursor.pos < len(data):
        return Unpacked(
            value, f"{len(data) - cursor.pos} bytes follow the value that ends at byte {cursor.pos}"
        )
    return Unpacked(value, None)


class _BrokenError(Exception):
    """The bytes cannot be read on from here; ``unpack`` turns it into its ``problem``."""


class _Cursor:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, count: int, what: str) -> bytes:
        """The next ``count`` bytes, checked against what is left before anything is copied."""
        left = len(self.data) - self.pos
        if count > left:
            raise _BrokenError(f"at byte {self.pos}: {what} needs {count} bytes, {left} left")
        chunk = self.data[self.pos : self.pos + count]
        self.pos += count
        return chunk

    def uint(self, size: int, what: str) -> int:
        return int.from_bytes(self.take(size, what), "big")


class _Kind(Enum):
    SCALAR = auto()  # nil, booleans and numbers: the header is the whole value
    STR = auto()
    BIN = auto()
    EXT = auto()
    ARRAY = auto()
    MAP = auto()


@dataclass(frozen=True, slots=True)
class _Header:
    kind: _Kind
    number: Any  # a scalar's value, or the length of a string, binary or extension, or an element count
    ext_code: int = 0


_CONSTANTS: Final = {0xC0: None, 0xC2: False, 0xC3: True}
_NUMBERS: Final = {
    0xCA: ">f", 0xCB: ">d", 0xCC: ">B", 0xCD: ">H", 0xCE: ">I", 0xCF: ">Q",
    0xD0: ">b", 0xD1: ">h", 0xD2: ">i", 0xD3: ">q",
}  # fmt: skip
_LENGTH_PREFIXED: Final = {
    0xC4: (_Kind.BIN, 1), 0xC5: (_Kind.BIN, 2), 0xC6: (_Kind.BIN, 4),
    0xD9: (_Kind.STR, 1), 0xDA: (_Kind.STR, 2), 0xDB: (_Kind.STR, 4),
    0xDC: (_Kind.ARRAY, 2), 0xDD: (_Kind.ARRAY, 4), 0xDE: (_Kind.MAP, 2), 0xDF: (_Kind.MAP, 4),
}  # fmt: skip
_EXT_LENGTH_SIZE: Final = {0xC7: 1, 0xC8: 2, 0xC9: 4}
_FIXEXT_LENGTH: Final = {0xD4: 1, 0xD5: 2, 0xD6: 4, 0xD7: 8, 0xD8: 16}
_KIND_NAMES: Final = {_Kind.STR: "a string", _Kind.BIN: "a binary", _Kind.EXT: "an extension value"}


def _header(cursor: _Cursor) -> _Header:
    at = cursor.pos
    byte = cursor.uint(1, "a value")
    fixed = _fixed_header(byte)
    if fixed is not None:
        return fixed
    if byte in _NUMBERS:
        layout = _NUMBERS[byte]
        return _Header(
            _Kind.SCALAR, struct.unpack(layout, cursor.take(struct.calcsize(layout), "a number"))[0]
        )
    if byte in _LENGTH_PREFIXED:
        kind, size = _LENGTH_PREFIXED[byte]
        return _Header(kind, cursor.uint(size, "a length"))
    if byte in _EXT_LENGTH_SIZE:
        length = cursor.uint(_EXT_LENGTH_SIZE[byte], "a length")
        return _Header(_Kind.EXT, length, _ext_code(cursor))
    if byte in _FIXEXT_LENGTH:
        return _Header(_Kind.EXT, _FIXEXT_LENGTH[byte], _ext_code(cursor))
    raise _BrokenError(f"at byte {at}: 0x{byte:02x} is not a MessagePack type")


def _fixed_header(byte: int) -> _Header | None:  # noqa: PLR0911 (one return per single-byte format)
    """The formats whose first byte is the whole header; None for the others."""
    if byte <= 0x7F:  # positive fixint
        return _Header(_Kind.SCALAR, byte)
    if byte >= 0xE0:  # negative fixint
        return _Header(_Kind.SCALAR, byte - 0x100)
    if byte <= 0x8F:
        return _Header(_Kind.MAP, byte & 0x0F)
    if byte <= 0x9F:
        return _Header(_Kind.ARRAY, byte & 0x0F)
    if byte <= 0xBF:
        return _Header(_Kind.STR, byte & 0x1F)
    if byte in _CONSTANTS:
        return _Header(_Kind.SCALAR, _CONSTANTS[byte])
    return None


def _ext_code(cursor: _Cursor) -> int:
    return int.from_bytes(cursor.take(1, "an extension type"), "big", signed=True)


def _value(cursor: _Cursor, depth: int) -> Any:
    start = cursor.pos
    header = _header(cursor)
    kind = header.kind
    if kind is _Kind.SCALAR:
        return header.number
    if kind in (_Kind.ARRAY, _Kind.MAP):
        if depth >= MAX_DEPTH:
            cursor.pos = start
            _skip(cursor)
            return Undecodable(f"nested deeper than {MAX_DEPTH} levels", cursor.data[start : cursor.pos])
        # Every element takes at least one byte: a huge declared count ends at the data's end, unallocated.
        if kind is _Kind.ARRAY:
            return [_value(cursor, depth + 1) for _ in range(header.number)]
        return _map(cursor, header.number, depth + 1)
    return _from_bytes(header, cursor.take(header.number, _KIND_NAMES[kind]))


def _from_bytes(header: _Header, raw: bytes) -> Any:
    """A string, binary or extension value from its content bytes."""
    if header.kind is _Kind.BIN:
        return raw
    if header.kind is _Kind.STR:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return Undecodable("invalid UTF-8", raw)
    if header.ext_code == TIMESTAMP_EXT:
        return _timestamp(raw)
    return Undecodable(f"extension type {header.ext_code}", raw)


def _map(cursor: _Cursor, count: int, depth: int) -> dict[Any, Any]:
    result: dict[Any, Any] = {}
    for _ in range(count):
        key_start = cursor.pos
        key = _value(cursor, depth)
        if isinstance(key, list | dict):  # valid MessagePack, but not a Python dict key
            key = Undecodable(f"{type(key).__name__} as a map key", cursor.data[key_start : cursor.pos])
        result[key] = _value(cursor, depth)
    return result


def _skip(cursor: _Cursor) -> None:
    """Move past one value of any depth without recursion (a deeply nested value is skipped whole)."""
    pending = 1
    while pending:
        header = _header(cursor)
        pending -= 1
        if header.kind is _Kind.ARRAY:
            pending += header.number
        elif header.kind is _Kind.MAP:
            pending += 2 * header.number
        elif header.kind is not _Kind.SCALAR:
            cursor.take(header.number, _KIND_NAMES[header.kind])


def _timestamp(raw: bytes) -> dt.datetime | Undecodable:
    """The spec's three layouts: 32-bit seconds; 30-bit nanoseconds, 34-bit seconds; 32 and 64 bits."""
    if len(raw) == 4:
        seconds, nanoseconds = int.from_bytes(raw, "big"), 0
    elif len(raw) == 8:
        word = int.from_bytes(raw, "big")
        seconds, nanoseconds = word & (2**34 - 1), word >> 34
    elif len(raw) == 12:
        nanoseconds = int.from_bytes(raw[:4], "big")
        seconds = int.from_bytes(raw[4:], "big", signed=True)
    else:
        return Undecodable(f"timestamp of {len(raw)} bytes (4, 8 or 12 expected)", raw)
    if nanoseconds >= NANOSECONDS_PER_SECOND:
        return Undecodable(f"timestamp with {nanoseconds} nanoseconds", raw)
    try:
        return _EPOCH + dt.timedelta(seconds=seconds, microseconds=nanoseconds // 1000)
    except OverflowError:
        return Undecodable(f"timestamp {seconds} s from 1970 is outside years 1-9999", raw)
