"""The layering in docs/architecture.md, enforced: imports point one way.

Each layer may import only the layers listed for it (plus itself and the leaf modules). The
check reads the source with ``ast``, so lazy imports inside functions count too.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src" / "tireg"
LEAVES = {
    "tireg",
    "tireg.errors",
    "tireg.files",
    "tireg.config",
    "tireg.paths",
    "tireg.prompt_words",
    "tireg.progress",
}
ALLOWED: dict[str, set[str]] = {
    "converters": set(),
    "sources": set(),
    "db": set(),
    "checkpoints": {"converters"},
    "registry": {"db", "converters", "checkpoints", "sources"},
    "pipelines": {"converters", "checkpoints"},
    "validate": {"db", "converters", "checkpoints", "sources", "registry", "pipelines"},
    "train": {"db", "converters", "checkpoints", "sources", "registry", "pipelines", "validate"},
    "vocab": {"db", "converters", "checkpoints", "sources", "registry", "pipelines"},
    "serve": {"db", "converters", "registry"},
    "cli": {
        "db",
        "converters",
        "checkpoints",
        "sources",
        "registry",
        "pipelines",
        "validate",
        "train",
        "vocab",
        "serve",
    },
}
# leaves are below everything; converters may not even use config (it knows no state)
LEAF_EXCEPTIONS = {"converters": {"tireg.config"}}


def _tireg_imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            found.update(n for n in names if n == "tireg" or n.startswith("tireg."))
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("tireg"))
    return found


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in ALLOWED else None


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_imports_point_one_way(layer: str) -> None:
    bad = []
    for path in sorted((SRC / layer).rglob("*.py")):
        for module in _tireg_imports(path):
            target = _layer(module)
            if target is None:
                leaf = ".".join(module.split(".")[:2])
                if leaf in LEAF_EXCEPTIONS.get(layer, set()):
                    bad.append(f"{path.relative_to(SRC)} imports {module}")
                continue
            if target != layer and target not in ALLOWED[layer]:
                bad.append(f"{path.relative_to(SRC)} imports {module}")
    assert not bad, "\n".join(bad)


def test_leaf_modules_import_nothing_of_ours() -> None:
    for name in ("errors", "files", "config", "prompt_words", "progress"):
        imports = _tireg_imports(SRC / f"{name}.py")
        assert not imports, f"{name}.py imports {imports}"
    # paths raises tireg's own one-line error, so it may import errors, and nothing else
    imports = _tireg_imports(SRC / "paths.py")
    assert imports <= {"tireg.errors", "tireg.errors.TiregError"}, f"paths.py imports {imports}"


def test_cli_help_imports_no_ml_library() -> None:
    """``tireg --help`` must stay fast: torch, diffusers and transformers load only on demand."""
    code = (
        "import sys\n"
        "from tireg.cli.app import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = sorted(m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules)\n"
        "print('heavy=' + ','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "heavy="


#: run in a fresh interpreter: non-ML commands on a .pt file tireg itself wrote, then which heavy
#: modules got imported (reading and writing torch files is tireg's own code, never torch's)
_NON_ML_RUN = """
import sys
from pathlib import Path

import numpy as np

from tireg.cli.app import main
from tireg.converters import Embedding, write_file

work = Path(sys.argv[1])
emb = Embedding(name="probe", vectors={"clip_l": np.ones((2, 768), np.float32)}, step=3)
(pt,) = write_file(emb, work / "in" / "probe.pt", "a1111-pt")
commands = [
    ["inspect", str(pt)],
    ["inspect", "--json", str(pt)],
    ["convert", str(pt), "--to", "tireg", "--out-dir", str(work / "out")],
    ["convert", str(pt), "--to", "diffusers-bin", "--out-dir", str(work / "out")],
    ["convert", str(work / "out" / "probe.bin"), "--to", "a1111-pt", "-o", str(work / "b.pt")],
    ["hash", str(pt)],
    ["add", str(work / "in")],
    ["list"],
    ["list", "--json"],
]
for argv in commands:
    try:
        main(argv)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    assert code == 0, (argv, code)
heavy = sorted(m for m in ("torch", "diffusers", "transformers") if m in sys.modules)
print("heavy=" + ",".join(heavy))
"""


def test_non_ml_commands_import_no_ml_library(tmp_path: Path) -> None:
    """inspect, convert, hash, add and list of torch files never import torch (or diffusers,
    transformers): those are for the GPU checks, not for reading a file."""
    out = subprocess.run(
        [sys.executable, "-c", _NON_ML_RUN, str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "heavy="
    assert (tmp_path / "out" / "probe.tireg.safetensors").is_file()
    assert (tmp_path / "b.pt").is_file()


def _module_names() -> dict[str, Path]:
    """Every module of the package by dotted name (``tireg.registry.query``)."""
    modules = {}
    for path in SRC.rglob("*.py"):
        parts = ["tireg", *path.relative_to(SRC).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def test_no_import_cycles_inside_a_package() -> None:
    """Within one package, modules import each other one way (lazy imports count: a cycle hidden
    in a function is still two modules that cannot be understood apart)."""
    modules = _module_names()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name.rsplit(".", 1)[0] if path.name != "__init__.py" else name
        targets = set()
        for imported in _tireg_imports(path):
            # "from tireg.registry import query" names the module tireg.registry.query
            target = imported if imported in modules else imported.rsplit(".", 1)[0]
            if target in modules and target != name and target != package:
                targets.add(target)
        graph[name] = targets
    cycles = []
    for start in graph:
        stack = [(start, [start])]
        while stack:
            node, trail = stack.pop()
            for nxt in graph[node]:
                if nxt == start and len(trail) > 1:
                    same_package = {m.rsplit(".", 1)[0] for m in trail}
                    if len(same_package) == 1:
                        cycles.append(" -> ".join([*trail, start]))
                elif nxt not in trail and nxt.rsplit(".", 1)[0] == start.rsplit(".", 1)[0]:
                    stack.append((nxt, [*trail, nxt]))
    assert not cycles, "import cycles:\n" + "\n".join(sorted(set(cycles)))


#: what opens, drives or ends a catalogue session or transaction: the registry's to call
SESSION_CALLS = {
    "transaction",
    "reading",
    "begin",
    "begin_nested",
    "commit",
    "rollback",
    "execute",
    "scalar",
    "scalars",
    "sessionmaker",
    "Session",
}


def test_cli_never_opens_a_session_or_transaction() -> None:
    """Public registry functions take a ``Catalogue`` and own their transactions; a command
    opens the catalogue, calls one of them and prints. A session opened in the CLI would put
    the transaction's bounds (what commits together) in the layer that cannot test them."""
    bad = []
    for path in sorted((SRC / "cli").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            where = f"{path.relative_to(SRC)}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, ast.ImportFrom | ast.Import):
                modules = [node.module or ""] if isinstance(node, ast.ImportFrom) else []
                modules += [a.name for a in node.names]
                bad += [f"{where} imports {m}" for m in modules if m.startswith("sqlalchemy")]
            elif isinstance(node, ast.Call):
                func = node.func
                name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                if name in SESSION_CALLS:
                    bad.append(f"{where} calls {name}()")
    assert not bad, "\n".join(bad)
