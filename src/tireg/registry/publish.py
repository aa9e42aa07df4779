"""Publishing a catalogued embedding as a Hugging Face concept repo (sd-concepts-library layout).

The repo gets what the sd-concepts-library training notebook writes and what ``tireg sync hf``
reads back:

* ``learned_embeds.safetensors``: diffusers' ``{token: tensor}`` (SDXL: ``clip_l``/``clip_g``,
  the layout diffusers' SDXL examples load), and ``learned_embeds.bin``, the same dict as a torch
  file for older loaders (written by tireg's torch-file writer, never torch);
* ``token_identifier.txt`` (the trigger) and ``type_of_concept.txt`` (object/style, when known);
* ``README.md``, the model card (:mod:`tireg.registry.model_card`);
* ``concept_images/N.ext``: the embedding's previews that are files (beside its original, or
  kept under ``TIREG_HOME/previews``), numbered in the order they were recorded, then the grids
  of the validation runs that rendered it (``tireg validate``).

A re-publish compares every file with the repo's copy by content hash and commits only what is
new or changed, plus the deletion of ``concept_images/`` files that are no longer previews (that
folder mirrors the catalogue's previews and grids); when nothing changed, nothing is committed.
The catalogue is only read.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from tireg.converters import encode
from tireg.converters.layouts import is_pair
from tireg.db.schema import EmbeddingRow, SourceRow
from tireg.db.session import Catalogue
from tireg.registry import naming
from tireg.registry.importer import CONCEPT_IMAGES, PICTURE_EXTENSIONS
from tireg.registry.model_card import SAFETENSORS_NAME, CardFacts, render
from tireg.registry.model_refs import name_hash
from tireg.registry.store import ContentStore
from tireg.registry.validations import runs_of_embedding
from tireg.sources import SourceError, hf, hf_upload

SAFETENSORS = SAFETENSORS_NAME
BIN = "learned_embeds.bin"


@dataclass
class PublishReport:
    """What one ``tireg publish`` sent: the commit (None when nothing changed) and its files."""

    name: str
    repo_id: str
    url: str
    commit: str | None = None
    uploaded: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    #: previews left out: URLs (never downloaded here) and files that are gone
    skipped_previews: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _sources(row: EmbeddingRow) -> list[SourceRow]:
    return [p.source for p in sorted(row.provenance, key=lambda p: p.id) if p.source is not None]


def _first(*values: str | None) -> str | None:
    return next((v for v in values if v), None)


def card_facts(session: Session, row: EmbeddingRow, repo_id: str) -> CardFacts:
    """The card's facts: the embedding's own, else the first source that recorded one."""
    sources = _sources(row)
    training = (("training steps", str(row.step)),) if row.step is not None else ()
    return CardFacts(
        repo_id=repo_id,
        token=row.name,
        family=row.family,
        num_vectors=row.num_vectors,
        widths=row.widths,
        vectors_sha256=row.vectors_sha256,
        concept_type=concept_type(row),
        description=_first(row.description, *(s.description for s in sources)),
        licence=_first(row.licence, *(s.licence for s in sources)),
        base_model_hint=_first(*(s.base_model_hint for s in sources)),
        trained_on_hash=row.trained_on_hash,
        trained_on_names=_trained_on_names(session, row),
        training=training,
        tags=tuple(sorted(t.tag for t in row.tags)),
    )


def _trained_on_names(session: Session, row: EmbeddingRow) -> tuple[str, ...]:
    """The trained-on model's name as the file recorded it, then those its hash is known by."""
    names = [row.trained_on_name] if row.trained_on_name else []
    if row.trained_on_hash:
        names += name_hash(session, row.trained_on_hash)
    return tuple(dict.fromkeys(names))


def concept_type(row: EmbeddingRow) -> str | None:
    """``object`` or ``style`` as recorded on the embedding or, failing that, by a source."""
    return _first(row.concept_type, *(s.concept_type for s in _sources(row)))


def _embedding_files(row: EmbeddingRow, store: ContentStore) -> dict[str, bytes]:
    """``learned_embeds.*`` with the trigger as the token (SDXL: one kohya-layout file)."""
    embedding = store.get(row.vectors_sha256).with_meta(name=row.name)
    if is_pair(embedding):
        return {SAFETENSORS: encode(embedding, "safetensors")[0]}
    return {
        SAFETENSORS: encode(embedding, "diffusers-safetensors")[0],
        BIN: encode(embedding, "diffusers-bin")[0],
    }


def _concept_images(session: Session, row: EmbeddingRow) -> tuple[dict[str, bytes], list[str]]:
    """The previews that are readable picture files, then the grids of the validation runs that
    rendered the embedding (oldest first, so numbers stay put as runs are added), and the
    locations left out."""
    images: dict[str, bytes] = {}
    skipped: list[str] = []
    previews = [p.location for p in sorted(row.previews, key=lambda p: p.id)]
    grids = [run.grid_path for run in reversed(runs_of_embedding(session, row.id))]
    for location in previews + grids:
        path = Path(location)
        suffix = path.suffix.lower()
        if "://" in location or suffix not in PICTURE_EXTENSIONS:
            skipped.append(location)
            continue
        try:
            data = path.read_bytes()
        except OSError:
            skipped.append(location)
            continue
        images[f"{CONCEPT_IMAGES}/{len(images)}{suffix}"] = data
    return images, skipped


def concept_repo_files(
    session: Session, row: EmbeddingRow, repo_id: str, *, store: ContentStore | None = None
) -> tuple[dict[str, bytes], list[str]]:
    """Every file of the concept repo for ``row`` (path -> bytes), and the previews left out."""
    files = _embedding_files(row, store if store is not None else ContentStore())
    files["token_identifier.txt"] = row.name.encode()
    kind = concept_type(row)
    if kind:
        files["type_of_concept.txt"] = kind.encode()
    files["README.md"] = render(card_facts(session, row, repo_id)).encode()
    images, skipped = _concept_images(session, row)
    files.update(images)
    return files, skipped


def publish(
    catalogue: Catalogue,
    spec: str,
    repo: str,
    *,
    private: bool = False,
    endpoint: str | None = None,
) -> PublishReport:
    """Create or update the concept repo ``repo`` (``OWNER/NAME``) for the embedding ``spec``.

    Only new or changed files are committed, in one commit; nothing at all when the repo
    already holds exactly these files.
    """
    # 1. What and where: a plain repo id on main, and a token, before any work.
    repo_id, revision = hf.parse_spec(repo)
    if revision is not None:
        raise SourceError(f"publish writes to main, not {revision!r}", hint="use --repo OWNER/NAME")
    hf_upload.require_login()
    # 2. The files, from one read of the catalogue.
    with catalogue.reading() as session:
        row = naming.resolve(session, spec)
        name = naming.ref_of(row)
        files, skipped = concept_repo_files(session, row, repo_id)
    # 3. The repo, created if new, and what it holds now.
    url = hf_upload.ensure_repo(repo_id, private=private, endpoint_url=endpoint)
    remote = hf_upload.remote_repo(repo_id, endpoint_url=endpoint)
    # 4. The difference: changed or new files; concept images no longer among the previews.
    held = remote.files
    changed = {p: data for p, data in files.items() if p not in held or not held[p].holds(data)}
    stale = sorted(p for p in held if p.startswith(f"{CONCEPT_IMAGES}/") and p not in files)
    report = PublishReport(
        name=name,
        repo_id=repo_id,
        url=url,
        uploaded=sorted(changed),
        deleted=stale,
        unchanged=sorted(set(files) - set(changed)),
        skipped_previews=skipped,
    )
    # 5. One commit, only when something differs, on top of the commit compared with.
    if changed or stale:
        report.commit = hf_upload.commit(
            repo_id,
            changed,
            stale,
            message=f"tireg publish {name}",
            parent=remote.sha,
            endpoint_url=endpoint,
        )
    return report
