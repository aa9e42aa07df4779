"""DVAR early stopping: stop when the loss on one fixed batch has stopped moving.

Voronov et al., "Is This Loss Informative? Faster Text-to-Image Customization by Tracking
Objective Dynamics" (arXiv 2302.04841). The ordinary training loss is too noisy to say when a
concept is learned, because every step draws new images, noise and timesteps; the same loss on
one batch whose images, latents, noise, captions and timesteps are frozen once is smooth, and
it flattens out when the vectors stop changing what the model predicts.

The criterion is that of yandex-research/DVAR ``early_stopping.py`` (``VarEarlyStopper``): keep
the whole history of that loss and, once it holds ``window`` values, stop when the variance of
the last ``window`` values falls below ``eps`` times the variance of the whole history. The
defaults are the class's own (``eps=0.15``, ``window=200``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class VarianceStopper:
    """DVAR's rule over the history of the fixed-batch loss."""

    eps: float = 0.15
    window: int = 200
    history: list[float] = field(default_factory=list)
    ratio: float | None = None  # var(last window) / var(history), once there is a window

    def update(self, loss: float) -> bool:
        """Record one fixed-batch loss; True when the run should stop now."""
        self.history.append(loss)
        if len(self.history) < self.window:
            return False
        whole = float(np.var(self.history))
        recent = float(np.var(self.history[-self.window :]))
        self.ratio = recent / whole if whole > 0 else 0.0
        return self.ratio < self.eps

    def reason(self) -> str:
        """Why the run stopped, in words."""
        return (
            f"DVAR early stop: var(last {self.window} fixed-batch losses) / var(all "
            f"{len(self.history)}) = {self.ratio:.3f} < eps {self.eps}"
        )
