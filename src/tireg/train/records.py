"""What a run leaves: a JSONL log, a loss curve, embedding files and A1111 PNG cards per save,
catalogue entries linked as versions of one lineage, and preview grids.

Files go under the run's folder (``--out``)::

    run.json                      the run's id, model and settings
    log.jsonl                     one line per step: step, loss, lr, seconds, fixed-batch loss
    loss.png                      the loss curve (raw and smoothed), redrawn at every save
    checkpoints/step-NNNNNNN.safetensors   (see :mod:`.checkpointing`)
    embeddings/NAME-STEP.safetensors       tireg's own format, every save
    cards/NAME-STEP.png           A1111 PNG card ("save images with embedding in PNG chunks")
    previews/step-NNNNNNN.png     preview grid every ``preview_every`` steps
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from tireg.converters import Embedding, write_file
from tireg.db.schema import CompatRow
from tireg.db.session import Catalogue
from tireg.files import atomic_write_bytes
from tireg.registry.importer import import_embedding
from tireg.registry.lineage import TRAIN, last_version, record_version
from tireg.train.loop import StepRecord
from tireg.train.settings import TrainSettings

#: how much of the previous smoothed loss each step keeps (an exponential moving average)
SMOOTHING = 0.9


@dataclass(frozen=True)
class RunInfo:
    """The facts every save of a run carries (the run id is known once the run starts)."""

    run_id: str
    model_name: str
    model_hashes: dict[str, str | None]  # sha256, autov2, old_hash (None for a folder)
    family: str


def start_run(run_dir: Path, info: dict[str, Any]) -> str:
    """The run id of ``run_dir``: read from its ``run.json``, or a new one written there."""
    path = run_dir / "run.json"
    if path.is_file():
        return str(json.loads(path.read_text(encoding="utf-8"))["run_id"])
    run_id = uuid.uuid4().hex
    atomic_write_bytes(path, json.dumps({"run_id": run_id, **info}, indent=2).encode())
    return run_id


def read_log(path: Path) -> list[dict[str, Any]]:
    """The log's entries (a line cut short by a killed process is skipped)."""
    if not path.is_file():
        return []
    entries = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            entries.append(json.loads(line))
        except ValueError:
            continue
    return entries


@dataclass
class Recorder:
    """The loop's hooks: log every step, record every save, draw previews."""

    run_dir: Path
    settings: TrainSettings
    info: RunInfo
    catalogue: Catalogue | None
    run_facts: dict[str, Any] = field(default_factory=dict)  # what run.json records
    preview: Callable[[int, dict[str, np.ndarray]], Image.Image] | None = None
    on_progress: Callable[[StepRecord], None] | None = None
    entries: list[dict[str, Any]] = field(default_factory=list)
    saved: list[dict[str, Any]] = field(default_factory=list)
    previews: list[Path] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.log_path = self.run_dir / "log.jsonl"
        self.curve_path = self.run_dir / "loss.png"
        self.started = time.monotonic()

    def on_start(self, step: int) -> None:
        """The run's inputs are good: take its id (the folder's, or a new one) and keep the
        log up to ``step`` (where a resumed run continues from), dropping the rest."""
        self.info = replace(self.info, run_id=start_run(self.run_dir, self.run_facts))
        self.entries = [e for e in read_log(self.log_path) if e["step"] <= step]
        if step or self.log_path.exists():
            text = "".join(json.dumps(e) + "\n" for e in self.entries)
            atomic_write_bytes(self.log_path, text.encode())

    def on_step(self, record: StepRecord) -> None:
        entry = {
            "step": record.step,
            "loss": record.loss,
            "lr": record.lr,
            "time": round(time.monotonic() - self.started, 3),
        }
        if record.fixed_batch_loss is not None:
            entry["fixed_batch_loss"] = record.fixed_batch_loss
        self.entries.append(entry)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("a", encoding="utf-8") as log:
            log.write(json.dumps(entry) + "\n")
        if self.on_progress is not None:
            self.on_progress(record)

    def embedding(self, step: int, loss: float, vectors: dict[str, np.ndarray]) -> Embedding:
        """The embedding of one save: A1111's fields plus the run's facts as extras."""
        hashes = self.info.model_hashes
        return Embedding(
            name=self.settings.name,
            vectors=vectors,
            step=step,
            # A1111 records the checkpoint's short hash (AutoV2) as ``sd_checkpoint``
            trained_on_hash=hashes.get("autov2") or hashes.get("old_hash"),
            trained_on_name=self.info.model_name,
            extras={
                "tireg.train.run_id": self.info.run_id,
                "tireg.train.loss": f"{loss:.6f}",
                "tireg.train.settings": json.dumps(self.settings.to_dict(), sort_keys=True),
            },
        )

    def on_save(
        self, step: int, loss: float, vectors: dict[str, np.ndarray], checkpoint: Path
    ) -> None:
        embedding = self.embedding(step, loss, vectors)
        stem = f"{self.settings.name}-{step}"
        (file,) = write_file(
            embedding, self.run_dir / "embeddings" / f"{stem}.safetensors", "tireg", force=True
        )
        card = None
        if self.info.family != "sdxl":  # an A1111 card holds one encoder's vectors only
            (card,) = write_file(
                embedding, self.run_dir / "cards" / f"{stem}.png", "png", force=True
            )
        draw_loss_curve(self.entries, self.curve_path)
        entry_id = self._record(embedding, file, step, loss)
        self.saved.append(
            {
                "step": step,
                "loss": loss,
                "embedding_id": entry_id,
                "vectors_sha256": embedding.vectors_sha256(),
                "file": str(file),
                "card": None if card is None else str(card),
                "checkpoint": str(checkpoint),
            }
        )

    def _record(self, embedding: Embedding, file: Path, step: int, loss: float) -> int | None:
        """One transaction: the entry, its trained-on facts and its place in the lineage."""
        if self.catalogue is None:
            return None
        old_hash = self.info.model_hashes.get("old_hash")
        with self.catalogue.transaction() as session:
            row, _ = import_embedding(
                session, embedding, location=str(file), original_format="tireg"
            )
            if old_hash and old_hash != embedding.trained_on_hash:
                fact = ("trained_on", old_hash, "tireg train (A1111 old hash)")
                known = {(c.relation, c.model_ref, c.evidence) for c in row.compat}
                if fact not in known:
                    session.add(
                        CompatRow(
                            embedding_id=row.id,
                            relation=fact[0],
                            model_ref=fact[1],
                            evidence=fact[2],
                        )
                    )
            parent = last_version(session, self.info.run_id)
            record_version(
                session,
                row.id,
                run_id=self.info.run_id,
                operation=TRAIN,
                parent_id=None if parent is None else parent.embedding_id,
                step=step,
                loss=loss,
                settings=self.settings.to_dict(),
            )
            return row.id

    def on_preview(self, step: int, vectors: dict[str, np.ndarray]) -> None:
        if self.preview is None:
            return
        grid = self.preview(step, vectors)
        path = self.run_dir / "previews" / f"step-{step:07d}.png"
        atomic_write_bytes(path, _png(grid))
        self.previews.append(path)


def smoothed(values: Sequence[float], keep: float = SMOOTHING) -> list[float]:
    """An exponential moving average, debiased at the start (as TensorBoard's smoothing)."""
    out, average, weight = [], 0.0, 0.0
    for value in values:
        average = keep * average + (1 - keep) * value
        weight = keep * weight + (1 - keep)
        out.append(average / weight)
    return out


def draw_loss_curve(entries: Sequence[dict[str, Any]], path: Path) -> None:
    """The loss per step (grey), smoothed (blue) and DVAR's fixed-batch loss when recorded
    (orange), drawn with Pillow (matplotlib is not a dependency) and written atomically."""
    if not entries:
        return
    width, height, margin = 800, 400, 56
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    steps = [e["step"] for e in entries]
    series = [
        ([e["loss"] for e in entries], (190, 190, 190)),
        (smoothed([e["loss"] for e in entries]), (31, 119, 180)),
    ]
    fixed = [e.get("fixed_batch_loss") for e in entries]
    if all(v is not None for v in fixed):
        series.append(([float(v) for v in fixed if v is not None], (255, 127, 14)))
    low = min(min(s) for s, _ in series)
    high = max(max(s) for s, _ in series)
    span = (high - low) or 1.0
    first, last = steps[0], steps[-1]
    run = (last - first) or 1

    def point(step: int, value: float) -> tuple[float, float]:
        x = margin + (step - first) / run * (width - 2 * margin)
        y = height - margin - (value - low) / span * (height - 2 * margin)
        return x, y

    draw.rectangle((margin, margin, width - margin, height - margin), outline="black")
    for values, colour in series:
        points = [point(s, v) for s, v in zip(steps, values, strict=True)]
        if len(points) > 1:
            draw.line(points, fill=colour, width=2)
        else:
            draw.point(points, fill=colour)
    draw.text((margin, height - margin + 8), f"step {first}", fill="black", font=font)
    draw.text((width - margin - 60, height - margin + 8), f"step {last}", fill="black", font=font)
    draw.text((4, margin - 6), f"{high:.4f}", fill="black", font=font)
    draw.text((4, height - margin - 6), f"{low:.4f}", fill="black", font=font)
    legend = "loss (grey), smoothed (blue)" + (
        ", fixed-batch loss (orange)" if len(series) > 2 else ""
    )
    draw.text((margin, 16), legend, fill="black", font=font)
    atomic_write_bytes(path, _png(image))


def _png(image: Image.Image) -> bytes:
    buffer = BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
