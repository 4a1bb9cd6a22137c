"""TCLR's temporal contrastive losses (Dave et al., "TCLR: Temporal contrastive learning for video
representation", CVIU 2022), the self-supervised start of f_E in the FinePseudo paper (Table 1).

Every input holds unit vectors; similarities are dot products over a temperature tau. With V = 2
augmented views, K local clips per video (non-overlapping parts of the global clip's span) and B
videos in a batch:

* local-local, L_LL: each local clip k of view v must pick its other view among the 2K - 1 other
  local clips of the SAME video (the other K - 1 local clips of both views are its negatives), so
  the encoder must tell apart moments of one video instead of videos;
* global-local, L_GL: time step q of the global clip's feature map (its q-th part of K) must pick
  local clip q among the video's K local clips, and local clip q must pick time step q, for every
  pair of views; again only the same video's clips are negatives;
* instance, L_IC (optional): NT-Xent across videos on the two views of the global clip (SimCLR).

Each term is a mean over its anchors, so the weights compare terms of the same scale. TCLR's code
sums L_LL over the batch and counts L_GL four times per row, and adds a local instance term whose
positives are other local clips of the same video; we keep the losses and leave those scalings out
(docs/METHOD.md). The instance term's cross-video negatives are off by default: see TclrLoss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def local_local_loss(view_a: Tensor, view_b: Tensor, tau: float) -> Tensor:
    """L_LL for local clips (B, K, D) of two views: per video, NT-Xent over its 2K local clips."""
    B, K, _ = view_a.shape
    z = torch.cat([view_a, view_b], dim=1)  # (B, 2K, D): view a's clips, then view b's
    logits = z @ z.transpose(1, 2) / tau  # (B, 2K, 2K)
    self_mask = torch.eye(2 * K, dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(self_mask, float("-inf"))
    positive = (torch.arange(2 * K, device=z.device) + K) % (2 * K)  # clip k <-> clip k of the other view
    return F.cross_entropy(logits.reshape(B * 2 * K, 2 * K), positive.repeat(B))


def global_local_loss(global_steps: Tensor, local: Tensor, tau: float) -> Tensor:
    """L_GL for the global clip's K time steps (B, K, D) and the K local clips (B, K, D) of one
    pair of views: step q <-> local clip q, in both directions, negatives within the video."""
    B, K, _ = local.shape
    logits = global_steps @ local.transpose(1, 2) / tau  # (B, K steps, K clips)
    rows = torch.cat([logits, logits.transpose(1, 2)], dim=1).reshape(B * 2 * K, K)
    return F.cross_entropy(rows, torch.arange(K, device=local.device).repeat(2 * B))


def instance_loss(view_a: Tensor, view_b: Tensor, tau: float) -> Tensor:
    """NT-Xent across videos for clip embeddings (B, D) of two views: each clip's positive is its
    other view, its negatives the 2B - 2 embeddings of the other videos."""
    B = view_a.shape[0]
    z = torch.cat([view_a, view_b], dim=0)
    logits = (z @ z.T / tau).masked_fill(torch.eye(2 * B, dtype=torch.bool, device=z.device), float("-inf"))
    positive = (torch.arange(2 * B, device=z.device) + B) % (2 * B)
    return F.cross_entropy(logits, positive)
