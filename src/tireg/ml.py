"""The optional ML stack (torch, diffusers, transformers), installed with ``tireg[ml]``.

The registry never needs it: cataloguing, converting, hashing and installing embeddings read and
write torch files without torch. Only rendering validation images and training do, and those
gigabytes should not be forced on everyone who wants a catalogue. So the ML libraries are an
extra, and a command that needs them calls :func:`require_ml` first: a missing library is then
one line saying how to install it, not an ``ImportError`` traceback from deep inside a pipeline.
"""

from __future__ import annotations

import importlib.util

from tireg.errors import TiregError

#: the import names the ML commands need, as ``pip install 'tireg[ml]'`` provides them
ML_MODULES = ("torch", "diffusers", "transformers")

#: the command that installs the extra; with the default index on Linux it brings CUDA torch
INSTALL = "pip install 'tireg[ml]'"

#: the CPU-only torch wheel first, so that the extra does not pull the CUDA build
INSTALL_CPU = "pip install torch --index-url https://download.pytorch.org/whl/cpu"


class MLMissingError(TiregError):
    """A command needs the ``tireg[ml]`` extra and it is not installed."""


def missing_ml_modules() -> list[str]:
    """The ML libraries that cannot be imported here, found without importing any of them
    (importing torch alone takes seconds)."""
    return [name for name in ML_MODULES if importlib.util.find_spec(name) is None]


def require_ml(feature: str) -> None:
    """Raise :class:`MLMissingError` naming the install command unless the ML stack is present.

    ``feature`` names what the user asked for, as in ``require_ml("tireg validate")``; the error
    reads: ``tireg validate needs torch, diffusers (install the ML extra: pip install
    'tireg[ml]'; CPU only: pip install torch --index-url https://download.pytorch.org/whl/cpu
    first)``.
    """
    missing = missing_ml_modules()
    if missing:
        raise MLMissingError(
            f"{feature} needs {', '.join(missing)}",
            hint=f"install the ML extra: {INSTALL}; CPU only: {INSTALL_CPU} first",
        )
