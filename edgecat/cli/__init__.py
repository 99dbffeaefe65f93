"""The ``edgecat`` command line: parsing and printing only; the work lives in importable modules.

Errors a user can cause end in one line on stderr and a non-zero exit; ``--debug`` shows the
traceback. Each subcommand group lives in its own module and exports ``COMMANDS``.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import warnings
from typing import Any

import click

from edgecat import __version__
from edgecat.errors import EdgecatError
from edgecat.redact import install as install_redaction
from edgecat.redact import redact

COMMAND_MODULES = (
    "edgecat.cli.train",
    "edgecat.cli.inference",
    "edgecat.cli.export",
    "edgecat.cli.bench",
    "edgecat.cli.stream",
)


def setup_logging(verbose: int, quiet: bool) -> None:
    from rich.logging import RichHandler

    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO)
    handler = RichHandler(show_path=False, show_time=False, rich_tracebacks=False, markup=False)
    install_redaction(handler)  # no camera password or access token in any log line
    logging.basicConfig(level=level, format="%(message)s", handlers=[handler], force=True)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow's C++ start-up chatter
    if verbose < 2:
        # Keras/TF UserWarnings (dataset shuffling hints, retracing) are noise for a CLI user.
        warnings.filterwarnings("ignore", category=UserWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
    for noisy in ("tensorflow", "absl", "tf2onnx", "h5py", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING if verbose < 2 else logging.INFO)


class EdgecatGroup(click.Group):
    """Turns user errors into one line and an exit code instead of a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except EdgecatError as exc:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            click.secho(f"error: {redact(exc)}", fg="red", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.secho("interrupted", fg="yellow", err=True)
            sys.exit(130)
        except (click.exceptions.Exit, click.ClickException, click.Abort, SystemExit):
            raise
        except Exception as exc:  # noqa: BLE001 - a bug or an unforeseen input: still one line
            if ctx.obj and ctx.obj.get("debug"):
                raise
            first = (redact(exc).strip().splitlines() or [""])[0][:300]
            click.secho(f"error: {type(exc).__name__}: {first} (run with --debug for the traceback)",
                        fg="red", err=True)
            sys.exit(1)


@click.group(cls=EdgecatGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgecat")
@click.option("-v", "--verbose", count=True, help="More logging (-vv for debug).")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors.")
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
@click.pass_context
def main(ctx: click.Context, verbose: int, quiet: bool, debug: bool) -> None:
    """edgecat: train an image classifier and take it to the edge."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
    setup_logging(verbose + 1, quiet)


for _name in COMMAND_MODULES:
    for _cmd in importlib.import_module(_name).COMMANDS:
        main.add_command(_cmd)
