"""OpenVINO runtime on the bundle's own ONNX files (real openvino; skipped when it is not installed)."""

from __future__ import annotations

import numpy as np
import pytest

ov = pytest.importorskip("openvino", reason="openvino not installed (pip install 'edgecat[openvino]')")


def test_openvino_matches_onnxruntime_fp32_and_accepts_uint8(tiny_bundle):
    from edgecat.bundle import Bundle
    from edgecat.runtime import open_runtime

    b = Bundle.open(tiny_bundle)
    x = np.random.default_rng(1).integers(0, 256, (4, 48, 48, 3), dtype=np.uint8)
    with open_runtime(b, "onnxruntime", "fp32") as ort_rt:
        ref = ort_rt.infer(x)
    with open_runtime(b, "openvino", "fp32", threads=1) as rt:
        got_u8 = rt.infer(x)
        got_f32 = rt.infer(x.astype(np.float32))
        assert rt.last_inference_ms > 0 and rt.artifact_key == "onnx-fp32"
        one = rt.infer(x[0])  # a single HWC image is a batch of one
    assert got_u8.shape == ref.shape == (4, 2)
    assert np.max(np.abs(got_u8 - ref)) < 1e-4
    assert np.array_equal(got_u8, got_f32)
    assert one.shape == (1, 2) and np.allclose(one[0], got_u8[0], atol=1e-5)


def test_openvino_int8_throughput_hint_and_bad_hint(tiny_bundle, synth_data):
    from edgecat.bundle import Bundle
    from edgecat.errors import EdgecatError
    from edgecat.export.quantize import quantize_int8
    from edgecat.runtime import open_runtime

    b = Bundle.open(tiny_bundle)
    quantize_int8(b, "cpu", calib=synth_data / "train", calib_size=32)
    x = np.random.default_rng(2).integers(0, 256, (3, 48, 48, 3), dtype=np.uint8)
    with open_runtime(b, "onnxruntime", "int8") as ort_rt:
        ref = ort_rt.infer(x)
    with open_runtime(b, "openvino", "int8", hint="throughput") as rt:
        got = rt.infer(x)
        assert rt.artifact_key == "onnx-int8"
    # the same Q/DQ graph, but each runtime rounds its int8 kernels its own way, and an untrained
    # 48 px net amplifies one-step differences: a loose bound that still catches a wrong file/scale
    assert got.shape == (3, 2) and np.allclose(got.sum(axis=1), 1.0, atol=1e-5)
    assert np.max(np.abs(got - ref)) < 0.2
    with pytest.raises(EdgecatError, match="unknown OpenVINO hint"):
        open_runtime(b, "openvino", "fp32", hint="fastest")


def test_openvino_missing_says_how_to_install(tiny_bundle, monkeypatch):
    import sys

    from edgecat.bundle import Bundle
    from edgecat.errors import MissingDependencyError
    from edgecat.runtime import open_runtime

    monkeypatch.setitem(sys.modules, "openvino", None)  # import of a None entry raises ImportError
    with pytest.raises(MissingDependencyError, match=r"pip install 'edgecat\[openvino\]'"):
        open_runtime(Bundle.open(tiny_bundle), "openvino", "fp32")


def test_openvino_compiles_one_static_batch_per_size_with_the_dynamic_outputs(tiny_bundle):
    """The bundle's graph has a dynamic batch; each batch size a caller uses gets its own static
    compile (OpenVINO's CPU plugin is faster on static shapes), and the outputs do not change."""
    from edgecat.bundle import Bundle
    from edgecat.runtime import open_runtime

    b = Bundle.open(tiny_bundle)
    x = np.random.default_rng(3).integers(0, 256, (3, 48, 48, 3), dtype=np.uint8)
    with open_runtime(b, "openvino", "fp32", threads=1, static=False) as dyn:
        ref3, ref1 = dyn.infer(x), dyn.infer(x[:1])
        assert dyn.compiled_batches == [0]
    with open_runtime(b, "openvino", "fp32", threads=1) as rt:
        assert rt.compiled_batches == [1]  # batch 1 (predict, stream) is compiled when it opens
        got1, got3, again1 = rt.infer(x[:1]), rt.infer(x), rt.infer(x[:1])
        assert rt.compiled_batches == [3, 1]  # one compile per size, the last used kept last
        for batch in (1, 3):
            compiled = rt._compiled[batch][0]
            assert compiled.inputs[0].get_partial_shape().is_static
            assert list(compiled.inputs[0].get_shape()) == [batch, 48, 48, 3]
    assert np.max(np.abs(got3 - ref3)) < 1e-5 and np.max(np.abs(got1 - ref1)) < 1e-5
    assert np.array_equal(got1, again1)


SIGNAL_AFTER_CLOSES = """
import faulthandler, os, signal, sys
faulthandler.enable()  # as pytest and `python -X faulthandler` do: the thread has a stack of its own
from edgecat.runtime import open_runtime
from edgecat.runtime.signal_stack import current
before = current().ss_sp
first = open_runtime(sys.argv[1], "openvino", "fp32", threads=1)
second = open_runtime(sys.argv[1], "openvino", "fp32", threads=2)
second.infer(__import__("numpy").zeros((2, 48, 48, 3), "uint8"))  # a second compile, batch 2
first.close()  # the first opened, closed first
second.close()
assert current().ss_sp == before, (hex(before), hex(current().ss_sp or 0))
got = []
signal.signal(signal.SIGHUP, lambda *_: got.append(1))
os.kill(os.getpid(), signal.SIGHUP)
print("handled", len(got))
"""


def test_runtimes_closed_in_any_order_leave_signal_handling_working(tiny_bundle):
    """OpenVINO's plugin swaps the thread's alternate signal stack and restores it per Core: two
    runtimes closed first-opened-first left it on freed memory, and the next signal (a SIGHUP reload,
    SIGTERM) crashed the process. Run in a child, so a crash is a failure here and not of the suite."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", SIGNAL_AFTER_CLOSES, str(tiny_bundle)], capture_output=True,
                          text=True, timeout=300, check=False)
    assert proc.returncode == 0 and "handled 1" in proc.stdout, (proc.returncode, proc.stderr[-2000:])
