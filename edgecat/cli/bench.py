"""`edgecat bench`: parse, run :func:`edgecat.bench.run_bench`, print the table, write JSON/PNG."""

from __future__ import annotations

import click
from rich.console import Console

from edgecat.cli.common import console, err_console, parse_list


@click.command()
@click.argument("bundle", type=click.Path(path_type=str))
@click.option("--backend", "backends", default="keras-predict,keras,onnxruntime", show_default=True,
              help="Comma list: keras-predict, keras, onnxruntime, onnxruntime-cuda, onnxruntime-trt, "
                   "tensorrt, triton.")
@click.option("--precision", "precisions", default="fp32", show_default=True, help="Comma list: fp32, fp16, int8.")
@click.option("--batch", "batches", default="1", show_default=True, help="Comma list of batch sizes.")
@click.option("--images", type=click.Path(path_type=str), default=None,
              help="Images to time end to end; class folders named like the bundle's classes add accuracy. "
                   "Default: synthetic JPEGs.")
@click.option("--warmup", type=int, default=10, show_default=True, help="Untimed runs first.")
@click.option("--iters", type=int, default=None, help="Timed runs per measurement (default: 100 or 10 s, whichever first).")
@click.option("--seconds", type=float, default=None, help="Time per measurement instead of --iters.")
@click.option("--target-ms", type=float, default=50.0, show_default=True, help="p99 per-image target.")
@click.option("--threads", type=int, default=None, help="CPU threads for ONNX Runtime (default: physical cores).")
@click.option("--spinning/--no-spinning", default=None,
              help="ONNX Runtime worker threads spin between ops (default: on; off for a CPU shared with other jobs).")
@click.option("--url", default=None, help="Triton server for --backend triton (host:port).")
@click.option("--reduced-decode", is_flag=True, default=None,
              help="Decode large JPEGs at 1/2-1/8 scale (faster; pixels differ slightly from training's).")
@click.option("--model-only", is_flag=True, help="Skip the end-to-end (file -> probability) measurement.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=str), default=None,
              help="Write the report as JSON (schema: edgecat.bench docstring).")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False, path_type=str), default=None,
              help="Write a PNG of latency per backend with the target line.")
def bench(bundle: str, backends: str, precisions: str, batches: str, images: str | None, warmup: int,
          iters: int | None, seconds: float | None, target_ms: float, threads: int | None,
          spinning: bool | None, url: str | None,
          reduced_decode: bool | None, model_only: bool, json_path: str | None, plot_path: str | None) -> None:
    """Per-image latency of each backend x precision x batch on BUNDLE, against --target-ms."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from edgecat.bench import BenchConfig, render_table, run_bench, write_plot

    options = {k: v for k, v in (("threads", threads), ("spinning", spinning), ("url", url)) if v is not None}
    cfg = BenchConfig(backends=parse_list(backends, name="backend"),
                      precisions=parse_list(precisions, name="precision"),
                      batches=parse_list(batches, cast=int, name="batch size"), images=images,
                      warmup=warmup, iters=iters, seconds=seconds, target_ms=target_ms,
                      end_to_end=not model_only, reduced_decode=reduced_decode or None, options=options)
    with Progress(TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(),
                  console=err_console, transient=True, disable=not err_console.is_terminal) as bar:
        task = bar.add_task("bench", total=1.0)
        report = run_bench(bundle, cfg, progress=lambda label, frac: bar.update(
            task, completed=frac, description=f"bench {label}"))
    # a pipe or CI log gets a wide table rather than one squeezed to 80 columns
    out = console if console.is_terminal else Console(width=max(console.width, 170))
    out.print(render_table(report))
    if json_path:
        report.write_json(json_path)
        console.print(f"JSON report: {json_path}")
    if plot_path:
        write_plot(report, plot_path)
        console.print(f"plot: {plot_path}")


COMMANDS: list[click.Command] = [bench]
