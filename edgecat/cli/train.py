"""`edgecat train`: flags and config file -> TrainConfig -> edgecat.train.train()."""

from __future__ import annotations

import dataclasses

import click
from rich.table import Table

from edgecat.cli.common import command, console, option
from edgecat.config import TrainConfig

_DEFAULTS = {f.name: f.default for f in dataclasses.fields(TrainConfig)}


def default(name: str) -> str:
    """The TrainConfig default, shown as ``[default: ...]``: flags default to None so a config
    file or ``--resume`` can set what the command line does not."""
    return str(_DEFAULTS[name])


DATA, MODEL, SCHEDULE, OUTPUT = "Data", "Model", "Schedule", "Output and runs"


@command("train", examples=[
    "edgecat train --data data/cats-vs-dogs --out runs/cats",
    "edgecat train --data data/cats-vs-dogs --img-size 160 --stage1-epochs 2 --stage2-epochs 2 --batch 16",
    "edgecat train --config train.yaml --out runs/cats --exist-ok",
    "edgecat train --resume --out runs/cats",
])
@option("--data", group=DATA,
        help="Folder (train/+validation/, class folders, or cat.1.jpg files) or tfds:cats_vs_dogs.")
@option("--img-size", type=int, group=DATA, show_default="the backbone's: 224, inception_v3 299, efficientnet_b3 300",
        help="Input size in pixels.")
@option("--val-split", type=float, group=DATA, show_default=default("val_split"),
        help="Validation fraction for single-folder data.")
@option("--augment/--no-augment", default=None, group=DATA, show_default="augment",
        help="Flip/rotate/zoom augmentation.")
@option("--seed", type=int, group=DATA, show_default=default("seed"), help="Random seed.")
@option("--backbone", group=MODEL, show_default=default("backbone"),
        help="mobilenet_v2, mobilenet_v3_small/large, resnet50, vgg16, inception_v3, efficientnet_b0-b3.")
@option("--weights", group=MODEL, show_default=default("weights"),
        help="imagenet | none | PATH: a local Keras weights file, or a bundle whose backbone to start from.")
@option("--head", type=click.Choice(["gap", "dense256"]), group=MODEL, show_default=default("head"),
        help="Classifier head.")
@option("--dropout", type=float, group=MODEL, show_default=default("dropout"), help="Dropout before the classifier.")
@option("--threshold", type=float, group=MODEL, show_default=default("threshold"),
        help="Decision threshold stored in the bundle.")
@option("--schedule", type=click.Choice(["two-stage", "full"]), group=SCHEDULE,
        show_default="two-stage; full with --weights none",
        help="two-stage: frozen base, then the last layers; full: every layer from the start.")
@option("--batch", "batch_size", type=int, group=SCHEDULE, aliases=("--batch-size",),
        show_default=default("batch_size"), help="Images per training step.")
@option("--stage1-epochs", type=int, group=SCHEDULE, show_default=default("stage1_epochs"),
        help="Stage 1 (frozen base) epochs.")
@option("--stage1-lr", type=float, group=SCHEDULE, show_default=default("stage1_lr"), help="Stage 1 learning rate.")
@option("--stage2-epochs", type=int, group=SCHEDULE, show_default=default("stage2_epochs"),
        help="Stage 2 (last layers unfrozen) epochs.")
@option("--stage2-lr", type=float, group=SCHEDULE, show_default=default("stage2_lr"), help="Stage 2 learning rate.")
@option("--unfreeze", type=int, group=SCHEDULE, show_default="the backbone's, e.g. 100 for mobilenet_v2",
        help="Base layers unfrozen in stage 2.")
@option("--full-epochs", type=int, group=SCHEDULE, show_default="--stage1-epochs + --stage2-epochs (6)",
        help="Epochs of the full schedule.")
@option("--full-lr", type=float, group=SCHEDULE, show_default=default("full_lr"),
        help="Learning rate of the full schedule.")
@option("--patience", type=int, group=SCHEDULE, show_default=default("patience"), help="Early-stopping patience in epochs.")
@option("--bn-recalibrate", type=click.IntRange(min=0), group=SCHEDULE, show_default=default("bn_recalibrate"),
        help="Full schedule: batches used to recompute BatchNorm statistics before each validation (0 off).")
@option("--feature-cache", type=click.Choice(["auto", "on", "off"]), group=SCHEDULE,
        show_default=default("feature_cache"), help="Train on cached outputs of the frozen layers (both stages; off: feed images every epoch).")
@option("--cache-views", type=click.IntRange(min=1), group=SCHEDULE, show_default=default("cache_views"),
        help="Augmented views of each image the feature cache keeps.")
@option("--mixed-precision", type=click.Choice(["auto", "on", "off"]), group=SCHEDULE,
        show_default=default("mixed_precision"), help="float16 compute (auto: on GPUs).")
@option("--save-h5", is_flag=True, default=None, group=OUTPUT,
        help="Also write model.h5 (legacy Keras HDF5 that loads without edgecat).")
@option("--name", group=OUTPUT, show_default="<backbone>-<size>", help="Run name.")
@option("--out", type=click.Path(file_okay=False), group=OUTPUT, show_default="runs/<name>, -2, -3... if taken",
        help="Bundle folder.")
@option("--exist-ok", is_flag=True, group=OUTPUT,
        help="Let --out replace the bundle already in it (without: refused, so nothing is lost by accident).")
@option("--config", "config_file", type=click.Path(dir_okay=False), group=OUTPUT,
        help="YAML/TOML/JSON file of these settings (flags win over it).")
@option("--resume", is_flag=True, group=OUTPUT, help="Continue an interrupted run in --out.")
@option("--tensorboard/--no-tensorboard", default=None, group=OUTPUT, show_default="tensorboard",
        help="Write TensorBoard logs.")
def train_cmd(config_file: str | None, resume: bool, exist_ok: bool, **flags: object) -> None:
    """Fine-tune a classifier and write a bundle (model, manifest, history, metrics, plots).

    Settings come from defaults < --config file < flags; all are checked (types, ranges) before
    any image is read or model built.
    """
    from edgecat.api import replace_bundle_dir
    from edgecat.train import make_config, train

    cfg = make_config(flags, config_file, resume)
    if exist_ok and cfg.out and not resume:
        replace_bundle_dir(cfg.out)
    result = train(cfg, resume=resume)
    console.print(history_table(result.history, result.kept))
    m, kept = result.metrics, result.kept
    kept_txt = f"kept epoch {kept['epoch']} ({kept['stage']} {kept['stage_epoch']}), " if kept else ""
    auc = m.get("roc_auc")
    console.print(
        f"[bold green]done[/]: {result.bundle}  {kept_txt}re-scored on {m.get('n')} validation images: "
        f"accuracy {m['accuracy']:.4f}  F1 {m['f1']:.4f}  ROC-AUC {'n/a' if auc is None else round(auc, 4)}"
    )
    for stage, t in result.timings.items():
        console.print(f"  {stage}: {t['epochs']} epochs, {t['seconds_per_epoch']} s/epoch"
                      + (f", feature cache {t['feature_extraction_seconds']} s" if "feature_extraction_seconds" in t else ""))
    console.print(f"  plots: {result.bundle / 'plots'}")


def history_table(history: list[dict[str, object]], kept: dict[str, object]) -> Table:
    """One row per epoch, the kept one (lowest val_loss) marked."""
    table = Table("stage", "epoch", "loss", "acc", "val_loss", "val_acc", "s", "", title="training")
    for r in history:
        cells = [f"{r.get(k, float('nan')):.4f}" for k in ("loss", "accuracy", "val_loss", "val_accuracy")]
        table.add_row(str(r["stage"]), str(r["epoch"]), *cells, f"{r.get('seconds', 0):.1f}",
                      "kept" if kept and r["epoch"] == kept.get("epoch") else "")
    return table


COMMANDS = [train_cmd]
