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
from support.dashboard_queries import PanelQuery, label_values_query, load_dashboard, runnable, variables
from support.waiting import wait_for

ALERTS_DIR = Path(__file__).resolve().parents[2] / "alerts"  # tests/support/ -> the repository
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
    *, scrape_targets: Sequence[str], rule_files: Sequence[Path], alertmanager: str, interval: str = "1s"
) -> dict[str, Any]:
    return {
        "global": {"scrape_interval": interval, "scrape_timeout": interval, "evaluation_interval": interval},
        "rule_files": [str(path) for path in rule_files],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]},
        "scrape_configs": [
            {"job_name": "nats-jetstream-exporter", "static_configs": [{"targets": list(scrape_targets)}]},
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
    workdir: Path, *, scrape_targets: Sequence[str], rule_files: Sequence[Path], alertmanager: str
) -> ChildProcess:
    """Prometheus scraping every target (each is its own ``instance``) every second, with ``rule_files``."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(
            prometheus_config(scrape_targets=scrape_targets, rule_files=rule_files, alertmanager=alertmanager)
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


def shipped_rule_files() -> list[Path]:
    """The Prometheus rule files in alerts/ (promtool's unit-test files have no `groups`)."""
    files = []
    for path in sorted(ALERTS_DIR.rglob("*.y*ml")):
        content = yaml.safe_load(path.read_text(encoding="utf-8"))
        if isinstance(content, dict) and "groups" in content:
            files.append(path)
    return files


def find_rule(rule_files: Sequence[Path], alert: str) -> dict[str, Any]:
    for path in rule_files:
        for group in yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]:
            for rule in group["rules"]:
                if rule.get("alert") == alert:
                    found: dict[str, Any] = rule
                    return found
    pytest.fail(f"alert {alert} is not in {[str(p) for p in rule_files]}")


def rules_for_the_test(rule_files: Sequence[Path], workdir: Path, alert: str) -> list[Path]:
    """The shipped files, except that ``alert`` loses its `for:` duration, which no test can wait out.

    Its expression, labels and annotations stay as shipped: the test shows that they fire and reach
    Alertmanager; promtool's unit tests (alerts/tests/) cover the `for:` durations.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    result = []
    for path in rule_files:
        content = yaml.safe_load(path.read_text(encoding="utf-8"))
        rules = [rule for group in content["groups"] for rule in group["rules"] if rule.get("alert") == alert]
        if not any("for" in rule for rule in rules):
            result.append(path)
            continue
        for rule in rules:
            rule["for"] = "1s"
        copy = workdir / path.name
        copy.write_text(yaml.safe_dump(content, sort_keys=False), encoding="utf-8")
        result.append(copy)
    return result


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

    async def queries_without_data(
        self, queries: Sequence[PanelQuery], *, instance: str | None = None
    ) -> list[str]:
        """The panel queries (made runnable) whose result is empty, or has no series of ``instance``."""
        results = await asyncio.gather(*(self.query(runnable(query.expr)) for query in queries))
        return [
            f"{query.where}: {runnable(query.expr)}"
            for query, result in zip(queries, results, strict=True)
            if not any(instance is None or s["metric"].get("instance") == instance for s in result)
        ]

    async def variable_values(
        self,
        dashboards: Sequence[Path],
        *,
        timeout: float,  # noqa: ASYNC109 (a polling deadline per variable)
    ) -> dict[tuple[str, str], list[str]]:
        """(file, variable) -> the values each query variable offers, as Grafana asks; waits for each to
        offer one and fails the test naming the variable that offers none."""
        offered: dict[tuple[str, str], list[str]] = {}
        for path in dashboards:
            for variable in variables(load_dashboard(path)):
                if variable["type"] != "query":
                    continue
                selector, label = label_values_query(variable["query"])
                match = runnable(selector) if selector else None
                values = offered.setdefault((path.name, variable["name"]), [])

                async def some(
                    label: str = label, match: str | None = match, values: list[str] = values
                ) -> bool:
                    values[:] = await self.label_values(label, match)
                    return bool(values)

                await wait_for(
                    some, timeout=timeout, interval=1.0, message=f"{path.name} ${variable['name']}"
                )
        return offered

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
