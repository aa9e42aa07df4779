"""A validation run is recorded: listed by ``validations`` and ``show``, ranked first by
``check``; a forced run of an embedding that cannot work claims nothing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from sqlalchemy import func, select

from tests.validate.conftest import FAST


def _validate(tireg_cli, *args: object) -> dict:  # type: ignore[no-untyped-def]
    result = tireg_cli("validate", *args, *FAST, "--seeds", "5", "--json")
    assert result.code == 0, result.stderr
    return json.loads(result.stdout)


def test_run_is_recorded_listed_and_ranked_first(tiny_model, catalogued, tireg_cli) -> None:  # type: ignore[no-untyped-def]
    from tireg.db import open_catalogue
    from tireg.db.schema import ValidationImageRow, ValidationRow
    from tireg.files import sha256_file

    catalogued("birb-style")
    catalogued("cat-toy", seed=1)
    model = tiny_model("sd1")
    before = json.loads(tireg_cli("check", "--model", model, "birb-style", "--json").stdout)
    assert before["embeddings"][0]["relation"] == "same_family"

    run = _validate(tireg_cli, "birb-style", "--model", model)

    # recorded: settings, seeds, model, every image with its sha256, the time taken
    with open_catalogue() as catalogue, catalogue.reading() as session:
        row = session.scalars(select(ValidationRow)).one()
        assert json.loads(row.settings)["sampler"] == "Euler" and json.loads(row.seeds) == [5]
        assert row.models[0].path == str(model) and row.seconds > 0
        images = session.scalars(select(ValidationImageRow)).all()
        assert len(images) == 2 and all(i.sha256 == sha256_file(i.path) for i in images)
        assert row.grid_sha256 == sha256_file(row.grid_path)
        assert session.scalar(select(func.count()).select_from(ValidationRow)) == 1

    listed = json.loads(tireg_cli("validations", "--json").stdout)
    assert [r["id"] for r in listed] == [run["run"]]
    assert listed[0]["grid"] == run["grid"] and listed[0]["embeddings"][0]["ref"] == "birb-style"
    mine = json.loads(tireg_cli("validations", "birb-style", "--model", model, "--json").stdout)
    assert [r["id"] for r in mine] == [run["run"]]
    assert json.loads(tireg_cli("validations", "cat-toy", "--json").stdout) == []
    table = tireg_cli("validations", "birb-style")
    assert table.code == 0 and "birb-style" in table.stdout and ".png" in table.stdout

    shown = json.loads(tireg_cli("show", "birb-style", "--json").stdout)
    assert [v["grid"] for v in shown["validations"]] == [run["grid"]]
    assert "validations" in tireg_cli("show", "birb-style").stdout

    after = json.loads(tireg_cli("check", "--model", model, "--json").stdout)
    verdicts = {e["name"]: e for e in after["embeddings"]}
    assert verdicts["birb-style"]["relation"] == "validated"
    assert verdicts["birb-style"]["evidence"][0].startswith("validated on")
    assert verdicts["cat-toy"]["relation"] == "same_family"

    # removing the embedding keeps the run, which still says what was rendered
    assert tireg_cli("rm", "birb-style").code == 0
    (kept,) = json.loads(tireg_cli("validations", "--json").stdout)
    assert kept["embeddings"] == [
        {
            "ref": "birb-style",
            "prompt_word": "birb-style",
            "vectors_sha256": run["embeddings"][0]["vectors_sha256"],
            "catalogued": False,
        }
    ]


def test_wrong_family_is_refused_forced_or_not(
    tiny_model, catalogued, tireg_cli, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """Refused with check's verdict; with --force rendered as ComfyUI would: an SD 2.x embedding
    fits no encoder of SD 1.x, so one warning says so and its row is the row without it. The
    run is recorded, but claims nothing for the embedding."""
    from PIL import Image

    catalogued("wide-one", "sd2")
    model = tiny_model("sd1")
    out = tmp_path / "out"
    refused = tireg_cli("validate", "wide-one", "--model", model, *FAST, "--out", out)
    assert refused.code == 1 and "wrong family" in refused.stderr and "--force" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    assert not out.exists()
    forced = tireg_cli(
        "validate", "wide-one", "--model", model, *FAST, "--seeds", "5", "--out", out, "--force"
    )
    assert forced.code == 0, forced.stderr
    (warning,) = forced.stderr.strip().splitlines()
    assert (
        warning.startswith("warning: wide-one on tiny-sd1:") and "fits no text encoder" in warning
    )
    assert "forced: wide-one on tiny-sd1" in " ".join(forced.stdout.split())
    assert len(json.loads(tireg_cli("validations", "--json").stdout)) == 1
    rows = sorted(out.rglob("*-5.png"))
    assert [p.name for p in rows] == ["01-wide-one-5.png", "without-5.png"]
    with Image.open(rows[0]) as with_, Image.open(rows[1]) as without:
        assert np.array_equal(np.asarray(with_), np.asarray(without))
        assert "TI hashes" not in with_.info["parameters"]  # A1111 lists only embeddings used
    check = json.loads(tireg_cli("check", "--model", model, "wide-one", "--json").stdout)
    assert check["embeddings"][0]["relation"] == "wrong_family"
