"""Embeddings only go where they can work: the UI's checkpoints, or --model, decide."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.checkpoints.builders import write_checkpoint
from tests.registry.test_install import ui_root
from tests.registry.test_query import add, make
from tireg.db.session import Catalogue, open_catalogue
from tireg.registry import install as inst
from tireg.registry import query, uis
from tireg.registry.install import Destination, InstallError
from tireg.registry.query import Filters


@pytest.fixture
def catalogue() -> Catalogue:
    cat = open_catalogue()
    yield cat
    cat.close()


def test_ui_checkpoint_families_counted_from_headers(tmp_path: Path) -> None:
    root = ui_root(tmp_path, "a1111")
    models = root / "models" / "Stable-diffusion"
    models.mkdir(parents=True)
    write_checkpoint(models / "a.safetensors", "sd1")
    write_checkpoint(models / "sub" / "b.safetensors", "sd1") if (
        models / "sub"
    ).mkdir() is None else None
    (models / "broken.safetensors").write_bytes(b"not a checkpoint")
    assert uis.checkpoint_families(uis.UiRoot("a1111", root)) == {"sd1": 2}
    assert uis.checkpoint_families(uis.UiRoot("invokeai", root)) == {}


def test_sdxl_refused_where_only_sd1_checkpoints(tmp_path: Path, catalogue: Catalogue) -> None:
    add(catalogue, make("xl", 1, sdxl=True))
    add(catalogue, make("one", 2))
    root = ui_root(tmp_path, "comfyui")
    (root / "models" / "checkpoints").mkdir()
    write_checkpoint(root / "models" / "checkpoints" / "v15.safetensors", "sd1")
    dest = Destination.ui("comfyui", root)
    with pytest.raises(InstallError, match=r"no sdxl checkpoint \(it has 1 sd1\)") as err:
        inst.install(catalogue, ["one", "xl"], dest)
    assert "--force" in str(err.value)
    assert list((root / "models" / "embeddings").iterdir()) == []  # nothing half-installed
    assert [o.status for o in inst.install(catalogue, ["one"], dest)] == ["installed"]
    assert [o.status for o in inst.install(catalogue, ["xl"], dest, force=True)] == ["installed"]


def test_model_option_judges_instead(tmp_path: Path, catalogue: Catalogue) -> None:
    add(catalogue, make("xl", 3, sdxl=True))
    add(catalogue, make("one", 4))
    xl_model = write_checkpoint(tmp_path / "sdxl-base.safetensors", "sdxl")
    root = ui_root(tmp_path, "a1111")
    dest = Destination.ui("a1111", root)
    with pytest.raises(InstallError, match=r"SD 1\.x embedding on SDXL"):
        inst.install(catalogue, ["one"], dest, model=str(xl_model))
    (out,) = inst.install(catalogue, ["xl"], dest, model=str(xl_model))
    assert out.status == "installed"
    with catalogue.transaction() as session:
        found = query.search(session, "xl one", Filters(compatible_with=str(xl_model)))
        assert found == []
        found = query.list_embeddings(session, Filters(compatible_with=str(xl_model)))
        assert [s.name for s in found] == ["xl"]
