"""The demo as a user runs it: a real process, real /metrics, and nothing left behind when it stops."""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import re
import signal
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any

import aiohttp
import nats
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from support.spec_platform import SPEC_STREAM_NAMES
from support.waiting import wait_for

from exporter.demo.chaos import ChaosOptions
from exporter.demo.chathandler import HandlerOptions
from exporter.demo.cli import add_subcommand
from exporter.demo.cluster import clustered_platform
from exporter.demo.platform import load_platform, parse_platform
from exporter.demo.provisioning import stream_config
from exporter.demo.runner import DemoOptions, exporter_base_url, run_demo
from exporter.demo.traffic import TrafficOptions
from exporter.errors import ConfigError
from exporter.jsapi import JetStreamApi
from exporter.natsserver import NatsServerProcess, free_port
from exporter.settings import CollectionSettings, NatsSettings, Settings, WebSettings

REPO = Path(__file__).resolve().parent.parent
CHAT_HANDLER = {"stream": "COMPANIONS_CHAT", "consumer": "chat-handler"}

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def child_pids(parent: int, name: str) -> set[int]:
    """Processes called ``name`` whose parent is ``parent``, read from /proc."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            comm = (entry / "comm").read_text().strip()
        except OSError:
            continue  # exited meanwhile
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == parent and comm == name:
            found.add(int(entry.name))
    return found


def leftovers(directory: Path) -> list[str]:
    return sorted(entry.name for entry in directory.iterdir())


def process_exists(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


async def scrape(url: str) -> Samples:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        assert response.status == 200
        text = await response.text()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float | None:
    """The sample with exactly these labels; the account is the server's default one unless given."""
    return samples.get((name, frozenset({"account": "$G", **labels}.items())))


def demo_scene_visible(samples: Samples, account: str) -> bool:
    """What the demo promises a user within a minute, for the streams of ``account``."""
    streams = [
        value(samples, "nats_stream_messages_total", account=account, stream=name)
        for name in SPEC_STREAM_NAMES
    ]
    handler = {**CHAT_HANDLER, "account": account}
    deliveries = value(samples, "nats_consumer_deliveries_total", **handler) or 0
    delivered_up_to = value(samples, "nats_consumer_delivered_stream_sequence", **handler) or 0
    dead_letters = value(
        samples, "nats_dlq_messages", account=account, stream="AI_DLQ", subject="ai.dlq.chat"
    )
    return (
        all(count is not None and count > 0 for count in streams)
        and value(samples, "nats_consumer_pending_messages", **handler) is not None
        and value(samples, "nats_consumer_ack_pending", **handler) is not None
        and value(samples, "nats_consumer_redelivered_messages", **handler) is not None
        # More deliveries than messages it could have been given: redeliveries happened.
        and deliveries > delivered_up_to
        and (value(samples, "nats_consumer_naks_total", **handler) or 0) > 0
        and (value(samples, "nats_consumer_terminated_messages_total", **handler) or 0) > 0
        and value(samples, "nats_consumer_max_deliveries_exceeded_total", **handler) is not None
        and (dead_letters or 0) > 0
        # The demo's own server runs the end-to-end probe.
        and samples.get(("nats_probe_up", frozenset())) == 1
    )


async def stop_if_running(demo: asyncio.subprocess.Process, *, grace: float) -> None:
    """After a failed test: stop the demo the way that cleans up, killing it only past ``grace`` seconds."""
    if demo.returncode is not None:
        return
    demo.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(demo.wait(), grace)
    except TimeoutError:
        demo.kill()
        await demo.wait()


@pytest.fixture
def private_tmpdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A TMPDIR of the test's own, so that "nothing left behind" can be checked exactly."""
    directory = tmp_path / "tmp"
    directory.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(directory))
    return directory


@pytest.mark.timeout(60)
async def test_demo_process_shows_the_scene_and_leaves_nothing_behind(tmp_path: Path) -> None:
    port = free_port()
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {key: text for key, text in os.environ.items() if not key.startswith("NATS_EXPORTER_")}
    env |= {"TMPDIR": str(scratch), "PYTHONUNBUFFERED": "1"}
    stdout_path, stderr_path = tmp_path / "stdout", tmp_path / "stderr"
    with stdout_path.open("wb") as stdout, stderr_path.open("wb") as stderr:
        demo = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "exporter",
            "demo",
            "--duration",
            "25s",
            "--web.listen-address",
            f"127.0.0.1:{port}",
            cwd=REPO,
            env=env,
            stdout=stdout,
            stderr=stderr,
            stdin=asyncio.subprocess.DEVNULL,
        )
    try:
        # The guide names the demo's own nats-server: its pid and the platform's account.
        named = re.compile(r"the demo's nats-server, pid (\d+), account AI_PLATFORM")
        await wait_for(
            lambda: named.search(stdout_path.read_text()) is not None or demo.returncode is not None,
            timeout=20,
            message="the guide naming the demo's nats-server",
        )
        found = named.search(stdout_path.read_text())
        assert found is not None, stderr_path.read_text()
        server_pid = int(found.group(1))
        assert child_pids(demo.pid, "nats-server") == {server_pid}
        samples: Samples = {}

        async def scene_visible() -> bool:
            assert demo.returncode is None, stderr_path.read_text()
            try:
                scraped = await scrape(f"http://127.0.0.1:{port}/metrics")
            except aiohttp.ClientConnectionError:
                return False
            samples.clear()
            samples.update(scraped)
            return demo_scene_visible(samples, account="AI_PLATFORM")

        await wait_for(
            scene_visible, timeout=24, interval=0.5, message="the platform's streams, failures and DLQ"
        )
        # The platform's account has JetStream limits of its own (64MB memory, 512MB file).
        limits = [
            value(samples, f"nats_account_jetstream_max_{kind}_bytes", account="AI_PLATFORM")
            for kind in ("memory", "storage")
        ]
        assert limits == [64 * 1024**2, 512 * 1024**2]
        demo.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(demo.wait(), 20) == 0, stderr_path.read_text()
    finally:
        await stop_if_running(demo, grace=20)
    output = stdout_path.read_text()
    assert f"http://127.0.0.1:{port}/metrics" in output
    assert "chat-handler consumer on COMPANIONS_CHAT fails on purpose" in output
    assert "python -m exporter dlq list" in output
    assert "Stopped after" in output
    assert not process_exists(server_pid)
    assert leftovers(scratch) == []
    with socket.socket() as probe:  # the HTTP port is free again
        probe.bind(("127.0.0.1", port))


async def test_demo_on_an_existing_server_provisions_it_and_leaves_its_streams(
    nats_server: NatsServerProcess, private_tmpdir: Path
) -> None:
    out = io.StringIO()
    stop = asyncio.Event()
    options = DemoOptions(
        settings=Settings(
            nats=NatsSettings(servers=(nats_server.url,)),
            web=WebSettings(listen_address="127.0.0.1:0"),
            collection=CollectionSettings(interval_seconds=0.5, deadline_seconds=0.4),
            dead_letter_streams=("AI_DLQ",),
        ),
        use_existing_server=True,
        traffic=TrafficOptions(chat_rate=20, voice_rate=2, login_rate=2),
        handler=HandlerOptions(failure_ratio=0.3, nak_delay_seconds=0.2),
    )
    demo = asyncio.create_task(run_demo(options, out=out, stop=stop))
    try:
        await wait_for(lambda: "/metrics" in out.getvalue() or demo.done(), timeout=15, message="the guide")
        assert not demo.done(), out.getvalue()
        match = re.search(r"(http://127\.0\.0\.1:\d+)/metrics", out.getvalue())
        assert match is not None, out.getvalue()

        async def dead_letters_counted() -> bool:
            samples = await scrape(f"{match.group(1)}/metrics")
            return (value(samples, "nats_dlq_messages", stream="AI_DLQ", subject="ai.dlq.chat") or 0) > 0

        await wait_for(dead_letters_counted, timeout=15, interval=0.2, message="dead letters in /metrics")
        assert child_pids(os.getpid(), "nats-server") == {nats_server.pid}  # no server of its own
    finally:
        stop.set()
        assert await asyncio.wait_for(demo, 15) == 0
    assert "an existing server" in out.getvalue()
    nc = await nats.connect(nats_server.url)
    try:
        names = await JetStreamApi(nc, domain=None, timeout_seconds=5).request_json("STREAM.NAMES")
    finally:
        await nc.close()
    assert sorted(names["streams"]) == sorted(SPEC_STREAM_NAMES)
    assert leftovers(private_tmpdir) == []


async def test_a_failed_start_stops_the_server_it_started(private_tmpdir: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        options = DemoOptions(settings=Settings(web=WebSettings(listen_address=f"127.0.0.1:{port}")))
        out = io.StringIO()
        with pytest.raises(ConfigError, match="cannot listen on"):
            await run_demo(options, out=out)
    assert "Provisioned" in out.getvalue()  # the server was up and provisioned before the failure
    assert child_pids(os.getpid(), "nats-server") == set()
    assert leftovers(private_tmpdir) == []


def demo_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)
    common.add_argument("--nats-url", action="append", dest="nats_url")
    common.add_argument("--web.listen-address", dest="web_listen_address")
    parser = argparse.ArgumentParser(prog="exporter")
    add_subcommand(parser.add_subparsers(), common)
    return parser


def test_demo_flags_parse_and_refuse_nonsense(capsys: pytest.CaptureFixture[str]) -> None:
    args = demo_parser().parse_args(["demo", "--duration", "1m30s", "--chat-rate", "10", "--nak-delay", "2s"])
    assert (args.duration, args.chat_rate, args.nak_delay, args.failure_ratio) == (90.0, 10.0, 2.0, 0.1)
    assert not hasattr(args, "nats_url")  # absent shared flags stay absent: the demo starts its own server
    bad_flags = (
        ["--duration", "soon"],
        ["--duration=-1s"],  # with "=", or argparse would read "-1s" as a flag
        ["--failure-ratio", "2"],
        ["--chat-rate", "-1"],
        ["--users", "0"],
    )
    for bad in bad_flags:
        with pytest.raises(SystemExit) as caught:
            demo_parser().parse_args(["demo", *bad])
        assert caught.value.code == 2
    assert capsys.readouterr().err.count("error: argument") == len(bad_flags)
    args = demo_parser().parse_args(["demo", "--failure-ratio", "0.6", "--retry-ratio", "0.6"])
    assert args.handler(args) == 2
    assert "ratios must each be within 0..1 and sum to at most 1" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("address", "url"),
    [
        (":10422", "http://localhost:10422"),
        ("0.0.0.0:10422", "http://localhost:10422"),
        ("127.0.0.1:0", "http://127.0.0.1:0"),
        ("[::1]:10422", "http://[::1]:10422"),
    ],
)
def test_exporter_base_url(address: str, url: str) -> None:
    port = int(address.rsplit(":", 1)[1])
    assert exporter_base_url(address, port) == url


async def test_a_part_that_fails_stops_the_demo_and_says_why(
    nats_server: NatsServerProcess, private_tmpdir: Path
) -> None:
    out = io.StringIO()
    options = DemoOptions(
        settings=Settings(nats=NatsSettings(servers=(nats_server.url,)), web=WebSettings("127.0.0.1:0")),
        use_existing_server=True,
        # A deleted consumer ends the handler once its fetches have failed this long (a second, not ten).
        handler=HandlerOptions(fetch_grace_seconds=1.0),
    )
    demo = asyncio.create_task(run_demo(options, out=out, stop=asyncio.Event()))
    await wait_for(lambda: "/metrics" in out.getvalue() or demo.done(), timeout=15, message="the guide")
    nc = await nats.connect(nats_server.url)
    try:
        api = JetStreamApi(nc, domain=None, timeout_seconds=5)
        await api.request_json("CONSUMER.DELETE.COMPANIONS_CHAT.chat-handler")
    finally:
        await nc.close()
    assert await asyncio.wait_for(demo, 15) == 1
    assert "Stopping: demo-chat-handler ended unexpectedly (" in out.getvalue()
    assert "Stopped after" in out.getvalue()


@pytest.mark.timeout(90)
async def test_cluster_demo_with_chaos_shows_the_cluster_and_leaves_nothing_behind(tmp_path: Path) -> None:
    """``demo --cluster --chaos`` on a short schedule: three servers, one stopped and restarted, then gone."""
    port = free_port()
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {key: text for key, text in os.environ.items() if not key.startswith("NATS_EXPORTER_")}
    env |= {"TMPDIR": str(scratch), "PYTHONUNBUFFERED": "1"}
    stdout_path, stderr_path = tmp_path / "stdout", tmp_path / "stderr"
    flags = ["--cluster", "--chaos", "--chaos-every", "8s", "--chaos-down", "4s", "--duration", "30s"]
    with stdout_path.open("wb") as stdout, stderr_path.open("wb") as stderr:
        demo = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "exporter",
            "demo",
            *flags,
            "--interval",
            "1s",
            "--web.listen-address",
            f"127.0.0.1:{port}",
            cwd=REPO,
            env=env,
            stdout=stdout,
            stderr=stderr,
            stdin=asyncio.subprocess.DEVNULL,
        )
    named = re.compile(r"the demo's 3-node cluster, pids (\d+), (\d+), (\d+), account AI_PLATFORM")
    try:
        await wait_for(
            lambda: named.search(stdout_path.read_text()) is not None or demo.returncode is not None,
            timeout=30,
            message="the guide naming the demo's cluster",
        )
        found = named.search(stdout_path.read_text())
        assert found is not None, stderr_path.read_text()
        server_pids = {int(pid) for pid in found.groups()}
        assert child_pids(demo.pid, "nats-server") == server_pids
        seen: dict[str, float | None] = {}

        async def cluster_visible() -> bool:
            assert demo.returncode is None, stderr_path.read_text()
            samples = await scrape(f"http://127.0.0.1:{port}/metrics")
            chat, mirror = (
                {"account": "AI_PLATFORM", "stream": "COMPANIONS_CHAT"},
                {
                    "account": "AI_PLATFORM",
                    "stream": "COMPANIONS_CHAT_MIRROR",
                },
            )
            seen["chat replicas"] = value(samples, "nats_stream_replicas", **chat)
            seen["mirror replicas"] = value(samples, "nats_stream_replicas", **mirror)
            seen["mirror messages"] = value(samples, "nats_stream_messages_total", **mirror)
            return (
                seen["chat replicas"] == seen["mirror replicas"] == 3 and (seen["mirror messages"] or 0) > 0
            )

        await wait_for(cluster_visible, timeout=20, interval=0.5, message=f"R3 streams and a mirror ({seen})")
        assert await asyncio.wait_for(demo.wait(), 45) == 0, stderr_path.read_text()
    finally:
        await stop_if_running(demo, grace=30)
    output = stdout_path.read_text()
    stops = re.findall(
        r"^chaos (\d+): stopped (n\d), (?:the leader|a follower) of COMPANIONS_CHAT", output, re.MULTILINE
    )
    restarts = re.findall(r"^chaos (\d+): restarted (n\d):", output, re.MULTILINE)
    assert stops, output
    assert restarts, output
    assert restarts[0] == stops[0]  # the member stopped first is the one restarted first
    assert "python -m exporter --config " in output  # how to read the whole cluster as the system user
    assert "The cluster is stopped and its temporary stores removed." in output
    assert not any(process_exists(pid) for pid in server_pids)
    assert leftovers(scratch) == []
    with socket.socket() as probe:  # the HTTP port is free again
        probe.bind(("127.0.0.1", port))


async def test_stopping_the_cluster_demo_while_a_server_is_down_leaves_nothing_behind(
    private_tmpdir: Path,
) -> None:
    out = io.StringIO()
    stop = asyncio.Event()
    options = DemoOptions(
        settings=Settings(
            web=WebSettings(listen_address="127.0.0.1:0"),
            collection=CollectionSettings(interval_seconds=1.0, deadline_seconds=0.8),
        ),
        traffic=TrafficOptions(chat_rate=5, voice_rate=0.5, login_rate=0.5),
        cluster=True,
        chaos=ChaosOptions(every_seconds=2.0, down_seconds=1.5),
    )
    demo = asyncio.create_task(run_demo(options, out=out, stop=stop))
    try:
        await wait_for(
            lambda: "chaos 1: stopped" in out.getvalue() or demo.done(),
            timeout=40,
            message="a stopped server",
        )
        assert not demo.done(), out.getvalue()
        config = re.search(r"python -m exporter --config (\S+)", out.getvalue())
        assert config is not None, out.getvalue()
        system_config, mode = read_config_file(config.group(1))
        assert system_config["collection"] == {"interval": "5s", "scope": "cluster", "expected_servers": 3}
        assert mode == 0o600  # it holds the system user's password
    finally:
        stop.set()
        assert await asyncio.wait_for(demo, 30) == 0, out.getvalue()
    assert "chaos 1: restarted" not in out.getvalue()  # stopped while the member was down
    assert child_pids(os.getpid(), "nats-server") == set()
    assert leftovers(private_tmpdir) == []


def read_config_file(name: str) -> tuple[dict[str, Any], int]:
    """The YAML document in the file ``name`` and the file's permission bits."""
    path = Path(name)
    return yaml.safe_load(path.read_text(encoding="utf-8")), path.stat().st_mode & 0o777


def test_cluster_and_chaos_flags_refuse_what_cannot_work(capsys: pytest.CaptureFixture[str]) -> None:
    refused = (
        (["--chaos"], "--chaos needs --cluster"),
        (["--cluster", "--nats-url", "nats://127.0.0.1:4222"], "does not go with --nats-url"),
        (["--cluster", "--chaos", "--chaos-every", "10s", "--chaos-down", "10s"], "shorter than the chaos"),
    )
    for flags, message in refused:
        args = demo_parser().parse_args(["demo", *flags])
        assert args.handler(args) == 2
        assert message in capsys.readouterr().err
    args = demo_parser().parse_args(["demo", "--cluster", "--chaos"])
    assert (args.chaos_every, args.chaos_down) == (60.0, 25.0)


def test_the_clustered_platform_replicates_every_stream_and_mirrors_the_chat_stream() -> None:
    platform = clustered_platform(load_platform())
    assert {stream.replicas for stream in platform.streams} == {3}
    mirror = platform.stream("COMPANIONS_CHAT_MIRROR")
    assert (mirror.mirror, mirror.subjects) == ("COMPANIONS_CHAT", ())
    assert stream_config(mirror)["mirror"] == {"name": "COMPANIONS_CHAT"}
    assert "subjects" not in stream_config(mirror)
    assert clustered_platform(platform) == platform  # applying it twice adds no second mirror


@pytest.mark.parametrize(
    ("stream", "problem"),
    [
        ("{name: M, mirror: NOPE}", "streams[1].mirror"),
        ('{name: M, mirror: A, subjects: ["b.>"]}', "streams[1].subjects"),
        ("{name: M}", "streams[1].subjects"),
    ],
)
def test_a_mirror_in_the_platform_file_names_a_stream_of_the_file_and_no_subjects(
    stream: str, problem: str
) -> None:
    text = f'streams:\n  - {{name: A, subjects: ["a.>"]}}\n  - {stream}\n'
    with pytest.raises(ConfigError) as caught:
        parse_platform(text, source="platform.yaml")
    assert caught.value.key == problem
    good = parse_platform(
        'streams:\n  - {name: A, subjects: ["a.>"]}\n  - {name: M, mirror: A}\n', source="p"
    )
    assert good.stream("M").mirror == "A"
