"""A1111's infotext: the ``parameters`` text chunk every rendered PNG carries.

Why A1111's exact format: it is what people paste into A1111's PNG Info tab, what Civitai reads
on upload, and what ``infotext_utils.parse_generation_parameters`` parses back. So the layout,
the field order, the quoting and the hash lengths follow A1111, read from upstream:

* ``modules/processing.py`` ``create_infotext``: ``prompt``, then ``"\\nNegative prompt: ..."``
  when there is one, then one line of ``key: value`` pairs in a fixed order, ``None`` values
  dropped, joined by ``", "``; the whole stripped.
* ``modules/infotext_utils.py`` ``quote``: a value stays bare unless it holds ``,``, ``\\n`` or
  ``:``; then it is written as a JSON string.
* ``modules/sd_hijack_clip.py`` (``TI hashes``): ``name: shorthash`` per embedding used, ``:``
  and ``,`` removed from names, joined by ``", "``.
* ``modules/infotext_versions.py`` ``parse_version``: a ``Version`` that does not parse as a
  version is ignored, so ``tireg 0.1.0`` switches on none of A1111's back-compat options (those
  that ``v1.x`` values before 1.7 would).
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tireg import __version__
from tireg.files import atomic_write_bytes

if TYPE_CHECKING:
    from PIL.Image import Image

#: hex digits of a model hash in infotext: A1111's ``shorthash`` of a checkpoint is its AutoV2
MODEL_HASH_DIGITS = 10
#: hex digits of an embedding hash in ``TI hashes`` (A1111's ``Embedding.shorthash``)
TI_HASH_DIGITS = 12
#: what ``Version`` says; not a ``v1.x`` string, so A1111 applies no back-compat option
VERSION = f"tireg {__version__}"


def quote(value: object) -> str:
    """A value as A1111's ``infotext_utils.quote`` writes it: bare, or a JSON string when it
    holds a comma, a newline or a colon (which would otherwise end or split the field)."""
    text = str(value)
    if "," not in text and "\n" not in text and ":" not in text:
        return text
    return json.dumps(text, ensure_ascii=False)


def ti_hashes(embeddings: Sequence[tuple[str, str]]) -> str | None:
    """The ``TI hashes`` value for ``(prompt word, file sha256)`` pairs, or ``None`` for none.

    A1111 removes ``:`` and ``,`` from each name so the list stays parseable."""
    if not embeddings:
        return None
    return ", ".join(
        f"{name.replace(':', '').replace(',', '')}: {sha256[:TI_HASH_DIGITS]}"
        for name, sha256 in embeddings
    )


@dataclass(frozen=True)
class Generation:
    """What one image was rendered with, in A1111's terms (one per image: seeds differ)."""

    prompt: str
    negative: str
    steps: int
    sampler: str  # A1111's sampler label: "DPM++ 2M"
    schedule: str  # A1111's schedule-type label: "Karras", "Automatic"
    cfg: float
    seed: int
    width: int
    height: int
    model_hash: str | None  # AutoV2 or SHA-256; shortened here
    model_name: str
    clip_skip: int = 1
    ensd: int = 0  # written only when the sampler uses it (see ``uses_ensd``)
    uses_ensd: bool = False
    rng: str = "CPU"  # "CPU" | "GPU" | "NV"
    embeddings: tuple[tuple[str, str], ...] = ()  # (prompt word, file sha256)

    def params(self) -> dict[str, object]:
        """The parameter fields in ``create_infotext``'s order, ``None`` for fields left out.

        Fields tireg never sets (Image CFG scale, Face restoration, VAE, hires, Tiling...) are
        absent rather than ``None``: the order of the remaining ones is what matters."""
        return {
            "Steps": self.steps,
            "Sampler": self.sampler,
            "Schedule type": self.schedule,
            "CFG scale": float(self.cfg),
            "Seed": self.seed,
            "Size": f"{self.width}x{self.height}",
            "Model hash": self.model_hash[:MODEL_HASH_DIGITS] if self.model_hash else None,
            "Model": self.model_name,
            "Clip skip": self.clip_skip if self.clip_skip > 1 else None,
            "ENSD": self.ensd if self.ensd and self.uses_ensd else None,
            "RNG": self.rng if self.rng != "GPU" else None,
            # extra_generation_params come after RNG and Tiling, before Version
            "TI hashes": ti_hashes(self.embeddings),
            "Version": VERSION,
        }

    def infotext(self) -> str:
        """The whole ``parameters`` text, as ``create_infotext`` lays it out."""
        params = ", ".join(
            key if key == value else f"{key}: {quote(value)}"
            for key, value in self.params().items()
            if value is not None
        )
        negative = f"\nNegative prompt: {self.negative}" if self.negative else ""
        return f"{self.prompt}{negative}\n{params}".strip()


def png_bytes(image: Image, text_chunks: Mapping[str, str]) -> bytes:
    """``image`` encoded as PNG with ``text_chunks`` as tEXt/iTXt chunks."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    for key, value in text_chunks.items():
        info.add_text(key, value)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def save_png(image: Image, path: str | os.PathLike[str], infotext: str) -> bytes:
    """Write ``image`` to ``path`` atomically with ``infotext`` in its ``parameters`` chunk (where
    A1111 puts it, ``image.info["parameters"]``); return the bytes written, for hashing."""
    data = png_bytes(image, {"parameters": infotext})
    atomic_write_bytes(Path(path), data)
    return data
