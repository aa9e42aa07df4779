"""The settings of a validation run, checked before anything is loaded.

Why a module of its own: the same settings drive the render, the infotext, the cache key of the
row without embeddings, the output folder's name and the catalogue record, and each of those must
see the same checked values. Bad input (a size not divisible by 8, no seeds, an unknown sampler)
fails here, in one line, before a multi-GB checkpoint is read.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from tireg import __version__
from tireg.errors import TiregError

#: A1111's txt2img seeds are 32-bit (``modules/processing.py``: ``get_fixed_seed``, and the
#: ``seed + i`` of a batch); numpy and torch generators take them as they are.
MAX_SEED = 2**32 - 1
_SIZE = re.compile(r"\s*(\d+)\s*[xX×]\s*(\d+)\s*")


class ValidationError(TiregError):
    """A validation run cannot go ahead as asked."""


@dataclass(frozen=True)
class Settings:
    """What every image of a run is rendered with (``{}`` in ``prompt`` is the embedding's word).

    ``sampler`` and ``schedule`` hold A1111's labels once :func:`checked` resolved them."""

    prompt: str = "a photo of {}"
    negative: str = ""
    seeds: tuple[int, ...] = (1234, 1235, 1236, 1237)
    steps: int = 20
    sampler: str = "DPM++ 2M"
    schedule: str = "Automatic"
    cfg: float = 7.0
    width: int = 512
    height: int = 512
    clip_skip: int = 1
    rng: str = "cpu"
    ensd: int = 0
    batch_size: int = 1
    device: str = "auto"
    dtype: str = "auto"
    compile: bool = False
    force: bool = False
    out_dir: Path | None = None

    def prompt_for(self, word: str | None) -> str:
        """The prompt with an embedding's ``word``: in place of ``{}``, else appended; the row
        without embeddings gets the prompt with ``{}`` dropped."""
        if "{}" in self.prompt:
            text = self.prompt.replace("{}", word or "")
            return " ".join(text.split()) if word is None else text
        if word is None:
            return self.prompt
        return f"{self.prompt} {word}".strip()

    def rendering(self) -> dict[str, Any]:
        """The settings that decide the pixels (without the prompt's word), as JSON values."""
        keep = (
            *("negative", "steps", "sampler", "schedule", "cfg", "width", "height"),
            *("clip_skip", "rng", "ensd", "batch_size", "dtype", "compile"),
        )
        values = asdict(self)
        return {"prompt": self.prompt, **{key: values[key] for key in keep}}

    def to_dict(self) -> dict[str, Any]:
        """Everything, JSON-ready (what ``--json`` prints and the catalogue keeps)."""
        return {**asdict(self), "seeds": list(self.seeds), "out_dir": str(self.out_dir or "")}


def parse_size(text: str) -> tuple[int, int]:
    """``"512x768"`` -> ``(512, 768)``; both must be positive multiples of 8 (the VAE's factor)."""
    match = _SIZE.fullmatch(text)
    if match is None:
        raise ValidationError(f"size {text!r} is not WIDTHxHEIGHT", hint="e.g. --size 512x512")
    width, height = int(match[1]), int(match[2])
    if width <= 0 or height <= 0 or width % 8 or height % 8:
        raise ValidationError(
            f"size {width}x{height} is not a multiple of 8",
            hint="the VAE works in 8-pixel blocks: use e.g. 512x512 or 768x768",
        )
    return width, height


def parse_seeds(seed: int, count: int, seeds: str | None) -> tuple[int, ...]:
    """``--seeds 1,2,3`` as given, else ``count`` seeds from ``seed`` up (A1111's ``seed + i``)."""
    if seeds is not None:
        try:
            values = tuple(int(s) for s in seeds.split(",") if s.strip())
        except ValueError:
            raise ValidationError(
                f"--seeds {seeds!r} is not a list of integers", hint="e.g. --seeds 1,2,3"
            ) from None
    else:
        if count < 1:
            raise ValidationError("--count must be 1 or more")
        values = tuple(seed + i for i in range(count))
    if not values:
        raise ValidationError("no seeds to render", hint="give --seed and --count, or --seeds")
    bad = [s for s in values if not 0 <= s <= MAX_SEED]
    if bad:
        raise ValidationError(f"seed {bad[0]} is outside 0..{MAX_SEED}")
    if len(set(values)) != len(values):
        raise ValidationError("the same seed is given twice", hint="each column needs its own")
    return values


def checked(settings: Settings) -> Settings:
    """``settings`` with the sampler and schedule resolved to A1111's labels; every other value
    checked. Raises :class:`ValidationError` (or the sampler table's own one-line error)."""
    from tireg.pipelines.samplers import resolve

    if settings.width <= 0 or settings.height <= 0 or settings.width % 8 or settings.height % 8:
        parse_size(f"{settings.width}x{settings.height}")
    if settings.steps < 1:
        raise ValidationError(f"steps must be 1 or more, not {settings.steps}")
    if settings.batch_size < 1:
        raise ValidationError(f"batch size must be 1 or more, not {settings.batch_size}")
    if settings.clip_skip < 1:
        raise ValidationError(f"clip skip must be 1 or more, not {settings.clip_skip}")
    if settings.rng not in ("cpu", "gpu"):
        raise ValidationError(f"unknown RNG source {settings.rng!r}", hint="use cpu or gpu")
    if not settings.seeds:
        raise ValidationError("no seeds to render", hint="give --seed and --count, or --seeds")
    choice = resolve(settings.sampler, settings.schedule)
    return replace(settings, sampler=choice.sampler.label, schedule=choice.schedule)


def uses_ensd(sampler: str) -> bool:
    """Whether A1111 writes ENSD for this sampler (its step noise comes from the seed)."""
    from tireg.pipelines.samplers import resolve

    return resolve(sampler).sampler.uses_ensd


def key(*parts: object) -> str:
    """A stable hex digest of JSON-able ``parts`` (cache keys, default output folders); tireg's
    version is part of it, since a newer renderer may draw different pixels."""
    text = json.dumps([__version__, *parts], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()
