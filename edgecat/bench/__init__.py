"""``edgecat bench``: per-image latency of every backend x precision x batch, side by side, against a
target.

:mod:`~edgecat.bench.run` runs the rows, :mod:`~edgecat.bench.measure` times them (with the clock
``--backend auto`` uses), :mod:`~edgecat.bench.report` is the JSON report (its schema is that
module's docstring) and :mod:`~edgecat.bench.render` prints it as a table or plots it.
"""

from __future__ import annotations

from edgecat.bench.measure import machine_info
from edgecat.bench.render import (
    AUTO_COLUMNS,
    DETAIL_COLUMNS,
    LATENCY_COLUMNS,
    WIDE_COLUMNS,
    render_auto,
    render_table,
    write_plot,
)
from edgecat.bench.report import (
    AUTO,
    DEFAULT_BACKENDS,
    DEFAULT_TARGET_MS,
    SCHEMA,
    SCHEMA_VERSION,
    STAGES,
    BenchConfig,
    BenchReport,
    BenchResult,
    Latency,
)
from edgecat.bench.run import ProgressFn, add_speedups, default_backends, run_bench

__all__ = [
    "AUTO",
    "AUTO_COLUMNS",
    "DEFAULT_BACKENDS",
    "DEFAULT_TARGET_MS",
    "DETAIL_COLUMNS",
    "LATENCY_COLUMNS",
    "SCHEMA",
    "SCHEMA_VERSION",
    "STAGES",
    "WIDE_COLUMNS",
    "BenchConfig",
    "BenchReport",
    "BenchResult",
    "Latency",
    "ProgressFn",
    "add_speedups",
    "default_backends",
    "machine_info",
    "render_auto",
    "render_table",
    "run_bench",
    "write_plot",
]
