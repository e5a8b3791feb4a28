"""Opening a NATS connection from the settings: servers, authentication, TLS, reconnect behaviour.

Used by the daemon, the dead-letter inspector and the demo, so they all authenticate the same way.
"""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable
from typing import Any

import nats
from nats.aio.client import Client

from exporter.settings import NatsSettings

ErrorCallback = Callable[[Exception], Awaitable[None]]
EventCallback = Callable[[], Awaitable[None]]


def build_tls_context(settings: NatsSettings) -> ssl.SSLContext | None:
    """A client TLS context from the CA and client certificate settings, or None when TLS is off."""
    tls = settings.tls
    servers_want_tls = any(server.startswith("tls://") for server in settings.servers)
    if not tls.enabled and not servers_want_tls:
        return None
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=tls.ca_file)
    if tls.cert_file:
        context.load_cert_chain(tls.cert_file, tls.key_file)
    return context


def connect_options(settings: NatsSettings, *, name: str) -> dict[str, Any]:
    """Keyword arguments for ``nats.connect``: no secret is logged from here, only passed on."""
    auth = settings.auth
    options: dict[str, Any] = {
        "servers": list(settings.servers),
        "name": name,
        "connect_timeout": settings.connect_timeout_seconds,
    }
    if auth.user is not None:
        options["user"] = auth.user
    if auth.password is not None:
        options["password"] = auth.password.value
    if auth.token is not None:
        options["token"] = auth.token.value
    if auth.nkey_seed_file is not None:
        options["nkeys_seed"] = auth.nkey_seed_file
    if auth.credentials_file is not None:
        options["user_credentials"] = auth.credentials_file
    tls_context = build_tls_context(settings)
    if tls_context is not None:
        options["tls"] = tls_context
    return options


async def connect_nats(  # noqa: PLR0913 (keyword-only callbacks, each optional)
    settings: NatsSettings,
    *,
    name: str = "nats-jetstream-exporter",
    reconnect: bool = True,
    error_cb: ErrorCallback | None = None,
    disconnected_cb: EventCallback | None = None,
    reconnected_cb: EventCallback | None = None,
    closed_cb: EventCallback | None = None,
) -> Client:
    """Connect once. With ``reconnect`` the client then reconnects by itself, forever, after an outage.

    The first connection attempt is not retried here: the daemon retries it with its own backoff so that
    it can serve ``nats_up 0`` meanwhile.
    """

    async def _quiet(_: Exception) -> None:
        # nats-py logs every failed attempt itself unless given a callback; the daemon logs state changes.
        return

    options = connect_options(settings, name=name)
    # The first attempt must fail fast, with its real reason passed to error_cb: nats-py, allowed to
    # reconnect, retries an initial connection silently (forever, or 60 times a server by default). One
    # quick retry per server here; the caller's backoff does the rest. Reconnection after an outage is
    # switched on once connected (below).
    options.update(
        allow_reconnect=False,
        max_reconnect_attempts=1,
        reconnect_time_wait=0.1,
        error_cb=error_cb or _quiet,
    )
    if disconnected_cb is not None:
        options["disconnected_cb"] = disconnected_cb
    if reconnected_cb is not None:
        options["reconnected_cb"] = reconnected_cb
    if closed_cb is not None:
        options["closed_cb"] = closed_cb
    client: Client = await nats.connect(**options)
    if reconnect:
        client.options["allow_reconnect"] = True
        client.options["max_reconnect_attempts"] = -1  # never give up after an outage
        client.options["reconnect_time_wait"] = 1
    return client
