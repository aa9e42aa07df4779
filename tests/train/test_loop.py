"""The training core on tiny random pipelines: what learns, what stays frozen, every family."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.generator.tiny import build
from tests.train.conftest import settings
from tireg.train.errors import InitTextError
from tireg.train.loop import Hooks, StepRecord, train
from tireg.train.model import from_pipeline
from tireg.train.vectors import init_vectors


def _weights(pipe) -> dict[str, torch.Tensor]:  # type: ignore[no-untyped-def]
    modules = {"unet": pipe.unet, "vae": pipe.vae, "text_encoder": pipe.text_encoder}
    if getattr(pipe, "text_encoder_2", None) is not None:
        modules["text_encoder_2"] = pipe.text_encoder_2
    return {
        f"{name}.{key}": value.detach().clone()
        for name, module in modules.items()
        for key, value in module.state_dict().items()
    }


def test_sd1_learns_the_concept_and_nothing_else_changes(concept: Path, tmp_path: Path) -> None:
    pipe = build("sd1", tmp_path / "parts")
    before = _weights(pipe)
    table = pipe.text_encoder.get_input_embeddings()
    model = from_pipeline(pipe)
    records: list[StepRecord] = []
    # DVAR's fixed batch (never stopping here: the window is longer than the run) measures the
    # loss without the noise of fresh draws
    run = settings(concept, steps=40, early_stop=True, early_stop_window=1000)
    start = init_vectors(pipe.tokenizer, table, "cat", 2).numpy()

    result = train(run, model, tmp_path / "run", hooks=Hooks(on_step=records.append))

    fixed = [r.fixed_batch_loss for r in records]
    assert result.step == 40 and result.stop_reason == "reached --steps 40"
    assert np.mean(fixed[-5:]) < np.mean(fixed[:5]) - 0.01, fixed
    assert not np.array_equal(result.vectors["clip_l"], start)  # the vectors moved
    after = _weights(pipe)
    assert before.keys() == after.keys()
    changed = [key for key in before if not torch.equal(before[key], after[key])]
    assert changed == []  # the token table (every row), UNet, VAE, encoder: bit-identical
    assert pipe.text_encoder.get_input_embeddings() is table  # the lookup is given back
    assert all(not p.requires_grad for p in pipe.unet.parameters())


def test_sd2_v_prediction_runs(concept: Path, tmp_path: Path) -> None:
    pipe = build("sd2", tmp_path / "parts")
    model = from_pipeline(pipe, prediction_type="v_prediction")
    assert model.family == "sd2" and model.prediction_type == "v_prediction"
    result = train(settings(concept, steps=3), model, tmp_path / "run")
    assert result.step == 3 and np.isfinite(result.loss)
    assert result.vectors["clip_h"].shape == (2, 1024)


def test_sdxl_trains_both_encoders(concept: Path, tmp_path: Path) -> None:
    pipe = build("sdxl", tmp_path / "parts")
    before = _weights(pipe)
    model = from_pipeline(pipe)
    start = {
        key: init_vectors(tok, enc.get_input_embeddings(), "cat", 2).numpy()
        for key, tok, enc in model.encoders
    }
    result = train(settings(concept, steps=3, flip=0.5, crop="random"), model, tmp_path / "run")
    assert result.step == 3 and np.isfinite(result.loss)
    assert {k: v.shape for k, v in result.vectors.items()} == {
        "clip_l": (2, 768),
        "clip_g": (2, 1280),
    }
    for key, vectors in result.vectors.items():
        assert not np.array_equal(vectors, start[key]), key
    after = _weights(pipe)
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize(
    ("options", "what"),
    [
        ({"latent_sampling": "random", "flip": 1.0}, "random latents, always flipped"),
        ({"grad_accum": 2, "batch_size": 2, "clip_grad": "norm:0.5"}, "accumulation, clipping"),
        ({"gradient_checkpointing": True, "clip_grad": "value:0.01"}, "checkpointing"),
    ],
)
def test_options_run(concept: Path, tmp_path: Path, options: dict, what: str) -> None:
    pipe = build("sd1", tmp_path / "parts")
    result = train(settings(concept, steps=2, **options), from_pipeline(pipe), tmp_path / "r")
    assert result.step == 2 and np.isfinite(result.loss), what


def test_init_vectors_follow_a1111(tmp_path: Path) -> None:
    pipe = build("sd1", tmp_path / "parts")
    table = pipe.text_encoder.get_input_embeddings()
    ids = pipe.tokenizer("cat dog", add_special_tokens=False)["input_ids"]
    assert len(ids) == 2
    vectors = init_vectors(pipe.tokenizer, table, "cat dog", 4)
    rows = table.weight.detach()[ids]
    # vector i copies token i * tokens // vectors: cat, cat, dog, dog
    for i, token in enumerate([0, 0, 1, 1]):
        assert torch.equal(vectors[i], rows[token])
    assert torch.count_nonzero(init_vectors(pipe.tokenizer, table, "", 3)) == 0
    with pytest.raises(InitTextError, match="more than the 1 vectors"):
        init_vectors(pipe.tokenizer, table, "cat dog", 1)


def test_clip_value_limits_every_gradient_entry(concept: Path, tmp_path: Path) -> None:
    """With clip value 0 no gradient survives, so the vectors stay where they started."""
    pipe = build("sd1", tmp_path / "parts")
    table = pipe.text_encoder.get_input_embeddings()
    start = init_vectors(pipe.tokenizer, table, "cat", 2).numpy()
    run = settings(concept, steps=2, clip_grad="value:0")
    result = train(run, from_pipeline(pipe), tmp_path / "r")
    np.testing.assert_array_equal(result.vectors["clip_l"], start)
