"""SeFAR's pieces (Huang et al., AAAI 2025, ../shared/papers/sefar.txt) as small pure functions.

* Dual-level temporal elements (Sec. "Dual-level Temporal Elements", Eq. 5): `element_layout` says which of
  the K segment frames go into each of the M fine-grained elements p_1..p_M (L frames each) and into the
  context element p^context (C frames), in the authors' rule (KyleHuang9/SeFAR,
  timesformer/datasets/multi_decoder.py, `decode`); `apply_layout` gathers them along the time axis and
  `split_elements` cuts the result back into elements.
* Moderate temporal perturbation (Sec. "Perturbation of Fine-grained Temporal Elements", Eq. 6): the
  layout's `strong` order reverses the frames inside each fine element and keeps the context element's
  order. `channel_dropout` is the one spatial perturbation the authors' code adds to the strong view.
* Adaptive Regulation (Sec. "Stabilizing Optimization via Adaptive Regulation", Eq. 7): R stochastic
  teacher passes (`enable_mc_dropout`, `repeated_predictions`), then `adaptive_regulation` gives the
  pseudo-label, the per-clip coefficient eta = tau_1 * tau_2 and the mean probabilities. Where the paper
  and the code differ we follow the code (tools/train_net_emamix.py, `get_mask` and `ssl_train_epoch`)
  and say so.
* The rest of Eq. 8: the warm-up factor xi (`unsupervised_ramp`) and SVFormer's tube mix with its loss
  (`tube_mix`, `mixed_targets`, `mix_consistency_loss`), as the authors' code computes them.

Every difference from the paper is listed in docs/PEERS.md.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

# tau_2's constants in the authors' code (`get_mask`): the paper's beta ("related to the model dropout")
# is 20 there, not the config's TRAIN.BETA (10, which is the Beta(10, 10) of the mix ratio), and its
# "steady parameter" epsilon is 1e-9.
REGULATION_STD_SCALE = 20.0
REGULATION_EPS = 1e-9
TEACHER_PASSES = 10  # the paper's U = 10 (Table 8: accuracy saturates around 10)


@dataclass(frozen=True, eq=False)  # eq=False: comparing two layouts' tensors with == is ambiguous
class ElementLayout:
    """Where each element's frames come from, as indices into the time axis of the K segment frames.

    `weak` and `strong` have length M * L + C: the M fine elements one after the other, then the context
    element. In `strong` the frames of each fine element are in reverse order; the context part is the
    same as in `weak`."""

    segment_frames: int  # K
    fine_elements: int  # M
    element_length: int  # L
    context_length: int  # C
    fine_segments: tuple[tuple[int, ...], ...]  # M tuples of L segment indices, each in time order
    context_segments: tuple[int, ...]  # C segment indices, in time order
    weak: Tensor  # (M * L + C,) long
    strong: Tensor  # (M * L + C,) long

    @property
    def frames(self) -> int:
        """M * L + C: the length of the time axis after `apply_layout`."""
        return self.fine_elements * self.element_length + self.context_length

    @property
    def element_sizes(self) -> tuple[int, ...]:
        """(L, ..., L, C): the lengths of the elements along the laid-out time axis."""
        return (self.element_length,) * self.fine_elements + (self.context_length,)


def _authors_segment_rule(segment_frames: int, sizes: list[int]) -> list[list[int]]:
    """The element sampling of the authors' `decode` (multi_decoder.py), on K segments.

    They go through the elements from the last (the context) to the first; each takes, scanning the
    segments 0..K-1, a still unused segment j as soon as j >= (number taken so far) * K / size. So the
    context element gets every (K / C)-th segment and each fine element, step K / L apart (the paper's
    "sampling step floor(K / L)"), the first free ones. Float arithmetic as in their code, so that ties
    round the same way."""
    taken = [False] * segment_frames
    picked_last_first: list[list[int]] = []
    for size in reversed(sizes):
        interval = segment_frames / size
        chosen: list[int] = []
        for segment in range(segment_frames):
            if segment >= len(chosen) * interval and not taken[segment]:
                chosen.append(segment)
                taken[segment] = True
        if len(chosen) < size:
            # The authors then draw `size` random segments (possibly shared with other elements). We found
            # no layout that gets here (M <= 8, L <= 8, C <= 16, K up to M * L + C + 11), so refuse it.
            raise ValueError(
                f"the authors' element rule finds only {len(chosen)} free segments for an element of {size} "
                f"frames among K = {segment_frames} (sizes {sizes}); pick another layout"
            )
        picked_last_first.append(chosen)
    return picked_last_first[::-1]


def element_layout(
    segment_frames: int, fine_elements: int = 2, element_length: int = 2, context_length: int = 4
) -> ElementLayout:
    """The dual-level temporal elements {L-...-L-C} (the paper's {2-2-4} by default) over K segment frames.

    `segment_frames` K is the number of frames sampled one per segment (TSN style); the authors always
    use K = M * L + C (their `decode` sets the segment count to the sum of the element sizes), where the
    elements partition the K frames. For K = 8 and {2-2-4}: fine elements (3, 7) and (1, 5), context
    (0, 2, 4, 6); weak = [3, 7, 1, 5, 0, 2, 4, 6], strong = [7, 3, 5, 1, 0, 2, 4, 6]. A larger K runs the
    same rule on K segments and leaves K - (M * L + C) frames unused (ours: the authors never do that)."""
    for name, value in (
        ("segment_frames", segment_frames),
        ("fine_elements", fine_elements),
        ("element_length", element_length),
        ("context_length", context_length),
    ):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name} must be an integer, not {value!r}")
    if fine_elements < 1:
        raise ValueError(f"fine_elements must be at least 1 (the strong view perturbs them), not {fine_elements}")
    if element_length < 2:
        raise ValueError(
            f"element_length must be at least 2: reversing a fine element of {element_length} frame(s) "
            "changes nothing, so the strong view would not be perturbed"
        )
    if context_length < 1:
        raise ValueError(f"context_length must be at least 1, not {context_length}")
    needed = fine_elements * element_length + context_length
    if needed > segment_frames:
        raise ValueError(
            f"the layout {{{'-'.join([str(element_length)] * fine_elements + [str(context_length)])}}} needs "
            f"{needed} frames (M * L + C = {fine_elements} * {element_length} + {context_length}), "
            f"but only K = {segment_frames} segment frames are sampled"
        )
    sizes = [element_length] * fine_elements + [context_length]
    *fine, context = _authors_segment_rule(segment_frames, sizes)
    weak = [segment for element in fine for segment in element] + context
    # Eq. 6: psi reverses the frame order inside each fine element; the context keeps the action's direction.
    strong = [segment for element in fine for segment in reversed(element)] + context
    return ElementLayout(
        segment_frames=segment_frames,
        fine_elements=fine_elements,
        element_length=element_length,
        context_length=context_length,
        fine_segments=tuple(tuple(element) for element in fine),
        context_segments=tuple(context),
        weak=torch.tensor(weak, dtype=torch.long),
        strong=torch.tensor(strong, dtype=torch.long),
    )


def apply_layout(clips: Tensor, order: Tensor, time_dim: int = 1) -> Tensor:
    """Gather `clips` (B, T, ...) along `time_dim` in `order` (a layout's `weak` or `strong`): a new
    tensor whose time axis has len(order) frames. fgar's clips are (B, T, 3, H, W), so time_dim = 1."""
    if order.ndim != 1 or order.dtype != torch.long:
        raise ValueError(f"order must be a 1-D long tensor, not {order.dtype} of shape {tuple(order.shape)}")
    frames = clips.shape[time_dim]
    if order.numel() and (int(order.min()) < 0 or int(order.max()) >= frames):
        raise ValueError(f"order indexes frames {order.tolist()}, but the clips have {frames} along dim {time_dim}")
    return clips.index_select(time_dim, order.to(clips.device))


def split_elements(laid_out: Tensor, layout: ElementLayout, time_dim: int = 1) -> list[Tensor]:
    """Cut a laid-out batch (time axis of M * L + C frames) into its M + 1 elements, fine ones first.

    The authors' network never sees one concatenated sequence: it takes the list of elements, runs the
    same ViT on each with an element-specific time embedding and fuses the M + 1 [CLS] features
    (timesformer/models/vit.py, `multi_granular_vit`). This gives a model that wants that form its input."""
    if laid_out.shape[time_dim] != layout.frames:
        raise ValueError(
            f"the laid-out clips have {laid_out.shape[time_dim]} frames along dim {time_dim}, "
            f"the layout {layout.frames}"
        )
    return list(torch.split(laid_out, list(layout.element_sizes), dim=time_dim))


def channel_dropout(clips: Tensor, p: float, channel_dim: int = 2, generator: torch.Generator | None = None) -> Tensor:
    """Zero each (clip, colour channel) pair over all its frames and pixels with probability p and scale
    the rest by 1 / (1 - p): what the authors' `F.dropout2d(strong, 0.2)` does to their (B, C, T, H, W)
    strong views under torch 1.7 (tools/train_net_emamix.py, `ssl_train_epoch`). fgar's clips are
    (B, T, 3, H, W), hence channel_dim = 2."""
    if not 0.0 <= p < 1.0:
        raise ValueError(f"the channel dropout probability must lie in [0, 1), not {p}")
    if clips.ndim < 2 or not 0 < channel_dim < clips.ndim:
        raise ValueError(f"channel_dim {channel_dim} is not a non-batch axis of clips of shape {tuple(clips.shape)}")
    mask_shape = [1] * clips.ndim
    mask_shape[0] = clips.shape[0]
    mask_shape[channel_dim] = clips.shape[channel_dim]
    keep = torch.rand(mask_shape, generator=generator, device=clips.device if generator is None else generator.device)
    keep = (keep >= p).to(device=clips.device, dtype=clips.dtype)
    return clips * keep / (1.0 - p)


def enable_mc_dropout(model: nn.Module) -> None:
    """Put `model` in eval mode with its dropout layers in train mode: the authors' teacher
    (ModelEma keeps it in eval; `enable_dropout` switches modules whose class name starts with
    'Dropout' back on), so that repeated passes differ only by dropout while normalisation layers use
    their running statistics."""
    model.eval()
    for module in model.modules():
        if isinstance(module, nn.Dropout | nn.Dropout1d | nn.Dropout2d | nn.Dropout3d):
            module.train()


def repeated_predictions(predict: Callable[[Tensor], Tensor], inputs: Tensor, passes: int = TEACHER_PASSES) -> Tensor:
    """Softmax of `passes` calls of predict(inputs) (logits (B, C)), stacked to (R, B, C), without gradient.

    The authors call the whole teacher R = 10 times on the same weak clips; its only active stochastic
    layer is the dropout (p = 0.5) before the classifier. With fgar's ActionEncoder, whose only dropout is
    also before `fc`, `predict = lambda h: teacher.fc(teacher.dropout(h))` on `inputs = teacher.features(x)`
    draws from the same distribution for a tenth of the cost."""
    if passes < 2:
        raise ValueError(f"Adaptive Regulation needs at least 2 teacher passes for a standard deviation, not {passes}")
    with torch.no_grad():
        return torch.stack([predict(inputs).float().softmax(dim=-1) for _ in range(passes)])


def regulation_coefficient(
    max_probs: Tensor, max_std: Tensor, std_scale: float = REGULATION_STD_SCALE, eps: float = REGULATION_EPS
) -> Tensor:
    """eta = tau_1 * tau_2 (Eq. 7) as the authors' `get_mask` computes it:
    tau_1 = 2 * sigmoid(exp(mu*) - e), tau_2 = 2 * (sigmoid(1 / (std_scale * sigma* + eps)) - 0.5).

    The paper writes tau_1 = sigmoid(exp(mu*) - e) and tau_2 = sigmoid(1 / (beta sigma* + eps)) - 0.5; the
    code doubles both, so eta lies in (0, 1] (eta = 1 at mu* = 1, sigma* = 0; tau_1 >= 2 sigmoid(1 - e)
    ~ 0.30 for any mu* >= 0) and eta_code = 4 eta_paper."""
    tau_confidence = 2.0 * torch.sigmoid(torch.exp(max_probs) - math.e)
    tau_stability = 2.0 * (torch.sigmoid(1.0 / (std_scale * max_std + eps)) - 0.5)
    return tau_confidence * tau_stability


def adaptive_regulation(
    teacher_probs: Tensor, std_scale: float = REGULATION_STD_SCALE, eps: float = REGULATION_EPS
) -> tuple[Tensor, Tensor, Tensor]:
    """From the teacher's R repeated predictions (R, B, C) (probabilities): (pseudo-labels (B,),
    per-clip coefficient eta (B,), mean probabilities (B, C)), as tools/train_net_emamix.py does it:

    mean = mean over the R passes; pseudo-label = argmax_c mean; mu* = its mean probability;
    sigma* = the standard deviation over the passes of that same class's probability (torch.std, so
    unbiased, divided by R - 1); eta = `regulation_coefficient(mu*, sigma*)`. No confidence threshold:
    every clip is kept, weighted by eta (L_un = mean_b eta_b CE_b, `fixmatch.consistency_loss`).
    The paper's wording (mu^i the largest confidence "for the i-th prediction", mu* = max_i mu^i) reads as
    if i indexed the passes; the code takes the class of largest mean probability, as above."""
    if teacher_probs.ndim != 3:
        raise ValueError(f"teacher_probs must be (R, B, C), not of shape {tuple(teacher_probs.shape)}")
    if teacher_probs.shape[0] < 2:
        raise ValueError(f"Adaptive Regulation needs at least 2 teacher passes, got {teacher_probs.shape[0]}")
    # float32 at least: 1e-9 vanishes in float16 and the std of near-equal probabilities needs the precision
    probs = teacher_probs.detach().to(torch.promote_types(teacher_probs.dtype, torch.float32))
    mean_probs = probs.mean(dim=0)
    class_std = probs.std(dim=0)  # correction = 1, as in the authors' torch.std
    max_probs, pseudo_labels = mean_probs.max(dim=1)
    max_std = class_std.gather(1, pseudo_labels[:, None]).squeeze(1)
    return pseudo_labels, regulation_coefficient(max_probs, max_std, std_scale, eps), mean_probs


def unsupervised_ramp(epoch: int, max_epochs: int, warm_epochs: int = 0) -> float:
    """Eq. 8's warm-up xi for the 0-based `epoch`, as the authors compute it once per epoch:
    0 during the `warm_epochs` supervised-only epochs, then sin(pi/2 * (epoch + 1 - warm) / (max - warm)),
    which reaches 1 in the last epoch. (The paper writes xi = sin(n / M_n); the authors' config has
    WARM_EPOCH = 5 of MAX_EPOCH = 30.)"""
    if not 0 <= warm_epochs < max_epochs:
        raise ValueError(f"need 0 <= warm_epochs < max_epochs, not warm_epochs={warm_epochs}, max_epochs={max_epochs}")
    if not 0 <= epoch < max_epochs:
        raise ValueError(f"epoch {epoch} is outside 0..{max_epochs - 1}")
    if epoch < warm_epochs:
        return 0.0
    return math.sin(0.5 * math.pi * (epoch + 1 - warm_epochs) / (max_epochs - warm_epochs))


def tube_mix(
    clips: Tensor, partner_clips: Tensor, mix_ratio: float, patch_size: int, generator: torch.Generator | None = None
) -> Tensor:
    """SVFormer's tube token mix (the mix branch of L_mix in Eq. 8), in pixel space: on the grid of
    patch_size x patch_size patches, int(mix_ratio * patches) random patches come from `clips`, the rest
    from `partner_clips`; the same patches in every frame (a tube) and, as in the authors' code, for every
    clip of the batch. Clips are (B, T, 3, H, W) with H and W multiples of patch_size.

    The authors mix the ViT's patch tokens; since a ViT's patch embedding sees each patch alone, mixing
    the pixels of whole patches gives the same tokens. On a CNN it is a patch-wise CutMix (ours)."""
    if clips.shape != partner_clips.shape or clips.ndim != 5:
        raise ValueError(
            f"clips and partner_clips must both be (B, T, 3, H, W), "
            f"not {tuple(clips.shape)} and {tuple(partner_clips.shape)}"
        )
    if not 0.0 <= mix_ratio <= 1.0:
        raise ValueError(f"mix_ratio must lie in [0, 1], not {mix_ratio}")
    height, width = clips.shape[-2:]
    if patch_size < 1 or height % patch_size or width % patch_size:
        raise ValueError(f"patch_size {patch_size} does not tile frames of {height} x {width}")
    rows, cols = height // patch_size, width // patch_size
    patches = rows * cols
    own = torch.zeros(patches, dtype=torch.bool)
    own[torch.randperm(patches, generator=generator)[: int(mix_ratio * patches)]] = True
    pixel_mask = own.view(rows, cols).repeat_interleave(patch_size, 0).repeat_interleave(patch_size, 1)
    return torch.where(pixel_mask.to(clips.device), clips, partner_clips)


def mixed_targets(
    mean_probs: Tensor, coefficients: Tensor, partner_index: Tensor, mix_ratio: float
) -> tuple[Tensor, Tensor]:
    """Targets and weights of the mixed clips: y = lambda y_own + (1 - lambda) y_partner on the teacher's
    mean probabilities (soft, not the argmax) and eta' = lambda eta_own + (1 - lambda) eta_partner
    (the paper's eta'), with lambda the nominal `mix_ratio` (not the exact fraction of patches kept).
    `partner_index` (B,) is the permutation that gave clip b its partner partner_index[b]."""
    if mean_probs.ndim != 2 or coefficients.shape != mean_probs.shape[:1] or partner_index.shape != coefficients.shape:
        raise ValueError(
            f"need mean_probs (B, C), coefficients (B,) and partner_index (B,), not {tuple(mean_probs.shape)}, "
            f"{tuple(coefficients.shape)} and {tuple(partner_index.shape)}"
        )
    targets = mix_ratio * mean_probs + (1.0 - mix_ratio) * mean_probs[partner_index]
    weights = mix_ratio * coefficients + (1.0 - mix_ratio) * coefficients[partner_index]
    return targets, weights


def mix_consistency_loss(mixed_logits: Tensor, targets: Tensor, weights: Tensor) -> Tensor:
    """mean_b weights_b * mean_c (mixed_logits_bc - targets_bc)^2: the authors' L_mix. As in their code the
    squared error is taken on the student's raw logits against the soft targets (probabilities), not on
    its softmax."""
    if mixed_logits.shape != targets.shape or mixed_logits.ndim != 2 or weights.shape != mixed_logits.shape[:1]:
        raise ValueError(
            f"need mixed_logits and targets (B, C) and weights (B,), not {tuple(mixed_logits.shape)}, "
            f"{tuple(targets.shape)} and {tuple(weights.shape)}"
        )
    per_clip = (mixed_logits - targets.detach()).pow(2).mean(dim=1)
    return (per_clip * weights.detach()).mean()
