"""Real Prometheus and Alertmanager child processes on loopback, their HTTP APIs, and a webhook receiver.

The binaries come from Debian's ``prometheus`` and ``prometheus-alertmanager`` packages (``make
system-deps``). Every process gets its own free loopback port and working directory, writes its log to a
file there, and is stopped by ``stop()``; a failed start says why, with the end of the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web

from exporter.natsserver import free_port, stop_process
from support.waiting import wait_for

START_DEADLINE_SECONDS = 30.0
STOP_DEADLINE_SECONDS = 10.0
HTTP_TIMEOUT = aiohttp.ClientTimeout(total=5)


class PromStackError(RuntimeError):
    """A binary is missing, or a process exited or did not become ready."""


def find_binary(*names: str, package: str) -> str:
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    raise PromStackError(f"{names[0]} not found: install Debian's {package} package (`make system-deps`)")


@dataclass
class ChildProcess:
    """A server process that reports readiness on an HTTP endpoint."""

    name: str
    argv: list[str]
    ready_url: str
    log_path: Path
    _process: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    def _spawn(self) -> None:
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                self.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    async def start(self) -> None:
        await asyncio.to_thread(self._spawn)
        async with aiohttp.ClientSession(timeout=HTTP_TIMEOUT) as session:

            async def ready() -> bool:
                if self._process is None or self._process.poll() is not None:
                    raise PromStackError(f"{self.name} exited during start-up:\n{self.log_tail()}")
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with session.get(self.ready_url) as response:
                        return response.status == 200
                return False

            try:
                await wait_for(
                    ready, timeout=START_DEADLINE_SECONDS, interval=0.1, message=f"{self.name} ready"
                )
            except pytest.fail.Exception:
                self.stop()
                pytest.fail(f"{self.name} not ready within {START_DEADLINE_SECONDS:.0f}s:\n{self.log_tail()}")

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            stop_process(process, STOP_DEADLINE_SECONDS)

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no log)"
        return os.linesep.join(text.splitlines()[-lines:])


def prometheus_config(
    *, scrape_target: str, rule_files: Sequence[Path], alertmanager: str, interval: str = "1s"
) -> dict[str, Any]:
    return {
        "global": {"scrape_interval": interval, "scrape_timeout": interval, "evaluation_interval": interval},
        "rule_files": [str(path) for path in rule_files],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]},
        "scrape_configs": [
            {"job_name": "nats-jetstream-exporter", "static_configs": [{"targets": [scrape_target]}]},
        ],
    }


def alertmanager_config(*, webhook_url: str) -> dict[str, Any]:
    return {
        "route": {
            "receiver": "webhook",
            "group_by": ["alertname", "stream"],
            "group_wait": "1s",
            "group_interval": "1s",
            "repeat_interval": "1h",
        },
        "receivers": [{"name": "webhook", "webhook_configs": [{"url": webhook_url, "send_resolved": False}]}],
    }


def prometheus_process(
    workdir: Path, *, scrape_target: str, rule_files: Sequence[Path], alertmanager: str
) -> ChildProcess:
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(
            prometheus_config(scrape_target=scrape_target, rule_files=rule_files, alertmanager=alertmanager)
        ),
        encoding="utf-8",
    )
    port = free_port()
    argv = [
        find_binary("prometheus", package="prometheus"),
        f"--config.file={config}",
        f"--storage.tsdb.path={workdir / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    return ChildProcess("prometheus", argv, f"http://127.0.0.1:{port}/-/ready", workdir / "prometheus.log")


def alertmanager_process(workdir: Path, *, webhook_url: str) -> ChildProcess:
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "alertmanager.yml"
    config.write_text(yaml.safe_dump(alertmanager_config(webhook_url=webhook_url)), encoding="utf-8")
    port = free_port()
    argv = [
        find_binary("prometheus-alertmanager", "alertmanager", package="prometheus-alertmanager"),
        f"--config.file={config}",
        f"--storage.path={workdir / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--cluster.listen-address=",  # no gossip: a single instance, and no port outside loopback
    ]
    return ChildProcess(
        "alertmanager", argv, f"http://127.0.0.1:{port}/-/ready", workdir / "alertmanager.log"
    )


def base_url(process: ChildProcess) -> str:
    return process.ready_url.removesuffix("/-/ready")


def address(process: ChildProcess) -> str:
    return base_url(process).removeprefix("http://")


class PrometheusApi:
    """The few calls of Prometheus's HTTP API the tests need; every reply's status is checked."""

    def __init__(self, session: aiohttp.ClientSession, url: str) -> None:
        self._session = session
        self._url = url

    async def _get(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        async with self._session.get(f"{self._url}{path}", params=params) as response:
            reply = await response.json()
        if reply.get("status") != "success":
            raise PromStackError(
                f"{path} {dict(params or {})}: {reply.get('errorType')}: {reply.get('error')}"
            )
        return reply["data"]

    async def query(self, expr: str) -> list[dict[str, Any]]:
        """The instant vector ``expr`` evaluates to now (a scalar or string is an error here)."""
        data = await self._get("/api/v1/query", {"query": expr})
        if data["resultType"] != "vector":
            raise PromStackError(f"{expr}: a {data['resultType']}, not an instant vector")
        result: list[dict[str, Any]] = data["result"]
        return result

    async def label_values(self, label: str, match: str | None) -> list[str]:
        params = {"match[]": match} if match else None
        values: list[str] = await self._get(f"/api/v1/label/{label}/values", params)
        return values

    async def alerts(self) -> list[dict[str, Any]]:
        data = await self._get("/api/v1/alerts")
        alerts: list[dict[str, Any]] = data["alerts"]
        return alerts

    async def rule_groups(self) -> list[dict[str, Any]]:
        data = await self._get("/api/v1/rules")
        groups: list[dict[str, Any]] = data["groups"]
        return groups


class WebhookReceiver:
    """An Alertmanager webhook receiver on loopback that keeps every alert it is sent."""

    def __init__(self) -> None:
        self.alerts: list[dict[str, Any]] = []
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/alerts", self._receive)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        _, port = self._runner.addresses[0][:2]
        self.url = f"http://127.0.0.1:{port}/alerts"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _receive(self, request: web.Request) -> web.Response:
        notification = await request.json()
        self.alerts.extend(notification.get("alerts", []))
        return web.Response(status=200)
