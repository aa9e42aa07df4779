"""Where each Stable Diffusion UI looks for embeddings, which file it reads best, and what to type.

Every UI takes the prompt word from the installed file's *name*, so the file stem is the trigger;
what differs is the folder, the characters a prompt can carry, and how the word is written:

=========  ==========================================  ===================  =====================
UI         folder under the UI root                    file                 typed in a prompt
=========  ==========================================  ===================  =====================
a1111      ``embeddings/``                             ``STEM.safetensors`` ``STEM``
forge      ``embeddings/``                             ``STEM.safetensors`` ``STEM``
comfyui    ``models/embeddings/``                      ``STEM.safetensors`` ``embedding:STEM``
invokeai   ``models/{sd-1,sd-2,sdxl}/embedding/``      ``STEM.safetensors`` ``<STEM>``
dir        the folder given with ``--to``              ``STEM.<format>``    ``STEM``
=========  ==========================================  ===================  =====================

Why safetensors everywhere: all four loaders read it without unpickling anything. SD 1.x/2.x
vectors go out as a single ``emb_params`` tensor (A1111's one-key "diffuser concept" branch,
ComfyUI's "first value" rule and InvokeAI's probe all accept it), SDXL as ``clip_l`` + ``clip_g``
(A1111 since its SDXL support, ComfyUI per tokenizer, InvokeAI's ``clip_g`` probe). A ``.pt``
would only add a pickle for the UI to load.

Why the stem is sanitised per UI: A1111 and Forge match the embedding name against the tokenised
prompt, so spaces are fine there; ComfyUI cuts the prompt into words at spaces before it sees
``embedding:``, so a space becomes ``_``; InvokeAI only recognises ``<...>`` triggers made of
``A-Z a-z 0-9 . , space _ -`` (``invokeai/app/util/ti_utils.py``,
``extract_ti_triggers_from_prompt``) and names a model by its file stem, so other ASCII
characters become ``_``, and a name with any non-ASCII character (``大猫板蓝根-100000``, which
would collapse to ``_____-100000`` and collide with every other such name) gets ``emb-`` and the
first 8 hex digits of the sha256 of its NFC form: stable across runs and machines, and shown by
``install`` and ``installed``. A trigger written ``<name>`` (sd-concepts-library style) loses
its brackets in the stem: InvokeAI adds them back in the prompt, the others never type them.

InvokeAI: v3 scanned ``models/<base>/embedding`` at startup; v4 removed ``autoimport`` and only
registers files it is told about, so after installing run "Scan Folder" on that folder once (with
"in place") or set ``scan_models_on_startup: true`` in ``invokeai.yaml``.
"""

from __future__ import annotations

import hashlib
import os
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from tireg.checkpoints import detect_family
from tireg.errors import TiregError
from tireg.paths import MAX_STEM_BYTES, safe_part
from tireg.prompt_words import unbracketed

#: the UIs tireg installs into; "dir" is a plain folder chosen with --to
UIS = ("a1111", "forge", "comfyui", "invokeai")
TARGETS = (*UIS, "dir")

#: the format every UI gets (see the module docstring for why)
UI_FORMAT = "safetensors"

#: file extensions a UI treats as an embedding, so another file with the same stem is a rival
EMBEDDING_EXTENSIONS = (".safetensors", ".pt", ".bin")

_LABELS = {"a1111": "A1111", "forge": "Forge", "comfyui": "ComfyUI", "invokeai": "InvokeAI"}
_INVOKEAI_BASE = {"sd1": "sd-1", "sd2": "sd-2", "sdxl": "sdxl"}
_UNSAFE_IN_FILE_NAMES = re.compile(r'[\x00-\x1f<>:"/\\|?*]')
_NOT_INVOKEAI_TRIGGER = re.compile(r"[^A-Za-z0-9., _-]")


class UiError(TiregError):
    """A UI root that cannot be found or used, or an embedding a UI cannot use."""


@dataclass(frozen=True)
class UiRoot:
    """A located UI install: which UI, and its root folder."""

    ui: str
    root: Path


def _looks_like(ui: str, root: Path) -> bool:
    """Whether ``root`` has the files or folders an install of ``ui`` always has."""
    if not root.is_dir():
        return False
    if ui in ("a1111", "forge"):
        return (root / "embeddings").is_dir() or (root / "webui.py").is_file()
    if ui == "comfyui":
        return (root / "models").is_dir() and (
            (root / "comfy").is_dir()
            or (root / "main.py").is_file()
            or (root / "models" / "embeddings").is_dir()
        )
    return (root / "invokeai.yaml").is_file() or (
        (root / "models").is_dir() and (root / "databases").is_dir()
    )


def candidate_roots(
    ui: str,
    *,
    cwd: Path | None = None,
    user_home: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> list[Path]:
    """The usual places ``ui`` is installed, most specific first (the cwd, then the home folder)."""
    here = cwd if cwd is not None else Path.cwd()
    home = user_home if user_home is not None else Path.home()
    environ = env if env is not None else os.environ
    names = {
        "a1111": ["stable-diffusion-webui"],
        "forge": ["stable-diffusion-webui-forge", "webui_forge", "stable-diffusion-webui"],
        "comfyui": ["ComfyUI", "comfyui"],
        "invokeai": ["invokeai", "InvokeAI"],
    }[ui]
    found: list[Path] = []
    if ui == "invokeai" and environ.get("INVOKEAI_ROOT"):
        found.append(Path(environ["INVOKEAI_ROOT"]).expanduser())
    found.append(here)
    found += [here / name for name in names]
    found += [home / name for name in names]
    if ui == "comfyui":
        found.append(home / "Documents" / "ComfyUI")  # ComfyUI Desktop's default base path
    return list(dict.fromkeys(found))


def locate(
    ui: str,
    ui_root: str | os.PathLike[str] | None = None,
    *,
    cwd: Path | None = None,
    user_home: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> UiRoot:
    """The root to install ``ui``'s embeddings under: ``ui_root`` if given, else the first found.

    A given root must look like the UI (so a typo never scatters files into a random folder);
    ``--to DIR`` is the way to write into any folder.
    """
    if ui not in UIS:
        raise UiError(f"unknown UI {ui!r}", hint=f"choose one of {', '.join(UIS)}")
    if ui_root is not None:
        root = Path(ui_root).expanduser()
        if not _looks_like(ui, root):
            raise UiError(
                f"no {_LABELS[ui]} install recognised here",
                path=root,
                hint="check --ui-root, or use --to DIR to write into any folder",
            )
        return UiRoot(ui, root.resolve())
    candidates = candidate_roots(ui, cwd=cwd, user_home=user_home, env=env)
    for root in candidates:
        if _looks_like(ui, root):
            return UiRoot(ui, root.resolve())
    looked = ", ".join(str(c) for c in candidates)
    raise UiError(
        f"no {_LABELS[ui]} install found (looked in {looked})", hint="pass --ui-root PATH"
    )


def embeddings_dir(target: UiRoot, family: str) -> Path:
    """The folder ``target``'s UI loads embeddings of ``family`` from.

    Refuses families the UI has no model for (an unknown width works nowhere; InvokeAI keeps one
    folder per base model).
    """
    if family not in _INVOKEAI_BASE:
        raise UiError(
            f"a {family} embedding works in no {target.ui} model",
            hint="use --to DIR to copy it somewhere anyway",
        )
    if target.ui in ("a1111", "forge"):
        return target.root / "embeddings"
    if target.ui == "comfyui":
        return target.root / "models" / "embeddings"
    return target.root / "models" / _INVOKEAI_BASE[family] / "embedding"


def file_stem(target: str, trigger: str) -> str:
    """The file stem that makes ``trigger`` the word typed in ``target``'s prompts.

    A ``<name>`` trigger loses its brackets; characters no file name can hold become ``_``; then
    the UI's own rule applies (see the module docstring). Raises when nothing usable is left.
    """
    name = unbracketed(trigger).strip()
    if target == "invokeai" and not name.isascii():
        digest = hashlib.sha256(unicodedata.normalize("NFC", name).encode()).hexdigest()
        name = f"emb-{digest[:8]}"
    name = _UNSAFE_IN_FILE_NAMES.sub("_", name).lstrip(".")
    if target == "comfyui":
        name = name.replace(" ", "_")
    elif target == "invokeai":
        name = _NOT_INVOKEAI_TRIGGER.sub("_", name)
    name = safe_part(name, max_bytes=MAX_STEM_BYTES)  # bidi, device names, length: one rule
    if not name.strip("_ "):
        raise UiError(f"the name {trigger!r} leaves no usable file name", hint="pass --as NEWNAME")
    return name


def prompt_word(target: str, stem: str) -> str:
    """What the user types in ``target``'s prompt to use the embedding installed as ``stem``."""
    if target == "comfyui":
        return f"embedding:{stem}"
    if target == "invokeai":
        return f"<{stem}>"
    return stem


#: where each UI keeps its checkpoints, relative to its root (InvokeAI sorts by base already)
CHECKPOINT_DIRS = {
    "a1111": ("models", "Stable-diffusion"),
    "forge": ("models", "Stable-diffusion"),
    "comfyui": ("models", "checkpoints"),
}


def checkpoint_families(target: UiRoot) -> dict[str, int]:
    """How many of the UI's ``.safetensors`` checkpoints are of each family (headers only).

    Lets an install refuse an embedding no checkpoint of the UI can use (an SDXL embedding
    where there are only SD 1.5 models). Files that cannot be read are left out; an empty
    answer means "unknown", never "nothing works".
    """
    parts = CHECKPOINT_DIRS.get(target.ui)
    folder = target.root.joinpath(*parts) if parts else None
    if folder is None or not folder.is_dir():
        return {}
    counts: dict[str, int] = {}
    for path in sorted(folder.rglob("*.safetensors")):
        try:
            family = detect_family(path).family
        except TiregError:
            continue
        counts[family] = counts.get(family, 0) + 1
    return counts


def rival_files(directory: Path, stem: str) -> list[Path]:
    """Embedding files in ``directory`` (recursively, as the UIs scan) whose stem equals ``stem``.

    A1111 and ComfyUI look an embedding up by stem whatever its extension, so ``x.pt`` next to a
    new ``x.safetensors`` would make ``x`` mean two things. Case is ignored (Windows, macOS).
    """
    if not directory.is_dir():
        return []
    wanted = stem.casefold()
    return sorted(
        path
        for path in directory.rglob("*")
        if path.suffix.lower() in EMBEDDING_EXTENSIONS
        and path.stem.casefold() == wanted
        and path.is_file()
    )
