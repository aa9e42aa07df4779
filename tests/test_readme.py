"""The README's first two lines stay true: CI runs exactly its test command after its install
steps, and its main job (import the demo folder, list the catalogue) works on a fresh home."""

from __future__ import annotations

import json
import shlex

from tests.conftest import REPO_ROOT
from tireg import ml

README = REPO_ROOT / "README.md"
CI = REPO_ROOT / ".ci" / "run"


def _readme_commands() -> tuple[str, str]:
    lines = README.read_text(encoding="utf-8").splitlines()
    start = lines.index("```bash")
    return lines[start + 1], lines[start + 2]


def test_ci_runs_the_readme_install_and_test_commands() -> None:
    setup, test = _readme_commands()
    ci = [line.strip() for line in CI.read_text(encoding="utf-8").splitlines()]
    assert test in ci, "CI must run the README's test command verbatim"
    install_steps = [step.strip() for step in setup.split("&&") if "pip install" in step]
    assert install_steps[0].endswith("torch==2.13.0"), "torch is pinned and installed first"
    for step in install_steps:
        assert any(step.replace("-q ", "") == line.replace("-q ", "") for line in ci), step


def test_readme_main_job_on_the_demo_folder(tireg_cli) -> None:  # type: ignore[no-untyped-def]
    setup, _ = _readme_commands()
    tireg_steps = [shlex.split(s.strip()) for s in setup.split("&&") if "bin/tireg " in s]
    assert [argv[1] for argv in tireg_steps] == ["add", "list"]
    added = tireg_cli("add", *[REPO_ROOT / a for a in tireg_steps[0][2:]])
    assert added.code == 0, added.stderr
    listed = tireg_cli("list", "--json")
    names = sorted(row["name"] for row in json.loads(listed.stdout))
    expected = sorted(p.stem for p in (REPO_ROOT / "examples" / "embeddings").iterdir())
    assert sorted(n.strip("<>") for n in names) == expected
    families = {row["name"]: row["family"] for row in json.loads(listed.stdout)}
    assert families["demo-xl"] == "sdxl" and families["demo-sd2"] == "sd2"


def test_readme_install_section_gives_the_commands_the_ml_error_names() -> None:
    """A missing ML extra is reported with the same two commands the README's Install shows."""
    text = README.read_text(encoding="utf-8")
    install = text[text.index("## Install") : text.index("\n## ", text.index("## Install") + 1)]
    assert f"{ml.INSTALL} " in install or f"{ml.INSTALL}\n" in install
    assert ml.INSTALL_CPU in install
