"""What edgecat prints where nobody watches a terminal (CI, cron, a systemd journal, a pipe): one
log record per line, tables never cut, help that fits 80 columns, and no third-party chatter."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import needs_tf
from edgecat.cli import main

LONG_FOLDER = "a-folder-whose-name-is-long-" + "x" * 110  # > 120 characters, one path component


def _env(columns: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "FORCE_COLOR", "TTY_COMPATIBLE")}
    if columns is not None:
        env["COLUMNS"] = columns
    return env


def _run_to_files(args: list[str], tmp_path: Path, columns: str | None) -> tuple[int, str, str]:
    """The CLI in a subprocess with stdout and stderr written to files, as a cron job or a unit does."""
    out, err = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
    with open(out, "w") as o, open(err, "w") as e:
        code = subprocess.run([sys.executable, "-m", "edgecat", *args], stdout=o, stderr=e, stdin=subprocess.DEVNULL,
                              env=_env(columns), timeout=300, cwd=tmp_path).returncode
    return code, out.read_text(), err.read_text()


@needs_tf
@pytest.mark.parametrize("columns", [None, "40"])
def test_log_records_are_one_whole_line_off_a_terminal(tiny_bundle: Path, synth_data: Path, tmp_path: Path,
                                                       columns: str | None) -> None:
    data = tmp_path / LONG_FOLDER / "data"
    shutil.copytree(synth_data / "validation", data)
    bad = data / "cat" / "notes-that-are-not-a-photo.jpg"
    bad.write_text("not an image")
    code, out, err = _run_to_files(["evaluate", str(tiny_bundle), "--data", str(data), "--backend", "onnxruntime",
                                    "--json"], tmp_path, columns)
    assert code == 0, err
    assert json.loads(out)["n"] == 12
    lines = err.splitlines()
    skipped = [ln for ln in lines if str(bad) in ln]
    assert len(skipped) == 1 and skipped[0].startswith("WARNING") and "skipped" in skipped[0], err
    assert "…" not in err and "..." not in err, err
    assert not [ln for ln in lines if ln != ln.rstrip()], "padded log lines:\n" + err
    # every line is a record of its own: a level first, no continuation lines
    assert all(ln.split()[0] in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL") for ln in lines), err


@needs_tf
@pytest.mark.parametrize("columns", [None, "40"])
def test_piped_tables_show_whole_file_names(tiny_bundle: Path, tmp_path: Path, columns: str | None) -> None:
    from edgecat.bundle import Bundle

    b = Bundle.open(tiny_bundle)
    for key, name in (("onnx-fp16", "model.fp16.onnx"), ("onnx-int8-trt", "model.int8-trt.onnx")):
        shutil.copy(tiny_bundle / "model.onnx", tiny_bundle / name)  # the table only lists them
        b.add_artifact(key, name, precision=key.split("-")[1])
    code, out, err = _run_to_files(["info", str(tiny_bundle)], tmp_path, columns)
    assert code == 0, err
    assert "model.fp16.onnx" in out and "model.int8-trt.onnx" in out, out
    assert str(tiny_bundle) in out and "…" not in out, out
    assert not [ln for ln in out.splitlines() if ln != ln.rstrip()], out


def test_console_off_a_terminal_never_cuts_or_pads(tmp_path: Path) -> None:
    """The console of every table the CLI prints, in a subprocess whose stdout is a file."""
    script = textwrap.dedent("""
        from rich.table import Table
        from edgecat.cli.common import console
        t = Table("artifact", "file")
        t.add_row("onnx-int8-trt", "model.int8-trt.onnx" + "-long" * 40)
        console.print(t)
        grid = Table(show_header=False, box=None)
        grid.add_column(); grid.add_column(overflow="fold")
        grid.add_row("a", "short"); grid.add_row("b", "a finding " * 20)
        console.print(grid)
        console.print("x" * 300)
    """)
    for columns in (None, "40"):
        with open(tmp_path / "o.txt", "w") as o:
            subprocess.run([sys.executable, "-c", script], stdout=o, env=_env(columns), check=True, timeout=60)
        text = (tmp_path / "o.txt").read_text()
        assert "model.int8-trt.onnx" + "-long" * 40 in text and "a finding " * 19 in text and "x" * 300 in text
        assert not [ln for ln in text.splitlines() if ln != ln.rstrip()], text


def test_help_fits_80_columns() -> None:
    """Every command's -h, its examples included, as a terminal-less CI shows it."""
    pages = {"": CliRunner().invoke(main, ["-h"], env={"COLUMNS": None})}
    for name in main.commands:
        pages[name] = CliRunner().invoke(main, [name, "-h"], env={"COLUMNS": None})
    for name, res in pages.items():
        assert res.exit_code == 0, res.output
        wide = [ln for ln in res.output.splitlines() if len(ln) > 80]
        assert not wide, f"edgecat {name} -h:\n" + "\n".join(wide)
    # a long example is continued, not cut: the words all reach the page, in order
    from edgecat.cli.common import wrap_example

    stream = pages["stream"].output
    assert "--source rtsp://cam/stream --sink http://:8080 \\\n" in stream
    assert "--sink jsonl://events.jsonl" in stream
    assert wrap_example("edgecat x --a 1 --b 2  # comment", 17) == ["# comment", "edgecat x --a 1 \\", "    --b 2"]
    assert wrap_example("edgecat x 'a b c d' --long-option value", 20) == ["edgecat x 'a b c d' \\",
                                                                          "    --long-option value"]


# ------------------------------------------------------------------------------ third-party noise
def _python(code: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=120, env=_env(None), **kw)


def test_native_stderr_filter_drops_converter_and_litert_lines_keeps_errors() -> None:
    res = _python(r"""
        import os
        from edgecat.log import quiet_native_stderr
        with quiet_native_stderr():
            os.write(2, b"fully_quantize: 0, inference_type: 6, input_inference_type: FLOAT32, output_inference_type: FLOAT32\n")
            os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n")
            os.write(2, b"E0000 00:00:1700000000.000000  1234 cuda_executor.cc:1228] failed call to cuInit: UNKNOWN ERROR (303)\n")
            os.write(2, b"error: converter failed on op FOO\n")
        os.write(2, b"after the block\n")
    """)
    assert res.returncode == 0, res.stderr
    assert res.stderr.splitlines() == ["error: converter failed on op FOO", "after the block"], res.stderr


def test_library_info_records_are_dropped_and_warnings_kept(capsys) -> None:
    """ONNX Runtime's quantizer logs "Increased scale[...]" with logging.info on the root logger."""
    import logging

    from edgecat.log import setup_logging

    setup_logging(1)
    logging.info("Increased scale[0] for weight `w` by ratio 2.0 to ensure bias `b` has a valid scale.")
    logging.getLogger("edgecat.export").info("onnx-int8: written")
    logging.getLogger("somelib").warning("a library warning")
    err = capsys.readouterr().err
    assert "Increased scale" not in err and "onnx-int8: written" in err and "a library warning" in err
    setup_logging(2)  # -vv: everything
    logging.info("Increased scale[0] for weight")
    assert "Increased scale" in capsys.readouterr().err
    setup_logging(1)


def test_library_warnings_are_quiet_but_a_users_own_are_not(tmp_path: Path) -> None:
    """PIL's DecompressionBombWarning (a big photo, read on purpose) and its source line stay out;
    the program's own warnings still show."""
    res = _python(rf"""
        import warnings
        from PIL import Image
        from edgecat.log import quiet_library_warnings
        warnings.simplefilter("always")
        quiet_library_warnings()
        Image.MAX_IMAGE_PIXELS = 100  # a 12 x 12 image is then "large": over the limit, under twice it
        Image.new("RGB", (12, 12)).save({str(tmp_path / "big.png")!r})
        Image.open({str(tmp_path / "big.png")!r}).load()
        warnings.warn("the user's own warning", UserWarning)
    """)
    assert res.returncode == 0, res.stderr
    assert "DecompressionBomb" not in res.stderr and "could be decompression bomb" not in res.stderr, res.stderr
    assert "the user's own warning" in res.stderr


@needs_tf
def test_keras_user_warnings_are_quiet() -> None:
    res = _python(r"""
        import sys, warnings
        warnings.simplefilter("always")
        import keras
        from edgecat.log import quiet_library_warnings
        keras.layers.Dense(2, input_shape=(4,))  # Keras' UserWarning, shown before
        print("--- quiet", file=sys.stderr, flush=True)
        quiet_library_warnings()
        keras.layers.Dense(2, input_shape=(4,))
        warnings.warn("the user's own warning", UserWarning)
    """)
    assert res.returncode == 0, res.stderr
    before, _, after = res.stderr.partition("--- quiet")
    assert "input_shape" in before, res.stderr  # the warning is real: it shows without the filters
    assert "input_shape" not in after and "the user's own warning" in after, res.stderr


def test_api_setup_logs_edgecat_lines_once_and_respects_a_users_logging() -> None:
    res = _python(r"""
        import logging, os
        from edgecat.log import setup_api_logging
        setup_api_logging(); setup_api_logging()
        assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "3"
        logging.getLogger("edgecat.train").info("edgecat line")
        logging.getLogger("edgecat.train").debug("debug line")
        logging.basicConfig(format="USER %(message)s", level=logging.INFO)  # the program's own set-up
        logging.getLogger("edgecat.train").info("after basicConfig")
    """)
    assert res.returncode == 0, res.stderr
    assert res.stderr.splitlines() == ["INFO     edgecat line", "USER after basicConfig"], res.stderr
    res = _python(r"""
        import logging
        logging.basicConfig(format="MINE %(message)s", level=logging.WARNING)
        from edgecat.log import setup_api_logging
        setup_api_logging()
        logging.getLogger("edgecat.x").warning("w")
        assert len(logging.getLogger().handlers) == 1 and not logging.getLogger("edgecat").handlers
    """)
    assert res.returncode == 0 and res.stderr.splitlines() == ["MINE w"], res.stderr


@needs_tf
def test_export_lines_print_paths_literally(tiny_bundle: Path, tmp_path: Path) -> None:
    """A folder named ``models[v1]`` is text, not rich markup: the line names it whole."""
    repo = tmp_path / "models[v1]"
    res = CliRunner().invoke(main, ["export", str(tiny_bundle), "--triton", str(repo)])
    assert res.exit_code == 0, res.output
    assert f"Triton model repository: {repo}" in res.stdout, res.stdout
