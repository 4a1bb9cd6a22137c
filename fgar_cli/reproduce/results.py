"""Reading what the stages wrote back into numbers: one arm's run in one cell, and the pseudo-label
rankings that Table 6 compares at matched counts."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fgar_cli.artifacts import read_h5
from fgar_cli.config import Source
from fgar_cli.method.pseudolabels import PSEUDO_SCHEMA, PSEUDO_VERSION
from fgar_cli.reproduce.plan import Cell, Head
from fgar_cli.reproduce.workspace import ArmFolders
from fgar_cli.stages.evaluate import PREDICTIONS_SCHEMA, PREDICTIONS_VERSION


@dataclass
class ArmRun:
    """One arm in one cell: per-test-video correctness of its head, and its pseudo-labels."""

    cell: Cell
    correct: np.ndarray  # (videos,) bool, in the split's test order
    video_ids: list[str]
    pl_count: float = math.nan  # pseudo-labels accepted over all rounds
    pl_accuracy: float = math.nan
    round1_count: float = math.nan  # accepted in round 1, when every source sees the same encoders
    round1_accuracy: float = math.nan
    extra: dict[str, Any] | None = None  # open world: the novel-clip filter

    @property
    def top1(self) -> float:
        return float(self.correct.mean())


def read_arm(cell: Cell, folders: ArmFolders, head: Head) -> ArmRun:
    data, _ = read_h5(
        folders.evaluated / "predictions.h5",
        PREDICTIONS_SCHEMA,
        PREDICTIONS_VERSION,
        {"video_ids": (1, "S"), "labels": (1, "i"), "valid": (1, "b")},
    )
    probs = data.get(f"probs_{head.value}")
    if probs is None:
        raise ValueError(f"{folders.evaluated}/predictions.h5 has no {head.value} head")
    correct = (probs.argmax(1) == data["labels"]) & data["valid"].astype(bool)
    run = ArmRun(cell, correct, list(data["video_ids"]))
    if folders.trained is None:
        return run
    summary_file = folders.trained / (
        "metrics.json" if (folders.trained / "metrics.json").exists() else "selftrain.json"
    )
    summary = json.loads(summary_file.read_text())
    rounds = summary["rounds"]
    run.pl_count, run.pl_accuracy = summary["cumulative_pl_count"], _number(summary["cumulative_pl_accuracy"])
    run.round1_count, run.round1_accuracy = rounds[0]["round_pl_count"], _number(rounds[0]["round_pl_accuracy"])
    if "novel_rejection_round1" in summary:
        run.extra = summary["novel_rejection_round1"]
    return run


def _number(value: Any) -> float:
    return math.nan if value is None else float(value)


def ranking_accuracy(pseudo_h5: Path, counts: list[int]) -> dict[int, float]:
    """Accuracy of a source's `n` most trusted round-1 pseudo-labels, for each n of `counts`.

    A source's trust order is its own: clips that pass its extra test first (verify: the class
    alignability; uncertainty: the MC-dropout spread), each group by the confidence it thresholds
    (collab: max p; the others: max p_E). Accepting at theta is this order cut where the confidence
    drops below theta; here it is cut at the same count for every source, which compares quality at
    equal quantity (the paper compares them at one theta, where the counts differ)."""
    data, attrs = read_h5(pseudo_h5, PSEUDO_SCHEMA, PSEUDO_VERSION, {"label": (1, "i"), "confidence": (1, "f")})
    source = Source(attrs["source"])
    rule = json.loads(attrs["config"])["pseudo_labeling"]  # every fgar artifact records its config
    confidence, label, truth = data["confidence"], data["label"], data["truth"]
    passes = np.ones(len(label), dtype=bool)
    if source == Source.VERIFY:
        passes = np.take_along_axis(data["class_alignability"], label[:, None], 1)[:, 0] > rule["verify_threshold"]
    elif source == Source.UNCERTAINTY:
        passes = data["uncertainty"] < rule["uncertainty_threshold"]
    order = np.lexsort((-confidence, ~passes))  # passing clips first, then by confidence
    right = label[order] == truth[order]
    return {n: float(right[:n].mean()) if 0 < n <= len(right) else math.nan for n in counts}
