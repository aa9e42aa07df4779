"""Errors raised while hashing, detecting or looking up checkpoints."""

from __future__ import annotations

from tireg.errors import TiregError


class CheckpointError(TiregError):
    """A checkpoint file or folder could not be read, hashed or recognised."""
