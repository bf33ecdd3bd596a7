"""The house is one-way: every raykd import points to a lower room, and no modules import each
other in a circle. Function-local imports count (they are how cycles hide).

The layers, top to bottom (DESIGN.md section 2); a room may import rooms below it and rooms of
its own layer as long as the rooms' graph stays acyclic (the rooms are named in LAYERS).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

LAYERS = (
    # the `raykd` command and `python -m raykd`: the jobs' command lines (jobs/*.py launch them)
    ("__main__", "commands"),
    ("cli", "pipeline", "tune"),
    ("train", "teachers", "eval"),
    ("negatives", "dark", "index"),
    ("students", "data", "tracking", "runtime"),
    # losses import torch only; config validates a loss by building it from their registry
    ("config", "storage", "losses", "errors", "fingerprint", "datasets", "recipes", "progress"),
)
PACKAGE = Path(__file__).resolve().parents[1] / "raykd"


def module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, root: Path) -> list[tuple[int, str]]:
    """Every `raykd.*` module a file imports, at any depth of the file (line, module)."""
    this = module_name(path, root)
    package = this if path.name == "__init__.py" else this.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            # `from raykd.x import y`: the submodule raykd.x.y when there is one, else raykd.x
            found += [(node.lineno, f"{base}.{a.name}") for a in node.names]
    return [(line, name) for line, name in found if name.split(".")[0] == root.name]


def import_graph(root: Path) -> dict[str, set[tuple[str, int]]]:
    """module -> {(imported module, line)}: a name resolves to the longest existing module."""
    modules = {module_name(p, root): p for p in root.rglob("*.py")}
    graph: dict[str, set[tuple[str, int]]] = {m: set() for m in modules}
    for name, path in modules.items():
        for line, target in imported_modules(path, root):
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name and target != root.name:
                graph[name].add((target, line))
    return graph


def room_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def layering_violations(root: Path, layers=LAYERS) -> list[str]:
    """Upward imports, imports from an unplaced room, and import cycles, as readable lines."""
    level = {room: i for i, rooms in enumerate(layers) for room in rooms}
    graph = import_graph(root)
    problems = []
    room_edges: dict[str, set[str]] = {}
    for module, targets in sorted(graph.items()):
        for target, line in sorted(targets):
            a, b = room_of(module), room_of(target)
            if a == b:
                continue
            if a not in level or b not in level:
                problems.append(f"{module}:{line} imports {target}: room "
                                f"'{a if a not in level else b}' is in no layer")
                continue
            if level[b] < level[a]:
                problems.append(f"{module}:{line} imports {target}: '{a}' may not import the "
                                f"higher room '{b}'")
            room_edges.setdefault(a, set()).add(b)
    problems += [f"rooms import each other in a circle: {' -> '.join(c)}"
                 for c in _cycles(room_edges)]
    module_edges = {m: {t for t, _ in ts} for m, ts in graph.items()}
    problems += [f"modules import each other in a circle: {' -> '.join(c)}"
                 for c in _cycles(module_edges)]
    return problems


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component that has one (Tarjan, then a walk)."""
    index, low, stack, on, comps, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
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
                comps.append(set(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    cycles = []
    for comp in comps:
        start = min(comp)
        path, seen, node = [start], {start}, start
        while True:
            node = min(w for w in edges[node] if w in comp)
            path.append(node)
            if node in seen:
                cycles.append(path[path.index(node):])
                break
            seen.add(node)
    return cycles


def test_raykd_imports_point_down_and_never_circle():
    problems = layering_violations(PACKAGE)
    assert not problems, "\n".join(problems)


def test_every_room_is_placed_in_a_layer():
    rooms = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    rooms |= {p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    placed = {room for layer in LAYERS for room in layer}
    assert rooms <= placed, f"rooms in no layer: {sorted(rooms - placed)}"


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "raykd"
    for rel, text in {"__init__.py": "", **files}.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


@pytest.mark.parametrize("upward", [
    "from raykd.pipeline.runner import run\n",                 # top level
    "def f():\n    from raykd.pipeline import runner\n",       # function-local
    "def f():\n    import raykd.pipeline.runner\n",
    "from ..pipeline import runner\n",                         # relative
])
def test_a_planted_upward_import_fails(tmp_path, upward):
    """Guards the guard: a data module importing the pipeline must be reported."""
    root = _tree(tmp_path, {"pipeline/__init__.py": "", "pipeline/runner.py": "run = 1\n",
                            "data/__init__.py": "", "data/kl.py": upward})
    problems = layering_violations(root)
    assert len(problems) == 1 and problems[0].startswith("raykd.data.kl:")
    assert "higher room 'pipeline'" in problems[0]


def test_a_planted_cycle_fails(tmp_path):
    """Two modules of one room that import each other (function-locally) are a cycle."""
    root = _tree(tmp_path, {"index/__init__.py": "",
                            "index/encode.py": "def f():\n    from raykd.index import store\n",
                            "index/store.py": "from raykd.index.encode import f\n"})
    problems = layering_violations(root)
    assert problems == ["modules import each other in a circle: "
                        "raykd.index.encode -> raykd.index.store -> raykd.index.encode"]


def test_same_layer_rooms_may_not_circle(tmp_path):
    root = _tree(tmp_path, {"train/__init__.py": "", "teachers/__init__.py": "",
                            "train/a.py": "from raykd.teachers import b\n",
                            "teachers/b.py": "def f():\n    from raykd.train import a\n"})
    problems = layering_violations(root)
    assert "rooms import each other in a circle: teachers -> train -> teachers" in problems


def test_a_clean_tree_passes(tmp_path):
    root = _tree(tmp_path, {"pipeline/__init__.py": "from raykd.data import beir\n",
                            "data/__init__.py": "", "data/beir.py": "import json\n"})
    assert layering_violations(root) == []
