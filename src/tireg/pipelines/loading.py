"""Load any checkpoint a user has into a diffusers pipeline, without a byte from the network.

Inputs: a single-file ``.safetensors`` or ``.ckpt`` (SD 1.x, SD 2.x 512-base or 768-v, SDXL base)
or a diffusers folder. The family comes from :mod:`tireg.checkpoints.detect` (the header only);
the hashes from :mod:`tireg.checkpoints.hash_cache`, so every image can name its model.

Why not plain ``from_single_file``: without ``config`` it fetches a config repo from the Hub, and
with ``local_files_only=True`` and an empty cache it still does (diffusers #8752; generator-
trainer.md §1.2). So tireg passes ``config=`` one of the folders shipped in ``configs/``, hands
over tokenizers built from a packaged vocabulary (:mod:`tireg.pipelines.tokenizers`), and turns
huggingface_hub's offline switch on around the load, so a missed case fails instead of calling
out. ``.ckpt`` files are first rewritten as safetensors by tireg's allow-list unpickler
(:mod:`tireg.pipelines.pickled`): diffusers would ``torch.load`` them.

SD 2.x files are all mapped to the 768-v config by diffusers (§1.4); tireg decides, in order:
an explicit ``prediction_type=``; the A1111 convention of a ``<stem>.yaml`` beside the checkpoint
(``parameterization: "v"``); else A1111's own test on the UNet (:mod:`tireg.pipelines.prediction`).
"""

from __future__ import annotations

import contextlib
import json
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from tireg.checkpoints.detect import FAMILY_LABELS, SD1, SD2, SDXL, Detection, detect_family
from tireg.checkpoints.hash_cache import HashCache
from tireg.pipelines import pickled, prediction, tokenizers
from tireg.pipelines.errors import PipelineError, UnsupportedModelError, is_out_of_memory
from tireg.pipelines.prediction import EPSILON, V_PREDICTION

PREDICTION_TYPES = (EPSILON, V_PREDICTION)
DTYPES = ("auto", "fp32", "fp16", "bf16")
DEVICES = ("auto", "cuda", "mps", "cpu")
_PIPELINES = {SD1: "StableDiffusionPipeline", SD2: "StableDiffusionPipeline"}
_PIPELINES[SDXL] = "StableDiffusionXLPipeline"


@dataclass(frozen=True)
class LoadedModel:
    """A pipeline ready to render, and what it was loaded from (for infotext and evidence)."""

    pipe: Any  # StableDiffusionPipeline | StableDiffusionXLPipeline
    family: str  # "sd1" | "sd2" | "sdxl"
    prediction_type: str  # "epsilon" | "v_prediction"
    path: Path
    name: str  # file stem or folder name
    sha256: str | None  # None for a diffusers folder (no single file to hash)
    autov2: str | None
    old_hash: str | None


def config_dir(name: str, root: Path | None = None) -> Path:
    """A diffusers-layout config folder: ``sd1``, ``sd2-base``, ``sd2-v`` or ``sdxl``, from
    ``root`` when given, else the one shipped in the package."""
    base = root if root is not None else Path(str(resources.files("tireg.pipelines") / "configs"))
    folder = base / name
    if not (folder / "model_index.json").is_file():
        raise PipelineError(f"no pipeline config {name!r}", path=base)
    return folder


def pick_device(requested: str = "auto") -> str:
    """``cuda``, then ``mps``, then ``cpu`` for ``auto``; an explicit device must exist."""
    import torch

    if requested not in DEVICES:
        raise PipelineError(
            f"unknown device {requested!r}", hint=f"use one of {', '.join(DEVICES)}"
        )
    available = {
        "cuda": torch.cuda.is_available(),
        "mps": bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available(),
        "cpu": True,
    }
    if requested == "auto":
        return next(name for name, ok in available.items() if ok)
    if not available[requested]:
        raise PipelineError(f"device {requested!r} is not available here", hint="use --device cpu")
    return requested


def torch_dtype(name: str, device: str) -> Any:
    """The torch dtype for ``--dtype``: ``auto`` is fp16 on a GPU, fp32 on the CPU."""
    import torch

    if name not in DTYPES:
        raise PipelineError(f"unknown dtype {name!r}", hint=f"use one of {', '.join(DTYPES)}")
    if name == "auto":
        name = "fp32" if device == "cpu" else "fp16"
    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[name]


@contextlib.contextmanager
def offline() -> Iterator[None]:
    """huggingface_hub's offline mode for the duration of a load.

    The Hub client reads ``HF_HUB_OFFLINE`` once, at import, into ``constants.HF_HUB_OFFLINE``;
    both are set here and restored afterwards, so any request diffusers or transformers might
    still try raises ``OfflineModeIsEnabled`` instead of reaching the network."""
    from huggingface_hub import constants

    saved_env, saved_flag = os.environ.get("HF_HUB_OFFLINE"), constants.HF_HUB_OFFLINE
    os.environ["HF_HUB_OFFLINE"] = "1"
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = saved_flag
        if saved_env is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = saved_env


@contextlib.contextmanager
def _quiet_loading(bars: bool) -> Iterator[None]:
    """diffusers' and transformers' loading bars on or off for the duration of a load, and
    diffusers' notice that ``torch_dtype`` is deprecated silenced: tireg passes ``torch_dtype``
    because ``dtype`` is accepted only by recent releases (diffusers PR #14205, July 2026) and
    pyproject allows diffusers from 0.30. transformers logs errors only meanwhile: importing a
    diffusers pipeline class makes transformers 5 warn on stderr that torchvision is missing
    for image processors tireg never uses, which would break "one line on stderr"."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    modules = [m for m in (diffusers_logging, transformers_logging) if m.is_progress_bar_enabled()]
    if not bars:
        for module in modules:
            module.disable_progress_bar()
    verbosity = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", ".*torch_dtype.* is deprecated", FutureWarning)
            yield
    finally:
        transformers_logging.set_verbosity(verbosity)
        for module in modules:
            module.enable_progress_bar()


@contextlib.contextmanager
def _one_line_errors(path: Path, family: str) -> Iterator[None]:
    """What diffusers, transformers or torch raise on a damaged or odd checkpoint, as one line.

    Our own errors (``TiregError``) pass through; anything else keeps its traceback."""
    from diffusers.loaders.single_file_utils import SingleFileComponentError

    try:
        yield
    except (
        OSError,
        ValueError,
        RuntimeError,
        MemoryError,
        KeyError,
        IndexError,
        SingleFileComponentError,
    ) as exc:
        if is_out_of_memory(exc):
            raise PipelineError(
                "out of memory while loading the model", path=path, hint="use --dtype fp16 or bf16"
            ) from exc
        detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise PipelineError(
            f"cannot load as {FAMILY_LABELS.get(family, family)} pipeline: {detail}",
            path=path,
            hint="the file may be damaged or a variant tireg does not know",
        ) from exc


def _supported(path: Path) -> Detection:
    """The checkpoint's family, or one line saying why tireg cannot render with it."""
    detection = detect_family(path)
    if not detection.supported:
        raise UnsupportedModelError(
            f"not a model tireg renders with: {detection.label} ({detection.evidence})",
            path=path,
            hint="give an SD 1.x, SD 2.x or SDXL base checkpoint or diffusers folder",
        )
    return detection


def _check_prediction_type(value: str | None) -> None:
    if value is not None and value not in PREDICTION_TYPES:
        raise PipelineError(
            f"unknown prediction type {value!r}", hint=f"use {' or '.join(PREDICTION_TYPES)}"
        )


def _pipeline_class(family: str) -> Any:
    import diffusers

    return getattr(diffusers, _PIPELINES[family])


def _load_folder(folder: Path, family: str, dtype: Any) -> Any:
    """A diffusers folder, from its own files only; the safety checker is never loaded."""
    extra: dict[str, Any] = {}
    if family != SDXL:
        extra = {"safety_checker": None, "feature_extractor": None}
        extra["requires_safety_checker"] = False
    return _pipeline_class(family).from_pretrained(
        str(folder), local_files_only=True, torch_dtype=dtype, **extra
    )


def _load_single_file(
    weights: Path, family: str, wanted: str | None, dtype: Any, root: Path | None
) -> Any:
    """A single file through the shipped configs and cached tokenizers.

    1. SD 2.x: settle the prediction type first, since it picks the config (512-base or 768-v);
       without an explicit answer the UNet is built alone and A1111's test runs on it, and the
       same UNet then goes into the pipeline (loaded once).
    2. Build the pipeline from the file, giving it our tokenizers (and that UNet)."""
    components: dict[str, Any] = {"tokenizer": tokenizers.load_tokenizer(family, 1)}
    if family == SDXL:
        components["tokenizer_2"] = tokenizers.load_tokenizer(family, 2)
        config = config_dir("sdxl", root)
    elif family == SD1:
        config = config_dir("sd1", root)
    else:
        # 1.
        unet = None
        if wanted is None:
            unet = prediction.load_unet(weights, config_dir("sd2-base", root))
            wanted = prediction.a1111_v_test(unet)
        config = config_dir("sd2-v" if wanted == V_PREDICTION else "sd2-base", root)
        if unet is not None:
            # 512-base and 768-v share the architecture; only the default size differs
            unet_config = json.loads((config / "unet" / "config.json").read_text(encoding="utf-8"))
            unet.register_to_config(sample_size=unet_config["sample_size"])
            components["unet"] = unet.to(dtype)
    # 2.
    return _pipeline_class(family).from_single_file(
        str(weights), config=str(config), local_files_only=True, torch_dtype=dtype, **components
    )


def _scheduler_prediction(pipe: Any, wanted: str | None) -> str:
    """Make the scheduler predict ``wanted`` (when given) and return what it predicts."""
    current = str(pipe.scheduler.config.get("prediction_type", EPSILON))
    if wanted is None or wanted == current:
        return current
    pipe.scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config, prediction_type=wanted)
    return wanted


def _folder_family(folder: Path, detection: Detection) -> str:
    """A folder's family, checked against its pipeline class (a refiner folder says SDXL)."""
    index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
    expected = _PIPELINES[detection.family]
    if index.get("_class_name") != expected:
        raise UnsupportedModelError(
            f"diffusers pipeline {index.get('_class_name')!r} is not a {expected}", path=folder
        )
    return detection.family


def load_model(
    path: Path,
    *,
    device: str = "cpu",
    dtype: str = "fp32",
    prediction_type: str | None = None,
    progress: bool = False,
    configs: Path | None = None,
) -> LoadedModel:
    """Load ``path`` (single file or diffusers folder) onto ``device``, fully offline.

    ``prediction_type`` (``epsilon``/``v_prediction``) overrides what the files say: the
    ``.yaml`` beside a single file, A1111's SD 2.x test, a folder's scheduler config.
    ``progress`` shows the loading bars and turns the pipeline's own per-step bar on.
    ``configs`` replaces the shipped config folders with a folder laid out like them (``sd1``,
    ``sd2-base``, ``sd2-v``, ``sdxl``), for a single file whose architecture differs from the
    published one (a pruned or tiny model).

    Steps: 1. check the arguments and the family (header only); 2. hash (cached); 3. load under
    offline mode; 4. set the prediction type, move to the device."""
    # 1.
    path = Path(path).expanduser()
    if not path.exists():
        raise PipelineError("no such checkpoint file or folder", path=path)
    _check_prediction_type(prediction_type)
    device = pick_device(device)
    dtype_obj = torch_dtype(dtype, device)
    detection = _supported(path)
    # 2.
    sha256 = autov2 = old_hash = None
    if path.is_file():
        with HashCache() as cache:
            hashes = cache.hashes(path).hashes
        sha256, autov2, old_hash = hashes.sha256, hashes.autov2, hashes.old_hash
    # 3.
    with offline(), _quiet_loading(progress), _one_line_errors(path, detection.family):
        if path.is_dir():
            family = _folder_family(path, detection)
            pipe = _load_folder(path, family, dtype_obj)
            wanted = prediction_type
        else:
            family = detection.family
            weights = pickled.as_safetensors(path, sha256) if pickled.is_pickle(path) else path
            wanted = prediction_type or prediction.from_yaml(path.with_suffix(".yaml"))
            pipe = _load_single_file(weights, family, wanted, dtype_obj, configs)
    # 4.
    kind = _scheduler_prediction(pipe, wanted)
    with _one_line_errors(path, family):
        pipe.to(device)
    pipe.set_progress_bar_config(disable=not progress)
    return LoadedModel(
        pipe=pipe,
        family=family,
        prediction_type=kind,
        path=path,
        name=path.name if path.is_dir() else path.stem,
        sha256=sha256,
        autov2=autov2,
        old_hash=old_hash,
    )
