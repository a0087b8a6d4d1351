"""The house rules (docs/design.md, "The house"): each capability a room of its own, lower floors
never importing higher ones, no import circle (imports inside functions count: they run too),
no source file over 600 lines.

Read from the source with ``ast``, so a circle that only closes at run time, inside a function,
is found as well as one at import time.
"""

import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "segdeploy")
MAX_LINES = 600

# Lowest first. A room may import its own modules and any room on a lower floor, never one above.
FLOORS = {
    # the ground floor: errors, the card, the manifest, small helpers every room uses
    "_version": 0,
    "errors": 0,
    "_io": 0,
    "_deps": 0,
    "_cli": 0,
    "_native": 0,  # native libraries' stderr kept from the user (segpredict, segeval)
    "card": 0,
    "manifest": 0,
    "datasets": 0,
    "samples": 0,
    "models": 1,  # the zoo, BN folding, the model card a spec implies (torch)
    "engines": 2,  # builders, the device table, TensorRT's parser rules and API bridge, CUDA
    "plugins": 3,  # kernels, their host builds and compile checks
    "runtime": 4,  # Runtime, its backends, pre/post-processing, segpredict
    "export": 5,  # segexport's pipeline: fold, export, verify, quantize, choose the CPU engine
    "bench": 6,  # segbench (it exports zoo models for the torch/ONNX comparisons)
    "eval": 6,  # segeval
    "check": 7,  # segdeploy-check: the whole first contact with a device
    "serve": 7,  # segserve: a Triton server for an exported engine (python -m segdeploy.serve)
    "": 8,  # the package root: ``import segdeploy`` re-exports Runtime
}


def _modules():
    mods = {}
    for dirpath, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(dirpath, name)
                rel = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
                if rel.endswith(".__init__"):
                    rel = rel[: -len(".__init__")]
                mods[rel] = path
    return mods


def _imports(module, path, mods):
    """Every segdeploy module ``module`` imports, at the top or inside a function."""
    is_package = path.endswith("__init__.py")
    found = set()
    for node in ast.walk(ast.parse(open(path, encoding="utf-8").read(), path)):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = module.split(".") if is_package else module.split(".")[:-1]
                parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join(parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            for alias in node.names:
                sub = base + "." + alias.name
                names.append(sub if sub in mods else base)
        for name in names:
            while name and name not in mods:
                name = name.rpartition(".")[0]
            if name and name != module and name.startswith("segdeploy"):
                found.add(name)
    return found


def _graph():
    mods = _modules()
    return {m: _imports(m, p, mods) for m, p in mods.items()}


def _room(module):
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _cycles(graph):
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index, low, on_stack, stack, found = {}, {}, set(), [], []
    counter = [0]
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter[0]
        counter[0] += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter[0]
                    counter[0] += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_no_import_circle_even_through_imports_inside_functions():
    circles = _cycles(_graph())
    assert not circles, "import circles: " + "; ".join(" <-> ".join(c) for c in circles)


def test_the_cycle_finder_finds_a_circle_through_a_function_level_import():
    # the finder itself must be able to fail: a -> b at the top, b -> a inside a function
    graph = {"a": {"b"}, "b": {"a"}, "c": {"a"}}
    assert _cycles(graph) == [["a", "b"]]


def test_every_room_has_a_floor_and_no_floor_reaches_up():
    graph = _graph()
    unplaced = sorted(set(_room(m) for m in graph) - set(FLOORS))
    assert not unplaced, "rooms without a floor in tests/test_house.py: {}".format(unplaced)
    upward = sorted(
        "{} -> {}".format(m, t)
        for m, targets in graph.items()
        for t in targets
        if FLOORS[_room(t)] > FLOORS[_room(m)]
    )
    assert not upward, "lower floors importing higher ones: " + ", ".join(upward)


def _sources():
    for top in ("segdeploy", "tests", "scripts"):
        for dirpath, _, files in os.walk(os.path.join(ROOT, top)):
            for name in files:
                if name.endswith(".py"):
                    yield os.path.join(dirpath, name)


def test_no_source_file_over_600_lines():
    long = []
    for path in _sources():
        with open(path, encoding="utf-8") as f:
            count = sum(1 for _ in f)
        if count > MAX_LINES:
            long.append("{} ({} lines)".format(os.path.relpath(path, ROOT), count))
    assert not long, "split these where a room of their own shows: " + ", ".join(long)


@pytest.mark.parametrize("form", ["attribute", "from-import"])
def test_bench_complexity_stays_the_function_after_its_module_is_imported(form):
    # the counting module once had the function's name: importing it replaced the function on
    # the package, so the second call raised "'module' object is not callable"
    torch = pytest.importorskip("torch")
    import segdeploy.bench

    model = torch.nn.Conv2d(3, 4, 3, padding=1)
    for _ in range(2):
        if form == "attribute":
            result = segdeploy.bench.complexity(model, (8, 8))
        else:
            from segdeploy.bench import complexity

            result = complexity(model, (8, 8))
        assert (result.params, result.macs) == (4 * 3 * 9 + 4, 4 * 3 * 9 * 64)
