"""Git sources against real repositories served on 127.0.0.1 (smart HTTP and git://)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.sources.git_server import GitHost, Project, git_daemon, serving
from tireg.converters import read_file, safetensors_file
from tireg.sources import SourceError
from tireg.sources import git as git_source

README = """# Waifu Diffusion Embeds

Embeddings for WD 1.2.

## Amane Kanata (Hololive)

Trained on Waifu Diffusion v1.2, 10000 steps.
[download](embeddings/kanata-hololive.safetensors)

## Hellhound (Monster Girl Encyclopedia)

The first hellhound.

## Hellhound v2 (Monster Girl Encyclopedia)

Trained on Yiffy e15.

```
# not a heading
```
"""


def emb(seed: int, vectors: int = 1) -> bytes:
    rng = np.random.default_rng(seed)
    return safetensors_file.dumps(
        {"emb_params": rng.standard_normal((vectors, 768), dtype=np.float32)}
    )


@pytest.fixture
def host(tmp_path: Path) -> Iterator[GitHost]:
    with serving(GitHost(tmp_path / "served")) as h:
        yield h


@pytest.fixture
def collection(host: GitHost) -> Project:
    project = host.project("cattoroboto/waifu-diffusion-embeds")
    project.commit(
        {
            "README.md": README.encode(),
            "embeddings/kanata-hololive.safetensors": emb(1),
            "embeddings/hellhound-40000.safetensors": emb(2),
            "embeddings/hellhound_v2-50000.safetensors": emb(3, vectors=3),
            "embeddings/notes.txt": b"not an embedding",
            "other/elsewhere.safetensors": emb(4),
            "images/big.bin": b"\0" * 200_000,
        }
    )
    return project


def missing_objects(repo: Path) -> set[str]:
    out = subprocess.run(
        ["git", "rev-list", "--objects", "--missing=print", "HEAD"],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {line[1:] for line in out.splitlines() if line.startswith("?")}


def blob_id(project: Project, path: str) -> str:
    return subprocess.run(
        ["git", "rev-parse", f"HEAD:{path}"],
        cwd=project.bare,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def test_sync_over_http_imports_files_with_readme_anchors(
    host: GitHost, collection: Project, tmp_path: Path
) -> None:
    url = host.repo_url("cattoroboto/waifu-diffusion-embeds")
    result = git_source.sync(url, tmp_path / "out", path="embeddings")
    names = sorted(f.path.name for f in result.files)
    assert names == [
        "hellhound-40000.safetensors",
        "hellhound_v2-50000.safetensors",
        "kanata-hololive.safetensors",
    ]
    by_name = {f.path.name: f for f in result.files}
    kanata = by_name["kanata-hololive.safetensors"]
    assert kanata.hints["readme_anchor"] == "#amane-kanata-hololive"
    assert "10000 steps" in kanata.hints["description"]
    assert (
        by_name["hellhound-40000.safetensors"].hints["readme_anchor"]
        == "#hellhound-monster-girl-encyclopedia"
    )
    assert (
        by_name["hellhound_v2-50000.safetensors"].hints["readme_anchor"]
        == "#hellhound-v2-monster-girl-encyclopedia"
    )
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=collection.bare, capture_output=True, text=True
    ).stdout.strip()
    assert kanata.revision == result.commit == head
    project_url = f"{host.url}/cattoroboto/waifu-diffusion-embeds"
    assert kanata.location == f"{project_url}/-/raw/{head}/embeddings/kanata-hololive.safetensors"
    assert read_file(by_name["hellhound_v2-50000.safetensors"].path).num_vectors == 3
    # shallow and blob-less: files outside --path were never downloaded
    repo = git_source.cache_path(url)
    shallow = subprocess.run(
        ["git", "rev-parse", "--is-shallow-repository"], cwd=repo, capture_output=True, text=True
    )
    assert shallow.stdout.strip() == "true"
    missing = missing_objects(repo)
    assert blob_id(collection, "images/big.bin") in missing
    assert blob_id(collection, "other/elsewhere.safetensors") in missing


def test_resync_imports_only_changed_files(
    host: GitHost, collection: Project, tmp_path: Path
) -> None:
    url = host.repo_url("cattoroboto/waifu-diffusion-embeds")
    first = git_source.sync(url, tmp_path / "1", path="embeddings")
    again = git_source.sync(url, tmp_path / "2", path="embeddings", known_blobs=first.blobs)
    assert again.files == [] and again.unchanged == 3
    collection.commit(
        {
            "embeddings/hellhound-40000.safetensors": emb(20),
            "embeddings/new.safetensors": emb(21),
            "embeddings/kanata-hololive.safetensors": None,
        }
    )
    third = git_source.sync(url, tmp_path / "3", path="embeddings", known_blobs=first.blobs)
    assert sorted(f.hints["git_path"] for f in third.files) == [
        "embeddings/hellhound-40000.safetensors",
        "embeddings/new.safetensors",
    ]
    assert third.unchanged == 1 and third.commit != first.commit
    assert "embeddings/kanata-hololive.safetensors" not in third.blobs


def test_lfs_pointer_is_fetched_through_the_raw_url(host: GitHost, tmp_path: Path) -> None:
    project = host.project("viper1/stable-diffusion-embeddings", branch="master")
    project.commit({"README.md": b"# x\n"})
    data = emb(7, vectors=2)
    project.commit_lfs("embeddings/botan-50000.safetensors", data)
    url = host.repo_url("viper1/stable-diffusion-embeddings")
    (got,) = git_source.fetch(url, tmp_path, ref="master")
    assert got.path.read_bytes() == data
    assert got.hints["lfs_oid"] == got.sha256
    assert "/-/raw/" in got.location
    assert any("/-/raw/" in r for r in host.requests)


def test_git_daemon_protocol_and_lfs_without_raw_url(tmp_path: Path) -> None:
    project = Project(tmp_path / "served", "team/embeds")
    project.commit({"a.safetensors": emb(1), "README.md": b"# a\nthe a one\n"})
    project.commit_lfs("b.safetensors", emb(2))
    with git_daemon(tmp_path / "served") as base:
        url = f"{base}/team/embeds.git"
        result = git_source.sync(url, tmp_path / "out")
    assert [f.path.name for f in result.files] == ["a.safetensors"]
    assert result.files[0].hints["description"] == "the a one"
    ((path, why),) = result.skipped
    assert path == "b.safetensors" and "Git LFS pointer" in why and "git lfs pull" in why


def test_ref_can_be_a_branch_or_a_commit(host: GitHost, tmp_path: Path) -> None:
    project = host.project("ns/refs")
    old = project.commit({"x.safetensors": emb(1)})
    project.commit({"x.safetensors": emb(2)})
    url = host.repo_url("ns/refs")
    (at_old,) = git_source.fetch(url, tmp_path / "old", ref=old)
    assert at_old.revision == old and at_old.path.read_bytes() == emb(1)
    (at_main,) = git_source.fetch(url, tmp_path / "main", ref="main")
    assert at_main.path.read_bytes() == emb(2)


def test_offline_uses_the_cached_clone_and_says_so(
    host: GitHost, collection: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = host.repo_url("cattoroboto/waifu-diffusion-embeds")
    git_source.sync(url, tmp_path / "1", path="embeddings")
    monkeypatch.setenv("TIREG_OFFLINE", "1")
    before = len(host.requests)
    result = git_source.sync(url, tmp_path / "2", path="embeddings")
    assert len(host.requests) == before
    assert result.offline and len(result.files) == 3
    assert all("offline" in f.hints for f in result.files)
    with pytest.raises(SourceError, match="offline"):
        git_source.sync(host.repo_url("never/synced"), tmp_path / "3")


def test_unreachable_repo_and_unknown_ref_are_one_line_errors(
    host: GitHost, collection: Project, tmp_path: Path
) -> None:
    with pytest.raises(git_source.GitError, match="git fetch failed") as info:
        git_source.sync(host.repo_url("no/such"), tmp_path)
    assert "\n" not in str(info.value)
    with pytest.raises(git_source.GitError):
        git_source.sync(host.repo_url("cattoroboto/waifu-diffusion-embeds"), tmp_path, ref="nope")


@pytest.mark.parametrize(
    ("url", "raw"),
    [
        (
            "https://gitlab.com/cattoroboto/waifu-diffusion-embeds",
            "https://gitlab.com/cattoroboto/waifu-diffusion-embeds/-/raw/abc/e/x.pt",
        ),
        (
            "https://gitgud.io/viper1/stable-diffusion-embeddings.git",
            "https://gitgud.io/viper1/stable-diffusion-embeddings/-/raw/abc/e/x.pt",
        ),
        ("https://github.com/o/r.git", "https://github.com/o/r/raw/abc/e/x.pt"),
        ("git://example.org/o/r.git", None),
        ("file:///tmp/r", None),
    ],
)
def test_raw_urls(url: str, raw: str | None) -> None:
    assert git_source.raw_url(url, "abc", "e/x.pt") == raw


def test_readme_slugs() -> None:
    assert git_source.slugify("Amane Kanata (Hololive)") == "amane-kanata-hololive"
    assert git_source.slugify("Hoshimachi Suisei — `WD 1.3`") == "hoshimachi-suisei--wd-13"
    sections = git_source.parse_sections(README)
    assert [s.slug for s in sections][:2] == ["waifu-diffusion-embeds", "amane-kanata-hololive"]
    assert len(sections) == 4  # the '#' inside the code fence is not a heading


def test_concurrent_syncs_of_one_repository_share_the_clone(
    host: GitHost, collection: Project, tmp_path: Path
) -> None:
    """Four processes syncing one repo at once: none trips over git's index.lock."""
    import os
    import sys

    url = host.repo_url("cattoroboto/waifu-diffusion-embeds")
    code = (
        "import sys\n"
        "from tireg.sources import git\n"
        "result = git.sync(sys.argv[1], sys.argv[2], path='embeddings')\n"
        "print(len(result.files))\n"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, url, str(tmp_path / f"out-{i}")],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=os.environ.copy(),
        )
        for i in range(4)
    ]
    results = [(p.wait(timeout=120), *p.communicate()) for p in procs]
    for status, out, err in results:
        assert status == 0, err
        assert out.strip() == "3"
