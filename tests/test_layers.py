"""The import layering of docs/contracts.md, checked on the source (AST, lazy imports included):

    labels, io, rundir -> data -> models -> train -> inference -> evaluate, explain -> report, serve, demo -> cli

A module may import its own layer or lower ones, never a higher one; ``chestdx.explain.saliency`` (model + tensor ->
map) sits just below inference, which may import it. Imports under ``if TYPE_CHECKING:`` are not counted.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "chestdx"

LAYERS: list[set[str]] = [
    {"labels", "io", "rundir", "notice", "policies", "allocator"},
    {"data"},
    {"models"},
    {"train"},
    {"explain.saliency"},
    {"inference"},
    {"evaluate", "explain"},
    {"report", "serve", "demo"},
    {"cli"},
]
RANK = {name: i for i, names in enumerate(LAYERS) for name in names}
EXEMPT = {"__init__", "__main__"}  # the package facade (chestdx.load) and `python -m chestdx`



def component(module: str) -> str | None:
    """'chestdx.explain.saliency.x' -> 'explain.saliency'; 'chestdx.data.cache' -> 'data'; 'chestdx' -> None."""
    parts = module.split(".")
    if parts[0] != "chestdx" or len(parts) < 2:
        return None
    if parts[1:3] == ["explain", "saliency"]:
        return "explain.saliency"
    return parts[1].removesuffix(".py")


def _type_checking_lines(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def _submodule(package: str, name: str) -> str:
    """``package.name`` when ``name`` is a module of ``package`` (a file or folder), else ``package``."""
    folder = SRC.joinpath(*package.split(".")[1:])
    is_module = (folder / name).is_dir() or (folder / f"{name}.py").is_file()
    return f"{package}.{name}" if package.startswith("chestdx") and is_module else package


def imports_of(path: Path) -> list[tuple[str, int]]:
    """(imported module, line) for every chestdx import in ``path``."""
    module = "chestdx." + ".".join(path.relative_to(SRC).with_suffix("").parts)
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    skip = _type_checking_lines(tree)
    found = []
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
                base = package[: len(package) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            # `from chestdx.explain import saliency` names a submodule: count the submodule
            found += [(_submodule(target, a.name), node.lineno) for a in node.names]
    return [(m, ln) for m, ln in found if m == "chestdx" or m.startswith("chestdx.")]


def edges() -> list[tuple[str, str, str]]:
    """(importer component, imported component, 'file:line') over the whole package."""
    out = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC)
        src = component("chestdx." + ".".join(rel.with_suffix("").parts))
        if src is None or src in EXEMPT:
            continue
        for target, line in imports_of(path):
            dst = component(target)
            if dst is not None and dst != src:
                out.append((src, dst, f"{rel}:{line}"))
    return out


def test_every_component_has_a_layer():
    components = {c for e in edges() for c in e[:2]} | {
        component("chestdx." + ".".join(p.relative_to(SRC).with_suffix("").parts)) for p in SRC.rglob("*.py")}
    unknown = sorted(c for c in components if c and c not in RANK and c not in EXEMPT)
    assert not unknown, f"add these to LAYERS (and docs/contracts.md): {unknown}"


def test_no_import_goes_up_a_layer():
    bad = [f"{where}: {src} imports {dst}" for src, dst, where in edges()
           if RANK.get(dst, -1) > RANK.get(src, -1)]
    assert not bad, "layer violations:\n" + "\n".join(bad)


def test_no_cycle_between_components():
    graph: dict[str, set[str]] = {}
    for src, dst, _ in edges():
        graph.setdefault(src, set()).add(dst)

    def visit(node: str, stack: list[str], done: set[str]) -> list[str] | None:
        if node in stack:
            return [*stack[stack.index(node):], node]
        if node in done:
            return None
        for nxt in sorted(graph.get(node, ())):
            cycle = visit(nxt, [*stack, node], done)
            if cycle:
                return cycle
        done.add(node)
        return None

    done: set[str] = set()
    for start in sorted(graph):
        cycle = visit(start, [], done)
        assert cycle is None, f"import cycle: {' -> '.join(cycle)}"


def test_the_checker_sees_a_violation(tmp_path, monkeypatch):
    """The checker itself can fail: a fake low-layer module importing the CLI is reported."""
    fake = tmp_path / "chestdx"
    (fake / "data").mkdir(parents=True)
    (fake / "data" / "bad.py").write_text("def f():\n    from chestdx.cli import app\n")
    monkeypatch.setattr(__import__(__name__), "SRC", fake)
    assert ("data", "cli", "data/bad.py:2") in edges()
