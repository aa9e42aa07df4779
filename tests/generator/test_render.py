"""Rendering on tiny random SD 1.x, SD 2.x and SDXL pipelines: embeddings, seeds, batches, errors.

Images are compared bit for bit: the same seed must give the same pixels whatever the batch, and
an embedding must change the picture only where its word is in the prompt.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import numpy as np
import pytest

from tests.pipelines import build_sd_pipeline, build_sdxl_pipeline
from tireg.converters.embedding import Embedding
from tireg.pipelines.embeddings import embeddings_applied, encoder_slots
from tireg.pipelines.errors import RenderError, SamplerError
from tireg.pipelines.noise import seeded_noise
from tireg.pipelines.render import render, uses_sdpa

SIZE = {"width": 16, "height": 16, "steps": 2}


@pytest.fixture(scope="module")
def pipes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("pipes")
    built = {
        "sd1": build_sd_pipeline(root / "sd1", width=768),
        "sd2": build_sd_pipeline(root / "sd2", width=1024),
        "sdxl": build_sdxl_pipeline(root / "sdxl"),
    }
    for pipe in built.values():
        pipe.set_progress_bar_config(disable=True)
    return built


def _embedding(pipe: Any) -> Embedding:
    rng = np.random.default_rng(7)
    vectors = {
        slot.key: rng.standard_normal((2, slot.width), dtype=np.float32)
        for slot in encoder_slots(pipe)
    }
    return Embedding("birb", vectors)


def _pixels(images: list[Any]) -> list[np.ndarray]:
    return [np.asarray(image) for image in images]


def _equal(a: list[Any], b: list[Any]) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(_pixels(a), _pixels(b), strict=True))


@pytest.mark.parametrize(
    ("family", "sampler"), [("sd1", "Euler a"), ("sd2", "DDIM"), ("sdxl", "DPM++ 2M")]
)
def test_the_word_changes_the_image_only_where_the_prompt_uses_it(
    pipes: dict[str, Any], family: str, sampler: str
) -> None:
    pipe = pipes[family]
    kwargs = {"seeds": [11], "sampler": sampler, **SIZE}
    without_word = render(pipe, prompts=["a photo of a cat"], **kwargs)
    without_emb = render(pipe, prompts=["a photo of birb"], **kwargs)
    with embeddings_applied(pipe, [("birb", _embedding(pipe))]):
        with_emb = render(pipe, prompts=["a photo of birb"], **kwargs)
        unused = render(pipe, prompts=["a photo of a cat"], **kwargs)
    assert with_emb[0].size == (16, 16)
    assert not _equal(with_emb, without_emb)
    assert _equal(unused, without_word)


@pytest.mark.parametrize("sampler", ["Euler a", "DPM++ SDE"])
def test_seeds_reproduce_and_batches_give_the_same_images(
    pipes: dict[str, Any], sampler: str
) -> None:
    if sampler == "DPM++ SDE" and importlib.util.find_spec("torchsde") is None:
        pytest.skip("DPM++ SDE needs the optional torchsde package")
    pipe = pipes["sd1"]
    kwargs = {"prompts": ["a photo of a cat"], "negative": "blurry", "sampler": sampler, **SIZE}
    one_by_one = render(pipe, seeds=[5, 6, 7], batch_size=1, **kwargs)
    batched = render(pipe, seeds=[5, 6, 7], batch_size=2, **kwargs)
    assert _equal(one_by_one, batched)
    assert _equal(render(pipe, seeds=[6], **kwargs), one_by_one[1:2])
    first, second, _ = _pixels(one_by_one)
    assert not np.array_equal(first, second)


def test_one_prompt_per_seed(pipes: dict[str, Any]) -> None:
    pipe = pipes["sd1"]
    mixed = render(pipe, prompts=["a cat", "a dog"], seeds=[3, 3], batch_size=2, **SIZE)
    assert _equal(mixed[1:], render(pipe, prompts=["a dog"], seeds=[3], **SIZE))
    assert not _equal(mixed[:1], mixed[1:])


def test_cpu_rng_draws_one_generator_per_image_as_a1111() -> None:
    import torch

    shape = (4, 8, 8)
    noise = seeded_noise([100, 101], shape, rng="cpu")
    for i, seed in enumerate((100, 101)):
        g = torch.Generator("cpu").manual_seed(seed)
        assert torch.equal(noise.latents[i], torch.randn(shape, generator=g))
        # without ENSD the same generator continues into the step noise
        assert torch.equal(
            torch.randn(shape, generator=noise.generators[i]), torch.randn(shape, generator=g)
        )
    # an image's noise does not depend on the others in its batch
    assert torch.equal(seeded_noise([101], shape).latents[0], noise.latents[1])
    # with ENSD the step-noise generators restart at seed + ENSD
    delta = seeded_noise([100], shape, ensd=31337)
    assert torch.equal(delta.latents, noise.latents[:1])
    fresh = torch.Generator("cpu").manual_seed(100 + 31337)
    assert torch.equal(
        torch.randn(shape, generator=delta.generators[0]), torch.randn(shape, generator=fresh)
    )


def test_ensd_changes_ancestral_samplers_only(pipes: dict[str, Any]) -> None:
    pipe = pipes["sd1"]
    kwargs = {"prompts": ["a cat"], "seeds": [9], **SIZE}
    assert not _equal(
        render(pipe, sampler="Euler a", **kwargs),
        render(pipe, sampler="Euler a", ensd=31337, **kwargs),
    )
    assert _equal(
        render(pipe, sampler="Euler", **kwargs), render(pipe, sampler="Euler", ensd=31337, **kwargs)
    )


def test_progress_and_the_scheduler_is_put_back(pipes: dict[str, Any]) -> None:
    pipe = pipes["sd1"]
    original = pipe.scheduler
    calls: list[tuple[tuple[int, ...], int, int]] = []
    render(
        pipe,
        prompts=["a cat"],
        seeds=[1, 2, 3],
        batch_size=2,
        sampler="DPM++ 2M",
        progress=lambda images, step, steps: calls.append((images, step, steps)),
        **SIZE,
    )
    assert calls == [((0, 1), 1, 2), ((0, 1), 2, 2), ((2,), 1, 2), ((2,), 2, 2)]
    assert pipe.scheduler is original


def test_attention_runs_on_sdpa(pipes: dict[str, Any]) -> None:
    assert all(uses_sdpa(pipe) for pipe in pipes.values())


@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    [
        ({"width": 30, "height": 16}, RenderError, "30x16 is not a multiple of 8"),
        ({"seeds": []}, RenderError, "no seeds"),
        ({"prompts": ["a", "b"], "seeds": [1, 2, 3]}, RenderError, "2 prompts for 3 seeds"),
        ({"rng": "nv"}, RenderError, "unknown RNG source 'nv'"),
        ({"batch_size": 0}, RenderError, "batch size"),
        ({"steps": 0}, RenderError, "steps must be"),
        ({"sampler": "Euler b"}, SamplerError, "unknown sampler 'Euler b'"),
    ],
)
def test_bad_settings_are_one_line(
    pipes: dict[str, Any], kwargs: dict[str, Any], error: type[Exception], words: str
) -> None:
    call = {"prompts": ["a cat"], "seeds": [1], **SIZE, **kwargs}
    with pytest.raises(error) as err:
        render(pipes["sd1"], **call)
    assert words in str(err.value) and "\n" not in str(err.value)


def test_out_of_memory_names_the_settings_to_lower(pipes: dict[str, Any]) -> None:
    """CUDA's form (torch.OutOfMemoryError) is one line; any other RuntimeError is not taken
    for it. The CPU's form is met for real in tests/validate/test_bad_input.py."""
    import torch

    pipe = pipes["sd1"]
    raised: list[BaseException] = []

    def exhaust(*_args: Any) -> None:
        raise raised[-1]

    handle = pipe.unet.register_forward_pre_hook(exhaust)
    try:
        # what a CUDA allocation failure raises inside the UNet
        raised.append(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
        with pytest.raises(RenderError, match=r"lower --batch-size \(now 2\) or --size") as err:
            render(pipe, prompts=["a"], seeds=[1, 2], batch_size=2, **SIZE)
        assert "\n" not in str(err.value) and "--dtype bf16" in str(err.value)
        with pytest.raises(RenderError, match=r"lower --size \(now 16x16\), or use --dtype"):
            render(pipe, prompts=["a"], seeds=[1], **SIZE)
        raised.append(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
        with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
            render(pipe, prompts=["a"], seeds=[1], **SIZE)
    finally:
        handle.remove()


def test_long_prompts_render_in_chunks(pipes: dict[str, Any]) -> None:
    pipe = pipes["sdxl"]
    long_prompt = "a photo, " * 40 + "BREAK a cat"
    kwargs = {"negative": "blurry", "seeds": [4], "sampler": "Euler", **SIZE}
    long_image = render(pipe, prompts=[long_prompt], **kwargs)
    assert long_image[0].size == (16, 16)
    assert not _equal(long_image, render(pipe, prompts=["a photo"], **kwargs))
