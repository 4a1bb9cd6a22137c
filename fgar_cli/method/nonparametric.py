"""f_A's non-parametric classifier (paper Eq. 7 and 8) as pure functions on pair logits.

Input everywhere: the alignability logits f_S(D(u, a)) of queries u against gallery clips a, (Q, G).
1. Eq. 7, on logits: the class logit l_c is the mean f_S logit against rho seeded gallery members of
   class c (`class_logits`). The class alignability S_c is its sigmoid. (The paper averages the
   scores sigmoid(f_S(D)); they saturate, and the average hid which class aligned best:
   docs/METHOD.md.)
2. Eq. 8: p_A = softmax(l_c / tau) (`nonparametric_probs`), with tau fitted on the labeled gallery by
   leave-one-out (`fit_temperature`) unless given.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from fgar_cli.errors import FgarError

# Candidate temperatures for `fit_temperature`: 81 log-spaced values, 12% apart. The class logits scale
# with f_S's learned slope, so tau must be free to range over several decades.
TAU_GRID = np.logspace(-2, 2, 81)


def class_logits(logits: Tensor, gallery_labels: np.ndarray, num_classes: int, rho: int, seed: int) -> Tensor:
    """Eq. 7 on logits: the mean f_S logit against rho seeded gallery members of each class, (Q, C)."""
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


def nonparametric_probs(class_logit: Tensor, tau: float) -> Tensor:
    """p_A of Eq. 8, over the class logits of Eq. 7."""
    return torch.softmax(class_logit / tau, dim=1)


def leave_one_out_class_logits(logits: Tensor, labels: np.ndarray, num_classes: int, rho: int, seed: int) -> Tensor:
    """Eq. 7 for every gallery clip against the rest of the gallery (itself left out), (N, C).

    `logits` is the gallery against itself, (N, N). NaN where the clip is its class's only member:
    that class has no other member to average.
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


def fit_temperature(logits: Tensor, labels: np.ndarray, num_classes: int, rho: int, seed: int) -> float:
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
