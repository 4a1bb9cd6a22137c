"""Which unlabeled clips get a pseudo-label, and the pseudo.h5 file that records one pass.

The rule (Algorithm 1, and the variants of the paper's Table 6):
* `collab` (FinePseudo): p = (p_A + p_E) / 2; accept argmax p when max p > theta.
* `action`: p_E alone (confidence-only pseudo-labeling). `alignability`: p_A alone.
* `verify`: f_E's label when max p_E > theta and its class alignability S_c exceeds
  `verify_threshold` (0.6 in Table 6).
* `uncertainty` (UPS, Rizve et al. 2021, positive labels only): p_E is the mean of `mc_passes`
  MC-dropout predictions; accept argmax when max p_E > theta and the std of that class's probability
  over the passes is below `uncertainty_threshold` (UPS's kappa_p).
* `none`: nothing is accepted (the compute-matched control: self-training's epochs on D_l alone).
* `oracle` (a control, with any source): the accepted clips get their true labels, and accepted
  clips of classes the models do not know are dropped: the ceiling of what the selection could give.
* Open world: a clip whose best class alignability max_c S_c is below `novel_threshold` is set
  aside as novel and never pseudo-labeled (Sec. 4.4).
pseudo.h5 keeps every clip's p_E, p_A, class logits, label, confidence and verdict, with the count
and accuracy of the accepted labels where ground truth is known (the columns of Table 6).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from fgar_cli.artifacts import read_h5, write_h5
from fgar_cli.config import Config, PseudoLabeling, Source
from fgar_cli.data.index import NO_TRUTH
from fgar_cli.errors import FgarError
from fgar_cli.method.gallery import AlignabilityScores

PSEUDO_SCHEMA, PSEUDO_VERSION = "fgar.pseudo", 1


@dataclass
class Selection:
    p: Tensor  # (N, C): the distribution the label is taken from
    label: Tensor  # (N,)
    confidence: Tensor  # (N,): max p
    accepted: Tensor  # (N,) bool
    novel: Tensor  # (N,) bool: set aside as a clip of an unknown class
    uncertainty: Tensor | None = None  # (N,): std of the label's MC-dropout probability (--source uncertainty)


def select_pseudo_labels(
    p_E: Tensor,
    p_A: Tensor | None,
    class_alignability: Tensor | None,
    rule: PseudoLabeling,
    novel_threshold: float | None = None,
    p_E_samples: Tensor | None = None,
) -> Selection:
    """Labels, confidences and acceptance for the Table 6 variants (and open-world rejection).

    `p_E_samples` (N, passes, C) are f_E's MC-dropout predictions, which `--source uncertainty` needs."""
    if rule.source.needs_alignability and (p_A is None or class_alignability is None):
        raise FgarError(f"--source {rule.source} needs the alignability encoder (--ckpt-a)")
    uncertainty = None
    if rule.source == Source.COLLAB:
        p = (p_A + p_E) / 2
    elif rule.source == Source.ALIGNABILITY:
        p = p_A
    elif rule.source == Source.UNCERTAINTY:
        if p_E_samples is None:
            raise FgarError("--source uncertainty needs f_E's MC-dropout predictions")
        p = p_E_samples.mean(1)
    else:  # action, verify, none: f_E decides the label
        p = p_E
    confidence, label = p.max(1)
    accepted = confidence > rule.theta
    if rule.source == Source.UNCERTAINTY:
        assert p_E_samples is not None
        spread = p_E_samples.std(1, correction=1) if p_E_samples.shape[1] > 1 else torch.zeros_like(p)
        uncertainty = spread.gather(1, label[:, None])[:, 0]
        accepted &= uncertainty < rule.uncertainty_threshold
    elif rule.source == Source.VERIFY:
        accepted &= class_alignability.gather(1, label[:, None])[:, 0] > rule.verify_threshold
    elif rule.source == Source.NONE:
        accepted = torch.zeros_like(accepted)
    novel = torch.zeros_like(accepted)
    if novel_threshold is not None and class_alignability is not None:
        novel = class_alignability.max(1).values < novel_threshold
        accepted &= ~novel
    return Selection(p, label, confidence, accepted, novel, uncertainty)


def with_true_labels(selection: Selection, truth: np.ndarray, where: str) -> Selection:
    """The oracle control: the accepted clips keep their acceptance but take their true label; accepted
    clips of a class the models do not know (truth -1) are dropped. Every clip needs ground truth."""
    if (truth == NO_TRUTH).any():
        raise FgarError(f"{where}: pseudo_labeling.oracle needs the true label of every unlabeled clip")
    known = torch.as_tensor(truth >= 0)
    label = torch.where(known, torch.as_tensor(truth, dtype=selection.label.dtype).clamp_min(0), selection.label)
    return replace(selection, label=label, accepted=selection.accepted & known)


def pseudo_label_stats(label: np.ndarray, accepted: np.ndarray, truth: np.ndarray | None) -> dict[str, Any]:
    """How many of the scored clips were accepted and how many of those got their true label.

    truth -1 marks clips of classes the models do not know (an accepted one counts as wrong);
    truth NO_TRUTH marks clips nobody labeled (truly unlabeled footage), left out of the accuracy."""
    stats: dict[str, Any] = {"accepted_count": int(accepted.sum()), "scored_count": int(len(label))}
    known = accepted if truth is None else accepted & (truth != NO_TRUTH)
    if truth is not None and known.any():
        stats["accepted_accuracy"] = float((label[known] == truth[known]).mean())
    else:
        stats["accepted_accuracy"] = float("nan")
    return stats


@dataclass
class PseudoLabels:
    """One pseudo-labeling pass over a set of unlabeled clips."""

    video_ids: list[str]
    p_E: Tensor  # (N, C)
    scores: AlignabilityScores | None  # f_A's non-parametric classifier, when f_A took part
    selection: Selection
    truth: np.ndarray  # (N,) the true model class where known (-1: a class the models do not know)
    class_names: list[str]
    rule: PseudoLabeling
    round: int = 0
    novel_threshold: float | None = None

    def accepted_labels(self) -> dict[str, int]:
        """The accepted clips and their labels: Algorithm 1 adds these to D_l."""
        accepted = self.selection.accepted.tolist()
        labels = self.selection.label.tolist()
        return {vid: y for vid, y, ok in zip(self.video_ids, labels, accepted, strict=True) if ok}

    def stats(self) -> dict[str, Any]:
        return pseudo_label_stats(self.selection.label.numpy(), self.selection.accepted.numpy(), self.truth)


def write_pseudo_labels(path: Path, pl: PseudoLabels, config: Config, inputs: list[str]) -> None:
    nan = torch.full_like(pl.p_E, float("nan"))
    scores = pl.scores
    max_alignability = (
        scores.class_alignability.max(1).values
        if scores is not None
        else torch.full((len(pl.video_ids),), float("nan"))
    )
    attrs = {
        "theta": pl.rule.theta,
        "oracle": pl.rule.oracle,
        "tau": float("nan") if scores is None else scores.tau,
        "source": pl.rule.source.value,
        "round": pl.round,
        **({"rho": scores.rho, "gamma": scores.gamma} if scores is not None else {}),
        "novel_threshold": float("nan") if pl.novel_threshold is None else pl.novel_threshold,
        **pl.stats(),
    }
    write_h5(
        path,
        PSEUDO_SCHEMA,
        PSEUDO_VERSION,
        {
            "video_ids": pl.video_ids,
            "p_A": scores.probs if scores is not None else nan,
            "p_E": pl.p_E,
            "p": pl.selection.p,
            "label": pl.selection.label,
            "confidence": pl.selection.confidence,
            "accepted": pl.selection.accepted,
            "novel": pl.selection.novel,
            "max_alignability": max_alignability,
            "uncertainty": pl.selection.uncertainty
            if pl.selection.uncertainty is not None
            else torch.full((len(pl.video_ids),), float("nan")),
            "truth": pl.truth,
            "class_alignability": scores.class_alignability if scores is not None else nan,
            "class_logits": scores.class_logits if scores is not None else nan,
            "class_names": pl.class_names,
        },
        attrs=attrs,
        config=config.model_dump(mode="json"),
        inputs=inputs,
    )


def read_pseudo_labels(path: str | Path) -> dict[str, Any]:
    """The datasets and attributes of a pseudo.h5 that later stages need, checked."""
    data, attrs = read_h5(
        path,
        PSEUDO_SCHEMA,
        PSEUDO_VERSION,
        {"video_ids": (1, "S"), "label": (1, "i"), "accepted": (1, "b"), "confidence": (1, "f")},
    )
    return {
        "video_ids": list(data["video_ids"]),
        "label": data["label"],
        "accepted": data["accepted"],
        "attrs": attrs,
        **{k: data[k] for k in ("max_alignability", "truth", "novel", "uncertainty") if k in data},
    }


def accepted_in_file(path: str | Path, expected_ids: list[str], num_classes: int) -> dict[str, int]:
    """The accepted clips of a pseudo.h5 and their labels, checked to be a pass over `expected_ids`
    with labels of the `num_classes` model classes."""
    pl = read_pseudo_labels(path)
    ids, labels = pl["video_ids"], pl["label"]
    if not len(ids) == len(labels) == len(pl["accepted"]):
        raise FgarError(f"{path}: video_ids, label and accepted differ in length")
    unknown = sorted(set(ids) - set(expected_ids))
    if unknown or len(set(ids)) != len(expected_ids):
        what = f"clip '{unknown[0]}' is not one of" if unknown else "it does not cover"
        raise FgarError(
            f"{path}: {what} the {len(expected_ids)} unlabeled clips this round labels "
            "(a pseudo.h5 of another split or run?)"
        )
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise FgarError(f"{path}: labels must lie in 0..{num_classes - 1}")
    return {vid: int(y) for vid, y, ok in zip(ids, labels, pl["accepted"], strict=True) if ok}
