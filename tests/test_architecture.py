"""The architecture, checked: each object owns its state, and the package's modules import
each other without a circle.

Reach-ins: outside an object's own methods (``self``/``cls``), no code in ``fastvae/`` reads
or writes an underscore attribute (``obj._x``), and no module imports an underscore name
from another (``from .m import _x``).  There is no allow-list: a seam that needs another
object's state gets a public name.  Dunder names (``__version__``, ``__init__``) are public.

Import circles: the graph of every import in the package (module-level and inside
functions alike: a lazy import still ties the two modules together) has no cycle.

Layers: the package stacks, and every import goes down or stays on its floor (lazy ones
included).  From the bottom: backends (with the kernel contract: ``codes``, ``special``,
``aligned``) < core (the engine) < io (data, checkpoints, export) < training < the front
ends (``fastvae.VAE``'s methods that train, the CLI, sklearn, tabular, ...).  Below the
front ends no module names a backend: core, io and training ask the switch
(``fastvae.backends``) and read the contract, nothing else of ``backends/``.
"""
from __future__ import annotations

import ast
from pathlib import Path

from fastvae.core.blocks import BLOCKS

PACKAGE = Path(__file__).resolve().parents[1] / "fastvae"


def _private(name):
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _modules(root=PACKAGE):
    """{dotted module name: (path, is_package)} of every .py file under ``root``."""
    out = {}
    for f in sorted(root.rglob("*.py")):
        parts = list(f.relative_to(root.parent).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_pkg else parts)] = (f, is_pkg)
    return out


def reach_ins(source, filename="<source>"):
    """[(line, text)] of every reach-in in one module's source (see the module docstring)."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Attribute) and _private(node.attr):
            owner = node.value
            if not (isinstance(owner, ast.Name) and owner.id in ("self", "cls")):
                found.append((node.lineno, ast.unparse(node)))
        elif isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if _private(alias.name):
                    found.append((node.lineno, f"from {'.' * node.level}{node.module or ''} "
                                               f"import {alias.name}"))
            if node.module and any(_private(p) for p in node.module.split(".")):
                found.append((node.lineno, f"from {'.' * node.level}{node.module} import ..."))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "fastvae" and any(_private(p) for p in parts):
                    found.append((node.lineno, f"import {alias.name}"))
    return sorted(found)


def import_graph(modules):
    """{module: set of package modules it imports}; ``from pkg import name`` counts as an
    import of ``pkg.name`` when that is a module, else of ``pkg``."""
    graph = {}
    for name, (path, is_pkg) in modules.items():
        here = name.split(".") if is_pkg else name.split(".")[:-1]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = here[:len(here) - node.level + 1]
                    mod = ".".join(base + ([node.module] if node.module else []))
                else:
                    mod = node.module or ""
                targets = [f"{mod}.{a.name}" for a in node.names] + [mod]
            else:
                continue
            for t in targets:
                while t and t not in modules:  # a name inside a module: the module
                    t = t.rpartition(".")[0]
                if t and t != name:
                    edges.add(t)
                    break  # (the first hit of an ImportFrom is the most specific)
        graph[name] = edges
    return graph


#: the floors, from the bottom: (name, module prefixes); a module on no floor is a front end
LAYERS = (("backends", ("fastvae.version", "fastvae.backends")),
          ("core", ("fastvae.core",)),
          ("io", ("fastvae.io",)),
          ("training", ("fastvae.training",)),
          ("front ends", ("",)))
#: what core, io and training may import of backends/: the switch and the kernel contract
SWITCH = ("fastvae.backends", "fastvae.backends.codes", "fastvae.backends.special",
          "fastvae.backends.aligned")


def layer_of(module, layers=LAYERS):
    """The index of ``module``'s floor in ``layers`` (the longest matching prefix)."""
    best, length = None, -1
    for i, (_, prefixes) in enumerate(layers):
        for p in prefixes:
            if (module == p or module.startswith(p + ".") or p == "") and len(p) > length:
                best, length = i, len(p)
    return best


def layering_faults(graph, layers=LAYERS, switch=SWITCH):
    """["a -> b (core imports training)", ...]: every import that goes up a floor, and every
    import of a backend by name from a floor between the backends and the front ends."""
    found = []
    top, bottom = len(layers) - 1, 0
    for a in sorted(graph):
        la = layer_of(a, layers)
        for b in sorted(graph[a]):
            lb = layer_of(b, layers)
            if lb > la:
                found.append(f"{a} -> {b} ({layers[la][0]} imports {layers[lb][0]})")
            elif lb == bottom < la < top and b not in switch and \
                    b.startswith(layers[bottom][1][-1] + "."):
                found.append(f"{a} -> {b} ({layers[la][0]} names a backend; ask the switch)")
    return found


def cycles(graph):
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
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

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_module_reaches_into_another_objects_state():
    found = [f"{path.relative_to(PACKAGE.parent)}:{line}: {text}"
             for path, _ in _modules().values()
             for line, text in reach_ins(path.read_text(), str(path))]
    assert not found, "reach-ins (give the seam a public name):\n" + "\n".join(found)


def test_the_package_has_no_import_circle():
    circles = cycles(import_graph(_modules()))
    assert not circles, "import circles: " + "; ".join(" <-> ".join(c) for c in circles)


#: the likelihood's block classes (fastvae.core.blocks)
BLOCK_CLASSES = {"Block"} | {cls.__name__ for cls in BLOCKS.values()}


def block_type_tests(source, filename="<source>"):
    """[(line, text)] of every isinstance(x, <a block class>) in a module's source."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "isinstance" \
                and len(node.args) == 2:
            kinds = node.args[1].elts if isinstance(node.args[1], ast.Tuple) else [node.args[1]]
            if any(getattr(k, "id", getattr(k, "attr", None)) in BLOCK_CLASSES for k in kinds):
                found.append((node.lineno, ast.unparse(node)))
    return found


def test_the_engine_asks_a_block_never_tests_its_type():
    """A block owns its behaviour (issue 30): the engine (core/, training/) asks it
    (Block.invalid, .aux, .enc_mode, ...) and never tests which block it is; isinstance
    matches subclasses, so such a test silently takes NegBinomial for Poisson."""
    found = [f"{path.relative_to(PACKAGE.parent)}:{line}: {text}"
             for name, (path, _) in _modules().items()
             if name.split(".")[1:2] in (["core"], ["training"]) and name != "fastvae.core.blocks"
             for line, text in block_type_tests(path.read_text(), str(path))]
    assert not found, "block type tests in the engine (ask the block):\n" + "\n".join(found)


def test_the_block_type_scan_finds_one():
    src = ("def f(b, Gaussian, blocks):\n"
           "    if isinstance(b, (int, blocks.NegBinomial)):\n"
           "        return isinstance(b, Gaussian) or isinstance(b, str)\n")
    assert [line for line, _ in block_type_tests(src)] == [2, 3]


def test_every_import_goes_down_the_layers():
    faults = layering_faults(import_graph(_modules()))
    assert not faults, "imports against the layers:\n" + "\n".join(faults)


# ---------------------------------------------------------- the checks can fail
def test_the_reach_in_scan_finds_each_kind():
    src = ("class A:\n"
           "    def f(self, other):\n"
           "        self._mine = 1\n"            # own state: fine
           "        other._theirs = 2\n"          # write into another object
           "        return model._bk.xp, self.__class__, cls._x\n"
           "from .state import _Guard\n"
           "from ._nbmath import vexp\n"
           "import fastvae._private\n")
    got = [text for _, text in reach_ins(src)]
    assert got == ["other._theirs", "model._bk", "from .state import _Guard",
                   "from ._nbmath import ...", "import fastvae._private"], got


def test_the_cycle_finder_finds_a_lazy_circle(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .sub import b\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    from ..c import g\n")
    (pkg / "c.py").write_text("from . import a\nfrom .sub.b import f\n")
    (pkg / "d.py").write_text("from .a import x\n")
    graph = import_graph(_modules(pkg))
    assert graph["pkg.a"] == {"pkg.sub.b"} and graph["pkg.d"] == {"pkg.a"}
    assert cycles(graph) == [["pkg.a", "pkg.c", "pkg.sub.b"]]


def test_the_layer_check_finds_a_lazy_upward_import_and_a_backend_by_name(tmp_path):
    pkg = tmp_path / "fastvae"
    for d in ("backends", "backends/cpu", "core", "io", "training", "cli"):
        (pkg / d).mkdir(parents=True, exist_ok=True)
        (pkg / d / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("from .cli import run\n")
    (pkg / "backends" / "codes.py").write_text("X = 1\n")
    (pkg / "backends" / "cpu" / "dense.py").write_text("from ..codes import X\n")
    (pkg / "core" / "model.py").write_text("from ..backends.codes import X\n"
                                           "def fit():\n    from ..training import loop\n")
    (pkg / "io" / "data.py").write_text("from ..core import model\n")
    (pkg / "training" / "loop.py").write_text("from ..io import data\n"
                                              "from ..backends.cpu import dense\n")
    (pkg / "cli" / "run.py").write_text("from ..backends.cpu import dense\n"
                                        "from ..training import loop\n")
    graph = import_graph(_modules(pkg))
    assert layering_faults(graph) == [
        "fastvae.core.model -> fastvae.training.loop (core imports training)",
        "fastvae.training.loop -> fastvae.backends.cpu.dense (training names a backend; ask "
        "the switch)"]
