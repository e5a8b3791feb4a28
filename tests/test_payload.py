"""Payload decoding and display with the platform spec's chat, voice and streaming-chunk messages."""

from __future__ import annotations

import hashlib
import json

import msgpack
import pytest
from spec_platform import AUDIO, CHAT, VOICE, packed

from exporter.payload import (
    MAX_DISPLAY_DEPTH,
    DecodedPayload,
    Encoding,
    correlation_ids,
    decode_payload,
    describe_bytes,
    displayable,
    format_timestamp,
    hex_dump,
    payload_document,
    pretty_payload,
    summarize_payload,
    terminal_safe,
    truncate,
)

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


def test_truncated_messagepack_falls_back_to_hex():
    data = packed(CHAT)[:-3]
    decoded = decode_payload(data)
    assert decoded.encoding is Encoding.HEX
    assert payload_document(decoded) == data.hex()
    assert summarize_payload(decoded) == describe_bytes(data)


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
    value = msgpack.unpackb(
        packed({1: "int key", "nan": float("nan"), "inf": float("-inf"), "ext": msgpack.ExtType(5, b"xyz")}),
        raw=False,
        strict_map_key=False,
    )
    shown = displayable(value)
    assert shown == {
        "1": "int key",
        "nan": "nan",
        "inf": "-inf",
        "ext": f"<ext type 5, 3 bytes sha256:{hashlib.sha256(b'xyz').hexdigest()[:16]}>",
    }
    json.dumps(shown, allow_nan=False)
    stamp = msgpack.unpackb(packed(msgpack.Timestamp(1706000000, 500_000_000)))
    assert displayable(stamp) == "2024-01-23T08:53:20.500Z"
    assert displayable({b"bin-key": 1, b"\xff": 2}) == {"bin-key": 1, "<1 bytes sha256:a8100ae6aa1940d0>": 2}


def test_deep_nesting_is_cut_not_a_recursion_error():
    value: object = "bottom"
    for _ in range(200):
        value = [value]
    decoded = decode_payload(packed(value))
    assert decoded.encoding is Encoding.MSGPACK
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
