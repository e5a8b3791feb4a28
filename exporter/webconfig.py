"""``--web.config.file``: TLS and basic auth on the HTTP endpoints, in the Prometheus exporter-toolkit format.

Operators reuse the web config file they already have for Go exporters. Keys this exporter cannot honour
(inline PEM, Go cipher-suite names, rate limiting, ...) are refused with a clear message instead of being
silently ignored, because a silently ignored security setting is worse than a start-up error.
Relative paths are resolved against the web config file's directory, as exporter-toolkit does.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import logging
import re
import secrets
import ssl
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bcrypt
from aiohttp import hdrs, web
from aiohttp.typedefs import Handler, Middleware

from exporter.config import EncryptedKeyError, refuse_encrypted_key
from exporter.errors import ConfigError
from exporter.yamlfiles import DocumentReader, describe_type, quoted, read_yaml_file

logger = logging.getLogger(__name__)

# Kubelet and Docker probe these without credentials; they reveal nothing but "alive" and "ready".
PROBE_PATHS = frozenset({"/healthz", "/readyz"})
REALM = "nats-jetstream-exporter"

CLIENT_AUTH_TYPES: Mapping[str, ssl.VerifyMode] = {
    "NoClientCert": ssl.CERT_NONE,
    # The exporter never looks at a client certificate, so requesting one without verifying it admits
    # exactly the clients that NoClientCert admits; Python's ssl cannot request without verifying.
    "RequestClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
TLS_VERSIONS: Mapping[str, ssl.TLSVersion] = {
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}
# exporter-toolkit accepts these header names only, with these values where it restricts them.
ALLOWED_HEADERS: Mapping[str, frozenset[str] | None] = {
    "Content-Security-Policy": None,
    "X-Frame-Options": frozenset({"deny", "sameorigin"}),
    "X-Content-Type-Options": frozenset({"nosniff"}),
    "X-XSS-Protection": None,
    "Strict-Transport-Security": None,
}

TOP_LEVEL_KEYS = ("tls_server_config", "http_server_config", "basic_auth_users")
TLS_KEYS = (
    "cert_file",
    "key_file",
    "client_auth_type",
    "client_ca_file",
    "min_version",
    "max_version",
    "prefer_server_cipher_suites",
)
HTTP_KEYS = ("http2", "headers")
# exporter-toolkit keys this exporter refuses, with what to do instead.
UNSUPPORTED_KEYS: Mapping[str, str] = {
    "rate_limit": "rate limiting is not supported; put a rate-limiting proxy in front of the exporter",
    "tls_server_config.cert": "inline certificates are not supported; write the PEM to a file, use cert_file",
    "tls_server_config.key": "inline keys are not supported; write the PEM to a file and use key_file",
    "tls_server_config.client_ca": "inline CAs are not supported; put the PEM in a file, use client_ca_file",
    "tls_server_config.cipher_suites": "Go cipher-suite names are not supported; OpenSSL's defaults apply "
    "(TLS 1.3 suites and forward-secret AEAD suites for TLS 1.2)",
    "tls_server_config.curve_preferences": "curve preferences are not supported; OpenSSL's defaults apply",
    "tls_server_config.client_allowed_sans": "client_allowed_sans is not supported; issue client "
    "certificates from a dedicated CA and use RequireAndVerifyClientCert",
}

# A structurally valid bcrypt hash: cost 04-31, 22 salt characters whose last one carries only two bits
# (so the bcrypt library accepts it), 31 hash characters. Checked at load so a typo fails at start-up,
# not as a 401 at the first scrape.
BCRYPT_HASH = re.compile(r"\$2[aby]\$(0[4-9]|[12]\d|3[01])\$[./A-Za-z0-9]{21}[.Oeu][./A-Za-z0-9]{31}")
# Only credentials that passed bcrypt are cached, and bcrypt accepts one password of at most 72 bytes per
# hash, so the cache holds at most one entry per user; the cap bounds it anyway.
AUTH_CACHE_LIMIT = 256
# bcrypt runs in worker threads; at most this many at once, so a flood of wrong passwords cannot occupy
# every thread of the default executor (which renders the exposition) or every core.
BCRYPT_CONCURRENCY = 2


@dataclass(frozen=True, slots=True)
class TlsServerConfig:
    cert_file: str
    key_file: str
    client_auth_type: str = "NoClientCert"
    client_ca_file: str | None = None
    min_version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2
    max_version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_3
    prefer_server_cipher_suites: bool = True


class WebConfig:
    """A validated web config: the server's TLS context and the HTTP middleware it calls for."""

    def __init__(
        self,
        *,
        source: str,
        tls: TlsServerConfig | None = None,
        basic_auth_users: Mapping[str, bytes] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.source = source
        self.tls = tls
        self.basic_auth_users: Mapping[str, bytes] = dict(basic_auth_users or {})
        self.headers: Mapping[str, str] = dict(headers or {})
        # Built now, so an unreadable certificate is a start-up error rather than a failed handshake.
        self._certificates = CertificateReloader(tls, source) if tls is not None else None

    def ssl_context(self) -> ssl.SSLContext | None:
        """The server context for ``TCPSite(ssl_context=...)``, or None for plain HTTP."""
        return self._certificates.server_context() if self._certificates is not None else None

    def middleware(self, *, public_paths: frozenset[str] = PROBE_PATHS) -> Middleware | None:
        """Basic auth (except on ``public_paths``) and the configured response headers, or None."""
        if not self.basic_auth_users and not self.headers:
            return None
        checker = BasicAuthChecker(self.basic_auth_users) if self.basic_auth_users else None
        extra_headers = dict(self.headers)

        @web.middleware
        async def web_config_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
            if (
                checker is not None
                and request.path not in public_paths
                and not await checker.allows(request.headers.get(hdrs.AUTHORIZATION))
            ):
                return web.Response(
                    status=401,
                    text="401 Unauthorized\n",
                    headers={hdrs.WWW_AUTHENTICATE: f'Basic realm="{REALM}"', **extra_headers},
                )
            try:
                response = await handler(request)
            except web.HTTPException as exc:
                exc.headers.update(extra_headers)
                raise
            response.headers.update(extra_headers)
            return response

        return web_config_middleware

    def summary(self) -> str:
        """One line for ``check-config`` and the start-up log; names no user and no hash."""
        parts = []
        if self.tls is None:
            parts.append("plain HTTP")
        else:
            parts.append(f"TLS ({self.tls.client_auth_type})")
        if self.basic_auth_users:
            parts.append(f"basic auth for {len(self.basic_auth_users)} user(s)")
        if self.headers:
            parts.append(f"{len(self.headers)} response header(s)")
        return ", ".join(parts)


class BasicAuthChecker:
    """``Authorization: Basic`` against bcrypt hashes; successes are cached so a scrape costs no bcrypt."""

    def __init__(self, users: Mapping[str, bytes]) -> None:
        self._users = dict(users)
        # Unknown users are checked against this, so a wrong user name costs as long as a wrong password.
        self._decoy_hash = bcrypt.hashpw(secrets.token_bytes(16), bcrypt.gensalt(_typical_cost(users)))
        # Cache keys are an HMAC under a per-process key: the cache never holds a password, and a memory
        # dump does not allow an offline guess at one.
        self._cache_key = secrets.token_bytes(32)
        self._verified: OrderedDict[bytes, None] = OrderedDict()
        self._bcrypt_slots = asyncio.Semaphore(BCRYPT_CONCURRENCY)

    async def allows(self, authorization: str | None) -> bool:
        credentials = _basic_credentials(authorization)
        if credentials is None:
            return False
        user, password = credentials
        fingerprint = hmac.new(self._cache_key, user + b"\0" + password, hashlib.sha256).digest()
        if fingerprint in self._verified:
            self._verified.move_to_end(fingerprint)
            return True
        stored = self._users.get(user.decode("utf-8", errors="replace"))
        async with self._bcrypt_slots:
            matched = await asyncio.to_thread(_bcrypt_matches, password, stored or self._decoy_hash)
        if not (matched and stored is not None):
            return False
        self._verified[fingerprint] = None
        if len(self._verified) > AUTH_CACHE_LIMIT:
            self._verified.popitem(last=False)
        return True


class CertificateReloader:
    """The server TLS context, rebuilt when the certificate, key or client CA files change on disk.

    cert-manager and Kubernetes renew certificates in place; exporter-toolkit re-reads them per handshake,
    so operators expect a renewal to need no restart. Each handshake stats the files (microseconds) and,
    when they changed, switches that handshake to a freshly built context. A half-written or broken
    renewal is logged and the previous certificate kept.
    """

    def __init__(self, tls: TlsServerConfig, source: str) -> None:
        self._tls = tls
        self._source = source
        self._base = build_server_context(tls, source)
        self._stamp = self._files_stamp()
        self._base.sni_callback = self._on_client_hello
        self._current = self._base
        self._failed_stamp: tuple[tuple[int, int, int], ...] | None = None

    def server_context(self) -> ssl.SSLContext:
        return self._base

    def _on_client_hello(
        self, connection: ssl.SSLObject, _server_name: str | None, _: ssl.SSLContext
    ) -> None:
        self._refresh()
        if self._current is not self._base:
            connection.context = self._current

    def _refresh(self) -> None:
        try:
            stamp = self._files_stamp()
        except OSError:
            return  # mid-rotation: a file is briefly missing; keep serving the current certificate
        if stamp in (self._stamp, self._failed_stamp):
            return
        try:
            fresh = build_server_context(self._tls, self._source)
        except ConfigError as exc:
            self._failed_stamp = stamp
            logger.warning("keeping the previous TLS certificate: the renewed files are not usable: %s", exc)
            return
        self._current, self._stamp, self._failed_stamp = fresh, stamp, None
        logger.info("TLS certificate reloaded from %s", self._tls.cert_file)

    def _files_stamp(self) -> tuple[tuple[int, int, int], ...]:
        paths = (self._tls.cert_file, self._tls.key_file, self._tls.client_ca_file)
        stats = [Path(path).stat() for path in paths if path is not None]
        return tuple((st.st_ino, st.st_size, st.st_mtime_ns) for st in stats)


def load_web_config(path: str) -> WebConfig:
    """Read and validate a web config file; every problem is a ``ConfigError`` naming the file and key."""
    document = read_yaml_file(path, what="web config file")
    if document is None:
        return WebConfig(source=path)  # an empty file means no TLS and no auth, as in exporter-toolkit
    reader = _Reader(path, Path(path).parent)
    top = reader.section(document, "", TOP_LEVEL_KEYS)
    tls_section = top.get("tls_server_config")
    http_section = top.get("http_server_config")
    users_section = top.get("basic_auth_users")
    return WebConfig(
        source=path,
        tls=reader.tls(tls_section) if tls_section is not None else None,
        basic_auth_users=reader.users(users_section) if users_section is not None else None,
        headers=reader.http(http_section) if http_section is not None else None,
    )


def build_server_context(tls: TlsServerConfig, source: str) -> ssl.SSLContext:
    """A TLS server context from the files; a problem with any of them is a ``ConfigError``."""
    prefix = "tls_server_config"
    for key, file in (("cert_file", tls.cert_file), ("key_file", tls.key_file)):
        _require_readable(file, source, f"{prefix}.{key}")
    # Not create_default_context(CLIENT_AUTH): that trusts the system CAs for client certificates,
    # which would admit any publicly issued certificate. Only client_ca_file is trusted.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = tls.min_version
    context.maximum_version = tls.max_version
    if tls.prefer_server_cipher_suites:
        context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    else:
        context.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
    try:
        context.load_cert_chain(tls.cert_file, tls.key_file, password=refuse_encrypted_key)
    except EncryptedKeyError as exc:
        raise ConfigError(
            "the private key is encrypted; the exporter needs an unencrypted key file "
            "(protect it with file permissions or a Kubernetes Secret)",
            source=source,
            key=f"{prefix}.key_file",
        ) from exc
    except ssl.SSLError as exc:
        raise ConfigError(
            f"cert_file and key_file are not a PEM certificate and its matching private key ({exc.reason})",
            source=source,
            key=f"{prefix}.cert_file",
        ) from exc
    context.verify_mode = CLIENT_AUTH_TYPES[tls.client_auth_type]
    if tls.client_ca_file is not None:
        _require_readable(tls.client_ca_file, source, f"{prefix}.client_ca_file")
        try:
            context.load_verify_locations(cafile=tls.client_ca_file)
        except ssl.SSLError as exc:
            raise ConfigError(
                f"not a PEM CA certificate ({exc.reason})", source=source, key=f"{prefix}.client_ca_file"
            ) from exc
    return context


class _Reader(DocumentReader):
    """The web config's sections, read with the checks every YAML file of the exporter shares."""

    def __init__(self, source: str, base_dir: Path) -> None:
        super().__init__(source)
        self.base_dir = base_dir

    def section(self, value: Any, key: str, allowed: tuple[str, ...]) -> dict[str, Any]:
        return self.mapping(value, key, allowed, unsupported=UNSUPPORTED_KEYS)

    def path(self, value: Any, key: str) -> str:
        return str(self.base_dir / self.string(value, key))

    def tls_version(self, value: Any, key: str) -> ssl.TLSVersion:
        if value in ("TLS10", "TLS11"):
            self.fail(key, f"{value} is obsolete and not supported; use TLS12 or TLS13")
        return TLS_VERSIONS[self.choice(value, key, TLS_VERSIONS)]

    def tls(self, value: Any) -> TlsServerConfig:
        prefix = "tls_server_config"
        section = self.section(value, prefix, TLS_KEYS)
        for required in ("cert_file", "key_file"):
            if section.get(required) is None:
                self.fail(f"{prefix}.{required}", "is required when tls_server_config is set")
        auth_type = self.choice(
            section.get("client_auth_type", "NoClientCert"),
            f"{prefix}.client_auth_type",
            {**CLIENT_AUTH_TYPES, "RequireAnyClientCert": None},
        )
        if auth_type == "RequireAnyClientCert":
            self.fail(
                f"{prefix}.client_auth_type",
                "RequireAnyClientCert accepts any self-signed certificate and is not supported; "
                "use RequireAndVerifyClientCert with client_ca_file",
            )
        ca_file = section.get("client_ca_file")
        client_ca = self.path(ca_file, f"{prefix}.client_ca_file") if ca_file is not None else None
        if client_ca is not None and auth_type in ("NoClientCert", "RequestClientCert"):
            self.fail(
                f"{prefix}.client_auth_type",
                f"client_ca_file is set but client_auth_type {auth_type} never verifies client "
                "certificates; use RequireAndVerifyClientCert (or VerifyClientCertIfGiven)",
            )
        if client_ca is None and CLIENT_AUTH_TYPES[auth_type] != ssl.CERT_NONE:
            self.fail(f"{prefix}.client_ca_file", f"is required with client_auth_type {auth_type}")
        min_version = self.tls_version(section.get("min_version", "TLS12"), f"{prefix}.min_version")
        max_version = self.tls_version(section.get("max_version", "TLS13"), f"{prefix}.max_version")
        if min_version > max_version:
            self.fail(f"{prefix}.min_version", "is higher than max_version")
        prefer = self.boolean(
            section.get("prefer_server_cipher_suites", True), f"{prefix}.prefer_server_cipher_suites"
        )
        return TlsServerConfig(
            cert_file=self.path(section["cert_file"], f"{prefix}.cert_file"),
            key_file=self.path(section["key_file"], f"{prefix}.key_file"),
            client_auth_type=auth_type,
            client_ca_file=client_ca,
            min_version=min_version,
            max_version=max_version,
            prefer_server_cipher_suites=prefer,
        )

    def http(self, value: Any) -> dict[str, str]:
        prefix = "http_server_config"
        section = self.section(value, prefix, HTTP_KEYS)
        # http2 is accepted for compatibility: aiohttp serves HTTP/1.1 only, which Prometheus scrapes.
        self.boolean(section.get("http2", True), f"{prefix}.http2")
        headers = section.get("headers")
        if headers is None:
            return {}
        checked = self.section(headers, f"{prefix}.headers", tuple(ALLOWED_HEADERS))
        result: dict[str, str] = {}
        for name, raw in checked.items():
            key = f"{prefix}.headers.{name}"
            if raw is None or raw == "":
                continue  # exporter-toolkit: "unset if blank"
            text = self.string(raw, key)
            allowed = ALLOWED_HEADERS[name]
            if allowed is not None and text.lower() not in allowed:
                self.fail(key, f"{quoted(text)} is not one of {', '.join(sorted(allowed))}")
            result[name] = text
        return result

    def users(self, value: Any) -> dict[str, bytes]:
        key = "basic_auth_users"
        if not isinstance(value, dict):
            self.fail(key, f"must be a mapping of user name to bcrypt hash, not {describe_type(value)}")
        users: dict[str, bytes] = {}
        for raw_name, hashed in value.items():
            name = str(raw_name)  # YAML reads a user called 1234 as a number
            user_key = f"{key}.{name}"
            if not name or ":" in name:
                self.fail(user_key, "a user name must be non-empty and contain no ':' (HTTP basic auth)")
            # The hash is never echoed: exporter-toolkit treats it as a secret.
            if not isinstance(hashed, str) or BCRYPT_HASH.fullmatch(hashed) is None:
                self.fail(
                    user_key,
                    "is not a bcrypt hash ($2a$, $2b$ or $2y$, cost 04-31, 60 characters); "
                    "make one with: htpasswd -nBC 10 '' | tr -d ':\\n'",
                )
            users[name] = hashed.encode("ascii")
        return users


def _basic_credentials(authorization: str | None) -> tuple[bytes, bytes] | None:
    if authorization is None:
        return None
    scheme, _, encoded = authorization.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    user, separator, password = decoded.partition(b":")
    return (user, password) if separator else None


def _bcrypt_matches(password: bytes, hashed: bytes) -> bool:
    try:
        return bcrypt.checkpw(password, hashed)
    except ValueError:
        return False  # longer than bcrypt's 72 bytes: no hash can match it


def _typical_cost(users: Mapping[str, bytes]) -> int:
    costs = sorted(int(hashed[4:6]) for hashed in users.values())
    return costs[len(costs) // 2]


def _require_readable(path: str, source: str, key: str) -> None:
    try:
        with Path(path).open("rb") as handle:
            handle.read(1)
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {_reason(exc)}", source=source, key=key) from exc


def _reason(exc: Exception) -> str:
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
