"""Small shared pieces for the CLI modules: the command class (option groups, examples, global
options after the subcommand), option parsers and console output.

Results go to stdout (``console``); log lines and progress bars to the one stderr console of
:mod:`edgecat.log`, so piped ``--json`` stays pure JSON. Both consoles fit a terminal and, written
to a file or a pipe, print every table at its natural width (no cell cut short, whatever COLUMNS says).
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

import click

from edgecat.artifacts import PRECISIONS
from edgecat.log import make_console, stderr_console

console = make_console()
err_console = stderr_console()

#: group of the options every subcommand also accepts after its name (-v, -q, --debug, --device)
GLOBAL_GROUP = "Global options"


class GroupedOption(click.Option):
    """An option with a ``group`` (a heading in --help) and ``aliases``: old spellings that keep
    working but are not shown in --help."""

    def __init__(self, *args: Any, group: str | None = None, aliases: tuple[str, ...] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.group = group
        self.aliases = tuple(aliases)
        self.opts.extend(a for a in self.aliases if a not in self.opts)

    def get_help_extra(self, ctx: click.Context) -> Any:
        extra = super().get_help_extra(ctx)
        if isinstance(self.show_default, str) and "default" in extra:  # "[default: 32]", not "(32)"
            extra["default"] = self.show_default
        return extra

    def get_error_hint(self, ctx: click.Context) -> str:
        return " / ".join(f"'{o}'" for o in self.opts if o not in self.aliases)

    def get_help_record(self, ctx: click.Context) -> tuple[str, str] | None:
        if not self.aliases:
            return super().get_help_record(ctx)
        shown = self.opts
        self.opts = [o for o in shown if o not in self.aliases]
        try:
            return super().get_help_record(ctx)
        finally:
            self.opts = shown


def option(*decls: str, group: str | None = None, **kwargs: Any) -> Any:
    """``click.option`` with a help heading and hidden aliases: ``@option("--batch", aliases=("--batch-size",))``."""
    kwargs.setdefault("cls", GroupedOption)
    return click.option(*decls, group=group, **kwargs)


class EdgecatCommand(click.Command):
    """Options listed under their group headings, and an Examples section at the end of --help."""

    def __init__(self, *args: Any, examples: list[str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.examples = list(examples or [])

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        groups: dict[str, list[tuple[str, str]]] = {}
        for param in self.get_params(ctx):
            if not isinstance(param, click.Option):
                continue  # arguments are in the usage line and the docstring
            record = param.get_help_record(ctx)
            if record is None:
                continue
            name = getattr(param, "group", None) or "Options"
            groups.setdefault(name, []).append(record)
        order = [g for g in groups if g not in ("Options", GLOBAL_GROUP)] + ["Options", GLOBAL_GROUP]
        for name in order:
            if name in groups:
                with formatter.section(name):
                    formatter.write_dl(groups[name])

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        super().format_epilog(ctx, formatter)
        if self.examples:  # not re-flowed like prose: a long one is broken into shell continuation lines
            with formatter.section("Examples"):
                indent = " " * formatter.current_indent
                for example in self.examples:
                    for line in wrap_example(example, (formatter.width or 80) - formatter.current_indent):
                        formatter.write(f"{indent}{line}\n")


def wrap_example(line: str, width: int) -> list[str]:
    """An example command line as lines of at most ``width`` columns that still paste into a shell:
    broken between options (an option stays with its value) with `` \\`` continuations, indented; a
    ``# comment`` stays on the last line, or goes on a line of its own above when it does not fit
    there. Quoted words are never split."""
    if len(line) <= width:
        return [line]
    command_part, sep, comment = line.partition("  #")
    comment = f"#{comment}".strip() if sep else ""
    units: list[str] = []  # an option with its value, or the command with its arguments: kept together
    for word in re.findall(r"""(?:[^\s'"]+|'[^']*'|"[^"]*")+""", command_part):
        if units and not word.startswith(("-", ">", "|", "<")):
            units[-1] += f" {word}"
        else:
            units.append(word)
    lines: list[str] = []
    current = ""
    for unit in units:
        candidate = f"{current} {unit}" if current else unit
        if current and len(candidate) + 2 > width:  # room for " \\"
            lines.append(f"{current} \\")
            current = f"    {unit}"
        else:
            current = candidate
    if comment and len(current) + 2 + len(comment) <= width:
        current = f"{current}  {comment}"
    elif comment:
        lines.insert(0, comment)
    return [*lines, current]


def command(name: str | None = None, *, examples: list[str] | None = None, **kwargs: Any) -> Any:
    """``click.command`` with :class:`EdgecatCommand`: grouped options and an Examples section."""
    return click.command(name, cls=EdgecatCommand, examples=examples, **kwargs)


# ---------------------------------------------------------------------------------- global options
def _root_obj(ctx: click.Context) -> dict[str, Any]:
    root = ctx.find_root()
    root.ensure_object(dict)
    return root.obj


def apply_global(ctx: click.Context, **values: Any) -> None:
    """Record -v/-q/--debug/--device given before or after the subcommand; set up logging and the GPU."""
    from edgecat.log import setup_logging

    obj = _root_obj(ctx)
    for key, value in values.items():
        if key == "verbose":
            obj["verbose"] = obj.get("verbose", 0) + value
        elif value not in (None, False):
            obj[key] = value
    if obj.get("device") is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = device_to_cuda(obj["device"])
    setup_logging(obj.get("verbose", 0) + 1, bool(obj.get("quiet")))


def device_to_cuda(device: str) -> str:
    """``--device`` value -> CUDA_VISIBLE_DEVICES; a bad value is a usage error naming the option."""
    from edgecat.api import cuda_devices
    from edgecat.errors import EdgecatError

    try:
        return cuda_devices(device)
    except EdgecatError as exc:
        raise click.BadParameter(str(exc), param_hint="'--device'") from None


def _callback(key: str) -> Any:
    def cb(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        if value not in (None, False, 0) or key == "verbose":
            apply_global(ctx, **{key: value})
        return value
    return cb


def global_options() -> list[click.Option]:
    """-v/-q/--debug/--device as every subcommand takes them (after its name), so
    ``edgecat bench B -q`` works like ``edgecat -q bench B``."""
    return [
        GroupedOption(["-v", "--verbose"], count=True, show_default=False, expose_value=False, group=GLOBAL_GROUP,
                      callback=_callback("verbose"), help="More logging (-vv: debug, library warnings, TensorFlow's start-up lines)."),
        GroupedOption(["-q", "--quiet"], is_flag=True, expose_value=False, group=GLOBAL_GROUP,
                      callback=_callback("quiet"), help="Only warnings and errors."),
        GroupedOption(["--debug"], is_flag=True, expose_value=False, group=GLOBAL_GROUP,
                      callback=_callback("debug"), help="Show tracebacks for errors."),
        GroupedOption(["--device"], default=None, expose_value=False, group=GLOBAL_GROUP,
                      callback=_callback("device"), metavar="N|cpu",
                      help="GPU to use (sets CUDA_VISIBLE_DEVICES): 0, 1, cuda:1, or cpu to hide every GPU."),
    ]


# ---------------------------------------------------------------------------------- parsers
def int_list(ctx: click.Context, param: click.Parameter, value: str | None) -> list[int] | None:
    """Click callback for comma lists of whole numbers >= 1 (``--batch 1,8,32``); errors name the option."""
    if value is None:
        return None
    out = []
    for item in str(value).split(","):
        item = item.strip()
        if not item:
            continue
        if not item.isdigit() or int(item) < 1:
            raise click.BadParameter(f"'{item}' is not a whole number >= 1 (e.g. 1 or 1,8,32)", ctx, param)
        out.append(int(item))
    if not out:
        raise click.BadParameter("give at least one number (e.g. 1 or 1,8,32)", ctx, param)
    return out


def choice_list(choices: Any, name: str) -> Any:
    """Click callback for a comma list whose items must each be one of ``choices`` (an iterable,
    or a function returning one, so a heavy import waits until the option is used)."""
    def cb(ctx: click.Context, param: click.Parameter, value: str | None) -> list[str] | None:
        if value is None:
            return None
        allowed = list(choices() if callable(choices) else choices)
        items = [v.strip().lower() for v in str(value).split(",") if v.strip()]
        bad = [v for v in items if v not in allowed]
        if bad or not items:
            raise click.BadParameter(f"unknown {name} '{','.join(bad) or value}' (choose from: {', '.join(allowed)})",
                                     ctx, param)
        return items
    return cb


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def precision_option() -> Any:
    """``--precision`` of predict, evaluate and stream: one precision, or ``auto`` (picked by
    ``--backend auto``); unset it means auto with --backend auto, else fp32 (runtime.resolve_defaults)."""
    return option("--precision", type=click.Choice([*PRECISIONS, "auto"]), default=None,
                  show_default="auto with --backend auto, else fp32",
                  help="Model precision (fp16/int8 after edgecat export; auto: --backend auto picks the fastest "
                       "whose labels agree with FP32 on the validation images).")
