"""ACL+MTL's components: adaptive contrastive learning and multi-scale temporal learning.

The paper: Wang, Xia, Zhou, Wang, "Learning Discriminative Spatio-temporal Representations for
Semi-supervised Action Recognition", ACM MM 2024 (`../shared/papers/acl-mtl.txt`). No code by the
authors could be found, so every choice below is ours where the paper is silent; they are listed in
docs/PEERS_ACL_MTL.md. The teacher-student base (Sec. 3.2, Eq. 1-3: an EMA teacher, weak and
strong views, confidence-thresholded pseudo-labels) lives elsewhere; this module holds pure tensor
functions and small state objects only.

Adaptive contrastive learning (ACL, Sec. 3.3, Algorithm 1):
* `class_prototypes`, `momentum_update_prototypes`, `PrototypeMemory`: class prototypes X from the
  labeled clips' projected features f^l (Eq. 4), updated by an EMA with beta = 0.9 (Eq. 5).
* `FeatureBank`: the memory bank M of the teacher's projected weak-view features f^p of unlabeled
  clips, with their pseudo-labels (Sec. 3.3, "momentum memory bank [19]"): a FIFO queue as in MoCo.
* `prototype_distances`: Eq. 8, written as a distance 1 - cos (the paper calls the cosine
  similarity itself a "cosine distance"); `gmm_reliability`: Eq. 9, a two-component 1-D Gaussian
  mixture fitted by EM, gamma_i = posterior of the low-distance component; gamma > epsilon (Eq. 10).
* `prototype_reliability`: Eq. 7-10 for a batch: per anchor, its initial positive set N^+_hat
  (same-pseudo-label bank entries and its own f^p), one GMM fit per set, the final positives N^+.
* `adaptive_contrastive_loss`: Eq. 11, with the fallback of Algorithm 1 line 12 (an unreliable
  anchor has N^+ = {f^p} and the whole bank as negatives).
* `reliability_weighted_unlabeled_loss`: Sec. 3.5, gamma_i replacing alpha in L_u (Eq. 2-3).

Multi-scale temporal learning (MTL, Sec. 3.4):
* `long_term_indices`: one short-term clip and N long-term clips of T frames at larger sampling
  intervals (Sec. 3.4; Sec. 4.2: intervals 8, then 16 and 32, T = 8).
* `cross_scale_calibration`: Eq. 13-14, A_n = cos(f^q, f^{k_n}) per position of the long clip,
  f^{k_n*} = A_n f^{k_n}, with a validity mask over positions.
* `temporal_alignment_loss`, `multi_scale_temporal_loss`, `TeacherCenter`: Eq. 16-18, DINO-style
  cross-entropy between the teacher's sharpened distribution P^{k_n} (tau_t = 0.04) of the calibrated
  long clip and the student's P^{q_n} (tau_s = 0.1) of the strong short clip.
* `multi_clip_pseudo_labels`: Eq. 19, the pseudo-label from the teacher's predictions on all clips.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from fgar_cli.data.sampling import long_term_indices  # MTL's clips (Sec. 3.4): a sampler, kept with the others

__all__ = ["long_term_indices"]  # re-exported: the clips are part of ACL+MTL's recipe

# --------------------------------------------------------------------------- prototypes (Eq. 4-5)


def class_prototypes(features: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """The batch prototype of every class (C, D): the mean of the class's L2-normalised features.

    Features are normalised before averaging so that a clip with a large feature norm does not
    outweigh the others (Eq. 8 compares directions only). A class with no sample in `features` gets a
    zero row; `momentum_update_prototypes` leaves such a class unchanged.
    """
    if features.ndim != 2 or labels.shape != features.shape[:1]:
        raise ValueError(
            f"features (N, D) and labels (N,) expected, got {tuple(features.shape)}, {tuple(labels.shape)}"
        )
    unit = F.normalize(features, dim=1)
    sums = unit.new_zeros(num_classes, features.shape[1]).index_add_(0, labels, unit)
    counts = torch.bincount(labels, minlength=num_classes).to(unit.dtype)
    return sums / counts.clamp(min=1)[:, None]


def momentum_update_prototypes(
    prototypes: Tensor, initialised: Tensor, batch_prototypes: Tensor, present: Tensor, momentum: float = 0.9
) -> tuple[Tensor, Tensor]:
    """Eq. 5, X_t = (1 - beta) f^l + beta X_{t-1}, for the classes `present` (C,) in the batch.

    With several labeled clips of a class in one batch, f^l is their batch prototype (one update per
    class per iteration; the paper's batch holds one labeled clip). A class seen for the first time
    takes its batch prototype as it is: an EMA from a zero start would weight the first clips less
    than the later ones. Absent classes keep their prototype. Returns (prototypes, initialised).
    """
    blended = (1 - momentum) * batch_prototypes + momentum * prototypes
    updated = torch.where(initialised[:, None], blended, batch_prototypes)
    return torch.where(present[:, None], updated, prototypes), initialised | present


class PrototypeMemory:
    """The class prototypes X (C, D) of Eq. 5 and which classes have been seen, as plain tensors."""

    def __init__(self, num_classes: int, dim: int, momentum: float = 0.9, device: torch.device | str | None = None):
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        self.momentum = momentum
        self.prototypes = torch.zeros(num_classes, dim, device=device)
        self.initialised = torch.zeros(num_classes, dtype=torch.bool, device=device)

    @torch.no_grad()
    def update(self, features: Tensor, labels: Tensor) -> None:
        """One Eq. 5 step from a labeled batch's projected features f^l (N, D) (detached: the
        prototypes are a running statistic, not part of the graph)."""
        features = features.detach().to(self.prototypes)
        labels = labels.to(self.prototypes.device)
        num_classes = self.prototypes.shape[0]
        batch = class_prototypes(features, labels, num_classes)
        present = torch.bincount(labels, minlength=num_classes) > 0
        self.prototypes, self.initialised = momentum_update_prototypes(
            self.prototypes, self.initialised, batch, present, self.momentum
        )

    @torch.no_grad()
    def initialise(self, features: Tensor, labels: Tensor) -> None:
        """Set the prototypes of the classes in (features, labels) to their means (e.g. one pass over
        the whole labeled set before training, so that no class starts without a prototype)."""
        features = features.detach().to(self.prototypes)
        labels = labels.to(self.prototypes.device)
        num_classes = self.prototypes.shape[0]
        present = torch.bincount(labels, minlength=num_classes) > 0
        batch = class_prototypes(features, labels, num_classes)
        self.prototypes = torch.where(present[:, None], batch, self.prototypes)
        self.initialised = self.initialised | present

    def state_dict(self) -> dict[str, Any]:
        return {
            "prototypes": self.prototypes.clone(),
            "initialised": self.initialised.clone(),
            "momentum": self.momentum,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if tuple(state["prototypes"].shape) != tuple(self.prototypes.shape):
            raise ValueError(
                f"prototype state of shape {tuple(state['prototypes'].shape)}, expected {tuple(self.prototypes.shape)}"
            )
        self.prototypes = state["prototypes"].to(self.prototypes).clone()
        self.initialised = state["initialised"].to(self.initialised).clone()
        self.momentum = float(state["momentum"])


# --------------------------------------------------------------------------- memory bank M


class FeatureBank:
    """The memory bank M: a FIFO queue of L2-normalised features (capacity, D) with pseudo-labels.

    `push` writes a batch after the oldest entries (wrapping around); a batch larger than the bank
    keeps its last `capacity` rows. `features` and `labels` return the filled entries oldest first.
    Reliabilities are not stored: they depend on the current prototypes, so they are recomputed at
    every step (`prototype_reliability`).
    """

    def __init__(self, capacity: int, dim: int, device: torch.device | str | None = None) -> None:
        if capacity < 1 or dim < 1:
            raise ValueError(f"capacity and dim must be at least 1, got {capacity}, {dim}")
        self.capacity = capacity
        self.dim = dim
        self._features = torch.zeros(capacity, dim, device=device)
        self._labels = torch.full((capacity,), -1, dtype=torch.long, device=device)
        self._pointer = 0  # where the next entry goes
        self._size = 0

    def __len__(self) -> int:
        return self._size

    @torch.no_grad()
    def push(self, features: Tensor, labels: Tensor) -> None:
        if features.ndim != 2 or features.shape[1] != self.dim or labels.shape != features.shape[:1]:
            raise ValueError(
                f"features (N, {self.dim}) and labels (N,) expected, got {tuple(features.shape)}, {tuple(labels.shape)}"
            )
        features = F.normalize(features.detach().to(self._features), dim=1)
        labels = labels.detach().to(self._labels)
        n = features.shape[0]
        if n >= self.capacity:
            self._features.copy_(features[-self.capacity :])
            self._labels.copy_(labels[-self.capacity :])
            self._pointer, self._size = 0, self.capacity
            return
        slots = (self._pointer + torch.arange(n, device=self._features.device)) % self.capacity
        self._features[slots] = features
        self._labels[slots] = labels
        self._pointer = (self._pointer + n) % self.capacity
        self._size = min(self._size + n, self.capacity)

    def _chronological(self, storage: Tensor) -> Tensor:
        if self._size < self.capacity:
            return storage[: self._size]
        return torch.cat([storage[self._pointer :], storage[: self._pointer]])

    @property
    def features(self) -> Tensor:
        """(len, D) unit vectors, oldest first."""
        return self._chronological(self._features)

    @property
    def labels(self) -> Tensor:
        """(len,) pseudo-labels, oldest first."""
        return self._chronological(self._labels)

    def state_dict(self) -> dict[str, Any]:
        return {
            "features": self._features.clone(),
            "labels": self._labels.clone(),
            "pointer": self._pointer,
            "size": self._size,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if tuple(state["features"].shape) != (self.capacity, self.dim):
            raise ValueError(
                f"bank state of shape {tuple(state['features'].shape)}, expected {(self.capacity, self.dim)}"
            )
        self._features = state["features"].to(self._features).clone()
        self._labels = state["labels"].to(self._labels).clone()
        self._pointer, self._size = int(state["pointer"]), int(state["size"])


# --------------------------------------------------------------------------- reliability (Eq. 7-10)


def prototype_distances(features: Tensor, labels: Tensor, prototypes: Tensor) -> Tensor:
    """1 - cos(f_i, X^{y_i}) (N,), in [0, 2]: Eq. 8's cosine similarity turned into a distance.

    A zero prototype (a class never seen) gives cos = 0, distance 1, for every sample of that class,
    so a GMM over such a set is degenerate and calls none of them reliable (`gmm_reliability`).
    """
    return 1 - (F.normalize(features, dim=1) * F.normalize(prototypes[labels], dim=1)).sum(1)


def gmm_reliability(
    distances: Tensor,
    iterations: int = 10,
    threshold: float = 0.7,
    *,
    valid: Tensor | None = None,
    min_variance: float = 1e-6,
) -> tuple[Tensor, Tensor]:
    """Eq. 9-10: fit a two-component 1-D GMM by EM to `distances` and return, per sample, the
    posterior gamma of the low-distance ("clean") component and the mask gamma > `threshold`.

    `distances` is (N,) or a batch of independent sets (G, N); `valid` (same shape, bool) marks the
    members of each set (default: all). Deterministic: the start splits each set at its mean (the
    two halves give the initial means, variances and weights), then `iterations` EM steps with
    variances floored at `min_variance`.

    The posterior of a GMM with unequal variances is not monotone in the distance: the wider
    component wins again in its far tail, so the clips nearest the prototype could be called less
    clean than farther ones. The log-odds are quadratic in d; beyond their turning point we hold
    them at the turning point's value, so gamma is non-increasing in d and equals the plain
    posterior everywhere else.

    Degenerate sets (fewer than 2 valid samples, or all valid distances equal within 1e-6) carry
    no evidence either way: their samples get gamma = 0.5 (the posterior of two identical
    components) and are not reliable for any threshold >= 0.5. Samples outside `valid` get 0, False.
    """
    if iterations < 0:
        raise ValueError(f"iterations must be >= 0, got {iterations}")
    squeeze = distances.ndim == 1
    d = distances.detach().to(torch.float64)
    d = d[None] if squeeze else d
    if valid is None:
        mask = torch.ones_like(d, dtype=torch.bool)
    else:
        mask = (valid[None] if squeeze else valid).to(torch.bool)
    if d.ndim != 2 or mask.shape != d.shape:
        raise ValueError(
            f"distances (N,) or (G, N) with a mask of the same shape expected, got {tuple(distances.shape)}"
        )
    if d.shape[1] == 0:
        empty = torch.zeros(d.shape, dtype=distances.dtype, device=distances.device)
        return (empty[0], mask[0]) if squeeze else (empty, mask)
    w = mask.to(d.dtype)
    count = w.sum(1, keepdim=True)
    d_safe = torch.where(mask, d, torch.zeros_like(d))  # invalid entries must not leak inf/nan into sums
    mean = (w * d_safe).sum(1, keepdim=True) / count.clamp(min=1)
    spread = torch.where(mask, d_safe, torch.full_like(d, -math.inf)).amax(1, keepdim=True) - torch.where(
        mask, d_safe, torch.full_like(d, math.inf)
    ).amin(1, keepdim=True)
    degenerate = (count < 2) | ~(spread > 1e-6)  # (G, 1); also catches empty sets (spread = -inf)

    def m_step(resp_low: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        resp = torch.stack([resp_low, 1 - resp_low]) * w  # (2, G, N)
        weight = resp.sum(2, keepdim=True).clamp(min=1e-12)  # (2, G, 1)
        mu = (resp * d_safe).sum(2, keepdim=True) / weight
        var = (resp * (d_safe - mu) ** 2).sum(2, keepdim=True) / weight + min_variance
        return weight / count.clamp(min=1), mu, var

    def log_odds(x: Tensor, pi: Tensor, mu: Tensor, var: Tensor) -> Tensor:
        log_density = torch.log(pi.clamp(min=1e-12)) - 0.5 * torch.log(2 * math.pi * var) - (x - mu) ** 2 / (2 * var)
        return log_density[0] - log_density[1]

    pi, mu, var = m_step((d_safe <= mean).to(d.dtype))
    for _ in range(iterations):
        pi, mu, var = m_step(torch.sigmoid(log_odds(d_safe, pi, mu, var)))
    # Component 0 must be the clean (low-distance) one; EM may have crossed the two over.
    swap = mu[0] > mu[1]  # (G, 1)
    pi, mu, var = (torch.where(swap, p.flip(0), p) for p in (pi, mu, var))
    # log-odds r(d) = a d^2 + b d + const; turning point d* = -b / (2a)
    a = 1 / (2 * var[1]) - 1 / (2 * var[0])
    b = mu[0] / var[0] - mu[1] / var[1]
    turning = -b / (2 * torch.where(a == 0, torch.ones_like(a), a))
    held = torch.where(
        a < 0, torch.maximum(d_safe, turning), torch.where(a > 0, torch.minimum(d_safe, turning), d_safe)
    )
    clean = torch.sigmoid(log_odds(held, pi, mu, var))
    clean = torch.where(degenerate, torch.full_like(clean, 0.5), clean)
    clean = torch.where(mask, clean, torch.zeros_like(clean)).to(distances.dtype)
    reliable = mask & (clean > threshold)
    return (clean[0], reliable[0]) if squeeze else (clean, reliable)


class Reliability(NamedTuple):
    """Eq. 9-10 for a batch of B anchors and a bank of K entries, one GMM per anchor's set N^+_hat."""

    anchor: Tensor  # (B,) gamma of each anchor's own f^p: the confidence of x^u (Algorithm 1 line 8)
    anchor_reliable: Tensor  # (B,) bool, gamma > epsilon
    bank: Tensor  # (B, K) gamma of bank entry k in anchor b's set; 0 where k's pseudo-label differs
    bank_reliable: Tensor  # (B, K) bool: bank entries in N^+ of anchor b (Eq. 10)


def prototype_reliability(
    positive_features: Tensor,
    anchor_labels: Tensor,
    bank_features: Tensor,
    bank_labels: Tensor,
    prototypes: Tensor,
    threshold: float = 0.7,
    iterations: int = 10,
) -> Reliability:
    """Eq. 7-10 as the paper writes them: for each anchor b with pseudo-label y_b, the set
    N^+_hat = {bank entries with label y_b} + {f^p_b} (Eq. 7), their distances to X^{y_b} (Eq. 8),
    one GMM fitted on that set (Eq. 9: conditioned on the set), and gamma > threshold (Eq. 10).

    `positive_features` are the teacher's f^p (B, D) (Eq. 6). The B fits run as one batched EM over
    each anchor's class members only (gathered into a padded (B, 1 + largest class count) matrix),
    not over the whole bank, so the cost is B x K / C rather than B x K.
    """
    own = prototype_distances(positive_features, anchor_labels, prototypes)  # (B,)
    bank_distances = prototype_distances(bank_features.to(own), bank_labels, prototypes)  # (K,)
    B, K = positive_features.shape[0], bank_features.shape[0]
    device = own.device
    # the bank sorted by pseudo-label: class c occupies [first[c], first[c] + count[c])
    order = torch.argsort(bank_labels, stable=True)
    count = torch.bincount(bank_labels, minlength=prototypes.shape[0])  # labels index prototypes, so < C
    first = torch.cumsum(count, 0) - count
    width = int(count[anchor_labels].max()) if B and K else 0
    slot = torch.arange(width, device=device)
    in_set = slot[None, :] < count[anchor_labels][:, None]  # (B, width)
    sorted_position = (first[anchor_labels][:, None] + slot[None, :]).clamp(max=max(K - 1, 0))
    bank_index = order[sorted_position] if K else sorted_position  # (B, width) indices into the bank
    member_distances = bank_distances[bank_index] if K else own.new_zeros(B, 0)
    distances = torch.cat([own[:, None], member_distances], dim=1)  # (B, 1 + width)
    own_member = torch.ones(B, 1, dtype=torch.bool, device=device)  # f^p is in its own set (Eq. 7)
    gamma, reliable = gmm_reliability(distances, iterations, threshold, valid=torch.cat([own_member, in_set], 1))
    # back to (B, K): entries outside the anchor's set stay 0 / False (the padding writes nothing)
    bank_gamma = gamma.new_zeros(B, K + 1)
    bank_reliable = torch.zeros(B, K + 1, dtype=torch.bool, device=device)
    target = torch.where(in_set, bank_index, torch.full_like(bank_index, K))  # padding -> a spare column
    bank_gamma.scatter_(1, target, torch.where(in_set, gamma[:, 1:], torch.zeros_like(gamma[:, 1:])))
    bank_reliable.scatter_(1, target, reliable[:, 1:] & in_set)
    return Reliability(gamma[:, 0], reliable[:, 0], bank_gamma[:, :K], bank_reliable[:, :K])


# --------------------------------------------------------------------------- Eq. 11 and L_u (Sec. 3.5)


def adaptive_contrastive_loss(
    anchor_features: Tensor,
    positive_features: Tensor,
    anchor_labels: Tensor,
    anchor_reliable: Tensor,
    bank_features: Tensor,
    bank_labels: Tensor,
    bank_reliable: Tensor,
    temperature: float = 0.07,
) -> Tensor:
    """L_ACL (Eq. 11), the mean over the B anchors.

    anchor_features f^a (B, D): the student's strong view, carrying the gradient; positive_features
    f^p (B, D): the teacher's weak view of the same clip; bank (K, D) with pseudo-labels (K,).
    Positives N^+ of anchor b:
    * reliable anchor (anchor_reliable[b], i.e. gamma(f^p_b) > epsilon): f^p_b and the bank entries
      with b's pseudo-label that are reliable (bank_reliable (K,) or per anchor (B, K));
    * unreliable anchor: f^p_b alone (Algorithm 1 line 12).
    Negatives are M - N^+, so the denominator always runs over f^p_b and the whole bank. Features
    are L2-normalised here (the dot products of Eq. 11 are cosines over tau). An empty bank leaves
    one candidate, f^p, and the loss is 0.
    """
    anchors = F.normalize(anchor_features, dim=1)
    positives = F.normalize(positive_features, dim=1)
    bank = F.normalize(bank_features, dim=1).to(anchors)
    logits = torch.cat([(anchors * positives).sum(1, keepdim=True), anchors @ bank.T], dim=1) / temperature
    bank_positive = (bank_labels[None, :] == anchor_labels[:, None]) & bank_reliable & anchor_reliable[:, None]
    own_positive = torch.ones(len(anchors), 1, dtype=torch.bool, device=anchors.device)  # f^p is always in N^+
    positive = torch.cat([own_positive, bank_positive], dim=1)
    numerator = logits.masked_fill(~positive, -math.inf).logsumexp(1)
    return (logits.logsumexp(1) - numerator).mean()


def reliability_weighted_unlabeled_loss(
    student_logits: Tensor, pseudo_labels: Tensor, confidence: Tensor, reliability: Tensor, threshold: float = 0.3
) -> Tensor:
    """alpha L_u of Eq. 2-3 with alpha replaced by each clip's reliability gamma_i (Sec. 3.5):
    mean over all N_u clips of gamma_i 1[confidence_i > delta] CE(student strong view, y_hat_i).
    The weights are detached: gamma is a statistic of the teacher's features."""
    weight = reliability.detach() * (confidence.detach() > threshold).to(student_logits.dtype)
    return (weight * F.cross_entropy(student_logits, pseudo_labels, reduction="none")).mean()


def multi_clip_pseudo_labels(teacher_probabilities: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
    """Eq. 19: y_hat = argmax of the teacher's class probabilities summed over the short clip and
    the N long clips (each (B, C), softmax outputs). Returns (labels, confidence), the confidence
    being the max of the *mean* probability, so that delta of Eq. 2 stays a probability."""
    mean = torch.stack(list(teacher_probabilities)).mean(0)
    confidence, labels = mean.max(1)
    return labels, confidence


# --------------------------------------------------------------------------- MTL: calibration (Eq. 13-14)


class Calibration(NamedTuple):
    attention: Tensor  # (B, P) A_n, cosine of the short clip's query with each long-clip position; 0 if invalid
    features: Tensor  # (B, P, D) f^{k_n*} = A_n f^{k_n}; 0 at invalid positions
    pooled: Tensor  # (B, D) mean of f^{k_n*} over the valid positions: what g_{t_n} reads (Eq. 16)


def _masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    weight = mask.to(x.dtype)[..., None]
    return (x * weight).sum(1) / weight.sum(1).clamp(min=1)


def cross_scale_calibration(
    short_features: Tensor,
    long_features: Tensor,
    *,
    long_mask: Tensor | None = None,
    short_mask: Tensor | None = None,
) -> Calibration:
    """Eq. 13-14: weight each position of a long-term clip by its cosine similarity to the short clip.

    short_features f^q: (B, D) or per position (B, Q, D), averaged over its valid positions
    (`short_mask` (B, Q)) into one query per clip. long_features f^{k_n}: (B, P, D) per position
    (time steps, or time x space tokens), or (B, D) for a pooled feature (then P = 1 and A_n is one
    scalar per clip). `long_mask` (B, P) marks valid positions (padding, missing frames): an invalid
    position gets A = 0, a zero calibrated feature and no weight in the pooled mean, so its value
    cannot change the output. A clip with no valid position pools to zeros.
    A_n is used as it is (it may be negative, Eq. 14 says nothing to clip it).
    """
    if long_features.ndim == 2:
        long_features = long_features[:, None]
        long_mask = None if long_mask is None else long_mask.reshape(-1, 1)
    if short_features.ndim == 3:
        if short_mask is None:
            short_mask = torch.ones(short_features.shape[:2], dtype=torch.bool, device=short_features.device)
        short_features = _masked_mean(short_features, short_mask)
    if long_mask is None:
        long_mask = torch.ones(long_features.shape[:2], dtype=torch.bool, device=long_features.device)
    keys = torch.where(long_mask[..., None], long_features, torch.zeros_like(long_features))
    attention = (F.normalize(short_features, dim=-1)[:, None, :] * F.normalize(keys, dim=-1)).sum(-1)
    attention = torch.where(long_mask, attention, torch.zeros_like(attention))
    calibrated = attention[..., None] * keys
    return Calibration(attention, calibrated, _masked_mean(calibrated, long_mask))


# --------------------------------------------------------------------------- MTL: alignment (Eq. 16-18)


class TeacherCenter:
    """DINO's centre of the teacher's outputs (ours; the paper says "following DINO" but names no
    centring): c <- m c + (1 - m) mean(teacher logits), subtracted before the sharpening softmax, so
    that tau_t = 0.04 sharpening cannot collapse every clip onto one output dimension."""

    def __init__(self, dim: int, momentum: float = 0.9, device: torch.device | str | None = None) -> None:
        self.momentum = momentum
        self.center = torch.zeros(dim, device=device)

    @torch.no_grad()
    def update(self, teacher_logits: Tensor) -> None:
        batch_mean = teacher_logits.detach().to(self.center).mean(0)
        self.center = self.momentum * self.center + (1 - self.momentum) * batch_mean

    def state_dict(self) -> dict[str, Any]:
        return {"center": self.center.clone(), "momentum": self.momentum}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.center = state["center"].to(self.center).clone()
        self.momentum = float(state["momentum"])


def temporal_alignment_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    student_temperature: float = 0.1,
    teacher_temperature: float = 0.04,
    center: Tensor | None = None,
) -> Tensor:
    """L_n = H(P^{k_n}, P^{q_n}) (Eq. 17), H(a, b) = -sum a log b as in DINO (the paper prints
    -log b), mean over the batch. student_logits z^{q_n} (B, K) = g_{s_n}(f^{q*}); teacher_logits
    z^{k_n} (B, K) = g_{t_n}(f^{k_n*}), detached: the teacher's distribution is the target."""
    target_logits = teacher_logits.detach() - (0 if center is None else center.to(teacher_logits))
    target = F.softmax(target_logits / teacher_temperature, dim=1)
    return -(target * F.log_softmax(student_logits / student_temperature, dim=1)).sum(1).mean()


def multi_scale_temporal_loss(
    student_logits: Sequence[Tensor],
    teacher_logits: Sequence[Tensor],
    student_temperature: float = 0.1,
    teacher_temperature: float = 0.04,
    centers: Sequence[Tensor | None] | None = None,
) -> Tensor:
    """L_MTL = (1/N) sum_n L_n (Eq. 18), one (student, teacher) pair of head outputs per scale n."""
    if len(student_logits) != len(teacher_logits) or not student_logits:
        raise ValueError(
            f"one student and one teacher output per scale, got {len(student_logits)}, {len(teacher_logits)}"
        )
    centers = [None] * len(student_logits) if centers is None else list(centers)
    losses = [
        temporal_alignment_loss(s, t, student_temperature, teacher_temperature, c)
        for s, t, c in zip(student_logits, teacher_logits, centers, strict=True)
    ]
    return torch.stack(losses).mean()
