"""`edgecat info`, `edgecat predict`, `edgecat evaluate`."""

from __future__ import annotations

import csv
import io
import json
import sys

import click
from rich.table import Table

from edgecat.cli.common import console

BACKEND_HELP = "Runtime: keras, keras-predict, onnxruntime, onnxruntime-cuda, onnxruntime-trt, tensorrt (default: onnxruntime if exported, else keras)."


@click.command("info")
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
        console.print(f"[bold]{b.name}[/]  ({b.path})  status: {b.manifest.get('status')}")
        console.print(f"backbone {b.backbone}, input {inp['shape']} {inp['layout']} {inp['color']} "
                      f"{inp['range'][0]:g}-{inp['range'][1]:g} {inp['dtype']}, preprocessing in model: "
                      f"{inp['preprocessing']}")
        console.print(f"classes {b.classes}, threshold {b.threshold}")
        for key, m in b.manifest.get("metrics", {}).items():
            if isinstance(m, dict) and "accuracy" in m:
                console.print(f"metrics [{key}]: accuracy {m['accuracy']:.4f} f1 {m.get('f1', 0):.4f} "
                              f"roc_auc {m.get('roc_auc')}")
        table = Table("artifact", "file", "precision", "size", "check")
        for key, entry in b.artifacts.items():
            table.add_row(key, entry["file"], str(entry.get("precision", "")),
                          f"{entry.get('bytes', 0) / 1e6:.1f} MB", checks[key] if checks[key] == "ok" else f"[red]{checks[key]}[/]")
        console.print(table)
    for k in (k for k, v in checks.items() if v == "missing"):  # deleted to save space: not an error
        click.secho(f"note: {b.problems[k]}", fg="yellow", err=True)
    bad = [k for k, v in checks.items() if v not in ("ok", "missing")]
    if bad:
        for k in bad:
            click.secho(f"error: {b.problems[k]}", fg="red", err=True)
        sys.exit(2)


@click.command("predict")
@click.argument("bundle", type=click.Path())
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--backend", help=BACKEND_HELP)
@click.option("--precision", default="fp32", show_default=True, type=click.Choice(["fp32", "fp16", "int8"]))
@click.option("--batch-size", default=32, show_default=True, type=int)
@click.option("--format", "fmt", default="table", show_default=True, type=click.Choice(["table", "json", "csv"]))
def predict_cmd(bundle: str, paths: tuple[str, ...], backend: str | None, precision: str,
                batch_size: int, fmt: str) -> None:
    """Classify image files or folders."""
    from edgecat.evaluate import predict_paths

    preds = predict_paths(bundle, list(paths), backend=backend, precision=precision, batch_size=batch_size)
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
                table.add_row(p.file, "[red]error[/]", p.error)
            else:
                table.add_row(p.file, p.label or "", f"{p.probability:.4f}")
        console.print(table)
    failed = [p for p in preds if p.error]
    if failed:
        click.secho(f"error: {len(failed)} of {len(preds)} images could not be read", fg="red", err=True)
        sys.exit(1)


@click.command("evaluate")
@click.argument("bundle", type=click.Path())
@click.option("--data", type=click.Path(), help="Labelled folder (default: the bundle's validation split).")
@click.option("--backend", help=BACKEND_HELP)
@click.option("--precision", default="fp32", show_default=True, type=click.Choice(["fp32", "fp16", "int8"]))
@click.option("--batch-size", default=32, show_default=True, type=int)
@click.option("--json", "as_json", is_flag=True, help="Print metrics as JSON.")
def evaluate_cmd(bundle: str, data: str | None, backend: str | None, precision: str,
                 batch_size: int, as_json: bool) -> None:
    """Accuracy, precision, recall, F1, ROC-AUC, confusion matrix and plots on a labelled set."""
    from edgecat.evaluate import evaluate_bundle

    res = evaluate_bundle(bundle, data=data, backend=backend, precision=precision, batch_size=batch_size)
    m = res.metrics
    if as_json:
        click.echo(json.dumps(m, indent=2, default=str))
        return
    console.print(f"[bold]{m['backend']}/{m['model_precision']}[/] on {m['data']} ({m['n']} images)")
    table = Table("accuracy", "precision", "recall", "F1", "ROC-AUC")
    auc = "n/a" if m["roc_auc"] is None else f"{m['roc_auc']:.4f}"
    table.add_row(f"{m['accuracy']:.4f}", f"{m['precision']:.4f}", f"{m['recall']:.4f}", f"{m['f1']:.4f}", auc)
    console.print(table)
    cm = Table("true \\ predicted", *m["classes"])
    for name, row in zip(m["classes"], m["confusion_matrix"]):
        cm.add_row(name, *map(str, row))
    console.print(cm)
    for name, path in res.plots.items():
        console.print(f"{name}: {path}")
    if res.metrics_file:
        console.print(f"metrics: {res.metrics_file}")


COMMANDS = [info_cmd, predict_cmd, evaluate_cmd]
