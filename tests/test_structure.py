"""The structure docs/architecture.md describes, checked from the source with ``ast`` (no import runs),
imports inside functions included: every module sits in one layer and imports none above it
(runtime/ never reaches export/ or the auto policy), the modules import each other without a cycle,
and every artifact key in the code is one of the registry's."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from edgecat import artifacts

ROOT = Path(__file__).resolve().parents[1] / "edgecat"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _target(name: str) -> str | None:
    """The edgecat module an imported name lands in (``from edgecat import artifacts`` -> edgecat.artifacts)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(module: str, top_level_only: bool) -> set[str]:
    """edgecat modules ``module`` imports: every import, or only those run when it is imported."""
    tree = ast.parse(MODULES[module].read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
    out: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            names = [f"{base}.{a.name}" for a in node.names] + [base]
        else:
            continue
        out |= {t for n in names if n.startswith("edgecat") and (t := _target(n)) and t != module}
    return out


def test_the_walk_sees_the_layers():
    assert {"edgecat.artifacts", "edgecat.runtime.cuda", "edgecat.export.tensorrt", "edgecat.validate"} <= set(MODULES)
    assert "edgecat.runtime.tensorrt.loader" in _imports("edgecat.export.tensorrt", top_level_only=True)


def test_every_edgecat_import_names_a_module_that_exists():
    """A moved module leaves no caller behind (``from edgecat.runtime.keras_runtime import ...``)."""
    missing = set()
    for m, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and not node.level and (node.module or "").startswith("edgecat"):
                names = [node.module] if node.module in MODULES else []
                if not names:
                    missing.add((m, node.module))
            elif isinstance(node, ast.Import):
                missing |= {(m, a.name) for a in node.names if a.name.startswith("edgecat") and a.name not in MODULES}
    assert not missing, sorted(missing)


#: the layers, lowest first: a module may import its own layer and those below, never one above.
#: Every edgecat module is in exactly one (a new module must be placed here, as docs/architecture.md does).
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("base", ("edgecat", "edgecat.errors", "edgecat.redact", "edgecat.log", "edgecat.fsutil", "edgecat.artifacts",
              "edgecat.backends", "edgecat.bundle_schema", "edgecat.bundle", "edgecat.config", "edgecat.machine",
              "edgecat.timing", "edgecat.imaging", "edgecat.data", "edgecat.splits", "edgecat.synthetic",
              "edgecat.validate", "edgecat.int8_guard", "edgecat.signing", "edgecat.weights", "edgecat.plots",
              "edgecat.input_pipeline")),
    ("runtime", ("edgecat.runtime",)),
    ("model and export", ("edgecat.models", "edgecat.feature_cache", "edgecat.export")),
    ("applications", ("edgecat.select", "edgecat.bench", "edgecat.evaluate", "edgecat.predict", "edgecat.stream",
                      "edgecat.checks", "edgecat.train", "edgecat.train_finish")),
    ("front", ("edgecat.api", "edgecat.cli", "edgecat.demo", "edgecat.__main__")),
)


def layer_of(module: str) -> int:
    """Index in LAYERS of ``module``: a package entry covers its submodules (the longest entry wins);
    ``edgecat`` itself stands only for the package's ``__init__``."""
    best: tuple[int, int] | None = None
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            covers = module == p or (p != "edgecat" and module.startswith(p + "."))
            if covers and (best is None or len(p) > best[1]):
                best = (i, len(p))
    if best is None:
        raise AssertionError(f"{module} is in no layer: place it in LAYERS (tests/test_structure.py)")
    return best[0]


def import_graph() -> dict[str, set[str]]:
    """Every edgecat import of every module, those inside functions included (they run too)."""
    return {m: _imports(m, top_level_only=False) for m in MODULES}


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """``a (layer) -> b (layer)`` for each import of a higher layer (a module in no layer is named as such)."""
    def name(m: str) -> str:
        try:
            return LAYERS[layer_of(m)][0]
        except AssertionError:
            return "no layer"

    def rank(m: str) -> int:
        try:
            return layer_of(m)
        except AssertionError:
            return -1

    return sorted(f"{m} ({name(m)}) -> {t} ({name(t)})"
                  for m, targets in graph.items() for t in targets if rank(t) > rank(m) or rank(m) < 0)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every set of modules that import each other in a circle (strongly connected components of more
    than one module, or a module importing itself), each sorted; Tarjan's algorithm."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(m: str) -> None:
        index[m] = low[m] = len(index)
        stack.append(m)
        on_stack.add(m)
        for t in sorted(graph.get(m, ())):
            if t not in index:
                visit(t)
                low[m] = min(low[m], low[t])
            elif t in on_stack:
                low[m] = min(low[m], index[t])
        if low[m] == index[m]:
            group = []
            while True:
                t = stack.pop()
                on_stack.discard(t)
                group.append(t)
                if t == m:
                    break
            if len(group) > 1 or m in graph.get(m, ()):
                found.append(sorted(group))

    for m in sorted(graph):
        if m not in index:
            visit(m)
    return sorted(found)


def test_every_module_has_a_layer():
    for m in MODULES:
        layer_of(m)
    with pytest.raises(AssertionError, match="in no layer"):
        layer_of("edgecat.autoselect")  # the package name alone places nothing


def test_the_walk_sees_imports_inside_functions():
    """edgecat.evaluate opens its runtime from inside a function: a top-level-only walk misses it."""
    assert "edgecat.select" not in _imports("edgecat.evaluate", top_level_only=True)
    assert "edgecat.select" in import_graph()["edgecat.evaluate"]


def test_no_module_imports_a_higher_layer():
    """runtime/ never reaches the auto policy or export/; base modules reach neither."""
    bad = upward_imports(import_graph())
    assert not bad, "imports of a higher layer:\n" + "\n".join(bad)


def test_no_import_cycle():
    found = cycles(import_graph())
    assert not found, "modules that import each other in a circle:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_the_checks_catch_what_they_look_for():
    """The two checks on a made-up graph: a circle through a function-level import, and runtime -> export."""
    graph = {"edgecat.runtime": {"edgecat.select"}, "edgecat.select": {"edgecat.export.onnx"},
             "edgecat.export.onnx": {"edgecat.runtime"}}
    graph["edgecat.models"] = {"edgecat.runtime.keras.loader"}
    graph["edgecat.runtime.keras.loader"] = {"edgecat.models"}
    assert cycles(graph) == [["edgecat.export.onnx", "edgecat.runtime", "edgecat.select"],
                             ["edgecat.models", "edgecat.runtime.keras.loader"]]
    assert upward_imports(graph) == ["edgecat.runtime (runtime) -> edgecat.select (applications)",
                                     "edgecat.runtime.keras.loader (runtime) -> edgecat.models (model and export)"]


def test_registry_is_consistent():
    files = [a.file for a in artifacts.ARTIFACTS.values()]
    assert len(files) == len(set(files)), "two artifact kinds share a file name"
    for a in artifacts.ARTIFACTS.values():
        assert a.precision in artifacts.PRECISIONS
        assert a.made_from is None or a.made_from in artifacts.ARTIFACTS, a.key
        cmd = artifacts.export_command("runs/x", a.key)
        assert re.fullmatch(r"edgecat (train \.\.\. --out runs/x|export runs/x( --[a-z0-9-]+( [A-Z0-9a-z]+)?)+)", cmd), cmd
    assert [a.key for a in artifacts.scored()][:4] == ["onnx-fp32", "onnx-fp16", "onnx-int8", "onnx-int8-trt"]
    with pytest.raises(Exception, match="unknown artifact"):
        artifacts.kind("onnx-bf16")


def _string_constants(path: Path) -> set[str]:
    return {n.value for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.Constant)
            and isinstance(n.value, str)}


def test_artifact_keys_and_files_are_named_only_in_the_registry():
    """A key ("onnx-fp16") or bundle file name ("model.int8.onnx") spelled out elsewhere is a second
    place that must change with the registry: modules ask artifacts.py instead."""
    names = {a.key for a in artifacts.ARTIFACTS.values() if "-" in a.key}
    names |= {a.file for a in artifacts.ARTIFACTS.values() if "{" not in a.file}
    # Triton's repository layout wants its own file names (<model>/1/model.onnx), not the bundle's
    allowed = {("edgecat.export.triton", "model.onnx")}
    found = {(m, s) for m, p in MODULES.items() if m != "edgecat.artifacts"
             for s in _string_constants(p) if s in names} - allowed
    assert not found, f"spelled out outside edgecat/artifacts.py: {sorted(found)}"


def test_every_add_artifact_key_is_registered():
    keys = set()
    for path in MODULES.values():
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "add_artifact"
                    and node.args and isinstance(node.args[0], ast.Constant)):
                keys.add(node.args[0].value)
    assert keys <= set(artifacts.ARTIFACTS), keys - set(artifacts.ARTIFACTS)
