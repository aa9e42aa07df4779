"""Small concepts defined once: a second copy fails here, before it can drift from the first.

Each rule reads the source with ``ast`` (so comments and strings never count):

* progress callback types live in ``tireg/progress.py`` alone: no other module defines a
  ``...Progress`` alias or another ``Callable`` of the same shape;
* serialisers are called ``to_dict``: no ``to_json`` or ``as_dict`` method comes back;
* the 64 MiB cap on an untrusted file is written once (``files.MAX_FILE_BYTES``); a cap that is
  the same rule imports it, and a different rule gets its own name and value;
* the ``<...>`` folding rule is ``prompt_words.unbracketed``: no other module tests a string for
  a leading ``<`` and a trailing ``>`` or strips them. Migrations keep their own frozen copies
  (a migration must not change when the code does), so they are not checked;
* the registry's small concepts each have one module: tags (``registry/tags.py``), the naming
  rule (``registry/naming.py``) and the state of an install (``registry/install_state.py``):
  no other module of the registry, the CLI or the web pages defines a function of the same
  name (``listing.refs`` is the rule ``naming.refs`` hands ORM rows to, so ``refs`` is left out).
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable, Iterator
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src" / "tireg"
PROGRESS = SRC / "progress.py"
MIB_64 = 64 * 1024 * 1024
_OPS: dict[type[ast.operator], Callable[[int, int], int]] = {
    ast.Mult: operator.mul,
    ast.Pow: operator.pow,
    ast.LShift: operator.lshift,
    ast.Add: operator.add,
}


def _modules() -> Iterator[tuple[Path, ast.Module]]:
    for path in sorted(SRC.rglob("*.py")):
        if "migrations" not in path.parts:
            yield path, ast.parse(path.read_text(encoding="utf-8"))


def _where(path: Path, node: ast.AST) -> str:
    return f"{path.relative_to(SRC)}:{getattr(node, 'lineno', '?')}"


def _aliases(tree: ast.Module) -> Iterator[tuple[str, ast.expr, ast.stmt]]:
    """Module-level ``NAME = value`` and ``NAME: TypeAlias = value`` statements."""
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1:
            target, value = stmt.targets[0], stmt.value
        elif isinstance(stmt, ast.AnnAssign) and stmt.value is not None:
            target, value = stmt.target, stmt.value
        else:
            continue
        if isinstance(target, ast.Name):
            yield target.id, value, stmt


def test_progress_types_are_defined_only_in_progress_py() -> None:
    shapes = {ast.dump(value) for _, value, _ in _aliases(ast.parse(PROGRESS.read_text()))}
    assert shapes, "tireg/progress.py defines no progress type"
    again = [
        f"{_where(path, stmt)} defines {name}"
        for path, tree in _modules()
        if path != PROGRESS
        for name, value, stmt in _aliases(tree)
        if name.endswith("Progress") or ast.dump(value) in shapes
    ]
    assert not again, "progress types belong in tireg/progress.py:\n" + "\n".join(again)


def test_serialisers_are_called_to_dict() -> None:
    other = [
        f"{_where(path, node)} def {node.name}"
        for path, tree in _modules()
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef) and node.name in ("to_json", "as_dict")
    ]
    assert not other, "name serialisers to_dict:\n" + "\n".join(other)


def _constant(node: ast.AST) -> int | None:
    """The value of an expression made of int literals and ``* ** << +`` only, else None."""
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        left, right = _constant(node.left), _constant(node.right)
        if left is not None and right is not None and (right < 64 or type(node.op) is ast.Mult):
            return _OPS[type(node.op)](left, right)
    return None


def test_the_64_mib_cap_is_written_once() -> None:
    written = [
        _where(path, node)
        for path, tree in _modules()
        for node in ast.walk(tree)
        if _constant(node) == MIB_64
    ]
    assert len(written) == 1 and written[0].startswith("files.py:"), (
        "the 64 MiB cap is files.MAX_FILE_BYTES; import it, or name a different rule:\n"
        + "\n".join(written)
    )


def _folds_brackets(node: ast.AST) -> bool:
    """``x.strip("<>")`` / ``lstrip("<")`` / ``rstrip(">")``, or ``x.startswith("<")`` and
    ``x[0] == "<"`` style tests (which pair with a ``>`` test to unbracket by hand)."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.args:
        arg = node.args[0]
        if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
            name, text = node.func.attr, arg.value
            if name in ("strip", "lstrip", "rstrip") and ("<" in text or ">" in text):
                return True
            if name in ("startswith", "endswith") and text in ("<", ">"):
                return True
    if isinstance(node, ast.Compare) and isinstance(node.left, ast.Subscript):
        return any(isinstance(c, ast.Constant) and c.value in ("<", ">") for c in node.comparators)
    return False


def test_brackets_are_folded_by_one_function() -> None:
    home = SRC / "prompt_words.py"
    by_hand = [
        _where(path, node)
        for path, tree in _modules()
        if path != home
        for node in ast.walk(tree)
        if _folds_brackets(node)
    ]
    assert not by_hand, "fold <...> with tireg.prompt_words.unbracketed:\n" + "\n".join(by_hand)


#: function -> the one module that defines it (relative to ``src/tireg``)
OWNERS = {
    **dict.fromkeys(("clean_tags", "split_tags", "add_tags"), "registry/tags.py"),
    **dict.fromkeys(
        ("candidates", "resolve", "resolve_many", "refs_of", "ref_of"), "registry/naming.py"
    ),
    **dict.fromkeys(("install_state", "install_record"), "registry/install_state.py"),
}


def test_registry_concepts_are_defined_in_their_own_module() -> None:
    found: dict[str, list[str]] = {name: [] for name in OWNERS}
    for path, tree in _modules():
        if path.relative_to(SRC).parts[0] not in ("registry", "cli", "serve"):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name in found:
                found[node.name].append(path.relative_to(SRC).as_posix())
    misplaced = {name: where for name, where in found.items() if where != [OWNERS[name]]}
    assert not misplaced, misplaced
