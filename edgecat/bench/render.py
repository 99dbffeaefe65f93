"""Bench's output for people: a rich table that reads at the terminal's width, auto's candidates and
its reason, and a matplotlib plot of latency against the target."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgecat.bench.report import DEFAULT_TARGET_MS, STAGES, BenchReport, BenchResult

#: wide layout: one row per run, every figure in one line (needs ~135 columns)
WIDE_COLUMNS = ("backend", "prec", "batch", "status", "MB", "acc", "model p50", "e2e p50", "e2e p99",
                "decode/pre/infer/post", "FPS", "vs keras-predict", "target")
#: narrow layout (80-130 columns): latency and verdict first, then where the time goes
LATENCY_COLUMNS = ("backend", "prec", "batch", "status", "model\np50", "e2e\np50", "e2e\np99", "FPS", "target")
DETAIL_COLUMNS = ("run", "MB", "acc", "decode", "prep", "infer", "post", "vs keras\npredict")


def _key(header: str) -> str:
    """Column header (maybe on two lines) -> the key of the figure it shows."""
    return "vs keras-predict" if header.startswith("vs keras") else header.replace("\n", " ")


def _fmt(x: float | None, fmt: str = ".2f") -> str:
    return "-" if x is None else format(x, fmt)


def _backend_cell(r: BenchResult) -> str:
    """auto rows say what auto resolved to, and with how many threads."""
    if r.auto_backend is None:
        return r.backend
    return f"{r.backend} -> {r.auto_backend}" + (f" ({r.threads} thr)" if r.threads else "")


def _cells(r: BenchResult, note: int | None) -> dict[str, str]:
    """Every figure of one row as text, keyed by what it is (layouts pick and name columns)."""
    if r.status != "ok":
        colour = "yellow" if r.status == "skipped" else "red"
        return {"backend": _backend_cell(r), "prec": r.prec_text, "batch": str(r.batch),
                "status": f"[{colour}]{r.status} [{note}][/]"}
    e2e, st = r.end_to_end, r.stages_ms or {}
    return {
        "backend": _backend_cell(r), "prec": r.prec_text, "batch": str(r.batch), "status": "[green]ok[/]",
        "MB": _fmt(r.model_mb, ".1f"), "acc": _fmt(r.accuracy, ".3f"),
        "model p50": _fmt(r.model_only.p50 if r.model_only else None),
        "e2e p50": _fmt(e2e.p50 if e2e else None), "e2e p99": _fmt(e2e.p99 if e2e else None),
        "decode/pre/infer/post": "/".join(f"{st[s]:.2f}" for s in STAGES) if st else "-",
        "decode": _fmt(st.get("decode")), "prep": _fmt(st.get("preprocess")),
        "infer": _fmt(st.get("inference")), "post": _fmt(st.get("postprocess")),
        "FPS": _fmt(r.fps, ".0f"),
        "vs keras-predict": f"{r.speedup_vs_keras_predict:.1f}x" if r.speedup_vs_keras_predict else "-",
        "target": "[green]pass[/]" if r.passed else "[red]FAIL[/]", "run": r.label,
    }


def _table(columns: tuple[str, ...], rows: list[dict[str, str]], title: str | None) -> Any:
    from rich import box
    from rich.table import Table

    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    for col in columns:
        key = _key(col)
        left = key in ("backend", "prec", "status", "target", "run")
        table.add_column(col, justify="left" if left else "right", no_wrap=key not in ("backend", "run"),
                         min_width=max(len(part) for part in col.split("\n")))
    for row in rows:
        table.add_row(*(row.get(_key(c), "-") for c in columns))
    return table


AUTO_COLUMNS = ("backend", "prec", "threads", "ms", "agreement", "status")


def render_auto(report: BenchReport) -> list[Any]:
    """Per asked precision of the auto rows: the candidates auto measured (batch 1 median ms per
    image, label agreement with FP32, verdict) and the one line saying what it picked and why."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    from edgecat.select import explain

    out: list[Any] = []
    for asked, choice in report.auto_choices.items():
        rows, line = explain(choice)
        table = Table(title=f"--backend auto --precision {asked}: candidates (batch 1, median ms per image)",
                      title_justify="left", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False,
                      collapse_padding=True)
        for col in AUTO_COLUMNS:
            table.add_column(col, justify="right" if col in ("threads", "ms", "agreement") else "left",
                             no_wrap=col != "status")
        for row in rows:
            table.add_row(*row)
        out += [Text(""), table, Text(line)]
    return out


def render_table(report: BenchReport, width: int | None = None) -> Any:
    """A rich table in the spirit of Ultralytics' benchmark table, readable at ``width`` columns:
    one wide table where it fits, else a latency table and a where-the-time-goes table. Rows that
    did not run say why in numbered notes below; then what ``--backend auto`` picked and why."""
    from rich.console import Console, Group
    from rich.text import Text

    target = report.config.get("target_ms", DEFAULT_TARGET_MS)
    b = report.bundle
    title = (f"edgecat bench: {b['name']} ({b['backbone']} {b['input_size'][0]}x{b['input_size'][1]}), "
             f"ms per image, target p99 <= {target:g} ms")
    notes: list[str] = []
    rows = []
    for r in report.results:
        if r.status != "ok":
            notes.append(f"[{len(notes) + 1}] {r.label} {r.status}: {r.reason}")
        rows.append(_cells(r, len(notes) if r.status != "ok" else None))
    note_text = [Text(n, style="dim") for n in notes]
    wide = _table(WIDE_COLUMNS, rows, title)
    needed = Console(width=1000).measure(wide).maximum
    auto = render_auto(report)
    if width is None or needed <= width:
        return Group(wide, *note_text, *auto)
    parts = [_table(LATENCY_COLUMNS, rows, title)]
    ok_rows = [row for row, r in zip(rows, report.results) if r.status == "ok"]
    if ok_rows:
        parts.append(_table(DETAIL_COLUMNS, ok_rows, "where the time goes (ms per image), size, accuracy"))
    return Group(*parts, *note_text, *auto)


def write_plot(report: BenchReport, path: str | Path) -> Path:
    """Per-image latency per backend/precision/batch (p50 bar, p90-p99 whisker), target as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from edgecat.fsutil import atomic_path

    rows = [r for r in report.results if r.status == "ok" and r.headline]
    target = float(report.config.get("target_ms", DEFAULT_TARGET_MS))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(rows) + 2), 4.5))
    if rows:
        x = np.arange(len(rows))
        e2e = [r.end_to_end.p50 if r.end_to_end else np.nan for r in rows]
        model = [r.model_only.p50 if r.model_only else np.nan for r in rows]
        p99 = [r.headline.p99 for r in rows]  # type: ignore[union-attr]
        ax.bar(x - 0.2, model, 0.4, label="model-only p50")
        ax.bar(x + 0.2, e2e, 0.4, label="end-to-end p50")
        ax.scatter(x + 0.2, p99, marker="_", s=200, color="black", label="p99", zorder=3)
        ax.set_xticks(x, [r.label.replace("/", "\n") for r in rows], fontsize=8)
        ax.set_yscale("log")
    else:
        ax.text(0.5, 0.5, "no backend ran", ha="center", va="center", transform=ax.transAxes)
    ax.axhline(target, color="red", linestyle="--", label=f"target {target:g} ms")
    ax.set_ylabel("ms per image (log)")
    b = report.bundle
    ax.set_title(f"{b['name']}: {b['backbone']} {b['input_size'][0]}x{b['input_size'][1]}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format=path.suffix.lstrip(".") or "png")
    plt.close(fig)
    return path


__all__ = ["AUTO_COLUMNS", "DETAIL_COLUMNS", "LATENCY_COLUMNS", "WIDE_COLUMNS", "render_auto", "render_table",
           "write_plot"]
