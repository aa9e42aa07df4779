"""Git repositories (GitLab, gitgud, GitHub, any git URL): shallow, blob-less, sparse fetches.

Embedding collections in git are a few dozen KB-sized files next to a README with one anchor per
embedding. We fetch the least git allows: one commit (``--depth 1``), no blobs up front
(``--filter=blob:none``, a partial clone), then a sparse checkout of just the embedding files and
READMEs under ``--path``, which git fetches in one batch. The clone lives in
``cache_dir()/git/<hash of the URL>`` and is reused: a re-sync fetches the new tip and git
downloads only blobs that changed; callers pass the blob ids they already imported
(``known_blobs``) and get back only files whose blob id differs.

A Git LFS pointer (the file starts with ``version https://git-lfs.github.com/spec/v1``) is not
data: for http(s) hosts we fetch the object through the host's raw URL (GitLab's
``/-/raw/<sha>/<path>``, GitHub's ``/raw/<sha>/<path>``, both of which serve LFS content) and
check the pointer's sha256 and size; for other transports the file is skipped with a clear reason.

This module drives the ``git`` command line (no dulwich: it cannot lazily fetch filtered blobs).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from urllib.parse import quote, urlsplit

from tireg import config
from tireg.files import MAX_FILE_BYTES, atomic_writer
from tireg.paths import UnsafePathError, join_under, safe_relative_path
from tireg.progress import DownloadProgress
from tireg.sources import Fetched, SourceError
from tireg.sources.http import download

EMBEDDING_SUFFIXES = (".pt", ".bin", ".safetensors")
README_NAMES = ("README.md", "readme.md", "Readme.md", "README.markdown", "README")
LFS_MAGIC = b"version https://git-lfs.github.com/spec/v1"
GIT_TIMEOUT_S = 300
OFFLINE_HINT = "unset TIREG_OFFLINE to fetch; only repositories synced before work offline"


class GitError(SourceError):
    """git failed (unreachable host, unknown ref, not a repository) or is not installed."""


@dataclass
class GitSync:
    """What one sync of a repository found."""

    url: str
    commit: str
    files: list[Fetched]  # new or changed embedding files, in ``dest_dir``
    blobs: dict[str, str]  # every embedding file now at the tip: path -> git blob id
    unchanged: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, why)
    offline: bool = False


def is_git_url(url: str) -> bool:
    """URLs the git source accepts: any scheme git speaks, or scp-style ``user@host:path``."""
    return bool(re.match(r"^(https?|git|ssh|file)://", url)) or bool(
        re.match(r"^[\w.-]+@[\w.-]+:", url)
    )


def cache_path(url: str) -> Path:
    """Where this repository's shallow clone is kept."""
    return config.cache_dir() / "git" / hashlib.sha256(url.encode()).hexdigest()[:24]


def _git(*args: str, cwd: Path | None = None, what: str) -> str:
    env = {
        **os.environ,
        "GIT_TERMINAL_PROMPT": "0",  # never hang on a password prompt
        "GIT_LFS_SKIP_SMUDGE": "1",  # we handle LFS pointers ourselves
        "GIT_CONFIG_NOSYSTEM": "1",
    }
    try:
        done = subprocess.run(
            ["git", "-c", "advice.detachedHead=false", "-c", "protocol.version=2", *args],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT_S,
            check=False,
        )
    except FileNotFoundError:
        raise GitError("git is not installed", hint="install git to use git sources") from None
    except subprocess.TimeoutExpired:
        raise GitError(f"git {args[0]} timed out", path=what, hint="retry later") from None
    if done.returncode:
        lines = [ln for ln in done.stderr.strip().splitlines() if ln.strip()]
        detail = lines[-1] if lines else f"exit code {done.returncode}"
        raise GitError(f"git {args[0]} failed: {detail}", path=what)
    return done.stdout


def _sparse_patterns(path: str | None) -> list[str]:
    base = f"/{path.strip('/')}" if path else ""
    patterns = [f"{base}/**/*{suffix}" for suffix in EMBEDDING_SUFFIXES]
    patterns += [f"/{name}" for name in README_NAMES]
    if base:
        patterns += [f"{base}/{name}" for name in README_NAMES]
    return patterns


def _update_clone(url: str, repo: Path, ref: str | None, path: str | None) -> str:
    """Create or refresh the shallow, blob-less, sparse clone; return the commit checked out."""
    if not (repo / ".git").is_dir():
        shutil.rmtree(repo, ignore_errors=True)
        repo.mkdir(parents=True)
        _git("init", "-q", str(repo), what=url)
        _git("remote", "add", "origin", url, cwd=repo, what=url)
        _git("config", "remote.origin.promisor", "true", cwd=repo, what=url)
        _git("config", "remote.origin.partialclonefilter", "blob:none", cwd=repo, what=url)
    target = ref or "HEAD"
    _git(
        "fetch",
        "-q",
        "--depth",
        "1",
        "--filter=blob:none",
        "--no-tags",
        "origin",
        target,
        cwd=repo,
        what=url,
    )
    _git("sparse-checkout", "set", "--no-cone", *_sparse_patterns(path), cwd=repo, what=url)
    _git("checkout", "-q", "--force", "--detach", "FETCH_HEAD", cwd=repo, what=url)
    return _git("rev-parse", "HEAD", cwd=repo, what=url).strip()


def _tree(repo: Path, path: str | None, url: str) -> dict[str, str]:
    """Embedding files at HEAD under ``path``: repo path -> blob id (from the tree, no blobs)."""
    args = ["ls-tree", "-r", "-z", "HEAD"]
    if path:
        args += ["--", path.strip("/")]
    out: dict[str, str] = {}
    for entry in _git(*args, cwd=repo, what=url).split("\0"):
        meta, _, name = entry.partition("\t")
        fields = meta.split()
        if len(fields) == 3 and fields[1] == "blob" and name.lower().endswith(EMBEDDING_SUFFIXES):
            out[name] = fields[2]
    return out


def sync(
    url: str,
    dest_dir: str | os.PathLike[str],
    *,
    ref: str | None = None,
    path: str | None = None,
    known_blobs: dict[str, str] | None = None,
    progress: DownloadProgress | None = None,
    max_bytes: int = MAX_FILE_BYTES,
) -> GitSync:
    """Fetch the tip of ``ref`` (default branch if None) and copy new or changed embedding files
    under ``path`` into ``dest_dir`` (keeping their repo-relative paths, made safe)."""
    repo = cache_path(url)
    with _clone_lock(repo):
        return _sync_locked(url, repo, dest_dir, ref, path, known_blobs, progress, max_bytes)


@contextlib.contextmanager
def _clone_lock(repo: Path) -> Iterator[None]:
    """Hold the cached clone for one sync: two processes syncing one repository would otherwise
    collide on git's own ``index.lock``. The lock file sits beside the clone (one per repository,
    so they do not pile up); on systems without ``fcntl`` syncs of one repo are not serialised."""
    repo.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:
        yield
        return
    with repo.with_name(repo.name + ".lock").open("ab") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _sync_locked(
    url: str,
    repo: Path,
    dest_dir: str | os.PathLike[str],
    ref: str | None,
    path: str | None,
    known_blobs: dict[str, str] | None,
    progress: DownloadProgress | None,
    max_bytes: int,
) -> GitSync:
    offline = config.offline()
    if offline:
        if not (repo / ".git").is_dir():
            raise SourceError(
                "offline, and this repository was never synced", path=url, hint=OFFLINE_HINT
            )
        commit = _git("rev-parse", "HEAD", cwd=repo, what=url).strip()
    else:
        commit = _update_clone(url, repo, ref, path)
    blobs = _tree(repo, path, url)
    anchors = readme_sections(repo, path)
    known = known_blobs or {}
    result = GitSync(url, commit, [], blobs, offline=offline)
    dest = Path(dest_dir)
    for name, blob in sorted(blobs.items()):
        if known.get(name) == blob:
            result.unchanged += 1
            continue
        try:
            fetched = _deliver(url, repo, commit, name, blob, dest, progress, max_bytes)
        except (SourceError, UnsafePathError) as exc:
            result.skipped.append(
                (name, exc.message if not exc.hint else f"{exc.message} ({exc.hint})")
            )
            continue
        section = match_section(anchors, name)
        if section:
            fetched.hints["readme_anchor"] = f"#{section.slug}"
            fetched.hints["title"] = section.heading
            fetched.hints["description"] = section.text
        if offline:
            fetched.hints["offline"] = "cached copy used (TIREG_OFFLINE)"
        result.files.append(fetched)
    return result


def fetch(
    url: str,
    dest_dir: str | os.PathLike[str],
    *,
    ref: str | None = None,
    path: str | None = None,
    progress: DownloadProgress | None = None,
    max_bytes: int = MAX_FILE_BYTES,
) -> list[Fetched]:
    """Every embedding file of the repository (see :func:`sync` for incremental use)."""
    return sync(url, dest_dir, ref=ref, path=path, progress=progress, max_bytes=max_bytes).files


def _deliver(
    url: str,
    repo: Path,
    commit: str,
    name: str,
    blob: str,
    dest: Path,
    progress: DownloadProgress | None,
    max_bytes: int,
) -> Fetched:
    rel = safe_relative_path(name)
    source = join_under(repo, name)
    if not source.is_file() or source.is_symlink():
        raise SourceError("not checked out (a symlink or a submodule?)", path=name)
    size = source.stat().st_size
    if size > max_bytes:
        raise SourceError(f"{size} bytes is over the {max_bytes}-byte limit", path=name)
    with source.open("rb") as stream:
        head = stream.read(len(LFS_MAGIC))
    location = raw_url(url, commit, name) or f"{url}@{commit}:{name}"
    hints = {"blob": blob, "git_path": name, "title": PurePosixPath(name).stem}
    if head == LFS_MAGIC:
        oid, lfs_size = parse_lfs_pointer(source.read_bytes(), name)
        if lfs_size > max_bytes:
            raise SourceError(f"Git LFS object of {lfs_size} bytes is over the limit", path=name)
        link = raw_url(url, commit, name)
        if link is None:
            raise SourceError(
                "is a Git LFS pointer, not data, and this host has no raw URL tireg knows",
                path=name,
                hint="download it with `git lfs pull` and import the file",
            )
        target_dir = join_under(dest, rel).parent
        got = download(
            link,
            target_dir,
            filename=rel.name,
            expected_sha256=oid,
            expected_size=lfs_size,
            max_bytes=max_bytes,
            progress=progress,
        )
        hints["lfs_oid"] = oid
        return Fetched(got.path, "git", url, link, got.sha256, commit, hints)
    digest = hashlib.sha256()
    target = join_under(dest, rel)
    with source.open("rb") as stream, atomic_writer(target) as out:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
            out.write(block)
    return Fetched(target, "git", url, location, digest.hexdigest(), commit, hints)


def parse_lfs_pointer(data: bytes, name: str) -> tuple[str, int]:
    """(sha256 oid, size) from a Git LFS pointer file."""
    text = data[:1024].decode("utf-8", "replace")
    oid = re.search(r"^oid sha256:([0-9a-f]{64})$", text, re.M)
    size = re.search(r"^size (\d+)$", text, re.M)
    if not oid or not size:
        raise SourceError("malformed Git LFS pointer", path=name)
    return oid[1], int(size[1])


def raw_url(url: str, commit: str, name: str) -> str | None:
    """The host's raw-file URL for ``name`` at ``commit`` (serves LFS content), if known.

    GitHub: ``https://github.com/OWNER/REPO/raw/SHA/PATH``; every other http(s) host is assumed
    to be GitLab-like (gitlab.com, gitgud.io, self-hosted): ``https://HOST/NS/PROJ/-/raw/SHA/PATH``.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return None
    project = parts.path.strip("/").removesuffix(".git")
    if not project:
        return None
    quoted = quote(name)
    if parts.hostname in ("github.com", "www.github.com"):
        return f"https://github.com/{project}/raw/{commit}/{quoted}"
    return f"{parts.scheme}://{parts.netloc}/{project}/-/raw/{commit}/{quoted}"


# ------------------------------------------------------------------------------ README anchors


@dataclass(frozen=True)
class Section:
    """One README heading: its GitLab/GitHub anchor slug, its text and the body under it."""

    heading: str
    slug: str
    text: str


def slugify(heading: str) -> str:
    """The anchor GitLab and GitHub give a Markdown heading (lower case, words joined by '-')."""
    text = re.sub(r"[`*_~\[\]()]|<[^>]*>", "", heading).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return re.sub(r" ", "-", text)


def readme_sections(repo: Path, path: str | None) -> list[Section]:
    """The headed sections of the README(s) at the repo root and under ``path``."""
    out: list[Section] = []
    dirs = [repo] + ([repo / path.strip("/")] if path else [])
    for folder in dirs:
        for name in README_NAMES:
            readme = folder / name
            if readme.is_file() and readme.stat().st_size < 4 * 1024 * 1024:
                out += parse_sections(readme.read_text(encoding="utf-8", errors="replace"))
                break
    return out


def parse_sections(markdown: str) -> list[Section]:
    """Split Markdown at ATX headings (``#`` .. ``######``), outside code fences."""
    sections: list[Section] = []
    heading: str | None = None
    body: list[str] = []
    fence = False

    def close() -> None:
        if heading is not None:
            sections.append(Section(heading, slugify(heading), "\n".join(body).strip()))

    for line in markdown.splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            fence = not fence
        match = None if fence else re.match(r"^#{1,6}\s+(.+?)\s*#*\s*$", line)
        if match:
            close()
            heading, body = match[1], []
        elif heading is not None:
            body.append(line)
    close()
    return sections


def match_section(sections: list[Section], repo_path: str) -> Section | None:
    """The README section describing ``repo_path``: the one whose body links or names the file,
    else the one whose anchor is the file's stem, less a trailing step count."""
    name = PurePosixPath(repo_path).name
    for section in sections:
        if repo_path in section.text or re.search(rf"(?<![\w.-]){re.escape(name)}\b", section.text):
            return section
    stem = _loose(PurePosixPath(repo_path).stem)
    bare = re.sub(r"-\d+$", "", stem)  # viper1's "<name>-<steps>"
    exact = [s for s in sections if _loose(s.slug) in (stem, bare)]
    if exact:
        return exact[0]
    # "hellhound-40000" -> "#hellhound-monster-girl-encyclopedia" (the shortest such anchor, so
    # "hellhound_v2-50000" keeps "#hellhound-v2-...")
    prefixed = [s for s in sections if _loose(s.slug).startswith(bare + "-")]
    return min(prefixed, key=lambda s: len(s.slug)) if prefixed else None


def _loose(text: str) -> str:
    return slugify(text.replace("_", "-"))
