"""`edgecat bench`: parse, run :func:`edgecat.bench.run_bench`, print the table, write JSON/PNG."""

from __future__ import annotations

import click

from edgecat.backends import DEFAULT_BENCH, choices, help_line
from edgecat.artifacts import PRECISIONS
from edgecat.cli.common import choice_list, command, console, int_list, option


@command(examples=[
    "edgecat bench runs/cats",
    "edgecat bench runs/cats --backend onnxruntime --precision fp32,fp16,int8 --batch 1,8",
    "edgecat bench runs/cats --images data/validation --json bench.json --plot bench.png",
    "edgecat bench runs/cats --backend auto,onnxruntime --precision auto,fp32",
])
@click.argument("bundle", type=click.Path(path_type=str))
@option("--backend", "backends", default=None, callback=choice_list(choices, "backend"),
        show_default=f"{','.join(DEFAULT_BENCH)}, and auto when the bundle has exports",
        help=help_line("Comma list:") + " auto shows what it picked and why.")
@option("--precision", "precisions", default=None, callback=choice_list([*PRECISIONS, "auto"], "precision"),
        show_default="fp32; auto for --backend auto",
        help=f"Comma list of {', '.join(PRECISIONS)}, auto (--backend auto picks the precision too).")
@click.option("--auto-refresh", is_flag=True,
              help="--backend auto: measure the candidates again instead of reusing the remembered choice.")
@option("--batch", "batches", default="1", callback=int_list, aliases=("--batch-size",),
        help="Batch size(s) to run, comma list (1,8,32).")
@click.option("--images", type=click.Path(path_type=str), default=None,
              help="Images to time end to end; class folders named like the bundle's classes add accuracy. "
                   "Default: synthetic JPEGs.")
@click.option("--warmup", type=int, default=10, show_default=True, help="Untimed runs first.")
@option("--iters", type=click.IntRange(min=1), default=None, show_default="100 or 10 s, whichever first",
              help="Timed runs per measurement.")
@click.option("--seconds", type=float, default=None, help="Time per measurement instead of --iters.")
@click.option("--target-ms", type=float, default=50.0, show_default=True, help="p99 per-image target.")
@option("--threads", type=click.IntRange(min=1), default=None, show_default="physical cores this process may use",
              help="CPU threads for ONNX Runtime.")
@option("--spinning/--no-spinning", default=None, show_default="spinning",
              help="ONNX Runtime worker threads spin between ops (off for a CPU shared with other jobs).")
@click.option("--url", default=None, help="Triton server for --backend triton (host:port).")
@click.option("--reduced-decode", is_flag=True, default=None,
              help="Decode large JPEGs at 1/2-1/8 scale (faster; pixels differ slightly from training's).")
@click.option("--model-only", is_flag=True, help="Skip the end-to-end (file -> probability) measurement.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=str), default=None,
              help="Write the report as JSON (schema: the edgecat.bench.report docstring).")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False, path_type=str), default=None,
              help="Write a PNG of latency per backend with the target line.")
def bench(bundle: str, backends: list[str], precisions: list[str], batches: list[int], images: str | None, warmup: int,
          iters: int | None, seconds: float | None, target_ms: float, threads: int | None,
          spinning: bool | None, url: str | None, auto_refresh: bool,
          reduced_decode: bool | None, model_only: bool, json_path: str | None, plot_path: str | None) -> None:
    """Per-image latency of each backend x precision x batch on BUNDLE, against --target-ms.

    Rows that cannot run here (no GPU, no INT8 export, ...) are skipped with the reason; the exit
    status is non-zero when no row ran. With --backend auto, the candidates auto measured and why it
    picked the winner are printed under the table.
    """
    from rich.progress import BarColumn, TextColumn, TimeElapsedColumn

    from edgecat.bench import BenchConfig, render_table, run_bench, write_plot
    from edgecat.errors import EdgecatError
    from edgecat.log import progress

    options = {k: v for k, v in (("threads", threads), ("spinning", spinning), ("url", url)) if v is not None}
    cfg = BenchConfig(backends=backends, precisions=precisions, batches=batches, images=images,
                      warmup=warmup, iters=iters, seconds=seconds, target_ms=target_ms,
                      end_to_end=not model_only, reduced_decode=reduced_decode or None, options=options,
                      auto_refresh=auto_refresh)
    with progress(TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn()) as bar:
        task = bar.add_task("bench", total=1.0)
        report = run_bench(bundle, cfg, progress=lambda label, frac: bar.update(
            task, completed=frac, description=f"bench {label}"))
    console.print(render_table(report, console.width))
    if json_path:
        report.write_json(json_path)
        console.print(f"JSON report: {json_path}")
    if plot_path:
        write_plot(report, plot_path)
        console.print(f"plot: {plot_path}")
    if not any(r.status == "ok" for r in report.results):
        raise EdgecatError(f"no backend ran: all {len(report.results)} row(s) were skipped or failed "
                           "(reasons above; edgecat checks shows what can run here)")


COMMANDS: list[click.Command] = [bench]
