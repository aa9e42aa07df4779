"""A loopback stand-in for Civitai's public API (``/api/v1``) and its download redirect.

Serves model search (``types``, ``query``, ``baseModels``, cursor paging; ``page`` with a query
is a 400 as on Civitai), ``/models/{id}``, ``/model-versions/{id}``,
``/model-versions/by-hash/{hash}`` (case-insensitive, 404 ``{"error":"Model not found"}``) and
``/api/download/models/{version}``: a 302 to a signed file URL, or a 401 when the creator
requires a login and no ``Authorization: Bearer`` key is sent. Files are served by the
underlying :class:`FileServer`, so its faults (``429``, ``drop``, ``html``...) apply to them.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, urlsplit

from tests.sources.servers import send_json
from tests.sources.servers.http_server import FileServer, Served

CIVITAI_TEST_KEY = "civitai-test-key"


@dataclass
class CivitaiVersion:
    id: int
    files: dict[str, bytes]  # file name -> bytes (the first is primary)
    base_model: str = "SD 1.5"
    trained_words: list[str] = field(default_factory=list)
    login_required: bool = False
    images: int = 1
    wrong_hash: bool = False  # advertise a SHA256 that does not match the file


@dataclass
class CivitaiModel:
    id: int
    name: str
    versions: list[CivitaiVersion]
    nsfw: bool = False
    type: str = "TextualInversion"
    tags: list[str] = field(default_factory=lambda: ["style"])


class CivitaiServer:
    def __init__(self, models: list[CivitaiModel] | None = None) -> None:
        self.http = FileServer()
        self.http.dynamic.append(self._handle)
        self.url = self.http.url
        self.api = f"{self.url}/api/v1"
        self.models: dict[int, CivitaiModel] = {}
        for item in models or []:
            self.add(item)

    def add(self, item: CivitaiModel) -> CivitaiModel:
        self.models[item.id] = item
        for version in item.versions:
            for name, data in version.files.items():
                self.http.add(f"/files/{version.id}/{name}", Served(data))
            for i in range(version.images):
                png = _tiny_png(version.id + i)
                self.http.add(
                    f"/images/{version.id}/{i}.png", Served(png, content_type="image/png")
                )
        return item

    # ------------------------------------------------------------------------------- JSON

    def _file_json(self, version: CivitaiVersion, name: str, primary: bool) -> dict[str, object]:
        data = version.files[name]
        sha = hashlib.sha256(b"x" + data if version.wrong_hash else data).hexdigest().upper()
        fmt = "SafeTensor" if name.endswith(".safetensors") else "PickleTensor"
        return {
            "id": version.id * 10,
            "name": name,
            "sizeKB": len(data) / 1024,
            "type": "Model",
            "primary": primary,
            "metadata": {"format": fmt},
            "pickleScanResult": "Success",
            "virusScanResult": "Success",
            "hashes": {"SHA256": sha, "AutoV2": sha[:10]},
            "downloadUrl": f"{self.url}/api/download/models/{version.id}",
        }

    def _version_json(self, item: CivitaiModel, version: CivitaiVersion) -> dict[str, object]:
        return {
            "id": version.id,
            "modelId": item.id,
            "name": f"v{version.id}",
            "baseModel": version.base_model,
            "trainedWords": version.trained_words,
            "files": [
                self._file_json(version, name, i == 0) for i, name in enumerate(version.files)
            ],
            "images": [
                {"url": f"{self.url}/images/{version.id}/{i}.png", "type": "image", "nsfwLevel": 1}
                for i in range(version.images)
            ],
            "downloadUrl": f"{self.url}/api/download/models/{version.id}",
            "model": {"name": item.name, "type": item.type, "nsfw": item.nsfw},
        }

    def _model_json(self, item: CivitaiModel) -> dict[str, object]:
        return {
            "id": item.id,
            "name": item.name,
            "type": item.type,
            "nsfw": item.nsfw,
            "tags": item.tags,
            "description": "<p>A <b>test</b> embedding.</p>",
            "creator": {"username": "tester"},
            "stats": {"downloadCount": 10 * item.id},
            "modelVersions": [self._version_json(item, v) for v in item.versions],
        }

    def _find_version(self, version_id: int) -> tuple[CivitaiModel, CivitaiVersion] | None:
        for item in self.models.values():
            for version in item.versions:
                if version.id == version_id:
                    return item, version
        return None

    # --------------------------------------------------------------------------- dispatch

    def _handle(self, handler: BaseHTTPRequestHandler, raw_path: str) -> bool:
        parts = urlsplit(raw_path)
        path, query = parts.path, parse_qs(parts.query)
        fault = self.http.next_fault(f"{handler.command} {path}")
        if fault and fault.isdigit():
            headers = {"Retry-After": "0"} if fault == "429" else {}
            return send_json(handler, int(fault), {"error": "injected"}, headers)
        if fault == "html":
            body = b"<!DOCTYPE html><html><head><title>Just a moment...</title></head></html>"
            handler.send_response(403)
            handler.send_header("Content-Type", "text/html")
            handler.send_header("Content-Length", str(len(body)))
            handler.end_headers()
            handler.wfile.write(body)
            return True
        if path == "/api/v1/models":
            return self._search(handler, query)
        if match := re.fullmatch(r"/api/v1/models/(\d+)", path):
            item = self.models.get(int(match.group(1)))
            if item is None:
                return send_json(handler, 404, {"error": "No model with id"})
            return send_json(handler, 200, self._model_json(item))
        if match := re.fullmatch(r"/api/v1/model-versions/by-hash/(\w+)", path):
            return self._by_hash(handler, match.group(1).upper())
        if match := re.fullmatch(r"/api/v1/model-versions/(\d+)", path):
            found = self._find_version(int(match.group(1)))
            if found is None:
                return send_json(handler, 404, {"error": "Version not found"})
            return send_json(handler, 200, self._version_json(*found))
        if match := re.fullmatch(r"/api/download/models/(\d+)", path):
            return self._download(handler, int(match.group(1)))
        return False

    def _search(self, handler: BaseHTTPRequestHandler, query: dict[str, list[str]]) -> bool:
        text = query.get("query", [""])[0].lower()
        if text and "page" in query:
            return send_json(handler, 400, {"error": "Cannot use page param with query search"})
        types = ",".join(query.get("types", [])).split(",")
        base = query.get("baseModels", [None])[0]
        hits = [
            m
            for m in self.models.values()
            if m.type in types
            and text in m.name.lower()
            and (base is None or any(v.base_model == base for v in m.versions))
        ]
        limit = int(query.get("limit", ["100"])[0])
        start = int(query.get("cursor", ["0"])[0])
        page = hits[start : start + limit]
        metadata: dict[str, object] = {}
        if start + limit < len(hits):
            metadata["nextCursor"] = str(start + limit)
        items = [self._model_json(m) for m in page]
        return send_json(handler, 200, {"items": items, "metadata": metadata})

    def _by_hash(self, handler: BaseHTTPRequestHandler, wanted: str) -> bool:
        for item in self.models.values():
            for version in item.versions:
                for name in version.files:
                    if self._file_json(version, name, False)["hashes"]["SHA256"] == wanted:  # type: ignore[index]
                        return send_json(handler, 200, self._version_json(item, version))
        return send_json(handler, 404, {"error": "Model not found"})

    def _download(self, handler: BaseHTTPRequestHandler, version_id: int) -> bool:
        found = self._find_version(version_id)
        if found is None:
            return send_json(handler, 404, {"error": "Model not found"})
        _, version = found
        if version.login_required and (
            handler.headers.get("Authorization") != f"Bearer {CIVITAI_TEST_KEY}"
        ):
            message = "The creator of this asset requires you to be logged in to download it"
            return send_json(handler, 401, {"error": "Unauthorized", "message": message})
        name = next(iter(version.files))
        location = f"{self.url}/files/{version.id}/{name}?signature=abc"
        handler.send_response(302)
        handler.send_header("Location", location)
        handler.send_header("Content-Length", "0")
        handler.end_headers()
        return True


def _tiny_png(seed: int) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), (seed % 256, 10, 20)).save(buffer, "PNG")
    return buffer.getvalue()
