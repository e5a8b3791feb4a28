"""Opening a NATS connection from the settings: servers, authentication, TLS, reconnect behaviour.

Used by the daemon, the dead-letter inspector and the demo, so they all authenticate the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import nats
from nats.aio.client import Client

from exporter.settings import NatsSettings

ErrorCallback = Callable[[Exception], Awaitable[None]]
EventCallback = Callable[[], Awaitable[None]]


class NatsConnectError(Exception):
    """A connection attempt failed; the message is one line naming the servers and the reason, no secrets."""


def redact_url(url: str) -> str:
    """A server URL without the user info, so credentials embedded in URLs never reach a log line."""
    try:
        parts = urlsplit(url if "://" in url else f"nats://{url}")
        _ = parts.port  # raises for a malformed port
    except ValueError:
        return "<malformed URL>"
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def describe_connect_error(exc: BaseException) -> str:
    """A one-line reason for a failed connection attempt, free of secrets."""
    text = str(exc).strip() or type(exc).__name__
    text = text.removeprefix("nats: ")
    if isinstance(exc, ConnectionRefusedError) or "Connect call failed" in text:
        return "connection refused"
    return text


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
    it can serve ``nats_up 0`` meanwhile. A failure raises NatsConnectError with the real reason.
    """
    last_error: list[Exception] = []  # only the latest: nats-py calls this for the connection's lifetime

    async def remember(exc: Exception) -> None:
        # Also keeps nats-py from logging every failed attempt itself; callers log state changes.
        last_error[:] = [exc]
        if error_cb is not None:
            await error_cb(exc)

    servers = ", ".join(redact_url(server) for server in settings.servers)
    try:
        options = connect_options(settings, name=name)
    except (OSError, ssl.SSLError) as exc:  # TLS files unreadable, or replaced by a broken rotation
        raise NatsConnectError(f"cannot connect to NATS at {servers}: TLS set-up failed: {exc}") from None
    # The first attempt must fail fast, with its real reason passed to error_cb: nats-py, allowed to
    # reconnect, retries an initial connection silently (forever, or 60 times a server by default). One
    # quick retry per server here; the caller's backoff does the rest. Reconnection after an outage is
    # switched on once connected (below).
    options.update(
        allow_reconnect=False,
        max_reconnect_attempts=1,
        reconnect_time_wait=0.1,
        error_cb=remember,
    )
    if disconnected_cb is not None:
        options["disconnected_cb"] = disconnected_cb
    if reconnected_cb is not None:
        options["reconnected_cb"] = reconnected_cb
    if closed_cb is not None:
        options["closed_cb"] = closed_cb
    try:
        client: Client = await nats.connect(**options)
    except Exception as exc:  # noqa: BLE001 (nats-py raises many types; each becomes one explained line)
        # nats-py says only "no servers available" and hands the real reason to the error callback.
        reason = describe_connect_error(last_error[-1] if last_error else exc)
        raise NatsConnectError(f"cannot connect to NATS at {servers}: {reason}") from None
    if reconnect:
        client.options["allow_reconnect"] = True
        client.options["max_reconnect_attempts"] = -1  # never give up after an outage
        client.options["reconnect_time_wait"] = 1
    return client


async def close_quietly(nc: Client, timeout: float = 2.0) -> None:  # noqa: ASYNC109 (bounds the close itself)
    """Close ``nc`` within ``timeout`` seconds, whatever happens: callers are tearing down, and a close
    that fails or hangs (a server gone mid-flush) must neither raise over the real outcome nor hold it up.
    """
    with contextlib.suppress(Exception):
        await asyncio.wait_for(nc.close(), timeout)
