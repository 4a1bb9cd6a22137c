"""Stage 3, `fgar pseudolabel`: collaborative pseudo-labels from f_E and f_A (paper Sec. 3.2).

1. Embed the labeled set D_l with f_A into a gallery A (gallery.h5).
2. For each unlabeled clip u and class c, take rho gallery members of class c (seeded) and average
   their alignability logits f_S(D(u, a)) into the class logit l_c (Eq. 7); the class alignability
   is S_c = sigmoid(l_c). (The paper averages the scores sigmoid(f_S(D)); their sigmoids saturate,
   so the average hid which class aligned best: docs/METHOD.md and docs/RESULTS.md.)
3. The non-parametric classifier is p_A = softmax(l_c / tau) (Eq. 8), with tau fitted on the gallery
   by leave-one-out unless given; p_E is f_E's softmax.
4. `collab` (FinePseudo): p = (p_A + p_E) / 2; accept argmax p when max p > theta (Algorithm 1).
   `action`: p_E alone (confidence-only pseudo-labeling). `alignability`: p_A alone.
   `verify`: f_E's label when max p_E > theta and its class alignability S_c exceeds 0.6 (Table 6).
5. Open world: a clip whose best class alignability max_c S_c is below `novel_threshold` is set
   aside as novel and never pseudo-labeled (Sec. 4.4).
The result is pseudo.h5, with the count and accuracy of the accepted labels where ground truth is
known (the columns of the paper's Table 6).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fgar_cli.artifacts import load_checkpoint, read_h5, write_h5
from fgar_cli.config import PseudoLabelConfig
from fgar_cli.errors import FgarError
from fgar_cli.models import build_model_from_checkpoint
from fgar_cli.stages.common import (
    StageData,
    clip_dataset,
    data_paths_from_checkpoint,
    load_stage_data,
    make_loader,
    resolve_device,
    seed_everything,
)
from fgar_cli.training import alignability_logits, embed_clips, predict_clips

GALLERY_SCHEMA, GALLERY_VERSION = "fgar.gallery", 1
PSEUDO_SCHEMA, PSEUDO_VERSION = "fgar.pseudo", 1


# --------------------------------------------------------------------------- the method's formulas


def class_logits(
    logits: torch.Tensor, gallery_labels: np.ndarray, num_classes: int, rho: int, seed: int
) -> torch.Tensor:
    """Eq. 7 on logits: the mean f_S logit against rho seeded gallery members of each class, (Q, C).

    The class alignability S_c is its sigmoid (`torch.sigmoid(class_logits(...))`).
    """
    rng = np.random.default_rng(seed)
    out = torch.empty(logits.shape[0], num_classes)
    for c in range(num_classes):
        members = np.flatnonzero(gallery_labels == c)
        if len(members) == 0:
            raise FgarError(f"the gallery has no member of class {c}: every class needs at least one labeled clip")
        if len(members) > rho:
            members = rng.choice(members, size=rho, replace=False)
        out[:, c] = logits[:, torch.as_tensor(members)].mean(1)
    return out


def nonparametric_probs(class_logit: torch.Tensor, tau: float) -> torch.Tensor:
    """p_A of Eq. 8, over the class logits of Eq. 7."""
    return torch.softmax(class_logit / tau, dim=1)


# Candidate temperatures for `fit_temperature`: 81 log-spaced values, 12% apart. The class logits scale with
# f_S's learned slope, so tau must be free to range over several decades.
TAU_GRID = np.logspace(-2, 2, 81)


def leave_one_out_class_logits(
    logits: torch.Tensor, labels: np.ndarray, num_classes: int, rho: int, seed: int
) -> torch.Tensor:
    """Eq. 7 for every gallery clip against the rest of the gallery (itself left out), (N, C).

    NaN where the clip is its class's only member: that class has no other member to average.
    """
    rng = np.random.default_rng(seed)
    n = len(labels)
    out = torch.full((n, num_classes), float("nan"))
    for c in range(num_classes):
        members = np.flatnonzero(labels == c)
        for i in range(n):
            others = members[members != i]
            if len(others) == 0:
                continue
            if len(others) > rho:
                others = rng.choice(others, size=rho, replace=False)
            out[i, c] = logits[i, torch.as_tensor(others)].mean()
    return out


def fit_temperature(logits: torch.Tensor, labels: np.ndarray, num_classes: int, rho: int, seed: int) -> float:
    """tau of Eq. 8 fitted on the labeled gallery alone: the leave-one-out negative log-likelihood minimum.

    f_S is trained to separate pairs, not to make a C-way classifier calibrated; a fixed tau gives
    probabilities whose scale depends on f_S's slope. Leave-one-out uses only labeled clips, so no
    unlabeled or test label is ever seen.
    """
    class_logit = leave_one_out_class_logits(logits, labels, num_classes, rho, seed)
    usable = ~torch.isnan(class_logit).any(1).numpy()
    if usable.sum() < 2:
        raise FgarError("cannot fit tau: the gallery needs two labeled clips in some class; pass --tau")
    x, y = class_logit[usable].double(), torch.as_tensor(labels[usable])
    nll = [float(torch.nn.functional.cross_entropy(x / tau, y)) for tau in TAU_GRID]
    return float(TAU_GRID[int(np.argmin(nll))])


def select_pseudo_labels(
    p_A: torch.Tensor | None,
    p_E: torch.Tensor,
    class_scores: torch.Tensor | None,
    source: str,
    theta: float,
    verify_threshold: float = 0.6,
    novel_threshold: float | None = None,
) -> dict[str, torch.Tensor]:
    """Labels, confidences and acceptance for the four Table 6 variants (and open-world rejection)."""
    if source != "action" and (p_A is None or class_scores is None):
        raise FgarError(f"--source {source} needs the alignability encoder (--ckpt-a)")
    if source == "collab":
        p = (p_A + p_E) / 2
    elif source == "alignability":
        p = p_A
    else:  # action, verify: f_E decides the label
        p = p_E
    confidence, label = p.max(1)
    accepted = confidence > theta
    if source == "verify":
        accepted &= class_scores.gather(1, label[:, None])[:, 0] > verify_threshold
    novel = torch.zeros_like(accepted)
    if novel_threshold is not None and class_scores is not None:
        novel = class_scores.max(1).values < novel_threshold
        accepted &= ~novel
    return {"p": p, "label": label, "confidence": confidence, "accepted": accepted, "novel": novel}


def pseudo_label_stats(label: np.ndarray, accepted: np.ndarray, truth: np.ndarray | None) -> dict[str, Any]:
    """Count and accuracy of the accepted pseudo-labels; truth -1 marks clips of unknown classes."""
    stats: dict[str, Any] = {"pl_count": int(accepted.sum()), "unlabeled": int(len(label))}
    if truth is not None and accepted.any():
        stats["pl_accuracy"] = float((label[accepted] == truth[accepted]).mean())
    else:
        stats["pl_accuracy"] = float("nan")
    return stats


# --------------------------------------------------------------------------- gallery


@dataclass
class Gallery:
    embeddings: torch.Tensor  # (N, T, F)
    labels: np.ndarray  # (N,)
    video_ids: list[str]
    class_names: list[str]


def build_gallery(
    model_a: nn.Module, data: StageData, clip: dict[str, Any], device: torch.device, batch_size: int
) -> Gallery:
    ids = data.split.labeled
    dataset = clip_dataset(data, ids, clip, mode="test")
    emb, valid = embed_clips(model_a, make_loader(dataset, batch_size, False, 0), device, "gallery f_A")
    keep = valid.numpy()
    return Gallery(
        embeddings=emb[:, 0][valid],
        labels=np.array([data.label_of[i] for i in ids])[keep],
        video_ids=[i for i, k in zip(ids, keep, strict=True) if k],
        class_names=data.class_names,
    )


def save_gallery(path: Path, gallery: Gallery, config: dict[str, Any], inputs: list[str]) -> None:
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
        config=config,
        inputs=inputs,
    )


def gallery_temperature(
    model_a: nn.Module, gallery: Gallery, num_classes: int, rho: int, gamma: float, device: torch.device, seed: int
) -> float:
    """`fit_temperature` on the gallery's own alignability logits (leave-one-out)."""
    logits = alignability_logits(model_a, gallery.embeddings, gallery.embeddings, gamma, device)
    return fit_temperature(logits, gallery.labels, num_classes, rho, seed)


def load_gallery(path: str | Path, class_names: list[str]) -> Gallery:
    data, _ = read_h5(
        path,
        GALLERY_SCHEMA,
        GALLERY_VERSION,
        {"embeddings": (3, "f"), "labels": (1, "i"), "video_ids": (1, "S"), "class_names": (1, "S")},
    )
    names = [str(c) for c in data["class_names"]]
    if names != list(class_names):
        raise FgarError(
            f"{path}: the gallery's {len(names)} classes differ from the checkpoints' {len(class_names)} classes"
        )
    if len(data["labels"]) != len(data["embeddings"]):
        raise FgarError(f"{path}: {len(data['labels'])} labels for {len(data['embeddings'])} embeddings")
    missing = sorted(set(range(len(names))) - set(data["labels"].tolist()))
    if missing:
        raise FgarError(
            f"{path}: the gallery has no member of class '{names[missing[0]]}' ({len(missing)} classes missing)"
        )
    return Gallery(torch.from_numpy(data["embeddings"]).float(), data["labels"], list(data["video_ids"]), names)


# --------------------------------------------------------------------------- checkpoints


def load_encoders(ckpt_a: str | None, ckpt_e: str | None, need_a: bool) -> tuple[dict | None, dict]:
    """Load and cross-check the f_A and f_E checkpoints (kinds and class sets)."""
    if not ckpt_e:
        raise FgarError("no action encoder given: pass --ckpt-e (E.pt from fit-labeled or selftrain)")
    e = load_checkpoint(ckpt_e, kind="action")
    if not ckpt_a:
        if need_a:
            raise FgarError("no alignability encoder given: pass --ckpt-a (A.pt from fit-labeled or selftrain)")
        return None, e
    a = load_checkpoint(ckpt_a, kind="alignability")
    if not a.get("class_names"):
        raise FgarError(
            f"{ckpt_a}: this f_A checkpoint has no class set (a pretrain checkpoint?); "
            "pass the A.pt written by fit-labeled"
        )
    if list(a["class_names"]) != list(e["class_names"]):
        raise FgarError(
            f"{ckpt_a}: its {len(a['class_names'])} classes differ from the {len(e['class_names'])} classes of {ckpt_e}"
        )
    return a, e


def check_classes(data: StageData, ckpt_e: dict, path: str) -> None:
    if list(ckpt_e["class_names"]) != data.class_names:
        raise FgarError(
            f"{path}: the checkpoint's {len(ckpt_e['class_names'])} classes differ from the "
            f"{data.num_classes} classes of {data.index_path} with this split"
        )


# --------------------------------------------------------------------------- one pseudo-labeling pass


def pseudo_label(
    model_a: nn.Module | None,
    model_e: nn.Module,
    data: StageData,
    clip: dict[str, Any],
    opts: dict[str, Any],
    gamma: float,
    device: torch.device,
    out_dir: Path,
    seed: int,
    round_: int = 0,
    gallery: Gallery | None = None,
    novel_threshold: float | None = None,
    config: dict[str, Any] | None = None,
    inputs: list[str] | None = None,
    ids: list[str] | None = None,
) -> dict[str, Any]:
    """Pseudo-label `ids` (default: the unlabeled split); write gallery.h5 and pseudo.h5 into `out_dir`."""
    ids = data.split.unlabeled if ids is None else ids
    if not ids:
        raise FgarError(f"{data.split_path}: the unlabeled split is empty: there is nothing to pseudo-label")
    out_dir.mkdir(parents=True, exist_ok=True)
    dataset = clip_dataset(data, ids, clip, mode="test")
    loader = make_loader(dataset, opts["batch_size"], False, 0)
    p_E, valid = predict_clips(model_e, loader, device, "unlabeled f_E")
    p_E = p_E[:, 0]
    p_A = class_logit = class_scores = tau = None
    if model_a is not None:
        if gallery is None:
            gallery = build_gallery(model_a, data, clip, device, opts["batch_size"])
            save_gallery(out_dir / "gallery.h5", gallery, config or {}, inputs or [])
        emb, _ = embed_clips(model_a, loader, device, "unlabeled f_A")
        logits = alignability_logits(model_a, emb[:, 0].nan_to_num(), gallery.embeddings, gamma, device)
        class_logit = class_logits(logits, gallery.labels, data.num_classes, opts["rho"], seed + round_)
        class_scores = torch.sigmoid(class_logit)
        tau = opts["tau"] or gallery_temperature(model_a, gallery, data.num_classes, opts["rho"], gamma, device, seed)
        p_A = nonparametric_probs(class_logit, tau)
    chosen = select_pseudo_labels(
        p_A,
        p_E.nan_to_num(1.0 / data.num_classes),
        class_scores,
        opts["source"],
        opts["theta"],
        opts["verify_threshold"],
        novel_threshold,
    )
    chosen["accepted"] &= valid  # a clip that could not be read is never pseudo-labeled
    truth = np.array([data.label_of[i] for i in ids])
    stats = pseudo_label_stats(chosen["label"].numpy(), chosen["accepted"].numpy(), truth)
    nan = torch.full_like(p_E, float("nan"))
    max_alignability = class_scores.max(1).values if class_scores is not None else torch.full((len(ids),), float("nan"))
    attrs = {
        "theta": opts["theta"],
        "tau": float("nan") if tau is None else tau,
        "rho": opts["rho"],
        "source": opts["source"],
        "round": round_,
        "gamma": gamma,
        "novel_threshold": float("nan") if novel_threshold is None else novel_threshold,
        **stats,
    }
    write_h5(
        out_dir / "pseudo.h5",
        PSEUDO_SCHEMA,
        PSEUDO_VERSION,
        {
            "video_ids": ids,
            "p_A": p_A if p_A is not None else nan,
            "p_E": p_E,
            "p": chosen["p"],
            "label": chosen["label"],
            "confidence": chosen["confidence"],
            "accepted": chosen["accepted"],
            "novel": chosen["novel"],
            "max_alignability": max_alignability,
            "truth": truth,
            "class_alignability": class_scores if class_scores is not None else nan,
            "class_logits": class_logit if class_logit is not None else nan,
            "class_names": data.class_names,
        },
        attrs=attrs,
        config=config,
        inputs=inputs,
    )
    stats.update({"novel": int(chosen["novel"].sum()), "pseudo": str(out_dir / "pseudo.h5"), "tau": tau})
    return stats


def read_pseudo_labels(path: str | Path) -> dict[str, Any]:
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
        **{k: data[k] for k in ("max_alignability", "truth", "novel") if k in data},
    }


def run_pseudolabel(cfg: PseudoLabelConfig) -> dict[str, Any]:
    """`fgar pseudolabel`: data and split default to those stored in the f_E checkpoint."""
    seed_everything(cfg.seed)
    ckpt_a, ckpt_e = load_encoders(cfg.ckpt_a, cfg.ckpt_e, need_a=cfg.source != "action")
    index, split = data_paths_from_checkpoint(ckpt_e, cfg.index, cfg.split)
    data = load_stage_data(index, split)
    check_classes(data, ckpt_e, cfg.ckpt_e)
    device = resolve_device(cfg.device)
    clip = ckpt_e["config"]
    model_e = build_model_from_checkpoint(ckpt_e).to(device)
    model_a = build_model_from_checkpoint(ckpt_a).to(device) if ckpt_a else None
    gamma = float(ckpt_a["config"].get("gamma", 0.1)) if ckpt_a else 0.1
    gallery = load_gallery(cfg.gallery, data.class_names) if cfg.gallery else None
    out_dir = Path(cfg.out_dir) if cfg.out_dir else Path(cfg.ckpt_e).parent
    config = {**cfg.model_dump(), "index": data.index_path, "split": data.split_path}
    inputs = [p for p in (cfg.ckpt_a, cfg.ckpt_e, cfg.gallery) if p]
    stats = pseudo_label(
        model_a,
        model_e,
        data,
        clip,
        cfg.model_dump(),
        gamma,
        device,
        out_dir,
        cfg.seed,
        gallery=gallery,
        config=config,
        inputs=inputs,
    )
    stats["gallery"] = str(cfg.gallery or out_dir / "gallery.h5") if model_a is not None else None
    return stats
