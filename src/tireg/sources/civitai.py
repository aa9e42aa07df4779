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
from tireg.sources import MAX_PREVIEW_BYTES, Fetched, SourceError
from tireg.sources.http import HttpStatusError, download, get_json

DEFAULT_API = "https://civitai.com/api/v1"
TI_TYPE = "TextualInversion"
KEY_VARIABLES = ("CIVITAI_API_KEY", "TIREG_CIVITAI_TOKEN")
KEY_HINT = "set CIVITAI_API_KEY (or TIREG_CIVITAI_TOKEN) to a key from civitai.com/user/account"
MAX_PAGE = 100
MAX_PREVIEWS = 4
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


# ------------------------------------------------------------------------------- typed values
# Civitai's JSON is parsed once, here, into the values below; the registry never sees a dict.
# Field names and meanings: civitai/civitai ``src/pages/api/v1/model-versions/[id].ts`` and
# ``models/index.ts`` (see ../shared/reference/sources.md section 5).


@dataclass(frozen=True)
class CivitaiFile:
    """One file of a model version."""

    name: str
    type: str  # Model | Negative | Training Data | ...
    primary: bool
    sha256: str | None  # lower-case hex, as Civitai lists it (sometimes wrong or missing)
    download_url: str | None
    flagged: bool  # Civitai's pickle or virus scanner said "Danger"


@dataclass(frozen=True)
class ModelFacts:
    """What a model (or the ``model`` part of a version) says about itself."""

    id: int | None
    name: str | None
    type: str | None
    nsfw: bool | None
    tags: tuple[str, ...] = ()
    description: str | None = None
    creator: str | None = None
    download_count: int | None = None


@dataclass(frozen=True)
class Version:
    """A model version: its trigger words, base model, files and preview pictures."""

    id: int
    model_id: int | None
    base_model: str | None
    trained_words: tuple[str, ...]
    files: tuple[CivitaiFile, ...]
    image_urls: tuple[str, ...]
    download_url: str | None
    description: str | None
    model: ModelFacts | None  # the version's ``model`` part, where it has one

    @property
    def trigger(self) -> str | None:
        return self.trained_words[0] if self.trained_words else None

    def embedding_files(self) -> list[CivitaiFile]:
        """The files holding the embedding itself: the primary one, else the first."""
        files = [f for f in self.files if f.type in EMBEDDING_FILE_TYPES]
        return [f for f in files if f.primary] or files[:1]

    def files_with_sha256(self, sha256: str) -> list[CivitaiFile]:
        return [f for f in self.files if f.sha256 == sha256.lower()]


@dataclass(frozen=True)
class Model:
    """A model with its versions, newest first (as Civitai lists them)."""

    facts: ModelFacts
    versions: tuple[Version, ...]

    @property
    def id(self) -> int:
        return self.facts.id or 0

    def spec(self) -> str:
        """What ``tireg install`` takes: ``civitai:MODEL@NEWEST_VERSION``."""
        return f"civitai:{self.id}" + (f"@{self.versions[0].id}" if self.versions else "")


def _bad(what: str, detail: str) -> SourceError:
    return SourceError(f"{what}: Civitai sent {detail}", hint="is TIREG_CIVITAI_API a Civitai API?")


def _object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _bad(what, f"{type(value).__name__} where an object belongs")
    return value


def _list(value: Any, what: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise _bad(what, f"{type(value).__name__} where a list belongs")
    return value


def _id(value: Any, what: str) -> int:
    """A positive integer id (Civitai's ids are numbers; bools and junk are refused)."""
    if isinstance(value, bool) or not isinstance(value, int | str) or not str(value).isdigit():
        raise _bad(what, f"the id {str(value)[:40]!r}")
    return int(value)


def _text(value: Any) -> str | None:
    return str(value).strip() or None if value is not None and not isinstance(value, dict) else None


def _sha256(value: Any) -> str | None:
    text = str(value or "").strip().lower()
    return text if re.fullmatch(r"[0-9a-f]{64}", text) else None


def parse_model_facts(data: Any, what: str) -> ModelFacts:
    data = _object(data, what)
    tags = [
        t if isinstance(t, str) else (t or {}).get("name", "")
        for t in _list(data.get("tags"), what)
    ]
    creator = data.get("creator")
    stats = data.get("stats")
    downloads = stats.get("downloadCount") if isinstance(stats, dict) else None
    return ModelFacts(
        id=_id(data["id"], what) if data.get("id") is not None else None,
        name=_text(data.get("name")),
        type=_text(data.get("type")),
        nsfw=bool(data["nsfw"]) if data.get("nsfw") is not None else None,
        tags=tuple(str(t) for t in tags if t),
        description=_text(data.get("description")),
        creator=_text(creator.get("username")) if isinstance(creator, dict) else None,
        download_count=downloads if isinstance(downloads, int) else None,
    )


def parse_version(data: Any, what: str) -> Version:
    """A model version's JSON (``/model-versions/ID``, ``by-hash``, or a model's list entry)."""
    data = _object(data, what)
    if "id" not in data:
        raise _bad(what, "a version without an id")
    files = []
    for raw in _list(data.get("files"), what):
        raw = _object(raw, what)
        hashes = raw.get("hashes")
        hashes = hashes if isinstance(hashes, dict) else {}
        files.append(
            CivitaiFile(
                name=_text(raw.get("name")) or "download",
                type=_text(raw.get("type")) or "Model",
                primary=bool(raw.get("primary")),
                sha256=_sha256(hashes.get("SHA256")),
                download_url=_text(raw.get("downloadUrl")),
                flagged="Danger" in (raw.get("pickleScanResult"), raw.get("virusScanResult")),
            )
        )
    images = [
        _text(i.get("url"))
        for i in _list(data.get("images"), what)
        if isinstance(i, dict) and i.get("type", "image") == "image"
    ]
    model_part = data.get("model")
    return Version(
        id=_id(data["id"], what),
        model_id=_id(data["modelId"], what) if data.get("modelId") is not None else None,
        base_model=_text(data.get("baseModel")),
        trained_words=tuple(
            w for w in (_text(w) for w in _list(data.get("trainedWords"), what)) if w
        ),
        files=tuple(files),
        image_urls=tuple(u for u in images if u),
        download_url=_text(data.get("downloadUrl")),
        description=_text(data.get("description")),
        model=parse_model_facts(model_part, what) if isinstance(model_part, dict) else None,
    )


def parse_model(data: Any, what: str) -> Model:
    """A model's JSON (``/models/ID`` or a search hit) with its versions."""
    data = _object(data, what)
    if "id" not in data:
        raise _bad(what, "a model without an id")
    return Model(
        facts=parse_model_facts(data, what),
        versions=tuple(parse_version(v, what) for v in _list(data.get("modelVersions"), what)),
    )


# ------------------------------------------------------------------------------------ requests


def search(query: str, *, base_model: str | None = None, limit: int = 20) -> list[Model]:
    """Textual-inversion models matching ``query``, following ``nextCursor`` up to ``limit``."""
    what = f"searching Civitai for {query!r}"
    params: dict[str, Any] = {"types": TI_TYPE, "limit": min(limit, MAX_PAGE)}
    if query:
        params["query"] = query
    if base_model:
        params["baseModels"] = base_model
    models: list[Model] = []
    while len(models) < limit:
        page = _object(_get("/models", what, params), what)
        items = _list(page.get("items"), what)
        models += [parse_model(item, what) for item in items]
        metadata = page.get("metadata")
        cursor = metadata.get("nextCursor") if isinstance(metadata, dict) else None
        if not cursor or not items:
            break
        params["cursor"] = cursor
    return models[:limit]


def model(model_id: int) -> Model:
    what = f"civitai:{model_id}"
    return parse_model(_get(f"/models/{model_id}", what), what)


def version(version_id: int) -> Version:
    what = f"Civitai version {version_id}"
    return parse_version(_get(f"/model-versions/{version_id}", what), what)


def by_hash(sha256: str) -> Version | None:
    """The model version holding a file with this SHA256, or None when Civitai has none."""
    what = f"Civitai lookup of {sha256[:12]}"
    try:
        found = get_json(
            f"{api_base()}/model-versions/by-hash/{quote(sha256.upper())}", headers=_headers()
        )
    except HttpStatusError as exc:
        if exc.status == 404:
            return None
        raise _advice(exc, what) from None
    return parse_version(found, what)


@dataclass(frozen=True)
class VersionFacts:
    """What tireg records about a Civitai version, as importer hints."""

    model_id: int
    version_id: int
    hints: dict[str, str]
    preview_urls: list[str]

    @property
    def locator(self) -> str:
        """The ``civitai`` source's locator, ``MODEL@VERSION``."""
        return f"{self.model_id}@{self.version_id}"


def version_facts(info: Version, model_info: ModelFacts | None = None) -> VersionFacts:
    """Hints (trigger, title, base model, nsfw, tags, description) from a version."""
    model_part = model_info or info.model or ModelFacts(None, None, None, None)
    hints: dict[str, str] = {}
    if info.trigger:
        hints["trigger"] = info.trigger
    if model_part.name:
        hints["title"] = model_part.name
    if info.base_model:
        hints["base_model_hint"] = info.base_model
        hints["base_model_evidence"] = "civitai baseModel"
    if model_part.nsfw is not None:
        hints["nsfw"] = "true" if model_part.nsfw else "false"
    if model_part.tags:
        hints["tags"] = ",".join(model_part.tags)
    description = model_part.description or info.description
    if description:
        text = html.unescape(re.sub(r"<[^>]+>", " ", description))
        hints["description"] = re.sub(r"\s+", " ", text).strip()[:2000]
    return VersionFacts(
        model_id=info.model_id or model_part.id or 0,
        version_id=info.id,
        hints=hints,
        preview_urls=list(info.image_urls[:MAX_PREVIEWS]),
    )


def fetch(spec: str, *, progress: DownloadProgress | None = None) -> list[Fetched]:
    """Download a Civitai TI version (the model's newest when no version is given), verified."""
    model_id, version_id = parse_spec(spec)
    if offline():
        return _fetch_cached(spec, model_id, version_id)
    model_json = _get(f"/models/{model_id}", f"civitai:{model_id}")
    found = parse_model(model_json, spec)
    if found.facts.type not in (None, TI_TYPE):
        raise SourceError(f"{spec}: a {found.facts.type}, not a textual inversion")
    if version_id is None:
        if not found.versions:
            raise SourceError(f"{spec}: the model has no versions")
        version_id = found.versions[0].id
    version_json = _get(f"/model-versions/{version_id}", f"Civitai version {version_id}")
    info = parse_version(version_json, spec)
    if (info.model_id or model_id) != model_id:
        raise SourceError(f"{spec}: version {version_id} belongs to another model")
    folder = cache_dir() / "civitai" / str(version_id)
    # kept so an offline install of this version knows what the API said
    atomic_write_bytes(folder / VERSION_JSON, json.dumps([version_json, model_json]).encode())
    return _download_files(spec, model_id, info, found.facts, folder, progress)


def _fetch_cached(spec: str, model_id: int, version_id: int | None) -> list[Fetched]:
    """Offline: the files and API answers an earlier install of this version left in the cache."""
    cached = cache_dir() / "civitai" / str(version_id) / VERSION_JSON
    if version_id is None or not cached.is_file():
        raise SourceError(
            f"{spec}: offline, and this version is not in the cache",
            hint="name the version (civitai:MODEL@VERSION) of an earlier install, or go online",
        )
    version_json, model_json = json.loads(cached.read_text())
    info = parse_version(version_json, spec)
    facts = parse_model(model_json, spec).facts
    return _download_files(spec, model_id, info, facts, cached.parent, None)


def _download_files(
    spec: str,
    model_id: int,
    info: Version,
    model_info: ModelFacts,
    folder: Path,
    progress: DownloadProgress | None,
) -> list[Fetched]:
    """Each embedding file of a version, checked against Civitai's SHA256 (cached ones reused)."""
    facts = version_facts(info, model_info)
    previews = _previews(facts.preview_urls, folder / "previews")
    fetched = []
    for file in info.embedding_files():
        if file.flagged:
            raise SourceError(f"{spec}: Civitai's scanner flagged {file.name} as dangerous")
        url = file.download_url or info.download_url
        if not url:
            raise SourceError(f"{spec}: Civitai gave no download URL for {file.name}")
        try:
            got = download(
                url,
                folder,
                filename=file.name,
                expected_sha256=file.sha256,
                headers=_headers(),
                progress=progress,
            )
        except HttpStatusError as exc:
            raise _advice(exc, spec) from None
        fetched.append(
            Fetched(
                path=got.path,
                kind="civitai",
                locator=f"{model_id}@{info.id}",
                location=url,
                sha256=got.sha256,
                revision=str(info.id),
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
