"""The demo on a three-node cluster: the platform replicated, a mirror, and a system-account user.

The cluster runs the same platform with every stream on three replicas and one more stream,
``COMPANIONS_CHAT_MIRROR``, mirroring the chat stream, so the Cluster dashboard has replicas, leaders and a
mirror to show. The cluster's configuration also has a system account with one user: the demo's own
exporter reads the platform's account, and a second exporter can read the whole cluster through that user
with the configuration file the demo writes (``system_exporter_config``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import yaml

from exporter.demo.chathandler import CHAT_STREAM
from exporter.demo.platform import PlatformSpec, StreamSpec
from exporter.natsserver import NatsCluster

CLUSTER_SIZE = 3
CLUSTER_REPLICAS = 3
MIRROR_STREAM = f"{CHAT_STREAM}_MIRROR"
SYSTEM_ACCOUNT = "SYS"
SYSTEM_USER = "system"
SYSTEM_EXPORTER_CONFIG = "system-exporter.yaml"
SYSTEM_EXPORTER_ADDRESS = "127.0.0.1:10423"  # next to the demo's exporter on :10422


def clustered_platform(platform: PlatformSpec) -> PlatformSpec:
    """``platform`` with every stream on ``CLUSTER_REPLICAS`` replicas, plus a mirror of the chat stream."""
    streams = tuple(replace(stream, replicas=CLUSTER_REPLICAS) for stream in platform.streams)
    if CHAT_STREAM in {stream.name for stream in streams} and MIRROR_STREAM not in {s.name for s in streams}:
        origin = platform.stream(CHAT_STREAM)
        mirror = StreamSpec(
            name=MIRROR_STREAM,
            subjects=(),
            retention=origin.retention,
            max_age_seconds=origin.max_age_seconds,
            storage=origin.storage,
            replicas=CLUSTER_REPLICAS,
            metadata=tuple((key, value) for key, value in origin.metadata if key == "team"),
            mirror=CHAT_STREAM,
        )
        streams += (mirror,)
    return replace(platform, streams=streams)


def system_exporter_config(directory: Path, *, servers: list[str], password: str) -> Path:
    """Write the configuration of an exporter that reads the whole cluster as the system user; its path.

    The file holds the system user's password, so it is readable by its owner only, and it lives in the
    cluster's temporary directory, removed with it.
    """
    config = {
        "nats": {"servers": servers, "user": SYSTEM_USER, "password": password},
        "collection": {"interval": "5s", "scope": "cluster", "expected_servers": len(servers)},
        "web": {"listen_address": SYSTEM_EXPORTER_ADDRESS},
    }
    path = directory / SYSTEM_EXPORTER_CONFIG
    path.touch(mode=0o600)
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


@dataclass(frozen=True, slots=True)
class DemoCluster:
    """The demo's cluster (not yet started) and where its system-exporter configuration is written."""

    cluster: NatsCluster
    system_password: str

    @property
    def directory(self) -> Path:
        """The temporary directory holding the members' stores and the system exporter's configuration."""
        store = self.cluster.members[0].store_dir
        assert store is not None  # noqa: S101 (NatsCluster gives every member a store directory)
        return store.parent

    @property
    def system_config(self) -> Path:
        return self.directory / SYSTEM_EXPORTER_CONFIG

    def start(self) -> None:
        """Start the members, wait until they form the cluster, and write the system exporter's file."""
        self.cluster.start()
        system_exporter_config(self.directory, servers=self.cluster.urls, password=self.system_password)
