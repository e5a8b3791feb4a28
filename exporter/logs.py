"""Logging set-up: text or JSON lines on stderr, with secret values redacted from every record.

Secrets are kept out of log calls by design (``Secret`` hides itself); the redaction filter is the last
line of defence for the cases design misses, such as a library quoting a connect string in an error.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable, Hashable, Iterable
from datetime import UTC, datetime
from typing import Any, TextIO

from exporter.settings import LogSettings, Secret

REDACTED = "***"
LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
# Attributes every LogRecord has; anything else on a record came from `extra=` and is logged as a field.
_RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The fields a caller attached with ``extra=``, in the order given."""
    return {key: value for key, value in vars(record).items() if key not in _RECORD_ATTRIBUTES}


class SecretRedactionFilter(logging.Filter):
    """Replaces every registered secret value in a record's message, fields and traceback with ***."""

    def __init__(self, secrets: Iterable[Secret] = ()) -> None:
        super().__init__()
        # Longest first, so a secret that contains another is replaced whole.
        self._values = tuple(
            sorted({secret.value for secret in secrets if secret.value}, key=len, reverse=True)
        )

    def redact(self, text: str) -> str:
        for value in self._values:
            text = text.replace(value, REDACTED)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._values:
            return True
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            message = str(record.msg)  # mismatched %-arguments: keep the template, still redacted
        record.msg, record.args = self.redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        for key, value in extra_fields(record).items():
            text = value if isinstance(value, str) else str(value)
            redacted = self.redact(text)
            if redacted != text:
                setattr(record, key, redacted)
        return True


def _timestamp(record: logging.LogRecord) -> str:
    moment = datetime.fromtimestamp(record.created, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _traceback_text(formatter: logging.Formatter, record: logging.LogRecord) -> str:
    if record.exc_info and not record.exc_text:
        record.exc_text = formatter.formatException(record.exc_info)
    parts = [part for part in (record.exc_text, record.stack_info) if part]
    return "\n".join(parts)


class TextFormatter(logging.Formatter):
    """``ts level logger message key=value ...``, then the traceback if any."""

    def format(self, record: logging.LogRecord) -> str:
        line = f"{_timestamp(record)} {record.levelname.lower()} {record.name} {record.getMessage()}"
        fields = " ".join(f"{key}={_field_text(value)}" for key, value in extra_fields(record).items())
        if fields:
            line = f"{line} {fields}"
        trace = _traceback_text(self, record)
        return f"{line}\n{trace}" if trace else line


def _field_text(value: object) -> str:
    text = str(value)
    return json.dumps(text) if not text or any(char in text for char in ' "=\n') else text


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, the ``extra=`` fields, and exception."""

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in extra_fields(record).items():
            document.setdefault(key, value)
        trace = _traceback_text(self, record)
        if trace:
            document["exception"] = trace
        return json.dumps(document, default=str, ensure_ascii=False)


class StateLog:
    """Logs a state when it changes, not on every attempt: one line per outage, recovery or new finding.

    States are kept per ``key`` (a stage, a stream, an advisory kind). A key not seen yet is in state
    ``initial``, so entering that state logs nothing (a stage that never failed does not "recover").
    With ``repeat_after``, an unchanged state is logged again once that many seconds of ``clock`` have
    passed; ``suppressed`` tells how many repeats were held back since the last line.
    """

    def __init__(
        self,
        logger: logging.Logger,
        *,
        initial: Hashable = None,
        repeat_after: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._initial = initial
        self._repeat_after = repeat_after
        self._clock = clock
        self._states: dict[Hashable, tuple[Hashable, float]] = {}
        self._suppressed: dict[Hashable, int] = {}

    def state(self, key: Hashable = None) -> Hashable:
        """The last state entered for ``key``."""
        entry = self._states.get(key)
        return self._initial if entry is None else entry[0]

    def suppressed(self, key: Hashable = None) -> int:
        """Repeats of the current state not logged since the last line for ``key``."""
        return self._suppressed.get(key, 0)

    def enter(self, state: Hashable, level: int, message: str, *args: object, key: Hashable = None) -> bool:
        """Log ``message % args`` if ``key`` is not in ``state`` already (or the repeat time passed)."""
        now = self._clock()
        entry = self._states.get(key)
        if (entry is None and state == self._initial) or (
            entry is not None and entry[0] == state and not self._repeat_due(entry[1], now)
        ):
            if entry is not None:
                self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return False
        self._states[key] = (state, now)
        self._suppressed.pop(key, None)
        self._logger.log(level, message, *args)
        return True

    def _repeat_due(self, logged_at: float, now: float) -> bool:
        return self._repeat_after is not None and now - logged_at >= self._repeat_after


class _ExporterHandler(logging.StreamHandler[TextIO]):
    """Marks the handler this module installed, so configuring again replaces it and nothing else."""


def configure_logging(
    log: LogSettings,
    *,
    secrets: Iterable[Secret] = (),
    stream: TextIO | None = None,
) -> None:
    """Route all logging to ``stream`` (stderr) in the configured format and level, secrets redacted."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, _ExporterHandler):
            root.removeHandler(handler)
            handler.close()
    handler = _ExporterHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if log.format == "json" else TextFormatter())
    handler.addFilter(SecretRedactionFilter(secrets))
    root.addHandler(handler)
    root.setLevel(LEVELS[log.level])


class PartialStageLog:
    """A partial stage's failure and its recovery, each logged once per stage (the metric counts every cycle).

    ``context`` says what the stages concern, e.g. "for account 'A'"; empty for the exporter's own account.
    """

    def __init__(self, logger: logging.Logger, context: str = "") -> None:
        self._log = StateLog(logger, initial="ok")
        self._context = f" {context}" if context else ""

    def report(self, stage: str, error: str | None) -> None:
        if error is not None:
            self._log.enter(
                "failing",
                logging.WARNING,
                "collection stage %r failed%s, its values are left out or kept: %s",
                stage,
                self._context,
                error,
                key=stage,
            )
        else:
            self._log.enter(
                "ok", logging.INFO, "collection stage %r recovered%s", stage, self._context, key=stage
            )
