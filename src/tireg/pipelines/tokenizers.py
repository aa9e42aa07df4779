"""The CLIP tokenizers of SD 1.x, SD 2.x and SDXL, built once into the cache, never downloaded.

Why: every SD pipeline needs a CLIP BPE tokenizer, and ``from_single_file`` would otherwise fetch
one from the Hub. The vocabulary is OpenAI CLIP's ``bpe_simple_vocab_16e6.txt.gz`` (MIT), which
several PyPI packages ship verbatim; tireg depends on ``openai-clip`` (its only requirements are
ftfy, regex and tqdm: no torch, no torchvision) and also accepts the copy of any other known
carrier. The file is located through :mod:`importlib.metadata`, never by importing the package
(``clip`` imports torchvision at import time), and checked against its published SHA-256.

Conversion (generator-trainer.md §2.2; OpenAI ``clip/simple_tokenizer.py``,
``SimpleTokenizer.__init__``):

1. merges are lines ``1 .. 48894`` of the file (``49152 - 256 - 2`` of them);
2. the vocabulary is the 256 byte characters, the same with ``</w>``, one token per merge in order,
   then ``<|startoftext|>`` (49406) and ``<|endoftext|>`` (49407): 49,408 tokens;
3. ``model_max_length`` is 77. The pad token is ``<|endoftext|>`` for OpenAI's CLIP-L (SD 1.x,
   SDXL's first encoder) and ``!`` (id 0) for the OpenCLIP encoders (SD 2.x, SDXL's second), as
   OpenCLIP's ``tokenize`` pads with zeros and A1111's ``CLIP_SD_21_H``/SDXL G embedder set
   ``id_pad = 0`` (``modules/sd_hijack_clip.py``).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
from importlib import metadata
from pathlib import Path
from typing import Any

from tireg import config
from tireg.files import atomic_write_bytes
from tireg.pipelines.errors import PipelineError, TokenizerVocabularyError

VOCAB_FILE = "bpe_simple_vocab_16e6.txt.gz"
VOCAB_SHA256 = "924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a"
#: (distribution, path inside it): the declared dependency first, then other known carriers
CARRIERS = (
    ("openai-clip", "clip/" + VOCAB_FILE),
    ("open-clip-torch", "open_clip/" + VOCAB_FILE),
    ("clip-anytorch", "clip/" + VOCAB_FILE),
    ("clip-openai", "clip/" + VOCAB_FILE),
)
MERGES = 49152 - 256 - 2  # 48,894
MAX_LENGTH = 77
BOS, EOS = "<|startoftext|>", "<|endoftext|>"
#: tokenizer variant -> its pad token
_PAD = {"clip-l": EOS, "openclip": "!"}
#: (family, which encoder) -> variant
_VARIANTS = {
    ("sd1", 1): "clip-l",
    ("sd2", 1): "openclip",
    ("sdxl", 1): "clip-l",
    ("sdxl", 2): "openclip",
}
#: bump when the files written change, so old caches are rebuilt
_BUILD = 1


def _bytes_to_unicode() -> dict[int, str]:
    """CLIP's reversible byte -> printable character table (the GPT-2 one): printable Latin-1
    bytes map to themselves, the other 68 bytes to code points 256 and up, in byte order.

    The dict's order is the vocabulary's: the printable bytes first, then the shifted ones."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    keep += range(ord("®"), ord("ÿ") + 1)
    table = {b: chr(b) for b in keep}
    shifted = (b for b in range(256) if b not in table)
    for n, b in enumerate(shifted):
        table[b] = chr(256 + n)
    return table


def vocabulary_file() -> Path:
    """The installed, checked copy of ``bpe_simple_vocab_16e6.txt.gz``."""
    seen: list[str] = []
    for dist_name, inner in CARRIERS:
        try:
            dist = metadata.distribution(dist_name)
        except metadata.PackageNotFoundError:
            continue
        path = Path(str(dist.locate_file(inner)))
        if not path.is_file():
            continue
        if hashlib.sha256(path.read_bytes()).hexdigest() == VOCAB_SHA256:
            return path
        seen.append(f"{dist_name} ({path}: unexpected content)")
    raise TokenizerVocabularyError(
        "the CLIP BPE vocabulary was not found" + (f"; refused {', '.join(seen)}" if seen else ""),
        hint="pip install openai-clip (it ships bpe_simple_vocab_16e6.txt.gz)",
    )


def _vocab_and_merges(gz: Path) -> tuple[dict[str, int], list[str]]:
    """Steps 1-2 of the module docstring."""
    lines = gzip.decompress(gz.read_bytes()).decode("utf-8").split("\n")
    merges = lines[1 : MERGES + 1]
    symbols = list(_bytes_to_unicode().values())
    tokens = symbols + [s + "</w>" for s in symbols]
    tokens += ["".join(m.split()) for m in merges]
    tokens += [BOS, EOS]
    return {tok: i for i, tok in enumerate(tokens)}, merges


def _write(directory: Path, variant: str) -> None:
    """Write the four tokenizer files into a fresh directory beside ``directory``, then rename
    it into place, so a concurrent reader never sees half a tokenizer."""
    vocab, merges = _vocab_and_merges(vocabulary_file())
    pad = _PAD[variant]
    special = {"bos_token": BOS, "eos_token": EOS, "pad_token": pad, "unk_token": EOS}
    files = {
        "vocab.json": json.dumps(vocab, ensure_ascii=False),
        "merges.txt": "#version: 0.2\n" + "\n".join(merges) + "\n",
        "special_tokens_map.json": json.dumps(special, indent=2),
        "tokenizer_config.json": json.dumps(
            {
                **special,
                "tokenizer_class": "CLIPTokenizer",
                "model_max_length": MAX_LENGTH,
                "do_lower_case": True,
                "errors": "replace",
            },
            indent=2,
        ),
    }
    staging = directory.with_name(f"{directory.name}.{os.getpid()}.tireg-tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for name, text in files.items():
        atomic_write_bytes(staging / name, text.encode("utf-8"))
    try:
        staging.rename(directory)
    except OSError:
        if not directory.is_dir():  # not a lost race with another process: a real failure
            raise
        shutil.rmtree(staging, ignore_errors=True)


def tokenizer_dir(family: str, which: int = 1) -> Path:
    """The cached tokenizer files of ``family``'s encoder ``which`` (1, or 2 for SDXL's G),
    built on first use. Example: ``tokenizer_dir("sdxl", 2) / "vocab.json"``."""
    variant = _VARIANTS.get((family, which))
    if variant is None:
        raise PipelineError(f"no CLIP tokenizer {which} for model family {family!r}")
    directory = config.cache_dir() / "tokenizers" / f"{variant}-v{_BUILD}"
    if not (directory / "tokenizer_config.json").is_file():
        directory.parent.mkdir(parents=True, exist_ok=True)
        _write(directory, variant)
    return directory


def load_tokenizer(family: str, which: int = 1) -> Any:
    """A fresh ``CLIPTokenizer`` for ``family``'s encoder ``which`` (fresh because textual
    inversion adds tokens to it)."""
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(str(tokenizer_dir(family, which)), local_files_only=True)
