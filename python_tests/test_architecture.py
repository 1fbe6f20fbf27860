"""The package's import structure (ARCHITECTURE.md): no import circle between modules, and imports run from a
higher layer down to a lower one, except the few listed (each with its reason)."""

from __future__ import annotations

import ast
import pathlib

import pytest

PKG = pathlib.Path(__file__).resolve().parents[1] / "mda_fast"

#: layer of each top-level name of mda_fast/ (lower numbers are imported by higher ones, never the reverse)
LAYERS = {
    "errors": 0,
    "config": 0,
    "configs": 0,
    "io": 0,
    "version": 0,
    "revisions": 0,
    "_C": 0,
    "kernels": 1,
    "adapters": 1,
    "data": 2,
    "core": 3,
    "train": 4,
    "dist": 4,
    "study": 5,
    "stages": 6,
    "augment": 6,
    "cli_args": 7,
    "cli": 7,
    "__main__": 8,
}

#: imports that go up a layer on purpose: (importer prefix, imported prefix, why)
ALLOWED_UP = [
    # the cross-scale augmentation study runs the pipeline's own stages (fit, score, the demo corpus) on its base
    # runs, rather than a second copy of them; stages/augment.py is only the command's door
    ("mda_fast.augment.attribution", "mda_fast.stages.fit", "runs fit on a base run"),
    ("mda_fast.augment.attribution", "mda_fast.stages.score", "runs score on a base run"),
    ("mda_fast.augment.study", "mda_fast.stages.demo", "builds the demo corpus for the demo setting"),
]


def modules() -> dict:
    out = {}
    for p in PKG.rglob("*.py"):
        parts = ["mda_fast", *p.relative_to(PKG).with_suffix("").parts]
        is_pkg = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_pkg else parts)] = (p, is_pkg)
    return out


def import_edges() -> dict:
    mods = modules()
    edges = {m: set() for m in mods}
    for m, (p, is_pkg) in mods.items():
        base = m.split(".") if is_pkg else m.split(".")[:-1]
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    b = base[: len(base) - (node.level - 1)]
                    target = ".".join(b + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                if not target.startswith("mda_fast"):
                    continue
                for a in node.names:
                    full = f"{target}.{a.name}"
                    if full in mods:
                        edges[m].add(full)
                    elif a.name != "_C" and target in mods:
                        edges[m].add(target)
            elif isinstance(node, ast.Import):
                edges[m].update(a.name for a in node.names if a.name in mods)
    return edges


def cycles(edges: dict) -> list:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def layer(mod: str) -> int:
    return 8 if mod == "mda_fast" else LAYERS[mod.split(".")[1]]


def test_every_top_level_name_has_a_layer():
    names = {p.stem if p.is_file() else p.name for p in PKG.iterdir() if p.name != "__pycache__"}
    names = {n.split(".")[0] for n in names} - {"__init__", "py"}
    assert names <= set(LAYERS), f"give these a layer in LAYERS and ARCHITECTURE.md: {sorted(names - set(LAYERS))}"


def test_no_import_circle():
    assert cycles(import_edges()) == []


def test_the_cycle_finder_finds_one():  # the check above can fail
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c"]]


def test_imports_go_down_the_layers():
    up = [
        (a, b)
        for a, targets in import_edges().items()
        for b in sorted(targets)
        if layer(b) > layer(a) and not any(a == x and b == y for x, y, _ in ALLOWED_UP)
    ]
    assert up == [], "imports from a lower layer up to a higher one: " + ", ".join(f"{a} -> {b}" for a, b in up)


@pytest.mark.parametrize("path", sorted(p.name for p in PKG.glob("*.py")))
def test_no_top_level_module_only_forwards(path):
    """A module whose every statement is an import (besides its docstring and __all__) is a forwarding module."""
    tree = ast.parse((PKG / path).read_text())
    body = [n for n in tree.body if not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))]
    body = [
        n for n in body if not (isinstance(n, ast.Assign) and any(getattr(t, "id", "") == "__all__" for t in n.targets))
    ]
    if path == "__init__.py":
        return  # the public API
    assert not body or not all(isinstance(n, (ast.Import, ast.ImportFrom)) for n in body), f"{path} only re-exports"
