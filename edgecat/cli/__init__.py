"""The ``edgecat`` command line: parsing and printing only; the work lives in importable modules.

Errors a user can cause end in one line on stderr and a non-zero exit; ``--debug`` shows the
traceback. Each subcommand group lives in its own module and exports ``COMMANDS``.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

from edgecat import __version__
from edgecat.cli.common import apply_global, global_options
from edgecat.errors import EdgecatError, first_line
from edgecat.redact import redact

#: Click >= 8.2 raises this (a UsageError) for a bare `edgecat`; it is the help page, not an error
_NO_ARGS_IS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())

COMMAND_MODULES = (
    "edgecat.cli.train",
    "edgecat.cli.inference",
    "edgecat.cli.export",
    "edgecat.cli.bench",
    "edgecat.cli.stream",
    "edgecat.cli.checks",
    "edgecat.cli.signing",
)


class EdgecatGroup(click.Group):
    """Turns user errors into one line and an exit code instead of a traceback; usage errors
    (a bad option value, an unknown option) are one line too, naming the option."""

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except _NO_ARGS_IS_HELP as exc:  # plain `edgecat`: the help page, as Click shows it
            click.echo(exc.format_message(), err=True)
            sys.exit(exc.exit_code)
        except click.UsageError as exc:
            hint = f" (see '{exc.ctx.command_path} -h')" if exc.ctx is not None else ""
            click.secho(f"error: {exc.format_message()}{hint}", fg="red", err=True)
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            click.secho(f"error: {exc.format_message()}", fg="red", err=True)
            sys.exit(exc.exit_code)
        except click.Abort:
            click.secho("interrupted", fg="yellow", err=True)
            sys.exit(130)
        sys.exit(code if isinstance(code, int) else 0)

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
        except Exception as exc:  # a bug or an unforeseen input: still one line
            if ctx.obj and ctx.obj.get("debug"):
                raise
            first = redact(first_line(exc))[:300]
            click.secho(f"error: {type(exc).__name__}: {first} (run with --debug for the traceback)",
                        fg="red", err=True)
            sys.exit(1)


@click.group(cls=EdgecatGroup, context_settings={"help_option_names": ["-h", "--help"], "show_default": True},
             epilog="Options -v, -q, --debug and --device also work after the command name "
                    "(edgecat bench runs/x -q). Run 'edgecat COMMAND -h' for a command's options and examples.")
@click.version_option(__version__, prog_name="edgecat")
@click.option("-v", "--verbose", count=True, show_default=False, help="More logging (-vv: debug, library warnings, TensorFlow's start-up lines).")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors.")
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
@click.option("--device", default=None, metavar="N|cpu",
              help="GPU to use (sets CUDA_VISIBLE_DEVICES): 0, 1, cuda:1, or cpu to hide every GPU.")
@click.pass_context
def main(ctx: click.Context, verbose: int, quiet: bool, debug: bool, device: str | None) -> None:
    """edgecat: train an image classifier and take it to the edge.

    \b
    Typical flow:
      edgecat train --data data/cats-vs-dogs --out runs/cats
      edgecat export runs/cats --fp16 --int8 --calib data/cats-vs-dogs/train
      edgecat bench runs/cats --backend onnxruntime --precision fp32,fp16,int8
      edgecat stream runs/cats --source 0 --sink display://
    """
    apply_global(ctx, verbose=verbose, quiet=quiet, debug=debug, device=device)


for _name in COMMAND_MODULES:
    for _cmd in importlib.import_module(_name).COMMANDS:
        _cmd.params.extend(global_options())
        main.add_command(_cmd)
