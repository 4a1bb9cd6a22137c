"""Fig. 1(c): do two test clips show the same class? Average precision of each distance over all
pairs of a set of test clips (positive: same class), on the frame embeddings of the pretrained f_A
(GITDL's A0.pt) and of the fitted one (fit-labeled's A.pt)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from fgar_cli.artifacts import atomic_write_json
from fgar_cli.checkpoints import load_action, load_alignability, load_alignability_weights
from fgar_cli.config import DataPaths, RunConfig
from fgar_cli.data.batches import inference_loader
from fgar_cli.data.dataset import ClipMode
from fgar_cli.data.run_data import load_run_data
from fgar_cli.inference import embed_clips
from fgar_cli.method.gallery import pair_logits
from fgar_cli.models import AlignabilityEncoder
from fgar_cli.reproduce.stats import average_precision
from fgar_cli.softdtw import pairwise_soft_dtw, unit_frames

DTW_GAMMA = 0.01  # soft-DTW this smooth is DTW to within gamma * log(paths) per frame


def first_of_each_class(ids: list[str], labels: np.ndarray, count: int) -> list[int]:
    """Positions of about `count` clips, the first count // C of each of the C classes in `ids` order."""
    classes = sorted(set(labels.tolist()))
    per_class = max(2, count // max(1, len(classes)))
    chosen: list[int] = []
    for c in classes:
        chosen += [i for i in range(len(ids)) if labels[i] == c][:per_class]
    return sorted(chosen)


def per_timestamp_cosine(x: Tensor) -> Tensor:
    """(N, N) mean over time of the cosine distance between frame t of clip i and frame t of clip j."""
    unit = unit_frames(x)  # (N, T, F)
    similarity = torch.einsum("itf,jtf->ij", unit, unit) / x.shape[1]
    return 1 - similarity


def pooled_cosine(x: Tensor) -> Tensor:
    pooled = torch.nn.functional.normalize(x.mean(1), dim=-1)
    return 1 - pooled @ pooled.T


def pair_verification(a0_path: Path, a_path: Path, e_path: Path, clips: int, out: Path) -> dict[str, float]:
    """AP of each measure on the pairs of about `clips` test clips; written to `out` (JSON)."""
    action = load_action(str(e_path))  # the run's data and clip settings
    data = load_run_data(action.recipe.data if action.recipe.data else DataPaths(), RunConfig())
    truth = data.truth(data.split.test)
    chosen = first_of_each_class(data.split.test, truth, clips)
    ids = [data.split.test[i] for i in chosen]
    labels = truth[chosen]
    device = torch.device("cpu")
    loader = inference_loader(data.clips(ids, action.recipe.clip, ClipMode.TEST), RunConfig().inference_batch_size)
    fitted = load_alignability(str(a_path))
    pretrained = load_alignability_weights(str(a0_path))
    same = labels[:, None] == labels[None, :]
    upper = np.triu_indices(len(ids), k=1)
    positive = same[upper]

    def ap(distance: Tensor) -> float:  # a smaller distance should mean the same class
        return average_precision(-distance.numpy()[upper], positive)

    results: dict[str, float] = {"chance": float(positive.mean()), "pairs": float(len(positive))}
    for name, model in (("pretrained", pretrained), ("fitted", fitted.model)):
        embeddings = _embed(model, loader, device)
        results[f"pooled_{name}"] = ap(pooled_cosine(embeddings))
        results[f"cosine_{name}"] = ap(per_timestamp_cosine(embeddings))
        results[f"dtw_{name}"] = ap(pairwise_soft_dtw(embeddings, embeddings, DTW_GAMMA) / embeddings.shape[1])
    logits = pair_logits(fitted.model, embeddings, embeddings, fitted.recipe.loss.gamma, device)
    results["alignability_score"] = average_precision(logits.numpy()[upper], positive)
    atomic_write_json(out, results)
    return results


def _embed(model: AlignabilityEncoder, loader, device: torch.device) -> Tensor:
    embeddings, _ = embed_clips(model.to(device), loader, device, "test clips")
    return embeddings[:, 0].float().nan_to_num()
