"""`edgecat checks`: print :func:`edgecat.checks.run_checks` as a table or JSON."""

from __future__ import annotations

import click
from rich.markup import escape
from rich.table import Table

from edgecat.cli.common import command, console, print_json


@command("checks", examples=["edgecat checks", "edgecat checks --json > checks.json"])
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def checks_cmd(as_json: bool) -> None:
    """What can run here: TensorFlow, ONNX Runtime providers, TensorRT, OpenVINO and its devices,
    LiteRT, GPU, OpenCV video I/O, cameras, free memory, CPU flags, and the backend/precision
    edgecat would pick."""
    from edgecat.checks import run_checks, summary_lines

    report = run_checks()
    if as_json:
        print_json(report.as_dict())
        return
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    for what, finding in summary_lines(report):
        table.add_row(what, escape(finding))
    console.print(table)


COMMANDS = [checks_cmd]
