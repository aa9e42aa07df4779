"""``tireg validate``: render embeddings on checkpoints, save a grid, record the evidence.

What makes it faster than the obvious script (``bench/validate.py`` measures it):

* each pipeline is loaded once per model and kept for every embedding;
* the row without embeddings is rendered once per model and settings, and kept in an on-disk
  cache keyed by the model's SHA-256 and every setting that decides its pixels, so the next run
  on that model (another embedding, say) renders only the new rows;
* images are batched up to ``--batch-size`` across embeddings: h4's renderer keeps one seed and
  generator per image, so a batch gives the pictures one-at-a-time rendering gives.

The steps of :func:`validate`: 1. check the settings (nothing is loaded before bad input is
refused); 2. name the embeddings and models, and refuse an embedding that cannot work on a
model with ``check``'s verdict unless ``force`` (then it is applied where its widths fit, as
ComfyUI applies it, with a warning: :mod:`tireg.pipelines.embeddings`); 3. plan every image
(its file, its prompt, and whether the cache holds it); 4. render this process's share, model
by model; 5. on the main process: build the grid and record the run in one transaction.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session

from tireg import config
from tireg.checkpoints import HashCache
from tireg.converters import Embedding, read_file
from tireg.db.schema import EmbeddingRow
from tireg.db.session import Catalogue
from tireg.files import atomic_write_bytes, sha256_file
from tireg.progress import Advance
from tireg.registry import compat, model_refs, naming, uis
from tireg.registry.store import ContentStore
from tireg.registry.validations import ImageMade, ModelUsed, RunRecord, record_run
from tireg.validate.distributed import Workers
from tireg.validate.grid import make_grid
from tireg.validate.infotext import Generation, png_bytes, save_png
from tireg.validate.settings import Settings, ValidationError, checked, key, uses_ensd

if TYPE_CHECKING:
    from PIL.Image import Image

#: ``on_warning(line)`` is told what a forced embedding loses on a model, one line each
Warn = Callable[[str], None]

_UNSAFE = re.compile(r"[^\w.-]+")


@dataclass(frozen=True)
class Subject:
    """One embedding to validate: the vectors, the word prompts use, and how it is named."""

    ref: str  # what listings show: NAME, NAME@HEX, or the file path given
    word: str  # the prompt word: the name it is installed as in A1111
    embedding: Embedding
    vectors_sha256: str
    file_sha256: str  # of the file loaded (A1111's TI hash is the file's)
    row_id: int | None  # the catalogue's id; None for a file given by path

    @property
    def catalogued(self) -> bool:
        return self.row_id is not None

    def to_dict(self) -> dict[str, Any]:
        return {
            "ref": self.ref,
            "prompt_word": self.word,
            "family": self.embedding.family.value,
            "vectors_sha256": self.vectors_sha256,
            "catalogued": self.catalogued,
        }


@dataclass(frozen=True)
class Checkpoint:
    """One model to render on: its file and every hash naming it."""

    spec: str
    name: str
    path: Path
    family: str
    sha256: str | None  # None for a diffusers folder (no single file to hash)
    autov2: str | None
    old_hash: str | None

    @cached_property
    def identity(self) -> str:
        """What the row-without cache is keyed by: the file's SHA-256, or for a diffusers folder
        (no single file) a digest of every file's relative path and SHA-256 (hash-cached)."""
        if self.sha256 is not None:
            return self.sha256
        digest = hashlib.sha256()
        with HashCache() as cache:
            for file in sorted(p for p in self.path.rglob("*") if p.is_file()):
                relative = file.relative_to(self.path).as_posix()
                digest.update(f"{relative}:{cache.hashes(file).hashes.sha256};".encode())
        return digest.hexdigest()

    @property
    def label(self) -> str:
        """Name and short hash, as the grid and A1111's checkpoint list show them."""
        return f"{self.name} [{self.autov2}]" if self.autov2 else self.name


@dataclass(frozen=True)
class Task:
    """One image of the plan. ``subject`` is ``None`` for the row without embeddings."""

    model: int
    subject: int | None
    seed: int
    prompt: str
    path: Path
    cache: Path | None  # where the row without embeddings is kept between runs
    cached: bool  # the cache already holds it: nothing to render


@dataclass(frozen=True)
class ValidationRun:
    """What a run made, for the summary table and ``--json``."""

    run_id: int
    out_dir: Path
    grid: Path
    settings: Settings
    subjects: list[Subject]
    models: list[ModelUsed]
    images: list[ImageMade]
    seconds: float
    rendered: int  # images rendered by this run (the others came from the cache)
    processes: int = 1
    joined: str = "one process"  # how several processes were joined (accelerate's words)
    forced: list[str] = field(default_factory=list)  # "ref on model: reason" rendered anyway
    warnings: list[str] = field(default_factory=list)  # what forced embeddings lost, per model

    def to_dict(self) -> dict[str, Any]:
        return {
            "run": self.run_id,
            "out_dir": str(self.out_dir),
            "grid": str(self.grid),
            "settings": self.settings.to_dict(),
            "seeds": list(self.settings.seeds),
            "embeddings": [s.to_dict() for s in self.subjects],
            "models": [vars(m) for m in self.models],
            "images": [vars(i) for i in self.images],
            "timings": {
                "seconds": self.seconds,
                "images": len(self.images),
                "rendered": self.rendered,
                "from_cache": len(self.images) - self.rendered,
                "images_per_second": len(self.images) / self.seconds if self.seconds else None,
                "processes": self.processes,
                "joined": self.joined,
                "per_model_seconds": {m.name: m.seconds for m in self.models},
            },
            "forced": self.forced,
            "warnings": self.warnings,
        }


# -- 2. naming what to render ------------------------------------------------------------------


def _subjects(catalogue: Catalogue, specs: Sequence[str]) -> list[Subject]:
    """Each spec as a :class:`Subject`: a file path is read as it is (never executed), anything
    else is named by the catalogue's naming rule and loaded from the content store."""
    if not specs:
        raise ValidationError("no embedding to validate", hint="give a NAME or a file path")
    store = ContentStore()
    subjects = []
    with catalogue.reading() as session:
        for spec in specs:
            path = Path(spec).expanduser()
            if path.is_file():
                embedding = read_file(path)
                subjects.append(
                    Subject(
                        str(path),
                        uis.file_stem("a1111", path.stem),
                        embedding,
                        embedding.vectors_sha256(),
                        sha256_file(path),
                        row_id=None,
                    )
                )
                continue
            row = naming.resolve(session, spec)
            subjects.append(
                Subject(
                    naming.refs(session, [row])[row.id],
                    uis.file_stem("a1111", naming.prompt_word(row)),  # what install writes
                    store.get(row.vectors_sha256),
                    row.vectors_sha256,
                    sha256_file(store.path(row.vectors_sha256)),
                    row_id=row.id,
                )
            )
    return subjects


def _checkpoint(spec: str, ref: model_refs.ModelRef) -> Checkpoint:
    if ref.path is None:
        raise ValidationError(
            f"model {spec!r} ({ref.name}) has no file tireg knows",
            hint="give the checkpoint's path, or register it with: tireg model add PATH",
        )
    return Checkpoint(
        spec, ref.name, Path(ref.path), ref.family, ref.sha256, ref.autov2, ref.old_hash
    )


def _checkpoints(
    catalogue: Catalogue, specs: Sequence[str], subjects: Sequence[Subject], force: bool
) -> tuple[list[Checkpoint], list[tuple[int, int]], list[str]]:
    """The models, the ``(subject, model)`` pairs that count as evidence, and the pairs forced.

    A model given as a file is hashed (cached) and recorded, as ``tireg check`` does; each
    embedding gets ``check``'s verdict on each model, and one that cannot work stops the run
    unless ``force``: then the renderer applies what fits and warns about the rest, and the
    run claims nothing for it."""
    if not specs:
        raise ValidationError("no model to render on", hint="give --model PATH, NAME or HASH")
    models: list[Checkpoint] = []
    evidence: list[tuple[int, int]] = []
    forced: list[str] = []
    with catalogue.transaction() as session:
        for m, spec in enumerate(specs):
            ref = model_refs.resolve_model(session, spec)
            models.append(_checkpoint(spec, ref))
            for s, subject in enumerate(subjects):
                verdict = _verdict(session, subject, ref)
                if not verdict.cannot_work:
                    evidence.append((s, m))
                    continue
                line = f"{subject.ref} on {ref.name}: {verdict.reason}"
                if not force:
                    raise ValidationError(line, hint="--force tries it anyway")
                forced.append(line)
    return models, evidence, forced


def _verdict(session: Session, subject: Subject, model: model_refs.ModelRef) -> compat.Verdict:
    if subject.row_id is not None:
        return compat.verdict(session, session.get_one(EmbeddingRow, subject.row_id), model)
    family = subject.embedding.family.value
    return compat.judge(family, compat.implied_facts(family), model)


# -- 3. the plan ---------------------------------------------------------------------------------


def _slug(text: str) -> str:
    return _UNSAFE.sub("_", text).strip("_") or "x"


def _out_dir(settings: Settings, models: Sequence[Checkpoint], subjects: Sequence[Subject]) -> Path:
    """``--out``, else a folder under ``TIREG_HOME/validations`` named by the run's inputs: every
    process of a launched run computes the same one, and the same run twice rewrites the same
    (identical) files instead of piling up copies."""
    if settings.out_dir is not None:
        return settings.out_dir
    digest = key(
        [m.identity for m in models],
        [s.vectors_sha256 for s in subjects],
        settings.rendering(),
        list(settings.seeds),
    )
    return config.home() / "validations" / digest[:16]


def _plan(
    settings: Settings,
    models: Sequence[Checkpoint],
    subjects: Sequence[Subject],
    out_dir: Path,
    device: str,
) -> list[Task]:
    """Every image of the grid in grid order: per model, the row without, then a row per
    embedding; per row, one image per seed."""
    tasks = []
    rows: list[int | None] = [None, *range(len(subjects))]
    for m, model in enumerate(models):
        cache_dir = (
            config.cache_dir() / "validate" / key(model.identity, settings.rendering(), device)
        )
        for s in rows:
            word = None if s is None else subjects[s].word
            row_name = "without" if s is None else f"{s + 1:02d}-{_slug(word or '')}"
            for seed in settings.seeds:
                cache = cache_dir / f"{seed}.png" if s is None else None
                tasks.append(
                    Task(
                        model=m,
                        subject=s,
                        seed=seed,
                        prompt=settings.prompt_for(word),
                        path=out_dir
                        / f"{m + 1:02d}-{_slug(model.name)}"
                        / f"{row_name}-{seed}.png",
                        cache=cache,
                        cached=cache is not None and cache.is_file(),
                    )
                )
    return tasks


def _batches(tasks: Sequence[Task], subjects: Sequence[Subject], size: int) -> list[list[Task]]:
    """``tasks`` (of one model) in batches of up to ``size``; a batch never holds two embeddings
    that share a prompt word, since one word can stand for one embedding at a time."""
    batches: list[list[Task]] = []
    owners: dict[str, int] = {}  # prompt word -> the subject it stands for in the last batch
    for task in tasks:
        word = None if task.subject is None else subjects[task.subject].word
        clash = word is not None and owners.get(word, task.subject) != task.subject
        if not batches or len(batches[-1]) >= size or clash:
            batches.append([])
            owners = {}
        batches[-1].append(task)
        if word is not None and task.subject is not None:
            owners[word] = task.subject
    return batches


# -- 4. rendering --------------------------------------------------------------------------------


def _generation(
    task: Task,
    settings: Settings,
    model: Checkpoint,
    subjects: Sequence[Subject],
    ignored: frozenset[int] = frozenset(),
) -> Generation:
    """The infotext's fields; ``TI hashes`` names the row's embedding unless the model ignored
    it whole (forced, no vectors of any encoder's width), as A1111 lists only those used."""
    s = task.subject
    subject = None if s is None or s in ignored else subjects[s]
    return Generation(
        prompt=task.prompt,
        negative=settings.negative,
        steps=settings.steps,
        sampler=settings.sampler,
        schedule=settings.schedule,
        cfg=settings.cfg,
        seed=task.seed,
        width=settings.width,
        height=settings.height,
        model_hash=model.autov2,
        model_name=model.name,
        clip_skip=settings.clip_skip,
        ensd=settings.ensd,
        uses_ensd=uses_ensd(settings.sampler),
        rng=settings.rng.upper(),
        embeddings=() if subject is None else ((subject.word, subject.file_sha256),),
    )


def _save(image: Image, task: Task, generation: Generation) -> None:
    """The image with its infotext; the row without also into the cache (pixels only: the
    infotext names the model as this run calls it)."""
    save_png(image, task.path, generation.infotext())
    if task.cache is not None:
        atomic_write_bytes(task.cache, png_bytes(image, {}))


def _load(model: Checkpoint, settings: Settings, device: str) -> Any:
    """The model's pipeline on ``device`` (the loader is quiet, and out of memory is one line
    there), its UNet compiled when asked."""
    from tireg.pipelines.loading import load_model

    pipe = load_model(model.path, device=device, dtype=settings.dtype).pipe
    if settings.compile:
        import torch

        pipe.unet = torch.compile(pipe.unet)
    return pipe


def _render_model(
    batches: Sequence[list[Task]],
    model: Checkpoint,
    subjects: Sequence[Subject],
    settings: Settings,
    device: str,
    on_images: Advance | None,
    on_warning: Warn | None,
) -> None:
    """Render ``batches`` on one model: load it once, check every embedding against its text
    encoders (refused, or with ``force`` applied where it fits and the rest told to
    ``on_warning``), then per batch apply the embeddings the batch's prompts use, render,
    save, and put the pipeline back as it was."""
    from tireg.pipelines.embeddings import embeddings_applied, fit
    from tireg.pipelines.render import render

    if not batches:
        return
    pipe = _load(model, settings, device)
    fits = [fit(pipe, subject.word, subject.embedding) for subject in subjects]
    for subject, found in zip(subjects, fits, strict=True):  # all, before any image
        if found.complete:
            continue
        if not settings.force:
            raise found.mismatch()
        if on_warning is not None:
            on_warning(f"{subject.ref} on {model.name}: {found.ignored()}")
    ignored = frozenset(s for s, found in enumerate(fits) if not found.applies)
    for batch in batches:
        used = {t.subject for t in batch if t.subject is not None}
        applied = [(subjects[s].word, subjects[s].embedding) for s in sorted(used)]
        with embeddings_applied(pipe, applied, partial=settings.force):
            images = render(
                pipe,
                prompts=[t.prompt for t in batch],
                negative=settings.negative,
                seeds=[t.seed for t in batch],
                steps=settings.steps,
                sampler=settings.sampler,
                schedule=settings.schedule,
                cfg=settings.cfg,
                width=settings.width,
                height=settings.height,
                clip_skip=settings.clip_skip,
                rng=settings.rng,
                ensd=settings.ensd,
                batch_size=len(batch),
            )
        for task, image in zip(batch, images, strict=True):
            _save(image, task, _generation(task, settings, model, subjects, ignored))
        if on_images is not None:
            on_images(len(batch))


def _from_cache(task: Task, generation: Generation) -> None:
    """A cached image of the row without, saved with this run's infotext."""
    from PIL import Image as PILImage

    assert task.cache is not None
    with PILImage.open(task.cache) as cached:
        save_png(cached.convert("RGB"), task.path, generation.infotext())


# -- 5. grid and record --------------------------------------------------------------------------


def _grid(
    tasks: Sequence[Task],
    settings: Settings,
    models: Sequence[Checkpoint],
    subjects: Sequence[Subject],
    out_dir: Path,
) -> tuple[Path, bytes]:
    """The grid PNG (rows in plan order, a column per seed), with the first image's infotext as
    A1111 gives a grid its main prompt's."""
    from PIL import Image as PILImage

    columns = len(settings.seeds)
    rows: list[list[Image]] = []
    labels = []
    for start in range(0, len(tasks), columns):
        row = tasks[start : start + columns]
        images = []
        for task in row:
            with PILImage.open(task.path) as image:
                images.append(image.convert("RGB"))
        rows.append(images)
        first = row[0]
        what = "without embedding" if first.subject is None else subjects[first.subject].ref
        labels.append(f"{what}\n{models[first.model].label}")
    grid = make_grid(rows, labels, [f"Seed: {seed}" for seed in settings.seeds])
    first = tasks[0]
    path = out_dir / "grid.png"
    data = save_png(
        grid, path, _generation(first, settings, models[first.model], subjects).infotext()
    )
    return path, data


def validate(
    catalogue: Catalogue,
    embeddings: Sequence[str],
    models: Sequence[str],
    settings: Settings,
    *,
    on_images: Advance | None = None,
    on_plan: Callable[[int], None] | None = None,
    on_warning: Warn | None = None,
) -> ValidationRun | None:
    """Render ``embeddings`` (names or files) on ``models`` (paths, names or hashes) and record
    the run; see the module docstring for the steps. ``on_plan(total)`` is told how many images
    the run holds, ``on_images(n)`` how many more are done, ``on_warning(line)`` what a
    forced embedding loses on a model (main process only). Returns ``None`` on every process but
    the main one of a launched run (the main one builds the grid and records).

    Example: ``validate(open_catalogue(), ["birb-style"], ["~/sd15.safetensors"], Settings())``.
    """
    clock = time.perf_counter()
    started_at = datetime.now(timezone.utc)
    # 1.
    settings = checked(settings)
    workers = Workers(settings.device)
    # 2.
    subjects = _subjects(catalogue, embeddings)
    checkpoints, evidence, forced = _checkpoints(catalogue, models, subjects, settings.force)
    # 3.
    device = workers.device()
    out_dir = _out_dir(settings, checkpoints, subjects)
    settings = replace(settings, out_dir=out_dir)
    tasks = _plan(settings, checkpoints, subjects, out_dir, device)
    if on_plan is not None:
        on_plan(len(tasks))
    workers.wait()  # every process has seen the cache before anyone writes to it
    # 4.
    warnings: list[str] = []

    def warn(line: str) -> None:
        warnings.append(line)
        if on_warning is not None:
            on_warning(line)

    seconds: list[float] = []
    for m, model in enumerate(checkpoints):
        model_clock = time.perf_counter()
        mine = [t for t in tasks if t.model == m]
        with workers.share(
            _batches([t for t in mine if not t.cached], subjects, settings.batch_size)
        ) as batches:
            _render_model(
                batches,
                model,
                subjects,
                settings,
                device,
                on_images,
                warn if workers.is_main else None,
            )
        if workers.is_main:
            cached = [t for t in mine if t.cached]
            for task in cached:
                _from_cache(task, _generation(task, settings, model, subjects))
            if on_images is not None and cached:
                on_images(len(cached))
        seconds.append(time.perf_counter() - model_clock)
    workers.wait()
    if not workers.is_main:
        return None
    # 5.
    grid, grid_bytes = _grid(tasks, settings, checkpoints, subjects, out_dir)
    used = [
        ModelUsed(m.name, str(m.path), m.family, m.sha256, m.autov2, m.old_hash, s)
        for m, s in zip(checkpoints, seconds, strict=True)
    ]
    images = [
        ImageMade(
            model=t.model,
            embedding_sha256=None if t.subject is None else subjects[t.subject].vectors_sha256,
            prompt_word=None if t.subject is None else subjects[t.subject].word,
            prompt=t.prompt,
            seed=t.seed,
            path=str(t.path),
            sha256=sha256_file(t.path),
            cached=t.cached,
        )
        for t in tasks
    ]
    total = time.perf_counter() - clock
    record = RunRecord(
        started_at=started_at,
        seconds=total,
        settings=settings.to_dict(),
        seeds=list(settings.seeds),
        out_dir=str(out_dir),
        grid_path=str(grid),
        grid_sha256=hashlib.sha256(grid_bytes).hexdigest(),
        models=used,
        images=images,
        evidence=[(subjects[s].vectors_sha256, m) for s, m in evidence],
    )
    run_id = record_run(catalogue, record)
    return ValidationRun(
        run_id=run_id,
        out_dir=out_dir,
        grid=grid,
        settings=settings,
        subjects=subjects,
        models=used,
        images=images,
        seconds=total,
        rendered=sum(not t.cached for t in tasks),
        processes=workers.count,
        joined=workers.kind,
        forced=forced,
        warnings=warnings,
    )
