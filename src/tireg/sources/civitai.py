"""Civitai's public REST API: search textual inversions, describe versions, find files by hash.

Base URL: ``TIREG_CIVITAI_API`` (default ``https://civitai.com/api/v1``). An API key from
``CIVITAI_API_KEY`` or ``TIREG_CIVITAI_TOKEN`` is sent as ``Authorization: Bearer`` when present;
creators can require a login to download. Search uses cursor paging (Civitai refuses page
numbers together with a text query). Downloads answer with a redirect to a short-lived signed
URL, so they go through :func:`tireg.sources.http.download` (which drops the key when the
redirect leaves the host) and are checked against the SHA256 Civitai lists for the file.
Status codes become advice: 401 means log in, 403 early access or a Cloudflare wall, 429 slow down.
"""

from __future__ import annotations

import html
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from tireg.config import cache_dir, offline
from tireg.files import atomic_write_bytes
from tireg.progress import DownloadProgress
from tireg.sources import Fetched, SourceError
from tireg.sources.http import HttpStatusError, download, get_json

DEFAULT_API = "https://civitai.com/api/v1"
TI_TYPE = "TextualInversion"
KEY_VARIABLES = ("CIVITAI_API_KEY", "TIREG_CIVITAI_TOKEN")
KEY_HINT = "set CIVITAI_API_KEY (or TIREG_CIVITAI_TOKEN) to a key from civitai.com/user/account"
MAX_PAGE = 100
MAX_PREVIEWS = 4
MAX_PREVIEW_BYTES = 16 * 1024 * 1024
#: file types that hold the embedding itself (a TI version may also ship training data)
EMBEDDING_FILE_TYPES = ("Model", "Negative")
VERSION_JSON = ".version.json"


def api_base() -> str:
    return os.environ.get("TIREG_CIVITAI_API", DEFAULT_API).rstrip("/")


def _headers() -> dict[str, str]:
    for name in KEY_VARIABLES:
        key = os.environ.get(name, "").strip()
        if key:
            return {"Authorization": f"Bearer {key}"}
    return {}


def _advice(exc: HttpStatusError, what: str) -> SourceError:
    """Turn a Civitai status into what the user should do about it."""
    logged_in = bool(_headers())
    if exc.status == 401:
        return SourceError(
            f"{what}: Civitai requires a login for this (the creator restricts downloads)",
            hint="check your API key" if logged_in else KEY_HINT,
        )
    if exc.status == 403:
        return SourceError(
            f"{what}: Civitai refused access (early access, or a Cloudflare check)",
            hint="open it on civitai.com; with a key, check it is valid" if logged_in else KEY_HINT,
        )
    if exc.status == 404:
        return SourceError(f"{what}: not found on Civitai")
    detail = exc.body.strip().splitlines()[0][:200] if exc.body.strip() else ""
    return SourceError(f"{what}: Civitai answered HTTP {exc.status} {detail}".strip())


def _get(path: str, what: str, params: dict[str, Any] | None = None) -> Any:
    try:
        return get_json(api_base() + path, params=params, headers=_headers())
    except HttpStatusError as exc:
        raise _advice(exc, what) from None


def parse_spec(spec: str) -> tuple[int, int | None]:
    """``civitai:MODEL[@VERSION]`` -> (model id, version id or None)."""
    body = spec.removeprefix("civitai:")
    match = re.fullmatch(r"(\d+)(?:@(\d+))?", body)
    if not match:
        raise SourceError(f"not a Civitai spec: {spec!r}", hint="use civitai:MODEL_ID[@VERSION_ID]")
    return int(match.group(1)), int(match.group(2)) if match.group(2) else None


def search(query: str, *, base_model: str | None = None, limit: int = 20) -> list[dict[str, Any]]:
    """Textual-inversion models matching ``query``, following ``nextCursor`` up to ``limit``."""
    params: dict[str, Any] = {"types": TI_TYPE, "limit": min(limit, MAX_PAGE)}
    if query:
        params["query"] = query
    if base_model:
        params["baseModels"] = base_model
    items: list[dict[str, Any]] = []
    while len(items) < limit:
        page = _get("/models", f"searching Civitai for {query!r}", params)
        items += page.get("items") or []
        cursor = (page.get("metadata") or {}).get("nextCursor")
        if not cursor or not page.get("items"):
            break
        params["cursor"] = cursor
    return items[:limit]


def model(model_id: int) -> dict[str, Any]:
    result: dict[str, Any] = _get(f"/models/{model_id}", f"civitai:{model_id}")
    return result


def version(version_id: int) -> dict[str, Any]:
    result: dict[str, Any] = _get(f"/model-versions/{version_id}", f"Civitai version {version_id}")
    return result


def by_hash(sha256: str) -> dict[str, Any] | None:
    """The model version holding a file with this SHA256, or None when Civitai has none."""
    try:
        found = get_json(
            f"{api_base()}/model-versions/by-hash/{quote(sha256.upper())}", headers=_headers()
        )
    except HttpStatusError as exc:
        if exc.status == 404:
            return None
        raise _advice(exc, f"Civitai lookup of {sha256[:12]}") from None
    return found if isinstance(found, dict) else None


@dataclass(frozen=True)
class VersionFacts:
    """What tireg records about a Civitai version, as importer hints."""

    model_id: int
    version_id: int
    hints: dict[str, str]
    preview_urls: list[str]


def version_facts(info: dict[str, Any], model_info: dict[str, Any] | None = None) -> VersionFacts:
    """Hints (trigger, title, base model, nsfw, tags, description) from a version's JSON."""
    model_part = model_info or info.get("model") or {}
    words = [w.strip() for w in info.get("trainedWords") or [] if str(w).strip()]
    hints: dict[str, str] = {}
    if words:
        hints["trigger"] = words[0]
    if model_part.get("name"):
        hints["title"] = str(model_part["name"])
    if info.get("baseModel"):
        hints["base_model_hint"] = str(info["baseModel"])
        hints["base_model_evidence"] = "civitai baseModel"
    if model_part.get("nsfw") is not None:
        hints["nsfw"] = "true" if model_part.get("nsfw") else "false"
    tags = [t if isinstance(t, str) else t.get("name", "") for t in model_part.get("tags") or []]
    if tags:
        hints["tags"] = ",".join(t for t in tags if t)
    description = model_part.get("description") or info.get("description")
    if description:
        text = html.unescape(re.sub(r"<[^>]+>", " ", str(description)))
        hints["description"] = re.sub(r"\s+", " ", text).strip()[:2000]
    images = [i.get("url") for i in info.get("images") or [] if i.get("type", "image") == "image"]
    return VersionFacts(
        model_id=int(info.get("modelId") or model_part.get("id") or 0),
        version_id=int(info["id"]),
        hints=hints,
        preview_urls=[u for u in images if u][:MAX_PREVIEWS],
    )


def _embedding_files(info: dict[str, Any]) -> list[dict[str, Any]]:
    files = [f for f in info.get("files") or [] if f.get("type", "Model") in EMBEDDING_FILE_TYPES]
    primary = [f for f in files if f.get("primary")]
    return primary or files[:1]


def fetch(spec: str, *, progress: DownloadProgress | None = None) -> list[Fetched]:
    """Download a Civitai TI version (the model's newest when no version is given), verified."""
    model_id, version_id = parse_spec(spec)
    if offline():
        return _fetch_cached(spec, model_id, version_id)
    model_info = model(model_id)
    if model_info.get("type") not in (None, TI_TYPE):
        raise SourceError(f"{spec}: a {model_info.get('type')}, not a textual inversion")
    if version_id is None:
        versions = model_info.get("modelVersions") or []
        if not versions:
            raise SourceError(f"{spec}: the model has no versions")
        version_id = int(versions[0]["id"])
    info = version(version_id)
    if int(info.get("modelId") or model_id) != model_id:
        raise SourceError(f"{spec}: version {version_id} belongs to another model")
    folder = cache_dir() / "civitai" / str(version_id)
    # kept so an offline install of this version knows what the API said
    atomic_write_bytes(folder / VERSION_JSON, json.dumps([info, model_info]).encode())
    return _download_files(spec, model_id, info, model_info, folder, progress)


def _fetch_cached(spec: str, model_id: int, version_id: int | None) -> list[Fetched]:
    """Offline: the files and API answers an earlier install of this version left in the cache."""
    cached = cache_dir() / "civitai" / str(version_id) / VERSION_JSON
    if version_id is None or not cached.is_file():
        raise SourceError(
            f"{spec}: offline, and this version is not in the cache",
            hint="name the version (civitai:MODEL@VERSION) of an earlier install, or go online",
        )
    info, model_info = json.loads(cached.read_text())
    return _download_files(spec, model_id, info, model_info, cached.parent, None)


def _download_files(
    spec: str,
    model_id: int,
    info: dict[str, Any],
    model_info: dict[str, Any],
    folder: Path,
    progress: DownloadProgress | None,
) -> list[Fetched]:
    """Each embedding file of a version, checked against Civitai's SHA256 (cached ones reused)."""
    version_id = int(info["id"])
    facts = version_facts(info, model_info)
    previews = _previews(facts.preview_urls, folder / "previews")
    fetched = []
    for file in _embedding_files(info):
        if "Danger" in (file.get("pickleScanResult"), file.get("virusScanResult")):
            raise SourceError(f"{spec}: Civitai's scanner flagged {file.get('name')} as dangerous")
        expected = (file.get("hashes") or {}).get("SHA256")
        url = file.get("downloadUrl") or info.get("downloadUrl")
        if not url:
            raise SourceError(f"{spec}: Civitai gave no download URL for {file.get('name')}")
        try:
            got = download(
                url,
                folder,
                filename=file.get("name"),
                expected_sha256=expected.lower() if expected else None,
                headers=_headers(),
                progress=progress,
            )
        except HttpStatusError as exc:
            raise _advice(exc, spec) from None
        fetched.append(
            Fetched(
                path=got.path,
                kind="civitai",
                locator=f"{model_id}@{version_id}",
                location=url,
                sha256=got.sha256,
                revision=str(version_id),
                hints=facts.hints,
                previews=previews,
            )
        )
    if not fetched:
        raise SourceError(f"{spec}: the version lists no embedding file")
    return fetched


def _previews(urls: list[str], folder: Path) -> list[Path]:
    """Preview images are nice to have: a failed one is skipped, never fatal."""
    paths = []
    for index, url in enumerate(urls):  # one folder each: many previews share a file name
        if offline() and not (folder / str(index)).is_dir():
            continue
        try:
            paths.append(download(url, folder / str(index), max_bytes=MAX_PREVIEW_BYTES).path)
        except SourceError:
            continue
    return paths
