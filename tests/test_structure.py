"""The structure docs/architecture.md describes, checked from the source with ``ast`` (no import runs):
export depends on runtime and never the reverse, the modules import each other without a cycle,
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


def test_runtime_never_imports_export():
    """runtime/ opens artifacts; export/ makes them (and may open them through runtime/ for parity)."""
    bad = {(m, t) for m in MODULES if m.startswith("edgecat.runtime")
           for t in _imports(m, top_level_only=False) if t.startswith("edgecat.export")}
    assert not bad, f"runtime -> export imports: {sorted(bad)}"


def test_no_import_cycle_at_module_level():
    graph = {m: _imports(m, top_level_only=True) for m in MODULES}
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                cycle = path[path.index(t):] + [t]
                pytest.fail(f"import cycle: {' -> '.join(cycle)}")
            if t not in state:
                visit(t, path + [t])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])


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
