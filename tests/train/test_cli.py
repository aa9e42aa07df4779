"""``tireg train`` end to end: one-line errors, what a run leaves, the catalogue's lineage, and
the trained file in diffusers' own loader."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.train.conftest import SIZE, train_args, write_concept
from tireg.converters import read_file, write_file


def _args(images: Path, model: str, out: Path, *extra: str) -> list[str]:
    return [*train_args(images, model, out, template="subject_filewords"), *extra]


def _bad_images(tmp: Path) -> dict[str, tuple[Path, str, tuple[str, ...]]]:
    empty = tmp / "empty"
    empty.mkdir()
    corrupt = write_concept(tmp / "corrupt")
    (corrupt / "5-broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    concept = write_concept(tmp / "good")
    return {
        "empty folder": (empty, str(empty), ()),
        "corrupt image": (corrupt, str(corrupt / "5-broken.png"), ()),
        "init text too long": (concept, "more than the 1 vectors", ("--vectors", "1")),
        "bad schedule": (concept, "cannot read '0.1:x'", ("--lr", "0.1:x")),
        "bad clip": (concept, "--clip-grad 'sum:1'", ("--clip-grad", "sum:1")),
    }


@pytest.mark.parametrize(
    "case", ["empty folder", "corrupt image", "init text too long", "bad schedule", "bad clip"]
)
def test_bad_input_is_one_line_and_writes_nothing(
    case: str, tireg_cli, model_folder: Callable[[str], Path], tmp_path: Path
) -> None:
    images, named, extra = _bad_images(tmp_path)[case]
    out = tmp_path / "run"
    # the init text is two tokens here, for one vector
    args = _args(images, str(model_folder("sd1")), out, "--steps", "2", *extra)
    if case == "init text too long":
        args[args.index("--init-text") + 1] = "cat dog"
    result = tireg_cli(*args)
    assert result.code == 1
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert named in lines[0]
    assert not out.exists() or not any(out.rglob("*"))  # nothing half-written


def test_a_run_leaves_entries_lineage_cards_curve_and_previews(
    tireg_cli, model_folder: Callable[[str], Path], concept: Path, tmp_path: Path
) -> None:
    model = model_folder("sd1")
    out = tmp_path / "run"
    extra = ("--save-every", "3", "--preview-every", "3", "--preview-steps", "2", "--json")
    result = tireg_cli(*_args(concept, str(model), out, "--steps", "6", *extra))
    assert result.code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["step"] == 6 and report["stop_reason"] == "reached --steps 6"
    assert [s["step"] for s in report["saves"]] == [3, 6]
    entry = report["entry"]

    log = [json.loads(line) for line in Path(report["log"]).read_text().splitlines()]
    assert [e["step"] for e in log] == [1, 2, 3, 4, 5, 6]
    assert all({"loss", "lr", "time"} <= e.keys() for e in log)
    with Image.open(report["loss_curve"]) as curve:
        assert curve.size == (800, 400)
    assert len(report["previews"]) == 2
    with Image.open(report["previews"][-1]) as grid:
        assert grid.width > 4 * SIZE  # four seeds side by side, with labels

    # the A1111 card carries the vectors, the name and the step
    card = read_file(entry["card"])
    saved = read_file(entry["file"])
    assert card.same_vectors(saved) and card.name == "redsq" and card.step == 6
    assert saved.trained_on_name == model.name
    assert json.loads(saved.extras["tireg.train.settings"])["lr"] == "0.05"

    # continuing the run (more steps, same --out) adds a third version to the same lineage
    more = tireg_cli(*_args(concept, str(model), out, "--steps", "9", *extra))
    assert more.code == 0, more.stderr
    final = json.loads(more.stdout)
    assert final["run_id"] == report["run_id"] and final["resumed_from"].endswith(
        "0000006.safetensors"
    )
    shown = tireg_cli("show", f"redsq@{final['entry']['vectors_sha256'][:8]}", "--json")
    assert shown.code == 0, shown.stderr
    lineage = json.loads(shown.stdout)["lineage"]
    assert [v["step"] for v in lineage] == [3, 6, 9]
    assert [v["this"] for v in lineage] == [False, False, True]
    assert {v["run_id"] for v in lineage} == {report["run_id"]}
    assert lineage[1]["loss"] == pytest.approx(report["saves"][1]["loss"])
    plain = tireg_cli("show", f"redsq@{final['entry']['vectors_sha256'][:8]}")
    assert "lineage" in plain.stdout


def test_trained_file_loads_in_diffusers(
    tireg_cli, model_folder: Callable[[str], Path], concept: Path, tmp_path: Path
) -> None:
    from diffusers import StableDiffusionPipeline

    model = model_folder("sd1")
    result = tireg_cli(*_args(concept, str(model), tmp_path / "run", "--steps", "2", "--json"))
    assert result.code == 0, result.stderr
    trained = read_file(json.loads(result.stdout)["entry"]["file"])
    (pt,) = write_file(trained, tmp_path / "redsq.pt", "a1111-pt")
    pipe = StableDiffusionPipeline.from_pretrained(model)
    pipe.load_textual_inversion(str(pt), token="redsq")
    ids = pipe.tokenizer.convert_tokens_to_ids(["redsq", "redsq_1"])
    rows = pipe.text_encoder.get_input_embeddings().weight.detach()[ids].numpy()
    np.testing.assert_array_equal(rows, trained.vectors["clip_l"])


def test_model_by_catalogue_name(
    tireg_cli, model_folder: Callable[[str], Path], concept: Path, tmp_path: Path
) -> None:
    added = tireg_cli("model", "add", str(model_folder("sd1")), "--name", "tiny-one")
    assert added.code == 0, added.stderr
    result = tireg_cli(*_args(concept, "tiny-one", tmp_path / "run", "--steps", "1", "--json"))
    assert result.code == 0, result.stderr
    assert json.loads(result.stdout)["step"] == 1


def test_train_help_names_every_default_source(tireg_cli) -> None:
    result = tireg_cli("train", "--help")
    assert result.code == 0
    text = " ".join(re.sub(r"[│╭╮╰╯─]", " ", result.stdout).split())
    for phrase in ('A1111 "Embedding Learning rate"', 'A1111 "Prompt template"', "DVAR"):
        assert phrase in text
