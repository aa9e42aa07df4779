"""The pure verdict rule, fact by fact (no catalogue needed)."""

from __future__ import annotations

import pytest

from tireg.registry.compat import Fact, judge
from tireg.registry.model_refs import ModelFile, ModelRef

SD1_FILE = ModelFile(
    name="m", family="sd1", old_hash="0badc0de", sha256="ab" * 32, autov2="abababab" + "ab"
)


def _model(family: str = "sd1", *files: ModelFile) -> ModelRef:
    return ModelRef("spec", "m", family, files or (SD1_FILE,))


def _family(family: str) -> Fact:
    return Fact("family", family, "vector widths")


@pytest.mark.parametrize(
    ("family", "model_family", "relation", "works"),
    [
        ("sd1", "sd1", "same_family", True),
        ("sd2", "sd2", "same_family", True),
        ("sdxl", "sdxl", "same_family", True),
        ("sd1", "sdxl", "sd1_on_sdxl", False),
        ("sd1", "sd2", "wrong_family", False),
        ("sd2", "sd1", "wrong_family", False),
        ("sdxl", "sd1", "wrong_family", False),
        ("sd2", "sdxl", "wrong_family", False),
        ("sd1", "flux", "wrong_family", False),
        ("sdxl", "sd3", "wrong_family", False),
        ("sd1", "sdxl_refiner", "wrong_family", False),
        ("unknown", "sd1", "unknown", False),
        ("sd1", "unknown", "unknown", False),
    ],
)
def test_family_pairs(family: str, model_family: str, relation: str, works: bool) -> None:
    result = judge(family, [_family(family)], _model(model_family))
    assert (result.relation, result.works) == (relation, works)
    assert result.cannot_work == (relation in ("wrong_family", "sd1_on_sdxl"))


@pytest.mark.parametrize(
    ("recorded", "how"),
    [
        ("0BADC0DE", "old A1111 hash"),
        ("ababababab", "autov2"),
        ("ab" * 32, "sha256"),
        ("abababababab", "sha256 prefix"),
    ],
)
def test_each_hash_form_is_exact(recorded: str, how: str) -> None:
    facts = [Fact("trained_on", recorded, "a1111 sd_checkpoint"), _family("sd1")]
    result = judge("sd1", facts, _model())
    assert result.relation == "exact" and how in result.reason


def test_a_different_hash_is_not_exact() -> None:
    facts = [Fact("trained_on", "12345678", "a1111 sd_checkpoint")]
    assert judge("sd1", facts, _model()).relation == "same_family"


def test_validated_on_this_model() -> None:
    facts = [Fact("validated", "ab" * 32, "tireg validate 2025-01-01")]
    result = judge("sd1", facts, _model())
    assert result.relation == "validated" and result.works
    assert result.reason == "validated on this model (tireg validate 2025-01-01)"


def test_validated_outranks_trained_on() -> None:
    """A picture rendered on this very model beats the hash A1111 recorded, whatever the order
    the facts come in."""
    facts = [
        Fact("trained_on", "0badc0de", "a1111 sd_checkpoint"),
        Fact("validated", "ab" * 32, "tireg validate"),
    ]
    result = judge("sd1", facts, _model())
    assert result.relation == "validated"
    assert result.evidence[0].startswith("validated on " + "ab" * 32)


def test_validated_on_another_model_is_not_this_one() -> None:
    facts = [Fact("validated", "cd" * 32, "tireg validate")]
    assert judge("sd1", facts, _model()).relation == "same_family"


def test_evidence_names_recorded_hashes() -> None:
    facts = [Fact("trained_on", "7460a6fa", "a1111 sd_checkpoint")]
    result = judge("sd1", facts, _model(), {"7460a6fa": ["Stable Diffusion 1.4"]})
    assert (
        "trained on 7460a6fa (a1111 sd_checkpoint): probably Stable Diffusion 1.4"
        in result.evidence
    )
