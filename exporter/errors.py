"""Errors a user can cause and fix: reported as one line and exit status 2, never a traceback."""

from __future__ import annotations


class ConfigError(Exception):
    """Bad configuration: names the file (or flag/environment variable), the key and what is wrong."""

    def __init__(self, message: str, *, source: str | None = None, key: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.source = source
        self.key = key

    def __str__(self) -> str:
        where = ": ".join(part for part in (self.source, self.key) if part)
        return f"{where}: {self.message}" if where else self.message
