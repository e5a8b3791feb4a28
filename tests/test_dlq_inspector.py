"""The dead-letter inspector against a real nats-server holding the platform spec's dead letters.

Dead letters get into AI_DLQ the way the spec's handler puts them there (republish to ``ai.dlq.chat``,
then ``term()``), plus a voice message with raw audio bytes and a payload that is not MessagePack.
Every test also checks that reading left AI_DLQ exactly as it was and created no consumer.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime as dt
import hashlib
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import msgpack
import nats
import pytest
from nats.aio.msg import Msg
from nats.js.api import StreamConfig
from support.jetstream import stream_state_at
from support.poison import POISONS
from support.spec_platform import AUDIO, CHAT, packed, provision_platform
from support.spec_platform import VOICE as SPEC_VOICE
from support.waiting import wait_for

from exporter.argtypes import literal_subject, subject_filter
from exporter.cli import common_parser, run_cli
from exporter.dlq.arguments import parse_sequences, parse_time_bound
from exporter.dlq.command import add_subcommand
from exporter.dlq.errors import InspectorError
from exporter.dlq.payload import describe_bytes
from exporter.dlq.reading import DeadLetter, parse_dead_letter, parse_headers
from exporter.dlq.replay import ReplayTarget, outcome_from_ack
from exporter.logs import REDACTED
from exporter.natsserver import NatsServerProcess, free_port

PROG = "nats-jetstream-exporter"
REPLAY_TARGET = "ai.chat.user.user-123.message"  # stored by COMPANIONS_CHAT, as a real replay would be

# A second user for the voice message, so each dead letter's summary line says whose it is.
VOICE = {**SPEC_VOICE, "user_id": "user-456"}
CHAT_2 = {**CHAT, "request_id": "a1b2c3d4-0000-4000-8000-000000000002", "user_id": "user-789"}
NOT_MSGPACK = b"\x00\x01 handler wrote this \xff\xfe"


@dataclass(frozen=True)
class DeadLetters:
    server: NatsServerProcess
    times: dict[int, float]  # sequence -> stored time (Unix seconds)


async def dead_letter_through_the_handler(url: str) -> None:
    """The spec's chat handler: a message that fails for good is republished to ai.dlq.chat and terminated."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        await js.publish("ai.chat.user.user-123.message", packed(CHAT))
        sub = await js.pull_subscribe_bind(durable="chat-handler", stream="COMPANIONS_CHAT")
        msg = (await sub.fetch(1, timeout=5))[0]
        await js.publish("ai.dlq.chat", msg.data, headers={"Origin-Subject": msg.subject})
        await msg.term()
    finally:
        await nc.close()


async def stored_time(nc: nats.NATS, stream: str, seq: int) -> float:
    reply = json.loads(
        (await nc.request(f"$JS.API.STREAM.MSG.GET.{stream}", json.dumps({"seq": seq}).encode())).data
    )
    assert "error" not in reply, reply
    return dt.datetime.fromisoformat(reply["message"]["time"]).timestamp()


async def populate(url: str) -> dict[int, float]:
    nc = await nats.connect(url)
    try:
        await provision_platform(nc)
        await dead_letter_through_the_handler(url)  # seq 1
        js = nc.jetstream()
        await js.publish("ai.dlq.voice", packed(VOICE))  # seq 2
        times = {seq: await stored_time(nc, "AI_DLQ", seq) for seq in (1, 2)}
        await js.publish("ai.dlq.chat", NOT_MSGPACK)  # seq 3
        await js.publish(
            "ai.dlq.chat", packed(CHAT_2), headers={"Nats-Msg-Id": "chat-2", "Origin": "replayable"}
        )
        for seq in (3, 4):
            times[seq] = await stored_time(nc, "AI_DLQ", seq)
        return times
    finally:
        await nc.close()


async def stored_message(url: str, stream: str, seq: int) -> dict[str, object]:
    nc = await nats.connect(url)
    try:
        reply = json.loads(
            (await nc.request(f"$JS.API.STREAM.MSG.GET.{stream}", json.dumps({"seq": seq}).encode())).data
        )
    finally:
        await nc.close()
    return reply


def invoke(*argv: str) -> int:
    """Parse like the CLI does (its real shared flags) and run the handler."""
    parser = argparse.ArgumentParser(prog=PROG)
    add_subcommand(parser.add_subparsers(), common_parser())
    args = parser.parse_args(list(argv))
    return int(args.handler(args))


@pytest.fixture(autouse=True)
def no_exporter_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [name for name in os.environ if name.startswith("NATS_EXPORTER_")]:
        monkeypatch.delenv(name)


@pytest.fixture(scope="module")
def dead_letters(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DeadLetters]:
    """One server for the read-only tests: populating it takes longer than all of them together."""
    server = NatsServerProcess(store_dir=Path(tmp_path_factory.mktemp("dlq")) / "store")
    server.start()
    try:
        yield DeadLetters(server, asyncio.run(populate(server.url)))
    finally:
        server.cleanup()


@pytest.fixture
def unchanged(dead_letters: DeadLetters) -> Iterator[None]:
    """Asserts that the test left AI_DLQ's state exactly as it found it, without any consumer."""
    before = asyncio.run(stream_state_at(dead_letters.server.url, "AI_DLQ"))
    assert before["messages"] == 4
    yield
    after = asyncio.run(stream_state_at(dead_letters.server.url, "AI_DLQ"))
    assert after == before
    assert after["consumer_count"] == 0


def rfc3339(unix_seconds: float) -> str:
    return dt.datetime.fromtimestamp(unix_seconds, tz=dt.UTC).isoformat()


def table_rows(out: str) -> list[list[str]]:
    lines = out.split("\n\n", maxsplit=1)[0].splitlines()
    assert lines[0].split() == ["SEQ", "TIME", "SIZE", "SUBJECT", "ENCODING", "SUMMARY"]
    return [line.split(None, 5) for line in lines[1:]]


# -- list and show ---------------------------------------------------------------------------------------


def test_list_shows_the_spec_messages_readably(dead_letters, unchanged, capsys):
    assert invoke("dlq", "list", "--stream", "AI_DLQ", "--nats-url", dead_letters.server.url) == 0
    out = capsys.readouterr().out
    rows = table_rows(out)
    assert [row[0] for row in rows] == ["1", "2", "3", "4"]
    assert rows[0][2:] == [
        str(len(packed(CHAT))),
        "ai.dlq.chat",
        "msgpack",
        "request_id=3f2b8c1e-9a4d-4e6f-8b2a-1c5d7e9f0a11 user_id=user-123",
    ]
    assert rows[1][2:] == [
        str(len(packed(VOICE))),
        "ai.dlq.voice",
        "msgpack",
        "request_id=7d0e4a52-1b3c-4d5e-9f60-2a3b4c5d6e7f user_id=user-456",
    ]
    assert rows[2][2:] == [str(len(NOT_MSGPACK)), "ai.dlq.chat", "hex", describe_bytes(NOT_MSGPACK)]
    assert rows[3][4] == "msgpack"
    assert rows[0][1] == dt.datetime.fromtimestamp(dead_letters.times[1], tz=dt.UTC).isoformat(
        timespec="milliseconds"
    ).replace("+00:00", "Z")
    assert "4 shown; AI_DLQ holds 4 messages (sequences 1..4)" in out
    assert len(out) < 2000  # the 32 kB of audio is nowhere


def test_list_json_is_one_document_with_decoded_payloads(dead_letters, unchanged, capsys):
    assert invoke("dlq", "list", "--json", "--nats-url", dead_letters.server.url) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["stream"] == "AI_DLQ"  # the default stream when none is configured
    assert (document["stream_messages"], document["first_seq"], document["last_seq"], document["more"]) == (
        4,
        1,
        4,
        False,
    )
    chat, voice, raw, chat_2 = document["messages"]
    assert chat["payload"] == CHAT
    assert chat["headers"] == {"Origin-Subject": ["ai.chat.user.user-123.message"]}
    assert (chat["request_id"], chat["user_id"], chat["encoding"]) == (
        CHAT["request_id"],
        "user-123",
        "msgpack",
    )
    assert voice["payload"]["audio"] == f"<32000 bytes sha256:{hashlib.sha256(AUDIO).hexdigest()[:16]}>"
    assert voice["payload"]["sample_rate"] == 16000
    assert voice["subject"] == "ai.dlq.voice"
    assert voice["size"] == len(packed(VOICE))
    assert voice["timestamp"] == pytest.approx(dead_letters.times[2], abs=1e-6)
    assert (raw["encoding"], raw["payload"]) == ("hex", NOT_MSGPACK.hex())
    assert "request_id" not in raw
    assert chat_2["headers"] == {"Nats-Msg-Id": ["chat-2"], "Origin": ["replayable"]}


def test_show_prints_a_voice_message_in_full_with_audio_as_digest(dead_letters, unchanged, capsys):
    assert invoke("dlq", "show", "2", "--nats-url", dead_letters.server.url) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[:3] == ["Stream:    AI_DLQ", "Sequence:  2", "Subject:   ai.dlq.voice"]
    assert f"Size:      {len(packed(VOICE))} bytes" in lines
    assert "Encoding:  msgpack" in lines
    payload = json.loads("\n".join(lines[lines.index("Payload:") + 1 :]))
    assert payload == {**VOICE, "audio": f"<32000 bytes sha256:{hashlib.sha256(AUDIO).hexdigest()[:16]}>"}


def test_show_survives_a_payload_that_is_not_messagepack(dead_letters, unchanged, capsys):
    assert invoke("dlq", "show", "3", "--nats-url", dead_letters.server.url) == 0
    out = capsys.readouterr().out
    assert "Encoding:  hex" in out
    assert "  00000000  00 01 20 68 61 6e 64 6c 65 72 20 77 72 6f 74 65  .. handler wrote" in out


def test_show_json_and_headers(dead_letters, unchanged, capsys):
    assert invoke("dlq", "show", "1", "--json", "--nats-url", dead_letters.server.url) == 0
    document = json.loads(capsys.readouterr().out)
    assert (document["stream"], document["seq"], document["payload"]) == ("AI_DLQ", 1, CHAT)
    assert invoke("dlq", "show", "1", "--nats-url", dead_letters.server.url) == 0
    assert "Headers:\n  Origin-Subject: ai.chat.user.user-123.message\n" in capsys.readouterr().out


def test_show_raw_writes_the_exact_payload(dead_letters, unchanged, capsysbinary):
    assert invoke("dlq", "show", "2", "--raw", "--nats-url", dead_letters.server.url) == 0
    assert capsysbinary.readouterr().out == packed(VOICE)


def test_show_a_missing_sequence_is_a_one_line_error(dead_letters, unchanged, capsys):
    assert invoke("dlq", "show", "99", "--nats-url", dead_letters.server.url) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        f"{PROG} dlq show: error: AI_DLQ has no message with sequence 99 (it holds sequences 1..4)\n"
    )


# -- filters ---------------------------------------------------------------------------------------------


def listed(capsys: pytest.CaptureFixture[str], url: str, *flags: str) -> list[int]:
    assert invoke("dlq", "list", "--json", "--nats-url", url, *flags) == 0
    return [message["seq"] for message in json.loads(capsys.readouterr().out)["messages"]]


def test_subject_filters_with_wildcards(dead_letters, unchanged, capsys):
    url = dead_letters.server.url
    assert listed(capsys, url, "--subject", "ai.dlq.voice") == [2]
    assert listed(capsys, url, "--subject", "ai.dlq.chat") == [1, 3, 4]
    assert listed(capsys, url, "--subject", "ai.dlq.*") == [1, 2, 3, 4]
    assert listed(capsys, url, "--subject", "ai.dlq.nothing") == []


def test_time_window_filters(dead_letters, unchanged, capsys):
    url, times = dead_letters.server.url, dead_letters.times
    between_2_and_3 = rfc3339((times[2] + times[3]) / 2)
    assert listed(capsys, url, "--since", between_2_and_3) == [3, 4]
    assert listed(capsys, url, "--until", between_2_and_3) == [1, 2]
    assert listed(capsys, url, "--since", rfc3339((times[1] + times[2]) / 2), "--until", between_2_and_3) == [
        2
    ]
    assert listed(capsys, url, "--since", between_2_and_3, "--subject", "ai.dlq.voice") == []
    assert listed(capsys, url, "--since", "1h") == [1, 2, 3, 4]  # durations mean "ago"
    assert listed(capsys, url, "--since", "99999999d") == [1, 2, 3, 4]  # before 1970: from the start
    assert listed(capsys, url, "--until", "1h") == []
    assert listed(capsys, url, "--since", "2999-01-01T00:00:00Z") == []


def test_limit_says_when_more_match(dead_letters, unchanged, capsys):
    url = dead_letters.server.url
    assert invoke("dlq", "list", "--limit", "2", "--json", "--nats-url", url) == 0
    document = json.loads(capsys.readouterr().out)
    assert [message["seq"] for message in document["messages"]] == [1, 2]
    assert document["more"] is True
    assert invoke("dlq", "list", "--limit", "2", "--subject", "ai.dlq.chat", "--nats-url", url) == 0
    out = capsys.readouterr().out
    assert [row[0] for row in table_rows(out)] == ["1", "3"]
    assert "more match: raise --limit" in out
    assert listed(capsys, url, "--limit", "3", "--subject", "ai.dlq.chat") == [1, 3, 4]


# -- errors ----------------------------------------------------------------------------------------------


def test_a_missing_stream_is_a_one_line_error(dead_letters, unchanged, capsys):
    assert invoke("dlq", "list", "--stream", "NO_SUCH_DLQ", "--nats-url", dead_letters.server.url) == 1
    assert capsys.readouterr().err == (
        f"{PROG} dlq list: error: stream NO_SUCH_DLQ does not exist (choose one with --stream)\n"
    )
    # Without --stream, the first configured dead-letter stream is the default.
    assert (
        invoke("dlq", "list", "--dead-letter-stream", "OTHER_DLQ", "--nats-url", dead_letters.server.url) == 1
    )
    assert "stream OTHER_DLQ does not exist" in capsys.readouterr().err


def test_the_inspector_logs_as_configured_with_secrets_redacted(dead_letters, unchanged, capsys, monkeypatch):
    token = "s3cret-token-for-the-dlq-test"
    monkeypatch.setenv("NATS_EXPORTER_NATS_TOKEN", token)  # a server without auth accepts any token
    url = dead_letters.server.url
    assert invoke("dlq", "list", "--nats-url", url, "--log-format", "json", "--log-level", "warning") == 0
    capsys.readouterr()
    # What a library would log during the run, e.g. nats-py quoting its connect options.
    logging.getLogger("nats.aio.client").info("below --log-level")
    logging.getLogger("nats.aio.client").warning("reconnecting with token %s", token)
    err = capsys.readouterr().err
    assert token not in err
    assert [json.loads(line)["message"] for line in err.splitlines()] == [
        f"reconnecting with token {REDACTED}"
    ]


async def test_a_malformed_stream_info_reply_is_a_one_line_error(nats_server, capsys, monkeypatch):
    # No JetStream answers domain "fake": this responder stands in for a server that replies oddly.
    monkeypatch.setenv("NATS_EXPORTER_NATS_DOMAIN", "fake")
    responder = await nats.connect(nats_server.url)
    try:

        async def odd_stream_info(msg: Msg) -> None:
            await msg.respond(json.dumps({"state": {"messages": "many", "first_seq": 1}}).encode())

        await responder.subscribe("$JS.fake.API.STREAM.INFO.AI_DLQ", cb=odd_stream_info)
        await responder.flush()
        rc = await asyncio.to_thread(invoke, "dlq", "list", "--nats-url", nats_server.url)
    finally:
        await responder.close()
    assert rc == 1
    err = capsys.readouterr().err
    assert err.startswith(
        f"{PROG} dlq list: error: unexpected STREAM.INFO reply from the server (ValueError("
    )
    assert err.count("\n") == 1


def test_an_acknowledgement_without_a_valid_sequence_fails_that_replay():
    letter = DeadLetter(seq=3, subject="ai.dlq.chat", time="", timestamp=0.0, headers=(), data=b"x")
    target = ReplayTarget("review.dlq", "REVIEW")
    outcome = outcome_from_ack(letter, target, b'{"stream": "REVIEW", "seq": "seven"}')
    assert (outcome.published, outcome.deleted) == (False, False)
    assert outcome.error == "stream REVIEW sent an acknowledgement without a valid sequence"
    assert outcome_from_ack(letter, target, b'{"stream": "REVIEW", "seq": 7}').target_seq == 7


def test_unreachable_nats_is_a_one_line_error(capsys):
    port = free_port()
    assert invoke("dlq", "list", "--nats-url", f"nats://127.0.0.1:{port}") == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        f"{PROG} dlq list: error: cannot connect to NATS at nats://127.0.0.1:{port}: connection refused\n"
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("replay", "--to", "somewhere.else"), "say which dead letters to replay"),
        (("replay", "--to", "x.y", "--seq", "1", "--all"), "with --seq or with filters/--all, not both"),
        (("replay", "--to", "x.y", "--seq", "1", "--subject", "ai.dlq.chat"), "not both"),
        (("list", "--since", "1h", "--until", "2h"), "--since 1h is after --until 2h"),
    ],
)
def test_usage_errors_exit_2_before_connecting(argv, message, capsys):
    # Port 1 is never listening: these must fail before any connection attempt.
    assert invoke("dlq", *argv, "--nats-url", "nats://127.0.0.1:1") == 2
    err = capsys.readouterr().err
    assert message in err
    assert err.count("\n") == 1


@pytest.mark.parametrize(
    "argv",
    [
        ("list", "--since", "yesterday"),
        ("list", "--since", "2026-02-01T14:30:00"),  # no offset: ambiguous
        ("list", "--subject", "ai.>.x"),
        ("list", "--limit", "0"),
        ("list", "--stream", "AI.DLQ"),
        ("replay", "--to", "ai.chat.*.message", "--all"),
        ("replay", "--to", "x.y", "--seq", "5-3"),
        ("show", "first"),
    ],
)
def test_bad_arguments_are_rejected_by_the_parser(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        invoke("dlq", *argv)
    assert exit_info.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_argument_types():
    now = 1_800_000_000.0
    assert parse_time_bound("90m").resolve(now) == now - 5400
    assert parse_time_bound("2d12h").resolve(now) == now - 2.5 * 86400
    assert parse_time_bound("2026-02-01T14:30:00Z").resolve(now) == 1769956200.0
    assert parse_time_bound("2026-02-01T15:30:00+01:00").resolve(now) == 1769956200.0
    assert parse_sequences("3,5-7, 9") == (3, 5, 6, 7, 9)
    assert subject_filter("ai.dlq.>") == "ai.dlq.>"
    assert literal_subject("ai.chat.user.u1.message") == "ai.chat.user.u1.message"


def test_stored_message_parsing():
    assert parse_headers(b"NATS/1.0\r\nA: 1\r\nA: 2\r\nB: x:y\r\n\r\n") == (
        ("A", "1"),
        ("A", "2"),
        ("B", "x:y"),
    )
    assert parse_headers(b"") == ()
    letter = parse_dead_letter(
        {"message": {"subject": "ai.dlq.chat", "seq": 7, "data": "aGk=", "time": "2026-02-01T14:30:00.5Z"}}
    )
    assert (letter.seq, letter.subject, letter.data, letter.timestamp, letter.headers) == (
        7,
        "ai.dlq.chat",
        b"hi",
        1769956200.5,
        (),
    )
    with pytest.raises(InspectorError, match=r"unexpected STREAM\.MSG\.GET reply"):
        parse_dead_letter({"message": {"seq": 1, "subject": "s", "data": "not base64!"}})


# -- replay ----------------------------------------------------------------------------------------------


def test_replay_is_a_dry_run_by_default(dead_letters, unchanged, capsys):
    url = dead_letters.server.url
    target_before = asyncio.run(stream_state_at(url, "COMPANIONS_CHAT"))
    assert invoke("dlq", "replay", "--to", REPLAY_TARGET, "--seq", "1,4", "--nats-url", url) == 0
    out = capsys.readouterr().out
    assert out.startswith(
        "DRY RUN, nothing published: would republish 2 dead letters from AI_DLQ to "
        f"{REPLAY_TARGET} (stored by stream COMPANIONS_CHAT) and leave AI_DLQ as it is."
    )
    assert "Run again with --yes to publish." in out
    assert (
        invoke("dlq", "replay", "--to", REPLAY_TARGET, "--all", "--delete", "--json", "--nats-url", url) == 0
    )
    document = json.loads(capsys.readouterr().out)
    assert (document["dry_run"], document["published"], document["deleted"]) == (True, 0, 0)
    assert [message["seq"] for message in document["messages"]] == [1, 2, 3, 4]
    assert asyncio.run(stream_state_at(url, "COMPANIONS_CHAT")) == target_before


def test_replay_refuses_to_write_into_the_dead_letter_stream_itself(dead_letters, unchanged, capsys):
    assert (
        invoke(
            "dlq", "replay", "--to", "ai.dlq.retry", "--all", "--yes", "--nats-url", dead_letters.server.url
        )
        == 2
    )
    assert "ai.dlq.retry is stored in AI_DLQ itself" in capsys.readouterr().err


def test_replay_of_an_unknown_sequence_publishes_nothing(dead_letters, unchanged, capsys):
    url = dead_letters.server.url
    target_before = asyncio.run(stream_state_at(url, "COMPANIONS_CHAT"))
    assert invoke("dlq", "replay", "--to", REPLAY_TARGET, "--seq", "1,77", "--yes", "--nats-url", url) == 1
    assert "AI_DLQ has no message with sequence 77; nothing was published" in capsys.readouterr().err
    assert asyncio.run(stream_state_at(url, "COMPANIONS_CHAT")) == target_before


def test_replay_yes_publishes_to_the_target_and_keeps_the_dead_letters(dead_letters, unchanged, capsys):
    url = dead_letters.server.url
    target_before = asyncio.run(stream_state_at(url, "COMPANIONS_CHAT"))
    first_new = int(target_before["last_seq"]) + 1  # type: ignore[call-overload]
    assert (
        invoke("dlq", "replay", "--to", REPLAY_TARGET, "--seq", "1", "--seq", "4", "--yes", "--nats-url", url)
        == 0
    )
    out = capsys.readouterr().out
    assert f"1    ai.dlq.chat  {len(packed(CHAT))}   published as COMPANIONS_CHAT seq {first_new}" in out
    assert "republished 2 of 2 dead letters from AI_DLQ to" in out
    assert "the dead letters were kept in AI_DLQ" in out
    target_after = asyncio.run(stream_state_at(url, "COMPANIONS_CHAT"))
    assert target_after["last_seq"] == first_new + 1
    replayed_chat = asyncio.run(stored_message(url, "COMPANIONS_CHAT", first_new))["message"]
    replayed_chat_2 = asyncio.run(stored_message(url, "COMPANIONS_CHAT", first_new + 1))["message"]
    assert isinstance(replayed_chat, dict)
    assert isinstance(replayed_chat_2, dict)
    assert replayed_chat["subject"] == REPLAY_TARGET
    assert msgpack.unpackb(_b64(replayed_chat["data"]), raw=False) == CHAT
    assert msgpack.unpackb(_b64(replayed_chat_2["data"]), raw=False) == CHAT_2
    headers = _b64(replayed_chat_2["hdrs"]).decode()
    # Its own header kept, the server-interpreted Nats-Msg-Id dropped, the provenance added.
    assert "Origin: replayable\r\n" in headers
    assert "Nats-Msg-Id" not in headers
    assert "Dlq-Replayed-From: AI_DLQ/4\r\n" in headers


def _b64(text: object) -> bytes:
    assert isinstance(text, str)
    return base64.b64decode(text)


async def test_replay_to_a_core_subject_reaches_its_subscribers(dead_letters, unchanged, capsys):
    url = dead_letters.server.url
    received: list[Msg] = []
    listener = await nats.connect(url)
    try:

        async def collect(msg: Msg) -> None:
            received.append(msg)

        await listener.subscribe("ops.replayed", cb=collect)
        await listener.flush()
        rc = await asyncio.to_thread(
            invoke,
            "dlq",
            "replay",
            "--to",
            "ops.replayed",
            "--subject",
            "ai.dlq.voice",
            "--yes",
            "--nats-url",
            url,
        )
        assert rc == 0
        await wait_for(lambda: len(received) == 1, message="the replayed voice message")
    finally:
        await listener.close()
    assert received[0].data == packed(VOICE)
    assert received[0].headers == {"Dlq-Replayed-From": "AI_DLQ/2"}
    out = capsys.readouterr().out
    assert "ops.replayed (no stream stores it: only current subscribers get it)" in out


def test_replay_delete_removes_only_what_was_republished(nats_server, capsys):
    url = nats_server.url
    asyncio.run(populate(url))
    assert (
        invoke("dlq", "replay", "--to", REPLAY_TARGET, "--seq", "2-3", "--yes", "--delete", "--nats-url", url)
        == 0
    )
    assert "dead letter deleted" in capsys.readouterr().out
    state = asyncio.run(stream_state_at(url, "AI_DLQ"))
    assert (state["messages"], state["first_seq"], state["last_seq"], state["num_deleted"]) == (2, 1, 4, 2)
    assert asyncio.run(stored_message(url, "AI_DLQ", 2))["error"]["err_code"] == 10037  # type: ignore[index]
    assert listed(capsys, url) == [1, 4]
    assert asyncio.run(stream_state_at(url, "COMPANIONS_CHAT"))["messages"] == 3  # 1 original + 2 replays


async def add_small_stream(url: str) -> None:
    nc = await nats.connect(url)
    try:
        await nc.jetstream().add_stream(StreamConfig(name="REVIEW", subjects=["review.>"], max_msg_size=64))
    finally:
        await nc.close()


def test_a_refused_replay_stops_and_deletes_nothing(nats_server, capsys):
    url = nats_server.url
    asyncio.run(populate(url))
    asyncio.run(add_small_stream(url))
    before = asyncio.run(stream_state_at(url, "AI_DLQ"))
    argv = ("dlq", "replay", "--to", "review.dlq", "--all", "--yes", "--delete", "--nats-url", url)
    assert invoke(*argv) == 1
    out = capsys.readouterr().out
    assert "FAILED: stream REVIEW refused it: message size exceeds maximum allowed" in out
    assert "republished 0 of 4 dead letters from AI_DLQ" in out
    assert "stopped at the first failure: 3 not attempted" in out
    assert asyncio.run(stream_state_at(url, "AI_DLQ")) == before
    assert asyncio.run(stream_state_at(url, "REVIEW"))["messages"] == 0


# -- poisoned dead letters -------------------------------------------------------------------------------
# Each run is bounded: a poisoned message must end in a report, never in a traceback or a hang.

POISON_SEQS = {poison.request_id: seq for seq, poison in enumerate(POISONS, start=2)}
LAST_POISONED_SEQ = len(POISONS) + 2  # a good message after the poisoned ones


async def populate_poisoned(url: str) -> None:
    nc = await nats.connect(url)
    try:
        await provision_platform(nc)
        await nc.jetstream().add_stream(StreamConfig(name="REVIEW", subjects=["review.>"]))
        js = nc.jetstream()
        await js.publish("ai.dlq.chat", packed(CHAT))
        for poison in POISONS:
            await js.publish("ai.dlq.chat", poison.payload)
        await js.publish("ai.dlq.chat", packed(CHAT_2))
    finally:
        await nc.close()


@pytest.fixture(scope="module")
def poisoned(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServerProcess]:
    server = NatsServerProcess(store_dir=Path(tmp_path_factory.mktemp("poisoned")) / "store")
    server.start()
    try:
        asyncio.run(populate_poisoned(server.url))
        yield server
    finally:
        server.cleanup()


def innermost(value: object) -> object:
    while isinstance(value, list):
        value = value[0]
    return value


@pytest.mark.timeout(60)
def test_list_reports_poisoned_dead_letters_and_goes_on(poisoned, capsys):
    assert run_cli(["dlq", "list", "--nats-url", poisoned.url]) == 0
    out = capsys.readouterr().out
    rows = table_rows(out)
    assert [int(row[0]) for row in rows] == list(range(1, LAST_POISONED_SEQ + 1))
    for poison in POISONS:
        row = rows[POISON_SEQS[poison.request_id] - 1]
        if poison.note:
            assert (row[4], row[5]) == ("hex", describe_bytes(poison.payload))
        else:
            assert (row[4], row[5]) == ("msgpack", f"request_id={poison.request_id}")
    assert rows[-1][5] == f"request_id={CHAT_2['request_id']} user_id=user-789"
    assert f"{LAST_POISONED_SEQ} shown; AI_DLQ holds {LAST_POISONED_SEQ} messages" in out
    poisoned_seqs = ", ".join(str(seq) for seq in POISON_SEQS.values())
    assert (
        f"not fully decodable, shown with raw bytes and a note: seq {poisoned_seqs} (see dlq show SEQ)" in out
    )


@pytest.mark.timeout(60)
def test_list_json_shows_each_unconvertible_value_raw_with_a_note(poisoned, capsys):
    assert run_cli(["dlq", "list", "--json", "--nats-url", poisoned.url]) == 0
    messages = json.loads(capsys.readouterr().out)["messages"]
    assert [message["seq"] for message in messages] == list(range(1, LAST_POISONED_SEQ + 1))
    assert (messages[0]["undecodable_values"], messages[-1]["undecodable_values"]) == (0, 0)
    for poison in POISONS:
        message = messages[POISON_SEQS[poison.request_id] - 1]
        assert message["undecodable_values"] == 1
        if poison.note:
            assert (message["encoding"], message["encoding_note"]) == ("hex", poison.note)
            assert message["payload"] == poison.payload.hex()
        else:
            assert message["request_id"] == poison.request_id
            shown = innermost(message["payload"]["poison"])
            assert isinstance(shown, str)
            assert shown.startswith(poison.shown)
    assert messages[-1]["payload"] == CHAT_2


@pytest.mark.timeout(120)
def test_show_reports_each_poisoned_dead_letter(poisoned, capsys):
    for poison in POISONS:
        seq = str(POISON_SEQS[poison.request_id])
        assert run_cli(["dlq", "show", seq, "--nats-url", poisoned.url]) == 0
        out = capsys.readouterr().out
        if poison.note:
            assert f"Encoding:  hex ({poison.note})\n" in out
            assert f"  {describe_bytes(poison.payload)[:-1]}" in out  # the hex dump's heading
        else:
            assert "Encoding:  msgpack\n" in out
            assert poison.shown in out
        assert run_cli(["dlq", "show", seq, "--json", "--nats-url", poisoned.url]) == 0
        assert json.loads(capsys.readouterr().out)["seq"] == int(seq)


@pytest.mark.timeout(60)
def test_replay_republishes_poisoned_dead_letters_byte_for_byte(poisoned, capsys):
    url = poisoned.url
    argv = ["dlq", "replay", "--to", "review.poisoned", "--all", "--nats-url", url]
    assert run_cli(argv) == 0
    dry_run = capsys.readouterr().out
    assert dry_run.startswith(f"DRY RUN, nothing published: would republish {LAST_POISONED_SEQ} dead letters")
    assert run_cli([*argv, "--yes"]) == 0
    out = capsys.readouterr().out
    assert f"republished {LAST_POISONED_SEQ} of {LAST_POISONED_SEQ} dead letters from AI_DLQ" in out
    for poison in POISONS:
        stored = asyncio.run(stored_message(url, "REVIEW", POISON_SEQS[poison.request_id]))["message"]
        assert isinstance(stored, dict)
        assert _b64(stored["data"]) == poison.payload
