"""FinePseudo's losses: alignment distances (Eq. 1), L_AT (Eq. 2), L_Score (Eq. 3-4), L_AV (Eq. 5), GITDL.

All soft-DTW goes through `fgar_cli.softdtw`. Cross-entropy for f_E (Eq. 6) is plain
`torch.nn.functional.cross_entropy`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from fgar_cli.models import ScoreHead
from fgar_cli.softdtw import batch_cosine_cost, soft_dtw


def alignment_distances(embeddings: Tensor, gamma: float) -> Tensor:
    """Soft-DTW distance D (B, B) on cosine cost between every ordered pair of clips (B, T, F).

    Only pairs i <= j are aligned, then mirrored: for cosine cost C(v, u) = C(u, v)^T, and the
    soft-DTW recursion is unchanged by transposing, so D is symmetric. The diagonal holds D(u, u),
    which is not 0 for soft-DTW (the soft-min counts several paths). The costs come from one Gram
    matrix of the batch's frames (`softdtw.batch_cosine_cost`), normalised as the gallery's are;
    benchmarks/softdtw.py times this very function.
    """
    B = embeddings.shape[0]
    rows, cols = torch.triu_indices(B, B, device=embeddings.device)
    values = soft_dtw(batch_cosine_cost(embeddings, rows, cols), gamma)  # B(B+1)/2 pairs
    distances = embeddings.new_zeros(B, B)
    distances = distances.index_put((rows, cols), values).index_put((cols, rows), values)
    return distances


def _pair_masks(labels: Tensor) -> tuple[Tensor, Tensor]:
    """(positive, negative) masks (B, B): same label and not itself; other label."""
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    return same & ~eye, ~same


def hardest_negatives(distances: Tensor, labels: Tensor) -> Tensor:
    """Index of each anchor's hardest negative (smallest D to a clip of another class), or -1 if none."""
    _, negative = _pair_masks(labels)
    masked = distances.detach().masked_fill(~negative, float("inf"))
    index = masked.argmin(dim=1)
    return torch.where(negative.any(dim=1), index, torch.full_like(index, -1))


def alignability_triplet_loss(distances: Tensor, labels: Tensor, margin: float) -> Tensor:
    """L_AT (paper Eq. 2) with in-batch hard-negative mining.

    For each anchor i that has a positive and a negative in the batch, and each positive p:
    max(0, D(i, p) - D(i, n*) + margin) with n* the hardest negative of i. Mean over these terms; 0 (still
    attached to the graph) when the batch has none.
    """
    positive, negative = _pair_masks(labels)
    hardest = distances.masked_fill(~negative, float("inf")).amin(dim=1)  # (B,), grads reach D(i, n*)
    valid = positive & negative.any(dim=1, keepdim=True)
    if not valid.any():
        return distances.sum() * 0.0
    hinge = F.relu(distances - hardest[:, None] + margin)
    return hinge[valid].mean()


def score_loss(distances: Tensor, labels: Tensor, score_head: ScoreHead, balanced: bool = True) -> Tensor:
    """L_Score (paper Eq. 3-4): BCE of S = sigmoid(f_S(D)) against 1 (same class) / 0, over pairs i != j.

    balanced=True (default) averages the positive and the negative pairs separately and takes the mean
    of the two. A P x K batch has K - 1 positives per anchor against (P - 1) K negatives (1 vs 14 for
    P = 8, K = 2); a plain mean would mostly teach f_S to say "not alignable", pushing every score
    towards 0 and flattening the class scores that p_A (Eq. 8) is built from. balanced=False is the
    plain mean of Eq. 4 over all pairs.
    """
    positive, negative = _pair_masks(labels)
    off_diagonal = positive | negative
    logits = score_head.logit(distances)
    bce = F.binary_cross_entropy_with_logits(logits, positive.to(logits.dtype), reduction="none")
    if not balanced:
        return bce[off_diagonal].mean()
    parts = [bce[mask].mean() for mask in (positive, negative) if mask.any()]
    if not parts:
        return distances.sum() * 0.0
    return torch.stack(parts).mean()


def alignability_loss(
    embeddings: Tensor,
    labels: Tensor,
    score_head: ScoreHead,
    gamma: float,
    margin: float,
    omega: float,
    triplet_weight: float = 1.0,
) -> dict[str, Tensor]:
    """L_AV = L_AT + omega * L_Score (paper Eq. 5) for frame embeddings (B, T, F) of labelled clips;
    `triplet_weight` 0 drops L_AT (the ablation of Table 5 row e), omega 0 drops L_Score (row d).

    D is divided by T (docs/METHOD.md): an alignment cost per frame, so the margin and f_S mean the
    same for any clip length. Scoring uses the same scale (`fgar_cli.method.gallery`).

    A score head that was never calibrated (a fresh f_S, e.g. after GITDL pretraining) is first
    fitted to this batch's distances (`ScoreHead.calibrate_`): the scale of D depends on T, gamma and
    training, and a line far off would take thousands of steps to move.
    Returns "loss", "triplet" and "score".
    """
    distances = alignment_distances(embeddings, gamma) / embeddings.shape[1]
    if not bool(score_head.calibrated):
        score_head.calibrate_(distances.detach(), labels)
    triplet = alignability_triplet_loss(distances, labels, margin)
    score = score_loss(distances, labels, score_head)
    return {"loss": triplet_weight * triplet + omega * score, "triplet": triplet, "score": score}


def gitdl_loss(
    local: Tensor,
    global_: Tensor,
    local_t: Tensor,
    global_t: Tensor,
    tau: float,
    sigma: float,
    cross_video_negatives: bool = True,
) -> Tensor:
    """GITDL pretraining loss: our interpretation (the paper defines it in a supplement we do not have).

    Global-local temporal contrast (TCLR) with a Gaussian target instead of a one-hot diagonal. For
    local frame i of a video (time t_i) and global frame j (time t'_j):
        s_ij = <l_i, g_j> / tau,    q_ij proportional to exp(-(t_i - t'_j)^2 / (2 sigma^2)),
    and the loss is the cross-entropy H(q_i, softmax(s_i)), averaged over local frames, plus the same
    from global to local frames; the result is the mean of the two directions. A frame whose time lies
    outside the other clip's span [min t, max t] has no counterpart there and is left out of that
    direction (with the usual sampler, global frames outside the local window).

    With `cross_video_negatives` the softmax runs over the frames of all clips in the batch, with
    target 0 on other videos' frames; otherwise over the frames of the same video only.
    Shapes: local (B, T, F), global_ (B, T', F); local_t (B, T), global_t (B, T'), in frames of the source
    video (T' = T with the usual sampler, but nothing here needs it).
    """
    B, T, _ = local.shape
    Tg = global_.shape[1]
    local, global_ = F.normalize(local, dim=-1), F.normalize(global_, dim=-1)
    local_t, global_t = local_t.to(local.dtype), global_t.to(local.dtype)
    # log of the unnormalised target, (B, T_local, T_global); normalising with a softmax keeps a row
    # well defined when every exp(-d^2 / 2 sigma^2) underflows.
    log_target = -((local_t[:, :, None] - global_t[:, None, :]) ** 2) / (2 * sigma**2)
    local_inside = (local_t >= global_t.amin(1, keepdim=True)) & (local_t <= global_t.amax(1, keepdim=True))
    global_inside = (global_t >= local_t.amin(1, keepdim=True)) & (global_t <= local_t.amax(1, keepdim=True))

    if cross_video_negatives:
        logits = local.reshape(B * T, -1) @ global_.reshape(B * Tg, -1).T / tau  # (B T, B T')
        same_video = torch.block_diag(*[torch.ones(T, Tg, dtype=torch.bool, device=local.device)] * B)
        full_log_target = local.new_full((B * T, B * Tg), float("-inf"))
        full_log_target[same_video] = log_target.reshape(-1)
        to_global = _soft_cross_entropy(logits, full_log_target, local_inside.reshape(-1))
        to_local = _soft_cross_entropy(logits.T, full_log_target.T, global_inside.reshape(-1))
    else:
        logits = torch.einsum("btf,bsf->bts", local, global_) / tau  # (B, T, T')
        to_global = _soft_cross_entropy(
            logits.reshape(B * T, Tg), log_target.reshape(B * T, Tg), local_inside.reshape(-1)
        )
        to_local = _soft_cross_entropy(
            logits.transpose(1, 2).reshape(B * Tg, T),
            log_target.transpose(1, 2).reshape(B * Tg, T),
            global_inside.reshape(-1),
        )
    return (to_global + to_local) / 2


def _soft_cross_entropy(logits: Tensor, log_target: Tensor, rows: Tensor) -> Tensor:
    """Mean over the selected rows of H(softmax(log_target), softmax(logits)); 0 when no row is selected."""
    if not rows.any():
        return logits.sum() * 0.0
    target = torch.softmax(log_target[rows], dim=1)
    return -(target * torch.log_softmax(logits[rows], dim=1)).sum(dim=1).mean()
