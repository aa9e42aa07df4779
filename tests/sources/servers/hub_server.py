"""A loopback stand-in for the Hugging Face Hub API, spoken to by the real huggingface_hub client.

It serves what ``HfApi.list_models`` / ``model_info`` and ``hf_hub_download`` ask for: the model
list (paged with ``Link: rel="next"``, honouring ``expand``), model info (``blobs=true`` adds sizes
and LFS sha256), and ``HEAD``/``GET`` on ``/{repo}/resolve/{rev}/{path}`` with ``X-Repo-Commit``,
``ETag`` (the sha256 for LFS files, the git blob sha1 otherwise), ``X-Linked-Size`` and
``X-Error-Code`` (``RepoNotFound``, ``RevisionNotFound``, ``EntryNotFound``, ``GatedRepo``).
The write side answers what ``HfApi.create_repo`` and ``create_commit`` send: ``POST
/api/repos/create`` (409 when the repo exists), ``/api/validate-yaml``, ``/preupload/main`` (always
``uploadMode: regular``, so content comes inline in the commit) and ``/commit/main`` (NDJSON:
``header``, base64 ``file``, ``deletedFile``), stored into the repo so that later listings, model
info and resolves serve them; :attr:`HubServer.commits` records each commit.
Repos are seeded from the real sd-concepts-library listing in ../shared/corpus; the embedding
bytes are generated here (real torch or safetensors files).

Faults are keyed ``"GET /path"`` / ``"HEAD /path"`` and use the :mod:`http_server` vocabulary.
``max_resolving`` is the most ``resolve`` requests that were ever in flight at once (each is held
for ``resolve_delay`` seconds, so overlapping clients overlap here too).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlsplit

from tests.sources.servers import send_json
from tests.sources.servers.http_server import FileServer

HF_TEST_TOKEN = "hf_test_token_for_gated_repos"
LFS_SUFFIXES = (".bin", ".safetensors", ".pt", ".jpeg", ".jpg", ".png")
INDEX = (
    Path(__file__).resolve().parents[3].parent
    / "shared"
    / "corpus"
    / "sd-concepts-library-index.json"
)


def embedding_bytes(token: str, fmt: str = "bin", *, dim: int = 768, seed: int = 0) -> bytes:
    """A real learned_embeds file: the diffusers one-key dict, as torch.save or safetensors."""
    import numpy as np

    vector = np.random.default_rng(seed).standard_normal(dim).astype(np.float32)
    if fmt == "safetensors":
        from safetensors.numpy import save

        return save({token: vector})
    import torch

    buffer = io.BytesIO()
    torch.save({token: torch.from_numpy(vector)}, buffer)
    return buffer.getvalue()


def tiny_jpeg(seed: int) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (seed % 256, 80, 160)).save(buffer, "JPEG")
    return buffer.getvalue()


def git_blob_sha1(data: bytes) -> str:
    """The git object id of a file's content (what the Hub calls ``blobId`` and ``oid``)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


@dataclass
class HubCommit:
    """One commit received on ``POST /api/models/{repo}/commit/{rev}``."""

    repo_id: str
    summary: str
    added: list[str]
    deleted: list[str]
    sha: str


@dataclass
class HubRepo:
    repo_id: str
    files: dict[str, bytes]
    gated: str | bool = False
    private: bool = False
    card: dict[str, str] = field(default_factory=dict)
    generation: int = 0
    last_modified: str = "2022-09-10T12:00:00.000Z"
    sha_override: str | None = None  # what a hostile endpoint claims instead
    etag_header: str | None = None  # the ETag a hostile endpoint sends when resolving
    commit_header: str | None = None  # the X-Repo-Commit a hostile endpoint sends when resolving

    @property
    def sha(self) -> str:
        if self.sha_override is not None:
            return self.sha_override
        digest = hashlib.sha1(usedforsecurity=False)
        digest.update(f"{self.repo_id}:{self.generation}".encode())
        for path in sorted(self.files):
            digest.update(path.encode() + hashlib.sha256(self.files[path]).digest())
        return digest.hexdigest()

    def etag(self, path: str) -> str:
        data = self.files[path]
        if path.endswith(LFS_SUFFIXES):
            return hashlib.sha256(data).hexdigest()
        return git_blob_sha1(data)

    def sibling(self, path: str, blobs: bool) -> dict[str, object]:
        item: dict[str, object] = {"rfilename": path}
        if blobs:
            data = self.files[path]
            item["size"] = len(data)
            item["blobId"] = git_blob_sha1(data)
            if path.endswith(LFS_SUFFIXES):
                item["lfs"] = {"sha256": self.etag(path), "size": len(data), "pointerSize": 134}
        return item


def concept_repo(
    repo_id: str,
    token: str,
    concept_type: str,
    *,
    fmt: str = "bin",
    images: int = 2,
    gated: str | bool = False,
    seed: int = 0,
) -> HubRepo:
    """A repo laid out like the training notebook's ``save_concept_to_public_library`` output."""
    files = {
        f"learned_embeds.{fmt}": embedding_bytes(token, fmt, seed=seed),
        "token_identifier.txt": token.encode(),
        ".gitattributes": b"*.bin filter=lfs diff=lfs merge=lfs -text\n",
        "README.md": f"---\nlicense: mit\n---\nThis is the `{token}` concept.\n".encode(),
    }
    if concept_type:
        files["type_of_concept.txt"] = concept_type.encode()
    for i in range(images):
        files[f"concept_images/{i}.jpeg"] = tiny_jpeg(seed + i)
    return HubRepo(repo_id, files, gated=gated, card={"license": "mit"})


def seed_from_index(count: int, *, fmt: str = "bin", images: int = 2) -> list[HubRepo]:
    """The first ``count`` repos of the real 2023 listing (gated ones included)."""
    entries = json.loads(INDEX.read_text())[:count]
    repos = []
    for seed, entry in enumerate(entries):
        name = entry["model_name"]
        token = f"<{entry['token'] or name}>"
        repos.append(
            concept_repo(
                f"sd-concepts-library/{name}",
                token,
                entry["concept_type"],
                fmt=fmt,
                images=min(images, len(entry["concept_images_urls"])),
                gated="manual" if entry["restricted"] else False,
                seed=seed,
            )
        )
    return repos


class HubServer:
    """The Hub API over a :class:`FileServer` (which brings the socket, latency and faults)."""

    def __init__(self, repos: list[HubRepo] | None = None, *, page_size: int = 100) -> None:
        self.http = FileServer()
        self.http.dynamic.append(self._handle)
        self.url = self.http.url
        self.page_size = page_size
        self.repos: dict[str, HubRepo] = {}
        self.commits: list[HubCommit] = []
        #: runs when a commit arrives, before it is applied: another writer's turn, in tests
        self.before_commit: Callable[[HubRepo], None] | None = None
        self.resolve_delay = 0.0
        self.resolving = 0
        self.max_resolving = 0
        self._resolving_lock = threading.Lock()
        for repo in repos or []:
            self.add(repo)

    def add(self, repo: HubRepo) -> HubRepo:
        self.repos[repo.repo_id] = repo
        return repo

    def touch(self, repo_id: str, path: str, data: bytes) -> str:
        """Commit a change to one file; returns the new commit sha."""
        repo = self.repos[repo_id]
        repo.files[path] = data
        repo.generation += 1
        repo.last_modified = f"2023-01-{repo.generation:02d}T00:00:00.000Z"
        return repo.sha

    def fault(self, method: str, path: str, *faults: str) -> None:
        self.http.faults[f"{method} {path}"] = list(faults)

    def count(self, method: str, prefix: str) -> int:
        return sum(1 for m, p, _ in self.http.requests if m == method and p.startswith(prefix))

    # ------------------------------------------------------------------------------ dispatch

    def _handle(self, handler: BaseHTTPRequestHandler, raw_path: str) -> bool:
        parts = urlsplit(raw_path)
        path = unquote(parts.path)
        query = parse_qs(parts.query)
        fault = self.http.next_fault(f"{handler.command} {parts.path}")
        if fault and fault.isdigit():
            extra = {"Retry-After": "0"} if fault == "429" else {}
            send_json(handler, int(fault), {"error": "injected"}, extra)
            return True
        if handler.command == "POST":
            return self._post(handler, path)
        if path == "/api/models":
            self._list(handler, query)
            return True
        match = re.fullmatch(r"/api/models/([^/]+/[^/]+)(?:/revision/([^/]+))?", path)
        if match:
            self._info(handler, match.group(1), match.group(2), query)
            return True
        match = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
        if match:
            with self._counting_resolves():
                self._resolve(handler, match.group(1), match.group(2), match.group(3), fault)
            return True
        return False

    # -------------------------------------------------------------------------- the write API

    def _post(self, handler: BaseHTTPRequestHandler, path: str) -> bool:
        """What ``HfApi.create_repo`` and ``create_commit`` send (huggingface_hub 2.x).

        Writes need ``Authorization: Bearer HF_TEST_TOKEN`` (else 401, as the Hub answers a bad
        token). Every file is taken inline (``uploadMode: regular``), so no LFS or Xet transfer
        is ever asked for; commits are recorded in :attr:`commits`.
        """
        body = handler.rfile.read(int(handler.headers.get("Content-Length") or 0))
        if path == "/api/validate-yaml":
            return send_json(handler, 200, {"errors": [], "warnings": []})
        if handler.headers.get("Authorization") != f"Bearer {HF_TEST_TOKEN}":
            headers = {"X-Error-Message": "Invalid credentials in Authorization header"}
            return send_json(handler, 401, {"error": "Invalid credentials"}, headers)
        if path == "/api/repos/create":
            return self._create(handler, json.loads(body))
        match = re.fullmatch(r"/api/models/([^/]+/[^/]+)/(preupload|commit)/([^/]+)", path)
        if match is None:
            return False
        repo = self.repos.get(match.group(1))
        if repo is None:
            self._error(handler, 404, "RepoNotFound", None)
            return True
        if match.group(3) != "main":
            self._error(handler, 404, "RevisionNotFound", repo.sha)
            return True
        if match.group(2) == "preupload":
            files = json.loads(body)["files"]
            return send_json(handler, 200, {"files": [self._upload_mode(repo, f) for f in files]})
        return self._commit(handler, repo, body)

    def _create(self, handler: BaseHTTPRequestHandler, payload: dict[str, object]) -> bool:
        repo_id = f"{payload['organization']}/{payload['name']}"
        url = f"{self.url}/{repo_id}"
        if repo_id in self.repos:
            return send_json(
                handler, 409, {"error": "You already created this model repo", "url": url}
            )
        gitattributes = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"
        self.add(
            HubRepo(
                repo_id,
                {".gitattributes": gitattributes},  # the Hub's initial commit
                private=payload.get("visibility") == "private",
            )
        )
        return send_json(handler, 200, {"url": url, "name": repo_id})

    @staticmethod
    def _upload_mode(repo: HubRepo, file: dict[str, object]) -> dict[str, object]:
        path = str(file["path"])
        answer: dict[str, object] = {"path": path, "uploadMode": "regular", "shouldIgnore": False}
        if path in repo.files:
            answer["oid"] = git_blob_sha1(repo.files[path])
        return answer

    def _commit(self, handler: BaseHTTPRequestHandler, repo: HubRepo, body: bytes) -> bool:
        """Apply an NDJSON commit: a header line, then ``file`` (base64) and ``deletedFile``."""
        if self.before_commit is not None:
            self.before_commit(repo)
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        header = lines[0]
        assert header["key"] == "header", header
        parent = header["value"].get("parentCommit")
        if parent is not None and parent != repo.sha:
            send_json(handler, 412, {"error": "A commit has happened since. Please refresh."})
            return True
        added, deleted = [], []
        for line in lines[1:]:
            value = line["value"]
            if line["key"] == "file":
                assert value["encoding"] == "base64", value
                repo.files[value["path"]] = base64.b64decode(value["content"])
                added.append(value["path"])
            elif line["key"] == "deletedFile":
                if value["path"] not in repo.files:
                    self._error(handler, 404, "EntryNotFound", repo.sha)
                    return True
                del repo.files[value["path"]]
                deleted.append(value["path"])
            else:
                send_json(handler, 400, {"error": f"unsupported operation {line['key']}"})
                return True
        repo.generation += 1
        repo.last_modified = f"2024-01-{repo.generation:02d}T00:00:00.000Z"
        commit = HubCommit(repo.repo_id, header["value"]["summary"], added, deleted, repo.sha)
        self.commits.append(commit)
        url = f"{self.url}/{repo.repo_id}/commit/{commit.sha}"
        return send_json(handler, 200, {"commitUrl": url, "commitOid": commit.sha, "success": True})

    @contextmanager
    def _counting_resolves(self) -> Iterator[None]:
        with self._resolving_lock:
            self.resolving += 1
            self.max_resolving = max(self.max_resolving, self.resolving)
        try:
            if self.resolve_delay:
                threading.Event().wait(self.resolve_delay)
            yield
        finally:
            with self._resolving_lock:
                self.resolving -= 1

    def _listing_item(self, repo: HubRepo, expand: list[str]) -> dict[str, object]:
        item: dict[str, object] = {
            "id": repo.repo_id,
            "_id": repo.sha[:24],
            "private": repo.private,
        }
        fields: dict[str, object] = {
            "sha": repo.sha,
            "lastModified": repo.last_modified,
            "cardData": repo.card,
            "siblings": [repo.sibling(p, False) for p in sorted(repo.files)],
            "gated": repo.gated,
        }
        if not expand:
            item.update({"likes": 0, "downloads": 0, "tags": [], "createdAt": repo.last_modified})
        for key in expand:
            if key in fields:
                item[key] = fields[key]
        return item

    def _list(self, handler: BaseHTTPRequestHandler, query: dict[str, list[str]]) -> None:
        author = query.get("author", [""])[0]
        expand = query.get("expand", [])
        matching = [r for r in self.repos.values() if r.repo_id.startswith(f"{author}/")]
        start = int(query.get("cursor", ["0"])[0])
        page = matching[start : start + self.page_size]
        headers = {}
        if start + self.page_size < len(matching):
            params = [("author", author), *(("expand", e) for e in expand)]
            params.append(("cursor", str(start + self.page_size)))
            next_url = f"{self.url}/api/models?" + "&".join(f"{k}={quote(v)}" for k, v in params)
            headers["Link"] = f'<{next_url}>; rel="next"'
        send_json(handler, 200, [self._listing_item(r, expand) for r in page], headers)

    def _info(
        self,
        handler: BaseHTTPRequestHandler,
        repo_id: str,
        revision: str | None,
        query: dict[str, list[str]],
    ) -> None:
        repo = self.repos.get(repo_id)
        if repo is None:
            self._error(handler, 404, "RepoNotFound", None)
            return
        if revision not in (None, "main", repo.sha):
            self._error(handler, 404, "RevisionNotFound", None)
            return
        blobs = query.get("blobs", ["false"])[0].lower() == "true"
        info = {
            "id": repo.repo_id,
            "sha": repo.sha,
            "lastModified": repo.last_modified,
            "private": repo.private,
            "gated": repo.gated,
            "cardData": repo.card,
            "tags": [],
            "siblings": [repo.sibling(p, blobs) for p in sorted(repo.files)],
        }
        send_json(handler, 200, info)

    def _resolve(
        self,
        handler: BaseHTTPRequestHandler,
        repo_id: str,
        revision: str,
        path: str,
        fault: str | None,
    ) -> None:
        repo = self.repos.get(repo_id)
        if repo is None:
            self._error(handler, 401, "RepoNotFound", None)
            return
        if revision not in ("main", repo.sha):
            self._error(handler, 404, "RevisionNotFound", None)
            return
        if repo.gated and handler.headers.get("Authorization") != f"Bearer {HF_TEST_TOKEN}":
            self._error(handler, 401, "GatedRepo", repo.sha)
            return
        if path not in repo.files:
            self._error(handler, 404, "EntryNotFound", repo.sha)
            return
        data = repo.files[path]
        head = handler.command == "HEAD"
        status, body = 200, data
        wanted = handler.headers.get("Range", "")
        if wanted.startswith("bytes=") and not head:
            start = int(wanted[6:].split("-")[0])
            status, body = 206, data[start:]
        headers = {
            "X-Repo-Commit": repo.commit_header or repo.sha,
            "ETag": f'"{repo.etag_header or repo.etag(path)}"',
            "X-Linked-Size": str(len(data)),
            "Accept-Ranges": "bytes",
        }
        if status == 206:
            headers["Content-Range"] = f"bytes {len(data) - len(body)}-{len(data) - 1}/{len(data)}"
        if fault == "html" and not head:
            body = b"<!DOCTYPE html><html><body>Hugging Face is down</body></html>"
        if fault == "hash" and not head:
            body = bytes([body[0] ^ 1]) + body[1:]
        handler.send_response(status)
        for key, value in headers.items():
            handler.send_header(key, value)
        handler.send_header("Content-Type", "application/octet-stream")
        handler.send_header("Content-Length", str(len(body)))
        if fault == "drop" and not head:
            handler.send_header("Connection", "close")
        handler.end_headers()
        if head:
            return
        if fault == "drop":
            handler.wfile.write(body[: len(body) // 2])
            handler.wfile.flush()
            handler.close_connection = True
            return
        handler.wfile.write(body)

    def _error(
        self, handler: BaseHTTPRequestHandler, status: int, code: str, commit: str | None
    ) -> None:
        headers = {"X-Error-Code": code, "X-Error-Message": code}
        if commit:
            headers["X-Repo-Commit"] = commit
        send_json(handler, status, {"error": code}, headers)
