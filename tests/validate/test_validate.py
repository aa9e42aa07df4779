"""``tireg validate`` end to end: real catalogue, real tiny pipelines, real PNGs on disk."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tests.validate.a1111_parser import parse
from tests.validate.conftest import FAST

SEEDS = ("--seeds", "11,12")


def _run(tireg_cli, *args: object) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    result = tireg_cli("validate", *args, *FAST, *SEEDS, "--json")
    assert result.code == 0, result.stderr
    return json.loads(result.stdout)


def _pixels(path: str | Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def _infotext(path: str | Path) -> dict[str, str]:
    with Image.open(path) as image:
        return parse(image.info["parameters"])


def _rows(run: dict[str, Any]) -> dict[str | None, list[dict[str, Any]]]:
    rows: dict[str | None, list[dict[str, Any]]] = {}
    for image in run["images"]:
        rows.setdefault(image["prompt_word"], []).append(image)
    return rows


@pytest.mark.parametrize("family", ["sd1", "sd2", "sdxl"])
def test_rows_with_and_without_differ(
    family: str, tiny_model: Callable[[str], Path], catalogued, tireg_cli
) -> None:  # type: ignore[no-untyped-def]
    """Each family: the embedding's row differs from the row without, seed by seed; every PNG
    carries A1111's infotext with the settings, the model and the embedding's TI hash."""
    catalogued("birb-style", family)
    model = tiny_model(family)
    run = _run(tireg_cli, "birb-style", "--model", model, "--prompt", "a photo of {}")
    rows = _rows(run)
    assert [i["seed"] for i in rows[None]] == [i["seed"] for i in rows["birb-style"]] == [11, 12]
    for without, with_ in zip(rows[None], rows["birb-style"], strict=True):
        assert without["prompt"] == "a photo of" and with_["prompt"] == "a photo of birb-style"
        assert not np.array_equal(_pixels(without["path"]), _pixels(with_["path"]))
    for image in run["images"]:
        fields = _infotext(image["path"])
        assert fields["Prompt"] == image["prompt"]
        assert fields["Seed"] == str(image["seed"])
        assert (fields["Steps"], fields["Sampler"], fields["CFG scale"]) == ("3", "Euler", "7.0")
        assert (fields["Size-1"], fields["Size-2"]) == ("32", "32")
        assert fields["Model"] == model.name and fields["RNG"] == "CPU"
        assert ("TI hashes" in fields) == (image["prompt_word"] is not None)
    assert Path(run["grid"]).is_file()
    assert run["models"][0]["family"] == family


def test_word_is_appended_without_braces(tiny_model, catalogued, tireg_cli) -> None:  # type: ignore[no-untyped-def]
    catalogued("birb-style")
    run = _run(tireg_cli, "birb-style", "--model", tiny_model("sd1"), "--prompt", "a photo")
    prompts = {i["prompt_word"]: i["prompt"] for i in run["images"]}
    assert prompts == {None: "a photo", "birb-style": "a photo birb-style"}


def test_images_are_reproducible_from_their_infotext(tiny_model, catalogued, tireg_cli) -> None:  # type: ignore[no-untyped-def]
    """Render again from nothing but a PNG's infotext (and the embedding it names): the same
    pixels."""
    from tireg.converters import read_file
    from tireg.pipelines.embeddings import embeddings_applied
    from tireg.pipelines.loading import load_model
    from tireg.pipelines.render import render

    source = catalogued("birb-style")
    model = tiny_model("sd1")
    run = _run(tireg_cli, "birb-style", "--model", model)
    image = _rows(run)["birb-style"][1]
    fields = _infotext(image["path"])
    pipe = load_model(model, device="cpu", dtype="fp32").pipe
    with embeddings_applied(pipe, [("birb-style", read_file(source))]):
        (again,) = render(
            pipe,
            prompts=[fields["Prompt"]],
            negative=fields["Negative prompt"],
            seeds=[int(fields["Seed"])],
            steps=int(fields["Steps"]),
            sampler=fields["Sampler"],
            schedule=fields["Schedule type"],
            cfg=float(fields["CFG scale"]),
            width=int(fields["Size-1"]),
            height=int(fields["Size-2"]),
            clip_skip=int(fields["Clip skip"]),
            rng=fields["RNG"].lower(),
        )
    assert np.array_equal(np.asarray(again.convert("RGB")), _pixels(image["path"]))


def test_row_without_is_cached_per_model_and_settings(
    tiny_model, catalogued, tireg_cli, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    """A second run on the same model and settings renders only the new embedding's row: the
    renderer is called for fewer images (counted), and the row without is the same pixels."""
    import tireg.pipelines.render as render_module

    rendered: list[int] = []
    real = render_module.render

    def counting(*args: Any, **kwargs: Any) -> Any:
        rendered.append(len(kwargs["seeds"]))
        return real(*args, **kwargs)

    monkeypatch.setattr(render_module, "render", counting)
    catalogued("birb-style")
    catalogued("cat-toy", seed=1)
    model = tiny_model("sd1")
    first = _run(tireg_cli, "birb-style", "--model", model)
    assert sum(rendered) == 4 and first["timings"]["from_cache"] == 0
    rendered.clear()
    second = _run(tireg_cli, "cat-toy", "--model", model)
    assert sum(rendered) == 2
    assert second["timings"] == second["timings"] | {"rendered": 2, "from_cache": 2}
    for old, new in zip(_rows(first)[None], _rows(second)[None], strict=True):
        assert new["cached"] and np.array_equal(_pixels(old["path"]), _pixels(new["path"]))
    rendered.clear()
    _run(tireg_cli, "cat-toy", "--model", model, "--cfg", "5")  # other settings: no reuse
    assert sum(rendered) == 4


def test_pipeline_loaded_once_per_model(
    tiny_model, catalogued, tireg_cli, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    """Two embeddings, two models: two loads; both models' rows in one grid."""
    import tireg.pipelines.loading as loading

    loads: list[Path] = []
    real = loading.load_model

    def counting(path: Path, **kwargs: Any) -> Any:
        loads.append(Path(path))
        return real(path, **kwargs)

    monkeypatch.setattr(loading, "load_model", counting)
    catalogued("birb-style")
    catalogued("cat-toy", seed=1)
    sd1 = tiny_model("sd1")
    other = sd1.parent / "tiny-sd1-copy"
    if not other.exists():
        import shutil

        shutil.copytree(sd1, other)
    run = _run(tireg_cli, "birb-style", "cat-toy", "--model", sd1, "--model", other)
    assert loads == [sd1, other]
    assert len(run["images"]) == 2 * 3 * 2
    with Image.open(run["grid"]) as grid:
        assert grid.height > 6 * 32 and grid.width > 2 * 32


def test_batches_give_the_same_images(tiny_model, catalogued, tireg_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    catalogued("birb-style")
    model = tiny_model("sd1")
    one = _run(tireg_cli, "birb-style", "--model", model, "--out", tmp_path / "one")
    four = _run(
        tireg_cli, "birb-style", "--model", model, "--batch-size", "4", "--out", tmp_path / "four"
    )
    for a, b in zip(one["images"], four["images"], strict=True):
        assert np.allclose(_pixels(a["path"]), _pixels(b["path"]), atol=1)


def test_a_file_path_works_too(tiny_model, tireg_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from tests.registry.make_files import write_one
    from tests.validate.conftest import embedding

    path = write_one(embedding("loose-file"), tmp_path / "loose", "loose-file", "safetensors")
    run = _run(tireg_cli, path, "--model", tiny_model("sd1"))
    assert run["embeddings"][0]["prompt_word"] == "loose-file"
    assert run["embeddings"][0]["catalogued"] is False


def test_summary_table(tiny_model, catalogued, tireg_cli) -> None:  # type: ignore[no-untyped-def]
    catalogued("birb-style")
    result = tireg_cli(
        "validate", "birb-style", "--model", tiny_model("sd1"), *FAST, "--count", "1"
    )
    assert result.code == 0, result.stderr
    out = " ".join(result.stdout.split())
    assert "validation run 1" in out and "birb-style" in out and "(none)" in out
    assert "2 images (2 rendered, 0 from the cache)" in out and "grid:" in out


def test_forced_sd1_embedding_on_sdxl_renders_through_clip_l(
    tiny_model, catalogued, tireg_cli
) -> None:  # type: ignore[no-untyped-def]
    """An SD 1.x embedding on SDXL: refused without --force; with it, applied to the CLIP-L
    encoder and ignored on CLIP-G as ComfyUI does, one warning line, and its row differs from
    the row without."""
    catalogued("birb-style", "sd1")
    model = tiny_model("sdxl")
    refused = tireg_cli("validate", "birb-style", "--model", model, *FAST, *SEEDS)
    assert refused.code == 1 and "--force" in refused.stderr
    result = tireg_cli(
        "validate", "birb-style", "--model", model, *FAST, *SEEDS, "--force", "--json"
    )
    assert result.code == 0, result.stderr
    (warning,) = result.stderr.strip().splitlines()
    assert warning.startswith("warning: birb-style on tiny-sdxl:")
    assert "clip_l 768 to clip_l" in warning and "clip_g 1280 gets none" in warning
    run = json.loads(result.stdout)
    assert run["warnings"] == [warning.removeprefix("warning: ")]
    rows = _rows(run)
    for without, with_ in zip(rows[None], rows["birb-style"], strict=True):
        assert not np.array_equal(_pixels(without["path"]), _pixels(with_["path"]))
        assert "TI hashes" in _infotext(with_["path"])
