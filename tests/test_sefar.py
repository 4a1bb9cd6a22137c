"""SeFAR's pieces (fgar_cli/method/sefar.py): element layouts written out by hand from the authors' rule,
the Adaptive Regulation coefficient against a hand computation, and the helpers around them."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from fgar_cli.method.sefar import (
    adaptive_regulation,
    apply_layout,
    channel_dropout,
    element_layout,
    enable_mc_dropout,
    mix_consistency_loss,
    mixed_targets,
    regulation_coefficient,
    repeated_predictions,
    split_elements,
    tube_mix,
    unsupervised_ramp,
)

# ---- dual-level temporal elements -------------------------------------------------------------------


def test_layout_k8_224_is_the_authors() -> None:
    # multi_decoder.decode with sample_list [2, 2, 4], 8 segments: the context (processed first) takes
    # every 2nd segment 0, 2, 4, 6; the last fine element the first free one and one 4 later: 1, 5;
    # the first fine element what is left: 3, 7. The network gets [fine 1, fine 2, context].
    layout = element_layout(8)
    assert layout.fine_segments == ((3, 7), (1, 5))
    assert layout.context_segments == (0, 2, 4, 6)
    assert layout.weak.tolist() == [3, 7, 1, 5, 0, 2, 4, 6]
    assert layout.strong.tolist() == [7, 3, 5, 1, 0, 2, 4, 6]
    assert layout.weak.dtype == torch.long and layout.frames == 8
    assert layout.element_sizes == (2, 2, 4)


def test_layout_k16_224_runs_the_same_rule_on_16_segments() -> None:
    # context: every 4th segment 0, 4, 8, 12; last fine element: 1, then the first free one >= 8: 9;
    # first fine element: 2, then the first free one >= 8: 10.
    layout = element_layout(16)
    assert layout.fine_segments == ((2, 10), (1, 9))
    assert layout.context_segments == (0, 4, 8, 12)
    assert layout.weak.tolist() == [2, 10, 1, 9, 0, 4, 8, 12]
    assert layout.strong.tolist() == [10, 2, 9, 1, 0, 4, 8, 12]


def test_layout_k10_three_fine_elements() -> None:
    # {2-2-2-4} on 10 segments: context interval 2.5 -> 0, 3, 5, 8; fine elements (interval 5), last first:
    # 1, 6; then 2, 7; then 4, 9.
    layout = element_layout(10, fine_elements=3, element_length=2, context_length=4)
    assert layout.fine_segments == ((4, 9), (2, 7), (1, 6))
    assert layout.context_segments == (0, 3, 5, 8)
    assert layout.weak.tolist() == [4, 9, 2, 7, 1, 6, 0, 3, 5, 8]


@pytest.mark.parametrize(
    ("segment_frames", "fine_elements", "element_length", "context_length"),
    [(8, 2, 2, 4), (16, 2, 2, 4), (12, 2, 2, 8), (12, 2, 3, 6), (10, 3, 2, 4), (16, 4, 2, 8), (7, 1, 3, 4)],
)
def test_strong_reverses_each_fine_element_and_keeps_the_context(
    segment_frames: int, fine_elements: int, element_length: int, context_length: int
) -> None:
    layout = element_layout(segment_frames, fine_elements, element_length, context_length)
    weak_parts = torch.split(layout.weak, list(layout.element_sizes))
    strong_parts = torch.split(layout.strong, list(layout.element_sizes))
    for weak_fine, strong_fine in zip(weak_parts[:-1], strong_parts[:-1], strict=True):
        assert strong_fine.tolist() == weak_fine.flip(0).tolist()
        assert weak_fine.tolist() == sorted(weak_fine.tolist())  # each fine element is in time order
        assert strong_fine.tolist() != weak_fine.tolist()
    assert strong_parts[-1].tolist() == weak_parts[-1].tolist() == sorted(weak_parts[-1].tolist())
    # no segment is used twice, and with K = M * L + C every segment is used once
    assert len(set(layout.weak.tolist())) == layout.frames
    if segment_frames == layout.frames:
        assert sorted(layout.weak.tolist()) == list(range(segment_frames))


def test_invalid_layouts_raise() -> None:
    with pytest.raises(ValueError, match=r"needs 9 frames .* only K = 8"):
        element_layout(8, fine_elements=2, element_length=2, context_length=5)
    with pytest.raises(ValueError, match="element_length must be at least 2"):
        element_layout(8, element_length=1)
    with pytest.raises(ValueError, match="fine_elements must be at least 1"):
        element_layout(8, fine_elements=0)
    with pytest.raises(ValueError, match="context_length must be at least 1"):
        element_layout(8, context_length=0)
    with pytest.raises(ValueError, match="segment_frames must be an integer"):
        element_layout(8.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="fine_elements must be an integer"):
        element_layout(8, fine_elements=True)


def numbered_clips(batch: int = 2, frames: int = 8) -> torch.Tensor:
    """(B, T, 3, 2, 2) clips whose frame t is filled with 100 * b + t."""
    clips = torch.arange(frames, dtype=torch.float32).view(1, frames, 1, 1, 1).expand(batch, frames, 3, 2, 2)
    return clips + 100 * torch.arange(batch, dtype=torch.float32).view(batch, 1, 1, 1, 1)


def test_apply_layout_gathers_frames_along_time() -> None:
    layout = element_layout(8)
    clips = numbered_clips()
    weak = apply_layout(clips, layout.weak)
    strong = apply_layout(clips, layout.strong)
    assert weak.shape == clips.shape
    assert weak[0, :, 0, 0, 0].tolist() == [3, 7, 1, 5, 0, 2, 4, 6]
    assert strong[1, :, 2, 1, 1].tolist() == [107, 103, 105, 101, 100, 102, 104, 106]
    # (B, 3, T, H, W) along time_dim = 2 gives the same frames
    channels_first = clips.permute(0, 2, 1, 3, 4)
    assert torch.equal(apply_layout(channels_first, layout.weak, time_dim=2).permute(0, 2, 1, 3, 4), weak)


def test_apply_layout_with_more_frames_than_the_layout_uses() -> None:
    weak = apply_layout(numbered_clips(frames=16), element_layout(16).weak)
    assert weak.shape[1] == 8
    assert weak[0, :, 0, 0, 0].tolist() == [2, 10, 1, 9, 0, 4, 8, 12]


def test_apply_layout_rejects_bad_orders() -> None:
    with pytest.raises(ValueError, match="clips have 8 along dim 1"):
        apply_layout(numbered_clips(frames=8), element_layout(16).weak)
    with pytest.raises(ValueError, match="1-D long"):
        apply_layout(numbered_clips(), torch.tensor([0.0, 1.0]))


def test_split_elements_gives_fine_elements_then_context() -> None:
    layout = element_layout(8)
    parts = split_elements(apply_layout(numbered_clips(), layout.strong), layout)
    assert [part.shape[1] for part in parts] == [2, 2, 4]
    assert [part[0, :, 0, 0, 0].tolist() for part in parts] == [[7, 3], [5, 1], [0, 2, 4, 6]]
    with pytest.raises(ValueError, match="layout 8"):
        split_elements(numbered_clips(frames=6), layout)


# ---- Adaptive Regulation ----------------------------------------------------------------------------


def hand_coefficient(mean_prob: float, std: float) -> float:
    """The authors' get_mask, in plain floats: 2 sigmoid(e^mu - e) * 2 (sigmoid(1 / (20 sigma + 1e-9)) - 1/2)."""

    def sigmoid(x: float) -> float:
        return 1.0 / (1.0 + math.exp(-x))

    return 2 * sigmoid(math.exp(mean_prob) - math.e) * 2 * (sigmoid(1.0 / (20 * std + 1e-9)) - 0.5)


def test_adaptive_regulation_against_hand_computation() -> None:
    teacher_probs = torch.tensor(
        [  # R = 3 passes, B = 2 clips, C = 3 classes
            [[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]],
            [[0.6, 0.3, 0.1], [0.1, 0.1, 0.8]],
            [[0.8, 0.1, 0.1], [0.1, 0.1, 0.8]],
        ]
    )
    labels, coefficient, mean_probs = adaptive_regulation(teacher_probs)
    # clip 0: mean (0.7, 0.2, 0.1) -> class 0, mu* = 0.7; its probabilities 0.7, 0.6, 0.8 have the unbiased
    # std sqrt((0 + 0.01 + 0.01) / 2) = 0.1. clip 1: every pass says 0.8 for class 2, so sigma* = 0.
    assert labels.tolist() == [0, 2]
    assert torch.allclose(mean_probs, torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]]))
    # 2 sigmoid(e^0.7 - e) = 0.661614..., 2 (sigmoid(1 / 2) - 1/2) = 0.244919...
    assert coefficient[0].item() == pytest.approx(0.661614 * 0.244919, rel=1e-4)
    assert coefficient[0].item() == pytest.approx(hand_coefficient(0.7, 0.1), rel=1e-5)
    # sigma* = 0: tau_2 = 2 (sigmoid(1e9) - 1/2) = 1, eta = tau_1 = 2 sigmoid(e^0.8 - e) = 0.758498...
    assert coefficient[1].item() == pytest.approx(0.758498, rel=1e-4)
    assert coefficient.shape == (2,) and mean_probs.shape == (2, 3)


def test_regulation_is_larger_when_the_passes_agree() -> None:
    agreeing = torch.tensor([[0.6, 0.3, 0.1]] * 4)  # (R = 4, C)
    disagreeing = torch.tensor([[0.9, 0.05, 0.05], [0.3, 0.55, 0.15], [0.9, 0.05, 0.05], [0.3, 0.55, 0.15]])
    assert torch.allclose(agreeing.mean(0), disagreeing.mean(0))  # the same mean prediction
    teacher_probs = torch.stack([agreeing, disagreeing], dim=1)  # (R, B = 2, C)
    labels, coefficient, _ = adaptive_regulation(teacher_probs)
    assert labels.tolist() == [0, 0]
    assert coefficient[0] > 2 * coefficient[1]


def test_regulation_grows_with_confidence_and_is_at_most_one() -> None:
    confidences = torch.tensor([0.2, 0.5, 0.8, 1.0])
    coefficient = regulation_coefficient(confidences, torch.zeros(4))
    assert torch.all(coefficient[1:] > coefficient[:-1])
    assert coefficient[-1].item() == pytest.approx(1.0)  # mu* = 1, sigma* = 0
    assert coefficient[0].item() > 2 / (1 + math.exp(math.e - 1)) - 1e-6  # tau_1 >= 2 sigmoid(1 - e)
    spreads = regulation_coefficient(torch.full((3,), 0.9), torch.tensor([0.0, 0.05, 0.2]))
    assert torch.all(spreads[1:] < spreads[:-1])


def test_adaptive_regulation_rejects_a_single_pass_and_bad_shapes() -> None:
    with pytest.raises(ValueError, match="at least 2 teacher passes"):
        adaptive_regulation(torch.full((1, 2, 3), 1 / 3))
    with pytest.raises(ValueError, match=r"\(R, B, C\)"):
        adaptive_regulation(torch.rand(2, 3))


def test_mc_dropout_teacher_varies_only_through_dropout() -> None:
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Dropout(0.5), nn.Linear(8, 3))
    teacher.train()
    enable_mc_dropout(teacher)
    assert not teacher[1].training and teacher[2].training and not teacher.training
    inputs = torch.randn(5, 4)
    running_mean = teacher[1].running_mean.clone()
    teacher_probs = repeated_predictions(teacher, inputs, passes=6)
    assert teacher_probs.shape == (6, 5, 3) and not teacher_probs.requires_grad
    assert torch.allclose(teacher_probs.sum(-1), torch.ones(6, 5))
    assert not torch.allclose(teacher_probs[0], teacher_probs[1])  # dropout is on
    assert torch.equal(teacher[1].running_mean, running_mean)  # BatchNorm in eval: statistics unchanged
    with pytest.raises(ValueError, match="at least 2"):
        repeated_predictions(teacher, inputs, passes=1)


# ---- the rest of Eq. 8 ------------------------------------------------------------------------------


def test_unsupervised_ramp_follows_the_authors_sine() -> None:
    assert [unsupervised_ramp(epoch, 30, 5) for epoch in range(5)] == [0.0] * 5
    assert unsupervised_ramp(5, 30, 5) == pytest.approx(math.sin(math.pi / 50))
    assert unsupervised_ramp(17, 30, 5) == pytest.approx(math.sin(0.5 * math.pi * 13 / 25))
    assert unsupervised_ramp(29, 30, 5) == pytest.approx(1.0)
    assert unsupervised_ramp(0, 4) == pytest.approx(math.sin(math.pi / 8))
    with pytest.raises(ValueError, match="outside"):
        unsupervised_ramp(30, 30, 5)
    with pytest.raises(ValueError, match="warm_epochs"):
        unsupervised_ramp(0, 5, 5)


def test_channel_dropout_drops_whole_channels_of_a_clip() -> None:
    clips = torch.rand(6, 4, 3, 5, 5) + 0.5  # (B, T, 3, H, W), no zeros
    dropped = channel_dropout(clips, p=0.5, generator=torch.Generator().manual_seed(1))
    ratio = dropped / clips
    for clip in range(6):
        for channel in range(3):
            values = ratio[clip, :, channel].unique()
            assert len(values) == 1 and values.item() in (0.0, pytest.approx(2.0))
    assert (ratio == 0).any() and (ratio > 0).any()
    assert torch.equal(channel_dropout(clips, p=0.0), clips)
    with pytest.raises(ValueError, match="probability"):
        channel_dropout(clips, p=1.0)


def test_tube_mix_takes_whole_patches_in_every_frame() -> None:
    clips = torch.zeros(2, 3, 3, 4, 4)
    partner = torch.ones(2, 3, 3, 4, 4)
    mixed = tube_mix(clips, partner, mix_ratio=0.5, patch_size=2, generator=torch.Generator().manual_seed(0))
    patch_means = mixed[:, :, :, ::2, ::2]  # one pixel per 2 x 2 patch
    assert torch.equal(mixed, patch_means.repeat_interleave(2, -1).repeat_interleave(2, -2))  # whole patches
    own_patches = patch_means == 0
    assert own_patches[0, 0, 0].sum().item() == 2  # int(0.5 * 4) patches from the clip itself
    assert torch.equal(own_patches, own_patches[:1, :1, :1].expand_as(own_patches))  # same tube everywhere
    assert torch.equal(tube_mix(clips, partner, 1.0, 2), clips)
    assert torch.equal(tube_mix(clips, partner, 0.0, 2), partner)
    with pytest.raises(ValueError, match="tile"):
        tube_mix(clips, partner, 0.5, 3)


def test_mixed_targets_and_mix_loss_by_hand() -> None:
    mean_probs = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    coefficients = torch.tensor([0.8, 0.4])
    targets, weights = mixed_targets(mean_probs, coefficients, torch.tensor([1, 0]), mix_ratio=0.75)
    assert torch.allclose(targets, torch.tensor([[0.75, 0.25], [0.25, 0.75]]))
    assert torch.allclose(weights, torch.tensor([0.7, 0.5]))
    logits = torch.tensor([[1.75, 0.25], [0.25, 0.75]])
    # clip 0: mean((1, 0)^2) = 0.5, weighted 0.7; clip 1: exact, 0
    assert mix_consistency_loss(logits, targets, weights).item() == pytest.approx(0.7 * 0.5 / 2)
