"""Raw JetStream API requests: subject prefix (with the domain), JSON decoding, the ``error`` key.

nats-py's typed JetStream manager drops fields and pages only 256 entries, so collection reads the JSON
itself. Every reply is checked for ``error``; every failure becomes a ``JetStreamRequestError`` whose
message names the API subject (never credentials), so the caller can report it as one line.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg

# err_code values the collection treats as facts rather than failures.
STREAM_NOT_FOUND = 10059
NO_MESSAGE_FOUND = 10037
JETSTREAM_NOT_ENABLED_FOR_ACCOUNT = 10039
# The shortest wait a request is given, even when its caller's time is (nearly) up: it still gets sent,
# and fails as a timeout that names its subject.
MIN_TIMEOUT_SECONDS = 0.001


class JetStreamRequestError(Exception):
    """A JetStream API request that produced no usable reply."""

    def __init__(self, subject: str, message: str) -> None:
        super().__init__(f"{subject}: {message}")
        self.subject = subject


class JetStreamTimeoutError(JetStreamRequestError):
    """No reply in time: with the refusals known (``DeniedSubjects``), the server is slow or gone, or, on a
    cluster, the leader of the stream or consumer asked is down or being elected."""


class JetStreamPermissionError(JetStreamRequestError):
    """The server refused the exporter's user to publish the request (it answers nothing, so it timed out)."""


class DeniedSubjects:
    """The subjects the server refused the connection to publish to, as its error callback reports them.

    A request to a subject the user may not publish to is dropped by the server, which says so only in an
    asynchronous ``-ERR`` (nats-py hands it to the error callback, lower-cased); the request itself just
    times out. Remembering the refusals lets that timeout be reported as what it is.
    """

    _PREFIX = "permissions violation for publish to "

    def __init__(self) -> None:
        self._subjects: set[str] = set()

    def note(self, error: Exception) -> bool:
        """Remember the subject of a publish permissions violation; False for any other error."""
        text = str(error).removeprefix("nats: ").strip().lower()
        if not text.startswith(self._PREFIX):
            return False
        self._subjects.add(text.removeprefix(self._PREFIX).strip().strip('"'))
        return True

    def __contains__(self, subject: object) -> bool:
        return isinstance(subject, str) and subject.lower() in self._subjects

    def __bool__(self) -> bool:
        return bool(self._subjects)

    def forget(self, subject: str) -> None:
        """A reply came: the subject is allowed now (permissions reload without reconnecting)."""
        self._subjects.discard(subject.lower())


class JetStreamUnavailableError(JetStreamRequestError):
    """Nobody answers the subject: JetStream is not enabled on the server, or the domain is wrong."""


class JetStreamApiError(JetStreamRequestError):
    """The server answered with an ``error`` object."""

    def __init__(self, subject: str, *, code: int, err_code: int, description: str) -> None:
        super().__init__(subject, f"{description} (code {code}, err_code {err_code})")
        self.code = code
        self.err_code = err_code
        self.description = description


def api_prefix(domain: str | None) -> str:
    """``$JS.API``, or ``$JS.<domain>.API`` to reach the JetStream of another domain."""
    return f"$JS.{domain}.API" if domain else "$JS.API"


def api_error_from_reply(subject: str, reply: Mapping[str, Any]) -> JetStreamApiError | None:
    """The typed error of a decoded reply, or None when the reply carries no ``error`` key."""
    error = reply.get("error")
    if error is None:
        return None
    if not isinstance(error, Mapping):
        return JetStreamApiError(subject, code=0, err_code=0, description=str(error))
    return JetStreamApiError(
        subject,
        code=int(error.get("code", 0)),
        err_code=int(error.get("err_code", 0)),
        description=str(error.get("description", "unknown error")),
    )


class JetStreamApi:
    """Requests to one account's JetStream API over an existing connection."""

    def __init__(
        self,
        nc: Client,
        *,
        domain: str | None,
        timeout_seconds: float,
        denied: DeniedSubjects | None = None,
    ) -> None:
        self._nc = nc
        self._denied = denied
        self._prefix = api_prefix(domain)
        self._timeout = timeout_seconds

    def subject(self, api: str) -> str:
        """The full subject of an API endpoint, e.g. ``STREAM.LIST`` -> ``$JS.hub.API.STREAM.LIST``."""
        return f"{self._prefix}.{api}"

    async def request_json(
        self, api: str, payload: Mapping[str, Any] | None = None, *, reply_within: float | None = None
    ) -> dict[str, Any]:
        """Send a JSON request and return the decoded reply; raise on no reply, bad JSON or ``error``.

        ``reply_within`` shortens this one request's wait (never lengthens it past the API's own timeout).
        """
        subject = self.subject(api)
        msg = await self.request_message(api, payload, reply_within=reply_within)
        try:
            reply = json.loads(msg.data)
        except ValueError as exc:
            raise JetStreamRequestError(subject, f"reply is not JSON ({exc})") from None
        if not isinstance(reply, dict):
            raise JetStreamRequestError(subject, "reply is not a JSON object")
        error = api_error_from_reply(subject, reply)
        if error is not None:
            raise error
        return reply

    async def request_message(
        self, api: str, payload: Mapping[str, Any] | None = None, *, reply_within: float | None = None
    ) -> Msg:
        """Send a request and return the raw reply (for replies that carry headers, like direct get)."""
        subject = self.subject(api)
        data = json.dumps(payload, separators=(",", ":")).encode() if payload is not None else b""
        wait = (
            self._timeout
            if reply_within is None
            else max(MIN_TIMEOUT_SECONDS, min(reply_within, self._timeout))
        )
        try:
            msg: Msg = await self._nc.request(subject, data, timeout=wait)
        except nats.errors.NoRespondersError:
            raise JetStreamUnavailableError(
                subject, "no responders (is JetStream enabled, and is the domain right?)"
            ) from None
        except nats.errors.TimeoutError:
            raise self._timeout_error(subject, wait) from None
        except nats.errors.Error as exc:
            raise JetStreamRequestError(subject, _describe(exc)) from None
        if self._denied:
            self._denied.forget(subject)
        return msg

    def _timeout_error(self, subject: str, wait: float) -> JetStreamRequestError:
        if self._denied is None:
            # The connection's refusals are not known here: both causes remain possible.
            return JetStreamTimeoutError(
                subject,
                f"no reply within {wait:g}s (may the exporter's user publish to this subject?)",
            )
        if subject in self._denied:
            return JetStreamPermissionError(
                subject, "permissions violation: the exporter's user may not publish to this subject"
            )
        return JetStreamTimeoutError(subject, f"timed out after {wait:g}s: the server is slow or unreachable")


def _describe(exc: Exception) -> str:
    # Some nats-py errors have an empty str(); the class name still tells the user what happened.
    return str(exc) or type(exc).__name__
