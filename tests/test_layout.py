"""The house rules of ARCHITECTURE.md, checked on the source: what may import what, no
import circle, and the size limits (600 lines a module, 80 lines a function).

Imports are read with ``ast`` from every module of the package, those inside functions
included: an import deferred into a function is still a dependency.
"""
import ast
import pathlib

import pytest

PKG = pathlib.Path(__file__).resolve().parents[1] / "fastmom"

MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 80

MODEL = ("fastmom.network", "fastmom.layers", "fastmom.activations", "fastmom.params", "fastmom.optim")
LEAVES = ("fastmom._validate", "fastmom._io", "fastmom._version", "fastmom.activations")
# the deprecated aliases of moved modules only re-export their new home
ALIASES = ("fastmom.trainer", "fastmom.cuda_emulation")


def _module_name(path):
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules():
    return {_module_name(p): p for p in sorted(PKG.rglob("*.py"))}


MODULES = _modules()


def _resolve(mod, path, node):
    """Absolute names of the fastmom modules an import statement brings in."""
    is_pkg = path.name == "__init__.py"
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.split(".")[0] == "fastmom"]
    base = mod.split(".") if is_pkg else mod.split(".")[:-1]
    if node.level:
        base = base[: len(base) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    if target.split(".")[0] != "fastmom":
        return []
    out = []
    for alias in node.names:
        sub = f"{target}.{alias.name}"
        out.append(sub if sub in MODULES else target)
    return out


def _imports():
    """``{module: {(imported module, line, inside a function)}}``."""
    graph = {}
    for mod, path in MODULES.items():
        tree = ast.parse(path.read_text(), str(path))
        found = set()

        def visit(node, in_function):
            for child in ast.iter_child_nodes(node):
                inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
                if isinstance(child, (ast.Import, ast.ImportFrom)):
                    for target in _resolve(mod, path, child):
                        if target != mod:
                            found.add((target, child.lineno, inner))
                visit(child, inner)
        visit(tree, False)
        graph[mod] = found
    return graph


GRAPH = _imports()


def _under(mod, *prefixes):
    return any(mod == p or mod.startswith(p + ".") for p in prefixes)


def _violations(sources, forbidden, allow=lambda src, dst, line, in_fn: False):
    return sorted(f"{src}:{line} imports {dst}" for src, edges in GRAPH.items() if _under(src, *sources)
                  for dst, line, in_fn in edges
                  if _under(dst, *forbidden) and not allow(src, dst, line, in_fn))


def test_backends_import_no_model_training_or_application():
    assert _violations(["fastmom.backends"], ["fastmom.network", "fastmom.layers", "fastmom.params",
                       "fastmom.optim", "fastmom.train", "fastmom.checkpoint", "fastmom.convergence",
                       "fastmom.cli", "fastmom.data", "fastmom.models"]) == []


def test_model_imports_no_training_io_or_application():
    """The model knows neither its training loop nor its file format, except network3's
    own methods: ``Network.SGD`` reaches ``fastmom.train`` and ``Network.save``/``load``
    the file format inside the method (neither imports the model back)."""
    network3_methods = {"fastmom.train", "fastmom.checkpoint"}

    def allow(src, dst, line, in_fn):
        return src == "fastmom.network" and in_fn and dst in network3_methods
    assert _violations(list(MODEL), ["fastmom.train", "fastmom.checkpoint", "fastmom.convergence",
                                     "fastmom.cli", "fastmom.data", "fastmom.models"], allow) == []


def test_training_and_file_format_never_import_the_network():
    assert _violations(["fastmom.train", "fastmom.checkpoint"],
                       ["fastmom.network", "fastmom.convergence", "fastmom.cli"]) == []


def test_leaves_import_nothing_of_fastmom_but_leaves():
    bad = sorted(f"{src} imports {dst}" for src in LEAVES for dst, _, _ in GRAPH[src]
                 if dst not in LEAVES)
    assert bad == []


def test_data_is_independent_of_model_and_training():
    assert _violations(["fastmom.data"], ["fastmom.network", "fastmom.layers", "fastmom.train",
                                          "fastmom.backends", "fastmom.convergence", "fastmom.cli"]) == []


def test_only_the_entry_points_import_the_applications():
    """``cli`` and ``convergence`` are applications: only entry points import them."""
    entry = ("fastmom.__main__", "fastmom.cli", "fastmom.convergence")
    bad = sorted(f"{src}:{line} imports {dst}" for src, edges in GRAPH.items() if not _under(src, *entry)
                 for dst, line, _ in edges if _under(dst, "fastmom.cli", "fastmom.convergence"))
    assert bad == []


def test_no_module_imports_the_package_root():
    """``fastmom/__init__.py`` is the composition root: importing it from inside would
    close a circle through every module it imports."""
    bad = sorted(f"{src}:{line}" for src, edges in GRAPH.items() for dst, line, _ in edges
                 if dst == "fastmom" and src != "fastmom")
    assert bad == []


def test_no_import_circle():
    edges = {m: {d for d, _, _ in e if d in MODULES and not m.startswith(d + ".")}
             for m, e in GRAPH.items()}
    state, stack, cycles = {}, [], []

    def dfs(m):
        state[m] = 1
        stack.append(m)
        for d in sorted(edges.get(m, ())):
            if state.get(d) == 1:
                cycles.append(stack[stack.index(d):] + [d])
            elif d not in state:
                dfs(d)
        stack.pop()
        state[m] = 2
    for m in sorted(edges):
        if m not in state:
            dfs(m)
    assert cycles == []


@pytest.mark.parametrize("mod", sorted(MODULES))
def test_module_size(mod):
    n = len(MODULES[mod].read_text().splitlines())
    assert n <= MAX_MODULE_LINES, f"{mod} has {n} lines"


def test_function_size():
    long = []
    for mod, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long.append(f"{mod}.{node.name} ({n} lines)")
    assert long == []


def test_the_rules_see_the_imports():
    """The checks above must be able to fail: the graph holds the known edges."""
    assert ("fastmom.backends._checks" in {d for d, _, _ in GRAPH["fastmom.layers"]})
    assert any(d == "fastmom.train" and in_fn for d, _, in_fn in GRAPH["fastmom.network"])
    assert "fastmom.network" in {d for d, _, _ in GRAPH["fastmom"]}
