"""The labeled gallery A and the scoring of clips against it (paper Sec. 3.2).

The gallery is the labeled set embedded by f_A (gallery.h5). `score_queries` is the whole
non-parametric classifier for a set of query embeddings: f_S logits against every gallery clip,
Eq. 7 per class, tau (fitted unless given) and Eq. 8. pseudolabel, evaluate, openworld and the
diagnosis script all score through it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from fgar_cli import distributed
from fgar_cli.artifacts import read_h5, write_h5
from fgar_cli.checkpoints import Encoders
from fgar_cli.config import ClassifierConfig, ClipConfig, Config
from fgar_cli.data.batches import inference_loader
from fgar_cli.data.dataset import ClipMode
from fgar_cli.data.run_data import RunData
from fgar_cli.errors import FgarError
from fgar_cli.inference import Outputs, embed_clips
from fgar_cli.method.nonparametric import class_logits, fit_temperature, nonparametric_probs
from fgar_cli.models import AlignabilityEncoder
from fgar_cli.softdtw import pairwise_soft_dtw

GALLERY_SCHEMA, GALLERY_VERSION = "fgar.gallery", 1


@dataclass
class Gallery:
    embeddings: Tensor  # (N, T, F)
    labels: np.ndarray  # (N,) model classes
    video_ids: list[str]
    class_names: list[str]


def embed_gallery(
    model_a: AlignabilityEncoder, data: RunData, clip: ClipConfig, device: torch.device, batch_size: int
) -> Gallery:
    """The labeled split embedded by f_A: centre clips; videos that cannot be read are left out."""
    ids = data.split.labeled
    loader = inference_loader(data.clips(ids, clip, ClipMode.TEST), batch_size)
    embeddings, valid = embed_clips(model_a, loader, device, "gallery f_A")
    keep = valid.numpy()
    return Gallery(
        embeddings=embeddings[:, 0][valid],
        labels=data.truth(ids)[keep],
        video_ids=[i for i, k in zip(ids, keep, strict=True) if k],
        class_names=data.class_names,
    )


def save_gallery(path: Path, gallery: Gallery, config: Config, inputs: list[str]) -> None:
    write_h5(
        path,
        GALLERY_SCHEMA,
        GALLERY_VERSION,
        {
            "embeddings": gallery.embeddings.float(),
            "labels": gallery.labels.astype(np.int64),
            "video_ids": gallery.video_ids,
            "class_names": gallery.class_names,
        },
        config=config.model_dump(mode="json"),
        inputs=inputs,
    )


def load_gallery(path: str | Path, class_names: list[str], feature_dim: int, num_frames: int) -> Gallery:
    """A gallery.h5, checked against the encoders that will score with it: the same classes, every
    class present, labels in range, and embeddings of f_A's clip length and feature size, all finite."""
    data, _ = read_h5(
        path,
        GALLERY_SCHEMA,
        GALLERY_VERSION,
        {"embeddings": (3, "f"), "labels": (1, "i"), "video_ids": (1, "S"), "class_names": (1, "S")},
    )
    names = [str(c) for c in data["class_names"]]
    embeddings, labels = data["embeddings"], data["labels"]
    if names != list(class_names):
        raise FgarError(
            f"{path}: the gallery's {len(names)} classes differ from the checkpoints' {len(class_names)} classes"
        )
    if len(labels) != len(embeddings) or len(data["video_ids"]) != len(embeddings):
        raise FgarError(f"{path}: {len(labels)} labels and {len(data['video_ids'])} ids for {len(embeddings)} clips")
    if embeddings.shape[1:] != (num_frames, feature_dim):
        raise FgarError(
            f"{path}: embeddings of {embeddings.shape[1]} frames x {embeddings.shape[2]} features, but f_A makes "
            f"{num_frames} x {feature_dim} (a gallery of another f_A or clip length?)"
        )
    if not np.isfinite(embeddings).all():
        raise FgarError(f"{path}: the embeddings hold NaN or infinite values")
    if len(labels) and (labels.min() < 0 or labels.max() >= len(names)):
        raise FgarError(f"{path}: labels must lie in 0..{len(names) - 1}, found {labels.min()}..{labels.max()}")
    missing = sorted(set(range(len(names))) - set(labels.tolist()))
    if missing:
        raise FgarError(
            f"{path}: the gallery has no member of class '{names[missing[0]]}' ({len(missing)} classes missing)"
        )
    return Gallery(torch.from_numpy(embeddings).float(), labels, list(data["video_ids"]), names)


@torch.no_grad()
def pair_logits(
    model_a: AlignabilityEncoder, queries: Tensor, gallery: Tensor, gamma: float, device: torch.device
) -> Tensor:
    """f_S(D(u, a) / T) for every query u and gallery clip a: (Q, G) logits; sigmoid gives S of Eq. 3.

    Logits rather than scores, because the classifier averages them (Eq. 7, docs/METHOD.md). Queries
    and gallery may carry several views, (Q, V, T, F): the logits are averaged over views.
    """
    q = queries if queries.dim() == 4 else queries.unsqueeze(1)
    g = gallery if gallery.dim() == 4 else gallery.unsqueeze(1)
    T = q.shape[2]
    total = torch.zeros(q.shape[0], g.shape[0])
    # under torchrun each rank scores its own block of queries, and the blocks are summed into one
    rows = distributed.block_of(q.shape[0], distributed.world())
    for v in range(q.shape[1]):
        for w in range(g.shape[1]):
            d = pairwise_soft_dtw(q[rows, v].to(device), g[:, w].to(device), gamma) / T
            total[rows] += model_a.score_head.logit(d).float().cpu()
    return distributed.sum_over_ranks(total) / (q.shape[1] * g.shape[1])


@dataclass
class AlignabilityScores:
    """f_A's verdict on a set of queries: class logits (Eq. 7) and the temperature of Eq. 8."""

    pair_logits: Tensor  # (Q, G): f_S logit of each query against each gallery clip
    class_logits: Tensor  # (Q, C)
    tau: float
    rho: int  # gallery members per class averaged in Eq. 7
    gamma: float  # soft-DTW smoothing of the distances

    @property
    def class_alignability(self) -> Tensor:
        """S_c, the class alignability of Eq. 7, in [0, 1]."""
        return torch.sigmoid(self.class_logits)

    @property
    def probs(self) -> Tensor:
        """p_A, the non-parametric classifier of Eq. 8."""
        return nonparametric_probs(self.class_logits, self.tau)


def tau_unfittable(data: RunData, classifier: ClassifierConfig) -> str | None:
    """Why Eq. 8's tau cannot be fitted on the labeled split (None when it can, or is given).

    The leave-one-out fit needs a class with two labeled clips; finding that out from the split costs
    nothing, while finding it out from `fit_temperature` costs embedding the whole gallery first."""
    if classifier.tau is not None:
        return None
    per_class = Counter(data.label_of[i] for i in data.split.labeled)
    if max(per_class.values(), default=0) >= 2:
        return None
    return (
        f"{data.paths.split}: cannot fit f_A's temperature tau: no class has two labeled clips "
        f"({len(data.split.labeled)} labeled clips); label more (a larger `fgar data split --fraction`) "
        "or pass --tau"
    )


def require_fittable_tau(data: RunData, classifier: ClassifierConfig) -> None:
    reason = tau_unfittable(data, classifier)
    if reason is not None:
        raise FgarError(reason)


def gallery_temperature(
    model_a: AlignabilityEncoder, gallery: Gallery, rho: int, gamma: float, device: torch.device, seed: int
) -> float:
    """tau of Eq. 8 fitted on the gallery's own alignability logits (leave-one-out)."""
    logits = pair_logits(model_a, gallery.embeddings, gallery.embeddings, gamma, device)
    return fit_temperature(logits, gallery.labels, len(gallery.class_names), rho, seed)


def score_queries(
    model_a: AlignabilityEncoder,
    queries: Tensor,
    gallery: Gallery,
    classifier: ClassifierConfig,
    gamma: float,
    device: torch.device,
    seed: int,
) -> AlignabilityScores:
    """The non-parametric classifier on query embeddings (Q, [V,] T, F); `seed` draws Eq. 7's members."""
    logits = pair_logits(model_a, queries.nan_to_num(), gallery.embeddings, gamma, device)
    class_logit = class_logits(logits, gallery.labels, len(gallery.class_names), classifier.rho, seed)
    tau = classifier.tau or gallery_temperature(model_a, gallery, classifier.rho, gamma, device, seed)
    return AlignabilityScores(logits, class_logit, tau, classifier.rho, gamma)


def head_probabilities(
    encoders: Encoders,
    outputs: Outputs,
    data: RunData | None,
    classifier: ClassifierConfig,
    batch_size: int,
    seed: int,
) -> tuple[dict[str, Tensor], float | None]:
    """Each head's class probabilities (N, C) for clips run through `run_encoders` (views averaged):
    f_E ("action"), and with f_A its non-parametric classifier against the labeled split of `data`
    ("alignability", Eq. 7-8) and the two averaged ("combined"). Also the fitted tau (None without f_A).
    `fgar evaluate` and `fgar predict` both score through this."""
    assert outputs.probs is not None
    probs = {"action": outputs.probs.mean(1)}
    if encoders.alignability is None or outputs.embeddings is None:
        return probs, None
    if data is None:
        raise ValueError("f_A's classifier needs the data of its labeled gallery")
    model_a, clip = encoders.alignability.model, encoders.action.recipe.clip
    gallery = embed_gallery(model_a, data, clip, encoders.device, batch_size)
    gamma = encoders.alignability.recipe.loss.gamma
    scores = score_queries(model_a, outputs.embeddings, gallery, classifier, gamma, encoders.device, seed)
    probs["alignability"] = scores.probs
    probs["combined"] = (probs["action"] + probs["alignability"]) / 2
    return probs, scores.tau
