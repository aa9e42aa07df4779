"""Hugging Face Hub concept repos (``sd-concepts-library`` or any user/org), via huggingface_hub.

Listing uses one paged ``list_models`` call with ``expand`` (sha, lastModified, cardData,
siblings, gated), so a re-sync costs one request per page and only repos whose commit sha changed
need more. Every file (the text facts ``token_identifier.txt`` and ``type_of_concept.txt``,
embeddings, concept images) is one size-capped GET of its resolve URL pinned to the commit sha,
through :mod:`tireg.sources.http`, checked against the Hub's LFS sha256: the one ``model_info``
gave, or else the one its resolve response sends (``X-Linked-Etag`` or ``ETag``, with
``X-Linked-Size`` and ``X-Repo-Commit``: the headers huggingface_hub reads, ``file_download.py``
``get_hf_file_metadata``), so a sync, whose listing already names each commit and file, needs
no ``model_info`` per repo.

Why not ``hf_hub_download``: the endpoint is configurable, so what it answers is untrusted, and
huggingface_hub builds cache paths from the server's ``ETag`` and ``X-Repo-Commit`` headers
without checking them (``file_download.py`` ``_hf_hub_download_to_cache_dir``: ``blob_path =
os.path.join(storage_folder, "blobs", etag)``), so a hostile endpoint could write anywhere.
Here the commit sha must be 40 hex digits and each file name a plain relative path before
either is used, and files live at ``cache_dir()/hf/repos/OWNER/REPO/SHA/PATH``, joined with
:func:`tireg.paths.join_under`.

Endpoint: ``--hf-endpoint``, else ``HF_ENDPOINT`` read *now* (huggingface_hub reads it once at
import time, so it is always passed explicitly). huggingface_hub (the API client, for listings
and ``model_info``) is imported lazily, inside the functions that need it. Offline mode
(``TIREG_OFFLINE`` / ``HF_HUB_OFFLINE``) serves from the cache: a commit sha's folder, else the
newest commit fetched. Tokens: ``HF_TOKEN`` or a ``hf auth login``, as the library finds them.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

from tireg.config import cache_dir, offline
from tireg.files import MAX_FILE_BYTES, read_capped, sha256_file
from tireg.paths import UnsafePathError, join_under, safe_relative_path
from tireg.progress import DownloadProgress
from tireg.sources import MAX_PREVIEW_BYTES, Fetched, SourceError
from tireg.sources.http import (
    RETRY_STATUSES,
    HttpStatusError,
    RetryPolicy,
    download,
)

DEFAULT_ENDPOINT = "https://huggingface.co"
EMBEDDING_SUFFIXES = (".safetensors", ".bin", ".pt")
TEXT_FACTS = {"trigger": "token_identifier.txt", "concept_type": "type_of_concept.txt"}
MAX_TEXT_BYTES = 4096
MAX_PREVIEWS = 8
LOGIN_HINT = "accept the repo's conditions on the Hub, then set HF_TOKEN or run `hf auth login`"
OFFLINE_HINT = "unset TIREG_OFFLINE and HF_HUB_OFFLINE, or install it once while online"
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_SHA = re.compile(r"^[0-9a-f]{40}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
ENDPOINT_HINT = "is --hf-endpoint (or HF_ENDPOINT) a Hugging Face Hub?"

T = TypeVar("T")


def endpoint(override: str | None = None) -> str:
    """The Hub's base URL: the argument, else ``HF_ENDPOINT`` as it is now, else huggingface.co."""
    return (override or os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def hub_cache() -> Path:
    """tireg's cache of Hub files (``repos/OWNER/REPO/SHA/PATH``)."""
    return cache_dir() / "hf"


def parse_spec(spec: str) -> tuple[str, str | None]:
    """``hf:owner/repo[@revision]`` (the ``hf:`` optional) -> (repo id, revision or None)."""
    body = spec[3:] if spec.startswith("hf:") else spec
    repo_id, _, revision = body.partition("@")
    if not _REPO_ID.match(repo_id) or ".." in repo_id:
        raise SourceError(f"not a Hugging Face repo id: {spec!r}", hint="use hf:OWNER/REPO[@REV]")
    return repo_id, revision or None


@dataclass(frozen=True)
class RepoSummary:
    """What the Hub says about one repo, from a listing or ``model_info``."""

    repo_id: str
    sha: str | None
    last_modified: str | None
    licence: str | None
    base_model: str | None
    gated: bool
    files: tuple[str, ...]
    #: path -> (size, LFS sha256 or None); only from ``model_info(files_metadata=True)``
    blobs: dict[str, tuple[int | None, str | None]] = field(default_factory=dict)

    def embedding_files(self) -> list[str]:
        """Top-level embedding files, one per stem, safetensors preferred over pickles."""
        top = [p for p in self.files if "/" not in p and Path(p).suffix in EMBEDDING_SUFFIXES]
        chosen: dict[str, str] = {}
        for path in sorted(top, key=lambda p: EMBEDDING_SUFFIXES.index(Path(p).suffix)):
            chosen.setdefault(Path(path).stem, path)
        return sorted(chosen.values())

    def preview_files(self) -> list[str]:
        images = [p for p in self.files if p.startswith("concept_images/")]
        return sorted(
            p for p in images if Path(p).suffix.lower() in {".png", ".jpg", ".jpeg", ".webp"}
        )

    def file_url(self, base: str, path: str) -> str:
        revision = self.sha or "main"
        return f"{base}/{self.repo_id}/resolve/{quote(revision, safe='')}/{quote(path)}"

    def preview_urls(self, base: str) -> list[str]:
        return [self.file_url(base, p) for p in self.preview_files()[:MAX_PREVIEWS]]


def _plain_path(name: str) -> bool:
    """Whether a file name from the Hub is a plain relative path that stays what it says."""
    try:
        return str(safe_relative_path(name)) == name
    except UnsafePathError:
        return False


def _summary(info: Any) -> RepoSummary:
    """A huggingface_hub ``ModelInfo`` -> :class:`RepoSummary` (card data may be absent).

    What the endpoint says is checked before any of it is used: the repo id and the commit sha
    (40 hex digits) are refused when malformed; file names that are not plain relative paths
    (``../x``, ``a\\b``, absolute, control characters) are left out, so they are never fetched.
    """
    if not isinstance(info.id, str) or not _REPO_ID.match(info.id) or ".." in info.id:
        raise SourceError(
            f"the Hub sent a malformed repo id {str(info.id)[:80]!r}", hint=ENDPOINT_HINT
        )
    if info.sha is not None and not (isinstance(info.sha, str) and _SHA.match(info.sha)):
        raise SourceError(
            f"hf:{info.id}: the Hub sent a malformed commit sha {str(info.sha)[:80]!r}",
            hint=ENDPOINT_HINT,
        )
    card = info.card_data
    licence = base_model = None
    if card is not None:
        data = card.to_dict() if hasattr(card, "to_dict") else dict(card)
        licence = data.get("license")
        base = data.get("base_model")
        base_model = ", ".join(base) if isinstance(base, list) else base
    siblings = [s for s in info.siblings or [] if _plain_path(str(s.rfilename))]
    blobs: dict[str, tuple[int | None, str | None]] = {}
    for sibling in siblings:
        lfs = sibling.lfs
        blobs[sibling.rfilename] = (sibling.size, lfs.sha256 if lfs is not None else None)
    modified = info.last_modified
    return RepoSummary(
        repo_id=info.id,
        sha=info.sha,
        last_modified=modified.isoformat() if modified is not None else None,
        licence=str(licence) if licence else None,
        base_model=str(base_model) if base_model else None,
        gated=bool(info.gated),
        files=tuple(s.rfilename for s in siblings),
        blobs={k: v for k, v in blobs.items() if v != (None, None)},
    )


# --------------------------------------------------------------------------------- the client


def _hub() -> Any:
    """Import huggingface_hub on first use, with its own progress bars off (tireg draws its own)."""
    import huggingface_hub
    from huggingface_hub.utils import disable_progress_bars

    disable_progress_bars()
    return huggingface_hub


def _call(what: str, fn: Callable[[], T], *, policy: RetryPolicy | None = None) -> T:
    """Run a huggingface_hub call, retrying transient failures and translating the rest.

    huggingface_hub retries some failures itself (429 on GET, HEAD backoff), but not a 5xx on
    the download GET nor a failed HEAD when nothing is cached; this loop bounds all of them the
    same way as every other source.
    """
    from huggingface_hub import errors

    policy = policy or RetryPolicy.from_env()
    for attempt in range(policy.attempts):
        try:
            return fn()
        except errors.GatedRepoError:
            raise SourceError(
                f"{what}: gated repo, no access with this token", hint=LOGIN_HINT
            ) from None
        except errors.RepositoryNotFoundError:
            raise SourceError(f"{what}: no such repo (or it is private)", hint=LOGIN_HINT) from None
        except errors.RevisionNotFoundError:
            raise SourceError(f"{what}: no such revision") from None
        except (errors.OfflineModeIsEnabled, errors.LocalEntryNotFoundError) as exc:
            if offline() or not _transient(exc.__cause__ or exc.__context__):
                raise SourceError(
                    f"{what}: offline, and not in the cache", hint=OFFLINE_HINT
                ) from None
            failure: BaseException = exc
        except Exception as exc:
            if not _transient(exc):
                status = getattr(getattr(exc, "response", None), "status_code", None)
                raise SourceError(
                    f"{what}: the Hub failed ({status or type(exc).__name__})"
                ) from None
            failure = exc
        if attempt + 1 < policy.attempts:
            time.sleep(policy.delay(attempt))
    raise SourceError(
        f"{what}: the Hub kept failing ({type(failure).__name__})",
        hint="try again later",
    )


def _transient(exc: BaseException | None) -> bool:
    """429/5xx statuses, time-outs and dropped connections (httpx2 errors, by name)."""
    if exc is None:
        return False
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if status is not None:
        return status in RETRY_STATUSES
    names = {cls.__name__ for cls in type(exc).__mro__}
    return bool(names & {"TimeoutException", "NetworkError", "RemoteProtocolError", "ConnectError"})


def list_repos(author: str, *, endpoint_url: str | None = None) -> Iterator[RepoSummary]:
    """Every model repo of ``author``, with sha, dates, card data, file names and gating."""
    if offline():
        raise SourceError(
            f"offline: cannot list {author}'s repos",
            hint="the catalogue keeps what the last sync found; " + OFFLINE_HINT,
        )
    api = _hub().HfApi(endpoint=endpoint(endpoint_url))
    expand = ["sha", "lastModified", "cardData", "siblings", "gated"]
    infos = _call(f"listing {author}", lambda: list(api.list_models(author=author, expand=expand)))
    return iter([_summary(info) for info in infos])


def repo_info(
    repo_id: str, *, revision: str | None = None, endpoint_url: str | None = None
) -> RepoSummary:
    """One repo at ``revision`` (default: main) with file sizes and LFS sha256s."""
    api = _hub().HfApi(endpoint=endpoint(endpoint_url))
    info = _call(
        f"hf:{repo_id}", lambda: api.model_info(repo_id, revision=revision, files_metadata=True)
    )
    return _summary(info)


def has_token() -> bool:
    """Whether a Hub token is available (``HF_TOKEN`` or a stored ``hf auth login``)."""
    return bool(_hub().get_token())


def _auth_headers() -> dict[str, str]:
    token = _hub().get_token()
    return {"Authorization": f"Bearer {token}"} if token else {}


def concept_facts(
    summary: RepoSummary,
    *,
    endpoint_url: str | None = None,
    headers: Mapping[str, str] | None = None,
    snapshot: _Snapshot | None = None,
) -> dict[str, str]:
    """``trigger`` and ``concept_type`` from the repo's text files (absent ones are left out).

    Each is one capped GET on its resolve URL, cached per commit (so offline reads work).
    ``headers``: the Hub's authorisation, and ``snapshot``: :func:`_snapshot`, when the
    caller looked them up already.
    """
    facts: dict[str, str] = {}
    headers = _auth_headers() if headers is None else headers
    snapshot = _snapshot(summary) if snapshot is None else snapshot
    for key, name in TEXT_FACTS.items():
        if name not in summary.files:
            continue
        path, _, _ = _download_pinned(
            summary, snapshot, name, MAX_TEXT_BYTES, endpoint_url, headers
        )
        text = read_capped(path, MAX_TEXT_BYTES).decode("utf-8", "replace").strip()
        if text:
            facts[key] = text
    return facts


@dataclass(frozen=True)
class _Snapshot:
    """The cache folder of a repo at one commit, proven inside the cache, and whether it held
    anything when looked at (a new one has no file to reuse, so none is looked for)."""

    path: Path
    existed: bool


def _snapshot(summary: RepoSummary) -> _Snapshot:
    """The repo's folder at the summary's commit (``main`` when the Hub gave none); each file
    is then joined (and proven) below it. Proven once per repo, not once per file: the proof
    looks at each existing component on disk."""
    repo = safe_relative_path(summary.repo_id)
    path = join_under(hub_cache() / "repos", repo, summary.sha or "main")
    return _Snapshot(path, path.is_dir())


def _download_pinned(
    summary: RepoSummary,
    snapshot: _Snapshot,
    name: str,
    cap: int,
    endpoint_url: str | None,
    headers: Mapping[str, str],
) -> tuple[Path, str | None, int | None]:
    """One file of the repo at the summary's commit, into its ``snapshot`` (:func:`_snapshot`),
    size-capped and checked against the Hub's LFS sha256; a file already fetched at that commit
    is reused (a commit never changes). ``headers`` authorise it (:func:`_auth_headers`, looked
    up once per repo: the token may be read from a file). Returns the file, and its sha256 and
    size when this call learned them (a download or a check of a cached copy), so it is not
    read or looked at again for those."""
    where = f"hf:{summary.repo_id}/{name}"
    size, lfs_sha = summary.blobs.get(name, (None, None))
    if size is not None and size > cap:
        raise SourceError(f"{where}: {size} bytes is over the {cap}-byte limit")
    target = join_under(snapshot.path, name)  # proven inside it before anything is written
    if summary.sha and lfs_sha is None and snapshot.existed and target.is_file():
        return target, None, None  # with a known sha256, download() checks a cached copy itself
    try:
        got = download(
            summary.file_url(endpoint(endpoint_url), name),
            target.parent,
            filename=target.name,
            proven=True,  # joined under the cache just above
            expected_sha256=lfs_sha,
            expected_size=size,
            max_bytes=cap,
            headers=headers,
            durable=False,  # a cache entry, pinned to a commit: fetched again if lost
            promised=partial(_resolve_promise, summary, where),
        )
    except HttpStatusError as exc:
        if exc.status in (401, 403):
            raise SourceError(f"{where}: gated or private", hint=LOGIN_HINT) from None
        if exc.status == 404:
            raise SourceError(f"{where}: no such file at {summary.sha}") from None
        raise
    return got.path, got.sha256, got.size


def _resolve_promise(
    summary: RepoSummary, where: str, headers: Mapping[str, str]
) -> tuple[str | None, int | None]:
    """What a resolve response says about its file: the LFS sha256 and size (None, None for a
    file kept in git, whose ETag is a git blob id), after checking that it answers for the
    pinned commit. The same headers huggingface_hub reads (``file_download.py``
    ``get_hf_file_metadata``: ``X-Linked-Etag`` else ``ETag``, ``X-Linked-Size``,
    ``X-Repo-Commit``); the Hub sends them on the first reply, before its CDN redirect."""
    commit = headers.get("X-Repo-Commit")
    if summary.sha and commit is not None and commit != summary.sha:
        raise SourceError(
            f"{where}: the Hub answered for commit {commit[:80]!r}, not {summary.sha}",
            hint=ENDPOINT_HINT,
        )
    etag = headers.get("X-Linked-Etag") or headers.get("ETag") or ""
    etag = etag.removeprefix("W/").strip('"').lower()
    if not _SHA256.match(etag):
        return None, None
    size = headers.get("X-Linked-Size", "")
    return etag, int(size) if size.isdigit() else None


def fetch(
    repo_id: str,
    *,
    revision: str | None = None,
    endpoint_url: str | None = None,
    previews: bool = True,
    summary: RepoSummary | None = None,
    progress: DownloadProgress | None = None,
) -> list[Fetched]:
    """Download a concept repo's embeddings (and concept images), pinned and verified.

    The revision is resolved to a commit sha first (``model_info``), so every file comes from
    the same commit; a ``summary`` from a listing names the commit and files already, and each
    file is then checked against what its resolve response promises. Offline, the cached
    snapshot of that sha (or of ``main``) is used.
    """
    if offline():
        return _fetch_cached(repo_id, revision)
    if summary is None or summary.sha is None:
        summary = repo_info(repo_id, revision=revision, endpoint_url=endpoint_url)
    if summary.sha is None:
        raise SourceError(f"hf:{repo_id}: the Hub gave no commit sha")
    names = summary.embedding_files()
    if not names:
        raise SourceError(f"hf:{repo_id}: no embedding file in the repo (.safetensors/.bin/.pt)")
    headers = _auth_headers()
    snapshot = _snapshot(summary)
    facts = _facts_hints(
        summary,
        concept_facts(summary, endpoint_url=endpoint_url, headers=headers, snapshot=snapshot),
    )
    images = summary.preview_files()[:MAX_PREVIEWS] if previews else []
    total = sum((summary.blobs.get(p, (0, None))[0] or 0) for p in names + images) or None
    done = 0
    preview_paths: list[Path] = []
    for image in images:
        path, _, size = _download_pinned(
            summary, snapshot, image, MAX_PREVIEW_BYTES, endpoint_url, headers
        )
        preview_paths.append(path)
        done += path.stat().st_size if size is None else size
        if progress:
            progress(done, total)
    fetched = []
    for name in names:
        path, sha256, size = _download_pinned(
            summary, snapshot, name, MAX_FILE_BYTES, endpoint_url, headers
        )
        done += path.stat().st_size if size is None else size
        if progress:
            progress(done, total)
        fetched.append(
            Fetched(
                path=path,
                kind="hf",
                locator=repo_id,
                location=summary.file_url(endpoint(endpoint_url), name),
                sha256=sha256 or sha256_file(path),
                revision=summary.sha,
                hints=facts,
                previews=preview_paths,
            )
        )
    return fetched


def _facts_hints(summary: RepoSummary, facts: dict[str, str]) -> dict[str, str]:
    hints = dict(facts)
    hints["title"] = summary.repo_id.split("/", 1)[1]
    if summary.licence:
        hints["licence"] = summary.licence
    if summary.base_model:
        hints["base_model_hint"] = summary.base_model
    return hints


def _fetch_cached(repo_id: str, revision: str | None) -> list[Fetched]:
    """Offline: the files cached at ``revision`` (a commit sha), else at the newest commit."""
    repo_dir = join_under(hub_cache() / "repos", safe_relative_path(repo_id))
    if revision is not None and _SHA.match(revision):
        shas = [revision]
    else:
        found = [p for p in repo_dir.glob("*") if _SHA.match(p.name)] if repo_dir.is_dir() else []
        shas = [p.name for p in sorted(found, key=lambda p: p.stat().st_mtime)][-1:]
    if not shas or not (repo_dir / shas[0]).is_dir():
        raise SourceError(f"hf:{repo_id}: offline, and not in the cache", hint=OFFLINE_HINT)
    sha, snapshot = shas[0], repo_dir / shas[0]
    files = tuple(
        p.relative_to(snapshot).as_posix()
        for p in snapshot.rglob("*")
        if p.is_file() and not p.name.startswith(".")
    )
    summary = RepoSummary(repo_id, sha, None, None, None, False, files)
    names = summary.embedding_files()
    if not names:
        raise SourceError(f"hf:{repo_id}: offline, and no embedding is cached", hint=OFFLINE_HINT)
    facts = {}
    for key, name in TEXT_FACTS.items():
        if (snapshot / name).is_file():
            facts[key] = (snapshot / name).read_text("utf-8", "replace").strip()
    hints = _facts_hints(summary, {k: v for k, v in facts.items() if v})
    images = [snapshot / p for p in summary.preview_files()]
    return [
        Fetched(
            path=snapshot / name,
            kind="hf",
            locator=repo_id,
            location=summary.file_url(endpoint(), name),
            sha256=sha256_file(snapshot / name),
            revision=sha,
            hints=hints,
            previews=images,
        )
        for name in names
    ]
