"""Render cost of metadata labels and thresholds: ``python -m bench.metadata_render``.

Renders 1,000 streams x 10 consumers (pending changed every cycle, as in steady state) in four shapes, each
in its own interleaved round, and prints the fastest render of each and its ratio to the plain shape:
plain (no metadata), labels (two labels.from_metadata keys on every *_info series), few (labels, one
threshold per stream and two on one consumer in ten) and all (labels, one threshold per stream and two on
every consumer: 21,000 more series).
"""

from __future__ import annotations

import time

from exporter.metrics import BuildInfo, Renderer
from exporter.snapshot import ConsumerState, ExporterHealth, Snapshot, StreamState, Threshold

STREAMS = 1000
CONSUMERS_PER_STREAM = 10
CYCLES = 10
ROUNDS = 3
SHAPES = ("plain", "labels", "few", "all")
BUILD = BuildInfo("bench", "3", "2")
HEALTH = ExporterHealth(up=True, collection_duration_seconds=0.1, last_success_timestamp=1.0)


def snapshot(shape: str, cycle: int) -> Snapshot:
    labelled = shape != "plain"
    labels = ("team-a", "") if labelled else ()
    streams, consumers = [], []
    for index in range(STREAMS):
        name = f"STREAM_{index}"
        stream_thresholds = (Threshold("msgs", "critical", 1),) if shape in {"few", "all"} else ()
        streams.append(
            StreamState(
                account="$G", name=name, subjects=(f"s{index}.>",), storage="file", retention="limits",
                replicas=1, allow_direct=True, max_messages=None, max_bytes=None, max_age_seconds=None,
                max_messages_per_subject=None, messages=index, bytes=index * 100, first_seq=1,
                first_ts=None, last_seq=index, last_ts=None, num_subjects=1, num_deleted=0,
                consumer_count=CONSUMERS_PER_STREAM, thresholds=stream_thresholds, metadata_labels=labels,
            )
        )  # fmt: skip
        for number in range(CONSUMERS_PER_STREAM):
            wanted = shape == "all" or (shape == "few" and number == 0)
            consumer_thresholds = (
                (Threshold("unprocessed", "critical", 1000), Threshold("last_ack", "critical", 600))
                if wanted
                else ()
            )
            consumers.append(
                ConsumerState(
                    account="$G", stream=name, name=f"c{number}", durable=True, pull=True,
                    ack_policy="explicit", deliver_policy="all", filter_subjects=(), max_deliver=None,
                    max_ack_pending=None, ack_wait_seconds=30.0, num_pending=index + number + cycle,
                    num_ack_pending=0, num_redelivered=0, num_waiting=0, delivered_consumer_seq=1,
                    delivered_stream_seq=1, delivered_last_active=None, ack_floor_consumer_seq=1,
                    ack_floor_stream_seq=1, ack_floor_last_active=None, thresholds=consumer_thresholds,
                    metadata_labels=labels,
                )
            )  # fmt: skip
    keys = ("team", "owner") if labelled else ()
    return Snapshot(1.0, (), (), tuple(streams), tuple(consumers), metadata_label_keys=keys)


def fastest_render(shape: str) -> float:
    renderer = Renderer(BUILD)
    renderer.render(snapshot(shape, 0), HEALTH)
    snapshots = [snapshot(shape, cycle) for cycle in range(1, CYCLES + 1)]
    times = []
    for each in snapshots:
        start = time.perf_counter()
        renderer.render(each, HEALTH)
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    best = dict.fromkeys(SHAPES, float("inf"))
    for _ in range(ROUNDS):
        for shape in SHAPES:
            best[shape] = min(best[shape], fastest_render(shape))
    for shape in SHAPES:
        print(f"{shape:7} {best[shape] * 1000:7.1f} ms   ratio to plain {best[shape] / best['plain']:.2f}")


if __name__ == "__main__":
    main()
