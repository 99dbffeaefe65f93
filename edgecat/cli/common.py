"""Small shared pieces for the CLI modules: option parsers and console output."""

from __future__ import annotations

import json
from typing import Any

import click
from rich.console import Console

console = Console()
err_console = Console(stderr=True)


def parse_list(value: str | None, *, cast: type = str, name: str = "value") -> list[Any]:
    """'a,b,c' -> ['a', 'b', 'c'] with a click error for a bad item."""
    if value is None or value == "":
        return []
    out = []
    for item in str(value).split(","):
        item = item.strip()
        if not item:
            continue
        try:
            out.append(cast(item))
        except ValueError as exc:
            raise click.BadParameter(f"bad {name} '{item}'") from exc
    return out


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))
