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


def plot_history(history: list[dict[str, Any]], dest: str | Path) -> Path:
    """Accuracy and loss over every epoch of every stage, with the stage boundaries marked."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    epochs = [r["epoch"] for r in history]
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
        ax.set_xlabel("epoch")
        ax.set_title(metric)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if history:
        fig.suptitle("training: " + " → ".join(dict.fromkeys(r["stage"] for r in history)))
    return _save(fig, Path(dest))


def plot_confusion(matrix: list[list[int]], classes: list[str], dest: str | Path) -> Path:
    plt = _plt()
    m = np.asarray(matrix)
    fig, ax = plt.subplots(figsize=(1.2 * len(classes) + 2.5, 1.2 * len(classes) + 2))
    ax.imshow(m, cmap="Blues")
    ax.set_xticks(range(len(classes)), classes)
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            ax.text(j, i, str(m[i, j]), ha="center", va="center",
                    color="white" if m[i, j] > m.max() / 2 else "black")
    ax.set_title("confusion matrix")
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
