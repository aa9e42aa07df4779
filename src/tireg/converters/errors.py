"""Errors raised while reading or writing embedding files."""

from __future__ import annotations

from tireg.errors import TiregError


class EmbeddingFileError(TiregError):
    """The file could not be read as an embedding: corrupt, truncated, or structurally wrong."""


class NotAnEmbeddingError(EmbeddingFileError):
    """The file is well-formed but holds no embedding (a plain picture, a checkpoint, ...)."""


class UnsafePickleError(EmbeddingFileError):
    """A pickle asked for a global outside the allow-list; nothing from it was executed."""

    def __init__(self, global_name: str, *, path: str | None = None) -> None:
        self.global_name = global_name
        super().__init__(
            f"refused unsafe pickle: it asks for global '{global_name}', which no embedding needs",
            path=path,
            hint="nothing was executed; delete the file or get it from a trusted source",
        )


class UnsupportedConversionError(TiregError):
    """The target format cannot hold this embedding (e.g. SDXL into an A1111 PNG card)."""
