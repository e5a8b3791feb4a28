"""Payload decoding and display with the platform spec's chat, voice and streaming-chunk messages."""

from __future__ import annotations

import hashlib
import json
import random

import msgpack
import pytest
from support.spec_platform import AUDIO, CHAT, VOICE, packed

from exporter.dlq.payload import (
    MAX_DISPLAY_DEPTH,
    RAW_PREVIEW_BYTES,
    DecodedPayload,
    Encoding,
    correlation_ids,
    decode_payload,
    describe_bytes,
    describe_raw,
    displayable,
    format_timestamp,
    hex_dump,
    payload_document,
    pretty_payload,
    summarize_payload,
    terminal_safe,
    truncate,
    undecodable_count,
)
from exporter.dlq.unpack import MAX_DEPTH

CHUNK = {
    "request_id": "3f2b8c1e-9a4d-4e6f-8b2a-1c5d7e9f0a11",
    "type": "chunk",
    "content": "token",
    "done": False,
    "timestamp": 1706000000.0,
}


def test_chat_message_decodes_as_messagepack_with_every_field_readable():
    decoded = decode_payload(packed(CHAT))
    assert decoded.encoding is Encoding.MSGPACK
    assert decoded.value == CHAT
    assert decoded.size == len(packed(CHAT))
    assert payload_document(decoded) == CHAT
    shown = pretty_payload(decoded)
    assert json.loads(shown) == CHAT


def test_chat_summary_shows_request_and_user_ids():
    summary = summarize_payload(decode_payload(packed(CHAT)))
    assert summary == "request_id=3f2b8c1e-9a4d-4e6f-8b2a-1c5d7e9f0a11 user_id=user-123"
    assert correlation_ids(decode_payload(packed(CHAT))) == {
        "request_id": CHAT["request_id"],
        "user_id": "user-123",
    }


def test_voice_audio_is_shown_as_size_and_digest_never_dumped():
    decoded = decode_payload(packed(VOICE))
    assert decoded.encoding is Encoding.MSGPACK
    assert decoded.value["audio"] == AUDIO  # the decoded value keeps the real bytes
    digest = hashlib.sha256(AUDIO).hexdigest()
    document = payload_document(decoded)
    assert document["audio"] == f"<32000 bytes sha256:{digest[:16]}>"
    assert document["sample_rate"] == 16000
    assert document["format"] == "wav"
    json.dumps(document)  # JSON-safe: no bytes left anywhere
    shown = pretty_payload(decoded)
    assert f"<32000 bytes sha256:{digest[:16]}>" in shown
    assert len(shown) < 1000  # the 32 kB of audio is not in the output in any form
    assert summarize_payload(decoded) == ("request_id=7d0e4a52-1b3c-4d5e-9f60-2a3b4c5d6e7f user_id=user-123")


def test_streaming_chunk_keeps_its_types():
    decoded = decode_payload(packed(CHUNK))
    assert decoded.encoding is Encoding.MSGPACK
    document = payload_document(decoded)
    assert document == CHUNK
    assert isinstance(document["timestamp"], float)
    assert document["done"] is False
    # A chunk has no user_id: the summary shows what it has.
    assert summarize_payload(decoded) == "request_id=3f2b8c1e-9a4d-4e6f-8b2a-1c5d7e9f0a11"


def test_a_map_without_correlation_fields_is_summarised_by_its_first_fields():
    decoded = decode_payload(packed({"kind": "ping", "n": 3, "tags": ["a", "b"], "ignored": 1}))
    assert summarize_payload(decoded) == 'kind=ping n=3 tags=["a","b"]'


def test_long_strings_are_cut_in_the_table_view_but_kept_whole_elsewhere():
    letter = {"message": "x" * 500}
    decoded = decode_payload(packed(letter))
    summary = summarize_payload(decoded, width=60, max_string=40)
    assert summary == "message=" + "x" * 39 + "…"
    assert len(summarize_payload(decoded, width=30, max_string=400)) == 30
    assert payload_document(decoded)["message"] == "x" * 500
    assert "x" * 500 in pretty_payload(decoded)
    assert displayable(letter, max_string=10) == {"message": "x" * 9 + "…"}


@pytest.mark.parametrize(
    ("data", "encoding", "value"),
    [
        (b'{"request_id": "r-1", "user_id": "u-1"}', Encoding.JSON, {"request_id": "r-1", "user_id": "u-1"}),
        (b"[1, 2]", Encoding.JSON, [1, 2]),
        # "7" is also the MessagePack integer 55: readable text wins over a MessagePack scalar.
        (b"7", Encoding.JSON, 7),
        (b"handler crashed: timeout\n", Encoding.TEXT, "handler crashed: timeout\n"),
        ("grüße, 你好".encode(), Encoding.TEXT, "grüße, 你好"),
        (b"\x00\x01\xfe\xff", Encoding.HEX, b"\x00\x01\xfe\xff"),
        (b"\x1b[2J", Encoding.HEX, b"\x1b[2J"),  # control characters are not text
        (b"\xa5hello", Encoding.MSGPACK, "hello"),  # a MessagePack string that is not UTF-8 as a whole
        (b"", Encoding.EMPTY, b""),
    ],
)
def test_fallbacks_are_marked(data, encoding, value):
    decoded = decode_payload(data)
    assert decoded.encoding is encoding
    assert decoded.value == value
    assert decoded.size == len(data)


def test_truncated_messagepack_falls_back_to_hex_with_the_reason():
    data = packed(CHAT)[:-3]
    decoded = decode_payload(data)
    assert decoded.encoding is Encoding.HEX
    assert payload_document(decoded) == data.hex()
    assert summarize_payload(decoded) == describe_bytes(data)
    # The session id string lost 3 of its 11 bytes.
    assert decoded.note == f"not MessagePack: at byte {len(data) - 8}: a string needs 11 bytes, 8 left"


def test_hex_view_is_a_bounded_dump():
    data = bytes(range(256)) * 40
    dump = hex_dump(data, limit=64)
    lines = dump.splitlines()
    assert lines[0] == f"<10240 bytes sha256:{hashlib.sha256(data).hexdigest()}>"
    assert lines[1] == "00000000  00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f  ................"
    assert lines[3].startswith("00000020  20 21 22 23")
    assert lines[3].endswith(" !\"#$%&'()*+,-./")
    assert len(lines) == 1 + 4 + 1
    assert lines[-1] == "... 10176 more bytes"
    assert pretty_payload(decode_payload(b"\x00\xff")).splitlines()[1].startswith("00000000  00 ff")


def test_describe_bytes():
    assert describe_bytes(b"") == "<0 bytes sha256:e3b0c44298fc1c14>"
    assert describe_bytes(b"abc", digest_chars=64) == (
        "<3 bytes sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad>"
    )


def test_displayable_handles_what_messagepack_can_hold_and_json_cannot():
    data = packed(
        {1: "int key", "nan": float("nan"), "inf": float("-inf"), "ext": msgpack.ExtType(5, b"xyz")}
    )
    decoded = decode_payload(data)
    assert decoded.encoding is Encoding.MSGPACK
    shown = payload_document(decoded)
    assert shown == {"1": "int key", "nan": "nan", "inf": "-inf", "ext": "<extension type 5: 3 bytes 78797a>"}
    json.dumps(shown, allow_nan=False)
    stamp = decode_payload(packed({"at": msgpack.Timestamp(1706000000, 500_000_000)}))
    assert payload_document(stamp) == {"at": "2024-01-23T08:53:20.500Z"}
    assert displayable({b"bin-key": 1, b"\xff": 2}) == {"bin-key": 1, "<1 bytes sha256:a8100ae6aa1940d0>": 2}


def test_deep_nesting_is_cut_and_kept_as_raw_bytes_not_a_recursion_error():
    value: object = "bottom"
    for _ in range(200):
        value = [value]
    decoded = decode_payload(packed(value))
    assert decoded.encoding is Encoding.MSGPACK
    shown = payload_document(decoded)
    for _ in range(MAX_DEPTH):
        assert isinstance(shown, list)
        shown = shown[0]
    rest = packed(value)[MAX_DEPTH:]  # each fixarray header is one byte
    assert shown == f"<nested deeper than {MAX_DEPTH} levels: {describe_raw(rest)}>"
    assert describe_raw(rest).startswith(f"{len(rest)} bytes {'91' * RAW_PREVIEW_BYTES}…")


def test_deep_json_is_cut_at_the_display_depth():
    decoded = decode_payload(b"[" * 100 + b"]" * 100)
    assert decoded.encoding is Encoding.JSON
    shown = payload_document(decoded)
    for _ in range(MAX_DISPLAY_DEPTH):
        assert isinstance(shown, list)
        shown = shown[0]
    assert shown == f"<nested deeper than {MAX_DISPLAY_DEPTH} levels>"


def test_terminal_control_sequences_are_escaped():
    hostile = "ok\x1b[2J\u202etxt.exe\nnext\x9b"
    assert terminal_safe(hostile, keep_newlines=True) == "ok\\x1b[2J\\u202etxt.exe\nnext\\x9b"
    assert terminal_safe(hostile, keep_newlines=False) == "ok\\x1b[2J\\u202etxt.exe\\nnext\\x9b"
    assert terminal_safe("👩\u200d💻", keep_newlines=False) == "👩\u200d💻"  # emoji joiners are harmless
    decoded = decode_payload(packed({"request_id": "r\x1b]0;pwned\x07", "user_id": "u"}))
    assert "\x1b" not in summarize_payload(decoded)
    assert "\x1b" not in pretty_payload(decoded)


def test_text_is_shown_whole_and_safe():
    decoded = DecodedPayload(Encoding.TEXT, "line one\nline two", 17)
    assert pretty_payload(decoded) == "line one\nline two"
    assert summarize_payload(decoded) == "line one\\nline two"
    assert pretty_payload(decode_payload(b"")) == "(empty)"
    assert summarize_payload(decode_payload(b"")) == "(empty)"


def test_truncate_and_timestamps():
    assert truncate("abcdef", 4) == "abc…"
    assert truncate("abcd", 4) == "abcd"
    assert truncate("abc", None) == "abc"
    assert format_timestamp(1706000000.123456) == "2024-01-23T08:53:20.123Z"


# -- poisoned payloads: every value that cannot be converted is shown raw with a note, nothing raises --------

TIMESTAMP_12 = b"\xc7\x0c\xff"  # ext 8, 12 bytes, type -1: 32-bit nanoseconds then 64-bit signed seconds


def timestamp_12(nanoseconds: int, seconds: int) -> bytes:
    return nanoseconds.to_bytes(4, "big") + seconds.to_bytes(8, "big", signed=True)


def with_request_id(key: bytes, value: bytes) -> bytes:
    """A map of a request id and one more entry given as raw MessagePack."""
    return b"\x82" + packed("request_id") + packed("r-1") + key + value


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (
            TIMESTAMP_12 + timestamp_12(0, 2**63 - 1),
            f"timestamp {2**63 - 1} s from 1970 is outside years 1-9999",
        ),
        (
            TIMESTAMP_12 + timestamp_12(0, -(2**63)),
            f"timestamp {-(2**63)} s from 1970 is outside years 1-9999",
        ),
        (TIMESTAMP_12 + timestamp_12(1_000_000_000, 0), "timestamp with 1000000000 nanoseconds"),
        (b"\xd6\xff" + (2**32 - 1).to_bytes(4, "big"), None),  # the largest 32-bit timestamp is valid
        (b"\xd5\xff\x00\x01", "timestamp of 2 bytes (4, 8 or 12 expected)"),
        (b"\xd4\x05x", "extension type 5"),
        (b"\xc7\x02\x80ab", "extension type -128"),
        (b"\xa3\xff\xfeA", "invalid UTF-8"),
        (b"\xda\x00\x02\xc3\x28", "invalid UTF-8"),
    ],
)
def test_a_value_that_cannot_be_converted_is_shown_raw_with_a_note(value, shown):
    data = with_request_id(packed("poison"), value)
    decoded = decode_payload(data)
    assert decoded.encoding is Encoding.MSGPACK
    document = payload_document(decoded)
    assert document["request_id"] == "r-1"  # the rest of the message stays readable
    if shown is None:
        assert document["poison"] == "2106-02-07T06:28:15.000Z"
    else:
        content = _content(value)
        assert document["poison"] == f"<{shown}: {len(content)} bytes {content.hex()}>"
    assert correlation_ids(decoded) == {"request_id": "r-1"}
    assert undecodable_count(decoded) == (0 if shown is None else 1)
    json.dumps(document, allow_nan=False)
    assert "poison=" not in summarize_payload(decoded)  # correlation ids lead the summary
    assert "r-1" in pretty_payload(decoded)


def _content(value: bytes) -> bytes:
    """The content bytes of one str or ext value in the cases above (after its header)."""
    header_sizes = {0xC7: 3, 0xD4: 2, 0xD5: 2, 0xD6: 2, 0xDA: 3}
    return value[header_sizes.get(value[0], 1) :]


def test_a_map_key_python_cannot_hash_is_shown_raw():
    data = b"\x81" + packed([1, 2]) + packed("v")
    assert payload_document(decode_payload(data)) == {"<list as a map key: 3 bytes 920102>": "v"}


@pytest.mark.parametrize(
    ("data", "note"),
    [
        (
            b"\x81\xa1a\xdb\xff\xff\xff\xffabc",
            "at byte 8: a string needs 4294967295 bytes, 3 left",
        ),
        (b"\x81\xa1a\xc6\xff\xff\xff\xffabc", "at byte 8: a binary needs 4294967295 bytes, 3 left"),
        (
            b"\x81\xa1a\xc9\xff\xff\xff\xff\x05abc",
            "at byte 9: an extension value needs 4294967295 bytes, 3 left",
        ),
        (b"\xdd\xff\xff\xff\xff\x01\x02", "at byte 7: a value needs 1 bytes, 0 left"),
        (b"\xdf\xff\xff\xff\xff\xa1a\x01", "at byte 8: a value needs 1 bytes, 0 left"),
        (b"\x81\xa1a\xc1", "at byte 3: 0xc1 is not a MessagePack type"),
        (b"\x81\xa1a\xcb\x00", "at byte 4: a number needs 8 bytes, 1 left"),
        (b"\x81\xa1a\x01\x02", "1 bytes follow the value that ends at byte 4"),
    ],
)
def test_bytes_that_are_not_one_messagepack_value_are_hex_with_the_reason(data, note):
    decoded = decode_payload(data)
    assert (decoded.encoding, decoded.value, decoded.note) == (Encoding.HEX, data, f"not MessagePack: {note}")
    assert payload_document(decoded) == data.hex()
    assert undecodable_count(decoded) == 1


def test_undecodable_values_are_counted_wherever_they_are():
    bad_string, bad_stamp = b"\xa1\xff", b"\xd5\xff\x00\x01"
    data = b"\x82" + bad_string + b"\x92" + bad_string + bad_stamp + packed("ok") + b"\x91" + bad_string
    assert undecodable_count(decode_payload(data)) == 4  # a key, two array items, a nested item
    assert undecodable_count(decode_payload(packed(CHAT))) == 0
    assert undecodable_count(decode_payload(b"plain text")) == 0


VALID_VALUES = [
    CHAT,
    VOICE,
    CHUNK,
    [0, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**64 - 1],
    [-1, -32, -33, -128, -129, -32768, -32769, -(2**31), -(2**31) - 1, -(2**63)],
    [0.5, -1e30, float("inf"), True, False, None],
    ["", "x" * 31, "x" * 32, "x" * 255, "x" * 256, "ü" * 40000],
    [b"", b"\x00" * 255, b"\x00" * 256, b"\x01" * 70000],
    list(range(15)),
    list(range(16)),
    list(range(70000)),
    {str(index): index for index in range(15)},
    {str(index): index for index in range(16)},
    {str(index): index for index in range(70000)},
    {1: "int key", -5: [{"nested": {"deeper": [None]}}]},
]


@pytest.mark.parametrize("value", VALID_VALUES, ids=range(len(VALID_VALUES)))
@pytest.mark.parametrize("single_float", [False, True])
def test_valid_messagepack_decodes_as_the_msgpack_library_does(value, single_float):
    data = msgpack.packb(value, use_bin_type=True, use_single_float=single_float)
    expected = msgpack.unpackb(data, raw=False, strict_map_key=False)
    decoded = decode_payload(data)
    assert decoded.encoding is Encoding.MSGPACK
    assert decoded.value == expected


def test_no_input_makes_decoding_or_display_raise():
    rng = random.Random(20260201)  # noqa: S311 (test inputs, not secrets; fixed seed: the same every run)
    samples = [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64))) for _ in range(3000)]
    chat = packed(CHAT)
    samples += [chat[:cut] for cut in range(len(chat))]
    for index in range(len(chat)):
        for byte in (0x00, 0x7F, 0xC1, 0xC7, 0xD9, 0xDB, 0xDD, 0xDF, 0xFF):
            samples.append(chat[:index] + bytes([byte]) + chat[index + 1 :])
    for data in samples:
        decoded = decode_payload(data)
        json.dumps(payload_document(decoded), allow_nan=False)
        json.dumps(correlation_ids(decoded))
        summarize_payload(decoded)
        pretty_payload(decoded)
