"""Shell completion callbacks (``tireg --install-completion`` for bash, zsh and fish).

They must never fail or print: a broken catalogue, or none yet, simply offers nothing.
"""

from __future__ import annotations

from tireg.errors import TiregError


def embedding_refs(incomplete: str) -> list[str]:
    """Catalogued embeddings whose name starts with what was typed."""
    from tireg.db import open_catalogue
    from tireg.registry import completion

    try:
        with open_catalogue() as catalogue:
            return completion.embedding_refs(catalogue, incomplete)
    except TiregError:
        return []


def model_names(incomplete: str) -> list[str]:
    """The user's checkpoint names starting with what was typed."""
    from tireg.db import open_catalogue
    from tireg.registry import completion

    try:
        with open_catalogue() as catalogue:
            return completion.model_names(catalogue, incomplete)
    except TiregError:
        return []
