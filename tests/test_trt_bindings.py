"""Every TensorRT name edgecat's code uses, checked against the real Python bindings of TensorRT 10.3
(JetPack 6.1/6.2) and the newest 11.x, on a CPU.

PyPI's ``tensorrt-cu12-bindings`` wheels hold the compiled module (``tensorrt_bindings/tensorrt.so``).
It cannot be imported without libnvinfer, but its NUL-terminated strings name every class, method,
property, keyword and enum value pybind11 registers. The linker merges a string into the tail of a
longer one (``INT8`` is stored inside ``UINT8`` in 10.3), so a name is present when some string ENDS
with it. Names defined in Python (``nptype``, ``__version__``) come from the package's ``__init__.py``.

The names are read from the code with ``ast``: attribute chains on the module (``trt.X.Y``, also
``self._trt``), attributes and keywords used on the TensorRT objects the code holds (``builder``,
``network``, ``config``, ``parser``, ``profile``, ``runtime``, ``engine``, ``context``, ``logger``), and
the string names given to ``getattr``/``hasattr`` on them. A name one release lacks may appear only
as such a guarded string AND be listed in ``edgecat.runtime.tensorrt.loader.VERSION_GUARDED``.

The wheels are downloaded once with pip into ``$EDGECAT_TRT_BINDINGS_DIR`` (default: a folder in the
system temp directory, outside the repository); without a reachable registry the tests skip and say so.
"""

from __future__ import annotations

import ast
import functools
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import pytest

from edgecat.runtime.tensorrt.loader import VERSION_GUARDED

ROOT = Path(__file__).resolve().parents[1]
#: TensorRT 10.3: JetPack 6.1 and 6.2; 11.4.0.106: the newest 11.x on PyPI when this was written
RELEASES = ("10.3.0", "11.4.0.106")
#: variable (or attribute) names under which edgecat's TensorRT code holds TensorRT objects
TRT_MODULE = {"trt", "_trt"}
TRT_OBJECTS = {"builder", "network", "config", "parser", "profile", "runtime", "engine", "context", "logger"}
GUARDS = {"getattr", "hasattr"}


def cache_dir() -> Path:
    path = Path(os.environ.get("EDGECAT_TRT_BINDINGS_DIR")
                or Path(tempfile.gettempdir()) / f"edgecat-trt-bindings-{os.getuid() if hasattr(os, 'getuid') else 0}")
    path.mkdir(parents=True, exist_ok=True)
    return path


def wheel(version: str) -> Path:
    """The ``tensorrt-cu12-bindings`` wheel of ``version`` (x86_64, CPython 3.11: the strings are the
    same on every platform), from the cache or downloaded into it with pip."""
    folder = cache_dir()
    pattern = f"tensorrt_cu12_bindings-{version}-*.whl"
    found = sorted(folder.glob(pattern))
    if not found:
        cmd = [sys.executable, "-m", "pip", "download", f"tensorrt-cu12-bindings=={version}", "--no-deps",
               "--only-binary=:all:", "--python-version", "3.11", "--platform", "manylinux_2_28_x86_64",
               "--platform", "manylinux_2_17_x86_64", "--disable-pip-version-check", "-q", "-d", str(folder)]
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired) as exc:
            pytest.skip(f"cannot download tensorrt-cu12-bindings {version} from the package registry: {exc}")
        found = sorted(folder.glob(pattern))
        if r.returncode != 0 or not found:
            why = (r.stderr.strip().splitlines() or ["no wheel"])[-1]
            pytest.skip(f"cannot download tensorrt-cu12-bindings {version} from the package registry: {why}")
    return found[0]


def _module_names(source: str) -> set[str]:
    """Names the package's ``__init__.py`` defines at module level (``nptype``, ``__version__``...)."""
    out: set[str] = set()
    for node in ast.parse(source).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            out.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            out |= {t.id for t in targets if isinstance(t, ast.Name)}
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            out |= {(a.asname or a.name).split(".")[0] for a in node.names if a.name != "*"}
    return out


@functools.cache
def binding_strings(version: str) -> tuple[frozenset[str], frozenset[str]]:
    """(NUL-terminated strings of the compiled module, names the package's ``__init__.py`` defines)."""
    strings: set[str] = set()
    python: set[str] = set()
    with zipfile.ZipFile(wheel(version)) as z:
        for name in z.namelist():
            if name.startswith("tensorrt_bindings/") and name.endswith(".so"):
                data = z.read(name)
                strings |= {s.decode("ascii") for s in re.findall(rb"[\x21-\x7e][\x20-\x7e]*(?=\x00)", data)}
            elif name == "tensorrt_bindings/__init__.py":
                python |= _module_names(z.read(name).decode("utf-8", "replace"))
    assert strings, f"no compiled module in the {version} wheel"
    return frozenset(strings), frozenset(python)


def has_name(version: str, name: str) -> bool:
    strings, python = binding_strings(version)
    return name in python or any(s.endswith(name) for s in strings)


# ------------------------------------------------------------------------------ reading the code
def _held_as(node: ast.AST) -> str | None:
    """The name a value is held under: ``builder`` -> 'builder', ``self.context`` -> 'context'."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self":
        return node.attr
    return None


#: ids of AST nodes inside functions that bind ``trt`` to something else (a dict of findings, say)
_NOT_MODULE: set[int] = set()


def _is_module(node: ast.AST) -> bool:
    return _held_as(node) in TRT_MODULE and id(node) not in _NOT_MODULE


def _rebinds_trt(fn: ast.AST) -> bool:
    """Whether function ``fn`` assigns ``trt`` from something that is not TensorRT (``require_tensorrt()``,
    ``trt or require_tensorrt()`` and ``import tensorrt as trt`` keep it the module)."""
    for n in ast.walk(fn):
        if not isinstance(n, ast.Assign):
            continue
        for target in n.targets:
            names = [t for t in ast.walk(target) if isinstance(t, ast.Name) and t.id in TRT_MODULE]
            if not names:
                continue
            calls = {c.func.id for c in ast.walk(n.value) if isinstance(c, ast.Call) and isinstance(c.func, ast.Name)}
            if not isinstance(target, ast.Name) or "require_tensorrt" not in calls:
                return True
    return False


def _is_object(node: ast.AST) -> bool:
    """A TensorRT object: held as ``builder``, ``self.context``..., or what a method of one returns."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        return _is_object(node.func.value) or _chain(node.func) is not None
    return _held_as(node) in TRT_OBJECTS


def _chain(node: ast.AST) -> list[str] | None:
    """``trt.Logger.WARNING`` -> ['Logger', 'WARNING']; None when not rooted at the module."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute) and not _is_module(node):
        parts.append(node.attr)
        node = node.value
    return parts[::-1] if parts and _is_module(node) else None


def _guard_target(node: ast.AST) -> bool:
    """Whether a ``getattr``/``hasattr`` first argument is TensorRT: the module, one of its objects, a
    name chain on it, or a nested ``getattr`` on any of these."""
    if _is_module(node) or _is_object(node) or _chain(node) is not None:
        return True
    return (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "getattr"
            and bool(node.args) and _guard_target(node.args[0]))


def names_used(source: str) -> tuple[set[str], set[str]]:
    """(names used directly, names used only through getattr/hasattr) in one Python source."""
    direct: set[str] = set()
    guarded: set[str] = set()
    tree = ast.parse(source)
    _NOT_MODULE.clear()
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)) and _rebinds_trt(fn):
            _NOT_MODULE.update(id(n) for n in ast.walk(fn))
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            chain = _chain(node)
            if chain is not None:
                direct.update(chain)
            elif _is_object(node.value):
                direct.add(node.attr)
        elif isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Attribute) and (_is_object(func.value) or _chain(func) is not None):
                direct.update(k.arg for k in node.keywords if k.arg)
            if isinstance(func, ast.Name) and func.id in GUARDS and len(node.args) >= 2 \
                    and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str):
                if _guard_target(node.args[0]):
                    guarded.add(node.args[1].value)
    return direct, guarded - direct


def tensorrt_sources() -> dict[str, str]:
    """edgecat's modules that hold TensorRT objects: those that import it or ask for it."""
    out = {}
    for path in sorted((ROOT / "edgecat").rglob("*.py")):
        text = path.read_text()
        if re.search(r"^\s*import tensorrt\b|require_tensorrt\(\)", text, re.MULTILINE):
            out[str(path.relative_to(ROOT))] = text
    return out


def missing(direct: set[str], guarded: set[str], table: dict[str, str]) -> list[str]:
    """What a name check reports: each name (as ``name: release``) a release lacks, unless it is
    guarded and listed in ``table``; and guarded names no release has (a typo)."""
    out = []
    for name in sorted(direct | guarded):
        lacking = [v for v in RELEASES if not has_name(v, name)]
        listed = name in table or any(k.split(".")[-1] == name for k in table)
        if len(lacking) == len(RELEASES):
            out.append(f"{name}: in no release ({', '.join(RELEASES)})")
        elif lacking and not (name in guarded and listed):
            out.append(f"{name}: missing from TensorRT {', '.join(lacking)}"
                       + ("" if name in guarded else " and used without a guard"))
    return out


# ------------------------------------------------------------------------------ the tests
def test_the_code_reads_its_tensorrt_names():
    """The scanner finds what the TensorRT modules use (so a pass below is not vacuous)."""
    sources = tensorrt_sources()
    assert {"edgecat/export/tensorrt.py", "edgecat/runtime/tensorrt/loader.py",
            "edgecat/runtime/tensorrt/runner.py"} <= set(sources)
    direct, guarded = set(), set()
    for text in sources.values():
        d, g = names_used(text)
        direct |= d
        guarded |= g
    assert {"Builder", "OnnxParser", "create_network", "set_memory_pool_limit", "WORKSPACE", "clear_flag",
            "create_optimization_profile", "set_shape", "build_serialized_network", "set_timing_cache",
            "ignore_mismatch", "deserialize_cuda_engine", "create_execution_context", "num_io_tensors",
            "get_tensor_profile_shape", "set_input_shape", "execute_async_v3", "TensorIOMode", "INPUT",
            "nptype", "Logger", "WARNING"} <= direct
    assert {"NetworkDefinitionCreationFlag", "STRONGLY_TYPED", "TF32", "__version__"} <= guarded | direct


def test_every_tensorrt_name_edgecat_uses_exists_in_both_releases():
    for release in RELEASES:
        binding_strings(release)  # download (or skip, naming the release) before reading the code
    direct, guarded = set(), set()
    for text in tensorrt_sources().values():
        d, g = names_used(text)
        direct |= d
        guarded |= g
    assert missing(direct, guarded - direct, VERSION_GUARDED) == []


def test_name_check_catches_a_name_gone_in_11_and_honours_guards():
    """The check itself: ``BuilderFlag.FP16`` (TensorRT 10 only) fails used directly, or guarded but
    not listed; guarded and listed it passes. The linker's tail merging does not hide ``INT8``."""
    for release in RELEASES:
        binding_strings(release)
    assert has_name("10.3.0", "INT8") and has_name("10.3.0", "FP16") and not has_name("11.4.0.106", "FP16")
    assert not any(s == "INT8" for s in binding_strings("10.3.0")[0])  # only as the tail of UINT8
    direct, guarded = names_used("def f(trt, config):\n    config.set_flag(trt.BuilderFlag.FP16)\n")
    assert missing(direct, guarded, {}) == ["FP16: missing from TensorRT 11.4.0.106 and used without a guard"]
    src = "def f(trt, config):\n    if hasattr(trt.BuilderFlag, 'FP16'):\n        config.set_flag(getattr(trt.BuilderFlag, 'FP16'))\n"
    direct, guarded = names_used(src)
    assert "FP16" in guarded and "FP16" not in direct
    assert missing(direct, guarded, {}) == ["FP16: missing from TensorRT 11.4.0.106"]
    assert missing(direct, guarded, {"BuilderFlag.FP16": "TensorRT 10"}) == []
    direct, guarded = names_used("def f(engine):\n    engine.get_binding_index('x')\n")
    assert missing(direct, guarded, {}) == ["get_binding_index: in no release (10.3.0, 11.4.0.106)"]


def test_stand_in_tensorrt_enums_name_what_each_release_has():
    """The stand-in TensorRT of the build-settings tests, per major, against the real bindings: its
    enum members exist in that release, and what it leaves out of 11 is gone from 11."""
    from conftest import TRT_ENUMS

    for major, release in (("10", "10.3.0"), ("11", "11.4.0.106")):
        for enum, members in TRT_ENUMS[major].items():
            assert has_name(release, enum)
            assert [m for m in members if not has_name(release, m)] == [], (release, enum)
    for gone in ("FP16", "EXPLICIT_BATCH"):
        assert has_name("10.3.0", gone) and not has_name("11.4.0.106", gone)
