"""``tireg publish``: the real huggingface_hub client writing to the loopback Hub stand-in."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.registry.make_files import random_embedding, write_one
from tests.sources.servers.http_server import running
from tests.sources.servers.hub_server import HF_TEST_TOKEN, HubServer
from tireg.converters import read_bytes
from tireg.db.session import open_catalogue
from tireg.registry.importer import add_paths
from tireg.registry.publish import publish as publish_embedding

OWNER = "birdwatcher"
REPO = f"{OWNER}/birb-style"
LEARNED = ("learned_embeds.safetensors", "learned_embeds.bin")


@pytest.fixture
def hub() -> Iterator[HubServer]:
    """An empty Hub: every repo in it is one a test published."""
    server = HubServer()
    with running(server.http):
        yield server


@pytest.fixture
def logged_in(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", HF_TEST_TOKEN)


def picture(path: Path, colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), colour).save(buffer, "PNG" if path.suffix == ".png" else "JPEG")
    path.write_bytes(buffer.getvalue())
    return buffer.getvalue()


@dataclass(frozen=True)
class Birb:
    folder: Path
    vectors_sha256: str
    preview: bytes


@pytest.fixture
def birb(tmp_path: Path) -> Birb:
    """A catalogued A1111 embedding trained on SD 1.5 (by hash), with a preview and a tag."""
    folder = tmp_path / "embeddings"
    embedding = random_embedding(np.random.default_rng(7), "birb-style").with_meta(
        step=3000, trained_on_hash="81761151"
    )
    write_one(embedding, folder, "birb-style", "a1111-pt")
    preview = picture(folder / "birb-style.preview.png", (200, 40, 40))
    hints = {"concept_type": "style", "licence": "mit", "tags": "birds"}
    with open_catalogue() as catalogue:
        report = add_paths(catalogue, [folder], hints=hints)
    assert report.counts()["imported"] == 1, report.counts()
    return Birb(folder, embedding.vectors_sha256(), preview)


def publish(tireg_cli, hub: HubServer, *extra: str):  # type: ignore[no-untyped-def]
    return tireg_cli("publish", "birb-style", "--repo", REPO, "--hf-endpoint", hub.url, *extra)


@pytest.mark.usefixtures("logged_in")
def test_publish_writes_a_concept_repo(tireg_cli, hub: HubServer, birb: Birb) -> None:
    result = publish(tireg_cli, hub, "--private", "--json")
    assert result.code == 0, result.stderr
    report = json.loads(result.stdout)

    repo = hub.repos[REPO]
    expected = {
        *LEARNED,
        "token_identifier.txt",
        "type_of_concept.txt",
        "README.md",
        "concept_images/0.png",
    }
    assert set(repo.files) == expected | {".gitattributes"}  # the Hub's own first commit
    assert repo.private
    [commit] = hub.commits
    assert sorted(commit.added) == sorted(expected) == report["uploaded"]
    assert report["commit"] == commit.sha == repo.sha

    for name in LEARNED:  # both read back as the same vectors, under the trigger as the token
        embedding = read_bytes(repo.files[name], name_hint=name)
        assert embedding.vectors_sha256() == birb.vectors_sha256
        assert embedding.name == "birb-style"
    assert b"__metadata__" in repo.files["learned_embeds.safetensors"][:200]
    assert repo.files["token_identifier.txt"] == b"birb-style"
    assert repo.files["type_of_concept.txt"] == b"style"
    assert repo.files["concept_images/0.png"] == birb.preview

    card = repo.files["README.md"].decode()
    front, body = card.split("---\n")[1], card.split("---\n", 2)[2]
    assert 'license: "mit"' in front and '- "birds"' in front and '- "textual-inversion"' in front
    assert "base_model" not in front  # no repo id is recorded for it, and the Hub wants one
    assert "| trigger | `birb-style` |" in body
    assert "| type of concept | style |" in body
    assert "| trained on | `81761151` (Stable Diffusion 1.5 (EMA-only)) |" in body
    assert "| training steps | 3000 |" in body
    assert f"| vectors sha256 | `{birb.vectors_sha256}` |" in body
    assert "## Licence\n\nmit" in body
    assert "write `birb-style` in a prompt" in body  # A1111: the file name is the prompt word
    assert "`embedding:birb-style`" in body  # ComfyUI
    assert f'pipe.load_textual_inversion("{REPO}")' in body  # diffusers


@pytest.mark.usefixtures("logged_in")
def test_republish_commits_only_what_changed(tireg_cli, hub: HubServer, birb: Birb) -> None:
    assert publish(tireg_cli, hub).code == 0
    first = dict(hub.repos[REPO].files)

    # a tag changes the model card, and nothing else
    assert tireg_cli("tag", "birb-style", "robins").code == 0
    result = publish(tireg_cli, hub, "--json")
    assert result.code == 0, result.stderr
    assert hub.commits[-1].added == ["README.md"] and hub.commits[-1].deleted == []
    assert json.loads(result.stdout)["uploaded"] == ["README.md"]
    assert '- "robins"' in hub.repos[REPO].files["README.md"].decode()

    # a new preview is one new concept image
    assert len(hub.commits) == 2
    (birb.folder / "concept_images").mkdir()
    second = picture(birb.folder / "concept_images" / "sky.jpg", (40, 40, 200))
    with open_catalogue() as catalogue:
        add_paths(catalogue, [birb.folder])
    assert publish(tireg_cli, hub).code == 0
    assert hub.commits[-1].added == ["concept_images/1.jpg"]
    assert hub.repos[REPO].files["concept_images/1.jpg"] == second

    # unchanged: no commit at all, and it says so
    commits = len(hub.commits)
    result = publish(tireg_cli, hub)
    assert result.code == 0, result.stderr
    assert "nothing committed" in result.stdout
    assert len(hub.commits) == commits == 3
    for path, data in first.items():
        if path != "README.md":
            assert hub.repos[REPO].files[path] == data

    # a concept image that is no preview (another client's upload) is deleted, alone
    hub.touch(REPO, "concept_images/9.png", b"not ours")
    assert publish(tireg_cli, hub).code == 0
    assert hub.commits[-1].added == [] and hub.commits[-1].deleted == ["concept_images/9.png"]


def test_missing_token_says_how_to_log_in(tireg_cli, hub: HubServer, birb: Birb) -> None:
    result = publish(tireg_cli, hub)
    assert result.code == 1
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "hf auth login" in result.stderr and "HF_TOKEN" in result.stderr
    assert hub.http.requests == []  # refused before anything was sent


def test_refused_token_says_how_to_log_in(
    tireg_cli, hub: HubServer, birb: Birb, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_expired")
    result = publish(tireg_cli, hub)
    assert result.code == 1
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "refused the token (401)" in result.stderr and "hf auth login" in result.stderr
    assert REPO not in hub.repos and hub.commits == []


@pytest.mark.usefixtures("logged_in")
def test_sync_finds_the_published_embedding_again(
    tireg_cli, hub: HubServer, birb: Birb, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert publish(tireg_cli, hub).code == 0

    monkeypatch.setenv("TIREG_HOME", str(tmp_path / "elsewhere"))  # a catalogue that never saw it
    result = tireg_cli(
        "sync", "hf", "--author", OWNER, "--download", "--hf-endpoint", hub.url, "--json"
    )
    assert result.code == 0, result.stdout + result.stderr
    assert json.loads(result.stdout)["downloaded"] == [REPO]

    shown = tireg_cli("show", "birb-style", "--json")
    assert shown.code == 0, shown.stderr
    details = json.loads(shown.stdout)
    assert details["vectors_sha256"] == birb.vectors_sha256
    [source] = details["sources"]
    assert source["source"]["locator"] == REPO and source["source"]["trigger"] == "birb-style"
    assert source["location"].endswith("/learned_embeds.safetensors")


#: publish in a fresh interpreter, then which heavy modules got imported
_PUBLISH_RUN = """
import sys

from tireg.cli.app import main

try:
    main(sys.argv[1:])
except SystemExit as exc:
    assert not exc.code, exc.code
heavy = sorted(m for m in ("torch", "diffusers", "transformers") if m in sys.modules)
print("heavy=" + ",".join(heavy))
"""


@pytest.mark.usefixtures("logged_in", "birb")
def test_publish_imports_no_ml_library(hub: HubServer) -> None:
    """The ``.bin`` is tireg's own torch-file writer's, and the Hub client needs no torch."""
    argv = ["publish", "birb-style", "--repo", REPO, "--hf-endpoint", hub.url]
    out = subprocess.run(
        [sys.executable, "-c", _PUBLISH_RUN, *argv], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "heavy="
    assert set(LEARNED) <= set(hub.repos[REPO].files)


@pytest.mark.usefixtures("logged_in")
def test_sdxl_gets_the_clip_l_clip_g_file_and_no_bin(hub: HubServer, tmp_path: Path) -> None:
    """diffusers has no one-key layout for two encoders; its SDXL examples load clip_l/clip_g."""
    embedding = random_embedding(np.random.default_rng(3), "<pixel-xl>", "sdxl")
    write_one(embedding, tmp_path / "xl", "pixel-xl", "safetensors")
    with open_catalogue() as catalogue:
        add_paths(catalogue, [tmp_path / "xl"])
        report = publish_embedding(catalogue, "pixel-xl", "me/pixel-xl", endpoint=hub.url)
    files = hub.repos["me/pixel-xl"].files
    assert report.uploaded == ["README.md", "learned_embeds.safetensors", "token_identifier.txt"]
    assert "learned_embeds.bin" not in files and "type_of_concept.txt" not in files
    back = read_bytes(files["learned_embeds.safetensors"], name_hint="learned_embeds")
    assert back.vectors_sha256() == embedding.vectors_sha256() and set(back.vectors) == {
        "clip_l",
        "clip_g",
    }
    card = files["README.md"].decode()
    assert 'state["clip_g"], token="<pixel-xl>"' in card and "text_encoder_2" in card


@pytest.mark.usefixtures("logged_in", "birb")
def test_offline_publishes_nothing(
    tireg_cli, hub: HubServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TIREG_OFFLINE", "1")
    result = publish(tireg_cli, hub)
    assert result.code == 1 and "offline" in result.stderr and result.stderr.count("\n") == 1
    assert hub.http.requests == []


@pytest.mark.usefixtures("logged_in", "birb")
def test_a_commit_in_between_is_not_overwritten(tireg_cli, hub: HubServer) -> None:
    """The commit names the sha it was computed against; another writer's commit in between
    makes the Hub refuse it (412), in one line, rather than mix the two."""
    assert publish(tireg_cli, hub).code == 0
    assert tireg_cli("tag", "birb-style", "robins").code == 0
    hub.before_commit = lambda repo: hub.touch(repo.repo_id, "README.md", b"someone else's card")
    result = publish(tireg_cli, hub)
    assert result.code == 1 and result.stderr.count("\n") == 1
    assert "the repo changed while publishing" in result.stderr
    assert hub.repos[REPO].files["README.md"] == b"someone else's card"
    assert len(hub.commits) == 1


@pytest.mark.usefixtures("logged_in", "birb")
def test_an_unreachable_hub_is_one_line(tireg_cli) -> None:
    with running(HubServer().http) as gone:
        url = gone.url  # a port that was a Hub a moment ago, closed now
    result = tireg_cli("publish", "birb-style", "--repo", REPO, "--hf-endpoint", url)
    assert result.code == 1 and result.stderr.count("\n") == 1, result.stderr
    assert "cannot reach the Hub" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.usefixtures("logged_in")
def test_validation_grids_join_the_concept_images(
    tireg_cli, hub: HubServer, birb: Birb, tmp_path: Path
) -> None:
    """A grid ``tireg validate`` recorded for the embedding is published after its previews."""
    from datetime import datetime, timezone

    from tireg.db import open_catalogue
    from tireg.files import sha256_file
    from tireg.registry.validations import ImageMade, ModelUsed, RunRecord, record_run

    grid = tmp_path / "grid.png"
    grid_bytes = picture(grid, (30, 200, 90))
    model = ModelUsed("sd15", None, "sd1", "cd" * 32, "cdcdcdcd", None, 1.0)
    record = RunRecord(
        started_at=datetime(2026, 11, 30, tzinfo=timezone.utc),
        seconds=1.0,
        settings={"steps": 20},
        seeds=[1],
        out_dir=str(tmp_path),
        grid_path=str(grid),
        grid_sha256=sha256_file(grid),
        models=[model],
        images=[
            ImageMade(0, birb.vectors_sha256, "birb-style", "a birb-style", 1, str(grid), "", False)
        ],
        evidence=[(birb.vectors_sha256, 0)],
    )
    with open_catalogue() as catalogue:
        record_run(catalogue, record)
    assert publish(tireg_cli, hub).code == 0
    files = hub.repos[REPO].files
    assert files["concept_images/0.png"] == birb.preview
    assert files["concept_images/1.png"] == grid_bytes
