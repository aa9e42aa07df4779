"""Will this embedding work on that model? Verdicts with their evidence.

An embedding carries compatibility *facts* (``compat`` rows, written at import): the hash A1111
recorded as ``sd_checkpoint`` ("trained_on"), a base model a source names ("base_model_hint",
from Civitai or rentry), its family from its vector widths ("family"), and later validation
runs ("validated"); :func:`implied_facts` is the one rule that makes the first three, both when
the importer records them and when a verdict fills in what a source learnt later. A model is
named by a path, a hash or a name (:mod:`tireg.registry.model_refs`); the verdict, decided by
:func:`judge` from the facts alone:

* ``validated`` — ``tireg validate`` rendered it on this very model (a recorded SHA-256):
  the strongest evidence there is, ranked above every other fact.
* ``exact`` — a recorded hash identifies this model: 8 hex against its old A1111 hash
  ("probably": old hashes collide), 10 hex against its AutoV2, 64 hex or a prefix against its
  SHA-256. An old-hash match whose families disagree is ignored as a collision.
* ``same_family`` — works; results may differ from the model it was trained on.
* ``sd1_on_sdxl`` — an SD 1.x embedding on SDXL: ComfyUI applies it to CLIP-L only (a 768-wide
  vector fits that encoder), A1111 skips it. Counted as not working.
* ``wrong_family`` — 768 vs 1024 and the like: the UI skips it; or a model family (SD3, Flux...)
  that SD textual-inversion embeddings do not apply to.
* ``unknown`` — the embedding's or the model's family is not known.

``works`` is True only for ``validated``, ``exact`` and ``same_family``;
:attr:`Verdict.cannot_work` is True for the two relations a UI is known to skip (what
``install --model`` and ``validate`` refuse without ``--force``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from tireg.checkpoints import FAMILY_LABELS, SUPPORTED_FAMILIES
from tireg.checkpoints.known_models import OLD_HASH
from tireg.db.schema import CompatRow, EmbeddingRow, ProvenanceRow, SourceRow
from tireg.db.session import Catalogue
from tireg.progress import Advance
from tireg.registry.model_refs import ModelFile, ModelRef, names_for_hash, resolve_model, user_files
from tireg.registry.naming import refs, resolve_many

EXACT, SAME_FAMILY, WRONG_FAMILY, SD1_ON_SDXL, UNKNOWN = (
    "exact",
    "same_family",
    "wrong_family",
    "sd1_on_sdxl",
    "unknown",
)

TRAINED_ON, BASE_MODEL_HINT, FAMILY, VALIDATED = (
    "trained_on",
    "base_model_hint",
    "family",
    "validated",
)
#: fact relations whose model_ref may identify a model by hash
_IDENTIFYING = (TRAINED_ON, BASE_MODEL_HINT, VALIDATED)
#: verdicts, strongest first ("validated" is both a fact and the verdict it gives)
RELATIONS = (VALIDATED, EXACT, SAME_FAMILY, SD1_ON_SDXL, WRONG_FAMILY, UNKNOWN)

_WIDTHS = {"sd1": "768", "sd2": "1024", "sdxl": "768 + 1280", "sdxl_refiner": "1280"}


@dataclass(frozen=True)
class Verdict:
    """Whether an embedding works on a model, why, and the facts behind it."""

    relation: str  # validated | exact | same_family | wrong_family | sd1_on_sdxl | unknown
    works: bool
    reason: str
    evidence: list[str] = field(default_factory=list)

    @property
    def cannot_work(self) -> bool:
        """True where a UI is known to skip the embedding (wrong family, SD 1.x on SDXL)."""
        return self.relation in (WRONG_FAMILY, SD1_ON_SDXL)

    def to_dict(self) -> dict[str, Any]:
        return {
            "relation": self.relation,
            "works": self.works,
            "cannot_work": self.cannot_work,
            "reason": self.reason,
            "evidence": self.evidence,
        }


class Fact(NamedTuple):
    """One compatibility fact about an embedding: a ``compat`` row, or one implied by its data.

    A tuple, so a fact compares equal to the ``(relation, model_ref, evidence)`` row it is
    stored as: the importer skips the facts a row already has by comparing the two."""

    relation: str
    model_ref: str
    evidence: str


def implied_facts(
    family: str, trained_on_hash: str | None = None, base_models: Iterable[tuple[str, str]] = ()
) -> list[Fact]:
    """The facts an embedding's own data implies, in the order they are recorded: its family
    from its vector widths, the checkpoint hash A1111 recorded (``sd_checkpoint``, lower-cased
    as every hash is compared), and each ``(base model, evidence)`` a source names.

    The one rule for them: the importer records these as ``compat`` rows, and a verdict adds
    them again from the columns, so a base model a source learnt after the import counts too."""
    facts = [Fact(FAMILY, family, "vector widths")]
    if trained_on_hash:
        facts.append(Fact(TRAINED_ON, trained_on_hash.lower(), "a1111 sd_checkpoint"))
    facts += [Fact(BASE_MODEL_HINT, hint, evidence) for hint, evidence in base_models if hint]
    return facts


def _dedupe(facts: Iterable[Fact]) -> list[Fact]:
    """One fact per (relation, model_ref): compat rows come first and keep their evidence."""
    seen: dict[tuple[str, str], Fact] = {}
    for fact in facts:
        seen.setdefault((fact.relation, fact.model_ref.lower()), fact)
    return list(seen.values())


def _source_hint(kind: str, hint: str) -> tuple[str, str]:
    """A source's base model hint as :func:`implied_facts` takes it."""
    return hint, f"{kind} source"


def embedding_facts(row: EmbeddingRow) -> list[Fact]:
    """Every compatibility fact the catalogue holds about one embedding."""
    hints = [
        _source_hint(p.source.kind, p.source.base_model_hint)
        for p in row.provenance
        if p.source is not None and p.source.base_model_hint
    ]
    recorded = [Fact(c.relation, c.model_ref, c.evidence) for c in row.compat]
    return _dedupe([*recorded, *implied_facts(row.family, row.trained_on_hash, hints)])


def _describe(fact: Fact, names: Mapping[str, Sequence[str]]) -> str:
    known = names.get(fact.model_ref.lower(), ())
    text = {
        TRAINED_ON: f"trained on {fact.model_ref}",
        BASE_MODEL_HINT: f"base model hint {fact.model_ref!r}",
        FAMILY: f"embedding family {FAMILY_LABELS.get(fact.model_ref, fact.model_ref)}",
        VALIDATED: f"validated on {fact.model_ref}",
    }.get(fact.relation, f"{fact.relation} {fact.model_ref}")
    text += f" ({fact.evidence})"
    if known:
        prefix = "probably " if len(fact.model_ref) == 8 else ""
        text += f": {prefix}{' or '.join(known)}"
    return text


def judge(
    family: str,
    facts: Sequence[Fact],
    model: ModelRef,
    names: Mapping[str, Sequence[str]] | None = None,
) -> Verdict:
    """The verdict for an embedding of ``family`` with ``facts`` on ``model`` (pure; ``names``
    only enriches the evidence with the models recorded hashes point at)."""
    names = names or {}
    # a validation run first: a picture rendered on this very model outranks every other fact
    facts = sorted(facts, key=lambda f: f.relation != VALIDATED)
    evidence = [_describe(f, names) for f in facts]
    evidence.append(
        f"model {model.name}: {model.label}" + (f" ({model.evidence})" if model.evidence else "")
    )
    if model.note:
        evidence.append(model.note)
    supported_pair = family in SUPPORTED_FAMILIES and model.family in SUPPORTED_FAMILIES
    for fact in facts:
        if fact.relation not in _IDENTIFYING or (hit := model.match(fact.model_ref)) is None:
            continue
        file, via = hit
        if supported_pair and family != model.family:
            evidence.append(
                f"{fact.model_ref} matches {file.name} by {via}, but the families differ: ignored"
            )
            continue
        if fact.relation == VALIDATED:
            return Verdict(VALIDATED, True, f"validated on this model ({fact.evidence})", evidence)
        how = {OLD_HASH: "old A1111 hash; probably, as old hashes collide"}.get(
            via, via.replace("_", " ")
        )
        return Verdict(EXACT, True, f"trained on this model ({how})", evidence)
    if family == UNKNOWN or model.family == UNKNOWN:
        which = "embedding's" if family == UNKNOWN else "model's"
        return Verdict(UNKNOWN, False, f"cannot tell: the {which} family is unknown", evidence)
    if model.family not in SUPPORTED_FAMILIES:
        return Verdict(
            WRONG_FAMILY,
            False,
            f"{model.label} models do not take SD textual-inversion embeddings "
            "(tireg serves SD 1.x, SD 2.x and SDXL)",
            evidence,
        )
    if family == model.family:
        reason = (
            f"same family ({model.label}): works; "
            "results may differ from the model it was trained on"
        )
        return Verdict(SAME_FAMILY, True, reason, evidence)
    if family == "sd1" and model.family == "sdxl":
        return Verdict(
            SD1_ON_SDXL,
            False,
            "SD 1.x embedding on SDXL: ComfyUI applies it to the CLIP-L encoder only; "
            "A1111 skips it",
            evidence,
        )
    return Verdict(
        WRONG_FAMILY,
        False,
        f"wrong family: {FAMILY_LABELS.get(family, family)} embedding (width "
        f"{_WIDTHS.get(family, '?')}) on {model.label} (width {_WIDTHS.get(model.family, '?')}); "
        "the UI skips it",
        evidence,
    )


def _verdict(row: EmbeddingRow, model: ModelRef, user: Sequence[ModelFile]) -> Verdict:
    facts = embedding_facts(row)
    names = {
        f.model_ref.lower(): names_for_hash(f.model_ref, user)
        for f in facts
        if f.relation in _IDENTIFYING
    }
    return judge(row.family, facts, model, names)


def verdict(session: Session, embedding_row: EmbeddingRow, model: ModelRef) -> Verdict:
    """:func:`judge` for a catalogued embedding, naming the models its recorded hashes mean."""
    return _verdict(embedding_row, model, user_files(session))


def compatible_embedding_ids(session: Session, model: ModelRef) -> set[int]:
    """Ids of every catalogued embedding whose verdict on ``model`` says it works."""
    recorded: dict[int, list[Fact]] = defaultdict(list)
    for emb_id, relation, ref, evidence in session.execute(
        select(CompatRow.embedding_id, CompatRow.relation, CompatRow.model_ref, CompatRow.evidence)
    ):
        recorded[emb_id].append(Fact(relation, ref, evidence))
    hints: dict[int, list[tuple[str, str]]] = defaultdict(list)
    for emb_id, kind, hint in session.execute(
        select(ProvenanceRow.embedding_id, SourceRow.kind, SourceRow.base_model_hint).join(
            SourceRow, ProvenanceRow.source_id == SourceRow.id
        )
    ):
        if hint:
            hints[emb_id].append(_source_hint(kind, hint))
    ids = set()
    for emb_id, family, trained_on in session.execute(
        select(EmbeddingRow.id, EmbeddingRow.family, EmbeddingRow.trained_on_hash)
    ):
        facts = _dedupe([*recorded[emb_id], *implied_facts(family, trained_on, hints[emb_id])])
        if judge(family, facts, model).works:
            ids.add(emb_id)
    return ids


@dataclass(frozen=True)
class CheckResult:
    """One embedding's verdict, for ``tireg check``."""

    embedding_id: int
    ref: str
    name: str
    family: str
    verdict: Verdict

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.embedding_id,
            "ref": self.ref,
            "name": self.name,
            "family": self.family,
            **self.verdict.to_dict(),
        }


def check(
    session: Session,
    model_spec: str,
    embedding_specs: Sequence[str] = (),
    *,
    progress: Advance | None = None,
) -> tuple[ModelRef, list[CheckResult]]:
    """``tireg check``: resolve the model, then judge each named embedding (all when none).
    ``progress(n)`` sees the bytes read when the model is a file not hashed before."""
    model = resolve_model(session, model_spec, progress=progress)
    user = user_files(session)
    if embedding_specs:
        rows = resolve_many(session, embedding_specs)
    else:
        rows = list(
            session.scalars(
                select(EmbeddingRow)
                .options(
                    selectinload(EmbeddingRow.compat),
                    selectinload(EmbeddingRow.provenance).selectinload(ProvenanceRow.source),
                )
                .order_by(EmbeddingRow.name, EmbeddingRow.id)
            )
        )
    names = refs(session, rows)
    results = [
        CheckResult(row.id, names[row.id], row.name, row.family, _verdict(row, model, user))
        for row in rows
    ]
    return model, results


def check_catalogue(
    catalogue: Catalogue,
    model_spec: str,
    embedding_specs: Sequence[str] = (),
    *,
    progress: Advance | None = None,
) -> tuple[ModelRef, list[CheckResult]]:
    """:func:`check` in a write transaction of its own: a model given as a file not seen before
    is hashed and recorded, so the next check names it without reading it again."""
    with catalogue.transaction() as session:
        return check(session, model_spec, embedding_specs, progress=progress)
