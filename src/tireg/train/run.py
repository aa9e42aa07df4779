"""One ``tireg train`` run, end to end: find the model, load it, continue or start the run,
train, and report what it left.

Kept apart from :mod:`.loop` so the loop stays a loop: this module knows about the catalogue,
the run folder, resuming and previews; the loop only about tensors.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from tireg.converters import Embedding
from tireg.db.session import Catalogue
from tireg.train import checkpointing
from tireg.train.data import IMAGE_EXTENSIONS, caption_for, fill_template, load_template
from tireg.train.errors import TrainError
from tireg.train.loop import Hooks, StepRecord, compute_dtype, train
from tireg.train.model import from_pipeline
from tireg.train.records import Recorder, RunInfo
from tireg.train.settings import PREVIEW_STEPS, TrainSettings

#: A1111's log directory ("textual_inversion"); a run's folder is ``textual_inversion/NAME``
DEFAULT_LOG_DIR = Path("textual_inversion")
#: preview renders: A1111's txt2img defaults (:data:`PREVIEW_STEPS`, Euler a, CFG 7), four seeds
PREVIEW_SEEDS = (1, 2, 3, 4)


@dataclass
class RunReport:
    """What a run did and left (``tireg train --json`` prints :meth:`to_dict`)."""

    run_id: str
    run_dir: Path
    step: int
    loss: float | None
    stop_reason: str
    resumed_from: Path | None
    saves: list[dict[str, Any]]
    log: Path
    loss_curve: Path
    previews: list[Path] = field(default_factory=list)
    is_main: bool = True  # False in the other processes of a multi-process run

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "run_dir": str(self.run_dir),
            "step": self.step,
            "loss": self.loss,
            "stop_reason": self.stop_reason,
            "resumed_from": None if self.resumed_from is None else str(self.resumed_from),
            "entry": self.saves[-1] if self.saves else None,
            "saves": self.saves,
            "log": str(self.log),
            "loss_curve": str(self.loss_curve),
            "previews": [str(p) for p in self.previews],
        }


def resolve_model_path(spec: str, catalogue: Catalogue | None) -> Path:
    """A path as given, or the file of a catalogued model named by name or hash."""
    path = Path(spec).expanduser()
    if path.exists() or catalogue is None:
        return path
    from tireg.registry.model_refs import resolve_model

    with catalogue.transaction() as session:
        ref = resolve_model(session, spec)
    if ref.path is None:
        raise TrainError(
            f"model {spec!r} is known only by its hash, not as a file",
            hint="give the checkpoint's path, or register it with tireg model add",
        )
    return Path(ref.path)


def run_dir_and_checkpoint(
    settings: TrainSettings, out: Path | None, resume: Path | None
) -> tuple[Path, Path | None]:
    """Where the run lives and the checkpoint it continues from (None: a new run).

    ``--resume RUN`` names a run folder (its latest checkpoint) or one checkpoint file; without
    it, a run folder that already has checkpoints is continued."""
    if resume is not None:
        if resume.is_file():
            return out or resume.parent.parent, resume
        found = checkpointing.latest_checkpoint(resume)
        if found is None:
            raise TrainError("no checkpoint in this run folder", path=resume)
        return out or resume, found
    run_dir = out or DEFAULT_LOG_DIR / settings.name
    return run_dir, checkpointing.latest_checkpoint(run_dir)


def preview_renderer(
    pipe: Any, settings: TrainSettings, *, steps: int = PREVIEW_STEPS
) -> Callable[[int, dict[str, np.ndarray]], Image.Image]:
    """Previews on the training pipeline itself (one pipeline, reused; the diffusers recipe
    rebuilds one for every validation): the first template line for the first image, one
    column per seed, drawn as a grid by the validation generator's :func:`make_grid`."""
    from tireg.pipelines.embeddings import embeddings_applied
    from tireg.pipelines.render import render
    from tireg.validate.grid import make_grid

    def draw(step: int, vectors: dict[str, np.ndarray]) -> Image.Image:
        # read when the first preview is drawn: by then the loop has checked the folder
        first = min(p for p in settings.images.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
        line = load_template(settings.template)[0]
        prompt = fill_template(line, settings.name, caption_for(first))
        embedding = Embedding(name=settings.name, vectors=vectors)
        with embeddings_applied(pipe, [(settings.name, embedding)]):
            images = render(
                pipe,
                prompts=[prompt],
                seeds=PREVIEW_SEEDS,
                steps=steps,
                width=settings.resolution,
                height=settings.resolution,
            )
        labels = [f"seed {seed}" for seed in PREVIEW_SEEDS]
        return make_grid([images], [f"step {step}: {prompt}"], labels)

    return draw


def train_run(
    settings: TrainSettings,
    model_spec: str,
    *,
    out: Path | None = None,
    resume: Path | None = None,
    device: str = "auto",
    catalogue: Catalogue | None = None,
    on_progress: Callable[[StepRecord], None] | None = None,
    on_warning: Callable[[str], None] | None = None,
    preview_steps: int = PREVIEW_STEPS,
) -> RunReport:
    """Train, continuing the run in ``out`` when it has checkpoints; see :class:`RunReport`.
    ``on_warning`` hears each line the run has to say without stopping (``--compile`` falling
    back)."""
    import torch

    from tireg.pipelines.loading import load_model
    from tireg.validate.distributed import Workers

    workers = Workers(device)  # joins the process group under accelerate launch / torchrun
    run_dir, checkpoint = run_dir_and_checkpoint(settings, out, resume)
    device_name = workers.device()
    dtype = compute_dtype(settings.precision, torch.device(device_name))
    dtype_name = {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, "fp32")
    loaded = load_model(
        resolve_model_path(model_spec, catalogue),
        device=device_name,
        dtype=dtype_name,
        prediction_type=settings.prediction_type,
    )
    hashes = {"sha256": loaded.sha256, "autov2": loaded.autov2, "old_hash": loaded.old_hash}
    model = from_pipeline(
        loaded.pipe, prediction_type=loaded.prediction_type, name=loaded.name, hashes=hashes
    )
    recorder = Recorder(
        run_dir,
        settings,
        RunInfo("", loaded.name, hashes, model.family),
        catalogue,
        run_facts={
            "model": str(loaded.path),
            "model_hashes": hashes,
            "settings": settings.to_dict(),
        },
        preview=preview_renderer(loaded.pipe, settings, steps=preview_steps)
        if settings.preview_every
        else None,
        on_progress=on_progress,
    )
    result = train(
        settings,
        model,
        run_dir,
        resume_from=checkpoint,
        hooks=Hooks(
            recorder.on_start,
            recorder.on_step,
            recorder.on_save,
            recorder.on_preview,
            on_warning or Hooks.on_warning,
        ),
        processes=workers.count,
    )
    return RunReport(
        run_id=recorder.info.run_id,
        run_dir=run_dir,
        step=result.step,
        loss=result.loss,
        stop_reason=result.stop_reason,
        resumed_from=checkpoint,
        saves=recorder.saved,
        log=recorder.log_path,
        loss_curve=recorder.curve_path,
        previews=recorder.previews,
        is_main=workers.is_main,
    )
