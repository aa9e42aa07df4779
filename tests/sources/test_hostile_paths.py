"""Hostile servers choose names and handles; nothing outside the target and the cache changes.

Each test runs ``tireg install SPEC --to TARGET`` with ``TIREG_HOME`` inside a sandbox folder
that also holds "victim" files where an escaping path would land, snapshots the whole sandbox
before and after, and checks that every change lies in the target or in the catalogue's own
places (the source's cache, the store, previews).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from tests.sources import mega_server
from tests.sources.git_server import GitHost, serving
from tests.sources.mega_server import MegaStandIn
from tests.sources.servers.civitai_server import CivitaiModel, CivitaiServer, CivitaiVersion
from tests.sources.servers.http_server import FileServer, Served
from tests.sources.servers.hub_server import HubServer, concept_repo, embedding_bytes
from tests.sources.test_mega import embedding_bytes as mega_embedding
from tireg.sources import git as git_source

fake_mega = mega_server.fake_mega  # the fixture

VICTIMS = ("victim/x.safetensors", "home/cache/any/dir/x.safetensors", "victim/evil.safetensors")


def _snapshot(root: Path) -> dict[str, str]:
    """Every file and folder under ``root``: relative path -> content hash ('' for a folder)."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_symlink():
            out[rel] = "link:" + str(path.readlink())
        elif path.is_dir():
            out[rel] = ""
        else:
            out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


class Sandbox:
    """A folder with TIREG_HOME, the install target and victims in it."""

    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch, allowed: tuple[str, ...]):
        self.root, self.target = root, root / "target"
        self.allowed = ("target", "home/catalogue.sqlite", "home/store", "home/previews", *allowed)
        monkeypatch.setenv("TIREG_HOME", str(root / "home"))
        for victim in VICTIMS:
            (root / victim).parent.mkdir(parents=True, exist_ok=True)
            (root / victim).write_bytes(b"precious")
        self.before = _snapshot(root)

    def outside_changes(self) -> list[str]:
        after = _snapshot(self.root)
        changed = {
            k for k in after.keys() | self.before.keys() if after.get(k) != self.before.get(k)
        }
        return sorted(
            path
            for path in changed
            if not any(path == a.rstrip("/") or path.startswith(a) for a in self.allowed)
        )

    def installed(self) -> list[str]:
        return sorted(p.relative_to(self.target).as_posix() for p in self.target.rglob("*"))


@pytest.fixture
def sandbox_for(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    def make(*allowed: str) -> Sandbox:
        return Sandbox(tmp_path / "sandbox", monkeypatch, allowed)

    return make


def _one_line_error(result) -> str:  # type: ignore[no-untyped-def]
    assert result.code == 1, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


# --- MEGA: hostile names are made safe ------------------------------------------------------

HOSTILE_NAMES = {
    "dotdot": {"..": {"x.safetensors": 1}},
    "absolute": {"/victim/evil.safetensors": 2},
    "backslash": {"..\\..\\..\\..\\..\\victim\\evil.safetensors": 3},
    "nul": {"ev\x00il.safetensors": 4, "evil.safetensors": 5},
    "long": {"x" * 300 + ".safetensors": 6, "x" * 299 + "y.safetensors": 7},
    "bidi_and_device": {"evil\u202egnp.safetensors": 8, "CON.safetensors": 9},
}


def _count(spec: dict) -> int:
    return sum(_count(v) if isinstance(v, dict) else 1 for v in spec.values())


def _tree(spec: dict) -> dict:
    return {k: _tree(v) if isinstance(v, dict) else mega_embedding(v) for k, v in spec.items()}


@pytest.mark.parametrize("case", sorted(HOSTILE_NAMES))
def test_mega_hostile_names_stay_in_the_target(
    fake_mega: MegaStandIn, tireg_cli, sandbox_for, case: str
) -> None:  # type: ignore[no-untyped-def]
    link, _ = fake_mega.add_folder(_tree(HOSTILE_NAMES[case]))
    box = sandbox_for("home/cache/mega/")
    result = tireg_cli("install", link, "--to", box.target)
    assert result.code == 0, result.stderr
    assert box.outside_changes() == []
    installed = box.installed()
    assert len(installed) == _count(HOSTILE_NAMES[case]), "each file kept, none overwritten"
    for name in installed:  # plain names, bounded, none of the hostile characters
        assert "/" not in name and "\x00" not in name and "\u202e" not in name
        assert len(name.encode()) < 255 and not name.upper().startswith("CON.")
    files = sorted((box.root / "home" / "cache" / "mega").rglob("*.safetensors"))
    assert all(len(p.name.encode()) < 255 for p in files)


# --- MEGA: hostile handles are refused before anything is written ---------------------------

HOSTILE_HANDLES = {
    "escape_home": "../../../../../victim",
    "escape_cache": "../../../any/dir",
    "absolute": "/tmp/abcd",
    "backslash": "..\\..\\xy",
    "nul": "AAAA\x00AAA",
    "long": "A" * 300,
    "short": "AAAA",
}


@pytest.mark.parametrize("case", sorted(HOSTILE_HANDLES))
@pytest.mark.parametrize("node", ["..", "..|x.safetensors"])
def test_mega_hostile_handles_are_refused(
    fake_mega: MegaStandIn, tireg_cli, sandbox_for, case: str, node: str
) -> None:  # type: ignore[no-untyped-def]
    """The issue's attack: a sub-folder ``..`` (or a file in it) with a handle that is a path."""
    link, _ = fake_mega.add_folder(
        {"..": {"x.safetensors": mega_embedding(1)}},
        handles={node.replace("|", "/"): HOSTILE_HANDLES[case]},
    )
    box = sandbox_for()  # not even the cache may change
    line = _one_line_error(tireg_cli("install", link, "--to", box.target))
    assert "malformed" in line and "handle" in line
    assert box.outside_changes() == []
    assert box.installed() == []


# --- the Hub: file names and commit shas from a configurable endpoint -----------------------


@pytest.mark.parametrize(
    ("sha", "files", "etag"),
    [
        ("../../../../../../victim", None, None),
        ("0" * 39 + "/", None, None),
        ("not-a-sha", None, None),
        (None, {"..\\..\\evil.safetensors": b"x"}, None),
        (None, {"concept_images/../../../../../../victim/evil.png": b"x"}, None),
        (None, {"/victim/evil.safetensors": b"x"}, None),
        (None, None, "../../../../../victim/x.safetensors"),
    ],
)
def test_hub_hostile_sha_names_and_etag_write_nothing_outside(
    hub: HubServer,
    tireg_cli,
    sandbox_for,
    monkeypatch,
    sha: str | None,
    files: dict | None,
    etag: str | None,
) -> None:  # type: ignore[no-untyped-def]
    """huggingface_hub would build cache paths from ETag and X-Repo-Commit unchecked."""
    repo = concept_repo("someone/evil", "<evil>", "object", fmt="safetensors", images=1)
    repo.files.update(files or {})
    repo.sha_override, repo.etag_header = sha, etag
    hub.add(repo)
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    box = sandbox_for("home/cache/hf/")
    result = tireg_cli("install", "hf:someone/evil", "--to", box.target)
    assert box.outside_changes() == []
    if sha:
        assert "malformed commit sha" in _one_line_error(result)
    else:
        assert result.code == 0, result.stderr
        assert box.installed() == ["_evil_.safetensors"] or len(box.installed()) == 1


# --- plain URLs: Content-Disposition and URL names ------------------------------------------


@pytest.mark.parametrize(
    ("disposition", "path"),
    [
        ('attachment; filename="../../../../../../victim/evil.safetensors"', "/dl/a"),
        (
            "attachment; filename*=UTF-8''..%2F..%2F..%2F..%2F..%2F..%2Fvictim%2Fevil.safetensors",
            "/dl/b",
        ),
        ('attachment; filename="..\\\\..\\\\..\\\\victim\\\\evil.safetensors"', "/dl/c"),
        ('attachment; filename=".."', "/dl/d"),
        ('attachment; filename="/victim/evil.safetensors"', "/dl/e"),
        ('attachment; filename="' + "e" * 400 + '.safetensors"', "/dl/f"),
        ('attachment; filename="CON.safetensors"', "/dl/g"),
        (None, "/dl/..%2F..%2F..%2F..%2F..%2F..%2Fvictim%2Fevil.safetensors"),
        (None, "/dl/..%5C..%5C..%5C..%5C..%5C..%5Cvictim%5Cevil.safetensors"),
    ],
)
def test_http_hostile_names_write_nothing_outside(
    file_server: FileServer, tireg_cli, sandbox_for, disposition: str | None, path: str
) -> None:  # type: ignore[no-untyped-def]
    data = embedding_bytes("<evil>", "safetensors", seed=5)
    url = file_server.add(path, Served(data, disposition=disposition))
    box = sandbox_for("home/cache/downloads/")
    result = tireg_cli("install", url, "--to", box.target)
    assert result.code == 0, result.stderr
    assert box.outside_changes() == []
    assert box.installed()


# --- Civitai file names and git paths -------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "../../../../../../victim/evil.safetensors",
        "/victim/evil.safetensors",
        "CON.safetensors",
        "e" * 400 + ".safetensors",
    ],
)
def test_civitai_hostile_file_names_write_nothing_outside(
    civitai_server: CivitaiServer, tireg_cli, sandbox_for, name: str
) -> None:  # type: ignore[no-untyped-def]
    data = embedding_bytes("emb_params", "safetensors", seed=41)
    civitai_server.add(CivitaiModel(9, "Evil", [CivitaiVersion(99, {name: data})]))
    box = sandbox_for("home/cache/civitai/")
    result = tireg_cli("install", "civitai:9", "--to", box.target)
    assert result.code == 0, result.stderr
    assert box.outside_changes() == []
    (installed,) = box.installed()
    assert not installed.upper().startswith("CON.")


def test_git_hostile_paths_are_skipped_or_made_safe(
    tmp_path: Path, sandbox_for, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    box = sandbox_for("home/cache/git")
    with serving(GitHost(tmp_path / "served")) as host:
        host.project("evil/repo").commit(
            {
                "..\\..\\..\\..\\..\\victim\\evil.safetensors": mega_embedding(1),
                "emb/a\u202eb.safetensors": mega_embedding(2),
                "emb/CON.safetensors": mega_embedding(3),
            }
        )
        result = git_source.sync(host.repo_url("evil/repo"), box.target)
    assert box.outside_changes() == []
    assert sorted(box.installed()) == ["emb", "emb/_CON.safetensors", "emb/ab.safetensors"]
    assert [p for p, _ in result.skipped] == ["..\\..\\..\\..\\..\\victim\\evil.safetensors"]
