"""The training data: images, captions, prompt templates, cached latents and the batches drawn
from them.

Images are read and encoded by the VAE once, before the first step (A1111's
``modules/textual_inversion/dataset.py``, ``PersonalizedBase``, does the same); the diffusers
recipe re-encodes every image on every step, which is most of the VAE's cost in a run. With
``--flip`` the mirrored image is encoded too, and with ``--crop random`` the whole resized image
is encoded and the crop is taken in latent space, so augmentation never needs the VAE again.

Every random choice (data order, template line, flip, crop offset) comes from one
``torch.Generator`` owned by the run, so a resumed run draws exactly what the uninterrupted run
would have drawn.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from tireg.train.errors import DatasetError

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".webp"})
#: A1111's shipped template files (``textual_inversion_templates/``), rebuilt as package data
TEMPLATE_NAMES = ("subject", "style", "subject_filewords", "style_filewords", "none")
NAME, FILEWORDS = "[name]", "[filewords]"
#: A1111 strips leading numbers from a file name used as a caption (``re_numbers_at_start``)
_NUMBERS_AT_START = re.compile(r"^[-\d]+\s*")


def load_template(spec: str) -> list[str]:
    """The prompt lines of a shipped template (by name) or of a template FILE."""
    if spec in TEMPLATE_NAMES:
        shipped = resources.files("tireg.train").joinpath(f"templates/{spec}.txt")
        text = shipped.read_text(encoding="utf-8")
        path: Path | None = None
    else:
        path = Path(spec)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise DatasetError(
                f"cannot read the template file: {exc}",
                path=path,
                hint=f"give a file, or one of {', '.join(TEMPLATE_NAMES)}",
            ) from None
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        raise DatasetError("the template has no lines", path=path or spec)
    return lines


def caption_for(image: Path) -> str:
    """The ``[filewords]`` of an image: the ``.txt`` beside it, else its file name (A1111's
    rule in ``PersonalizedBase``: the stem without leading numbers)."""
    text_file = image.with_suffix(".txt")
    if text_file.is_file():
        try:
            return text_file.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise DatasetError(f"cannot read the caption: {exc}", path=text_file) from None
    return _NUMBERS_AT_START.sub("", image.stem)


def fill_template(line: str, name_marker: str, caption: str) -> str:
    """A template line with ``[name]`` and ``[filewords]`` filled in."""
    return line.replace(NAME, name_marker).replace(FILEWORDS, caption)


@dataclass(frozen=True)
class TrainImage:
    """One training image, resized: ``pixels`` is ``[3, H, W]`` in [-1, 1]; ``alpha`` ``[H, W]``
    in [0, 1] when the picture has transparency and alpha is used as the loss weight."""

    path: Path
    pixels: torch.Tensor
    alpha: torch.Tensor | None
    caption: str
    original_size: tuple[int, int]  # (height, width) before resizing: SDXL's time ids use it


def _resize(image: Image.Image, resolution: int, crop: str, multiple: int) -> Image.Image:
    """Short side to ``resolution`` (bicubic, as A1111 and diffusers), then a centred crop to
    the square (``center``) or to a multiple of the latent grid (``random``, cropped later)."""
    width, height = image.size
    scale = resolution / min(width, height)
    size = (max(resolution, round(width * scale)), max(resolution, round(height * scale)))
    image = image.resize(size, Image.Resampling.BICUBIC)
    if crop == "center":
        keep = (resolution, resolution)
    else:
        keep = (size[0] // multiple * multiple, size[1] // multiple * multiple)
    left, top = (size[0] - keep[0]) // 2, (size[1] - keep[1]) // 2
    return image.crop((left, top, left + keep[0], top + keep[1]))


def _open(path: Path) -> Image.Image:
    try:
        with Image.open(path) as opened:
            opened.load()
            return ImageOps.exif_transpose(opened)
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as exc:
        raise DatasetError(
            f"cannot read the image: {exc}", hint="remove or replace the file"
        ) from None


def read_images(
    folder: Path, *, resolution: int, crop: str, alpha_weight: bool, multiple: int
) -> list[TrainImage]:
    """Every png/jpg/webp directly in ``folder`` (sorted by name), resized and cropped.

    Transparency is composited over white, or kept as the loss weight with ``alpha_weight``
    (A1111's "Use PNG alpha channel as loss weight").
    """
    if not folder.is_dir():
        raise DatasetError("not a folder of images", path=folder)
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
    if not paths:
        raise DatasetError(
            "no png, jpg or webp image in this folder", path=folder, hint="point --images at one"
        )
    images = []
    for path in paths:
        try:
            picture = _open(path)
        except DatasetError as exc:
            raise exc.with_path(path) from None
        original = (picture.height, picture.width)
        picture = _resize(picture, resolution, crop, multiple)
        rgba = picture.convert("RGBA")
        has_alpha = picture.mode in ("RGBA", "LA", "PA") or "transparency" in picture.info
        alpha = None
        if has_alpha and alpha_weight:
            rgb = rgba.convert("RGB")
            alpha = torch.from_numpy(np.asarray(rgba.getchannel("A"), np.float32) / 255.0)
        else:
            white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            rgb = Image.alpha_composite(white, rgba).convert("RGB")
        pixels = torch.from_numpy(np.asarray(rgb, np.float32).copy()).permute(2, 0, 1)
        images.append(TrainImage(path, pixels / 127.5 - 1.0, alpha, caption_for(path), original))
    return images


@dataclass
class CachedImage:
    """The VAE's view of one image (and of its mirror when flipping is on), scaled latents."""

    mean: torch.Tensor  # [4, h, w]
    std: torch.Tensor | None  # kept only for latent sampling "random"
    flipped_mean: torch.Tensor | None
    flipped_std: torch.Tensor | None
    weight: torch.Tensor | None  # [4, h, w], A1111's normalised alpha weight
    caption: str
    original_size: tuple[int, int]


@torch.no_grad()
def encode_images(
    images: list[TrainImage], vae: Any, *, flip: bool, keep_std: bool, device: torch.device
) -> list[CachedImage]:
    """Encode every image once on ``device``, keeping float32 latents.

    ``latent_sampling`` ``once`` and ``deterministic`` both keep the distribution's mean (A1111's
    ``once`` froze one random draw; the mean is the usual choice and is reproducible);
    ``random`` also keeps the standard deviation and draws a new sample every step, as A1111's
    ``random`` does from the cached distribution.
    """
    scale = float(vae.config.scaling_factor)
    shift = float(getattr(vae.config, "shift_factor", None) or 0.0)
    cached = []
    for image in images:
        batch = image.pixels.unsqueeze(0)
        if flip:
            batch = torch.cat([batch, batch.flip(-1)])
        dist = vae.encode(batch.to(device, vae.dtype)).latent_dist
        mean = (dist.mean.float() - shift) * scale
        std = dist.std.float() * scale if keep_std else None
        weight = None
        if image.alpha is not None:
            weight = _alpha_weight(image.alpha, mean.shape[-2:], mean.shape[1]).to(device)
        cached.append(
            CachedImage(
                mean=mean[0],
                std=None if std is None else std[0],
                flipped_mean=mean[1] if flip else None,
                flipped_std=None if std is None or not flip else std[1],
                weight=weight,
                caption=image.caption,
                original_size=image.original_size,
            )
        )
    return cached


def _alpha_weight(alpha: torch.Tensor, size: torch.Size, channels: int) -> torch.Tensor:
    """A1111's loss weight (``PersonalizedBase``): alpha resized to the latent grid, shifted to
    a minimum of 0 and divided by its mean, so a fully opaque image weighs 1 everywhere."""
    small = torch.nn.functional.interpolate(alpha[None, None], size=tuple(size), mode="area")[0]
    weight = small.expand(channels, -1, -1).clone()
    weight -= weight.min()
    mean = weight.mean()
    return weight / mean if mean > 0 else torch.ones_like(weight)


@dataclass
class Batch:
    """One micro-batch, on the training device."""

    latents: torch.Tensor  # [B, 4, h, w]
    weights: torch.Tensor | None
    prompts: list[str]
    original_sizes: list[tuple[int, int]]
    crops_top_left: list[tuple[int, int]]  # in pixels, for SDXL's time ids

    def rows(self, which: slice) -> Batch:
        """Some of the batch's images (this process's share of a global batch)."""
        return Batch(
            latents=self.latents[which],
            weights=None if self.weights is None else self.weights[which],
            prompts=self.prompts[which],
            original_sizes=self.original_sizes[which],
            crops_top_left=self.crops_top_left[which],
        )


class DataOrder:
    """Which images come next: a fresh permutation per epoch, drawn from the run's generator.

    The state (epoch, position, the current permutation) goes into every checkpoint.
    """

    def __init__(self, count: int, generator: torch.Generator) -> None:
        self.count = count
        self.generator = generator
        self.epoch = 0
        self.position = 0
        self.order = torch.randperm(count, generator=generator)

    def take(self, size: int) -> list[int]:
        """The next ``size`` image indices, crossing into a new epoch when one runs out."""
        taken: list[int] = []
        while len(taken) < size:
            if self.position == self.count:
                self.epoch += 1
                self.position = 0
                self.order = torch.randperm(self.count, generator=self.generator)
            taken.append(int(self.order[self.position]))
            self.position += 1
        return taken

    def state(self) -> tuple[dict[str, int], torch.Tensor]:
        return {"epoch": self.epoch, "position": self.position}, self.order.clone()

    def restore(self, state: dict[str, Any], order: torch.Tensor) -> None:
        self.epoch, self.position, self.order = int(state["epoch"]), int(state["position"]), order


def draw_batch(
    cache: list[CachedImage],
    indices: list[int],
    *,
    templates: list[str],
    name_marker: str,
    resolution: int,
    latent_scale: int,
    flip_p: float,
    data_generator: torch.Generator,
    noise_generator: torch.Generator,
) -> Batch:
    """Assemble the images ``indices`` into a batch: template line, flip, crop and, for latent
    sampling ``random``, a fresh latent sample."""
    side = resolution // latent_scale
    latents, weights, prompts, crops = [], [], [], []
    for index in indices:
        item = cache[index]
        line = templates[int(torch.randint(len(templates), (1,), generator=data_generator))]
        prompts.append(fill_template(line, name_marker, item.caption))
        flipped = flip_p > 0 and float(torch.rand(1, generator=data_generator)) < flip_p
        mean, std = (item.flipped_mean, item.flipped_std) if flipped else (item.mean, item.std)
        assert mean is not None
        weight = item.weight.flip(-1) if flipped and item.weight is not None else item.weight
        top = int(torch.randint(mean.shape[-2] - side + 1, (1,), generator=data_generator))
        left = int(torch.randint(mean.shape[-1] - side + 1, (1,), generator=data_generator))
        crop = (slice(None), slice(top, top + side), slice(left, left + side))
        latent = mean[crop]
        if std is not None:
            noise = torch.randn(
                latent.shape, generator=noise_generator, device=noise_generator.device
            )
            latent = latent + std[crop] * noise.to(latent.device)
        latents.append(latent)
        weights.append(None if weight is None else weight[crop])
        crops.append((top * latent_scale, left * latent_scale))
    stacked = None
    if any(w is not None for w in weights):
        stacked = torch.stack(
            [torch.ones_like(latents[i]) if w is None else w for i, w in enumerate(weights)]
        )
    return Batch(
        latents=torch.stack(latents),
        weights=stacked,
        prompts=prompts,
        original_sizes=[cache[i].original_size for i in indices],
        crops_top_left=crops,
    )
