"""FixMatch's pieces and the mean teacher's update (fgar_cli/method/fixmatch.py) against hand computations."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from fgar_cli.method.fixmatch import confident_pseudo_labels, consistency_loss, ema_update


def batchnorm_with(weight: float, bias: float, running_mean: float, running_var: float, steps: int) -> nn.BatchNorm1d:
    """A BatchNorm1d(1): two parameters (weight, bias), two float buffers and the integer step counter."""
    module = nn.BatchNorm1d(1)
    with torch.no_grad():
        module.weight.fill_(weight)
        module.bias.fill_(bias)
        module.running_mean.fill_(running_mean)
        module.running_var.fill_(running_var)
        module.num_batches_tracked.fill_(steps)
    return module


def test_ema_update_matches_hand_computation_for_parameters_and_buffers() -> None:
    teacher = batchnorm_with(weight=1.0, bias=0.0, running_mean=0.0, running_var=1.0, steps=3)
    student = batchnorm_with(weight=3.0, bias=-2.0, running_mean=4.0, running_var=5.0, steps=10)
    ema_update(teacher, student, decay=0.75)
    # 0.75 * teacher + 0.25 * student, exactly representable
    assert teacher.weight.item() == 1.5
    assert teacher.bias.item() == -0.5
    assert teacher.running_mean.item() == 1.0
    assert teacher.running_var.item() == 2.0
    # the integer counter is copied, not averaged (an average would give 4.75 -> 4)
    assert teacher.num_batches_tracked.item() == 10
    assert teacher.num_batches_tracked.dtype == torch.long
    # the student is untouched and the teacher's tensors are not the student's
    assert (student.weight.item(), student.bias.item(), student.running_mean.item()) == (3.0, -2.0, 4.0)
    assert teacher.weight.data_ptr() != student.weight.data_ptr()


def test_ema_update_two_steps_compound() -> None:
    teacher = batchnorm_with(weight=0.0, bias=0.0, running_mean=0.0, running_var=1.0, steps=0)
    student = batchnorm_with(weight=1.0, bias=1.0, running_mean=1.0, running_var=1.0, steps=0)
    ema_update(teacher, student, decay=0.5)
    ema_update(teacher, student, decay=0.5)
    assert teacher.weight.item() == 0.75  # 1 - 0.5^2 of the way to the student
    assert teacher.running_mean.item() == 0.75


def test_ema_update_extreme_decays() -> None:
    student = batchnorm_with(weight=3.0, bias=-2.0, running_mean=4.0, running_var=5.0, steps=10)
    frozen = batchnorm_with(weight=1.0, bias=0.0, running_mean=0.0, running_var=1.0, steps=3)
    ema_update(frozen, student, decay=1.0)
    assert (frozen.weight.item(), frozen.running_var.item()) == (1.0, 1.0)
    copied = batchnorm_with(weight=1.0, bias=0.0, running_mean=0.0, running_var=1.0, steps=3)
    ema_update(copied, student, decay=0.0)
    assert (copied.weight.item(), copied.bias.item(), copied.running_var.item()) == (3.0, -2.0, 5.0)


def test_ema_update_on_a_deepcopy_after_a_training_step_moves_only_partly() -> None:
    torch.manual_seed(0)
    student = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    teacher = copy.deepcopy(student)
    student.train()
    student(torch.randn(8, 3))  # changes the student's running statistics only
    before = teacher[1].running_mean.clone()
    ema_update(teacher, student, decay=0.9)
    expected = 0.9 * before + 0.1 * student[1].running_mean
    assert torch.allclose(teacher[1].running_mean, expected)
    assert teacher[1].num_batches_tracked.item() == 1


def test_ema_update_rejects_bad_decay_and_mismatched_modules() -> None:
    with pytest.raises(ValueError, match="decay"):
        ema_update(nn.Linear(2, 2), nn.Linear(2, 2), decay=1.5)
    with pytest.raises(ValueError, match="only in the student"):
        ema_update(nn.Linear(2, 2), nn.Sequential(nn.Linear(2, 2)), decay=0.9)
    with pytest.raises(ValueError, match="shape"):
        ema_update(nn.Linear(2, 2), nn.Linear(2, 3), decay=0.9)


def test_confident_pseudo_labels_at_the_threshold() -> None:
    just_below = torch.nextafter(torch.tensor(0.75), torch.tensor(0.0)).item()
    probs = torch.tensor(
        [
            [0.75, 0.25, 0.0],  # exactly at the threshold: kept (FixMatch's >=)
            [1 - just_below, just_below, 0.0],  # one float below: dropped
            [0.0, 0.125, 0.875],  # above: kept
            [0.5, 0.25, 0.25],
        ]
    )
    labels, mask = confident_pseudo_labels(probs, threshold=0.75)
    assert labels.tolist() == [0, 1, 2, 0]
    assert mask.tolist() == [1.0, 0.0, 1.0, 0.0]
    assert mask.dtype == torch.float32


def test_confident_pseudo_labels_default_threshold_keeps_a_float32_point_95() -> None:
    # the comparison is made in the probabilities' dtype, so 0.95 stored as float32 counts as 0.95
    probs = torch.tensor([[0.95, 0.05], [0.05, 0.95], [0.94, 0.06]], dtype=torch.float32)
    _, mask = confident_pseudo_labels(probs, threshold=0.95)
    assert mask.tolist() == [1.0, 1.0, 0.0]


def test_confident_pseudo_labels_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match=r"\(B, C\)"):
        confident_pseudo_labels(torch.rand(3), threshold=0.5)
    with pytest.raises(ValueError, match="threshold"):
        confident_pseudo_labels(torch.rand(3, 2), threshold=1.2)


def test_consistency_loss_divides_by_the_whole_batch() -> None:
    logits = torch.tensor([[0.0, 0.0], [5.0, -5.0], [0.0, math.log(3.0)]], requires_grad=True)
    labels = torch.tensor([0, 1, 1])
    weights = torch.tensor([1.0, 0.0, 1.0])
    loss = consistency_loss(logits, labels, weights)
    # CE([0, 0], 0) = ln 2; the middle clip is masked; CE([0, ln 3], 1) = -ln(3/4) = ln(4/3)
    expected = (math.log(2.0) + 0.0 + math.log(4.0 / 3.0)) / 3  # / B = 3, not / 2 confident clips
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    loss.backward()
    assert torch.all(logits.grad[1] == 0)  # a masked clip gets no gradient


def test_consistency_loss_soft_weights_and_no_gradient_into_them() -> None:
    logits = torch.tensor([[0.0, 0.0], [0.0, math.log(3.0)]])
    weights = torch.tensor([0.5, 0.25], requires_grad=True)
    loss = consistency_loss(logits, torch.tensor([0, 1]), weights)
    assert loss.item() == pytest.approx((0.5 * math.log(2.0) + 0.25 * math.log(4.0 / 3.0)) / 2, rel=1e-6)
    assert not loss.requires_grad  # the weights were detached and the logits need no gradient


def test_consistency_loss_empty_batch_and_shape_errors() -> None:
    assert consistency_loss(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long), torch.zeros(0)).item() == 0.0
    with pytest.raises(ValueError, match="labels and weights"):
        consistency_loss(torch.zeros(2, 3), torch.zeros(3, dtype=torch.long), torch.zeros(2))
