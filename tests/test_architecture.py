"""part_d2's layering (docs/ARCHITECTURE.md): structures/utils <- data <- modeling <- evaluation <-
engine <- tools/projects. Every import of every module, at any depth, is checked (see
``tests/import_graph.py``)."""
import ast
import os

import import_graph

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_no_upward_import():
    assert import_graph.upward_edges(import_graph.import_graph()) == []


def test_no_import_cycle():
    assert import_graph.cycles(import_graph.import_graph()) == []


def test_no_part_d2_import_inside_a_function():
    """Imports hidden in functions are how cycles were dodged; none is left."""
    assert import_graph.function_level_imports(import_graph.import_graph()) == []


def test_every_module_has_a_layer():
    graph = import_graph.import_graph()
    assert len(graph) > 50
    for module in graph:
        assert import_graph.layer(module) in import_graph.LAYER_NAMES, module


def test_checker_sees_upward_edges_cycles_and_hidden_imports(tmp_path):
    """The checker itself: a tiny fake package with one upward edge, one cycle, one hidden import."""
    pkg = tmp_path / "part_d2"
    for sub in ("data", "engine", "utils"):
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "data" / "a.py").write_text("from part_d2.engine import b\n")
    (pkg / "engine" / "b.py").write_text("from part_d2.data.a import x\n")
    (pkg / "utils" / "c.py").write_text("def f():\n    from . import d\n")
    (pkg / "utils" / "d.py").write_text("")
    graph = import_graph.import_graph(pkg)
    assert import_graph.upward_edges(graph) == ["part_d2.data.a:1 -> part_d2.engine.b (data -> engine)"]
    assert import_graph.cycles(graph) == [["part_d2.data.a", "part_d2.engine.b"]]
    assert import_graph.function_level_imports(graph) == ["part_d2.utils.c:2 -> part_d2.utils.d"]


def _imports_of(path):
    tree = ast.parse(open(path).read())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module


def test_nothing_imports_tools_or_projects():
    """tools/ and projects/ are the top layer: part_d2 and the scripts themselves never import them."""
    offenders = []
    for top in ("part_d2", "tools", "projects"):
        for dirpath, _, files in os.walk(os.path.join(ROOT, top)):
            for f in files:
                if f.endswith(".py"):
                    path = os.path.join(dirpath, f)
                    bad = [m for m in _imports_of(path) if m.split(".")[0] in ("tools", "projects")]
                    offenders += [f"{os.path.relpath(path, ROOT)}: {m}" for m in bad]
    assert offenders == []


# Modules no other code imports on purpose; each with its reason.
UNREFERENCED_OK = {
    "part_d2.compat.detectron2_C_placeholder": "copied over detectron2._C by tools/setup_env.sh",
}


def test_every_module_is_used():
    """No dead module: each is imported by part_d2, a tool, a project, a dataset script or a bench."""
    graph = import_graph.import_graph()
    used = {t for edges in graph.values() for t, _, _ in edges}
    for top in ("tools", "projects", "datasets", "bench"):
        for dirpath, _, files in os.walk(os.path.join(ROOT, top)):
            for f in files:
                if f.endswith(".py"):
                    for m in _imports_of(os.path.join(dirpath, f)):
                        used |= {m, *(f"{m}.{n}" for n in _names_of(os.path.join(dirpath, f), m))}
    packages = {m for m, p in import_graph.module_files().items() if p.name == "__init__.py"}
    unused = sorted(m for m in graph if m not in used and m not in packages and m not in UNREFERENCED_OK)
    assert unused == []


def _names_of(path, module):
    tree = ast.parse(open(path).read())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == module:
            yield from (a.name for a in node.names)
