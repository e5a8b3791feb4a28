"""Poisoned dead letters: MessagePack maps whose second value no decoder can turn into a Python value.

Each is ``{"request_id": <name>, "poison": <value>}``, so a listing shows whose it is, with the note the
inspector gives for the value, or for the whole payload when the bytes are not MessagePack.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgpack

TIMESTAMP_12 = b"\xc7\x0c\xff"  # ext 8 with 12 bytes of type -1: 32-bit nanoseconds, 64-bit signed seconds


@dataclass(frozen=True)
class Poison:
    request_id: str
    value: bytes  # the raw MessagePack of the "poison" value
    shown: str  # how the inspector shows the value, or its start ("" when the whole payload is hex)
    note: str = ""  # why the whole payload is not MessagePack ("" when it is)

    @property
    def payload(self) -> bytes:
        pack = msgpack.packb
        return b"\x82" + pack("request_id") + pack(self.request_id) + pack("poison") + self.value


def _timestamp(seconds: int) -> bytes:
    return TIMESTAMP_12 + (0).to_bytes(4, "big") + seconds.to_bytes(8, "big", signed=True)


def _nested(depth: int) -> bytes:
    return b"\x91" * depth + b"\x01"


POISONS = (
    Poison(
        "poison-timestamp-max",
        _timestamp(2**63 - 1),
        f"<timestamp {2**63 - 1} s from 1970 is outside years 1-9999: 12 bytes 000000007fffffffffffffff>",
    ),
    Poison(
        "poison-timestamp-min",
        _timestamp(-(2**63)),
        f"<timestamp {-(2**63)} s from 1970 is outside years 1-9999: 12 bytes 000000008000000000000000>",
    ),
    Poison("poison-extension", b"\xd4\x2a\x07", "<extension type 42: 1 bytes 07>"),
    Poison("poison-utf8", b"\xa3\xff\xfeA", "<invalid UTF-8: 3 bytes fffe41>"),
    Poison(
        "poison-deep",
        _nested(200),
        # Inside the map, 31 arrays are shown; the rest (169 array headers and the 1) is kept raw.
        "<nested deeper than 32 levels: 170 bytes " + "91" * 32 + "… sha256:",
    ),
    Poison(
        "poison-length",
        b"\xdb\xff\xff\xff\xffabc",
        "",
        note="not MessagePack: at byte 38: a string needs 4294967295 bytes, 3 left",
    ),
)
