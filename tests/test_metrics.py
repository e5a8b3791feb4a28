"""The metric table and its renderer: golden expositions, promtool, the contract, and equivalence with
prometheus_client's own rendering.

Regenerate the golden files after an intended change with ``UPDATE_GOLDEN=1 pytest tests/test_metrics.py``.
"""

from __future__ import annotations

import ast
import dataclasses
import math
import os
import re
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_latest_openmetrics
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families as parse_text
from prometheus_client.utils import floatToGoString
from support.scraping import samples_of

import exporter
from exporter import __version__
from exporter.histogram import Histogram
from exporter.intake import ACK_DELIVERIES_BUCKETS
from exporter.metrics import (
    FAMILIES,
    BuildInfo,
    Renderer,
    Rendering,
    SnapshotCollector,
    current_build_info,
    escape_help,
    format_value,
    render_exposition,
)
from exporter.probe import PROBE_LATENCY_BUCKETS
from exporter.settings import DEFAULT_ACK_LATENCY_BUCKETS
from exporter.settingstable import SETTINGS
from exporter.snapshot import (
    AccountState,
    AckHistograms,
    AdvisoryCounts,
    ConsumerState,
    DeadLetterState,
    EphemeralConsumers,
    ExporterHealth,
    MetaClusterState,
    MetaPeer,
    ProbeHealth,
    ReplicaState,
    ServerInfo,
    ServerJetStreamState,
    Snapshot,
    SourceState,
    StreamEventCounts,
    StreamState,
    Threshold,
)

GOLDEN_DIR = Path(__file__).parent / "golden"
BUILD = BuildInfo(version="0.1.0", python_version="3.11.7", nats_py_version="2.16.0")
T0 = 1_760_000_000.0  # a fixed "now" for the hand-built snapshot

# The metric contract (the names, types and labels users rely on), and the families beyond it: name -> (type,
# labels).
CONTRACT: dict[str, tuple[str, tuple[str, ...]]] = {
    "nats_up": ("gauge", ()),
    "nats_exporter_collection_duration_seconds": ("gauge", ()),
    "nats_exporter_collection_errors_total": ("counter", ("stage",)),
    "nats_exporter_stage_duration_seconds": ("gauge", ("stage",)),
    "nats_exporter_last_success_timestamp_seconds": ("gauge", ()),
    "nats_exporter_build_info": ("gauge", ("version", "python_version", "nats_py_version")),
    "nats_server_info": ("gauge", ("server_name", "version", "cluster", "domain")),
    **{
        f"nats_account_jetstream_{name}": ("gauge", ("account",))
        for name in ("memory_bytes", "storage_bytes", "max_memory_bytes", "max_storage_bytes")
    },
    "nats_account_jetstream_streams": ("gauge", ("account",)),
    "nats_account_jetstream_consumers": ("gauge", ("account",)),
    "nats_account_jetstream_api_requests_total": ("counter", ("account",)),
    "nats_account_jetstream_api_errors_total": ("counter", ("account",)),
    **{
        f"nats_server_jetstream_{name}": ("gauge", ("server",))
        for name in (
            "storage_bytes",
            "memory_bytes",
            "max_storage_bytes",
            "max_memory_bytes",
            "reserved_storage_bytes",
            "reserved_memory_bytes",
            "streams",
            "consumers",
        )
    },
    "nats_server_jetstream_api_requests_total": ("counter", ("server",)),
    "nats_server_jetstream_api_errors_total": ("counter", ("server",)),
    "nats_jetstream_meta_cluster_info": ("gauge", ("cluster", "leader")),
    "nats_jetstream_meta_cluster_size": ("gauge", ()),
    "nats_jetstream_meta_replica_current": ("gauge", ("server",)),
    "nats_jetstream_meta_replica_lag_operations": ("gauge", ("server",)),
    "nats_exporter_servers_responded": ("gauge", ()),
    "nats_exporter_servers_expected": ("gauge", ()),
    "nats_stream_messages_total": ("counter", ("account", "stream")),
    **{
        f"nats_stream_{name}": ("gauge", ("account", "stream"))
        for name in (
            "stored_messages",
            "stored_bytes",
            "first_sequence",
            "first_message_timestamp_seconds",
            "last_message_timestamp_seconds",
            "subjects",
            "deleted_messages",
            "consumers",
            "max_messages",
            "max_bytes",
            "max_age_seconds",
            "max_messages_per_subject",
        )
    },
    "nats_stream_info": ("gauge", ("account", "stream", "storage", "retention", "replicas", "leader")),
    **{
        f"nats_consumer_{name}": ("gauge", ("account", "stream", "consumer"))
        for name in (
            "pending_messages",
            "ack_pending",
            "redelivered_messages",
            "waiting_requests",
            "delivered_stream_sequence",
            "ack_floor_stream_sequence",
            "last_delivery_timestamp_seconds",
            "last_ack_timestamp_seconds",
            "max_deliver",
            "max_ack_pending",
            "ack_wait_seconds",
            "paused",
            "lag_seconds",
        )
    },
    **{
        f"nats_consumer_{name}": ("counter", ("account", "stream", "consumer"))
        for name in (
            "deliveries_total",
            "max_deliveries_exceeded_total",
            "terminated_messages_total",
            "naks_total",
        )
    },
    "nats_consumer_info": (
        "gauge",
        (
            "account",
            "stream",
            "consumer",
            "durable",
            "pull",
            "ack_policy",
            "deliver_policy",
            "filter_subjects",
            "leader",
        ),
    ),
    "nats_dlq_messages": ("gauge", ("account", "stream", "subject")),
    "nats_dlq_oldest_message_timestamp_seconds": ("gauge", ("account", "stream")),
    "nats_stream_threshold": ("gauge", ("account", "stream", "check", "severity")),
    "nats_consumer_threshold": ("gauge", ("account", "stream", "consumer", "check", "severity")),
    # beyond the original contract
    "nats_dlq_stream_present": ("gauge", ("account", "stream")),
    # beyond the original contract: ephemeral consumers per stream (filters.consumers.ephemeral: aggregate)
    **{
        f"nats_stream_ephemeral_{name}": ("gauge", ("account", "stream"))
        for name in (
            "consumers",
            "consumers_pending_messages",
            "consumers_ack_pending",
            "consumers_lag_seconds",
        )
    },
    "nats_exporter_lag_lookups_skipped": ("gauge", ()),
    "nats_exporter_malformed_advisories_total": ("counter", ()),
    "nats_exporter_collection_interval_seconds": ("gauge", ()),
    # clustered JetStream
    "nats_stream_replicas": ("gauge", ("account", "stream")),
    "nats_stream_replicas_current": ("gauge", ("account", "stream")),
    "nats_stream_replica_current": ("gauge", ("account", "stream", "server")),
    "nats_stream_replica_lag_operations": ("gauge", ("account", "stream", "server")),
    "nats_consumer_replicas": ("gauge", ("account", "stream", "consumer")),
    "nats_consumer_replicas_current": ("gauge", ("account", "stream", "consumer")),
    "nats_stream_source_lag_messages": ("gauge", ("account", "stream", "source")),
    "nats_stream_source_last_active_timestamp_seconds": ("gauge", ("account", "stream", "source")),
    "nats_stream_source_info": (
        "gauge",
        ("account", "stream", "source", "kind", "filter_subject", "external_api"),
    ),
    # elections, quorum and processing time (clustered JetStream, health signals)
    "nats_stream_leader_elections_total": ("counter", ("account", "stream")),
    "nats_stream_quorum_lost_total": ("counter", ("account", "stream")),
    "nats_consumer_leader_elections_total": ("counter", ("account", "stream", "consumer")),
    "nats_consumer_quorum_lost_total": ("counter", ("account", "stream", "consumer")),
    "nats_consumer_ack_latency_seconds": ("histogram", ("account", "stream", "consumer")),
    "nats_consumer_ack_deliveries": ("histogram", ("account", "stream", "consumer")),
    "nats_exporter_dropped_advisories_total": ("counter", ()),
    # the end-to-end probe (METRICS.md: health signals)
    "nats_probe_up": ("gauge", ()),
    "nats_probe_publish_ack_seconds": ("histogram", ()),
    "nats_probe_round_trip_seconds": ("histogram", ()),
    "nats_probe_failures_total": ("counter", ("stage",)),
}
HEALTH_FAMILIES = {
    "nats_exporter_build_info",
    "nats_up",
    "nats_exporter_collection_duration_seconds",
    "nats_exporter_last_success_timestamp_seconds",
    "nats_exporter_collection_interval_seconds",
    "nats_exporter_collection_errors_total",
    "nats_exporter_stage_duration_seconds",
    "nats_exporter_malformed_advisories_total",
    "nats_exporter_dropped_advisories_total",
    "nats_exporter_servers_expected",
    "nats_probe_up",
    "nats_probe_publish_ack_seconds",
    "nats_probe_round_trip_seconds",
    "nats_probe_failures_total",
}


def stream(name: str, **changes: object) -> StreamState:
    base = StreamState(
        account="$G",
        name=name,
        subjects=(f"{name.lower()}.>",),
        storage="file",
        retention="limits",
        replicas=1,
        allow_direct=True,
        max_messages=None,
        max_bytes=None,
        max_age_seconds=None,
        max_messages_per_subject=None,
        messages=0,
        bytes=0,
        first_seq=0,
        first_ts=None,
        last_seq=0,
        last_ts=None,
        num_subjects=0,
        num_deleted=0,
        consumer_count=0,
        leader="nats-a",
        metadata_labels=("", ""),  # the golden snapshot's labels.from_metadata: team, owner
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def consumer(stream_name: str, name: str, **changes: object) -> ConsumerState:
    base = ConsumerState(
        account="$G",
        stream=stream_name,
        name=name,
        durable=True,
        pull=True,
        ack_policy="explicit",
        deliver_policy="all",
        filter_subjects=(),
        max_deliver=None,
        max_ack_pending=None,
        ack_wait_seconds=30.0,
        num_pending=0,
        num_ack_pending=0,
        num_redelivered=0,
        num_waiting=0,
        delivered_consumer_seq=0,
        delivered_stream_seq=0,
        delivered_last_active=None,
        ack_floor_consumer_seq=0,
        ack_floor_stream_seq=0,
        ack_floor_last_active=None,
        leader="nats-a",
        metadata_labels=("", ""),
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def golden_snapshot() -> Snapshot:
    """The spec's platform in a typical moment; entities deliberately out of order to test sorting."""
    chat = stream(
        "COMPANIONS_CHAT",
        subjects=("ai.chat.user.*.message", "ai.chat.user.*.greeting.*"),
        max_messages=1_000_000,
        max_bytes=1 << 30,
        max_age_seconds=30 * 86400.0,
        max_messages_per_subject=500,
        messages=40,
        bytes=12_345,
        first_seq=3,
        first_ts=T0 - 3600.25,
        last_seq=42,
        last_ts=T0 - 1.5,
        num_subjects=7,
        num_deleted=2,
        consumer_count=2,
        replicas=3,
        peers=(
            ReplicaState("nats-a", current=True),
            ReplicaState("nats-b", current=True),
            ReplicaState("nats-c", current=False, lag_operations=17),
        ),
        thresholds=(Threshold("msgs", "critical", 1), Threshold("subjects_max", "warning", 500)),
        metadata_labels=("companions", ""),
    )
    pipeline = stream(
        "AI_PIPELINE",
        messages=1_500_000,
        bytes=3_000_000_000,
        first_seq=1,
        first_ts=T0 - 86000.0,
        last_seq=1_500_000,
        last_ts=T0 - 0.125,
        num_subjects=3,
        consumer_count=1,
        sources=(
            SourceState("source", "AI_CHAT_STREAM", "ai.chat.>", "", lag_messages=12, active_seconds=1.5),
            SourceState("source", "EDGE_PIPELINE", "", "$JS.edge.API", lag_messages=0, active_seconds=None),
        ),
    )
    empty = stream("AI_CHAT_STREAM", storage="memory", max_age_seconds=300.0, first_seq=1, leader="nats-b")
    dlq = stream(
        "AI_DLQ",
        subjects=("ai.dlq.>",),
        max_age_seconds=7 * 86400.0,
        messages=3,
        bytes=900,
        first_seq=1,
        first_ts=T0 - 600.0,
        last_seq=3,
        last_ts=T0 - 60.0,
        num_subjects=2,
    )
    chat_handler = consumer(
        "COMPANIONS_CHAT",
        "chat-handler",
        deliver_policy="new",
        filter_subjects=("ai.chat.user.*.message",),
        max_deliver=3,
        max_ack_pending=1000,
        num_pending=5,
        num_ack_pending=2,
        num_redelivered=1,
        num_waiting=1,
        delivered_consumer_seq=45,
        delivered_stream_seq=40,
        delivered_last_active=T0 - 2.0,
        ack_floor_consumer_seq=43,
        ack_floor_stream_seq=38,
        ack_floor_last_active=T0 - 3.0,
        lag_seconds=42.5,
        replicas=3,
        replicas_current=2,
        thresholds=(Threshold("outstanding_ack", "critical", 500), Threshold("last_ack", "critical", 300)),
        metadata_labels=("companions", "chat-team"),
    )
    idle = consumer(
        "AI_PIPELINE",
        "pipeline-worker",
        filter_subjects=("ai.pipeline.a.>", "ai.pipeline.b.>"),
        num_pending=1_500_000,
        lag_seconds=0.0,
    )
    paused = consumer(
        "COMPANIONS_CHAT",
        "audit",
        durable=False,
        pull=False,
        ack_policy="none",
        max_deliver=5,
        num_pending=40,
        paused=True,
        leader="nats-b",
    )
    return Snapshot(
        collected_at=T0,
        servers=(ServerInfo(server_name="nats-a", version="2.15.1", cluster="", domain="hub"),),
        accounts=(
            AccountState(
                account="$G",
                memory_bytes=0,
                storage_bytes=3_000_013_245,
                max_memory_bytes=None,
                max_storage_bytes=10 << 30,
                streams=4,
                consumers=3,
                api_requests=1234,
                api_errors=2,
            ),
        ),
        streams=(chat, pipeline, empty, dlq),
        consumers=(chat_handler, idle, paused),
        dead_letters=(
            DeadLetterState(account="$G", stream="DLQ_ARCHIVE", exists=False),
            DeadLetterState(
                account="$G",
                stream="AI_DLQ",
                exists=True,
                subject_counts=(("ai.dlq.chat", 2), ("ai.dlq.voice", 1)),
                first_ts=T0 - 600.0,
            ),
        ),
        lag_lookups_skipped=1,
        jetstream_servers=(
            ServerJetStreamState(
                server="nats-a",
                memory_bytes=1024,
                storage_bytes=3_000_013_245,
                reserved_memory_bytes=0,
                reserved_storage_bytes=10 << 30,
                max_memory_bytes=256 << 20,
                max_storage_bytes=64 << 30,
                streams=4,
                consumers=3,
                api_requests=5678,
                api_errors=3,
            ),
        ),
        meta_cluster=MetaClusterState(
            cluster="c",
            leader="nats-a",
            size=3,
            peers=(
                MetaPeer(server="nats-a", current=True, lag_operations=0),
                MetaPeer(server="nats-b", current=True, lag_operations=0),
                MetaPeer(server="nats-c", current=False, lag_operations=12),
            ),
        ),
        servers_responded=1,
        metadata_label_keys=("team", "owner"),
        ephemeral_consumers=(
            EphemeralConsumers("$G", "COMPANIONS_CHAT", 3, 12, 2, 4.5),
            EphemeralConsumers("$G", "AI_DLQ", 0, 0, 0, 0.0),
        ),
    )


WEIRD = 'we"ird\\name\nwith ünïcode'


def ack_histograms(latencies: list[float], deliveries: list[int]) -> AckHistograms:
    latency, tries = Histogram(DEFAULT_ACK_LATENCY_BUCKETS), Histogram(ACK_DELIVERIES_BUCKETS)
    for seconds in latencies:
        latency.observe(seconds)
    for count in deliveries:
        tries.observe(count)
    return AckHistograms(latency.data(), tries.data())


def golden_health() -> ExporterHealth:
    return ExporterHealth(
        up=True,
        collection_duration_seconds=0.4375,
        last_success_timestamp=T0,
        collection_errors={"lag": 1, "consumers": 2},
        advisory_counts={
            ("$G", "COMPANIONS_CHAT", "chat-handler"): AdvisoryCounts(
                max_deliveries_exceeded=1, terminated=1, naks=3
            ),
            ("$G", "GONE", "deleted-consumer"): AdvisoryCounts(naks=9),
        },
        malformed_advisories=1,
        collection_interval_seconds=15.0,
        stream_event_counts={
            ("$G", "COMPANIONS_CHAT"): StreamEventCounts(leader_elections=2, quorum_lost=1),
            ("$G", "GONE"): StreamEventCounts(leader_elections=4),
        },
        ack_histograms={
            # 5 ms exactly lands in the first bucket (le is "less than or equal").
            ("$G", "COMPANIONS_CHAT", "chat-handler"): ack_histograms(
                [0.005, 0.042, 0.3, 1.7, 400.0], [1, 1, 2, 3, 1]
            ),
            ("$G", WEIRD, 'c\\"\n'): ack_histograms([1e-9, 1e22], [1, 1000]),
            ("$G", "GONE", "deleted-consumer"): ack_histograms([1.0], [1]),
        },
        dropped_advisories=7,
        stage_durations={"account": 0.0625, "streams": 0.125, "consumers": 0.25, "dlq": 0.0, "lag": 0.1875},
        servers_expected=3,
        probe=probe_health(),
    )


def probe_health() -> ProbeHealth:
    publish_ack, round_trip = Histogram(PROBE_LATENCY_BUCKETS), Histogram(PROBE_LATENCY_BUCKETS)
    for seconds in (0.0008, 0.002, 0.3):
        publish_ack.observe(seconds)
        round_trip.observe(seconds * 2)
    return ProbeHealth(
        up=False,
        publish_ack_seconds=publish_ack.data(),
        round_trip_seconds=round_trip.data(),
        failures={"connect": 0, "setup": 0, "publish": 2, "receive": 1},
    )


def render(snapshot: Snapshot | None, health: ExporterHealth, *, openmetrics: bool = False) -> str:
    return render_exposition(snapshot, health, openmetrics=openmetrics, build=BUILD).decode()


def sample_names(text: str) -> set[str]:
    return {name for name, _ in samples_of(text)}


def value(series: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return series[name, frozenset(labels.items())]


# --- golden files and promtool -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("filename", "openmetrics"), [("exposition.txt", False), ("exposition.om.txt", True)]
)
def test_golden_exposition(filename: str, openmetrics: bool) -> None:  # noqa: FBT001 (parametrized)
    rendered = render(golden_snapshot(), golden_health(), openmetrics=openmetrics)
    golden = GOLDEN_DIR / filename
    if os.environ.get("UPDATE_GOLDEN") == "1":
        GOLDEN_DIR.mkdir(exist_ok=True)
        golden.write_text(rendered)
    assert rendered == golden.read_text(), f"{golden} is out of date: rerun with UPDATE_GOLDEN=1 and review"


def promtool_findings(promtool: str, exposition: bytes) -> tuple[int, str]:
    result = subprocess.run(  # noqa: PLW1510 (the return code is part of what the tests assert)
        [promtool, "check", "metrics"], input=exposition, capture_output=True, timeout=30
    )
    return result.returncode, (result.stdout + result.stderr).decode()


def test_promtool_reports_no_finding_on_the_text_format(promtool: str) -> None:
    assert promtool_findings(promtool, (GOLDEN_DIR / "exposition.txt").read_bytes()) == (0, "")


def test_promtool_reports_only_its_openmetrics_misreading(promtool: str) -> None:
    # promtool's linter parses only the classic text format. In OpenMetrics a counter's HELP and TYPE name
    # the family without _total (the spec requires it), so promtool sees the _total series as a metric
    # without HELP. That, for each counter, must be the only finding: every other lint rule holds.
    counters = {family.name for family in FAMILIES if family.type == "counter"}
    expected = "".join(f"{name} no help text\n" for name in sorted(counters))
    assert promtool_findings(promtool, (GOLDEN_DIR / "exposition.om.txt").read_bytes()) == (3, expected)


# --- the contract --------------------------------------------------------------------------------------


def test_every_contract_family_exists_with_its_type_and_labels() -> None:
    table = {family.name: (family.type, family.labels) for family in FAMILIES}
    assert len(table) == len(FAMILIES), "a family name appears twice in the table"
    assert table == CONTRACT


# Where a family's value may come from: a JetStream API type and its fields, a subject the exporter requests
# or subscribes to, a setting, or the exporter itself.
API_FIELD = re.compile(
    r"\b(?:StreamState|StreamInfo|StreamConfig|JSInfo|ConsumerInfo|ConsumerConfig|AccountInfo)\.([a-z_.\[\]]+)"
)
SETTING = re.compile(r"^setting ([a-z_.]+)$")
SUBJECT = re.compile(r"^\$(?:JS|SYS)\.[A-Z_.>]+ ")
OTHER_ORIGINS = (
    "exporter",
    "collection time - ",
    "server INFO ",
    "time of the first message after ",
    "ConsumerInfo of ",
    "publish to ",  # the probe's clock, from its publish to the answer
)
PARSERS = ("parse.py", "parse_jsz.py", "cluster_source.py", "source.py", "advisories.py", "intake.py")


def parsed_field_names() -> set[str]:
    """Every string literal of the modules that read JetStream replies: the field names they look up."""
    literals: set[str] = set()
    for name in PARSERS:
        tree = ast.parse((Path(exporter.__file__).parent / name).read_text())
        constants = (node for node in ast.walk(tree) if isinstance(node, ast.Constant))
        literals |= {node.value for node in constants if isinstance(node.value, str)}
    return literals


@pytest.mark.parametrize("family", FAMILIES, ids=lambda family: family.name)
def test_source_names_a_field_the_exporter_reads_or_a_known_origin(family) -> None:
    source = family.source
    fields = [match.group(1) for match in API_FIELD.finditer(source)]
    setting = SETTING.match(source)
    named_families = re.findall(r"\bnats_[a-z_]+", source)
    assert fields or setting or SUBJECT.match(source) or named_families or source.startswith(OTHER_ORIGINS), (
        f"{family.name}: {source!r} names no API field, subject, setting or exporter origin"
    )
    read = parsed_field_names()
    for path in fields:
        for part in path.replace("[]", "").strip(".").split("."):
            assert part in read, f"{family.name}: the parsers never read the field {part!r} of {source!r}"
    if setting:
        assert setting.group(1) in {row.key for row in SETTINGS}, f"{family.name}: {source!r} is no setting"
    assert set(named_families) <= {other.name for other in FAMILIES}, f"{family.name}: {source!r}"


def test_help_texts_tell_every_family_apart() -> None:
    meanings = [family.meaning.casefold() for family in FAMILIES]
    repeated = {meaning for meaning in meanings if meanings.count(meaning) > 1}
    assert not repeated, f"families that share a meaning: a reader of HELP cannot tell them apart: {repeated}"


def test_every_family_is_rendered_for_the_golden_snapshot() -> None:
    names = {family.name for family in parse_text(render(golden_snapshot(), golden_health()))}
    # The golden account has no memory limit; everything else has at least one series.
    unlimited = {"nats_account_jetstream_max_memory_bytes"}
    assert {name.removesuffix("_total") for name in CONTRACT} - unlimited == names


def test_volatile_identity_only_on_info_series() -> None:
    text = render(golden_snapshot(), golden_health())
    for name, labels in samples_of(text):
        if not name.endswith("_info"):
            entity_labels = {"account", "stream", "consumer", "subject", "stage", "check", "severity", "le"}
            entity_labels.add("server")  # per-server and per-peer series
            entity_labels.add("source")  # a mirror's or source's origin stream
            assert {label for label, _ in labels} <= entity_labels, name
    elected = golden_snapshot()
    elected = dataclasses.replace(
        elected,
        streams=tuple(dataclasses.replace(s, leader="nats-c") for s in elected.streams),
        consumers=tuple(dataclasses.replace(c, leader="nats-c") for c in elected.consumers),
    )
    before = samples_of(text)
    after = samples_of(render(elected, golden_health()))
    assert {k: v for k, v in before.items() if not k[0].endswith("_info")} == {
        k: v for k, v in after.items() if not k[0].endswith("_info")
    }
    assert (
        value(
            after,
            "nats_stream_info",
            account="$G",
            stream="AI_DLQ",
            storage="file",
            retention="limits",
            replicas="1",
            leader="nats-c",
            metadata_team="",
            metadata_owner="",
        )
        == 1
    )


# --- values --------------------------------------------------------------------------------------------


def test_account_and_health_values_read_back_equal_the_snapshot() -> None:
    snapshot, health = golden_snapshot(), golden_health()
    series = samples_of(render(snapshot, health))
    (account,) = snapshot.accounts
    assert account is not None
    a = {"account": "$G"}
    assert value(series, "nats_account_jetstream_memory_bytes", **a) == account.memory_bytes
    assert value(series, "nats_account_jetstream_storage_bytes", **a) == account.storage_bytes
    assert value(series, "nats_account_jetstream_max_storage_bytes", **a) == account.max_storage_bytes
    assert value(series, "nats_account_jetstream_streams", **a) == account.streams
    assert value(series, "nats_account_jetstream_consumers", **a) == account.consumers
    assert value(series, "nats_account_jetstream_api_requests_total", **a) == account.api_requests
    assert value(series, "nats_account_jetstream_api_errors_total", **a) == account.api_errors
    assert value(series, "nats_up") == 1
    assert value(series, "nats_exporter_collection_duration_seconds") == health.collection_duration_seconds
    assert value(series, "nats_exporter_last_success_timestamp_seconds") == health.last_success_timestamp
    assert value(series, "nats_exporter_collection_interval_seconds") == health.collection_interval_seconds
    assert value(series, "nats_exporter_malformed_advisories_total") == health.malformed_advisories
    assert value(series, "nats_exporter_lag_lookups_skipped") == snapshot.lag_lookups_skipped
    for stage, count in health.collection_errors.items():
        assert value(series, "nats_exporter_collection_errors_total", stage=stage) == count
    assert (
        value(series, "nats_server_info", server_name="nats-a", version="2.15.1", cluster="", domain="hub")
        == 1
    )
    assert value(series, "nats_exporter_build_info", **dataclasses.asdict(BUILD)) == 1


def test_stream_values_read_back_equal_the_snapshot() -> None:
    snapshot = golden_snapshot()
    series = samples_of(render(snapshot, golden_health()))
    for s in snapshot.streams:
        labels = {"account": s.account, "stream": s.name}
        assert value(series, "nats_stream_messages_total", **labels) == s.last_seq
        assert value(series, "nats_stream_stored_messages", **labels) == s.messages
        assert value(series, "nats_stream_stored_bytes", **labels) == s.bytes
        assert value(series, "nats_stream_first_sequence", **labels) == s.first_seq
        assert value(series, "nats_stream_subjects", **labels) == s.num_subjects
        assert value(series, "nats_stream_deleted_messages", **labels) == s.num_deleted
        assert value(series, "nats_stream_consumers", **labels) == s.consumer_count
        for name, field in (
            ("nats_stream_first_message_timestamp_seconds", s.first_ts),
            ("nats_stream_last_message_timestamp_seconds", s.last_ts),
            ("nats_stream_max_messages", s.max_messages),
            ("nats_stream_max_bytes", s.max_bytes),
            ("nats_stream_max_age_seconds", s.max_age_seconds),
            ("nats_stream_max_messages_per_subject", s.max_messages_per_subject),
        ):
            assert series.get((name, frozenset(labels.items()))) == field, name
        info = {
            **labels,
            "storage": s.storage,
            "retention": s.retention,
            "replicas": str(s.replicas),
            "leader": s.leader,
            "metadata_team": s.metadata_labels[0],
            "metadata_owner": s.metadata_labels[1],
        }
        assert value(series, "nats_stream_info", **info) == 1
        for threshold in s.thresholds:
            check = {"check": threshold.check, "severity": threshold.severity}
            assert value(series, "nats_stream_threshold", **labels, **check) == threshold.value


def test_consumer_and_dead_letter_values_read_back_equal_the_snapshot() -> None:
    snapshot, health = golden_snapshot(), golden_health()
    series = samples_of(render(snapshot, health))
    for c in snapshot.consumers:
        labels = {"account": c.account, "stream": c.stream, "consumer": c.name}
        counts = health.advisory_counts.get((c.account, c.stream, c.name), AdvisoryCounts())
        assert value(series, "nats_consumer_pending_messages", **labels) == c.num_pending
        assert value(series, "nats_consumer_ack_pending", **labels) == c.num_ack_pending
        assert value(series, "nats_consumer_redelivered_messages", **labels) == c.num_redelivered
        assert value(series, "nats_consumer_waiting_requests", **labels) == c.num_waiting
        assert value(series, "nats_consumer_deliveries_total", **labels) == c.delivered_consumer_seq
        assert value(series, "nats_consumer_delivered_stream_sequence", **labels) == c.delivered_stream_seq
        assert value(series, "nats_consumer_ack_floor_stream_sequence", **labels) == c.ack_floor_stream_seq
        assert value(series, "nats_consumer_paused", **labels) == (1 if c.paused else 0)
        assert value(series, "nats_consumer_max_deliveries_exceeded_total", **labels) == (
            counts.max_deliveries_exceeded
        )
        assert value(series, "nats_consumer_terminated_messages_total", **labels) == counts.terminated
        assert value(series, "nats_consumer_naks_total", **labels) == counts.naks
        for name, field in (
            ("nats_consumer_last_delivery_timestamp_seconds", c.delivered_last_active),
            ("nats_consumer_last_ack_timestamp_seconds", c.ack_floor_last_active),
            ("nats_consumer_max_deliver", c.max_deliver),
            ("nats_consumer_max_ack_pending", c.max_ack_pending),
            ("nats_consumer_ack_wait_seconds", c.ack_wait_seconds),
            ("nats_consumer_lag_seconds", c.lag_seconds),
        ):
            assert series.get((name, frozenset(labels.items()))) == field, name
        info = {
            **labels,
            "durable": str(c.durable).lower(),
            "pull": str(c.pull).lower(),
            "ack_policy": c.ack_policy,
            "deliver_policy": c.deliver_policy,
            "filter_subjects": ",".join(c.filter_subjects),
            "leader": c.leader,
            "metadata_team": c.metadata_labels[0],
            "metadata_owner": c.metadata_labels[1],
        }
        assert value(series, "nats_consumer_info", **info) == 1
        for threshold in c.thresholds:
            check = {"check": threshold.check, "severity": threshold.severity}
            assert value(series, "nats_consumer_threshold", **labels, **check) == threshold.value
    for d in snapshot.dead_letters:
        labels = {"account": d.account, "stream": d.stream}
        assert value(series, "nats_dlq_stream_present", **labels) == (1 if d.exists else 0)
        assert (
            series.get(("nats_dlq_oldest_message_timestamp_seconds", frozenset(labels.items()))) == d.first_ts
        )
        for subject, count in d.subject_counts:
            assert value(series, "nats_dlq_messages", **labels, subject=subject) == count


def test_unlimited_limits_and_absent_timestamps_are_omitted() -> None:
    text = render(golden_snapshot(), golden_health())
    series = samples_of(text)
    names_for = {
        key: {name for name, labels in series if labels == frozenset(key)}
        for key in (
            (("account", "$G"), ("stream", "AI_PIPELINE")),
            (("account", "$G"), ("stream", "AI_CHAT_STREAM")),
            (("account", "$G"), ("stream", "AI_PIPELINE"), ("consumer", "pipeline-worker")),
            (("account", "$G"), ("stream", "COMPANIONS_CHAT"), ("consumer", "audit")),
            (("account", "$G"), ("stream", "DLQ_ARCHIVE")),
        )
    }
    unlimited_stream = names_for[("account", "$G"), ("stream", "AI_PIPELINE")]
    assert not {name for name in unlimited_stream if name.startswith("nats_stream_max_")}
    assert "nats_stream_stored_messages" in unlimited_stream
    empty_stream = names_for[("account", "$G"), ("stream", "AI_CHAT_STREAM")]
    assert "nats_stream_first_message_timestamp_seconds" not in empty_stream
    assert "nats_stream_last_message_timestamp_seconds" not in empty_stream
    assert "nats_stream_max_age_seconds" in empty_stream
    idle = names_for[("account", "$G"), ("stream", "AI_PIPELINE"), ("consumer", "pipeline-worker")]
    assert not idle & {
        "nats_consumer_last_delivery_timestamp_seconds",
        "nats_consumer_last_ack_timestamp_seconds",
        "nats_consumer_max_deliver",
        "nats_consumer_max_ack_pending",
    }
    assert "nats_consumer_lag_seconds" in idle  # measured: nothing outstanding is 0, not absent
    paused = names_for[("account", "$G"), ("stream", "COMPANIONS_CHAT"), ("consumer", "audit")]
    assert "nats_consumer_lag_seconds" not in paused  # not measured this cycle
    assert {"nats_dlq_stream_present"} == names_for[("account", "$G"), ("stream", "DLQ_ARCHIVE")]
    assert "nats_account_jetstream_max_memory_bytes" not in sample_names(text)
    assert "-1" not in {line.rsplit(" ", 1)[1] for line in text.splitlines() if not line.startswith("#")}


def test_advisory_counters_start_at_zero_for_every_consumer() -> None:
    series = samples_of(
        render(
            golden_snapshot(),
            ExporterHealth(up=True, collection_duration_seconds=1.0, last_success_timestamp=T0),
        )
    )
    for c in golden_snapshot().consumers:
        labels = {"account": c.account, "stream": c.stream, "consumer": c.name}
        for name in ("max_deliveries_exceeded_total", "terminated_messages_total", "naks_total"):
            assert value(series, f"nats_consumer_{name}", **labels) == 0


def test_election_counters_start_at_zero_for_every_stream_and_consumer() -> None:
    series = samples_of(
        render(
            golden_snapshot(),
            ExporterHealth(up=True, collection_duration_seconds=1.0, last_success_timestamp=T0),
        )
    )
    for s in golden_snapshot().streams:
        for name in ("leader_elections_total", "quorum_lost_total"):
            assert value(series, f"nats_stream_{name}", account=s.account, stream=s.name) == 0
    for c in golden_snapshot().consumers:
        labels = {"account": c.account, "stream": c.stream, "consumer": c.name}
        for name in ("leader_elections_total", "quorum_lost_total"):
            assert value(series, f"nats_consumer_{name}", **labels) == 0


def test_event_counters_only_for_accounts_whose_events_are_received() -> None:
    snapshot = golden_snapshot()
    other = replace(snapshot.consumers[0], account="OTHER")
    snapshot = replace(snapshot, consumers=(*snapshot.consumers, other))
    received = {c.account for c in golden_snapshot().consumers}
    health = ExporterHealth(
        up=True,
        collection_duration_seconds=1.0,
        last_success_timestamp=T0,
        event_accounts=frozenset(received),
    )
    series = samples_of(render(snapshot, health))
    families = (
        "nats_consumer_naks_total",
        "nats_consumer_leader_elections_total",
        "nats_stream_quorum_lost_total",
    )
    accounts = {dict(labels)["account"] for name, labels in series if name in families}
    assert accounts == received  # OTHER's consumer is rendered, but none of the event counters
    labels = {"account": "OTHER", "stream": other.stream, "consumer": other.name}
    assert value(series, "nats_consumer_pending_messages", **labels) >= 0


def test_ack_histograms_read_back_only_for_sampled_known_consumers() -> None:
    series = samples_of(render(golden_snapshot(), golden_health()))
    chat = {"account": "$G", "stream": "COMPANIONS_CHAT", "consumer": "chat-handler"}
    latency = "nats_consumer_ack_latency_seconds"
    assert value(series, f"{latency}_bucket", **chat, le="0.005") == 1
    assert value(series, f"{latency}_bucket", **chat, le="0.05") == 2
    assert value(series, f"{latency}_bucket", **chat, le="300.0") == 4
    assert value(series, f"{latency}_bucket", **chat, le="+Inf") == 5
    assert value(series, f"{latency}_count", **chat) == 5
    assert value(series, f"{latency}_sum", **chat) == pytest.approx(402.047)
    deliveries = "nats_consumer_ack_deliveries"
    assert value(series, f"{deliveries}_bucket", **chat, le="1.0") == 3
    assert value(series, f"{deliveries}_bucket", **chat, le="2.0") == 4
    assert value(series, f"{deliveries}_bucket", **chat, le="3.0") == 5
    consumers = {dict(labels)["consumer"] for name, labels in series if name.startswith(latency)}
    assert consumers == {"chat-handler"}  # unsampled consumers have none; deleted ones are gone
    assert value(series, "nats_stream_leader_elections_total", account="$G", stream="COMPANIONS_CHAT") == 2
    assert value(series, "nats_stream_quorum_lost_total", account="$G", stream="COMPANIONS_CHAT") == 1
    assert value(series, "nats_exporter_dropped_advisories_total") == 7


def test_deleted_consumer_and_stream_vanish_from_the_next_render() -> None:
    health = golden_health()
    first = render(golden_snapshot(), health)
    assert 'consumer="audit"' in first
    assert 'stream="AI_PIPELINE"' in first
    snapshot = golden_snapshot()
    later = dataclasses.replace(
        snapshot,
        streams=tuple(s for s in snapshot.streams if s.name != "AI_PIPELINE"),
        consumers=tuple(c for c in snapshot.consumers if c.name != "audit" and c.stream != "AI_PIPELINE"),
    )
    second = render(later, health)
    assert 'consumer="audit"' not in second
    assert 'stream="AI_PIPELINE"' not in second
    assert 'consumer="chat-handler"' in second
    # Advisory counts the exporter still holds for a deleted consumer do not bring it back.
    assert 'consumer="deleted-consumer"' not in second


def test_snapshot_none_renders_only_exporter_health() -> None:
    health = dataclasses.replace(golden_health(), up=False)
    for openmetrics in (False, True):
        text = render(None, health, openmetrics=openmetrics)
        parse = parse_openmetrics if openmetrics else parse_text
        families = {family.name for family in parse(text)}
        assert families == {name.removesuffix("_total") for name in HEALTH_FAMILIES}
    series = samples_of(render(None, health))
    assert value(series, "nats_up") == 0


def test_first_start_renders_up_zero_without_timestamps() -> None:
    health = ExporterHealth(up=False, collection_duration_seconds=None, last_success_timestamp=None)
    assert sample_names(render(None, health)) == {
        "nats_exporter_build_info",
        "nats_up",
        "nats_exporter_collection_interval_seconds",
        "nats_exporter_malformed_advisories_total",
        "nats_exporter_dropped_advisories_total",
    }


def test_default_build_info_names_this_build() -> None:
    series = samples_of(render_exposition(None, golden_health()).decode())
    build = current_build_info()
    assert build.version == __version__
    assert value(series, "nats_exporter_build_info", **dataclasses.asdict(build)) == 1


# --- the direct renderer against prometheus_client -----------------------------------------------------


def odd_snapshot() -> Snapshot:
    """Label values that need escaping and values at the edges of the float formatting."""
    base = golden_snapshot()
    weird = WEIRD
    return dataclasses.replace(
        base,
        servers=(
            ServerInfo(server_name='a "quoted" server', version="2.15.1", cluster="c\\1", domain="d\ne"),
        ),
        streams=(
            *base.streams,
            stream(
                weird,
                max_messages=10**6,
                max_bytes=2**63 - 1,
                max_age_seconds=1e-9,
                messages=999_999,
                bytes=10**15,
                first_seq=10**16,
                first_ts=0.1,
                last_seq=2**53 + 1,
                last_ts=1e22,
                num_subjects=123_456_789_012,
                leader='le"ader',
            ),
        ),
        consumers=(
            *base.consumers,
            consumer(
                weird,
                'c\\"\n',
                filter_subjects=("a.>", 'b."q"'),
                ack_wait_seconds=0.3,
                num_pending=-(10**15) + 1,
                lag_seconds=1234567.891,
            ),
        ),
        dead_letters=(
            *base.dead_letters,
            DeadLetterState(
                account="$G", stream=weird, exists=True, subject_counts=((weird, 10**7),), first_ts=T0
            ),
        ),
    )


def client_rendering(snapshot: Snapshot | None, health: ExporterHealth, *, openmetrics: bool) -> str:
    registry = CollectorRegistry()
    registry.register(SnapshotCollector(snapshot, health, BUILD))
    generate = generate_latest_openmetrics if openmetrics else generate_latest
    return generate(registry).decode()


@pytest.mark.parametrize("openmetrics", [False, True], ids=["text", "openmetrics"])
@pytest.mark.parametrize("snapshot", [golden_snapshot(), odd_snapshot(), None], ids=["golden", "odd", "none"])
def test_renderer_equals_prometheus_client(snapshot: Snapshot | None, openmetrics: bool) -> None:  # noqa: FBT001
    ours = render(snapshot, golden_health(), openmetrics=openmetrics)
    theirs = client_rendering(snapshot, golden_health(), openmetrics=openmetrics)
    parse = parse_openmetrics if openmetrics else parse_text
    assert list(parse(ours)) == list(parse(theirs))
    assert ours == theirs


def joined(rendering: Rendering, *, openmetrics: bool) -> bytes:
    return b"".join(rendering.openmetrics_chunks() if openmetrics else rendering.text_chunks())


@pytest.mark.parametrize("openmetrics", [False, True], ids=["text", "openmetrics"])
def test_a_reused_renderer_equals_a_fresh_one_whatever_changed(openmetrics: bool) -> None:  # noqa: FBT001
    renderer = Renderer(BUILD)
    first = golden_snapshot()
    changed_value = replace(
        first, consumers=(replace(first.consumers[0], num_pending=12345), *first.consumers[1:])
    )
    consumer_deleted = replace(first, consumers=first.consumers[1:])
    for snapshot in (first, first, changed_value, consumer_deleted, None, odd_snapshot(), first):
        ours = joined(renderer.render(snapshot, golden_health()), openmetrics=openmetrics)
        assert ours == render_exposition(snapshot, golden_health(), openmetrics=openmetrics, build=BUILD)


def test_unchanged_families_are_reused_and_changed_ones_rendered_anew() -> None:
    renderer = Renderer(BUILD)
    first = golden_snapshot()
    before = renderer.render(first, golden_health())
    changed = replace(first, consumers=(replace(first.consumers[0], num_pending=12345), *first.consumers[1:]))
    after = renderer.render(changed, golden_health())
    assert before.text_headers == after.text_headers
    names = [header.plain().split(b" ", 3)[2].decode() for header in after.text_headers]
    for name, old, new in zip(names, before.samples, after.samples, strict=True):
        if name == "nats_consumer_pending_messages":
            assert old != new
            assert b" 12345.0\n" in new.plain()
        else:
            assert old is new, name  # the very same segment: nothing was formatted or compressed again


def test_openmetrics_names_counter_families_without_total_and_ends_with_eof() -> None:
    text = render(golden_snapshot(), golden_health(), openmetrics=True)
    assert "# TYPE nats_stream_messages counter\n" in text
    assert "\nnats_stream_messages_total{" in text
    assert text.endswith("\n# EOF\n")
    assert "# EOF" not in render(golden_snapshot(), golden_health())


def test_value_formatting_equals_prometheus_client() -> None:
    integers = [
        *range(-1000, 1000),
        *(sign * 10**k + delta for k in range(1, 20) for delta in (-1, 0, 1) for sign in (1, -1)),
        2**53,
        2**53 + 1,
        2**63 - 1,
    ]
    floats = [0.0, -0.0, 0.1, 1.5, 1e-9, 999_999.5, 1e6, 1_760_000_000.25, 1e22, -1e22, math.inf, -math.inf]
    for number in (*integers, *floats):
        assert format_value(number) == floatToGoString(number), number
    assert format_value(math.nan) == "NaN"


@pytest.mark.parametrize("openmetrics", [False, True], ids=["text", "openmetrics"])
def test_help_escaping_reads_back_with_prometheus_client(openmetrics: bool) -> None:  # noqa: FBT001
    documentation = 'a "quoted" back\\slash\nand a new line'
    exposition = f"# HELP x {escape_help(documentation, openmetrics=openmetrics)}\n# TYPE x gauge\nx 1\n"
    parse = parse_openmetrics if openmetrics else parse_text
    (family,) = parse(exposition + "# EOF\n" if openmetrics else exposition)
    assert family.documentation == documentation
