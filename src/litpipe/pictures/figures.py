"""Pictures users would rather look at than read: curves, confusion matrix, sample grids.

matplotlib runs headless (Agg); every figure is written atomically as PNG.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from litpipe.atomic import atomic_path  # noqa: E402


def _save(fig: plt.Figure, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight",
                    metadata={"Software": None})  # no version stamp: same data, same bytes
    plt.close(fig)


def _as_hwc(img: np.ndarray) -> np.ndarray:
    """C×H×W uint8 → H×W (grey) or H×W×3 for imshow."""
    return img[0] if img.shape[0] == 1 else np.transpose(img, (1, 2, 0))


def sample_grid(images: np.ndarray, true: Sequence[int], pred: Sequence[int],
                classes: Sequence[str], path: Path, probs: Sequence[float] | None = None,
                title: str = "Test samples: predicted (true)") -> None:
    """Grid of images titled "pred (true)"; wrong predictions in red."""
    n = len(images)
    cols = int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.8 * rows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= n:
            continue
        ax.imshow(_as_hwc(images[i]), cmap="gray" if images[i].shape[0] == 1 else None,
                  vmin=0, vmax=255)
        ok = pred[i] == true[i]
        label = f"{classes[pred[i]]}"
        if probs is not None:
            label += f" {probs[i]:.2f}"
        ax.set_title(f"{label}\n({classes[true[i]]})", fontsize=7,
                     color="green" if ok else "red")
    fig.suptitle(title, fontsize=9)
    _save(fig, path)


def confusion_matrix_plot(matrix: Sequence[Sequence[int]], classes: Sequence[str],
                          path: Path) -> None:
    """Heat map of the confusion matrix with counts in the cells."""
    m = np.asarray(matrix)
    fig, ax = plt.subplots(figsize=(1 + 0.6 * len(classes), 0.8 + 0.6 * len(classes)))
    ax.imshow(m, cmap="Blues")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(len(classes)), classes, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    thresh = m.max() / 2 if m.size else 0
    for (i, j), v in np.ndenumerate(m):
        ax.text(j, i, str(v), ha="center", va="center", fontsize=6,
                color="white" if v > thresh else "black")
    ax.set_title("Confusion matrix (test)")
    _save(fig, path)


def curves_plot(history_csv: Path, path: Path) -> None:
    """Loss and accuracy per epoch, train vs validation, from ``train_history.csv``."""
    with history_csv.open() as fh:
        rows = list(csv.DictReader(fh))
    epochs = [int(r["epoch"]) for r in rows]
    fig, (ax_l, ax_a) = plt.subplots(1, 2, figsize=(9, 3.2))
    if not any(r.get("train_acc") for r in rows):
        ax_a.set_visible(False)  # reconstruction models have no accuracy
    for split, style in (("train", "-o"), ("val", "-s")):
        for ax, metric in ((ax_l, "loss"), (ax_a, "acc")):
            vals = [float(r[f"{split}_{metric}"]) for r in rows if r.get(f"{split}_{metric}")]
            if vals:
                ax.plot(epochs[: len(vals)], vals, style, label=split, markersize=3)
    ax_l.set(title="loss", xlabel="epoch")
    ax_a.set(title="accuracy", xlabel="epoch")
    for ax in (ax_l, ax_a):
        ax.grid(alpha=0.3)
        ax.legend()
    _save(fig, path)


def reconstruction_grid(images: np.ndarray, recon: np.ndarray, path: Path,
                        title: str = "Inputs (top) vs reconstructions (bottom)") -> None:
    """Two rows per group: original images above their reconstructions.

    ``images`` are uint8 C×H×W; ``recon`` are floats in [0, 1] of the same shape.
    """
    n = len(images)
    cols = min(n, 8)
    groups = int(np.ceil(n / cols))
    fig, axes = plt.subplots(2 * groups, cols, figsize=(1.3 * cols, 2.7 * groups),
                             squeeze=False)
    rec = np.clip(np.rint(np.asarray(recon) * 255.0), 0, 255).astype(np.uint8)
    for ax in axes.flat:
        ax.axis("off")
    for i in range(n):
        g, c = divmod(i, cols)
        for row, img in ((2 * g, images[i]), (2 * g + 1, rec[i])):
            axes[row][c].imshow(_as_hwc(img), cmap="gray" if img.shape[0] == 1 else None,
                                vmin=0, vmax=255)
    fig.suptitle(title, fontsize=9)
    _save(fig, path)


def not_applicable_plot(message: str, path: Path) -> None:
    """A small picture that says why there is no plot (keeps DVC's declared outputs whole)."""
    fig, ax = plt.subplots(figsize=(4, 1))
    ax.axis("off")
    ax.text(0.5, 0.5, message, ha="center", va="center", fontsize=9)
    _save(fig, path)
