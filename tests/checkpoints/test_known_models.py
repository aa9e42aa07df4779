"""The shipped table of known checkpoints and the hash-matching rule."""

from __future__ import annotations

import re

import pytest

from tireg.checkpoints import hash_match, known_models, lookup_hash, lookup_name


def test_table_is_well_formed() -> None:
    rows = known_models()
    assert len(rows) > 50
    for row in rows:
        assert row.family in {"sd1", "sd2", "sdxl", "sdxl_refiner"}
        assert row.old_hash or row.sha256 or row.autov2
        assert row.old_hash is None or re.fullmatch("[0-9a-f]{8}", row.old_hash)
        assert row.sha256 is None or re.fullmatch("[0-9a-f]{64}", row.sha256)
        if row.sha256 and row.autov2:
            assert row.sha256.startswith(row.autov2)


@pytest.mark.parametrize(
    ("text", "name", "via"),
    [
        ("7460a6fa", "Stable Diffusion 1.4", "old_hash"),
        ("7460A6FA", "Stable Diffusion 1.4", "old_hash"),
        ("[e6e8e1fc]", "NovelAI anime, full, latest", "old_hash"),
        ("FE4EFFF1E1", "Stable Diffusion 1.4", "autov2"),
        (
            "fe4efff1e174c627256e44ec2991ba279b3816e364b49f9be2abc0b3ff3f8556",
            "Stable Diffusion 1.4",
            "sha256",
        ),
        ("fe4efff1e174", "Stable Diffusion 1.4", "sha256_prefix"),
        ("67AB2FD8EC", "Pony Diffusion V6 XL", "autov2"),
        ("6ce0161689", "Stable Diffusion 1.5 (EMA-only)", "autov2"),
    ],
)
def test_lookup_by_each_hash_form(text: str, name: str, via: str) -> None:
    matches = lookup_hash(text)
    assert [(m.model.name, m.via) for m in matches] == [(name, via)]
    assert matches[0].certain == (via != "old_hash")


def test_old_hash_collisions_return_every_candidate() -> None:
    names = {m.model.name for m in lookup_hash("ffa7b160")}
    assert names == {"BloodOrangeMix", "BloodOrangeMix (half)", "BloodNightOrangeMix"}
    assert not any(m.certain for m in lookup_hash("1400e684"))


def test_eight_hex_is_never_read_as_a_sha256_prefix() -> None:
    # "fe4efff1" starts SD 1.4's SHA-256 but is nobody's old hash
    assert lookup_hash("fe4efff1") == []


def test_not_hashes() -> None:
    assert lookup_hash("hello") == []
    assert lookup_hash("abc") == []  # too short to mean anything
    assert hash_match("zz", old_hash="7460a6fa", autov2=None, sha256=None) is None


def test_lookup_by_name() -> None:
    assert [m.old_hash for m in lookup_name("sd-v1-4.ckpt")] == ["7460a6fa"]
    assert {m.family for m in lookup_name("waifu diffusion 1.3")} == {"sd1"}
    assert lookup_name("") == []


def test_inspect_names_the_model_an_a1111_embedding_was_trained_on(corpus, tireg_cli) -> None:  # type: ignore[no-untyped-def]
    from tireg.checkpoints import describe_embedding

    record = describe_embedding(corpus / "a1111-gasai-yuno-16600.pt")
    assert record["trained_on"] == {
        "hash": "e6e8e1fc",
        "name": "model",
        "known": [{"name": "NovelAI anime, full, latest", "certain": False}],
    }
    untrained = describe_embedding(corpus / "a1111-gasai-yuno-1000.pt")
    assert untrained["trained_on"] == {"hash": None, "name": None}
    shown = tireg_cli("inspect", corpus / "a1111-gasai-yuno-16600.pt")
    assert "NovelAI anime, full, latest (probably)" in shown.stdout
