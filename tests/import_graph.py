"""part_d2's module import graph and its layering rule (used by ``tests/test_architecture.py``).

Every ``import`` / ``from ... import`` statement of every module under ``part_d2/`` is read with
:mod:`ast`, at any depth (module level, inside functions and classes, under ``if TYPE_CHECKING``).
An edge ``a -> b`` means module ``a`` names module ``b`` (``from part_d2.x import y`` is an edge to
``part_d2.x.y`` when that is a module, else to ``part_d2.x``). The implicit import of parent
packages is not an edge.

Layers, lowest first (docs/ARCHITECTURE.md): a module may import its own layer or a lower one.

    python tests/import_graph.py     # prints the upward edges, the cycles and their counts
"""
import ast
import sys
from pathlib import Path
from typing import Dict, List, Set, Tuple

PACKAGE = "part_d2"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE

# Module prefix -> layer (longest prefix wins). The package root only re-exports (registration).
LAYERS: Dict[str, int] = {
    "part_d2.utils": 0,
    "part_d2.structures": 0,
    "part_d2.compat": 0,
    "part_d2.clustering": 0,
    "part_d2.config": 0,
    "part_d2.data": 1,
    "part_d2.modeling": 2,
    "part_d2.solver": 2,
    "part_d2.checkpoint": 2,
    "part_d2.evaluation": 3,
    "part_d2.engine": 4,
    "part_d2": 5,
}
LAYER_NAMES = {0: "structures/utils", 1: "data", 2: "modeling", 3: "evaluation", 4: "engine", 5: "package"}


def module_files(root: Path = ROOT) -> Dict[str, Path]:
    """``{dotted module name: file}`` of every ``.py`` under ``root`` (packages by ``__init__``)."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _resolve(module: str, is_package: bool, level: int, name: str) -> str:
    """Absolute name of a (possibly relative) ``from`` target seen in ``module``."""
    if level == 0:
        return name
    base = module.split(".")
    if not is_package:
        base = base[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([name] if name else []))


def module_imports(module: str, path: Path, known: Set[str]) -> List[Tuple[str, int, bool]]:
    """``[(imported part_d2 module, line, at module level)]`` of one file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_package = path.name == "__init__.py"
    top_level = {id(node) for node in tree.body}
    for node in tree.body:  # `if TYPE_CHECKING:` / try-blocks at module level count as module level
        for child in ast.walk(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)) and not isinstance(node, (ast.FunctionDef,
                                                                                          ast.AsyncFunctionDef,
                                                                                          ast.ClassDef)):
                top_level.add(id(child))
    found = []
    for node in ast.walk(tree):
        targets = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(module, is_package, node.level, node.module or "")
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                targets.append(sub if sub in known else base)
        for target in targets:
            if target != PACKAGE and not target.startswith(PACKAGE + "."):
                continue
            while target not in known and "." in target:  # `import part_d2.x.y.attr` style
                target = target.rsplit(".", 1)[0]
            edge = (target, node.lineno, id(node) in top_level)
            if target != module and edge not in found:
                found.append(edge)
    return found


def layer(module: str) -> int:
    best = max((p for p in LAYERS if module == p or module.startswith(p + ".")), key=len)
    return LAYERS[best]


def import_graph(root: Path = ROOT) -> Dict[str, List[Tuple[str, int, bool]]]:
    files = module_files(root)
    known = set(files)
    return {m: module_imports(m, p, known) for m, p in files.items()}


def upward_edges(graph) -> List[str]:
    """``"a:line -> b (data -> engine)"`` for every import of a higher layer."""
    out = []
    for module, edges in sorted(graph.items()):
        for target, line, _ in edges:
            if layer(target) > layer(module):
                out.append(f"{module}:{line} -> {target} ({LAYER_NAMES[layer(module)]} -> "
                           f"{LAYER_NAMES[layer(target)]})")
    return out


def cycles(graph) -> List[List[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    adj = {m: sorted({t for t, _, _ in edges}) for m, edges in graph.items()}
    index, low, stack, on_stack, comps = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in adj.get(v, []):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                comps.append(sorted(comp))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10000))
    for v in sorted(adj):
        if v not in index:
            visit(v)
    return sorted(comps)


def function_level_imports(graph) -> List[str]:
    """``"a:line -> b"`` for every part_d2 import inside a function or class body."""
    return [f"{m}:{line} -> {t}" for m, edges in sorted(graph.items()) for t, line, top in edges if not top]


def main() -> None:
    graph = import_graph()
    ups, cyc, hidden = upward_edges(graph), cycles(graph), function_level_imports(graph)
    print("upward edges:", len(ups))
    for e in ups:
        print("  ", e)
    print("cycles (strongly connected components):", len(cyc), "modules in them:", sum(map(len, cyc)))
    for c in cyc:
        print("  ", " ".join(c))
    print("function-level part_d2 imports:", len(hidden))
    for e in hidden:
        print("  ", e)


if __name__ == "__main__":
    main()
