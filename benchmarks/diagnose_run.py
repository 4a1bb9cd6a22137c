"""Why does a run's self-training accept few or no pseudo-labels? Figures from one compare.sh run folder.

    python benchmarks/diagnose_run.py RUN_DIR

Prints, for the run's labeled split as gallery and its test split as queries:
* soft-DTW 1-NN and the class-mean classifier (Eq. 7, rho 8) on centred 16 x 16 grey frames: what
  alignment alone does with no learning;
* the same with f_A's embeddings (fit/A.pt) and with f_A after GITDL only (pretrain/A0.pt), scored
  as every stage scores (`fgar_cli.method.gallery.score_queries`);
* f_E's (fit/E.pt) accuracy on its own labeled clips and on the unlabeled clips (memorising or learning?);
* from each round of the FinePseudo arm (st_finepseudo/round_K/pseudo.h5): the fitted tau, the
  quantiles of max p, max p_A and max p_E, the accuracy of each argmax, and for several theta how many
  clips each of p, p_A and p_E would accept and the accuracy of those (`fgar_cli.report.theta_sweep`,
  the sweep `fgar report` shows; unlabeled clips only, never the test split).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from fgar_cli.artifacts import read_h5
from fgar_cli.checkpoints import load_action, load_alignability_weights
from fgar_cli.config import AlignabilityLoss, ClassifierConfig, ClipConfig
from fgar_cli.data.batches import inference_loader
from fgar_cli.data.dataset import ClipMode
from fgar_cli.data.run_data import RunData, load_run_data
from fgar_cli.inference import predict_clips
from fgar_cli.method.gallery import Gallery, score_queries
from fgar_cli.method.nonparametric import class_logits
from fgar_cli.report import pseudo_file_sweeps
from fgar_cli.softdtw import pairwise_soft_dtw

CPU = torch.device("cpu")
RHO = 8
GAMMA = AlignabilityLoss().gamma  # fgar's default; pretrain/A0.pt records no alignability loss
THETAS = (0.5, 0.6, 0.7, 0.8, 0.9)


def clips(data: RunData, ids: list[str], clip: ClipConfig) -> torch.Tensor:
    dataset = data.clips(ids, clip, ClipMode.TEST)
    return torch.stack([dataset[i]["video"] for i in range(len(ids))])


def accuracies(pair_logits: torch.Tensor, class_logit: torch.Tensor, gallery: Gallery, truth: np.ndarray) -> str:
    nearest = gallery.labels[pair_logits.argmax(1).numpy()]
    return f"1-NN {(nearest == truth).mean():.3f}, class mean {(class_logit.argmax(1).numpy() == truth).mean():.3f}"


def main(run: Path) -> None:
    action = load_action(str(run / "fit" / "E.pt"))
    data = load_run_data(action.recipe.data)
    clip = action.recipe.clip
    labeled, test = data.split.labeled, data.split.test
    y_l, y_t = data.truth(labeled), data.truth(test)
    x_l, x_t = clips(data, labeled, clip), clips(data, test, clip)
    print(
        f"{run}: {data.num_classes} classes, gallery {len(labeled)} labeled clips, {len(test)} test clips, "
        f"chance {1 / data.num_classes:.3f}"
    )

    def grey16(x: torch.Tensor) -> torch.Tensor:
        g = F.adaptive_avg_pool2d(x.mean(2), 16).flatten(2)
        return g - g.mean(-1, keepdim=True)

    grey = Gallery(grey16(x_l), y_l, labeled, data.class_names)
    unit_queries, unit_gallery = F.normalize(grey16(x_t), dim=-1), F.normalize(grey.embeddings, dim=-1)
    negative_distance = -pairwise_soft_dtw(unit_queries, unit_gallery, GAMMA)
    grey_classes = class_logits(negative_distance, y_l, data.num_classes, RHO, 0)
    print(f"  centred 16x16 grey frames, soft-DTW: {accuracies(negative_distance, grey_classes, grey, y_t)}")
    for name in ("pretrain/A0.pt", "fit/A.pt"):
        if (run / name).exists():
            model = load_alignability_weights(str(run / name)).eval()
            with torch.no_grad():
                gallery = Gallery(model(x_l), y_l, labeled, data.class_names)
                queries = model(x_t)
            # tau fixed: only the argmax is reported, and a fit would score the gallery against itself
            scores = score_queries(model, queries, gallery, ClassifierConfig(rho=RHO, tau=1.0), GAMMA, CPU, 0)
            print(f"  f_A {name}, soft-DTW: {accuracies(scores.pair_logits, scores.class_logits, gallery, y_t)}")

    for part in ("labeled", "unlabeled", "test"):
        ids = getattr(data.split, part)
        loader = inference_loader(data.clips(ids, clip, ClipMode.TEST), 16)
        probs, _ = predict_clips(action.model, loader, CPU, part)
        print(f"  f_E fit/E.pt top-1 on {part}: {(probs[:, 0].argmax(1).numpy() == data.truth(ids)).mean():.3f}")

    for pseudo in sorted((run / "st_finepseudo").glob("round_*/pseudo.h5")):
        pl, attrs = read_h5(pseudo, "fgar.pseudo", 1)
        print(f"  {pseudo.relative_to(run)} (theta {attrs['theta']}, tau {attrs['tau']:.3g}):")
        for key in ("p", "p_A", "p_E"):
            top = pl[key].max(1)
            acc = (pl[key].argmax(1) == pl["truth"]).mean()
            q = np.quantile(top, [0.5, 0.9, 1.0])
            print(f"    max {key:3s}: median {q[0]:.3f}, 90% {q[1]:.3f}, max {q[2]:.3f}; argmax accuracy {acc:.3f}")
        # what each source would accept at each theta, and how much of it is right (fgar report's sweep)
        sweeps = pseudo_file_sweeps(pseudo, THETAS, keys=("p", "p_A", "p_E"))
        for theta in THETAS:
            cells = []
            for sweep in sweeps:
                point = next(q for q in sweep.points if q["theta"] == theta)
                cells.append(f"{sweep.key} {point['accepted_count']} ({point['accepted_accuracy']:.3f})")
            print(f"    theta {theta}: accepted (accuracy)  " + ", ".join(cells))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python benchmarks/diagnose_run.py RUN_DIR")
    main(Path(sys.argv[1]))
