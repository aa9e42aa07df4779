"""The infotext writer against A1111's rules, read back with a parser written from §4.4."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from tests.validate.a1111_parser import parse
from tireg.validate.infotext import Generation, quote, save_png

SHA = "0123456789abcdef" * 4


def _generation(**changes: object) -> Generation:
    values: dict[str, object] = {
        "prompt": "a photo of birb-style",
        "negative": "blurry, lowres",
        "steps": 20,
        "sampler": "DPM++ 2M",
        "schedule": "Karras",
        "cfg": 7,
        "seed": 1234,
        "width": 512,
        "height": 768,
        "model_hash": SHA,
        "model_name": "sd15-tiny",
        "embeddings": (("birb-style", "fe" * 32), ("odd: name, here", "ab" * 32)),
    }
    values.update(changes)
    return Generation(**values)  # type: ignore[arg-type]


def test_layout_order_and_quoting() -> None:
    text = _generation().infotext()
    prompt, negative, params = text.split("\n")
    assert prompt == "a photo of birb-style"
    assert negative == "Negative prompt: blurry, lowres"
    assert params == (
        "Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7.0, Seed: 1234, "
        f"Size: 512x768, Model hash: {SHA[:10]}, Model: sd15-tiny, RNG: CPU, "
        f'TI hashes: "birb-style: {"fe" * 6}, odd name here: {"ab" * 6}", Version: tireg 0.1.0'
    )


def test_optional_fields_follow_a1111() -> None:
    """Clip skip only above 1, ENSD only for samplers that use it, RNG only when not GPU, no
    negative line without a negative prompt, no TI hashes without embeddings."""
    plain = _generation(negative="", embeddings=(), rng="GPU", ensd=31337).infotext()
    assert "\n" not in plain.split("\n", 1)[1]
    assert all(k not in plain for k in ("Clip skip", "ENSD", "RNG", "TI hashes", "Negative"))
    extra = _generation(clip_skip=2, ensd=31337, uses_ensd=True).infotext()
    assert "Clip skip: 2, ENSD: 31337, RNG: CPU, TI hashes" in extra
    assert "Model hash" not in _generation(model_hash=None).infotext()


def test_quote_is_infotext_utils_quote() -> None:
    assert quote("DPM++ 2M") == "DPM++ 2M"
    assert quote("a, b") == '"a, b"'
    assert quote("x: y") == '"x: y"'
    assert quote('say "hi"\n') == '"say \\"hi\\"\\n"'
    assert quote("ünïcode, kept") == '"ünïcode, kept"'


def test_png_parameters_chunk_parses_back(tmp_path: Path) -> None:
    """Every field written into a PNG comes back through A1111's parser."""
    generation = _generation(clip_skip=2, negative='with "quotes": and, commas')
    path = tmp_path / "out.png"
    save_png(Image.new("RGB", (8, 8)), path, generation.infotext())
    with Image.open(path) as image:
        fields = parse(image.info["parameters"])
    assert fields["Prompt"] == generation.prompt
    assert fields["Negative prompt"] == generation.negative
    assert fields["Steps"] == "20"
    assert fields["Sampler"] == "DPM++ 2M"
    assert fields["Schedule type"] == "Karras"
    assert fields["CFG scale"] == "7.0"
    assert fields["Seed"] == "1234"
    assert (fields["Size-1"], fields["Size-2"]) == ("512", "768")
    assert fields["Model hash"] == SHA[:10]
    assert fields["Model"] == "sd15-tiny"
    assert fields["Clip skip"] == "2"
    assert fields["RNG"] == "CPU"
    assert fields["TI hashes"] == f"birb-style: {'fe' * 6}, odd name here: {'ab' * 6}"
    assert fields["Version"] == "tireg 0.1.0"
    assert not list(tmp_path.glob("*.tireg-tmp"))
