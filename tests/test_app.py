"""The daemon against a real nats-server: outages, recovery, stale data, scrape isolation, shutdown."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import msgpack
import nats
import nats.aio.msg
import pytest
from support.jetstream import js_request_at
from support.jetstream_stand_in import RecordedJetStream, recorded
from support.scraping import sample as value
from support.scraping import scrape
from support.waiting import wait_for

from exporter.app import ExporterApp
from exporter.connection import redact_url
from exporter.metrics import Renderer, Rendering
from exporter.natsserver import NatsServerProcess, free_port
from exporter.settings import CollectionSettings, NatsAuth, NatsSettings, Secret, Settings, WebSettings
from exporter.snapshot import ExporterHealth, Snapshot


def fast_settings(server_url: str, **collection: float) -> Settings:
    options: dict[str, float] = {"interval_seconds": 0.5, "deadline_seconds": 0.4} | collection
    return Settings(
        nats=NatsSettings(servers=(server_url,), connect_timeout_seconds=0.5),
        web=WebSettings(listen_address="127.0.0.1:0"),
        collection=CollectionSettings(**options),  # type: ignore[arg-type]
    )


async def status_of(port: int, path: str) -> int:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}{path}") as response,
    ):
        return response.status


@pytest.fixture
async def running_app() -> AsyncIterator[list[ExporterApp]]:
    apps: list[ExporterApp] = []
    try:
        yield apps
    finally:
        for app in apps:
            await app.stop()


async def start_app(apps: list[ExporterApp], settings: Settings, **seams: Any) -> ExporterApp:
    app = ExporterApp(settings, **seams)
    await app.start()
    apps.append(app)
    return app


async def up_is(port: int, expected: float) -> bool:
    status, samples = await scrape(port)
    return status == 200 and value(samples, "nats_up") == expected


async def test_serves_nats_up_0_while_unreachable_then_connects(tmp_path: Path, running_app):
    server = NatsServerProcess(store_dir=tmp_path / "store")
    app = await start_app(running_app, fast_settings(server.url))

    async def failing_at_connect() -> bool:
        status, samples = await scrape(app.port)
        errors = value(samples, "nats_exporter_collection_errors_total", stage="connect") or 0
        return status == 200 and value(samples, "nats_up") == 0.0 and errors >= 1

    await wait_for(failing_at_connect, message="nats_up 0 and connect errors while NATS is absent")
    assert await status_of(app.port, "/readyz") == 503
    assert await status_of(app.port, "/healthz") == 200

    with server:
        await wait_for(lambda: up_is(app.port, 1.0), timeout=20, message="nats_up 1 once NATS appears")
        assert await status_of(app.port, "/readyz") == 200


async def test_ready_only_once_collected_data_is_served(nats_server: NatsServerProcess, running_app):
    await js_request_at(nats_server.url, "STREAM.CREATE.ORDERS", {"name": "ORDERS", "subjects": ["o.>"]})
    app = await start_app(running_app, fast_settings(nats_server.url))
    await wait_for(lambda: _ready(app.port), message="ready")
    _, samples = await scrape(app.port)
    assert value(samples, "nats_stream_stored_messages", account="$G", stream="ORDERS") == 0


async def _ready(port: int) -> bool:
    return await status_of(port, "/readyz") == 200


async def test_survives_a_restart_without_a_gap(nats_server: NatsServerProcess, running_app):
    await js_request_at(nats_server.url, "STREAM.CREATE.ORDERS", {"name": "ORDERS", "subjects": ["o.>"]})
    app = await start_app(running_app, fast_settings(nats_server.url))
    await wait_for(lambda: up_is(app.port, 1.0), message="first collection")

    nats_server.stop()
    statuses: list[int] = []

    async def down_but_serving() -> bool:
        status, samples = await scrape(app.port)
        statuses.append(status)
        # The last good data is kept (stale_data_ttl is 300s by default) while nats_up says 0.
        kept = value(samples, "nats_stream_stored_messages", account="$G", stream="ORDERS") is not None
        return value(samples, "nats_up") == 0.0 and kept

    await wait_for(down_but_serving, timeout=15, message="nats_up 0 with the old data kept")
    nats_server.start()

    async def back_up() -> bool:
        status, samples = await scrape(app.port)
        statuses.append(status)
        return value(samples, "nats_up") == 1.0

    await wait_for(back_up, timeout=30, message="nats_up 1 after the restart")
    assert set(statuses) == {200}


class _BrokenRenderer(Renderer):
    """Fails once, as a bug in rendering would."""

    def __init__(self) -> None:
        super().__init__()
        self.failures = 1

    def render(self, snapshot: Snapshot | None, health: ExporterHealth) -> Rendering:
        if snapshot is not None and self.failures:
            self.failures -= 1
            raise RuntimeError("a bug")
        return super().render(snapshot, health)


async def test_an_unexpected_failure_is_counted_and_collection_goes_on(
    nats_server: NatsServerProcess, running_app
):
    app = await start_app(running_app, fast_settings(nats_server.url), renderer=_BrokenRenderer())

    async def recovered() -> bool:
        _, samples = await scrape(app.port)
        failures = value(samples, "nats_exporter_collection_errors_total", stage="collect") or 0
        return failures >= 1 and value(samples, "nats_up") == 1.0

    await wait_for(recovered, timeout=15, message="the failed cycle counted, then a good one")


FIXTURES = Path(__file__).parent / "fixtures" / "api"


async def test_a_cycle_past_its_deadline_is_counted_as_timeout(tmp_path: Path, running_app):
    """A JetStream API that answers every request in time, but too slowly for the whole cycle."""
    server = NatsServerProcess(store_dir=tmp_path / "store", jetstream=False)
    server.start()
    account_info = (FIXTURES / "account_info.json").read_bytes()
    stream = json.loads((FIXTURES / "stream_list.json").read_bytes())["streams"][0]
    responder = await nats.connect(server.url)

    async def slow_api(msg: nats.aio.msg.Msg) -> None:
        if msg.subject == "$JS.API.INFO":
            await msg.respond(account_info)
        elif msg.subject == "$JS.API.STREAM.LIST":
            await asyncio.sleep(0.2)  # the fault: each page is slow, under the per-request timeout
            offset = json.loads(msg.data or b"{}").get("offset", 0)
            page = {"total": 10, "offset": offset, "limit": 1, "streams": [stream]}
            await msg.respond(json.dumps(page).encode())
        else:
            await msg.respond(json.dumps({"total": 0, "offset": 0, "limit": 256, "consumers": []}).encode())

    await responder.subscribe("$JS.API.>", cb=slow_api)
    try:
        settings = fast_settings(server.url, interval_seconds=1.0, deadline_seconds=0.5)
        app = await start_app(running_app, settings)

        async def timed_out() -> bool:
            _, samples = await scrape(app.port)
            timeouts = value(samples, "nats_exporter_collection_errors_total", stage="timeout") or 0
            return timeouts >= 1 and value(samples, "nats_up") == 0.0

        await wait_for(timed_out, timeout=15, message="the cycle deadline counted as stage timeout")
    finally:
        await responder.close()
        server.cleanup()


async def test_stale_data_is_dropped_after_its_ttl(nats_server: NatsServerProcess, running_app):
    await js_request_at(nats_server.url, "STREAM.CREATE.ORDERS", {"name": "ORDERS", "subjects": ["o.>"]})
    app = await start_app(running_app, fast_settings(nats_server.url, stale_data_ttl_seconds=1.0))
    await wait_for(lambda: up_is(app.port, 1.0), message="first collection")
    nats_server.stop()

    async def dropped() -> bool:
        _, samples = await scrape(app.port)
        gone = value(samples, "nats_stream_stored_messages", account="$G", stream="ORDERS") is None
        return value(samples, "nats_up") == 0.0 and gone

    await wait_for(dropped, timeout=15, message="stream series dropped after the stale-data TTL")
    _, samples = await scrape(app.port)
    assert value(samples, "nats_exporter_last_success_timestamp_seconds") is not None


async def test_deleted_stream_vanishes_from_the_next_exposition(nats_server: NatsServerProcess, running_app):
    await js_request_at(nats_server.url, "STREAM.CREATE.GONE", {"name": "GONE", "subjects": ["g.>"]})
    app = await start_app(running_app, fast_settings(nats_server.url))

    async def present(*, expected: bool) -> bool:
        _, samples = await scrape(app.port)
        found = value(samples, "nats_stream_stored_messages", account="$G", stream="GONE") is not None
        return found is expected

    await wait_for(lambda: present(expected=True), message="stream exported")
    await js_request_at(nats_server.url, "STREAM.DELETE.GONE")
    await wait_for(lambda: present(expected=False), message="deleted stream gone")


async def test_scrapes_never_reach_nats(nats_server: NatsServerProcess, running_app):
    # A long interval: after the first cycle, nothing but our own INFO requests reaches the JetStream API.
    settings = fast_settings(nats_server.url, interval_seconds=120, deadline_seconds=10)
    app = await start_app(running_app, settings)
    await wait_for(lambda: up_is(app.port, 1.0), message="first collection")

    before = await js_request_at(nats_server.url, "INFO")
    async with aiohttp.ClientSession() as session:

        async def one_scrape() -> int:
            async with session.get(f"http://127.0.0.1:{app.port}/metrics") as response:
                await response.read()
                return response.status

        statuses = await asyncio.gather(*(one_scrape() for _ in range(40)))
    after = await js_request_at(nats_server.url, "INFO")
    assert set(statuses) == {200}
    api_before, api_after = before["api"], after["api"]
    assert isinstance(api_before, dict)
    assert isinstance(api_after, dict)
    # Exactly one request between the two readings: the second INFO itself.
    assert api_after["total"] - api_before["total"] == 1


async def test_exported_values_equal_the_servers_own(nats_server: NatsServerProcess, running_app):
    """The platform's chat stream and chat-handler consumer; MessagePack traffic fetched, acked, naked."""
    await js_request_at(
        nats_server.url,
        "STREAM.CREATE.COMPANIONS_CHAT",
        {
            "name": "COMPANIONS_CHAT",
            "subjects": ["ai.chat.user.*.message", "ai.chat.user.*.greeting.*"],
            "retention": "limits",
            "max_age": 30 * 86400 * 10**9,
            "storage": "file",
            "num_replicas": 1,
        },
    )
    nc = await nats.connect(nats_server.url)
    try:
        js = nc.jetstream()
        await js.add_consumer(
            "COMPANIONS_CHAT",
            durable_name="chat-handler",
            filter_subject="ai.chat.user.*.message",
            ack_policy="explicit",
            ack_wait=30,
            max_deliver=3,
            deliver_policy="new",
        )
        for index in range(6):
            payload = {"request_id": f"r{index}", "user_id": "user-1", "message": "hi", "premium": False}
            await js.publish("ai.chat.user.user-1.message", msgpack.packb(payload))
        await js.publish("ai.chat.user.user-1.greeting.morning", msgpack.packb({"user_id": "user-1"}))
        subscription = await js.pull_subscribe_bind("chat-handler", "COMPANIONS_CHAT")
        messages = await subscription.fetch(3, timeout=5)
        await messages[0].ack()
        await messages[1].nak()
        # messages[2] stays unacknowledged.
    finally:
        await nc.close()

    app = await start_app(running_app, fast_settings(nats_server.url))
    stream = await js_request_at(nats_server.url, "STREAM.INFO.COMPANIONS_CHAT")

    async def consumer_settled() -> bool:
        consumer = await js_request_at(nats_server.url, "CONSUMER.INFO.COMPANIONS_CHAT.chat-handler")
        _, samples = await scrape(app.port)
        labels = {"account": "$G", "stream": "COMPANIONS_CHAT", "consumer": "chat-handler"}
        return (
            value(samples, "nats_consumer_pending_messages", **labels) == consumer["num_pending"]
            and value(samples, "nats_consumer_ack_pending", **labels) == consumer["num_ack_pending"]
            and value(samples, "nats_consumer_redelivered_messages", **labels) == consumer["num_redelivered"]
            and value(samples, "nats_consumer_deliveries_total", **labels)
            == consumer["delivered"]["consumer_seq"]  # type: ignore[index]
        )

    await wait_for(consumer_settled, timeout=15, message="consumer values equal CONSUMER.INFO")
    _, samples = await scrape(app.port)
    state = stream["state"]
    assert isinstance(state, dict)
    labels = {"account": "$G", "stream": "COMPANIONS_CHAT"}
    assert value(samples, "nats_stream_messages_total", **labels) == state["last_seq"] == 7
    assert value(samples, "nats_stream_stored_messages", **labels) == state["messages"]
    assert value(samples, "nats_stream_stored_bytes", **labels) == state["bytes"]
    assert value(samples, "nats_stream_subjects", **labels) == state["num_subjects"] == 2
    assert value(samples, "nats_stream_consumers", **labels) == state["consumer_count"] == 1
    assert value(samples, "nats_stream_max_age_seconds", **labels) == 30 * 86400
    assert value(samples, "nats_stream_max_messages", **labels) is None  # unlimited: omitted


def test_redact_url_removes_credentials():
    assert redact_url("nats://[foo:4222") == "<malformed URL>"
    assert redact_url("nats://alice:s3cret@127.0.0.1:4222") == "nats://127.0.0.1:4222"
    assert redact_url("tls://token@[::1]:4443") == "tls://[::1]:4443"
    assert redact_url("127.0.0.1:4222") == "nats://127.0.0.1:4222"


def test_daemon_stops_cleanly_on_sigterm(nats_server: NatsServerProcess):
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "exporter",
            "--nats-url",
            nats_server.url,
            "--web.listen-address",
            f"127.0.0.1:{port}",
            "--interval",
            "1s",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        deadline = time.monotonic() + 20
        ready = False
        while time.monotonic() < deadline and not ready:
            ready = _http_status(port, "/readyz") == 200
            if process.poll() is not None:
                break
            if not ready:
                time.sleep(0.1)  # a synchronous poll: this test drives a separate process
        assert ready, process.stdout.read().decode() if process.poll() is not None else "not ready in 20s"
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
        assert time.monotonic() - started < 5
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def _http_status(port: int, path: str) -> int:
    import urllib.error  # noqa: PLC0415
    import urllib.request  # noqa: PLC0415

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=1) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


# -- what a failed request is reported as ------------------------------------------------------------

NO_JETSTREAM_API = """
accounts {
  AI: {
    jetstream: enabled
    users: [ {user: reader, password: reader-pw, permissions: {publish: {deny: ["$JS.API.>"]}}} ]
  }
}
"""


def failure_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("collection failed at")]


async def test_a_refused_publish_is_reported_as_a_permissions_violation(
    tmp_path: Path, running_app, caplog: pytest.LogCaptureFixture
):
    """The server drops a request the user may not publish and says so only in an asynchronous -ERR."""
    with NatsServerProcess(store_dir=tmp_path / "store", extra_config=NO_JETSTREAM_API) as server:
        nats_settings = NatsSettings(
            servers=(server.url,),
            auth=NatsAuth(user="reader", password=Secret("reader-pw")),
            connect_timeout_seconds=0.5,
        )
        settings = replace(fast_settings(server.url), nats=nats_settings)
        app = await start_app(running_app, settings)

        async def refused() -> bool:
            _, samples = await scrape(app.port)
            return (value(samples, "nats_exporter_collection_errors_total", stage="account") or 0) >= 1

        await wait_for(refused, timeout=15, message="the refused INFO request counted at stage account")
    assert failure_lines(caplog)[0] == (
        "collection failed at account: $JS.API.INFO: "
        "permissions violation: the exporter's user may not publish to this subject"
    )


async def test_a_stalled_server_is_reported_as_a_timeout_of_its_stage(
    tmp_path: Path, running_app, caplog: pytest.LogCaptureFixture
):
    """A JetStream API that answers the account info but never lists the streams: slow, not forbidden."""
    server = NatsServerProcess(store_dir=tmp_path / "store", jetstream=False)
    server.start()
    try:
        async with RecordedJetStream(server.url, {"INFO": recorded("account_info")}):
            app = await start_app(running_app, fast_settings(server.url))

            async def stalled() -> bool:
                _, samples = await scrape(app.port)
                return (value(samples, "nats_exporter_collection_errors_total", stage="streams") or 0) >= 1

            await wait_for(stalled, timeout=15, message="the unanswered STREAM.LIST counted at stage streams")
    finally:
        server.cleanup()
    assert failure_lines(caplog)[0] == (
        "collection failed at streams: $JS.API.STREAM.LIST: "
        "timed out after 0.2s: the server is slow or unreachable"
    )
