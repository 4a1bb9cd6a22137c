"""Classification and detection metrics, in numpy, with no extra dependency."""

from __future__ import annotations

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


def save_confusion_png(confusion: np.ndarray, class_names: list[str], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fgar_cli.files import atomic_path

    C = len(class_names)
    size = max(4.0, 0.35 * C + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    norm = confusion / np.maximum(confusion.sum(1, keepdims=True), 1)
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(C), class_names, rotation=90, fontsize=6)
    ax.set_yticks(range(C), class_names, fontsize=6)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
