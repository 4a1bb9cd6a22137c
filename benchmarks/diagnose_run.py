"""Why does a run's self-training accept few or no pseudo-labels? Figures from one compare.sh run folder.

    python benchmarks/diagnose_run.py RUN_DIR

Prints, for the run's labeled split as gallery and its test split as queries:
* soft-DTW 1-NN and the class-mean classifier (Eq. 7, rho 8) on centred 16 x 16 grey frames: what
  alignment alone does with no learning;
* the same with f_A's embeddings (fit/A.pt) and with f_A after GITDL only (pretrain/A0.pt);
* f_E's (fit/E.pt) accuracy on its own labeled clips and on the unlabeled clips (memorising or learning?);
* from each round of the FinePseudo arm (st_finepseudo/round_K/pseudo.h5): the fitted tau, the
  quantiles of max p, max p_A and max p_E, the accuracy of each argmax, and for several theta how many
  clips each of p, p_A and p_E would accept and how many of those are right (unlabeled clips only,
  never the test split).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from fgar_cli.artifacts import load_checkpoint, read_h5
from fgar_cli.models import build_model_from_checkpoint
from fgar_cli.softdtw import pairwise_soft_dtw
from fgar_cli.stages.common import clip_dataset, load_stage_data, make_loader
from fgar_cli.stages.pseudolabel import class_logits
from fgar_cli.training import predict_clips


def clips(data, ids: list[str], clip: dict) -> torch.Tensor:
    dataset = clip_dataset(data, ids, clip, mode="test")
    return torch.stack([dataset[i]["video"] for i in range(len(ids))])


def alignment_accuracy(
    gallery: torch.Tensor, queries: torch.Tensor, g_labels: np.ndarray, q_labels: np.ndarray, classes: int
) -> tuple[float, float]:
    distances = pairwise_soft_dtw(F.normalize(queries, dim=-1), F.normalize(gallery, dim=-1), 0.1)
    nearest = g_labels[distances.argmin(1).numpy()]
    class_mean = class_logits(-distances, g_labels, classes, 8, 0).argmax(1).numpy()
    return float((nearest == q_labels).mean()), float((class_mean == q_labels).mean())


def main(run: Path) -> None:
    e_ckpt = load_checkpoint(run / "fit" / "E.pt", kind="action")
    cfg = e_ckpt["config"]
    data = load_stage_data(cfg["index"], cfg["split"])
    clip = {"num_frames": cfg["num_frames"], "size": cfg["size"]}
    labeled, test = data.split.labeled, data.split.test
    y_l = np.array([data.label_of[i] for i in labeled])
    y_t = np.array([data.label_of[i] for i in test])
    x_l, x_t = clips(data, labeled, clip), clips(data, test, clip)
    print(
        f"{run}: {data.num_classes} classes, gallery {len(labeled)} labeled clips, {len(test)} test clips, "
        f"chance {1 / data.num_classes:.3f}"
    )

    def grey16(x: torch.Tensor) -> torch.Tensor:
        g = F.adaptive_avg_pool2d(x.mean(2), 16).flatten(2)
        return g - g.mean(-1, keepdim=True)

    nn1, cm = alignment_accuracy(grey16(x_l), grey16(x_t), y_l, y_t, data.num_classes)
    print(f"  centred 16x16 grey frames, soft-DTW: 1-NN {nn1:.3f}, class mean {cm:.3f}")
    for name in ("pretrain/A0.pt", "fit/A.pt"):
        path = run / name
        if path.exists():
            model = build_model_from_checkpoint(load_checkpoint(path, kind="alignability")).eval()
            with torch.no_grad():
                nn1, cm = alignment_accuracy(model(x_l), model(x_t), y_l, y_t, data.num_classes)
            print(f"  f_A {name}, soft-DTW: 1-NN {nn1:.3f}, class mean {cm:.3f}")

    model_e = build_model_from_checkpoint(e_ckpt)
    for part in ("labeled", "unlabeled", "test"):
        ids = getattr(data.split, part)
        loader = make_loader(clip_dataset(data, ids, clip, mode="test"), 16, False, 0)
        probs, _ = predict_clips(model_e, loader, torch.device("cpu"), part)
        truth = np.array([data.label_of[i] for i in ids])
        print(f"  f_E fit/E.pt top-1 on {part}: {(probs[:, 0].argmax(1).numpy() == truth).mean():.3f}")

    for pseudo in sorted((run / "st_finepseudo").glob("round_*/pseudo.h5")):
        pl, attrs = read_h5(pseudo, "fgar.pseudo", 1)
        print(f"  {pseudo.relative_to(run)} (theta {attrs['theta']}, tau {attrs['tau']:.3g}):")
        for key in ("p", "p_A", "p_E"):
            top = pl[key].max(1)
            acc = (pl[key].argmax(1) == pl["truth"]).mean()
            q = np.quantile(top, [0.5, 0.9, 1.0])
            print(f"    max {key:3s}: median {q[0]:.3f}, 90% {q[1]:.3f}, max {q[2]:.3f}; argmax accuracy {acc:.3f}")
        for theta in (0.5, 0.6, 0.7, 0.8, 0.9):  # what each source would accept, and how much of it is right
            cells = []
            for key in ("p", "p_A", "p_E"):
                passed = pl[key].max(1) > theta
                right = int((pl[key].argmax(1)[passed] == pl["truth"][passed]).sum())
                cells.append(f"{key} {right}/{int(passed.sum())}")
            print(f"    theta {theta}: right/accepted  " + ", ".join(cells))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python benchmarks/diagnose_run.py RUN_DIR")
    main(Path(sys.argv[1]))
