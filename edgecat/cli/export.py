"""`edgecat export`: add ONNX FP32/FP16/INT8, TensorRT engines, Triton and DeepStream files to a bundle."""

from __future__ import annotations

import click
from rich.markup import escape

from edgecat.artifacts import EXPORT, PRECISIONS, onnx
from edgecat.cli.common import choice_list, command, console, option


@command(examples=[
    "edgecat export runs/cats                                  # ONNX FP32",
    "edgecat export runs/cats --fp16 --int8 --calib data/train  # + FP16 and INT8",
    "edgecat export runs/cats --trt --precision fp16,int8 --triton models/",
    "edgecat export runs/cats --trt --precision int8 --deepstream ds/   # on the DeepStream device",
])
@click.argument("bundle", type=click.Path())
@click.option("--onnx", "onnx_", is_flag=True, help="(Re-)export ONNX FP32 from model.keras (default when no other flag).")
@click.option("--h5", is_flag=True, help="Add model.h5: the Keras model as legacy HDF5 for keras.models.load_model.")
@click.option("--fp16", is_flag=True, help=f"Add {onnx('fp16').file} (fp16 inside, fp32 input/output).")
@click.option("--fp16-tolerance", type=click.FloatRange(min=0), default=EXPORT.fp16_tolerance, show_default=True,
              help="Largest logit change FP16 may show against FP32, relative to the largest |logit| "
                   f"(plus {EXPORT.fp16_logit_floor:g}).")
@click.option("--int8", is_flag=True, help=f"Add INT8 QDQ models: {onnx('int8').file} (CPU) and {onnx('int8', 'trt').file} (TensorRT).")
@option("--calib", type=click.Path(), default=None, show_default="the bundle's training files, if here",
              help="Folder of calibration images.")
@click.option("--calib-size", type=click.IntRange(min=1), default=EXPORT.calib_size, show_default=True,
              help="Calibration images to use.")
@click.option("--calib-seed", type=click.IntRange(min=0), default=EXPORT.calib_seed, show_default=True,
              help="Which calibration images are drawn when the folder holds more than --calib-size.")
@click.option("--calib-method", type=click.Choice(list(EXPORT.calib_methods)), default=EXPORT.calib_method,
              show_default=True,
              help="How INT8 ranges are chosen from the calibration activations (auto: minmax, then percentile "
                   "and entropy where minmax changes FP32's answers on held-out images of the calibration "
                   "source; the file closest to FP32 is kept).")
@click.option("--bias-correction/--no-bias-correction", default=True, show_default=True,
              help="Correct INT8 biases for the weights' rounding (keeps a less-converged model's accuracy).")
@option("--eval", "eval_dir", type=click.Path(), default=None, show_default="the bundle's validation files",
              help="Labelled folder for the precision table.")
@click.option("--trt", is_flag=True, help="Build TensorRT engines here (needs TensorRT and an NVIDIA GPU).")
@option("--precision", default=None, callback=choice_list(PRECISIONS, "precision"),
              show_default="fp32,fp16, plus int8 if the bundle has INT8",
              help="TensorRT engine precisions, comma list; with --deepstream, the config's one precision (fp32).")
@option("--batch-profile", "batch", default=EXPORT.trt_batch, aliases=("--batch",), metavar="MIN,OPT,MAX",
        help="TensorRT engine batch sizes: smallest, tuned-for and largest.")
@click.option("--workspace", type=click.FloatRange(min=0.1), default=EXPORT.workspace_gb, show_default=True,
              help="TensorRT workspace in GB.")
@click.option("--triton", "triton_dir", type=click.Path(), default=None, help="Write a Triton model repository here.")
@click.option("--deepstream", "deepstream_dir", type=click.Path(), default=None,
              help="Write a DeepStream nvinfer config here.")
@click.option("--max-batch", type=click.IntRange(min=1), default=EXPORT.max_batch, show_default=True,
              help="Triton max_batch_size.")
@click.option("--tflite", is_flag=True, help="Add LiteRT files from model.keras: model.{fp32,fp16,int8}.tflite (needs TensorFlow).")
@option("--tflite-precision", default=",".join(EXPORT.tflite_precisions), callback=choice_list(PRECISIONS, "tflite-precision"),
        show_default=True, help="Which LiteRT files to write, comma list.")
@click.option("--tflite-keep-float", default=None, metavar="last-stage|TENSOR,...",
              help="LiteRT INT8: ops left in float (mixed precision, no longer full-integer: not for the "
                   "Edge TPU); 'last-stage' keeps the last stage's convolutions (see README \"Accuracy\").")
@click.option("--opset", type=click.IntRange(min=13), default=EXPORT.opset, show_default=True, help="ONNX opset.")
def export(bundle: str, onnx_: bool, fp16: bool, fp16_tolerance: float, int8: bool, calib: str | None, calib_size: int,
           calib_seed: int, calib_method: str, bias_correction: bool, eval_dir: str | None, trt: bool,
           precision: list[str] | None, batch: str,
           workspace: float, triton_dir: str | None, deepstream_dir: str | None, max_batch: int,
           opset: int, h5: bool, tflite: bool, tflite_precision: list[str], tflite_keep_float: str | None) -> None:
    """Add deployable models to BUNDLE; with no flags, export ONNX FP32 (if missing)."""
    from edgecat.bundle import Bundle
    from edgecat.export.steps import ExportPlan, run_export

    b = Bundle.open(bundle)
    plan = ExportPlan(
        onnx=onnx_, fp16=fp16, fp16_tolerance=fp16_tolerance, int8=int8, calib=calib, calib_size=calib_size,
        calib_seed=calib_seed, calib_method=calib_method,
        bias_correction=bias_correction,
        eval_dir=eval_dir, trt=trt,
        precisions=precision or None,
        batch=batch, workspace_gb=workspace, triton_dir=triton_dir, deepstream_dir=deepstream_dir,
        max_batch=max_batch, opset=opset, h5=h5, tflite=tflite, tflite_precisions=tuple(tflite_precision),
        tflite_keep_float=[n for n in (tflite_keep_float or '').split(',') if n] or None,
    )
    result = run_export(b, plan)
    if result.table is not None:
        from edgecat.export.precision_table import render

        console.print(render(result.table))
    for line in result.lines:  # file names are text, not markup ("[...]" in a name stays)
        console.print(escape(line))
    for line in result.warnings:  # stdout is for results: a warning is a stderr line, as info's notes are
        click.secho(f"warning: {line}", fg="yellow", err=True)
    if result.refused:  # after everything that was written has been reported: a non-zero exit all the same
        from edgecat.errors import EdgecatError
        from edgecat.redact import redact

        for line in result.refused[:-1]:
            click.secho(f"error: {redact(line)}", fg="red", err=True)
        raise EdgecatError(result.refused[-1])


COMMANDS = [export]
