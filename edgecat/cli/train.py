"""`edgecat train`: flags and config file -> TrainConfig -> edgecat.train.train()."""

from __future__ import annotations

import click

from edgecat.cli.common import console

_BOOL = {"augment", "tensorboard"}


@click.command("train")
@click.option("--data", help="Folder (train/+validation/, class folders, or cat.1.jpg files) or tfds:cats_vs_dogs.")
@click.option("--backbone", help="mobilenet_v2 (default), mobilenet_v3_small/large, resnet50, vgg16, inception_v3, efficientnet_b0-b3.")
@click.option("--weights", help="imagenet (default) | none | PATH: a local Keras weights file, or a bundle whose backbone to start from.")
@click.option("--img-size", type=int, help="Input size in pixels (default: the backbone's, e.g. 224; inception_v3 299).")
@click.option("--batch-size", type=int, help="Batch size (default 32).")
@click.option("--schedule", type=click.Choice(["two-stage", "full"]),
              help="two-stage (default) or full (every layer; default with --weights none).")
@click.option("--stage1-epochs", type=int, help="Stage 1 (frozen base) epochs (default 3).")
@click.option("--stage1-lr", type=float, help="Stage 1 learning rate (default 1e-3).")
@click.option("--stage2-epochs", type=int, help="Stage 2 (last layers unfrozen) epochs (default 3).")
@click.option("--stage2-lr", type=float, help="Stage 2 learning rate (default 1e-5).")
@click.option("--unfreeze", type=int, help="Base layers unfrozen in stage 2 (default: the backbone's, e.g. 100).")
@click.option("--full-epochs", type=int, help="Epochs of the full schedule (default 6).")
@click.option("--full-lr", type=float, help="Learning rate of the full schedule (default 1e-3).")
@click.option("--head", type=click.Choice(["gap", "dense256"]), help="Classifier head (default gap).")
@click.option("--augment/--no-augment", default=None, help="Flip/rotate/zoom augmentation (default on).")
@click.option("--feature-cache", type=click.Choice(["auto", "on", "off"]),
              help="Stage 1 on cached backbone features (auto: when not augmenting).")
@click.option("--val-split", type=float, help="Validation fraction for single-folder data (default 0.2).")
@click.option("--seed", type=int, help="Random seed (default 42).")
@click.option("--patience", type=int, help="Early-stopping patience in epochs (default 3).")
@click.option("--bn-recalibrate", type=click.IntRange(min=0),
              help="Full schedule: batches used to recompute BatchNorm statistics before each validation (default 16, 0 off).")
@click.option("--threshold", type=float, help="Decision threshold stored in the bundle (default 0.5).")
@click.option("--mixed-precision", type=click.Choice(["auto", "on", "off"]), help="float16 compute (auto: on GPUs).")
@click.option("--tensorboard/--no-tensorboard", default=None, help="Write TensorBoard logs (default on).")
@click.option("--save-h5", is_flag=True, default=None, help="Also write model.h5 (legacy Keras HDF5, loads without edgecat).")
@click.option("--name", help="Run name (default <backbone>-<size>).")
@click.option("--out", type=click.Path(file_okay=False), help="Bundle folder (default runs/<name>).")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="YAML/TOML file of these settings.")
@click.option("--resume", is_flag=True, help="Continue an interrupted run in --out.")
def train_cmd(config_file: str | None, resume: bool, **flags: object) -> None:
    """Fine-tune a classifier and write a bundle (model, manifest, history, metrics, plots)."""
    from edgecat.train import make_config, train

    cfg = make_config(flags, config_file, resume)
    result = train(cfg, resume=resume)
    m = result.metrics
    console.print(
        f"[bold green]done[/]: {result.bundle}  val accuracy {m['accuracy']:.4f}  "
        f"F1 {m['f1']:.4f}  ROC-AUC {m['roc_auc'] if m['roc_auc'] is None else round(m['roc_auc'], 4)}"
    )
    for stage, t in result.timings.items():
        console.print(f"  {stage}: {t['epochs']} epochs, {t['seconds_per_epoch']} s/epoch"
                      + (f", features {t['feature_extraction_seconds']} s" if "feature_extraction_seconds" in t else ""))
    console.print(f"  plots: {result.bundle / 'plots'}")


COMMANDS = [train_cmd]
