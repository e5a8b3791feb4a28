"""Shared: real nats-server processes (one, or a cluster) on free loopback ports, and condition waiting."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

# Re-exported: older test modules import it from here; new ones import it from support.waiting.
from support.waiting import wait_for  # noqa: F401

from exporter.natsserver import NatsCluster, NatsServerProcess


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


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServerProcess]:
    """A fresh JetStream-enabled nats-server for one test, stopped and removed afterwards."""
    server = NatsServerProcess(store_dir=tmp_path / "store")
    server.start()
    try:
        yield server
    finally:
        server.cleanup()


def three_node_cluster(base: Path) -> list[NatsServerProcess]:
    """Three clustered JetStream servers n1..n3 (tagged node:1..3), started: ``NatsCluster``'s members."""
    return NatsCluster(base).start().members
