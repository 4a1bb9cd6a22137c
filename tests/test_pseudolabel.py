"""The non-parametric classifier (Eq. 7-8), thresholding and the four Table 6 variants."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fgar_cli.config import PseudoLabeling
from fgar_cli.data.index import NO_TRUTH
from fgar_cli.errors import FgarError
from fgar_cli.method.nonparametric import (
    TAU_GRID,
    class_logits,
    fit_temperature,
    leave_one_out_class_logits,
    nonparametric_probs,
)
from fgar_cli.method.pseudolabels import pseudo_label_stats, select_pseudo_labels
from fgar_cli.metrics import auroc, classification_metrics
from fgar_cli.stages.openworld import leave_one_out_threshold


def test_class_logits_average_rho_members_of_each_class() -> None:
    # 2 queries x 5 gallery clips: classes 0,0,1,1,1.
    logits = torch.tensor([[0.9, 0.7, 0.1, 0.2, 0.3], [0.2, 0.4, 0.8, 0.6, 1.0]])
    labels = np.array([0, 0, 1, 1, 1])
    s = class_logits(logits, labels, num_classes=2, rho=10, seed=0)  # rho > members: all of them
    torch.testing.assert_close(s, torch.tensor([[0.8, 0.2], [0.3, 0.8]]))
    # rho = 1 picks one seeded member per class: the value is one of the members' logits, reproducibly.
    one = class_logits(logits, labels, num_classes=2, rho=1, seed=3)
    assert one[0, 0].item() in (0.9, pytest.approx(0.7))
    torch.testing.assert_close(one, class_logits(logits, labels, num_classes=2, rho=1, seed=3))


def test_averaging_logits_keeps_the_ranking_that_saturated_scores_lose() -> None:
    # Class 0's members align a little better than class 1's, but both far enough to saturate the sigmoid.
    logits = torch.tensor([[30.0, 28.0, 20.0, 19.0]])
    labels = np.array([0, 0, 1, 1])
    assert torch.sigmoid(logits)[0, :2].mean() == torch.sigmoid(logits)[0, 2:].mean()  # both 1.0 in float32
    p_A = nonparametric_probs(class_logits(logits, labels, num_classes=2, rho=8, seed=0), tau=5.0)
    assert p_A[0, 0] > 0.8


def test_gallery_missing_a_class_is_a_clear_error() -> None:
    with pytest.raises(FgarError, match="no member of class 2"):
        class_logits(torch.ones(1, 2), np.array([0, 1]), num_classes=3, rho=4, seed=0)


def test_nonparametric_probs_is_softmax_over_tau() -> None:
    s = torch.tensor([[0.9, 0.5, 0.1]])
    p = nonparametric_probs(s, tau=0.1)
    expected = torch.exp(s / 0.1) / torch.exp(s / 0.1).sum()
    torch.testing.assert_close(p, expected)
    assert p.sum().item() == pytest.approx(1.0)
    # A lower tau sharpens the distribution.
    assert nonparametric_probs(s, tau=0.03).max() > p.max()


def test_leave_one_out_class_logits_leave_the_clip_itself_out() -> None:
    logits = torch.tensor([[9.0, 1.0, 2.0], [1.0, 9.0, 4.0], [2.0, 4.0, 9.0]])
    labels = np.array([0, 0, 1])
    out = leave_one_out_class_logits(logits, labels, num_classes=2, rho=8, seed=0)
    # clip 0: class 0 is clip 1 only (1.0), class 1 is clip 2 (2.0); clip 2 has no other class-1 member.
    torch.testing.assert_close(out[:2], torch.tensor([[1.0, 2.0], [1.0, 4.0]]))
    assert out[2, 0].item() == 3.0 and torch.isnan(out[2, 1])  # class 0: mean of clips 0 and 1


def _noisy_logits(scale: float, query_labels: np.ndarray, gallery_labels: np.ndarray, seed: int) -> torch.Tensor:
    """Logits with a known amount of class evidence: scale * (same class) + unit Gaussian noise."""
    gen = torch.Generator().manual_seed(seed)
    same = torch.as_tensor(query_labels[:, None] == gallery_labels[None, :]).float()
    return scale * same + torch.randn(same.shape, generator=gen)


LABELS = np.repeat(np.arange(4), 40)


def test_fit_temperature_follows_the_scale_of_the_logits() -> None:
    # The same evidence on a 10x larger logit scale needs a 10x larger tau: the fit must track it.
    gallery = _noisy_logits(0.5, LABELS, LABELS, seed=0)
    tau_small = fit_temperature(gallery, LABELS, num_classes=4, rho=8, seed=0)
    tau_large = fit_temperature(gallery * 10, LABELS, num_classes=4, rho=8, seed=0)
    assert tau_large / tau_small == pytest.approx(10, rel=0.15)
    assert TAU_GRID[0] < tau_small < TAU_GRID[-1]  # an interior minimum, not a grid edge


def test_fit_temperature_beats_fixed_taus_on_held_out_queries() -> None:
    tau = fit_temperature(_noisy_logits(0.7, LABELS, LABELS, seed=0), LABELS, num_classes=4, rho=8, seed=0)
    truth = np.repeat(np.arange(4), 50)
    class_logit = class_logits(_noisy_logits(0.7, truth, LABELS, seed=1), LABELS, num_classes=4, rho=8, seed=1)

    def nll(t: float) -> float:
        return float(torch.nn.functional.cross_entropy(class_logit / t, torch.as_tensor(truth)))

    assert nll(tau) < nll(tau / 4) and nll(tau) < nll(tau * 4)
    assert nll(tau) < nll(0.1) and nll(tau) < nll(10.0)


def test_fit_temperature_needs_two_clips_of_a_class() -> None:
    with pytest.raises(FgarError, match="pass --tau"):
        fit_temperature(torch.zeros(2, 2), np.array([0, 1]), num_classes=2, rho=8, seed=0)


def _toy() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    p_E = torch.tensor([[0.90, 0.10], [0.70, 0.30], [0.95, 0.05], [0.20, 0.80]])
    p_A = torch.tensor([[0.90, 0.10], [0.95, 0.05], [0.10, 0.90], [0.50, 0.50]])
    s_c = torch.tensor([[0.8, 0.1], [0.9, 0.2], [0.3, 0.7], [0.2, 0.1]])
    return p_A, p_E, s_c


def test_collaborative_average_and_threshold() -> None:
    p_A, p_E, s_c = _toy()
    out = select_pseudo_labels(p_E, p_A, s_c, PseudoLabeling(source="collab", theta=0.8))
    torch.testing.assert_close(out.p, (p_A + p_E) / 2)
    # averages of the top class: 0.9, 0.825, 0.525, 0.65
    assert out.label.tolist() == [0, 0, 0, 1]
    assert out.accepted.tolist() == [True, True, False, False]


def test_action_and_alignability_sources_use_one_encoder() -> None:
    p_A, p_E, s_c = _toy()
    action = select_pseudo_labels(p_E, p_A, s_c, PseudoLabeling(source="action", theta=0.8))
    assert action.accepted.tolist() == [True, False, True, False]
    assert action.label.tolist() == [0, 0, 0, 1]
    align = select_pseudo_labels(p_E, p_A, s_c, PseudoLabeling(source="alignability", theta=0.8))
    assert align.accepted.tolist() == [True, True, True, False]
    assert align.label.tolist() == [0, 0, 1, 0]


def test_verify_keeps_f_E_label_only_when_its_class_alignability_exceeds_threshold() -> None:
    p_A, p_E, s_c = _toy()
    out = select_pseudo_labels(p_E, p_A, s_c, PseudoLabeling(source="verify", theta=0.8, verify_threshold=0.6))
    # confident by f_E: clips 0 and 2; clip 2's label 0 has alignability 0.3 <= 0.6: rejected.
    assert out.accepted.tolist() == [True, False, False, False]
    assert out.label.tolist() == [0, 0, 0, 1]


def test_theta_bounds_behave() -> None:
    p_A, p_E, s_c = _toy()
    assert select_pseudo_labels(p_E, p_A, s_c, PseudoLabeling(source="collab", theta=0.0)).accepted.all()
    assert not select_pseudo_labels(p_E, p_A, s_c, PseudoLabeling(source="collab", theta=1.0)).accepted.any()


def test_novel_threshold_sets_clips_aside() -> None:
    p_A, p_E, s_c = _toy()
    out = select_pseudo_labels(p_E, p_A, s_c, PseudoLabeling(source="collab", theta=0.5), novel_threshold=0.75)
    # best class alignability: 0.8, 0.9, 0.7, 0.2 -> clips 2 and 3 are novel
    assert out.novel.tolist() == [False, False, True, True]
    assert out.accepted.tolist() == [True, True, False, False]


def test_sources_other_than_action_need_f_A() -> None:
    _, p_E, _ = _toy()
    with pytest.raises(FgarError, match="--ckpt-a"):
        select_pseudo_labels(p_E, None, None, PseudoLabeling(source="collab", theta=0.8))


def test_pseudo_label_stats_count_and_accuracy() -> None:
    stats = pseudo_label_stats(np.array([0, 1, 1, 2]), np.array([True, True, False, True]), np.array([0, 0, 1, -1]))
    assert stats["accepted_count"] == 3 and stats["scored_count"] == 4
    assert stats["accepted_accuracy"] == pytest.approx(1 / 3)  # a novel clip (-1) accepted counts as wrong


def test_pseudo_label_accuracy_leaves_out_clips_nobody_labeled() -> None:
    label, accepted = np.array([0, 1, 2, 2]), np.array([True, True, True, False])
    stats = pseudo_label_stats(label, accepted, np.array([0, 0, NO_TRUTH, 2]))
    assert stats["accepted_count"] == 3  # the clip without truth still counts as accepted
    assert stats["accepted_accuracy"] == pytest.approx(1 / 2)  # but not in the accuracy
    only_unknown = pseudo_label_stats(label, accepted, np.full(4, NO_TRUTH))
    assert math.isnan(only_unknown["accepted_accuracy"])


def test_leave_one_out_threshold_uses_only_same_class_others() -> None:
    logits = torch.tensor([[5.0, 0.4, -9.0], [0.4, 5.0, -9.0], [-9.0, -9.0, 5.0]])
    # clip 2 is alone in its class; clips 0 and 1 have logit 0.4 with each other: S = sigmoid(0.4).
    expected = torch.sigmoid(torch.tensor(0.4)).item()
    assert leave_one_out_threshold(logits, np.array([0, 0, 1]), 8, 0.5) == pytest.approx(expected)


def test_classification_metrics_by_hand() -> None:
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.5, 0.4, 0.1], [0.2, 0.3, 0.5], [0.9, 0.05, 0.05]])
    truth = np.array([0, 1, 1, 2, -1])  # the last clip is of an unknown class: left out
    m = classification_metrics(probs, truth, ["a", "b", "c"])
    assert m["clips"] == 4
    assert m["top1"] == pytest.approx(3 / 4)
    assert m["per_class_accuracy"] == {"a": 1.0, "b": 0.5, "c": 1.0}
    assert m["mean_class_accuracy"] == pytest.approx(2.5 / 3)
    assert m["confusion"] == [[1, 0, 0], [1, 1, 0], [0, 0, 1]]
    assert m["top5"] == 1.0


def test_auroc_by_hand() -> None:
    scores = np.array([0.9, 0.8, 0.3, 0.1])
    assert auroc(scores, np.array([True, True, False, False])) == 1.0
    assert auroc(scores, np.array([False, False, True, True])) == 0.0
    assert auroc(np.array([0.5, 0.5]), np.array([True, False])) == 0.5
    assert auroc(np.array([0.9, 0.2, 0.5]), np.array([True, False, True])) == 1.0


def test_mc_dropout_masks_belong_to_clips_not_to_batches(tiny_run, tmp_path) -> None:
    """UPS's MC-dropout samples of a clip do not depend on the batch it ran in, nor on an unreadable
    clip before it: under torchrun a process cannot know how many clips another one skipped."""
    from dataclasses import replace

    from fgar_cli.checkpoints import load_action
    from fgar_cli.data.batches import inference_loader
    from fgar_cli.data.dataset import ClipDataset, ClipMode
    from fgar_cli.data.index import load_index
    from fgar_cli.inference import run_encoders

    index = load_index(tiny_run / "index.json")
    action = load_action(str(tiny_run / "fit" / "E.pt"))
    assert action.model.dropout.p > 0
    entries = index.entries[:5]
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video")
    with_broken = [replace(entries[0], id="broken", path=str(broken)), *entries[1:]]

    def mc_probs(clips: list, batch_size: int) -> torch.Tensor:
        dataset = ClipDataset(index, clips, action.recipe.clip, ClipMode.TEST, num_views=2)
        out = run_encoders(
            inference_loader(dataset, batch_size), torch.device("cpu"), "clips", action.model, None, 4, 7
        )
        assert out.mc_probs is not None and out.mc_probs.shape[:3] == (len(clips), 2, 4)
        return out.mc_probs

    alone = mc_probs(entries, 1)
    batched = mc_probs(entries, 3)
    torch.testing.assert_close(batched, alone)  # the same masks, whatever the batches
    assert (alone[:, :, 0] - alone[:, :, 1]).abs().max() > 1e-3  # passes differ: masks were drawn
    skipped = mc_probs(with_broken, 3)
    assert skipped[0].isnan().all()
    torch.testing.assert_close(skipped[1:], alone[1:])  # the unreadable clip moved no other clip's masks
    other_seed = run_encoders(
        inference_loader(ClipDataset(index, entries, action.recipe.clip, ClipMode.TEST, num_views=2), 3),
        torch.device("cpu"),
        "clips",
        action.model,
        None,
        4,
        8,
    ).mc_probs
    assert other_seed is not None and (other_seed - alone).abs().max() > 1e-3  # the seed chooses the masks
