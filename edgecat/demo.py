"""`make demo`: the whole job end to end, offline, in a few minutes on a laptop CPU.

Makes a small two-class image set (with a few broken files, as real folders have), then runs the
same commands a user would: train, evaluate, predict, export (ONNX + INT8), bench and stream.
Each step is the real CLI, invoked in-process, and printed as the command line it stands for.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import shutil
import sys
import time
from pathlib import Path

log = logging.getLogger("edgecat.demo")


def echo(msg: str) -> None:
    from edgecat.cli.common import console

    console.print(msg, highlight=False)


def make_demo_data(root: Path, per_class: int = 80, size: int = 64) -> Path:
    """Synthetic cats (warm discs) and dogs (cool squares), plus files a real folder might hold."""
    from edgecat.synthetic import make_dataset, make_video

    data = make_dataset(root / "data", per_class=per_class, size=size, layout="split", seed=0)
    train_cat = data / "train" / "cat"
    (train_cat / "empty.jpg").write_bytes(b"")
    good = sorted(train_cat.glob("*.jpg"))[0].read_bytes()
    (train_cat / "truncated.jpg").write_bytes(good[: len(good) // 3])
    (train_cat / "notes.jpg").write_text("not an image")
    labels = [int(i // 15) % 2 for i in range(90)]  # 15 frames of a cat, 15 of a dog, ...
    make_video(root / "camera.mp4", labels, size=(640, 480), fps=30.0, seed=2)
    return data


def run_cli(args: list[str]) -> None:
    """Run one edgecat command in-process; stop the demo on the first failure."""
    from edgecat.cli import main

    echo(f"\n[bold cyan]$ edgecat {shlex.join(args)}[/]")
    try:
        main.main(args=args, prog_name="edgecat", standalone_mode=False)
    except SystemExit as exc:  # the CLI exits non-zero with a message already printed
        if exc.code not in (0, None):
            raise SystemExit(f"demo stopped: `edgecat {args[0]}` exited with {exc.code}") from None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="demo", help="Folder for the data, the bundle and the outputs.")
    p.add_argument("--size", type=int, default=64, help="Input size of the demo model in pixels.")
    p.add_argument("--epochs", type=int, default=5)
    a = p.parse_args(argv)
    out = Path(a.out)
    if out.exists():
        shutil.rmtree(out)  # the demo owns this folder; a rerun starts clean
    out.mkdir(parents=True)
    t0 = time.perf_counter()
    echo(f"edgecat demo: writing everything under {out.resolve()}")
    data = make_demo_data(out)
    bundle = out / "bundle"
    sample = sorted((data / "validation" / "dog").glob("*.jpg"))[:2] + sorted((data / "validation" / "cat").glob("*.jpg"))[:1]

    run_cli(["train", "--data", str(data), "--weights", "none", "--img-size", str(a.size),
             "--full-epochs", str(a.epochs), "--batch-size", "16", "--out", str(bundle)])
    run_cli(["evaluate", str(bundle)])
    run_cli(["predict", str(bundle), *map(str, sample)])
    run_cli(["export", str(bundle), "--int8", "--calib", str(data / "train"), "--calib-size", "100"])
    run_cli(["bench", str(bundle), "--backend", "keras-predict,keras,onnxruntime", "--precision", "fp32,int8",
             "--batch", "1", "--images", str(data / "validation"), "--iters", "100",
             "--json", str(out / "bench.json"), "--plot", str(out / "bench.png")])
    run_cli(["stream", str(bundle), "--source", str(out / "camera.mp4"), "--precision", "int8",
             "--sink", str(out / "annotated.mp4"), "--sink", f"jsonl://{out / 'events.jsonl'}", "--smooth", "3"])
    run_cli(["info", str(bundle)])

    echo(f"\ndemo finished in {time.perf_counter() - t0:.0f} s")
    echo(f"  bundle:        {bundle}  (edgecat info {bundle})")
    echo(f"  plots:         {bundle / 'plots'}  (history.png, confusion_matrix.png, val_grid.png)")
    echo(f"  bench:         {out / 'bench.json'}, {out / 'bench.png'}")
    echo(f"  stream output: {out / 'annotated.mp4'}, {out / 'events.jsonl'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
