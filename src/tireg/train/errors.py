"""Why a training run refused to start or stopped: one line each, naming the file at fault.

The CLI prints ``str(err)`` and exits 1; nothing half-written is left behind, because every file a
run writes goes through :func:`tireg.files.atomic_writer`.
"""

from __future__ import annotations

from tireg.errors import TiregError


class TrainError(TiregError):
    """A training run cannot start or continue."""


class DatasetError(TrainError):
    """The image folder is empty, or an image (or its caption) cannot be read."""


class InitTextError(TrainError):
    """The init text needs more tokens than the embedding has vectors."""


class ScheduleError(TrainError):
    """A ``rate:step, ...`` schedule (learning rate, clip value) does not parse."""


class RunStateError(TrainError):
    """A run's checkpoint cannot be written (disk full, file too large) or read back."""
