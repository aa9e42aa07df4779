"""The word a prompt types for an embedding file: A1111's rule, in one place.

A1111 (and Forge, which kept its loader) types a ``.pt``/``.bin``/``.safetensors`` embedding by
its file stem and ignores the ``name`` stored inside; only an image card's ``name`` replaces the
stem (``modules/textual_inversion/textual_inversion.py``, ``EmbeddingDatabase.load_from_file``:
``name, ext = os.path.splitext(filename)`` ... ``name = data.get('name', name)`` for images).
So a file's stem is the name users know it by, and the registry records it (``prompt_words``)
and ``convert`` keeps it.
"""

from __future__ import annotations

from pathlib import PurePath

#: the extensions A1111 loads as tensors, typed by their stem
TENSOR_SUFFIXES = frozenset({".pt", ".bin", ".safetensors"})
#: image cards: typed by the ``name`` inside
IMAGE_SUFFIXES = frozenset({".png", ".webp", ".jxl", ".avif"})
#: stems that name the training script, not the concept: diffusers' ``textual_inversion.py``
#: saves every concept as ``learned_embeds.bin`` / ``.safetensors`` (``_2`` for SDXL's second
#: encoder), so such a file is known by the token inside it instead
GENERIC_STEMS = frozenset({"learned_embeds", "learned_embeds_2"})


def file_prompt_word(location: str) -> str | None:
    """The word A1111 types for the file at ``location`` (a path or URL), or None where the
    file is known by the name inside it (an image card, a generic ``learned_embeds``)."""
    path = PurePath(location.split("?", 1)[0])
    stem = path.stem.strip()
    if path.suffix.lower() not in TENSOR_SUFFIXES or not stem or stem in GENERIC_STEMS:
        return None
    return stem


def unbracketed(word: str, *, partial: bool = False) -> str:
    """``word`` trimmed and without the ``<...>`` around it: the one folding rule for brackets.

    The sd-concepts library writes its tokens as ``<cat-toy>``, while a file made from one is
    typed ``cat-toy``, so lookups, file stems and completion all see a word without them. Only
    a whole pair goes (``<>`` alone, ``a<b>`` and ``<x`` stay), so nothing else in a name is
    lost; a ``partial`` word, being typed, also loses an opening bracket not yet closed.

    Example: ``unbracketed(" <cat-toy> ") == "cat-toy"``; ``unbracketed("<ca", partial=True) ==
    "ca"``."""
    text = word.strip()
    if len(text) > 2 and text[0] == "<" and text[-1] == ">":
        return text[1:-1]
    if partial and text.startswith("<"):
        return text[1:]
    return text
