"""The folding rule of the catalogue's key columns (``name_key``, ``word_key``), apart from the
schema so that reading the catalogue through :mod:`tireg.db.reader` folds names the same way
without importing SQLAlchemy."""

from __future__ import annotations

from tireg.prompt_words import unbracketed


def name_key(name: str) -> str:
    """The form under which trigger names collide: case-folded, without ``<...>`` brackets.

    ``<Cat-Toy>`` and ``cat-toy`` are typed the same way in a prompt, so they are one name for
    lookups and collision checks (see the naming rule in :mod:`tireg.registry.naming`).
    """
    return unbracketed(name).casefold()
