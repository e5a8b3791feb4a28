"""The platform file and its provisioning: wildcard overlaps, validation errors, and a real server."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client

from exporter.demo.cli import run_provision_command
from exporter.demo.platform import builtin_platform_text, load_platform, parse_platform
from exporter.demo.provisioning import (
    CREATED,
    UNCHANGED,
    UPDATED,
    ProvisioningError,
    apply_platform,
    merged_filter_subjects,
)
from exporter.errors import ConfigError
from exporter.jsapi import JetStreamApi
from exporter.natsserver import NatsServerProcess, free_port
from exporter.subjects import subject_problem, subject_within, subjects_overlap

SPEC_STREAMS = {
    # name: (subjects, retention, max age in seconds, storage, replicas), from the spec's table
    "COMPANIONS_LOGINS": (("ai.chat.user.*.login",), "limits", 7 * 86400, "file", 1),
    "COMPANIONS_CHAT": (
        ("ai.chat.user.*.message", "ai.chat.user.*.greeting.*"),
        "limits",
        30 * 86400,
        "file",
        1,
    ),
    "AI_CHAT_STREAM": (("ai.chat.response.stream.>",), "limits", 300, "memory", 1),
    # The one deviation, narrowed from the spec's `ai.voice.>` (see platform.yaml).
    "AI_VOICE_STREAM": (("ai.voice.user.>",), "limits", 3600, "file", 1),
    "AI_VOICE_RESPONSE_STREAM": (("ai.voice.response.stream.>",), "limits", 300, "memory", 1),
    "AI_PIPELINE": (("ai.pipeline.>",), "limits", 86400, "file", 1),
    # The spec's "Dead Letter Queue" section.
    "AI_DLQ": (("ai.dlq.>",), "limits", 7 * 86400, "file", 1),
}

MINIMAL = """
streams:
  - name: ORDERS
    subjects: ["orders.>"]
"""


# -- subjects --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "second", "overlap"),
    [
        ("ai.voice.>", "ai.voice.response.stream.>", True),  # the spec's own collision
        ("ai.voice.user.>", "ai.voice.response.stream.>", False),  # the shipped resolution
        ("a.b", "a.b", True),
        ("a.b", "a.c", False),
        ("a.*", "a.b", True),
        ("*.b", "a.*", True),  # wildcards on different sides still meet at "a.b"
        ("a.*", "a.>", True),
        ("a.>", "a.b.c.d", True),
        ("a", "a.>", False),  # `>` needs at least one more part
        ("a.>", "a", False),
        ("a.b", "a.b.c", False),  # a literal pattern matches one length only
        ("a.*", "a.*.c", False),
        ("*", ">", True),
        (">", "a.b.c", True),
        ("*.*", "a.>", True),
        ("a.*.c", "a.b.*", True),
        ("a.*.c", "a.b.d", False),
        ("ai.chat.user.*.login", "ai.chat.user.*.greeting.*", False),
        ("ai.chat.user.*.message", "ai.chat.user.*.greeting.*", False),
        ("ai.chat.user.*.message", "ai.chat.response.stream.>", False),
    ],
)
def test_subjects_overlap_follows_nats_wildcards(first: str, second: str, overlap) -> None:
    assert subjects_overlap(first, second) is overlap
    assert subjects_overlap(second, first) is overlap  # symmetric


@pytest.mark.parametrize(
    ("inner", "outer", "within"),
    [
        ("ai.chat.user.*.message", "ai.chat.user.*.message", True),
        ("ai.chat.user.u1.message", "ai.chat.user.*.message", True),
        ("ai.chat.user.*.message", "ai.chat.user.u1.message", False),
        ("a.b.c", "a.>", True),
        ("a.>", "a.>", True),
        ("a.>", "a.*", False),
        ("a", "a.>", False),
        ("a.*", ">", True),
        ("a.b", "a.b.c", False),
    ],
)
def test_subject_within(inner: str, outer: str, within) -> None:
    assert subject_within(inner, outer) is within


@pytest.mark.parametrize(
    ("pattern", "problem"),
    [("", "empty"), ("a..b", "empty part"), ("a.>.b", "last"), ("a.b*", "mixes"), ("a b", "white space")],
)
def test_subject_problem_names_the_defect(pattern: str, problem: str) -> None:
    found = subject_problem(pattern)
    assert found is not None
    assert problem in found


def test_subject_problem_accepts_valid_patterns() -> None:
    assert [subject_problem(s) for s in ("a", "a.*.c", "a.>", ">", "ai.chat.user-1.x")] == [None] * 5


# -- the platform file --------------------------------------------------------------------------------


def test_built_in_platform_is_the_spec() -> None:
    platform = load_platform()
    assert {
        s.name: (s.subjects, s.retention, s.max_age_seconds, s.storage, s.replicas) for s in platform.streams
    } == (SPEC_STREAMS)
    # Six streams in the spec's table plus AI_DLQ: the "seven streams" of the issue.
    assert len(platform.streams) == 7
    [consumer] = platform.consumers
    assert (consumer.stream, consumer.name, consumer.filter_subjects) == (
        "COMPANIONS_CHAT",
        "chat-handler",
        ("ai.chat.user.*.message",),
    )
    assert (
        consumer.ack_policy,
        consumer.ack_wait_seconds,
        consumer.max_deliver,
        consumer.deliver_policy,
    ) == (
        "explicit",
        30.0,
        3,
        "new",
    )


def test_the_spec_table_as_written_is_refused_naming_both_streams_and_subjects() -> None:
    text = builtin_platform_text().replace('["ai.voice.user.>"]', '["ai.voice.>"]')
    with pytest.raises(ConfigError) as caught:
        parse_platform(text, source="spec.yaml")
    message = str(caught.value)
    assert message.startswith("spec.yaml: streams: subjects overlap")
    assert "stream AI_VOICE_STREAM subject 'ai.voice.>'" in message
    assert "stream AI_VOICE_RESPONSE_STREAM subject 'ai.voice.response.stream.>'" in message
    assert "10065" in message


@pytest.mark.parametrize(
    ("text", "where", "what"),
    [
        (
            "streams: [{name: A, subjects: [a], max_agee: 1h}]",
            "streams[0].max_agee",
            "did you mean 'max_age'",
        ),
        (
            "streams: [{name: A, subjects: [a], max_age: 1 hour}]",
            "streams[0].max_age",
            "invalid duration '1 hour'",
        ),
        ("streams: [{name: A, subjects: [a], max_age: -1h}]", "streams[0].max_age", "must not be negative"),
        ("streams: [{name: A, subjects: [a], max_age: 3600}]", "streams[0].max_age", "expected a duration"),
        (
            "streams: [{name: A, subjects: [a], retention: limit}]",
            "streams[0].retention",
            "did you mean 'limits'",
        ),
        (
            "streams: [{name: A, subjects: [a], storage: disk}]",
            "streams[0].storage",
            "not one of file, memory",
        ),
        ("streams: [{name: A, subjects: [a], replicas: 0}]", "streams[0].replicas", "from 1 to 5"),
        ("streams: [{name: A}]", "streams[0].subjects", "is required"),
        ("streams: [{name: A.B, subjects: [a]}]", "streams[0].name", "not a valid name"),
        ("streams: [{name: A, subjects: ['a.>.b']}]", "streams[0].subjects[0]", "only allowed as the last"),
        ("streams: [{name: A, subjects: [a, a]}]", "streams[0].subjects", "twice"),
        ("streams: [{name: A, subjects: [a]}, {name: A, subjects: [b]}]", "streams[1].name", "defined twice"),
        ("streams: []", "streams", "must not be empty"),
        ("stream: []", "stream", "did you mean 'streams'"),
        (
            "streams: [{name: A, subjects: [a.>]}]\nconsumers: [{stream: B, name: c}]",
            "consumers[0].stream",
            "not in this file",
        ),
        (
            "streams: [{name: A, subjects: [a.>]}]\nconsumers: [{stream: A, name: c, filter_subjects: [b]}]",
            "consumers[0].filter_subjects",
            "not within the subjects of stream A",
        ),
        (
            "streams: [{name: A, subjects: [a.>]}]\nconsumers: [{stream: A, name: c, durable_name: d}]",
            "consumers[0].durable_name",
            "must equal name",
        ),
        (
            "streams: [{name: A, subjects: [a.>]}]\nconsumers: [{stream: A, name: c, max_deliver: 0}]",
            "consumers[0].max_deliver",
            "at least 1",
        ),
        (
            "streams: [{name: A, subjects: [a.>]}]\nconsumers: [{stream: A, name: c, ack_policy: explicit_}]",
            "consumers[0].ack_policy",
            "did you mean 'explicit'",
        ),
    ],
)
def test_platform_errors_name_file_key_and_problem(text: str, where: str, what: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_platform(text, source="my-platform.yaml")
    assert caught.value.source == "my-platform.yaml"
    assert caught.value.key == where
    assert what in caught.value.message


def test_yaml_syntax_error_gives_the_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("streams:\n  - name: A\n    subjects: [a\n", encoding="utf-8")
    with pytest.raises(
        ConfigError, match=r"broken\.yaml: not valid YAML: while parsing .* at line 3, column 15"
    ):
        load_platform(path)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"missing\.yaml: cannot read the platform file: No such file"):
        load_platform(tmp_path / "missing.yaml")


# -- against a real server -------------------------------------------------------------------------------


def api_of(nc: Client) -> JetStreamApi:
    return JetStreamApi(nc, domain=None, timeout_seconds=5.0)


async def stream_config(nc: Client, name: str) -> dict[str, Any]:
    config: dict[str, Any] = (await api_of(nc).request_json(f"STREAM.INFO.{name}"))["config"]
    return config


async def consumer_config(nc: Client, stream: str, name: str) -> dict[str, Any]:
    config: dict[str, Any] = (await api_of(nc).request_json(f"CONSUMER.INFO.{stream}.{name}"))["config"]
    return config


async def test_provisioning_applies_the_spec_and_is_idempotent(nc: Client) -> None:
    platform = load_platform()
    first = await apply_platform(api_of(nc), platform)
    assert [(o.kind, o.name, o.action) for o in first.outcomes] == [
        *(("stream", name, CREATED) for name in SPEC_STREAMS),
        ("consumer", "COMPANIONS_CHAT/chat-handler", CREATED),
    ]
    for name, (subjects, retention, max_age, storage, replicas) in SPEC_STREAMS.items():
        config = await stream_config(nc, name)
        assert tuple(config["subjects"]) == subjects, name
        assert (config["retention"], config["max_age"], config["storage"], config["num_replicas"]) == (
            retention,
            max_age * 1_000_000_000,
            storage,
            replicas,
        ), name
    consumer = await consumer_config(nc, "COMPANIONS_CHAT", "chat-handler")
    assert consumer["durable_name"] == "chat-handler"
    assert consumer["sample_freq"] == "100%"  # the platform file samples every acknowledgement
    assert "deliver_subject" not in consumer  # a pull consumer
    assert merged_filter_subjects(consumer) == ("ai.chat.user.*.message",)
    assert (
        consumer["ack_policy"],
        consumer["ack_wait"],
        consumer["max_deliver"],
        consumer["deliver_policy"],
    ) == (
        "explicit",
        30_000_000_000,
        3,
        "new",
    )

    second = await apply_platform(api_of(nc), platform)
    assert {o.action for o in second.outcomes} == {UNCHANGED}
    assert len(second.outcomes) == 8
    assert "0 created, 0 updated, 8 unchanged; nothing deleted." in second.render()


async def test_update_changes_only_what_differs_and_keeps_the_rest(nc: Client) -> None:
    await apply_platform(api_of(nc), load_platform())
    # An operator's own setting, which the file does not mention: an update must keep it.
    logins = await stream_config(nc, "COMPANIONS_LOGINS")
    await api_of(nc).request_json("STREAM.UPDATE.COMPANIONS_LOGINS", {**logins, "max_msgs": 12345})
    await nc.publish("ai.chat.user.u1.login", b"x")
    await nc.flush()
    # Someone else's stream on the same server: never touched, never deleted.
    await api_of(nc).request_json("STREAM.CREATE.OTHER", {"name": "OTHER", "subjects": ["other.>"]})

    platform = load_platform()
    changed = replace(
        platform,
        streams=tuple(
            replace(s, max_age_seconds=14 * 86400) if s.name == "COMPANIONS_LOGINS" else s
            for s in platform.streams
        ),
        consumers=(
            replace(
                platform.consumers[0],
                max_deliver=5,
                filter_subjects=("ai.chat.user.*.message", "ai.chat.user.*.greeting.*"),
            ),
        ),
    )
    report = await apply_platform(api_of(nc), changed)
    outcomes = {o.name: o for o in report.outcomes}
    assert outcomes["COMPANIONS_LOGINS"].action == UPDATED
    assert outcomes["COMPANIONS_LOGINS"].differences == ("max_age 7d -> 14d",)
    assert outcomes["COMPANIONS_CHAT/chat-handler"].action == UPDATED
    assert set(outcomes["COMPANIONS_CHAT/chat-handler"].differences) == {
        "max_deliver 3 -> 5",
        "filter_subjects ai.chat.user.*.message -> ai.chat.user.*.greeting.*, ai.chat.user.*.message",
    }
    assert {
        o.action
        for name, o in outcomes.items()
        if name not in {"COMPANIONS_LOGINS", "COMPANIONS_CHAT/chat-handler"}
    } == {UNCHANGED}
    assert report.untouched_streams == ("OTHER",)

    logins = await stream_config(nc, "COMPANIONS_LOGINS")
    assert (logins["max_age"], logins["max_msgs"]) == (14 * 86400 * 1_000_000_000, 12345)
    info = await api_of(nc).request_json("STREAM.INFO.COMPANIONS_LOGINS")
    assert info["state"]["messages"] == 1  # an update never purges
    consumer = await consumer_config(nc, "COMPANIONS_CHAT", "chat-handler")
    assert consumer["max_deliver"] == 5
    assert merged_filter_subjects(consumer) == ("ai.chat.user.*.greeting.*", "ai.chat.user.*.message")
    assert (await api_of(nc).request_json("STREAM.INFO.OTHER"))["config"]["subjects"] == ["other.>"]


async def test_overlap_with_a_stream_already_on_the_server_is_refused_before_any_change(nc: Client) -> None:
    await api_of(nc).request_json(
        "STREAM.CREATE.LEGACY_VOICE", {"name": "LEGACY_VOICE", "subjects": ["ai.voice.>"]}
    )
    with pytest.raises(ConfigError) as caught:
        await apply_platform(api_of(nc), load_platform())
    message = str(caught.value)
    assert "nothing was applied" in message
    assert (
        "stream AI_VOICE_STREAM subject 'ai.voice.user.>' overlaps stream LEGACY_VOICE subject 'ai.voice.>'"
        in message
    )
    assert (
        "stream AI_VOICE_RESPONSE_STREAM subject 'ai.voice.response.stream.>' overlaps stream LEGACY_VOICE"
        in message
    )
    names = await api_of(nc).request_json("STREAM.NAMES")
    assert names["streams"] == ["LEGACY_VOICE"]


async def test_a_refused_change_names_the_stream_and_keeps_the_partial_report(nc: Client) -> None:
    await apply_platform(api_of(nc), load_platform())
    # The server cannot change a stream's storage type in place.
    text = (
        MINIMAL
        + "  - name: AI_PIPELINE\n    subjects: ['ai.pipeline.>']\n    max_age: 24h\n    storage: memory\n"
    )
    with pytest.raises(ProvisioningError) as caught:
        await apply_platform(api_of(nc), parse_platform(text, source="x.yaml"))
    assert str(caught.value).startswith("stream AI_PIPELINE: the server refused it:")
    assert "(error 10052)" in str(caught.value)
    assert [(o.name, o.action) for o in caught.value.report.outcomes] == [("ORDERS", CREATED)]


def test_provision_subcommand_prints_the_report(
    nats_server: NatsServerProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "orders.yaml"
    path.write_text(MINIMAL, encoding="utf-8")
    args = argparse.Namespace(nats_url=[nats_server.url], platform_file=path)
    assert run_provision_command(args) == 0
    assert run_provision_command(args) == 0
    out = capsys.readouterr().out
    assert f"Provisioned {path}:" in out
    assert "stream   ORDERS  created" in out
    assert "stream   ORDERS  unchanged" in out


def test_provision_subcommand_reports_an_unreachable_server(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"nats://127.0.0.1:{free_port()}"
    args = argparse.Namespace(nats_url=[url], platform_file=None)
    assert run_provision_command(args) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"provision: cannot connect to NATS at {url}: ")
    assert err.count("\n") == 1  # one line, no traceback


def test_provision_subcommand_reports_a_request_without_reply_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The user may read the streams but not create one: the server drops the create request unanswered.
    readers_only = (
        'authorization { users: [{user: "reader", password: "reader-pw", permissions: {\n'
        '  publish: ["$JS.API.INFO", "$JS.API.STREAM.LIST", "$JS.API.STREAM.INFO.>"],\n'
        '  subscribe: ["_INBOX.>"]}}] }\n'
    )
    path = tmp_path / "orders.yaml"
    path.write_text(MINIMAL, encoding="utf-8")
    monkeypatch.setenv("NATS_EXPORTER_NATS_USER", "reader")
    monkeypatch.setenv("NATS_EXPORTER_NATS_PASSWORD", "reader-pw")
    monkeypatch.setattr("exporter.demo.cli.API_TIMEOUT_SECONDS", 0.5)
    with NatsServerProcess(store_dir=tmp_path / "store", extra_config=readers_only) as server:
        args = argparse.Namespace(nats_url=[server.url], platform_file=path)
        assert run_provision_command(args) == 1
    captured = capsys.readouterr()
    assert captured.err == (
        "provision: stream ORDERS: $JS.API.STREAM.CREATE.ORDERS: no reply within 0.5s "
        "(may the exporter's user publish to this subject?)\n"
    )
    assert "reader-pw" not in captured.out + captured.err
