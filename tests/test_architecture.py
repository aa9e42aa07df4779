"""The layering in docs/architecture.md, enforced: imports point one way.

Each layer may import only the layers listed for it (plus itself and the leaf modules). The
check reads the source with ``ast``, so lazy imports inside functions count too.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
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
    "tireg.ml",
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


def _leaf(module: str) -> str:
    """The top-level module of ours ``module`` is in (``tireg`` for ``tireg.__version__``)."""
    parts = module.split(".")
    if len(parts) > 1 and ((SRC / f"{parts[1]}.py").is_file() or (SRC / parts[1]).is_dir()):
        return f"tireg.{parts[1]}"  # a module or a package (one no layer table names fails)
    return "tireg"


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_imports_point_one_way(layer: str) -> None:
    bad = []
    for path in sorted((SRC / layer).rglob("*.py")):
        for module in _tireg_imports(path):
            target = _layer(module)
            if target is None:
                leaf = _leaf(module)
                if leaf not in LEAVES or leaf in LEAF_EXCEPTIONS.get(layer, set()):
                    bad.append(f"{path.relative_to(SRC)} imports {module}")
                continue
            if target != layer and target not in ALLOWED[layer]:
                bad.append(f"{path.relative_to(SRC)} imports {module}")
    assert not bad, "\n".join(bad)


def test_leaf_modules_import_nothing_of_ours() -> None:
    for leaf in sorted(LEAVES - {"tireg"}):
        name = leaf.removeprefix("tireg.")
        imports = _tireg_imports(SRC / f"{name}.py")
        if name in ("paths", "ml"):
            # each raises tireg's own one-line error, so it may import errors, and nothing else
            assert imports <= {"tireg.errors", "tireg.errors.TiregError"}, f"{name} {imports}"
        else:
            assert not imports, f"{name}.py imports {imports}"


def _doc_layers() -> tuple[dict[str, str], str]:
    """docs/architecture.md's layer table (layer -> its "may import" cell) and its leaf line."""
    text = (SRC.parent.parent / "docs" / "architecture.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| `(\w+)` \| ([^|]*) \|", text, flags=re.MULTILINE)
    leaf_line = next(line for line in text.splitlines() if "leaf modules" in line)
    return dict(rows), leaf_line


def test_every_module_has_its_row_in_the_documented_map() -> None:
    """docs/architecture.md's "where each concept lives" names every module: a cell's
    ``dir/name.py`` sets the folder its bare ``other.py`` names are in."""
    text = (SRC.parent.parent / "docs" / "architecture.md").read_text(encoding="utf-8")
    named = set()
    for line in text.splitlines():
        if not line.startswith("| "):
            continue
        folder = ""
        for item in re.findall(r"`([^`]+\.py)`", line.rsplit("|", 2)[-2]):
            if "/" in item:
                folder = item.rsplit("/", 1)[0] + "/"
            named.add(item if "/" in item else folder + item)
    modules = {
        path.relative_to(SRC).as_posix()
        for path in SRC.rglob("*.py")
        if "migrations" not in path.parts and path.name != "__init__.py"
    }
    assert not modules - named, f"modules the map leaves out: {sorted(modules - named)}"


def test_the_documented_layers_are_the_enforced_ones() -> None:
    """The table in docs/architecture.md says what ALLOWED enforces: each layer's cell names
    its layers ("and what they may import" adds theirs; "everything" is every layer), and the
    leaf line names every leaf module."""
    rows, leaf_line = _doc_layers()
    assert set(rows) == set(ALLOWED)
    for layer, cell in rows.items():
        assert any(w in cell for w in ("leaves", "may import", "everything")), f"{layer}: {cell}"
        named = set(re.findall(r"`(\w+)`", cell)) & set(ALLOWED)
        if "everything" in cell:
            named = set(ALLOWED) - {layer}
        if "what they may import" in cell:
            named |= {below for above in set(named) for below in ALLOWED[above]}
        assert named == ALLOWED[layer], f"{layer}: the docs say {sorted(named)}"
    documented = {f"tireg.{name}" for name in re.findall(r"(\w+)\.py", leaf_line)}
    assert documented == LEAVES - {"tireg"}, leaf_line


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
import json
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
# the registry's other commands, on the loopback servers the test runs (argv[2], JSON)
commands += json.loads(sys.argv[2]) if len(sys.argv) > 2 else []
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


def test_every_registry_command_imports_no_ml_library(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The commands the first run leaves out, each doing real work on a small catalogue and
    against the loopback Hub, Civitai and file servers: show, tag, similar, check, install,
    installed, uninstall, doctor, source, sync, lookup, publish and rm."""
    from tests.sources.servers.civitai_server import CivitaiModel, CivitaiServer, CivitaiVersion
    from tests.sources.servers.http_server import FileServer, Served, running
    from tests.sources.servers.hub_server import (
        HF_TEST_TOKEN,
        HubServer,
        concept_repo,
        embedding_bytes,
    )
    from tireg.converters import safetensors_file

    looked_up = tmp_path / "looked-up.safetensors"
    looked_up.write_bytes(embedding_bytes("emb_params", "safetensors", seed=3))
    checkpoint = tmp_path / "model.safetensors"
    layer = {"model.diffusion_model.input_blocks.0.0.weight": np.zeros((4, 4, 3, 3), np.float32)}
    checkpoint.write_bytes(safetensors_file.dumps(layer))
    hub = HubServer([concept_repo("sd-concepts-library/otter", "<otter>", "object")])
    civitai, files = CivitaiServer(), FileServer()
    version = CivitaiVersion(11, {looked_up.name: looked_up.read_bytes()}, trained_words=["lk"])
    civitai.add(CivitaiModel(1, "Looked Up", [version]))
    url = files.add("/seal.safetensors", Served(embedding_bytes("emb_params", "safetensors")))
    monkeypatch.setenv("TIREG_CIVITAI_API", civitai.api)
    monkeypatch.setenv("HF_TOKEN", HF_TEST_TOKEN)
    monkeypatch.setenv("TIREG_HOME", str(tmp_path / "home"))
    more = [
        ["show", "probe"],
        ["tag", "probe", "mine"],
        ["similar", "probe"],
        ["check", "probe", "--model", str(checkpoint)],
        ["install", "probe", "--to", str(tmp_path / "installed")],
        ["installed"],
        ["uninstall", "probe"],
        ["doctor"],
        ["source", "add", "url", url],
        ["source", "sync"],
        ["source", "list"],
        ["sync", "hf", "--hf-endpoint", hub.url, "--download"],
        ["lookup", str(looked_up)],
        ["publish", "probe", "--repo", "me/probe", "--hf-endpoint", hub.url],
        ["rm", "probe"],
    ]
    with running(hub.http), running(civitai.http), running(files):
        out = subprocess.run(
            [sys.executable, "-c", _NON_ML_RUN, str(tmp_path), json.dumps(more)],
            capture_output=True,
            text=True,
            check=False,
        )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "heavy="
    assert len(hub.commits) == 1, "publish committed to the loopback Hub"


def _module_names() -> dict[str, Path]:
    """Every module of the package by dotted name (``tireg.registry.query``)."""
    modules = {}
    for path in SRC.rglob("*.py"):
        parts = ["tireg", *path.relative_to(SRC).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def _imported_modules(path: Path, modules: dict[str, Path]) -> set[str]:
    """The modules of ours ``path`` imports, lazily or not. ``from tireg.registry import query``
    imports the module ``tireg.registry.query``; a name that is no module (``from
    tireg.converters import describe``) is taken from the package's ``__init__``, which imports
    the package's modules in turn, so that ``__init__`` is what it imports."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                name = f"{node.module}.{alias.name}"
                found.add(name if name in modules else node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found & modules.keys()


def test_no_import_cycles_inside_a_package() -> None:
    """Within one package, modules import each other one way (lazy imports count: a cycle hidden
    in a function is still two modules that cannot be understood apart)."""
    modules = _module_names()
    graph = {name: _imported_modules(path, modules) - {name} for name, path in modules.items()}
    # a package's own __init__ belongs to it, not to the package above
    package = {
        name: name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        for name, path in modules.items()
    }
    cycles = []
    for start in graph:
        stack = [(start, [start])]
        while stack:
            node, trail = stack.pop()
            for nxt in graph[node]:
                if nxt == start and len(trail) > 1:
                    cycles.append(" -> ".join([*trail, start]))
                elif nxt not in trail and package[nxt] == package[start]:
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


#: the ML libraries, which only the validation, training and generation commands may load
ML_LIBRARIES = ("torch", "diffusers", "transformers")
#: the packages the registry commands run on
REGISTRY_SIDE = ("db", "sources", "converters", "checkpoints", "registry", "serve")


def _ml_imports(path: Path) -> list[str]:
    """The ML libraries ``path`` imports anywhere (module level or inside a function), also by
    name (``importlib.import_module("torch")``, ``__import__``); text in strings is no import."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            called = ast.unparse(node.func)
            if called in ("importlib.import_module", "import_module", "__import__"):
                names = [str(node.args[0].value)]
        found += [f"{n} (line {node.lineno})" for n in names if n.split(".")[0] in ML_LIBRARIES]
    return found


def test_the_registry_side_imports_no_ml_library_even_lazily() -> None:
    """No module of the registry's packages, nor any module of ours they import (lazily or
    not, followed to the end), imports torch, diffusers or transformers."""
    modules = _module_names()
    imports = {name: _imported_modules(path, modules) for name, path in modules.items()}
    heavy = {name: found for name, path in modules.items() if (found := _ml_imports(path))}
    assert heavy, "the scan finds the ML imports that do exist (the pipelines, the trainer)"
    offenders = {}
    for name in modules:
        if name.split(".")[1:2] and name.split(".")[1] in REGISTRY_SIDE:
            reached, todo = {name}, [name]
            while todo:
                for imported in imports[todo.pop()] - reached:
                    reached.add(imported)
                    todo.append(imported)
            if through := sorted(reached & heavy.keys()):
                offenders[name] = {module: heavy[module] for module in through}
    assert offenders == {}
