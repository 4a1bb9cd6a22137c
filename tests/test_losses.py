"""Losses against values worked out by hand (or by a tiny independent soft-min recursion)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from fgar_cli.losses import (
    alignability_loss,
    alignability_triplet_loss,
    alignment_distances,
    gitdl_loss,
    hardest_negatives,
    score_loss,
)
from fgar_cli.models import ScoreHead


def reference_soft_dtw(cost: list[list[float]], gamma: float) -> float:
    """Plain-Python soft-DTW recursion (Cuturi & Blondel), independent of fgar_cli.softdtw."""
    n, m = len(cost), len(cost[0])
    R = [[math.inf] * (m + 1) for _ in range(n + 1)]
    R[0][0] = 0.0
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            prev = [r for r in (R[i - 1][j - 1], R[i - 1][j], R[i][j - 1]) if r < math.inf]
            low = min(prev)
            soft_min = low - gamma * math.log(sum(math.exp(-(r - low) / gamma) for r in prev))
            R[i][j] = cost[i - 1][j - 1] + soft_min
    return R[n][m]


def cosine_cost_lists(u: torch.Tensor, v: torch.Tensor) -> list[list[float]]:
    return [[1.0 - F.cosine_similarity(a, b, dim=0).item() for b in v] for a in u]


# --------------------------------------------------------------------------- alignment distances


def test_alignment_distances_with_one_frame_is_the_cosine_cost():
    e = torch.tensor([[[1.0, 0.0]], [[0.0, 2.0]], [[1.0, 1.0]]])  # (3, 1, 2), not unit length
    D = alignment_distances(e, gamma=0.1)
    expected = torch.tensor(
        [
            [0.0, 1.0, 1 - 1 / math.sqrt(2)],
            [1.0, 0.0, 1 - 1 / math.sqrt(2)],
            [1 - 1 / math.sqrt(2), 1 - 1 / math.sqrt(2), 0.0],
        ]
    )
    torch.testing.assert_close(D, expected, atol=1e-6, rtol=0)


def test_alignment_distances_two_frames_match_the_soft_min_formula():
    torch.manual_seed(0)
    e = torch.randn(3, 2, 5, dtype=torch.float64)
    gamma = 0.3
    D = alignment_distances(e, gamma)  # every ordered pair, the lower half mirrored from the upper
    for i in range(3):
        for j in range(3):
            (a, b), (c, d) = cosine_cost_lists(e[i], e[j])
            # R11 = a, R12 = a + b, R21 = a + c, R22 = d + softmin(R11, R12, R21)
            expected = d - gamma * math.log(
                math.exp(-a / gamma) + math.exp(-(a + b) / gamma) + math.exp(-(a + c) / gamma)
            )
            assert D[i, j].item() == pytest.approx(expected, abs=1e-9)


def test_alignment_distances_match_the_reference_recursion():
    torch.manual_seed(1)
    e = torch.randn(3, 4, 6, dtype=torch.float64)
    D = alignment_distances(e, gamma=0.2)
    for i in range(3):
        for j in range(3):
            expected = reference_soft_dtw(cosine_cost_lists(e[i], e[j]), 0.2)
            assert D[i, j].item() == pytest.approx(expected, abs=1e-9)


def test_alignment_distances_gradients_match_finite_differences():
    torch.manual_seed(2)
    e = torch.randn(3, 3, 4, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(3, 3, dtype=torch.float64)  # asymmetric, so both mirrored halves must carry grad
    assert torch.autograd.gradcheck(lambda x: (alignment_distances(x, 0.5) * weights).sum(), (e,))


# --------------------------------------------------------------------------- L_AT and mining


def test_hardest_negative_is_the_closest_clip_of_another_class():
    labels = torch.tensor([0, 0, 1, 1, 2])
    D = torch.tensor(
        [
            [0.0, 5.0, 3.0, 2.0, 4.0],  # negatives of 0: 2 (3.0), 3 (2.0), 4 (4.0) -> 3
            [5.0, 0.0, 1.0, 9.0, 0.5],  # -> 4 (0.5), although clip 0 (same class) is not the closest
            [3.0, 1.0, 0.0, 0.1, 7.0],  # clip 3 is closest but a positive -> 1 (1.0)
            [2.0, 9.0, 0.1, 0.0, 6.0],  # -> 0
            [4.0, 0.5, 7.0, 6.0, 0.0],  # -> 1
        ]
    )
    assert hardest_negatives(D, labels).tolist() == [3, 4, 1, 0, 1]
    assert hardest_negatives(D[:2, :2], labels[:2]).tolist() == [-1, -1]  # one class: no negative


def test_triplet_loss_equals_hand_computed_hinges():
    labels = torch.tensor([0, 0, 1, 1, 2])
    D = torch.tensor(
        [
            [0.0, 5.0, 3.0, 2.0, 4.0],
            [5.0, 0.0, 1.0, 9.0, 0.5],
            [3.0, 1.0, 0.0, 0.1, 7.0],
            [2.0, 9.0, 0.1, 0.0, 6.0],
            [4.0, 0.5, 7.0, 6.0, 0.0],
        ]
    )
    margin = 1.0
    # anchor 0: p=1, n*=3: 5 - 2 + 1 = 4; anchor 1: p=0, n*=4: 5 - 0.5 + 1 = 5.5
    # anchor 2: p=3, n*=1: 0.1 - 1 + 1 = 0.1; anchor 3: p=2, n*=0: 0.1 - 2 + 1 -> 0
    # anchor 4: no positive, no term
    expected = (4.0 + 5.5 + 0.1 + 0.0) / 4
    assert alignability_triplet_loss(D, labels, margin).item() == pytest.approx(expected)


def test_triplet_loss_is_zero_with_zero_gradient_when_the_margin_holds():
    labels = torch.tensor([0, 0, 1, 1])
    D = torch.tensor(
        [[0.0, 1.0, 3.0, 3.5], [1.0, 0.0, 3.2, 4.0], [3.0, 3.2, 0.0, 0.5], [3.5, 4.0, 0.5, 0.0]],
        requires_grad=True,
    )
    loss = alignability_triplet_loss(D, labels, margin=1.5)  # every D(i, n*) - D(i, p) >= 2 > 1.5
    loss.backward()
    assert loss.item() == 0.0
    assert torch.count_nonzero(D.grad) == 0
    assert alignability_triplet_loss(D.detach(), labels, margin=2.5).item() > 0  # a wider margin bites


def test_triplet_loss_without_valid_anchor_is_a_differentiable_zero():
    D = torch.rand(3, 3, requires_grad=True)
    loss = alignability_triplet_loss(D, torch.tensor([0, 1, 2]), margin=1.0)  # no positives at all
    loss.backward()
    assert loss.item() == 0.0 and D.grad is not None


def test_triplet_gradient_flows_only_into_positive_and_hardest_negative():
    labels = torch.tensor([0, 0, 1, 1])
    D = torch.tensor(
        [[0.0, 2.0, 1.0, 3.0], [2.0, 0.0, 5.0, 6.0], [1.0, 5.0, 0.0, 4.0], [3.0, 6.0, 4.0, 0.0]],
        requires_grad=True,
    )
    alignability_triplet_loss(D, labels, margin=0.5).backward()
    # 4 terms (one per anchor); active: anchor 0 (2 - 1 + .5), anchor 2 (4 - 1 + .5), anchor 3 (4 - 3 + .5);
    # anchor 1 (2 - 5 + .5) is inactive but still counts in the mean
    expected = torch.zeros(4, 4)
    expected[0, 1], expected[0, 2] = 1 / 4, -1 / 4
    expected[2, 3], expected[2, 0] = 1 / 4, -1 / 4
    expected[3, 2], expected[3, 0] = 1 / 4, -1 / 4
    torch.testing.assert_close(D.grad, expected)


# --------------------------------------------------------------------------- L_Score


def _head(slope: float, b: float) -> ScoreHead:
    head = ScoreHead()
    with torch.no_grad():
        head.a_raw.fill_(math.log(math.expm1(slope - ScoreHead.MIN_SLOPE)))
        head.b.fill_(b)
    return head


def _bce(logit: float, target: float) -> float:
    p = 1 / (1 + math.exp(-logit))
    return -(target * math.log(p) + (1 - target) * math.log(1 - p))


def test_score_loss_equals_the_bce_formula():
    labels = torch.tensor([0, 0, 1])
    D = torch.tensor([[9.0, 1.0, 3.0], [1.0, 9.0, 4.0], [3.0, 4.0, 9.0]])  # the diagonal must be ignored
    head = _head(slope=0.5, b=1.0)  # logit = -0.5 D + 1
    pos = [_bce(-0.5 * 1.0 + 1, 1), _bce(-0.5 * 1.0 + 1, 1)]  # (0,1), (1,0)
    neg = [_bce(-0.5 * d + 1, 0) for d in (3.0, 3.0, 4.0, 4.0)]  # (0,2), (2,0), (1,2), (2,1)
    plain = score_loss(D, labels, head, balanced=False).item()
    balanced = score_loss(D, labels, head, balanced=True).item()
    assert plain == pytest.approx(sum(pos + neg) / 6, rel=1e-6)
    assert balanced == pytest.approx((sum(pos) / 2 + sum(neg) / 4) / 2, rel=1e-6)


def test_score_loss_trains_the_head_to_separate_classes():
    labels = torch.tensor([0, 0, 1, 1])
    D = torch.tensor([[0.0, 1.0, 3.0, 3.0], [1.0, 0.0, 3.0, 3.0], [3.0, 3.0, 0.0, 1.0], [3.0, 3.0, 1.0, 0.0]])
    head = ScoreHead(init_distance=10.0)  # starts calling every pair alignable
    optimizer = torch.optim.SGD(head.parameters(), lr=0.5)
    for _ in range(300):
        optimizer.zero_grad()
        score_loss(D, labels, head).backward()
        optimizer.step()
    assert head(torch.tensor(1.0)).item() > 0.8 and head(torch.tensor(3.0)).item() < 0.2


# --------------------------------------------------------------------------- L_AV


def test_alignability_loss_is_triplet_plus_omega_score():
    e = torch.tensor([[[1.0, 0.0]], [[0.8, 0.6]], [[0.0, 1.0]], [[-0.6, 0.8]]], requires_grad=True)  # T = 1
    labels = torch.tensor([0, 0, 1, 1])
    head = _head(slope=2.0, b=1.0)
    head.calibrated.fill_(True)  # keep the line given: no calibration on this batch
    out = alignability_loss(e, labels, head, gamma=0.1, margin=0.5, omega=0.3)
    # T = 1: D = 1 - cos. D(0,1) = 0.2, D(0,2) = 1, D(0,3) = 1.6, D(1,2) = 0.4, D(1,3) = 1 - 0.0 = 1.0,
    # D(2,3) = 0.2. Hardest negatives: 0 -> 2 (1.0), 1 -> 2 (0.4), 2 -> 1 (0.4), 3 -> 1 (1.0)
    triplet = (max(0, 0.2 - 1.0 + 0.5) + max(0, 0.2 - 0.4 + 0.5) + max(0, 0.2 - 0.4 + 0.5) + max(0, 0.2 - 1 + 0.5)) / 4
    pos = [_bce(-2 * 0.2 + 1, 1)] * 4
    neg = [_bce(-2 * d + 1, 0) for d in (1.0, 1.6, 0.4, 1.0)] * 2
    score = (sum(pos) / 4 + sum(neg) / 8) / 2
    assert out["triplet"].item() == pytest.approx(triplet, abs=1e-6)
    assert out["score"].item() == pytest.approx(score, rel=1e-5)
    assert out["loss"].item() == pytest.approx(triplet + 0.3 * score, rel=1e-5)
    out["loss"].backward()
    assert e.grad.abs().sum() > 0 and head.b.grad is not None


def test_alignability_loss_calibrates_a_fresh_score_head_once():
    torch.manual_seed(3)
    e = F.normalize(torch.randn(6, 4, 8), dim=-1)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    head = ScoreHead(init_distance=100.0)
    alignability_loss(e, labels, head, gamma=0.1, margin=0.5, omega=1.0)
    D, same = alignment_distances(e, gamma=0.1) / e.shape[1], labels[:, None] == labels[None, :]
    off = ~torch.eye(6, dtype=torch.bool)
    center = (D[same & off].mean() + D[~same].mean()) / 2
    assert bool(head.calibrated)
    assert head(center).item() == pytest.approx(0.5, abs=1e-4)
    with torch.no_grad():
        head.b.add_(1.0)
    alignability_loss(e, labels, head, gamma=0.1, margin=0.5, omega=1.0)
    assert head(center).item() > 0.6  # not recalibrated: the change to b survives


# --------------------------------------------------------------------------- GITDL


def test_gitdl_equals_the_hand_formula_on_two_frames():
    local = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    global_ = torch.tensor([[[1.0, 0.0], [0.6, 0.8]]])
    local_t, global_t = torch.tensor([[0.0, 1.0]]), torch.tensor([[0.0, 2.0]])
    tau, sigma = 0.5, 1.0

    def ce(target_weights, logits):
        z = sum(target_weights)
        log_norm = math.log(sum(math.exp(s) for s in logits))
        return -sum(w / z * (s - log_norm) for w, s in zip(target_weights, logits, strict=True))

    # local -> global (both local times lie in the global span [0, 2])
    l0 = ce([math.exp(0), math.exp(-4 / 2)], [1.0 / tau, 0.6 / tau])
    l1 = ce([math.exp(-1 / 2), math.exp(-1 / 2)], [0.0 / tau, 0.8 / tau])
    # global -> local: only global time 0 lies in the local span [0, 1]
    g0 = ce([math.exp(0), math.exp(-1 / 2)], [1.0 / tau, 0.0 / tau])
    expected = ((l0 + l1) / 2 + g0) / 2
    for cross in (True, False):  # one video: no other video's frames to add
        got = gitdl_loss(local, global_, local_t, global_t, tau, sigma, cross_video_negatives=cross)
        assert got.item() == pytest.approx(expected, rel=1e-6)


def _gitdl_loop_reference(local, global_, local_t, global_t, tau, sigma):
    """Cross-video GITDL written with loops over (video, frame)."""
    B = local.shape[0]
    local, global_ = F.normalize(local, dim=-1), F.normalize(global_, dim=-1)
    all_local, all_global = local.reshape(-1, local.shape[2]), global_.reshape(-1, global_.shape[2])

    def direction(queries, keys, q_t, k_t):
        terms = []
        for b in range(B):
            for i in range(queries.shape[1]):
                if not (k_t[b].min() <= q_t[b, i] <= k_t[b].max()):
                    continue
                log_p = torch.log_softmax(keys @ queries[b, i] / tau, dim=0).reshape(B, -1)[b]
                w = torch.exp(-((q_t[b, i] - k_t[b]) ** 2) / (2 * sigma**2))
                terms.append(-(w / w.sum() * log_p).sum())
        return torch.stack(terms).mean()

    return (direction(local, all_global, local_t, global_t) + direction(global_, all_local, global_t, local_t)) / 2


def test_gitdl_cross_video_matches_a_loop_reference_and_adds_negatives():
    torch.manual_seed(4)
    # 4 local frames, 5 global frames: the two clips need not have the same length
    local, global_ = torch.randn(3, 4, 6, dtype=torch.float64), torch.randn(3, 5, 6, dtype=torch.float64)
    local_t = torch.tensor([[4.0, 5, 6, 7], [2, 3, 4, 5], [0, 1, 2, 3]], dtype=torch.float64)
    global_t = torch.tensor([[0.0, 2, 4, 6, 8], [0, 2, 4, 6, 8], [0, 2, 4, 6, 8]], dtype=torch.float64)
    cross = gitdl_loss(local, global_, local_t, global_t, tau=0.2, sigma=1.5)
    within = gitdl_loss(local, global_, local_t, global_t, tau=0.2, sigma=1.5, cross_video_negatives=False)
    expected = _gitdl_loop_reference(local, global_, local_t, global_t, 0.2, 1.5)
    assert cross.item() == pytest.approx(expected.item(), rel=1e-9)
    assert cross.item() > within.item()  # more terms in every softmax denominator


def test_gitdl_is_lower_for_aligned_embeddings_than_for_shuffled_ones():
    torch.manual_seed(5)
    B, T = 2, 8
    by_time = F.normalize(torch.randn(B, 2 * T, 32), dim=-1)  # one embedding per (video, absolute frame)
    global_t = torch.arange(0, 2 * T, 2.0).repeat(B, 1)
    local_t = torch.arange(4, 4 + T, dtype=torch.float32).repeat(B, 1)
    local = by_time[:, 4 : 4 + T]
    global_ = by_time[:, ::2]
    shuffled = global_[:, torch.randperm(T)]
    aligned_loss = gitdl_loss(local, global_, local_t, global_t, tau=0.1, sigma=1.0)
    shuffled_loss = gitdl_loss(local, shuffled, local_t, global_t, tau=0.1, sigma=1.0)
    assert aligned_loss.item() < shuffled_loss.item() - 0.5


def test_gitdl_gradients_reach_both_clips():
    local = torch.randn(2, 4, 8, requires_grad=True)
    global_ = torch.randn(2, 4, 8, requires_grad=True)
    t = torch.arange(4.0).repeat(2, 1)
    gitdl_loss(local, global_, t, t, tau=0.1, sigma=1.0).backward()
    assert local.grad.abs().sum() > 0 and global_.grad.abs().sum() > 0
