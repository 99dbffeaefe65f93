"""Training curves, confusion matrix and a grid of validation images (matplotlib, Agg backend)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgecat.fsutil import atomic_path


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, dest: Path) -> Path:
    plt = _plt()
    with atomic_path(dest) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    plt.close(fig)
    return dest


def best_epoch(history: list[dict[str, Any]]) -> int | None:
    """The epoch training keeps: the lowest validation loss (the first one on a tie)."""
    scored = [(r["val_loss"], i) for i, r in enumerate(history)
              if isinstance(r.get("val_loss"), (int, float)) and np.isfinite(r["val_loss"])]
    return history[min(scored)[1]]["epoch"] if scored else None


def plot_history(history: list[dict[str, Any]], dest: str | Path, best: int | None = None) -> Path:
    """Accuracy and loss over every epoch of every stage: whole-number epoch ticks, the stage
    boundaries, and the kept epoch (``best``, default: lowest validation loss) marked."""
    from matplotlib.ticker import MaxNLocator

    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    epochs = [r["epoch"] for r in history]
    best = best if best is not None else best_epoch(history)
    for ax, metric in zip(axes, ("accuracy", "loss")):
        for prefix, style in (("", "-o"), ("val_", "-s")):
            vals = [r.get(prefix + metric, np.nan) for r in history]
            ax.plot(epochs, vals, style, ms=3, label=("validation " if prefix else "training ") + metric)
        stages = [r["stage"] for r in history]
        for i in range(1, len(stages)):
            if stages[i] != stages[i - 1]:
                x = epochs[i] - 0.5
                ax.axvline(x, color="grey", ls="--", lw=1)
                ax.text(x, ax.get_ylim()[1], f" {stages[i]}", va="top", ha="left", fontsize=8, color="grey")
        if best is not None and best in epochs:
            val = history[epochs.index(best)].get("val_" + metric, np.nan)
            ax.axvline(best, color="tab:green", lw=1, alpha=0.6)
            ax.plot([best], [val], "*", color="tab:green", ms=13, zorder=5,
                    label=f"kept: epoch {best} (val {metric} {val:.3f})")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_title(metric)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if history:
        fig.suptitle("training: " + " → ".join(dict.fromkeys(r["stage"] for r in history))
                     + (f"; kept epoch {best} (lowest validation loss)" if best is not None else ""))
    return _save(fig, Path(dest))


def plot_confusion(matrix: list[list[int]], classes: list[str], dest: str | Path) -> Path:
    """Counts and the row-normalised view (each true class sums to 1: per-class recall) side by
    side, with accuracy and the number of images in the title."""
    plt = _plt()
    m = np.asarray(matrix, dtype=np.int64)
    n = int(m.sum())
    accuracy = float(np.trace(m)) / n if n else float("nan")
    rows = m.sum(axis=1, keepdims=True)
    norm = np.divide(m, rows, out=np.zeros(m.shape, dtype=np.float64), where=rows > 0)
    side = 1.2 * len(classes) + 2.5
    fig, axes = plt.subplots(1, 2, figsize=(2 * side + 0.5, side - 0.5))
    for ax, values, title, fmt in ((axes[0], m, "counts", "{:d}"), (axes[1], norm, "normalised by true class", "{:.2f}")):
        top = values.max() if values.size and values.max() > 0 else 1
        ax.imshow(values, cmap="Blues", vmin=0, vmax=top if values is m else 1.0)
        ax.set_xticks(range(len(classes)), classes)
        ax.set_yticks(range(len(classes)), classes)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        for i in range(values.shape[0]):
            for j in range(values.shape[1]):
                v = values[i, j]
                ax.text(j, i, fmt.format(int(v) if values is m else float(v)), ha="center", va="center",
                        color="white" if v > (top if values is m else 1.0) / 2 else "black")
        ax.set_title(title, fontsize=10)
    fig.suptitle(f"confusion matrix: accuracy {accuracy:.3f} ({int(np.trace(m))} of {n} images)")
    return _save(fig, Path(dest))


def plot_grid(files: Sequence[str | np.ndarray], y_true: np.ndarray, probs: np.ndarray, bundle: Any,
              dest: str | Path, n: int = 25, seed: int = 0) -> Path:
    """A 5x5 grid of validation images (files, or decoded RGB arrays) with true and predicted
    labels; mistakes in red."""
    from edgecat import imaging

    plt = _plt()
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(files), size=min(n, len(files)), replace=False) if len(files) else []
    labels = bundle.labels_from_probs(probs) if len(probs) else []
    side = 5
    fig, axes = plt.subplots(side, side, figsize=(11, 12))
    for ax in axes.ravel():
        ax.axis("off")
    for ax, i in zip(axes.ravel(), idx):
        try:
            img = files[i] if isinstance(files[i], np.ndarray) else imaging.decode_image(files[i])
        except Exception:  # noqa: BLE001 - a plot never fails a run
            continue
        true = bundle.classes[int(y_true[i])]
        pred = labels[i]
        p = float(probs[i][bundle.classes.index(pred)])
        ax.imshow(img)
        ok = true == pred
        ax.set_title(f"true {true}\npred {pred} {p:.2f}", fontsize=8, color="black" if ok else "red")
        if not ok:
            for s in ax.spines.values():
                s.set_visible(True)
                s.set_color("red")
                s.set_linewidth(3)
            ax.axis("on")
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle("validation samples (mistakes in red)")
    return _save(fig, Path(dest))
