"""The root of tireg's error hierarchy.

Every layer raises subclasses of :class:`TiregError`, so the CLI can turn any expected failure into
one line and exit code 1, while a real bug still shows its traceback. This module imports nothing
of ours, so every layer (converters included) may depend on it.
"""

from __future__ import annotations

import os


class TiregError(Exception):
    """A failure the user can act on: what failed, on which file, and what to do.

    ``str(err)`` is the one line the CLI prints: ``PATH: MESSAGE (HINT)``.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | os.PathLike[str] | None = None,
        hint: str | None = None,
    ) -> None:
        self.message = message
        self.path = os.fspath(path) if path is not None else None
        self.hint = hint
        super().__init__(message)

    def __str__(self) -> str:
        text = f"{self.path}: {self.message}" if self.path else self.message
        if self.hint:
            text += f" ({self.hint})"
        return text

    def with_path(self, path: str | os.PathLike[str]) -> TiregError:
        """Attach the file name when a lower layer only saw bytes."""
        if self.path is None:
            self.path = os.fspath(path)
        return self


def ends_early(got: int, expected: int | None = None) -> str:
    """The one phrase for a file that stops before its end, whoever notices it.

    A truncated download and a truncated file on disk are the same problem to the user, so the
    downloader and every reader say it the same way ("truncated: ends after 1,864 of 70,656
    bytes") instead of naming whatever parser tripped over the missing tail (a zip error).
    """
    if expected is None:
        return f"truncated: ends after {got:,} bytes"
    return f"truncated: ends after {got:,} of {expected:,} bytes"
