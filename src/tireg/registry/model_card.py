"""The README.md model card of a published concept repo, from the catalogue's facts.

The card is a pure function of :class:`CardFacts`, without dates or versions, so publishing an
unchanged embedding gives byte-identical text and the Hub sees no change. Facts the catalogue
lacks are left out rather than guessed. YAML front matter carries what the Hub indexes:
``license`` (an identifier; free text becomes ``other``), ``base_model`` (only a repo id the
catalogue recorded, since the Hub rejects anything else), and ``tags``. Values are written as
JSON strings, which are valid YAML scalars whatever characters they hold.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from tireg.converters.writing import safe_stem

FAMILY_NAMES = {"sd1": "Stable Diffusion 1.x", "sd2": "Stable Diffusion 2.x", "sdxl": "SDXL"}
#: the pipeline each family's diffusers example starts from when no base model repo is known
DEFAULT_PIPELINES = {
    "sd1": "stable-diffusion-v1-5/stable-diffusion-v1-5",
    "sd2": "stabilityai/stable-diffusion-2-1",
    "sdxl": "stabilityai/stable-diffusion-xl-base-1.0",
}
SAFETENSORS_NAME = "learned_embeds.safetensors"
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_LICENCE_ID = re.compile(r"^[a-z0-9][a-z0-9.+-]*$")


@dataclass(frozen=True)
class CardFacts:
    """What the catalogue knows about one embedding, as the card shows it."""

    repo_id: str
    token: str
    family: str
    num_vectors: int
    widths: str
    vectors_sha256: str
    concept_type: str | None = None
    description: str | None = None
    licence: str | None = None
    base_model_hint: str | None = None
    trained_on_hash: str | None = None
    trained_on_names: tuple[str, ...] = ()
    #: training settings as (label, value), in order: the catalogue's step today; a trainer's
    #: lineage record can add its own rows here
    training: tuple[tuple[str, str], ...] = ()
    tags: tuple[str, ...] = field(default_factory=tuple)

    @property
    def stem(self) -> str:
        """The file name (and so the prompt word) for A1111 and ComfyUI."""
        return safe_stem(self.token)

    @property
    def base_repo(self) -> str | None:
        hint = self.base_model_hint
        return hint if hint and _REPO_ID.match(hint) else None


def _yaml(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)


def _front_matter(facts: CardFacts) -> list[str]:
    lines = ["---"]
    if facts.licence:
        licence = facts.licence.strip().lower()
        lines.append(f"license: {_yaml(licence if _LICENCE_ID.match(licence) else 'other')}")
    if facts.base_repo:
        lines.append(f"base_model: {_yaml(facts.base_repo)}")
    lines.append("library_name: diffusers")
    lines.append("tags:")
    for tag in ("textual-inversion", "stable-diffusion", "tireg", *facts.tags):
        lines.append(f"- {_yaml(tag)}")
    lines.append("---")
    return lines


def _facts_table(facts: CardFacts) -> list[str]:
    family = FAMILY_NAMES.get(facts.family, facts.family)
    rows = [
        ("trigger", f"`{facts.token}`"),
        ("type of concept", facts.concept_type or ""),
        ("model family", f"{family} ({facts.widths})"),
        ("vectors", str(facts.num_vectors)),
        ("base model", facts.base_model_hint or ""),
        ("trained on", _trained_on(facts)),
        *facts.training,
        ("vectors sha256", f"`{facts.vectors_sha256}`"),
    ]
    lines = ["| fact | value |", "|---|---|"]
    lines += [f"| {label} | {value.replace('|', '/')} |" for label, value in rows if value]
    return lines


def _trained_on(facts: CardFacts) -> str:
    if facts.trained_on_hash is None:
        return ", ".join(facts.trained_on_names)
    names = f" ({', '.join(facts.trained_on_names)})" if facts.trained_on_names else ""
    return f"`{facts.trained_on_hash}`{names}"


def _licence(facts: CardFacts) -> list[str]:
    if facts.licence:
        return ["## Licence", "", facts.licence]
    return ["## Licence", "", "Not recorded in the catalogue: ask the author before reuse."]


def _prompt(facts: CardFacts) -> str:
    if facts.concept_type == "style":
        return f"a painting in the style of {facts.token}"
    return f"a photo of {facts.token}"


def _diffusers(facts: CardFacts) -> list[str]:
    base = facts.base_repo or DEFAULT_PIPELINES.get(facts.family, DEFAULT_PIPELINES["sd1"])
    load = [f'pipe.load_textual_inversion("{facts.repo_id}")']
    imports = []
    if facts.family == "sdxl":
        imports = [
            "from huggingface_hub import hf_hub_download",
            "from safetensors.torch import load_file",
        ]
        token = _yaml(facts.token)
        load = [
            f'state = load_file(hf_hub_download("{facts.repo_id}", "{SAFETENSORS_NAME}"))',
            f'pipe.load_textual_inversion(state["clip_l"], token={token},',
            "    text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer)",
            f'pipe.load_textual_inversion(state["clip_g"], token={token},',
            "    text_encoder=pipe.text_encoder_2, tokenizer=pipe.tokenizer_2)",
        ]
    return [
        "```python",
        "import torch",
        "from diffusers import AutoPipelineForText2Image",
        *imports,
        "",
        f'pipe = AutoPipelineForText2Image.from_pretrained("{base}", torch_dtype=torch.float16)',
        'pipe.to("cuda")',
        *load,
        f"image = pipe({_yaml(_prompt(facts))}).images[0]",
        "```",
    ]


def _usage(facts: CardFacts) -> list[str]:
    stem = facts.stem
    older = (
        "" if facts.family == "sdxl" else " (`learned_embeds.bin` is the same for older loaders)"
    )
    return [
        "## Usage",
        "",
        "### AUTOMATIC1111 / Forge",
        "",
        f"Save `{SAFETENSORS_NAME}`{older} as `embeddings/{stem}.safetensors`."
        f" The file name is the prompt word: write `{stem}` in a prompt.",
        "",
        "### ComfyUI",
        "",
        f"Save it as `models/embeddings/{stem}.safetensors` and write `embedding:{stem}`"
        " in a prompt.",
        "",
        "### diffusers",
        "",
        *_diffusers(facts),
    ]


def render(facts: CardFacts) -> str:
    """The whole README.md: front matter, what the embedding is, licence, and usage."""
    lines = [
        *_front_matter(facts),
        f"# `{facts.token}`",  # in backticks: a bare <token> would be read as an HTML tag
        "",
        "A textual-inversion embedding, published from the tireg catalogue.",
        "",
    ]
    if facts.description:
        lines += [facts.description.strip(), ""]
    lines += [*_facts_table(facts), "", *_licence(facts), "", *_usage(facts)]
    return "\n".join(lines) + "\n"
