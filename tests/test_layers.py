"""The packages depend one way, and no function is longer than the project allows.

Layers, lowest first (a module may import only from its own layer or a lower one):

0. the arithmetic specification: ``cnnforge.sim.golden``, ``cnnforge.sim.winograd``,
   ``cnnforge.sim.softmax`` (pure NumPy;
   every layer above follows it, so it sits below them all and imports nothing of cnnforge);
1. front end: ``cnnforge.hw.frontend`` (network description, ONNX import, quantizer) and the
   bundled examples;
2. models: ``cnnforge.hw.models`` (the cycle model and the schedule both the planner and the
   RTL follow);
3. compiler: ``cnnforge.hw.compiler`` (tiling, allocation, ROM images, descriptors, devices);
4. RTL: ``cnnforge.hw.rtl`` (Amaranth components);
5. boards: ``cnnforge.boards`` (tops, host link, synthesis, flashing);
6. simulation: the rest of ``cnnforge.sim`` (Verilator/cocotb runners, Amaranth-simulator
   wrappers, the ONNX Runtime reference);
7. tools: ``cnnforge.hw.tools`` (command line, exploration).

Every import of a cnnforge module sits at module level (none hidden in a function), and the
modules form no import cycle.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {"cnnforge.hw": "hw", "cnnforge.sim": "sim", "cnnforge.boards": "boards",
            "cnnforge.examples.digits": "examples/digits"}
LAYERS = [  # (prefix, layer): the longest matching prefix decides
    ("cnnforge.hw", 0),
    ("cnnforge.sim.golden", 0), ("cnnforge.sim.winograd", 0), ("cnnforge.sim.softmax", 0),
    ("cnnforge.hw.frontend", 1), ("cnnforge.examples", 1),
    ("cnnforge.hw.models", 2),
    ("cnnforge.hw.compiler", 3),
    ("cnnforge.hw.rtl", 4),
    ("cnnforge.boards", 5),
    ("cnnforge.sim", 6),
    ("cnnforge.hw.tools", 7),
]
#: Longest function or method in hw/, sim/, boards/ (lines, decorators and docstring included).
MAX_FUNCTION_LINES = 120


def layer_of(module):
    best = max((p for p, _ in LAYERS if module == p or module.startswith(p + ".")), key=len,
               default=None)
    if best is None:
        raise AssertionError(f"{module} belongs to no layer: add it to LAYERS")
    return dict(LAYERS)[best]


def modules():
    """``{dotted name: (path, is_package)}`` of every module of the installed packages."""
    found = {}
    for pkg, folder in PACKAGES.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT / folder).with_suffix("")
            parts = [] if rel.parts == ("__init__",) else list(rel.parts)
            is_pkg = bool(parts) and parts[-1] == "__init__"
            if is_pkg:
                parts = parts[:-1]
            found[".".join([pkg, *parts])] = (path, is_pkg or not parts)
    return found


def imports(name, path, is_pkg, known):
    """``[(imported module, line, inside a function)]`` of the cnnforge modules ``name`` imports."""
    tree = ast.parse(path.read_text(), str(path))
    found = []

    def visit(node, in_function):
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                       ast.Lambda))
            if isinstance(child, ast.Import):
                found.extend((a.name, child.lineno, in_function) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    pkg = name.split(".") if is_pkg else name.split(".")[:-1]
                    pkg = pkg[:len(pkg) - child.level + 1]
                    base = ".".join(pkg + ([base] if base else []))
                for a in child.names:
                    sub = f"{base}.{a.name}"
                    found.append((sub if sub in known else base, child.lineno, in_function))
            visit(child, nested)

    visit(tree, False)
    return [(mod, line, inf) for mod, line, inf in found if mod.startswith("cnnforge.")]


@pytest.fixture(scope="module")
def graph():
    known = modules()
    return {name: imports(name, path, is_pkg, known) for name, (path, is_pkg) in known.items()}


def test_every_module_has_a_layer(graph):
    for name in graph:
        layer_of(name)


def test_imports_go_down_the_layers(graph):
    back = [f"{src} (layer {layer_of(src)}) imports {dst} (layer {layer_of(dst)}) on line {line}"
            for src, deps in graph.items() for dst, line, _ in deps
            if layer_of(dst) > layer_of(src)]
    assert not back, "\n".join(back)


def test_no_import_inside_a_function(graph):
    hidden = [f"{src} imports {dst} inside a function on line {line}"
              for src, deps in graph.items() for dst, line, inside in deps if inside]
    assert not hidden, "\n".join(hidden)


def test_no_import_cycle(graph):
    edges = {src: {dst for dst, _, _ in deps if dst in graph and dst != src}
             for src, deps in graph.items()}
    state, stack, cycles = {}, [], []

    def walk(node):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                walk(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            walk(node)
    assert not cycles, "\n".join(cycles)


def function_lengths():
    """``[(lines, "path:line name")]`` of every function and method in hw/, sim/, boards/."""
    out = []
    for folder in ("hw", "sim", "boards"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            tree = ast.parse(path.read_text(), str(path))
            for node in ast.walk(tree):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    start = min([node.lineno] + [d.lineno for d in node.decorator_list])
                    out.append((node.end_lineno - start + 1,
                                f"{path.relative_to(ROOT)}:{node.lineno} {node.name}"))
    return sorted(out, reverse=True)


def test_no_function_is_too_long():
    long = [f"{where}: {n} lines" for n, where in function_lengths() if n > MAX_FUNCTION_LINES]
    assert not long, "\n".join(long)


if __name__ == "__main__":   # the ten longest functions, for the notes
    for n, where in function_lengths()[:10]:
        print(f"{n:5d}  {where}")
