"""Writing to a Hugging Face Hub repo: create it, see what it holds, commit changed files.

Through huggingface_hub's own API (``HfApi.create_repo``, ``model_info(files_metadata=True)``,
``create_commit`` with ``CommitOperationAdd``/``CommitOperationDelete``), so every endpoint,
header and upload mode is the library's. The endpoint and token follow :mod:`tireg.sources.hf`
(``--hf-endpoint`` / ``HF_ENDPOINT`` read now; ``HF_TOKEN`` or a ``hf auth login``).

Why compare before committing: a commit is history on the Hub, and an unchanged re-publish
must not add an empty or identical one. Each remote file's content hash (the LFS sha256 where
the Hub keeps one, else the git blob sha1 it calls ``blobId``) is compared with the bytes about
to be sent, so only new or changed files travel.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from tireg.config import offline
from tireg.sources import SourceError
from tireg.sources.hf import _call, _hub, endpoint, has_token

#: what to do when the Hub has no token or refuses it
WRITE_LOGIN_HINT = "log in with `hf auth login`, or set HF_TOKEN to a token with write access"


def git_blob_sha1(data: bytes) -> str:
    """The git object id of ``data`` (the Hub's ``blobId`` of a file kept in git, not LFS)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


@dataclass(frozen=True)
class RemoteFile:
    """One file of a Hub repo, by what the Hub says its content hashes to."""

    path: str
    lfs_sha256: str | None
    blob_id: str | None

    def holds(self, data: bytes) -> bool:
        """Whether the repo's copy has exactly ``data`` (LFS sha256 first, else the blob id)."""
        if self.lfs_sha256 is not None:
            return self.lfs_sha256 == hashlib.sha256(data).hexdigest()
        return self.blob_id is not None and self.blob_id == git_blob_sha1(data)


def require_login() -> None:
    """Fail in one line before any request: offline, or no Hub token (saying how to log in)."""
    if offline():
        raise SourceError(
            "offline: cannot publish to the Hub", hint="unset TIREG_OFFLINE and HF_HUB_OFFLINE"
        )
    if not has_token():
        raise SourceError("publishing to the Hub needs a token", hint=WRITE_LOGIN_HINT)


@contextmanager
def _writing(what: str) -> Iterator[None]:
    """Turn huggingface_hub's failures on a write into one line; 401/403 say how to log in."""
    from huggingface_hub.errors import HfHubHTTPError

    try:
        yield
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else None
        if status in (401, 403):
            raise SourceError(
                f"{what}: the Hub refused the token ({status})", hint=WRITE_LOGIN_HINT
            ) from None
        if status == 412:
            raise SourceError(
                f"{what}: the repo changed while publishing", hint="run the same command again"
            ) from None
        raise SourceError(f"{what}: the Hub failed ({status or type(exc).__name__})") from None
    except (OSError, ValueError) as exc:  # network failures; a README the Hub calls invalid
        raise SourceError(f"{what}: {type(exc).__name__}: {exc}".splitlines()[0]) from None
    except Exception as exc:
        names = {cls.__name__ for cls in type(exc).__mro__}
        if names & {"TimeoutException", "NetworkError", "RemoteProtocolError", "ConnectError"}:
            raise SourceError(f"{what}: cannot reach the Hub ({type(exc).__name__})") from None
        raise


def _api(endpoint_url: str | None) -> Any:
    return _hub().HfApi(endpoint=endpoint(endpoint_url))


def ensure_repo(repo_id: str, *, private: bool, endpoint_url: str | None = None) -> str:
    """Create the model repo unless it exists (``exist_ok``); returns its URL.

    ``private`` applies to a repo created now; an existing repo keeps its visibility.
    """
    api = _api(endpoint_url)
    with _writing(f"hf:{repo_id}: creating the repo"):
        return str(api.create_repo(repo_id, private=private or None, exist_ok=True))


@dataclass(frozen=True)
class RemoteRepo:
    """A repo's ``main``: its commit sha and every file with its content hashes."""

    sha: str | None
    files: dict[str, RemoteFile]


def remote_repo(repo_id: str, *, endpoint_url: str | None = None) -> RemoteRepo:
    """What the repo's ``main`` holds now (one ``model_info`` call)."""
    api = _api(endpoint_url)
    with _writing(f"hf:{repo_id}: reading the repo"):
        info = _call(f"hf:{repo_id}", lambda: api.model_info(repo_id, files_metadata=True))
    files = {}
    for sibling in info.siblings or []:
        lfs = sibling.lfs
        files[sibling.rfilename] = RemoteFile(
            sibling.rfilename, lfs.sha256 if lfs is not None else None, sibling.blob_id
        )
    return RemoteRepo(info.sha, files)


def commit(
    repo_id: str,
    added: Mapping[str, bytes],
    deleted: Sequence[str],
    *,
    message: str,
    parent: str | None = None,
    endpoint_url: str | None = None,
) -> str:
    """One commit on ``main`` adding (or replacing) ``added`` and deleting ``deleted``.

    ``parent`` is the commit the changes were computed against: if ``main`` moved since, the
    Hub refuses the commit (412) instead of mixing two writers' files. Returns the new sha.
    """
    hub = _hub()
    operations: list[Any] = [
        hub.CommitOperationAdd(path_in_repo=path, path_or_fileobj=data)
        for path, data in sorted(added.items())
    ]
    operations += [hub.CommitOperationDelete(path_in_repo=path) for path in sorted(deleted)]
    api = _api(endpoint_url)
    with _writing(f"hf:{repo_id}: committing"):
        info = api.create_commit(repo_id, operations, commit_message=message, parent_commit=parent)
    return str(info.oid)
