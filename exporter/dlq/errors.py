"""The inspector's one error type and its exit statuses."""

from __future__ import annotations

from typing import Final

EXIT_FAILURE: Final = 1
EXIT_USAGE: Final = 2


class InspectorError(Exception):
    """A failure the user can understand from one line: exit status 1, or 2 for a usage error."""

    def __init__(self, message: str, *, exit_code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.exit_code = exit_code
