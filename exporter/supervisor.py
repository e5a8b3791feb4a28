"""Connection supervision for the daemon: connect, reconnect with backoff, log state changes, close.

nats-py reconnects by itself after an outage once connected; what it does not do is retry a first
connection with backoff while the daemon serves ``nats_up 0``, nor start over after it gave up and
closed. This module does both, and logs each change of state once instead of once per attempt.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable

from nats.aio.client import Client
from nats.aio.subscription import Subscription
from nats.errors import SlowConsumerError

from exporter.connection import NatsConnectError, close_quietly, connect_nats, redact_url
from exporter.jsapi import DeniedSubjects
from exporter.logs import StateLog
from exporter.settings import NatsSettings

log = logging.getLogger(__name__)

RECONNECT_BACKOFF_INITIAL_SECONDS = 0.5
RECONNECT_BACKOFF_MAX_SECONDS = 30.0
CLOSE_TIMEOUT_SECONDS = 2.0

ConnectedCallback = Callable[[Client], Awaitable[None]]
ReconnectedCallback = Callable[[], None]
# Told of each message the client dropped for a subscription; True: counted there, not to be logged.
SlowConsumerCallback = Callable[[Subscription | None], bool]


class ConnectionSupervisor:
    """Keeps one NATS connection open for as long as ``run`` runs.

    ``on_connected`` is awaited with every new client (the first, and each one after the previous was
    closed); ``on_reconnected`` is called when nats-py restored a client's connection by itself.
    """

    def __init__(
        self,
        settings: NatsSettings,
        *,
        on_connected: ConnectedCallback,
        on_reconnected: ReconnectedCallback,
        on_slow_consumer: SlowConsumerCallback | None = None,
    ) -> None:
        self._settings = settings
        self._on_connected = on_connected
        self._on_reconnected = on_reconnected
        self._on_slow_consumer = on_slow_consumer
        self.servers = ", ".join(redact_url(server) for server in settings.servers)
        # Refused publishes, as the server reports them; shared with every request made on the connection.
        self.denied = DeniedSubjects()
        self._client: Client | None = None
        self._closing = False
        self._closed = asyncio.Event()
        self._first_attempt_done = asyncio.Event()
        self._state_log = StateLog(log)
        self._client_error_log = StateLog(log)

    @property
    def client(self) -> Client | None:
        """The current client, or None before the first connection and after ``close``."""
        return self._client

    @property
    def connected(self) -> bool:
        return self._client is not None and self._client.is_connected

    async def first_attempt_done(self) -> None:
        """Wait until the first connection attempt succeeded or failed."""
        await self._first_attempt_done.wait()

    async def run(self) -> None:
        """Connect, and connect again from scratch whenever the client closes; backoff between attempts."""
        delay = RECONNECT_BACKOFF_INITIAL_SECONDS
        while True:
            if self._client is None or self._client.is_closed:
                # Cleared before connecting: a close reported while _connect still awaits is not lost.
                self._closed.clear()
                try:
                    await self._connect()
                except NatsConnectError as exc:
                    self._first_attempt_done.set()
                    message = f"{exc}; retrying with backoff"
                    self._state_log.enter(message, logging.WARNING, "%s", message)
                    await asyncio.sleep(delay * random.uniform(0.8, 1.2))  # noqa: S311 (jitter, not crypto)
                    delay = min(delay * 2, RECONNECT_BACKOFF_MAX_SECONDS)
                    continue
                delay = RECONNECT_BACKOFF_INITIAL_SECONDS
                self._first_attempt_done.set()
            await self._closed.wait()

    async def close(self) -> None:
        """Close the client within a bounded time; call after ``run`` was cancelled."""
        self._closing = True
        client, self._client = self._client, None
        if client is not None:
            await close_quietly(client, CLOSE_TIMEOUT_SECONDS)

    async def _connect(self) -> None:
        client = await connect_nats(
            self._settings,
            error_cb=self._client_error,
            disconnected_cb=self._disconnected,
            reconnected_cb=self._reconnected,
            closed_cb=self._client_closed,
        )
        self._client = client
        self._announce_connected()
        await self._on_connected(client)

    async def _disconnected(self) -> None:
        if not self._closing:
            message = f"lost the connection to NATS at {self.servers}; reconnecting"
            self._state_log.enter(message, logging.WARNING, "%s", message)

    async def _reconnected(self) -> None:
        self._announce_connected()
        self._on_reconnected()

    async def _client_closed(self) -> None:
        self._closed.set()

    async def _client_error(self, exc: Exception) -> None:
        # The client reports every message it drops; the event intake counts its own (one line per drop
        # would flood the log exactly when the exporter is busiest).
        claimed = self._on_slow_consumer
        if isinstance(exc, SlowConsumerError) and claimed is not None and claimed(exc.sub):
            return
        # A refused publish is remembered, so the request it dropped is reported as refused, not as slow.
        refused = self.denied.note(exc)
        # Reconnect attempts are reported by the state log; what else the client reports (a permission
        # denied, a slow consumer) would otherwise go unseen.
        if refused or self.connected:
            self._client_error_log.enter(str(exc), logging.WARNING, "NATS client error: %s", exc)

    def _announce_connected(self) -> None:
        server = ""
        if self._client is not None and self._client.connected_url is not None:
            server = redact_url(self._client.connected_url.geturl())
        message = f"connected to NATS at {server or self.servers}"
        self._state_log.enter(message, logging.INFO, "%s", message)
