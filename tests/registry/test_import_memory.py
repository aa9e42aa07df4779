"""``add`` bounds the memory its prepare threads hold, not only their number (issue 8 §3).

Eight threads once read eight files at once, and a small file can decode to hundreds of MB
before it is refused, so a folder of them took eight times the worst case. Reads now start only
while :data:`tireg.registry.importer.PREPARE_MEMORY` allows, each counted at the most reading one
file can take (:data:`tireg.converters.MAX_READ_MEMORY`) until it is done.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.registry.make_files import write_mixed
from tireg.converters import MAX_READ_MEMORY
from tireg.db import Catalogue, open_catalogue
from tireg.registry import importer


@pytest.fixture
def catalogue() -> Iterator[Catalogue]:
    with open_catalogue() as cat:
        yield cat


def test_reads_in_flight_fit_the_memory_budget(
    catalogue: Catalogue, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = write_mixed(tmp_path / "files", 40, seed=3)
    real_read = importer._read
    lock = threading.Lock()
    state = {"now": 0, "most": 0}

    def counted(path: Path) -> Any:
        """The real reader, counting how many run at once."""
        with lock:
            state["now"] += 1
            state["most"] = max(state["most"], state["now"])
        try:
            return real_read(path)
        finally:
            with lock:
                state["now"] -= 1

    monkeypatch.setattr(importer, "_read", counted)
    report = importer.add_paths(catalogue, [tmp_path / "files"])
    assert len(report.imported) == len(files)
    assert importer.PREPARE_THREADS > 1
    assert state["most"] <= importer.PREPARE_MEMORY // MAX_READ_MEMORY
