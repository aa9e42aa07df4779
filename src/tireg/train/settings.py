"""Every setting of a training run, its default, and where that default comes from.

Defaults are A1111's Train tab (``modules/ui.py``; reference generator-trainer.md §6.2) unless
A1111 has no such setting; ``tireg train --help`` prints :data:`SOURCES` beside each option.
The settings are saved with every checkpoint and every catalogue entry of the run.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Literal

#: the choices of the settings that are one of a few words (the CLI offers exactly these)
Precision = Literal["auto", "bf16", "fp16", "fp32"]
AlphaMode = Literal["composite", "weight"]
Crop = Literal["center", "random"]
LatentSampling = Literal["once", "deterministic", "random"]
#: sampling steps of a preview render: A1111's txt2img default
PREVIEW_STEPS = 20


@dataclass(frozen=True)
class TrainSettings:
    """What a run trains and how; everything that decides the numbers it produces."""

    images: Path
    name: str
    init_text: str = "*"
    vectors: int = 1
    steps: int = 100_000
    lr: str = "0.005"
    batch_size: int = 1
    grad_accum: int = 1
    resolution: int = 512
    template: str = "style_filewords"
    flip: float = 0.0
    crop: Crop = "center"
    latent_sampling: LatentSampling = "once"
    alpha: AlphaMode = "composite"
    clip_grad: str | None = None
    precision: Precision = "auto"
    gradient_checkpointing: bool = False
    compile: bool = False
    save_every: int = 500
    preview_every: int = 500
    early_stop: bool = False
    early_stop_eps: float = 0.15
    early_stop_window: int = 200
    early_stop_batch: int = 4
    seed: int = 0
    prediction_type: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["images"] = str(self.images)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainSettings:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["images"] = Path(values["images"])
        return cls(**values)

    #: settings that may change when a run is continued (how long, how often it saves)
    RESUMABLE_CHANGES = frozenset({"steps", "save_every", "preview_every", "early_stop"})


#: where each default comes from, shown in ``--help``
SOURCES: dict[str, str] = {
    "init_text": 'A1111 Train tab "Initialization text"',
    "vectors": 'A1111 "Number of vectors per token"',
    "steps": 'A1111 "Max steps"',
    "lr": 'A1111 "Embedding Learning rate"',
    "batch_size": 'A1111 "Batch size"',
    "grad_accum": 'A1111 "Gradient accumulation steps"',
    "resolution": 'A1111 "Width"/"Height"',
    "template": 'A1111 "Prompt template"',
    "flip": "A1111 trains unflipped; the diffusers recipe uses 0.5",
    "crop": "A1111 and diffusers squash to the square; tireg keeps the aspect and crops",
    "latent_sampling": 'A1111 "Choose latent sampling method"',
    "alpha": 'A1111 "Use PNG alpha channel as loss weight" (off)',
    "clip_grad": 'A1111 "Gradient Clipping" (disabled; its value field says 0.1)',
    "precision": "bf16 on a GPU that has it, else fp16 on a GPU, fp32 on a CPU",
    "gradient_checkpointing": "off in A1111 and diffusers: it saves memory, costs ~20% speed",
    "compile": "off: compiling pays off only on long fixed-shape runs",
    "save_every": 'A1111 "Save a copy of embedding to log directory every N steps"',
    "preview_every": 'A1111 "Save an image to log directory every N steps"',
    "early_stop_eps": "DVAR VarEarlyStopper default (Voronov et al. 2023)",
    "early_stop_window": "DVAR VarEarlyStopper default",
    "early_stop_batch": "DVAR README (fixed evaluation batch of 4)",
    "seed": "fixed, so a run is reproducible",
}
