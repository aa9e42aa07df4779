"""A1111's infotext parser, written from reference generator-trainer.md §4.4
(``infotext_utils.parse_generation_parameters``), to read back what tireg writes.

Kept apart from tireg's writer on purpose: a test that parsed with the writer's own rules would
pass whatever the writer did.
"""

from __future__ import annotations

import json
import re

RE_PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
RE_SIZE = re.compile(r"^(\d+)x(\d+)$")
#: what A1111 assumes for a field the infotext leaves out
DEFAULTS = {"Clip skip": "1", "RNG": "GPU", "Schedule type": "Automatic"}


def unquote(text: str) -> str:
    if len(text) < 2 or text[0] != '"' or text[-1] != '"':
        return text
    try:
        return str(json.loads(text))
    except ValueError:
        return text


def parse(text: str) -> dict[str, str]:
    """Prompt, negative prompt and every ``key: value`` of the last line (sizes split in two)."""
    *lines, last = text.strip().split("\n")
    if len(RE_PARAM.findall(last)) < 3:
        lines.append(last)
        last = ""
    prompt: list[str] = []
    negative: list[str] = []
    in_negative = False
    for line in lines:
        line = line.strip()
        if line.startswith("Negative prompt:"):
            in_negative = True
            line = line[len("Negative prompt:") :].strip()
        (negative if in_negative else prompt).append(line)
    result = {"Prompt": "\n".join(prompt), "Negative prompt": "\n".join(negative)}
    for key, value in RE_PARAM.findall(last):
        value = unquote(value)
        size = RE_SIZE.match(value)
        if size:
            result[f"{key}-1"], result[f"{key}-2"] = size[1], size[2]
        else:
            result[key] = value
    for key, value in DEFAULTS.items():
        result.setdefault(key, value)
    return result
