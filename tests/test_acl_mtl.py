"""ACL+MTL's components (fgar_cli/method/acl_mtl.py) against hand computations from the paper's equations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fgar_cli.method.acl_mtl import (
    FeatureBank,
    PrototypeMemory,
    TeacherCenter,
    adaptive_contrastive_loss,
    class_prototypes,
    cross_scale_calibration,
    gmm_reliability,
    long_term_indices,
    momentum_update_prototypes,
    multi_clip_pseudo_labels,
    multi_scale_temporal_loss,
    prototype_distances,
    prototype_reliability,
    reliability_weighted_unlabeled_loss,
    temporal_alignment_loss,
)

# --------------------------------------------------------------------------- prototypes (Eq. 4-5)


def test_class_prototypes_are_means_of_unit_features_and_empty_classes_are_zero() -> None:
    features = torch.tensor([[3.0, 4.0], [2.0, 0.0], [0.0, 5.0]])
    labels = torch.tensor([0, 0, 2])
    prototypes = class_prototypes(features, labels, num_classes=3)
    # class 0: mean of (0.6, 0.8) and (1, 0); class 1: no sample; class 2: (0, 1)
    expected = torch.tensor([[0.8, 0.4], [0.0, 0.0], [0.0, 1.0]])
    torch.testing.assert_close(prototypes, expected)


def test_momentum_update_blends_seen_classes_sets_new_ones_and_keeps_absent_ones() -> None:
    old = torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, -1.0]])
    initialised = torch.tensor([True, False, True])
    batch = torch.tensor([[0.0, 1.0], [0.6, 0.8], [5.0, 5.0]])
    present = torch.tensor([True, True, False])
    new, seen = momentum_update_prototypes(old, initialised, batch, present, momentum=0.9)
    # Eq. 5: 0.1 * (0, 1) + 0.9 * (1, 0); class 1 first seen; class 2 absent from the batch
    torch.testing.assert_close(new, torch.tensor([[0.9, 0.1], [0.6, 0.8], [0.0, -1.0]]))
    assert seen.tolist() == [True, True, True]


def test_prototype_memory_updates_and_round_trips() -> None:
    memory = PrototypeMemory(num_classes=2, dim=2, momentum=0.5)
    memory.update(torch.tensor([[2.0, 0.0]]), torch.tensor([0]))
    memory.update(torch.tensor([[0.0, 3.0], [0.0, 1.0]]), torch.tensor([0, 1]))
    torch.testing.assert_close(memory.prototypes, torch.tensor([[0.5, 0.5], [0.0, 1.0]]))
    assert memory.initialised.tolist() == [True, True]
    restored = PrototypeMemory(num_classes=2, dim=2, momentum=0.9)
    restored.load_state_dict(memory.state_dict())
    torch.testing.assert_close(restored.prototypes, memory.prototypes)
    assert restored.momentum == 0.5
    with pytest.raises(ValueError, match="shape"):
        PrototypeMemory(num_classes=3, dim=2).load_state_dict(memory.state_dict())


def test_prototype_memory_initialise_sets_class_means() -> None:
    memory = PrototypeMemory(num_classes=3, dim=2)
    memory.initialise(torch.tensor([[1.0, 0.0], [0.0, 4.0], [0.0, 1.0]]), torch.tensor([0, 0, 2]))
    torch.testing.assert_close(memory.prototypes, torch.tensor([[0.5, 0.5], [0.0, 0.0], [0.0, 1.0]]))
    assert memory.initialised.tolist() == [True, False, True]


# --------------------------------------------------------------------------- memory bank


def _rows(*values: float) -> torch.Tensor:
    """Distinct 2-D unit vectors, one per angle (degrees)."""
    angles = torch.tensor(values) * math.pi / 180
    return torch.stack([angles.cos(), angles.sin()], dim=1)


def test_bank_is_fifo_with_wrap_around_and_normalises() -> None:
    bank = FeatureBank(capacity=4, dim=2)
    assert len(bank) == 0 and bank.features.shape == (0, 2)
    bank.push(3 * _rows(0, 10, 20), torch.tensor([0, 1, 2]))
    assert len(bank) == 3
    torch.testing.assert_close(bank.features, _rows(0, 10, 20))  # stored at unit length
    bank.push(_rows(30, 40), torch.tensor([3, 4]))  # wraps: the oldest entry (0 degrees) leaves
    assert len(bank) == 4
    assert bank.labels.tolist() == [1, 2, 3, 4]
    torch.testing.assert_close(bank.features, _rows(10, 20, 30, 40))
    bank.push(_rows(50, 60, 70, 80, 90, 100), torch.arange(5, 11))  # bigger than the bank: its last 4
    assert bank.labels.tolist() == [7, 8, 9, 10]
    torch.testing.assert_close(bank.features, _rows(70, 80, 90, 100))


def test_bank_state_round_trip_resumes_identically() -> None:
    bank = FeatureBank(capacity=3, dim=2)
    bank.push(_rows(0, 10), torch.tensor([0, 1]))
    bank.push(_rows(20, 30), torch.tensor([2, 3]))
    resumed = FeatureBank(capacity=3, dim=2)
    resumed.load_state_dict(bank.state_dict())
    for b in (bank, resumed):
        b.push(_rows(40), torch.tensor([4]))
    assert resumed.labels.tolist() == bank.labels.tolist() == [2, 3, 4]
    torch.testing.assert_close(resumed.features, bank.features)
    with pytest.raises(ValueError, match="shape"):
        FeatureBank(capacity=4, dim=2).load_state_dict(bank.state_dict())
    with pytest.raises(ValueError):
        bank.push(torch.ones(2, 3), torch.tensor([0, 1]))


# --------------------------------------------------------------------------- GMM (Eq. 8-10)


def test_prototype_distances_are_one_minus_cosine() -> None:
    prototypes = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    features = torch.tensor([[1.0, 1.0], [3.0, 0.0], [1.0, 0.0]])
    distances = prototype_distances(features, torch.tensor([0, 0, 1]), prototypes)
    torch.testing.assert_close(distances, torch.tensor([1 - 1 / math.sqrt(2), 0.0, 1.0]))


def test_gmm_separates_two_well_separated_clusters() -> None:
    g = torch.Generator().manual_seed(0)
    clean = 0.1 + 0.02 * torch.randn(30, generator=g)
    noisy = 0.8 + 0.05 * torch.randn(20, generator=g)
    distances = torch.cat([noisy[:10], clean, noisy[10:]])  # order must not matter
    is_clean = torch.cat([torch.zeros(10), torch.ones(30), torch.zeros(10)]).bool()
    gamma, reliable = gmm_reliability(distances, threshold=0.7)
    assert gamma[is_clean].min() > 0.99
    assert gamma[~is_clean].max() < 0.01
    assert torch.equal(reliable, is_clean)
    permutation = torch.randperm(50, generator=g)
    gamma_permuted, _ = gmm_reliability(distances[permutation])
    torch.testing.assert_close(gamma_permuted, gamma[permutation])  # deterministic, order-free


def test_gmm_clean_probability_is_non_increasing_in_distance() -> None:
    # A narrow clean cluster and a wide noisy one: the plain posterior of the wide component wins
    # again at very small distances, which the held log-odds must prevent.
    g = torch.Generator().manual_seed(1)
    distances = torch.cat(
        [
            0.3 + 0.01 * torch.randn(40, generator=g),
            0.7 + 0.25 * torch.randn(40, generator=g),
            torch.tensor([0.0, 0.05]),
        ]
    ).clamp(0, 2)
    gamma, _ = gmm_reliability(distances)
    order = distances.argsort()
    assert torch.all(gamma[order].diff() <= 1e-9)
    nearest = distances.argmin()
    assert gamma[nearest] >= gamma[(distances - 0.3).abs().argmin()] - 1e-9
    assert gamma[nearest] > 0.7


def test_gmm_degenerate_inputs() -> None:
    gamma, reliable = gmm_reliability(torch.full((5,), 0.4))
    torch.testing.assert_close(gamma, torch.full((5,), 0.5))
    assert not reliable.any()
    gamma, reliable = gmm_reliability(torch.tensor([0.2]))
    assert gamma.tolist() == [0.5] and reliable.tolist() == [False]
    gamma, reliable = gmm_reliability(torch.zeros(0))
    assert gamma.shape == reliable.shape == (0,)


def test_gmm_batched_sets_ignore_entries_outside_their_set() -> None:
    g = torch.Generator().manual_seed(2)
    row = torch.cat([0.1 + 0.01 * torch.randn(8, generator=g), 0.9 + 0.01 * torch.randn(8, generator=g)])
    valid = torch.ones(2, 20, dtype=torch.bool)
    valid[:, 16:] = False
    valid[1, 1:] = False  # the second set holds one sample: degenerate
    distances = torch.cat([row, torch.zeros(4)])[None].repeat(2, 1)
    gamma, reliable = gmm_reliability(distances, valid=valid)
    distances[:, 16:] = torch.tensor([5.0, -3.0, 0.5, 0.1])  # values outside the set must not matter
    distances[1, 1:] = 7.0
    gamma_changed, _ = gmm_reliability(distances, valid=valid)
    torch.testing.assert_close(gamma_changed, gamma)
    single, _ = gmm_reliability(row)
    torch.testing.assert_close(gamma[0, :16], single)
    assert gamma[0, 16:].eq(0).all() and not reliable[:, 16:].any()
    assert gamma[1, 0] == 0.5 and gamma[1, 1:].eq(0).all()


def test_prototype_reliability_fits_each_anchors_own_set() -> None:
    g = torch.Generator().manual_seed(3)
    prototypes = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    bank = F.normalize(torch.randn(12, 3, generator=g), dim=1)
    bank_labels = torch.tensor([0, 1] * 6)
    positives = F.normalize(torch.randn(2, 3, generator=g), dim=1)
    anchor_labels = torch.tensor([1, 0])
    result = prototype_reliability(positives, anchor_labels, bank, bank_labels, prototypes, threshold=0.7)
    for b in range(2):
        members = bank_labels == anchor_labels[b]
        distances = prototype_distances(
            torch.cat([positives[b : b + 1], bank[members]]),
            torch.full((1 + int(members.sum()),), int(anchor_labels[b])),
            prototypes,
        )
        gamma, reliable = gmm_reliability(distances, threshold=0.7)  # Eq. 9 on N^+_hat of anchor b alone
        torch.testing.assert_close(result.anchor[b], gamma[0])
        torch.testing.assert_close(result.bank[b, members], gamma[1:])
        assert bool(result.anchor_reliable[b]) == bool(reliable[0])
        assert torch.equal(result.bank_reliable[b, members], reliable[1:])
        assert result.bank[b, ~members].eq(0).all() and not result.bank_reliable[b, ~members].any()


def test_prototype_reliability_with_an_empty_bank_or_no_same_class_entry_is_degenerate() -> None:
    prototypes = torch.eye(3)
    positives = torch.tensor([[1.0, 0.1, 0.0], [0.0, 1.0, 0.0]])
    empty = prototype_reliability(positives, torch.tensor([0, 1]), torch.zeros(0, 3), torch.zeros(0).long(), prototypes)
    assert empty.anchor.tolist() == [0.5, 0.5] and not empty.anchor_reliable.any() and empty.bank.shape == (2, 0)
    other_class = prototype_reliability(
        positives, torch.tensor([0, 1]), torch.eye(3)[2:], torch.tensor([2]), prototypes
    )
    assert other_class.anchor.tolist() == [0.5, 0.5] and other_class.bank.eq(0).all()


# --------------------------------------------------------------------------- Eq. 11


def test_adaptive_contrastive_loss_matches_eq_11_by_hand() -> None:
    tau = 0.5
    anchors = torch.tensor([[2.0, 0.0], [0.0, 1.0], [0.6, 0.8]])  # the first at length 2: normalised inside
    positives = torch.tensor([[0.6, 0.8], [0.8, 0.6], [0.0, 1.0]])
    anchor_labels = torch.tensor([0, 1, 1])
    anchor_reliable = torch.tensor([True, False, True])
    bank = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, -0.8], [-1.0, 0.0]])
    bank_labels = torch.tensor([0, 1, 0, 1])
    bank_reliable = torch.tensor([True, True, False, True])
    e = lambda s: math.exp(s / tau)  # noqa: E731
    # anchor 0, reliable, class 0: N+ = {f^p (0.6), m1 (1.0)}; m3 is class 0 but unreliable -> negative
    loss_0 = -math.log((e(0.6) + e(1.0)) / (e(0.6) + e(1.0) + e(0.0) + e(0.6) + e(-1.0)))
    # anchor 1, unreliable: N+ = {f^p (0.6)}, the whole bank negative (m2 is its class and reliable)
    loss_1 = -math.log(e(0.6) / (e(0.6) + e(0.0) + e(1.0) + e(-0.8) + e(0.0)))
    # anchor 2, reliable, class 1: N+ = {f^p (0.8), m2 (0.8), m4 (-0.6)}; negatives m1 (0.6), m3 (-0.28)
    loss_2 = -math.log((e(0.8) + e(0.8) + e(-0.6)) / (e(0.8) + e(0.8) + e(-0.6) + e(0.6) + e(0.36 - 0.64)))
    anchors.requires_grad_(True)
    loss = adaptive_contrastive_loss(
        anchors, positives, anchor_labels, anchor_reliable, bank, bank_labels, bank_reliable, temperature=tau
    )
    assert loss.item() == pytest.approx((loss_0 + loss_1 + loss_2) / 3, rel=1e-5)
    loss.backward()
    assert anchors.grad is not None and anchors.grad.abs().sum() > 0
    # a per-anchor (B, K) reliability gives the same value when every row is the same mask
    per_anchor = adaptive_contrastive_loss(
        anchors, positives, anchor_labels, anchor_reliable, bank, bank_labels, bank_reliable.expand(3, 4), tau
    )
    assert per_anchor.item() == pytest.approx(loss.item(), rel=1e-6)


def test_adaptive_contrastive_loss_with_an_empty_bank_is_zero() -> None:
    loss = adaptive_contrastive_loss(
        torch.randn(2, 3),
        torch.randn(2, 3),
        torch.tensor([0, 1]),
        torch.tensor([True, False]),
        torch.zeros(0, 3),
        torch.zeros(0, dtype=torch.long),
        torch.zeros(0, dtype=torch.bool),
    )
    assert loss.item() == pytest.approx(0.0, abs=1e-6)


def test_reliability_weighted_unlabeled_loss_by_hand() -> None:
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    labels = torch.tensor([0, 1, 0])
    confidence = torch.tensor([0.9, 0.2, 0.5])  # the second is below delta = 0.3
    gamma = torch.tensor([0.5, 1.0, 0.25])
    ce = [math.log(1 + math.exp(-2.0)), math.log(1 + math.exp(-1.0)), math.log(2.0)]
    expected = (0.5 * ce[0] + 0.25 * ce[2]) / 3
    loss = reliability_weighted_unlabeled_loss(logits, labels, confidence, gamma, threshold=0.3)
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_multi_clip_pseudo_labels_by_hand() -> None:
    short = torch.tensor([[0.6, 0.4], [0.5, 0.5]])
    long_1 = torch.tensor([[0.2, 0.8], [0.1, 0.9]])
    long_2 = torch.tensor([[0.3, 0.7], [0.3, 0.7]])
    labels, confidence = multi_clip_pseudo_labels([short, long_1, long_2])
    assert labels.tolist() == [1, 1]
    torch.testing.assert_close(confidence, torch.tensor([1.9 / 3, 2.1 / 3]))


# --------------------------------------------------------------------------- MTL: clips


@pytest.mark.parametrize("seed", range(20))
def test_long_term_indices_have_the_intervals_and_contain_the_short_clip(seed: int) -> None:
    rng = np.random.default_rng(seed)
    clips = long_term_indices(300, 8, (16, 32), rng, short_interval=8)
    assert len(clips) == 3
    for clip, interval in zip(clips, (8, 16, 32), strict=True):
        assert clip.shape == (8,) and clip.dtype == np.int64
        assert clip.min() >= 0 and clip.max() < 300
        assert np.all(np.diff(clip) == interval)
    short = clips[0]
    for long_clip in clips[1:]:
        assert long_clip[0] <= short[0] and short[-1] <= long_clip[-1]


def test_long_term_indices_on_short_videos_stay_inside_and_cover_the_video() -> None:
    rng = np.random.default_rng(0)
    short, long_1, long_2 = long_term_indices(150, 8, (16, 32), rng, short_interval=8)
    assert np.all(np.diff(short) == 8) and np.all(np.diff(long_1) == 16)  # spans 57 and 113 fit in 150
    assert long_2[0] == 0 and long_2[-1] == 149 and np.all(np.diff(long_2) > 0)  # 225 does not: whole video
    for clip in long_term_indices(5, 8, (16,), rng, short_interval=8):  # fewer frames than the clip
        assert clip.min() >= 0 and clip.max() <= 4 and np.all(np.diff(clip) >= 0)
    centred = long_term_indices(300, 8, (16, 32), None)
    assert [c.tolist() for c in centred] == [c.tolist() for c in long_term_indices(300, 8, (16, 32), None)]
    with pytest.raises(ValueError):
        long_term_indices(100, 8, (4,), rng, short_interval=8)
    with pytest.raises(ValueError):
        long_term_indices(100, 8, (), rng)


# --------------------------------------------------------------------------- MTL: calibration, alignment


def test_cross_scale_calibration_shapes_and_values() -> None:
    g = torch.Generator().manual_seed(4)
    short = torch.randn(2, 3, generator=g)
    long = torch.randn(2, 5, 3, generator=g)
    out = cross_scale_calibration(short, long)
    assert out.attention.shape == (2, 5) and out.features.shape == (2, 5, 3) and out.pooled.shape == (2, 3)
    cosine = F.cosine_similarity(short[:, None, :], long, dim=-1)  # Eq. 13
    torch.testing.assert_close(out.attention, cosine)
    torch.testing.assert_close(out.features, cosine[..., None] * long)  # Eq. 14
    torch.testing.assert_close(out.pooled, (cosine[..., None] * long).mean(1))
    pooled_long = cross_scale_calibration(short, long[:, 0])  # (B, D): one position per clip
    assert pooled_long.attention.shape == (2, 1)
    torch.testing.assert_close(pooled_long.pooled, cosine[:, 0, None] * long[:, 0])


def test_cross_scale_calibration_masked_positions_do_not_influence_the_output() -> None:
    g = torch.Generator().manual_seed(5)
    short = torch.randn(2, 4, 3, generator=g)
    short_mask = torch.tensor([[True, True, False, False], [True, True, True, True]])
    long = torch.randn(2, 6, 3, generator=g)
    long_mask = torch.tensor([[True, False, True, True, False, True], [True, True, True, False, False, False]])
    out = cross_scale_calibration(short, long, long_mask=long_mask, short_mask=short_mask)
    changed_long, changed_short = long.clone(), short.clone()
    changed_long[~long_mask] = torch.tensor([1e6, float("nan"), -3.0])
    changed_short[~short_mask] = 1e3
    changed = cross_scale_calibration(changed_short, changed_long, long_mask=long_mask, short_mask=short_mask)
    for a, b in zip(out, changed, strict=True):
        torch.testing.assert_close(a, b)
    assert out.attention[~long_mask].eq(0).all() and out.features[~long_mask].eq(0).all()
    # the pooled clip is the mean over its valid positions, with the query the mean of the valid short ones
    query = short[0, :2].mean(0)
    kept = long[0, long_mask[0]]
    expected = (F.cosine_similarity(query[None], kept, dim=-1)[:, None] * kept).mean(0)
    torch.testing.assert_close(out.pooled[0], expected)


def test_temporal_alignment_loss_by_hand_and_teacher_is_a_target() -> None:
    student = torch.tensor([[1.0, 0.0, -1.0]], requires_grad=True)
    teacher = torch.tensor([[0.1, 0.0, 0.05]], requires_grad=True)
    tau_s, tau_t = 0.1, 0.04
    t = [math.exp(v / tau_t) for v in (0.1, 0.0, 0.05)]
    p_k = [v / sum(t) for v in t]
    s = [math.exp(v / tau_s) for v in (1.0, 0.0, -1.0)]
    log_p_q = [math.log(v / sum(s)) for v in s]
    expected = -sum(a * b for a, b in zip(p_k, log_p_q, strict=True))
    loss = temporal_alignment_loss(student, teacher, tau_s, tau_t)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    loss.backward()
    assert teacher.grad is None and student.grad is not None
    # Eq. 18: the mean over scales
    both = multi_scale_temporal_loss([student, student * 0], [teacher, teacher])
    second = temporal_alignment_loss(student * 0, teacher)
    assert both.item() == pytest.approx((loss.item() + second.item()) / 2, rel=1e-6)


def test_teacher_center_moves_by_momentum_and_shifts_the_target() -> None:
    center = TeacherCenter(dim=3, momentum=0.9)
    center.update(torch.tensor([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]]))
    torch.testing.assert_close(center.center, torch.tensor([0.2, 0.2, 0.2]))
    center.update(torch.tensor([[2.0, 0.0, 0.0]]))
    torch.testing.assert_close(center.center, torch.tensor([0.38, 0.18, 0.18]))
    student, teacher = torch.tensor([[0.5, 0.0, 0.0]]), torch.tensor([[0.1, 0.0, 0.0]])
    with_center = temporal_alignment_loss(student, teacher, center=center.center)
    assert with_center.item() == pytest.approx(temporal_alignment_loss(student, teacher - center.center).item())
    assert with_center.item() != pytest.approx(temporal_alignment_loss(student, teacher).item())
    restored = TeacherCenter(dim=3)
    restored.load_state_dict(center.state_dict())
    torch.testing.assert_close(restored.center, center.center)
