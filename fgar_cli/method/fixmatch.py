"""FixMatch's pieces (Sohn et al. 2020, NeurIPS), as pure functions, plus the mean teacher's weight average.

* `confident_pseudo_labels`: FixMatch Eq. 2-4: the pseudo-label of an unlabeled clip is argmax q_b of the
  weak view's class probabilities q_b, kept when max q_b >= tau (tau = 0.95 in the paper).
* `consistency_loss`: l_u = 1/(mu B) sum_b 1(max q_b >= tau) H(q_hat_b, p(y | A(u_b))) (Eq. 4): the
  per-clip cross-entropy of the strong view's logits against the pseudo-labels, weighted, then averaged
  over ALL unlabeled clips of the batch (masked clips count as 0 in the mean). The weights can be the 0/1
  mask (FixMatch) or SeFAR's soft per-clip coefficient eta (`fgar_cli.method.sefar.adaptive_regulation`).
* `ema_update`: the "mean teacher" of Tarvainen & Valpola (2017), which SeFAR uses instead of FixMatch's
  shared weights (SeFAR Sec. "Teacher vs. Student Model", Eq. 1): theta_t <- d theta_t + (1 - d) theta_s.
  (SeFAR's Eq. 1 writes the weight on the student as omega; the authors' code sets the teacher's weight
  d = TRAIN.EMA = 0.9999.)

The training loop (which views, which batches, when to update) lives with the caller; see
docs/PEERS.md for what the papers and the authors' code do around these functions.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def ema_update(teacher: nn.Module, student: nn.Module, decay: float) -> None:
    """Move `teacher` towards `student` in place: every floating-point tensor becomes
    decay * teacher + (1 - decay) * student; integer tensors are copied from the student.

    Parameters and buffers are matched by name, so the two modules must have the same structure (the
    teacher is normally a deepcopy of the student). What the references do with buffers:

    * Mean teacher (Tarvainen & Valpola 2017; CuriousAI/mean-teacher, pytorch/main.py,
      `update_ema_variables`) averages `parameters()` only. Its teacher runs in train mode on its own
      noisy input, so its BatchNorm running statistics come from its own forward passes.
    * SeFAR (KyleHuang9/SeFAR, timesformer/utils/ema.py, `ModelEma.update`, timm's old ModelEma) averages
      the whole `state_dict()`: parameters AND buffers. Its teacher stays in eval mode (only dropout is
      switched back on, tools/train_net_emamix.py `enable_dropout`), so the averaged running statistics
      are the only ones it ever has. (TimeSformer has LayerNorm only, so in their runs there are no
      BatchNorm buffers at all.) For an integer buffer such as `num_batches_tracked`, their formula
      computes a float and `copy_` truncates it back into the integer, which keeps the counter stuck.

    We follow SeFAR, as our teacher is also used in eval mode: floating buffers (running_mean,
    running_var) are averaged like the parameters. Integer buffers are copied, since an average of a
    step counter means nothing and truncating it would freeze it.
    """
    if not 0.0 <= decay <= 1.0:
        raise ValueError(f"EMA decay must lie in [0, 1], not {decay}")
    for kind, teacher_tensors, student_tensors in (
        ("parameters", dict(teacher.named_parameters()), dict(student.named_parameters())),
        ("buffers", dict(teacher.named_buffers()), dict(student.named_buffers())),
    ):
        if teacher_tensors.keys() != student_tensors.keys():
            only_teacher = sorted(teacher_tensors.keys() - student_tensors.keys())
            only_student = sorted(student_tensors.keys() - teacher_tensors.keys())
            raise ValueError(
                f"teacher and student {kind} differ: only in the teacher {only_teacher}, "
                f"only in the student {only_student}"
            )
        with torch.no_grad():
            for name, teacher_tensor in teacher_tensors.items():
                student_tensor = student_tensors[name].detach()
                if teacher_tensor.shape != student_tensor.shape:
                    raise ValueError(
                        f"{name}: teacher shape {tuple(teacher_tensor.shape)}, "
                        f"student shape {tuple(student_tensor.shape)}"
                    )
                if teacher_tensor.dtype.is_floating_point:
                    teacher_tensor.mul_(decay).add_(student_tensor.to(teacher_tensor.dtype), alpha=1.0 - decay)
                else:
                    teacher_tensor.copy_(student_tensor)


def confident_pseudo_labels(probs: Tensor, threshold: float) -> tuple[Tensor, Tensor]:
    """FixMatch's pseudo-labels from class probabilities `probs` (B, C), e.g. the softmax of the weak
    view's logits: (labels (B,) long, mask (B,) float), mask = 1 where max_c probs >= threshold.

    `>=` as in FixMatch's Eq. 4, 1(max(q_b) >= tau) (SeFAR's restatement, its Eq. 3, writes `>`; the
    two only differ for a probability exactly at the threshold)."""
    if probs.ndim != 2:
        raise ValueError(f"probs must be (B, C), not of shape {tuple(probs.shape)}")
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"the confidence threshold must lie in [0, 1], not {threshold}")
    max_probs, labels = probs.detach().max(dim=1)
    mask = (max_probs >= threshold).to(probs.dtype if probs.dtype.is_floating_point else torch.float32)
    return labels, mask


def consistency_loss(strong_logits: Tensor, labels: Tensor, weights: Tensor) -> Tensor:
    """mean_b weights_b * CE(strong_logits_b, labels_b): strong_logits (B, C), labels (B,), weights (B,).

    FixMatch's normalisation (Eq. 4 and both official implementations): divided by the number of
    unlabeled clips B, not by the number of confident ones, so a batch with few confident clips gives
    a small loss rather than a noisy full-size one. The weights carry no gradient (they are detached);
    an empty batch gives 0."""
    if strong_logits.ndim != 2:
        raise ValueError(f"strong_logits must be (B, C), not of shape {tuple(strong_logits.shape)}")
    batch = strong_logits.shape[0]
    if labels.shape != (batch,) or weights.shape != (batch,):
        raise ValueError(
            f"labels and weights must be ({batch},) like the logits' batch, "
            f"not {tuple(labels.shape)} and {tuple(weights.shape)}"
        )
    if batch == 0:
        return strong_logits.sum() * 0.0
    per_clip = F.cross_entropy(strong_logits, labels.long(), reduction="none")
    return (per_clip * weights.detach().to(per_clip.dtype)).mean()
