"""Fixtures every test module may ask for by name: real nats-server processes, connections to them, promtool.

Only fixtures live here; helpers that tests import live in the package ``tests/support``.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client

from exporter.config import ENV_PREFIX
from exporter.connection import connect_nats
from exporter.natsserver import NatsServerProcess
from exporter.settings import NatsSettings


@pytest.fixture(autouse=True)
def _isolated_logging() -> Iterator[None]:
    """Undo what a test's configure_logging() did to the root logger (handlers on closed streams, level)."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        for handler in root.handlers:
            if handler not in handlers:
                root.removeHandler(handler)
        root.setLevel(level)


@pytest.fixture(autouse=True)
def _no_exporter_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The developer's own NATS_EXPORTER_* variables must not leak into any test."""
    for name in [name for name in os.environ if name.startswith(ENV_PREFIX)]:
        monkeypatch.delenv(name)


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServerProcess]:
    """A fresh JetStream-enabled nats-server for one test, stopped and removed afterwards."""
    server = NatsServerProcess(store_dir=tmp_path / "store")
    server.start()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture
async def nc(nats_server: NatsServerProcess) -> AsyncIterator[Client]:
    """A plain client connection to ``nats_server`` (the application's side), closed afterwards."""
    client = await nats.connect(nats_server.url)
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
async def exporter_nc(nats_server: NatsServerProcess) -> AsyncIterator[Client]:
    """The exporter's own connection to ``nats_server``, made the way the daemon makes it (reconnecting)."""
    client = await connect_nats(NatsSettings(servers=(nats_server.url,)))
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture(scope="session")
def promtool() -> str:
    """The path of Prometheus's promtool; the test fails (not skips) without it."""
    path = shutil.which("promtool") or "/usr/bin/promtool"
    if not Path(path).exists():
        pytest.fail("promtool not found: install Debian's prometheus package (`make system-deps`)")
    return path
