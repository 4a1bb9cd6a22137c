"""Classification and detection metrics, in numpy, and the confusion-matrix figure (matplotlib, Agg)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np


def classification_metrics(probs: np.ndarray, truth: np.ndarray, class_names: list[str]) -> dict[str, Any]:
    """Top-1, top-5, mean class accuracy, per-class accuracy and the confusion matrix.

    Rows whose truth is negative (clips of classes the model does not know) are left out.
    """
    keep = truth >= 0
    probs, truth = probs[keep], truth[keep]
    C = len(class_names)
    pred = probs.argmax(1)
    k = min(5, C)
    topk = np.argsort(-probs, axis=1)[:, :k]
    confusion = np.zeros((C, C), dtype=np.int64)
    np.add.at(confusion, (truth, pred), 1)
    support = confusion.sum(1)
    per_class = np.where(support > 0, np.diag(confusion) / np.maximum(support, 1), np.nan)
    return {
        "top1": float((pred == truth).mean()) if len(truth) else float("nan"),
        "top5": float((topk == truth[:, None]).any(1).mean()) if len(truth) else float("nan"),
        "mean_class_accuracy": float(np.nanmean(per_class)) if np.isfinite(per_class).any() else float("nan"),
        "per_class_accuracy": {
            name: (None if np.isnan(a) else float(a)) for name, a in zip(class_names, per_class, strict=True)
        },
        "confusion": confusion.tolist(),
        "clips": int(len(truth)),
    }


def auroc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve of `scores` for detecting `positive` (Mann-Whitney, ties count half)."""
    pos, neg = scores[positive], scores[~positive]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    order = np.argsort(np.concatenate([pos, neg]), kind="mergesort")
    ranks = np.empty(len(order))
    ranks[order] = np.arange(1, len(order) + 1)
    values = np.concatenate([pos, neg])
    for v in np.unique(values):  # average ranks of ties
        tie = values == v
        ranks[tie] = ranks[tie].mean()
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend: figures are files, never windows (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


MAX_CLASSES_WITH_COUNTS = 30  # beyond this a cell is too small to hold its count at 8 pt
_TICK_PT = 8.0  # the smallest font of the figure, at the saved size


def save_confusion_png(confusion: np.ndarray, class_names: list[str], path: Path, title: str) -> None:
    """The confusion matrix as a PNG that stays legible from 2 to a few hundred classes.

    Colour is the fraction of each true class (rows sum to 1), so classes with few test clips read
    like the others; the counts are written in the cells up to MAX_CLASSES_WITH_COUNTS classes. The
    figure grows with the number of classes so that every label keeps 8 pt at the saved size (beyond
    what 30 inches hold, only every k-th label is shown), and is saved with a tight bounding box so
    that the title (which names the arm and head: callers pass it) and long labels are never cut.
    """
    import textwrap

    from fgar_cli.files import atomic_path

    plt = pyplot()
    C = len(class_names)
    counts = C <= MAX_CLASSES_WITH_COUNTS
    cell = 0.4 if counts else 0.2  # inches: room for a 3-digit count, or for one 8-pt label
    side = min(max(3.5, cell * C), 30.0)
    # A fixed axes size; bbox_inches="tight" grows the saved image around the labels instead of
    # squeezing the matrix to make room for them.
    fig = plt.figure(figsize=(side + 1.5, side))
    ax = fig.add_axes((0.0, 0.0, side / (side + 1.5), 1.0))
    norm = confusion / np.maximum(confusion.sum(1, keepdims=True), 1)
    image = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
    colourbar = fig.colorbar(image, ax=ax, fraction=0.046 * 10 / max(side, 10), pad=0.02)
    colourbar.set_label("fraction of the true class", fontsize=9)
    colourbar.ax.tick_params(labelsize=_TICK_PT)

    step = max(1, math.ceil(C * _TICK_PT * 1.3 / (side * 72)))  # thin the labels only when they would overlap
    ticks = list(range(0, C, step))
    labels = [short_label(class_names[i]) for i in ticks]
    ax.set_xticks(
        ticks,
        labels,
        fontsize=_TICK_PT,
        rotation=45 if C <= 12 else 90,
        ha="right" if C <= 12 else "center",
        rotation_mode="anchor" if C <= 12 else "default",
    )
    ax.set_yticks(ticks, labels, fontsize=_TICK_PT)
    ax.set_xticks(np.arange(-0.5, C), minor=True)
    ax.set_yticks(np.arange(-0.5, C), minor=True)
    ax.grid(which="minor", color="white", linewidth=0.5 if C <= 60 else 0)
    ax.tick_params(which="minor", length=0)
    ax.set_xlabel("predicted class", fontsize=10)
    ax.set_ylabel("true class", fontsize=10)
    if counts:
        for (i, j), n in np.ndenumerate(confusion):
            colour = "white" if norm[i, j] > 0.6 else ("black" if n else "#b0b0b0")
            ax.text(j, i, str(int(n)), ha="center", va="center", fontsize=10 if C <= 10 else _TICK_PT, color=colour)
    width = max(60, int((side + 1.5) * 72 / (0.5 * 11)))  # characters of an 11-pt title across the figure
    wrapped = "\n".join(textwrap.fill(line, width) for line in title.splitlines())
    ax.set_title(wrapped, fontsize=11, loc="left")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png", bbox_inches="tight", pad_inches=0.15)
    plt.close(fig)


def short_label(name: str, limit: int = 40) -> str:
    """A class name short enough for a tick label."""
    return name if len(name) <= limit else name[: limit - 1] + "\u2026"
