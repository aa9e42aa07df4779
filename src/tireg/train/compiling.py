"""``--compile``: the UNet through ``torch.compile``, or the UNet itself where compiling cannot
work.

``torch.compile`` compiles lazily, on the first call, and its default backend (inductor) builds
C++ kernels on a CPU: a machine without a C++ compiler (or without Python's headers) fails
there, deep inside the first training step. A speed option should not end a run, so the first
failure to build gives one warning line and the run goes on uncompiled. Only a build failure
(``BackendCompilerFailed``, which inductor's own ``InductorError`` subclasses) falls back: an
error in the model itself is raised as it would be uncompiled.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch

#: the longest cause a fallback warning quotes (inductor's messages can run to pages)
_CAUSE_CHARS = 200


class CompiledModule:
    """``module`` compiled, called like ``module``; after a failed build, ``module`` itself."""

    def __init__(self, module: torch.nn.Module, on_warning: Callable[[str], None]) -> None:
        self.module = module
        self._compiled: Callable[..., Any] | None = torch.compile(module)
        self._on_warning = on_warning

    def parameters(self) -> Iterator[torch.nn.Parameter]:
        return self.module.parameters()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self._compiled is not None:
            try:
                return self._compiled(*args, **kwargs)
            except torch._dynamo.exc.BackendCompilerFailed as exc:
                # nothing ran yet (the build comes before the graph's first execution), so
                # the same call, uncompiled, is the step the run would have taken
                self._compiled = None
                self._on_warning(
                    f"--compile: torch.compile cannot build here ({_cause(exc)}); "
                    "training uncompiled"
                )
        return self.module(*args, **kwargs)


def _cause(exc: BaseException) -> str:
    """The first line of what went wrong, cut short."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    first = lines[0] if lines else type(exc).__name__
    return first if len(first) <= _CAUSE_CHARS else first[: _CAUSE_CHARS - 3] + "..."
