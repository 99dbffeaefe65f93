"""`edgecat checks`: what can run here, found by real probes (no mocks), and the choice it leads to."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgecat.checks import Checks, choose, run_checks, summary_lines
from edgecat.cli import main


def test_report_probes_this_machine(tmp_path) -> None:
    import cv2
    import onnxruntime as ort

    report = run_checks(tmp_path)
    assert report.onnxruntime["version"] == ort.__version__
    assert report.onnxruntime["providers"] == ort.get_available_providers()
    assert report.opencv["version"] == cv2.__version__
    build = cv2.getBuildInformation()
    assert report.opencv["ffmpeg"] == ("FFMPEG:" in build and "YES" in build.split("FFMPEG:")[1].split("\n")[0])
    from edgecat.stream.readers import gstreamer_support

    assert report.opencv["gstreamer"] is (gstreamer_support() is not None)
    assert all(c.startswith("/dev/video") for c in report.cameras)
    # each figure is this machine's, measured where it was asked to be: read here from the kernel's
    # own files and calls, not through the library the probe uses
    import importlib.util
    import os

    from conftest import has_gpu

    assert report.memory["disk_path"] == str(tmp_path.resolve())
    vfs = os.statvfs(tmp_path)
    assert report.memory["disk_free_gb"] == pytest.approx(vfs.f_bavail * vfs.f_frsize / 1e9, abs=1.0)
    assert 0 < report.memory["ram_available_gb"] <= report.memory["ram_total_gb"]
    assert 1 <= report.cpu["physical_cores"] <= report.cpu["logical_cores"]
    assert 1 <= report.cpu["usable_cores"] <= report.cpu["physical_cores"]
    meminfo, cpuinfo = Path("/proc/meminfo"), Path("/proc/cpuinfo")
    if meminfo.exists():  # Linux: MemTotal in KiB
        kib = int(re.search(r"^MemTotal:\s+(\d+) kB", meminfo.read_text(), re.M).group(1))
        assert report.memory["ram_total_gb"] == pytest.approx(kib * 1024 / 1e9, abs=0.06)
    if cpuinfo.exists():  # one "processor" entry per logical CPU
        assert report.cpu["logical_cores"] == len(re.findall(r"^processor\s*:", cpuinfo.read_text(), re.M))
    trt_usable = importlib.util.find_spec("tensorrt") is not None and "error" not in report.tensorrt
    assert report.tensorrt["installed"] is trt_usable, report.tensorrt
    assert report.gpu["found"] is has_gpu(), report.gpu
    assert report.choice["default_backend"] == "auto" and report.choice["default_precision"] == "auto"
    assert report.choice["fastest_backend"] in ("onnxruntime", "onnxruntime-cuda", "tensorrt")


def _fake(**changes) -> Checks:
    base = Checks(edgecat="0", python="3", platform="x", tensorflow={"installed": False},
                  onnxruntime={"installed": True, "version": "1", "providers": ["CPUExecutionProvider"]},
                  tensorrt={"installed": False, "version": None}, openvino={"installed": False, "devices": []},
                  litert={"installed": False, "version": None}, gpu={"found": False, "name": None},
                  opencv={"installed": False}, cameras=[], memory={}, cpu={"flags": ["avx2"]})
    return dataclasses.replace(base, **changes)


def test_choice_follows_what_is_installed() -> None:
    assert choose(_fake())["fastest_precision"] == "fp32"  # no VNNI: int8 gains little
    assert choose(_fake(cpu={"flags": ["avx2", "avx512_vnni"]}))["fastest_precision"] == "int8"
    gpu = {"found": True, "name": "Orin", "compute_capability": "8.7"}
    cuda = {"installed": True, "version": "1", "providers": ["CUDAExecutionProvider", "CPUExecutionProvider"]}
    assert choose(_fake(gpu=gpu, onnxruntime=cuda))["fastest_backend"] == "onnxruntime-cuda"
    pick = choose(_fake(gpu=gpu, onnxruntime=cuda, tensorrt={"installed": True, "version": "10.3"}))
    assert pick["fastest_backend"] == "tensorrt" and "Orin" in pick["why"]
    assert pick["bench"] == "edgecat bench BUNDLE --backend tensorrt --precision int8"


def test_cli_table_and_json() -> None:
    res = CliRunner().invoke(main, ["checks"])
    assert res.exit_code == 0, res.output
    for what, _ in summary_lines(run_checks()):
        assert what in res.stdout
    for needle in ("ONNX Runtime", "TensorRT", "GPU", "GStreamer", "FFmpeg", "cameras", "CPU", "fastest here"):
        assert needle in res.stdout
    res = CliRunner().invoke(main, ["checks", "--json"])
    data = json.loads(res.stdout)
    assert set(data) >= {"tensorflow", "onnxruntime", "tensorrt", "gpu", "opencv", "cameras", "memory", "cpu", "choice"}


def test_openvino_and_litert_rows() -> None:
    """The two CPU backends auto may pick: their versions, and the devices OpenVINO can compile for."""
    import importlib.metadata

    res = CliRunner().invoke(main, ["checks"])
    assert res.exit_code == 0, res.output
    rows = {ln.split()[0]: ln for ln in res.stdout.splitlines() if ln.strip()}
    data = json.loads(CliRunner().invoke(main, ["checks", "--json"]).stdout)
    try:
        import openvino as ov
    except ImportError:
        assert data["openvino"]["installed"] is False and "absent" in rows["OpenVINO"]
    else:
        devices = list(ov.Core().available_devices)
        assert data["openvino"] == {**data["openvino"], "installed": True, "devices": devices,
                                    "version": importlib.metadata.version("openvino")}
        assert importlib.metadata.version("openvino") in rows["OpenVINO"]
        assert all(d in rows["OpenVINO"] for d in devices) and "devices:" in rows["OpenVINO"]
    try:
        from ai_edge_litert.interpreter import Interpreter  # noqa: F401
    except ImportError:
        assert data["litert"]["installed"] is False and "absent" in rows["LiteRT"]
    else:
        version = importlib.metadata.version("ai-edge-litert")
        assert data["litert"] == {"installed": True, "version": version}
        assert version in rows["LiteRT"]
    absent = summary_lines(dataclasses.replace(
        run_checks(), openvino={"installed": False, "version": None, "devices": []},
        litert={"installed": False, "version": "2.0", "error": "libLiteRt.so: cannot open"}))
    lines = dict(absent)
    assert lines["OpenVINO"] == "absent: pip install 'edgecat[openvino]'"
    assert "2.0 installed, does not load: libLiteRt.so" in lines["LiteRT"]
