"""Stage 6, `fgar openworld`: semi-supervised learning when unlabeled data holds novel classes.

Paper Sec. 4.4 / Table 4: the labeled set covers only the known classes (an open-world split from
`fgar data split --known-classes K`), the unlabeled set covers all classes. An unlabeled clip whose
best class alignability max_c S_c falls below a threshold is set aside as novel and never
pseudo-labeled; the rest goes through FinePseudo self-training. Reported: known-class top-1, the
pseudo-labels' count and accuracy, and how well novel clips were rejected (precision, recall, and
the AUROC of max_c S_c as a novelty score).

The threshold, unless given, is calibrated on the labeled set alone: the `quantile` of each labeled
clip's alignability with the other clips of its own class (leave-one-out). No novel clip is needed
to set it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from fgar_cli.artifacts import atomic_write_json
from fgar_cli.checkpoints import Encoders, load_encoders
from fgar_cli.config import EvaluateConfig, OpenWorldConfig
from fgar_cli.data.run_data import RunData, load_run_data
from fgar_cli.errors import FgarError
from fgar_cli.method.gallery import embed_gallery, pair_logits, require_fittable_tau
from fgar_cli.method.nonparametric import leave_one_out_class_logits
from fgar_cli.method.pseudolabels import read_pseudo_labels
from fgar_cli.metrics import auroc
from fgar_cli.runtime import resolve_device
from fgar_cli.stages.evaluate import evaluate
from fgar_cli.stages.selftrain import selftrain


def openworld(cfg: OpenWorldConfig) -> dict[str, Any]:
    if cfg.method.teacher_student:
        raise FgarError(f"fgar openworld runs FinePseudo only, not --method {cfg.method.value}")
    encoders = load_encoders(cfg.ckpt_e, cfg.ckpt_a, need_alignability=True)
    data = load_run_data(encoders.data_paths(cfg.data), cfg.run)
    if data.split.known_classes is None:
        raise FgarError(
            f"{data.paths.split}: not an open-world split; make one with "
            "`fgar data split --known-classes K` and fit the encoders on it"
        )
    require_fittable_tau(data, cfg.classifier)  # selftrain would say so too, after the calibration's embedding
    threshold = cfg.novelty.threshold
    if threshold is None:
        threshold = calibrated_threshold(encoders.to(resolve_device(cfg.run.device)), data, cfg)
    result = selftrain(cfg, novel_threshold=threshold)
    out = Path(cfg.out_dir)
    eval_cfg = EvaluateConfig(
        ckpt_e=result["ckpt_e"],
        ckpt_a=result["ckpt_a"],
        data=cfg.data,
        classifier=cfg.classifier,
        run=cfg.run,
        out_dir=str(out / "eval"),
    )
    known = evaluate(eval_cfg)
    metrics = {
        "novel_threshold": threshold,
        "known_classes": len(data.class_names),
        "known_top1": known["top1"],
        "known_top1_combined": known.get("combined", {}).get("top1"),
        "cumulative_pl_count": result["cumulative_pl_count"],
        "cumulative_pl_accuracy": result["cumulative_pl_accuracy"],
        "novel_rejection_round1": novel_rejection(out / "round_1" / "pseudo.h5"),
        "novel_rejection_last": novel_rejection(out / f"round_{cfg.rounds}" / "pseudo.h5"),
        "rounds": result["rounds"],
    }
    atomic_write_json(out / "metrics.json", metrics)
    return metrics


def calibrated_threshold(encoders: Encoders, data: RunData, cfg: OpenWorldConfig) -> float:
    """The novelty threshold from the labeled gallery alone (leave-one-out, see the module notes)."""
    assert encoders.alignability is not None
    model_a, gamma = encoders.alignability.model, encoders.alignability.recipe.loss.gamma
    clip, device = encoders.action.recipe.clip, encoders.device
    gallery = embed_gallery(model_a, data, clip, device, cfg.run.inference_batch_size)
    logits = pair_logits(model_a, gallery.embeddings, gallery.embeddings, gamma, device)
    return leave_one_out_threshold(logits, gallery.labels, cfg.classifier.rho, cfg.novelty.quantile)


def leave_one_out_threshold(logits: torch.Tensor, labels: np.ndarray, rho: int, quantile: float) -> float:
    """The `quantile` of each gallery clip's own-class alignability S_c against the rest of its class."""
    class_logit = leave_one_out_class_logits(logits, labels, int(labels.max()) + 1, rho, seed=0)
    own = class_logit[torch.arange(len(labels)), torch.as_tensor(labels)]
    own = torch.sigmoid(own[~torch.isnan(own)])
    if not len(own):
        raise FgarError(
            "cannot calibrate the novelty threshold: every known class has a single labeled clip; "
            "pass --novel-threshold"
        )
    return float(np.quantile(own.numpy(), quantile))


def novel_rejection(pseudo_path: Path) -> dict[str, float]:
    pl = read_pseudo_labels(pseudo_path)
    truth_novel = np.asarray(pl["truth"]) == -1  # NO_TRUTH (-2): nobody knows, not novel
    flagged = np.asarray(pl["novel"]).astype(bool)
    tp = int((flagged & truth_novel).sum())
    return {
        "novel_clips": int(truth_novel.sum()),
        "flagged_novel": int(flagged.sum()),
        "precision": tp / flagged.sum() if flagged.any() else float("nan"),
        "recall": tp / truth_novel.sum() if truth_novel.any() else float("nan"),
        "auroc": auroc(-np.asarray(pl["max_alignability"], dtype=float), truth_novel),
    }
