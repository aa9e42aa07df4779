"""Installing catalogued embeddings into UIs and folders, and keeping track of what was installed.

Where files go and what they are called is :mod:`tireg.registry.uis`; this module writes them and
records each in ``installs`` (target, format, path, sha256 of the bytes written).

**Never overwrite a different embedding.** Before anything is written, every target path is
checked: a file already there holding the same vectors (byte-identical, or readable as the same
embedding) makes the install a no-op; anything else, installed by tireg or not, refuses the whole
command with one line that says to choose another name with ``--as NEWNAME`` or to replace it with
``--force``. A UI looks an embedding up by stem whatever the extension, so a ``NAME.pt`` beside a
new ``NAME.safetensors`` counts as the same name: holding the same vectors it makes the install a
no-op, holding others it is a collision.

**Concurrency.** Files are published with an atomic hard link that fails if the name exists, so
of two processes writing one path exactly one wins; the loser then sees the winner's file and
either finds the same embedding (no-op) or reports the collision. The ``installs`` row is
written after the file, in a write-locked transaction keyed by the unique path, so rows are never
duplicated; a process killed between the two leaves a file the next identical install adopts.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from tireg import config
from tireg.converters import EmbeddingFileError, encode, read_file
from tireg.converters.writing import EXTENSIONS, output_paths
from tireg.db.schema import (
    EmbeddingRow,
    InstallRow,
    PreviewRow,
    ProvenanceRow,
    SourceRow,
    utcnow,
)
from tireg.db.session import Catalogue, retried
from tireg.errors import TiregError
from tireg.files import atomic_write_bytes, read_capped, sha256_file
from tireg.progress import DownloadProgress
from tireg.registry import available, compat, model_refs, naming, remote, source_sync, uis
from tireg.registry.install_state import install_state
from tireg.registry.store import ContentStore


class InstallError(TiregError):
    """An install that would overwrite a different embedding, or cannot go where it was sent."""


@dataclass(frozen=True)
class Destination:
    """Where an install goes: a located UI root, or a plain folder (target ``dir``)."""

    target: str
    root: Path
    fmt: str

    @classmethod
    def ui(cls, ui: str, ui_root: str | os.PathLike[str] | None = None) -> Destination:
        """A UI's embeddings folder, under ``ui_root`` or the first usual place it is found."""
        found = uis.locate(ui, ui_root)
        return cls(found.ui, found.root, uis.UI_FORMAT)

    @classmethod
    def folder(cls, path: str | os.PathLike[str], fmt: str = uis.UI_FORMAT) -> Destination:
        """Any folder, in any format tireg writes (created if missing)."""
        if fmt not in EXTENSIONS:
            raise InstallError(
                f"unknown format {fmt!r}", hint=f"choose one of {', '.join(EXTENSIONS)}"
            )
        return cls("dir", Path(path).expanduser().resolve(), fmt)

    def as_ui(self) -> uis.UiRoot:
        return uis.UiRoot(self.target, self.root)

    def directory(self, family: str) -> Path:
        if self.target == "dir":
            return self.root
        return uis.embeddings_dir(self.as_ui(), family)


@dataclass(frozen=True)
class InstallOutcome:
    """One installed file: ``status`` is ``installed``, ``present`` (already there, nothing
    written) or ``replaced`` (``--force`` over a different file); ``prompt`` is what to type."""

    ref: str
    target: str
    path: str
    format: str
    status: str
    prompt: str
    #: the picture written beside it for the UI's card (``NAME.preview.png``), if any
    preview: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class InstalledFile:
    """A row of ``tireg installed``: an install, what to type for it (``prompt``, from the file
    name as the UI reads it) and its state: ``ok``, ``modified``, ``missing``."""

    ref: str
    name: str
    prompt: str
    target: str
    format: str
    path: str
    sha256: str
    installed_at: Any
    state: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class _Planned:
    """A file to place: its bytes, and whether a same-named file beside it already holds it."""

    row: EmbeddingRow
    stem: str
    path: Path
    blob: bytes
    present_as: Path | None


def _holds(path: Path, blob: bytes, vectors_sha256: str, *, whole: bool) -> bool:
    """Whether the file at ``path`` is this embedding: the same bytes, or (for a single-file
    format) a file any reader gives the same vectors from."""
    try:
        data = read_capped(path)  # a FIFO planted in a UI folder must not hang install
    except OSError:
        return False
    if data == blob:
        return True
    if not whole:
        return False
    try:
        return read_file(path).vectors_sha256() == vectors_sha256
    except (EmbeddingFileError, ValueError):
        return False


def _collision(path: Path, what: str) -> InstallError:
    return InstallError(
        f"{what}; not overwriting it",
        path=path,
        hint="install under another name with --as NEWNAME, or replace it with --force",
    )


@retried
def _check_model(
    catalogue: Catalogue, rows: Sequence[EmbeddingRow], model: str, *, force: bool
) -> None:
    """Refuse embeddings a UI would skip on ``model`` (see :mod:`tireg.registry.compat`)."""
    with catalogue.transaction() as session:  # a model given as a file is recorded
        ref = model_refs.resolve_model(session, model)
        for row in rows:
            verdict = compat.verdict(session, session.get_one(EmbeddingRow, row.id), ref)
            if verdict.cannot_work and not force:
                raise InstallError(
                    f"{naming.ref_of(row)} on {ref.name}: {verdict.reason}",
                    hint="--force installs it anyway",
                )


def _plan(
    rows: Sequence[EmbeddingRow],
    dest: Destination,
    *,
    as_name: str | None,
    force: bool,
    store: ContentStore,
    check_checkpoints: bool = True,
) -> list[_Planned]:
    """Encode every file and check every target before anything is written.

    Unless ``force`` (or a model was checked instead), an embedding whose family matches none of
    the UI's checkpoints is refused."""
    if as_name is not None and len(rows) != 1:
        raise InstallError("--as renames one embedding; name exactly one")
    planned: list[_Planned] = []
    claimed: dict[Path, str] = {}
    gate = check_checkpoints and not force and dest.target != "dir"
    families = uis.checkpoint_families(dest.as_ui()) if gate else {}
    for row in rows:
        folder = dest.directory(row.family)
        if families and row.family not in families:
            have = ", ".join(f"{n} {f}" for f, n in sorted(families.items()))
            raise InstallError(
                f"{naming.ref_of(row)} is {row.family}, but this {dest.target} has no {row.family} "
                f"checkpoint (it has {have}), so the embedding would do nothing there",
                path=dest.root,
                hint="--force installs it anyway",
            )
        stem = uis.file_stem(dest.target, as_name or naming.prompt_word(row))
        embedding = store.get(row.vectors_sha256).with_meta(name=stem)
        blobs = encode(embedding, dest.fmt)
        paths = output_paths(folder / f"{stem}{EXTENSIONS[dest.fmt]}", len(blobs))
        whole = len(blobs) == 1
        for path, blob in zip(paths, blobs, strict=True):
            if path in claimed and claimed[path] != row.vectors_sha256:
                raise _collision(path, "two of the embeddings named would share this file")
            claimed[path] = row.vectors_sha256
            present_as = None
            if path.exists() and not _holds(path, blob, row.vectors_sha256, whole=whole):
                if not force:
                    raise _collision(path, "a different embedding is already installed here")
            elif not path.exists() and dest.target != "dir":
                for rival in uis.rival_files(folder, stem):
                    if _holds(rival, blob, row.vectors_sha256, whole=True):
                        present_as = rival
                    elif not force:
                        raise _collision(rival, f"a different embedding is already called {stem!r}")
            planned.append(_Planned(row, stem, path, blob, present_as))
    return planned


def _place(plan: _Planned, *, force: bool) -> str:
    """Put one file in place; returns ``installed``, ``present`` or ``replaced``."""
    path, blob, sha = plan.path, plan.blob, plan.row.vectors_sha256
    for _ in range(3):  # another process may publish or remove the file between our looks
        if path.exists():
            if _holds(path, blob, sha, whole=True):
                return "present"
            if not force:
                raise _collision(path, "a different embedding is already installed here")
            atomic_write_bytes(path, blob, overwrite=True)
            return "replaced"
        try:
            atomic_write_bytes(path, blob, overwrite=False)
            return "installed"
        except FileExistsError:
            continue
    raise InstallError("the file kept changing while installing", path=path, hint="try again")


def _record(
    session: Session, row_id: int, dest: Destination, path: Path, fmt: str | None = None
) -> None:
    """Point the install row for ``path`` at what is there now (one row per path, ever);
    ``fmt`` is :data:`PREVIEW_FORMAT` for a preview picture, else the destination's format."""
    sha = sha256_file(path)
    fmt = fmt or dest.fmt
    found = session.scalar(select(InstallRow).where(InstallRow.path == str(path)))
    if found is None:
        session.add(
            InstallRow(
                embedding_id=row_id, target=dest.target, format=fmt, path=str(path), sha256=sha
            )
        )
    elif (found.embedding_id, found.sha256, found.target) != (row_id, sha, dest.target):
        found.embedding_id, found.sha256, found.target = row_id, sha, dest.target
        found.format, found.installed_at = fmt, utcnow()


# -- previews beside installs ----------------------------------------------------------------

#: the UIs whose Extra Networks cards show a picture found beside the embedding file
PREVIEW_UIS = frozenset({"a1111", "forge"})
#: what A1111 (and Forge) look for: ``modules/ui_extra_networks.py``,
#: ``ExtraNetworksPage.find_preview(path)`` tries ``{path}.{ext}`` and ``{path}.preview.{ext}``
#: for the file's path without its extension and ``ext`` in ``allowed_preview_extensions()``
#: (png, jpg, jpeg, webp, gif; ``.preview`` keeps a PNG card from being read as an embedding)
PREVIEW_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".webp", ".gif"})
#: the ``installs.format`` of a preview picture written beside an installed embedding
PREVIEW_FORMAT = "preview"


def _preview_source(catalogue: Catalogue, row_id: int) -> Path | None:
    """The first catalogued preview of the embedding that is a picture file on this disk
    (beside the imported file, or kept under ``TIREG_HOME/previews``); URLs are not fetched."""
    with catalogue.reading() as session:
        found = select(PreviewRow.location).where(PreviewRow.embedding_id == row_id)
        locations = list(session.scalars(found.order_by(PreviewRow.id)))
    for location in locations:
        path = Path(location)
        if "://" not in location and path.suffix.lower() in PREVIEW_EXTENSIONS and path.is_file():
            return path
    return None


def _place_preview(
    catalogue: Catalogue, row_id: int, dest: Destination, installed_at: Path, *, force: bool
) -> Path | None:
    """Write ``NAME.preview.EXT`` beside an embedding installed into A1111/Forge and record it
    as an install of the embedding, so ``uninstall`` removes it with the file. A different
    picture already there is the user's and stays (``force`` replaces it)."""
    if dest.target not in PREVIEW_UIS:
        return None
    source = _preview_source(catalogue, row_id)
    if source is None:
        return None
    target = installed_at.with_name(f"{installed_at.stem}.preview{source.suffix.lower()}")
    try:
        data = source.read_bytes()
    except OSError:
        return None
    if target.exists() and target.read_bytes() != data:
        if not force:
            return None
        atomic_write_bytes(target, data, overwrite=True)
    elif not target.exists():
        try:
            atomic_write_bytes(target, data, overwrite=False)
        except FileExistsError:
            return None  # another process put a picture there meanwhile: theirs stays
    catalogue.write(lambda session: _record(session, row_id, dest, target, PREVIEW_FORMAT))
    return target


def install(
    catalogue: Catalogue,
    specs: Sequence[str],
    dest: Destination,
    *,
    as_name: str | None = None,
    force: bool = False,
    source: str | None = None,
    model: str | None = None,
    store: ContentStore | None = None,
) -> list[InstallOutcome]:
    """Install the embeddings ``specs`` name (see :mod:`tireg.registry.query`) into ``dest``.

    Every spec is resolved and every target checked first, so a bad spec or a collision writes
    nothing. ``as_name`` installs one embedding under another trigger; ``force`` replaces a
    different file at the target and skips the compatibility checks. ``model`` (a checkpoint
    path, hash or name) refuses embeddings that cannot work on it; without it, embeddings whose
    family none of the UI's checkpoints has are refused. Installing what is already there is a
    no-op (``present``).
    """
    with catalogue.reading() as session:
        rows = naming.resolve_many(session, specs, source=source)
        refs = naming.refs(session, rows)
    return install_rows(
        catalogue, rows, dest, as_name=as_name, force=force, model=model, store=store, refs=refs
    )


def install_rows(
    catalogue: Catalogue,
    rows: Sequence[EmbeddingRow],
    dest: Destination,
    *,
    as_name: str | None = None,
    force: bool = False,
    model: str | None = None,
    store: ContentStore | None = None,
    refs: dict[int, str] | None = None,
) -> list[InstallOutcome]:
    """Install catalogue rows already resolved (the shared tail of :func:`install`)."""
    store = store if store is not None else ContentStore()
    if model is not None:
        _check_model(catalogue, rows, model, force=force)
    plans = _plan(
        rows, dest, as_name=as_name, force=force, store=store, check_checkpoints=model is None
    )
    outcomes: list[InstallOutcome] = []
    for plan in plans:
        if plan.present_as is not None:
            status, path = "present", plan.present_as
        else:
            status, path = _place(plan, force=force), plan.path
            catalogue.write(lambda session: _record(session, plan.row.id, dest, path))  # noqa: B023
        ref = (refs or {}).get(plan.row.id, naming.ref_of(plan.row))
        word = uis.prompt_word(dest.target, plan.stem)
        preview = _place_preview(catalogue, plan.row.id, dest, path, force=force)
        outcomes.append(
            InstallOutcome(
                ref,
                dest.target,
                str(path),
                dest.fmt,
                status,
                word,
                None if preview is None else str(preview),
            )
        )
    return outcomes


@dataclass(frozen=True)
class InstallResult:
    """What :func:`install_specs` did: embeddings fetched into the catalogue, files installed.

    ``offline_cached`` names the remote specs served from the download caches because tireg is
    offline (``TIREG_OFFLINE``): what was installed may be older than what the source has now.
    """

    fetched: list[str]
    installed: list[InstallOutcome]
    offline_cached: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "fetched": self.fetched,
            "installed": [o.to_dict() for o in self.installed],
            "offline_cached": self.offline_cached,
        }


def install_specs(
    catalogue: Catalogue,
    specs: Sequence[str],
    dest: Destination | None,
    *,
    as_name: str | None = None,
    force: bool = False,
    source: str | None = None,
    sha256: str | None = None,
    model: str | None = None,
    progress: DownloadProgress | None = None,
    hf_endpoint: str | None = None,
) -> InstallResult:
    """``tireg install``: catalogue names and remote specs, into ``dest`` (if given).

    Remote specs (``hf:``, ``civitai:``, URLs, MEGA links; see :mod:`tireg.registry.remote`) are
    downloaded, verified and catalogued first; names are resolved before any download, so a
    typo costs nothing. Without ``dest`` remote specs are only catalogued. ``hf_endpoint``
    overrides ``HF_ENDPOINT`` for ``hf:`` specs.
    """
    from_sources = [i for i in map(available.source_id, specs) if i is not None]
    local = [s for s in specs if not remote.is_remote_spec(s) and available.source_id(s) is None]
    if local and dest is None:
        raise InstallError(
            f"where should {local[0]!r} go?", hint="pass --ui UI (with --ui-root) or --to DIR"
        )
    with catalogue.reading() as session:
        rows = naming.resolve_many(session, local, source=source)
    fetched_ids: list[int] = []
    remote_specs = [s for s in specs if remote.is_remote_spec(s)]
    for spec in remote_specs:
        fetched_ids += remote.install_remote(
            catalogue, spec, sha256=sha256, progress=progress, hf_endpoint=hf_endpoint
        )
    fetched_ids += _fetch_sources(catalogue, from_sources)
    cached = remote_specs if config.offline() else []  # offline, every source reads its cache
    with catalogue.reading() as session:
        rows += [session.get_one(EmbeddingRow, i) for i in dict.fromkeys(fetched_ids)]
        rows = list({row.id: row for row in rows}.values())
        refs = naming.refs(session, rows)
    fetched = [refs[i] for i in dict.fromkeys(fetched_ids)]
    if dest is None:
        return InstallResult(fetched, [], cached)
    outcomes = install_rows(
        catalogue, rows, dest, as_name=as_name, force=force, model=model, refs=refs
    )
    return InstallResult(fetched, outcomes, cached)


def _fetch_sources(catalogue: Catalogue, ids: Sequence[int]) -> list[int]:
    """Sync the catalogued sources ``ids`` (``source:ID`` specs, shown by search for what is
    available but not downloaded); return the embeddings they hold."""
    if not ids:
        return []
    with catalogue.reading() as session:
        missing = [i for i in ids if session.get(SourceRow, i) is None]
    if missing:
        raise InstallError(
            f"no source {available.SOURCE_PREFIX}{missing[0]}", hint="list them: tireg source list"
        )
    for outcome in source_sync.sync_sources(catalogue, ids=list(ids)).sources:
        if outcome.status in ("failed", "gone", "manual"):
            raise InstallError(
                f"{outcome.status}: {outcome.message or 'nothing could be fetched'}",
                path=outcome.locator,
            )
    with catalogue.reading() as session:
        found = select(ProvenanceRow.embedding_id).where(ProvenanceRow.source_id.in_(list(ids)))
        return list(dict.fromkeys(session.scalars(found.order_by(ProvenanceRow.id))))


# -- what is installed -----------------------------------------------------------------------


def _install_rows(
    session: Session,
    *,
    embedding_ids: Sequence[int] | None = None,
    target: str | None = None,
    under: Path | None = None,
) -> list[InstallRow]:
    found = select(InstallRow).options(selectinload(InstallRow.embedding)).order_by(InstallRow.path)
    if embedding_ids is not None:
        found = found.where(InstallRow.embedding_id.in_(list(embedding_ids)))
    if target is not None:
        found = found.where(InstallRow.target == target)
    rows = list(session.scalars(found))
    if under is not None:
        rows = [r for r in rows if Path(r.path).is_relative_to(under)]
    return rows


def installed(
    catalogue: Catalogue,
    *,
    specs: Sequence[str] = (),
    target: str | None = None,
    under: str | os.PathLike[str] | None = None,
    source: str | None = None,
) -> list[InstalledFile]:
    """Every install (of ``specs``, into ``target``, under folder ``under``) with its state."""
    folder = Path(under).expanduser().resolve() if under is not None else None
    with catalogue.reading() as session:
        ids = [r.id for r in naming.resolve_many(session, specs, source=source)] if specs else None
        rows = _install_rows(session, embedding_ids=ids, target=target, under=folder)
        shown = naming.refs(session, {r.embedding for r in rows})
        result = []
        for inst in rows:
            if inst.format == PREVIEW_FORMAT:
                continue  # a picture beside an install, not something to type
            row = inst.embedding
            result.append(
                InstalledFile(
                    ref=shown[row.id],
                    name=row.name,
                    prompt=uis.prompt_word(inst.target, Path(inst.path).stem),
                    target=inst.target,
                    format=inst.format,
                    path=inst.path,
                    sha256=inst.sha256,
                    installed_at=inst.installed_at,
                    state=install_state(inst),
                )
            )
        return result


@dataclass(frozen=True)
class UninstallOutcome:
    """``removed`` (file deleted), ``forgotten`` (the file was already gone) or ``kept`` (left
    in place; ``reason`` says why: changed since tireg wrote it, or a preview whose embedding
    was kept; ``force`` removes it)."""

    ref: str
    path: str
    status: str
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def uninstall_rows(
    catalogue: Catalogue,
    installs: Sequence[InstallRow],
    *,
    force: bool = False,
    refs: dict[int, str] | None = None,
) -> list[UninstallOutcome]:
    """Delete installed files and their rows; a file modified behind tireg's back is kept
    (and stays listed) unless ``force``, and so is the preview beside a kept embedding."""
    outcomes: list[UninstallOutcome] = []
    gone: list[int] = []
    kept: set[Path] = set()
    # embeddings first, so a preview knows whether its embedding stays
    for inst in sorted(installs, key=lambda i: i.format == PREVIEW_FORMAT):
        state = install_state(inst)
        ref = (refs or {}).get(inst.embedding_id) or naming.ref_of(inst.embedding)
        reason = _reason_to_keep(inst, state, kept) if not force else None
        if reason is not None:
            if inst.format != PREVIEW_FORMAT:
                kept.add(Path(inst.path))
            outcomes.append(UninstallOutcome(ref, inst.path, "kept", reason))
            continue
        if state != "missing":
            Path(inst.path).unlink(missing_ok=True)
        gone.append(inst.id)
        outcomes.append(
            UninstallOutcome(ref, inst.path, "forgotten" if state == "missing" else "removed")
        )
    if gone:
        with catalogue.transaction() as session:
            for inst_id in gone:
                found = session.get(InstallRow, inst_id)
                if found is not None:
                    session.delete(found)
    return outcomes


def _reason_to_keep(inst: InstallRow, state: str, kept: set[Path]) -> str | None:
    """Why an installed file stays on uninstall (None: it goes)."""
    if state == "modified":
        return "modified since tireg installed it; --force deletes it"
    if inst.format == PREVIEW_FORMAT:
        path = Path(inst.path)
        stem = path.name[: -len(".preview" + path.suffix)]
        if any(k.parent == path.parent and k.stem == stem for k in kept):
            return "its embedding file was kept; --force deletes both"
    return None


def uninstall(
    catalogue: Catalogue,
    specs: Sequence[str],
    *,
    target: str | None = None,
    under: str | os.PathLike[str] | None = None,
    force: bool = False,
    source: str | None = None,
) -> list[UninstallOutcome]:
    """Remove what tireg installed of ``specs`` (everywhere, or only into ``target`` / under
    folder ``under``). Files tireg did not write are never touched."""
    folder = Path(under).expanduser().resolve() if under is not None else None
    with catalogue.reading() as session:
        ids = [r.id for r in naming.resolve_many(session, specs, source=source)]
        rows = _install_rows(session, embedding_ids=ids, target=target, under=folder)
        shown = naming.refs(session, {r.embedding for r in rows})
    return uninstall_rows(catalogue, rows, force=force, refs=shown)
