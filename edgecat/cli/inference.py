"""`edgecat info`, `edgecat predict`, `edgecat evaluate`."""

from __future__ import annotations

import csv
import io
import json
import sys

import click
from rich.markup import escape
from rich.table import Table

from edgecat import backends
from edgecat.cli.common import command, console, option, precision_option
from edgecat.cli.signing import trusted_key_option


def backend_option() -> object:
    return option("--backend", type=click.Choice(backends.choices()), default=None, help=backends.help_line(),
                  metavar="BACKEND",
                  show_default="auto if exported, else keras")


def batch_option() -> object:
    return option("--batch", "batch_size", default=32, type=click.IntRange(min=1), aliases=("--batch-size",),
                  help="Images per inference call.")


def _check_cell(problem: str) -> str:
    """A verification result as a short word: ok, stale (made from an older source), missing (a
    listed file is gone) or mismatch."""
    if problem == "ok":
        return "ok"
    if problem == "stale":
        return "[yellow]stale[/]"
    return "[yellow]missing[/]" if "missing" in problem or "not found" in problem else "[red]mismatch[/]"


def _metric(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


@command("info", examples=["edgecat info runs/cats", "edgecat info runs/cats --json"])
@click.argument("bundle", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
def info_cmd(bundle: str, as_json: bool) -> None:
    """Show a bundle's manifest and check every artifact against it."""
    from edgecat.bundle import Bundle

    b = Bundle.open(bundle)
    checks = b.verify()
    if as_json:
        click.echo(json.dumps(b.manifest | {"verification": checks}, indent=2, default=str))
    else:
        inp = b.manifest["input"]
        console.print(f"[bold]{escape(b.name)}[/]  ({escape(str(b.path))})  status: {b.manifest.get('status')}")
        console.print(f"backbone {b.backbone}, input {inp['shape']} {inp['layout']} {inp['color']} "
                      f"{inp['range'][0]:g}-{inp['range'][1]:g} {inp['dtype']}, preprocessing in model: "
                      f"{inp['preprocessing']}")
        console.print(escape(f"classes {b.classes}, threshold {b.threshold}"))
        for key, m in b.manifest.get("metrics", {}).items():
            if isinstance(m, dict) and "accuracy" in m:  # labels like [validation] are text, not markup
                console.print(escape(f"metrics [{key}]: accuracy {_metric(m['accuracy'])} f1 {_metric(m.get('f1'))} "
                                     f"roc_auc {_metric(m.get('roc_auc'))} (n={m.get('n')})"))
        table = Table("artifact", "file", "precision", "size", "check")
        for key, entry in b.artifacts.items():
            table.add_row(escape(key), escape(entry["file"]), str(entry.get("precision", "")),
                          f"{entry.get('bytes', 0) / 1e6:.1f} MB", _check_cell(checks[key]))
        console.print(table)
    for k in (k for k, v in checks.items() if v == "missing"):  # deleted to save space: not an error
        click.secho(f"note: {b.problems[k]}", fg="yellow", err=True)
    for k in (k for k, v in checks.items() if v == "stale"):  # intact, but made from an older source
        click.secho(f"warning: {b.problems[k]}", fg="yellow", err=True)
    bad = [k for k, v in checks.items() if v not in ("ok", "missing", "stale")]
    if bad:
        for k in bad:
            click.secho(f"error: {b.problems[k]}", fg="red", err=True)
        sys.exit(2)


@command("predict", examples=[
    "edgecat predict runs/cats photo.jpg more_photos/",
    "edgecat predict runs/cats photos/ --precision int8 --format csv > labels.csv",
    "edgecat predict runs/cats photo.jpg --format json | jq .",
])
@click.argument("bundle", type=click.Path())
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@backend_option()
@precision_option()
@batch_option()
@click.option("--format", "fmt", default="table", type=click.Choice(["table", "json", "csv"]),
              help="table for people; json or csv (stdout only, logs on stderr) for programs.")
@trusted_key_option()
def predict_cmd(bundle: str, paths: tuple[str, ...], backend: str | None, precision: str | None,
                batch_size: int, fmt: str, trusted_keys: tuple[str, ...] = ()) -> None:
    """Classify image files or folders with BUNDLE."""
    from edgecat.predict import predict_paths
    from edgecat.signing import open_trusted

    preds = predict_paths(open_trusted(bundle, trusted_keys), list(paths), backend=backend, precision=precision,
                          batch_size=batch_size)
    if fmt == "json":
        click.echo(json.dumps([p.to_dict() for p in preds], indent=2))
    elif fmt == "csv":
        buf = io.StringIO()
        classes = list(preds[0].probs) if preds and preds[0].probs else []
        w = csv.writer(buf)
        w.writerow(["file", "label", "probability", *[f"p_{c}" for c in classes], "error"])
        for p in preds:
            w.writerow([p.file, p.label or "", "" if p.probability is None else f"{p.probability:.6f}",
                        *[f"{p.probs.get(c, 0):.6f}" if p.probs else "" for c in classes], p.error or ""])
        click.echo(buf.getvalue(), nl=False)
    else:
        table = Table("file", "label", "probability")
        for p in preds:
            if p.error:
                table.add_row(escape(p.file), "[red]error[/]", escape(p.error))
            else:
                table.add_row(escape(p.file), escape(p.label or ""), f"{p.probability:.4f}")
        console.print(table)
    failed = [p for p in preds if p.error]
    if failed:
        click.secho(f"error: {len(failed)} of {len(preds)} images could not be read", fg="red", err=True)
        sys.exit(1)


@command("evaluate", examples=[
    "edgecat evaluate runs/cats",
    "edgecat evaluate runs/cats --data data/test --backend onnxruntime --precision int8",
    "edgecat evaluate runs/cats --data data/cats-only --json > metrics.json",
])
@click.argument("bundle", type=click.Path())
@option("--data", type=click.Path(), show_default="the bundle's validation split",
        help="Labelled folder: class folders (one class is fine: accuracy only).")
@backend_option()
@precision_option()
@batch_option()
@click.option("--json", "as_json", is_flag=True, help="Print metrics as JSON (stdout; logs go to stderr).")
def evaluate_cmd(bundle: str, data: str | None, backend: str | None, precision: str | None,
                 batch_size: int, as_json: bool) -> None:
    """Accuracy, precision, recall, F1, ROC-AUC, confusion matrix and plots on a labelled set."""
    from edgecat.evaluate import evaluate_bundle

    res = evaluate_bundle(bundle, data=data, backend=backend, precision=precision, batch_size=batch_size)
    m = res.metrics
    if as_json:
        click.echo(json.dumps(m, indent=2, default=str))
        return
    console.print(f"[bold]{m['backend']}/{m['model_precision']}[/] on {escape(str(m['data']))} ({m['n']} images)")
    table = Table("accuracy", "precision", "recall", "F1", "ROC-AUC")
    table.add_row(*(_metric(m[k]) for k in ("accuracy", "precision", "recall", "f1", "roc_auc")))
    console.print(table)
    if m.get("note"):
        console.print(f"[yellow]note[/]: {escape(m['note'])}")
    cm = Table("true \\ predicted", *map(escape, m["classes"]))
    for name, row in zip(m["classes"], m["confusion_matrix"]):
        cm.add_row(escape(name), *map(str, row))
    console.print(cm)
    for name, path in res.plots.items():
        console.print(f"{name}: {path}")
    if res.metrics_file:
        console.print(f"metrics: {res.metrics_file}")


COMMANDS = [info_cmd, predict_cmd, evaluate_cmd]
