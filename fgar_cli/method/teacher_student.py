"""The teacher-student base of the peer methods (`fgar selftrain --method fixmatch|sefar|acl-mtl`): FixMatch
(Sohn et al. 2020) with a mean teacher (Tarvainen & Valpola 2017), as SeFAR builds on it.

Each step takes B labeled clips and mu x B unlabeled ones (`PairedBatches`). The student (f_E) learns
the labeled clips by cross-entropy; the teacher, an exponential moving average of the student's
weights, labels each unlabeled clip from its weak view, and the student learns that label from the
strong view, weighted by a per-clip coefficient (FixMatch: 1 when the teacher's confidence clears the
threshold, else 0; SeFAR: Adaptive Regulation). loss = L_sup + lambda_u L_un. After each optimizer
step the teacher follows the student (`after_update`). ACL+MTL (`AclMtlStep`) adds its contrastive
and multi-scale temporal terms on the same base, over short and long clips of each unlabeled video.

The teacher and the epoch's pseudo-labels are the step's state (`fgar_cli.objectives.StatefulStep`):
the engine keeps them in E_last.pt, so a resumed run continues them. At the end of each epoch the
teacher's labels of every unlabeled clip (its last view in the epoch) go to epoch_K/pseudo.h5, in the
schema FinePseudo's rounds write, with their count and accuracy.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader

from fgar_cli.config import (
    AclMtlOptions,
    Config,
    Optimization,
    PseudoLabeling,
    SefarOptions,
    Source,
    TeacherStudentTraining,
)
from fgar_cli.data.batches import EpochBatches
from fgar_cli.method.acl_mtl import (
    FeatureBank,
    PrototypeMemory,
    TeacherCenter,
    adaptive_contrastive_loss,
    cross_scale_calibration,
    multi_clip_pseudo_labels,
    multi_scale_temporal_loss,
    prototype_reliability,
    reliability_weighted_unlabeled_loss,
)
from fgar_cli.method.fixmatch import confident_pseudo_labels, consistency_loss, ema_update
from fgar_cli.method.pseudolabels import PseudoLabels, Selection, pseudo_label_stats, write_pseudo_labels
from fgar_cli.method.sefar import ElementLayout, adaptive_regulation, unsupervised_ramp
from fgar_cli.models import ActionEncoder, ProjectionHead
from fgar_cli.runtime import autocast, to_device


@dataclass
class PairedBatches:
    """An epoch of teacher-student steps: the unlabeled clips once, in batches of mu x B, each beside
    a batch of B labeled clips, which are cycled through (reshuffled each time round) as often as the
    unlabeled clips need. Epoch e is the same in any run that reaches it (both sources are
    `EpochBatches`; the labeled one's k-th pass of epoch e is its epoch e x 1000 + k)."""

    labeled: EpochBatches
    unlabeled: EpochBatches

    def for_epoch(self, epoch: int) -> PairedLoader:
        unlabeled = self.unlabeled.for_epoch(epoch)
        # drawn after the unlabeled loader: its torch.manual_seed must not reset the labeled draws
        return PairedLoader(unlabeled, lambda k: self.labeled.for_epoch(epoch * 1000 + k))


@dataclass
class PairedLoader:
    unlabeled: DataLoader
    labeled_pass: Any  # k -> the labeled DataLoader of the k-th pass

    def __len__(self) -> int:
        return len(self.unlabeled)

    def __iter__(self) -> Iterator[dict[str, Any] | None]:
        passes = 0
        labeled = iter(self.labeled_pass(passes))
        for unlabeled in self.unlabeled:
            labeled_batch = None
            while labeled_batch is None:
                try:
                    labeled_batch = next(labeled)
                except StopIteration:
                    passes += 1
                    if passes > 1000:
                        raise RuntimeError("no labeled clip could be read") from None
                    labeled = iter(self.labeled_pass(passes))
            if unlabeled is None:
                yield None
                continue
            # "index" and "video" are what the engine counts and moves: the unlabeled clips'
            yield {"labeled": labeled_batch, "unlabeled": unlabeled, "index": unlabeled["index"]}


def nested_to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: nested_to_device(v, device) if isinstance(v, dict) else v for k, v in to_device(batch, device).items()}


@dataclass
class EpochPseudoLabels:
    """The teacher's labels of the unlabeled clips in one epoch (the last view of each clip seen)."""

    video_ids: list[str]
    truth: np.ndarray
    num_classes: int
    probs: Tensor = field(init=False)
    coefficient: Tensor = field(init=False)
    seen: Tensor = field(init=False)

    def __post_init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        n = len(self.video_ids)
        self.probs = torch.full((n, self.num_classes), float("nan"))
        self.coefficient = torch.zeros(n)
        self.seen = torch.zeros(n, dtype=torch.bool)

    def record(self, index: Tensor, probs: Tensor, coefficient: Tensor) -> None:
        index = index.cpu()
        self.probs[index] = probs.detach().float().cpu()
        self.coefficient[index] = coefficient.detach().float().cpu()
        self.seen[index] = True

    def selection(self) -> Selection:
        """A clip counts as pseudo-labeled when its coefficient is positive (FixMatch: it cleared the
        threshold; SeFAR: Adaptive Regulation gave it weight)."""
        confidence, label = self.probs.nan_to_num(0.0).max(1)
        accepted = self.seen & (self.coefficient > 0)
        return Selection(self.probs, label, confidence, accepted, torch.zeros_like(accepted), None)

    def stats(self) -> dict[str, Any]:
        chosen = self.selection()
        return pseudo_label_stats(chosen.label.numpy(), chosen.accepted.numpy(), self.truth)

    def state_dict(self) -> dict[str, Tensor]:
        return {"probs": self.probs, "coefficient": self.coefficient, "seen": self.seen}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.probs, self.coefficient, self.seen = state["probs"], state["coefficient"], state["seen"]


@dataclass
class PseudoLabelFiles:
    """Where each epoch's pseudo-labels go (out/epoch_K/pseudo.h5) and what they record."""

    out: Path
    class_names: list[str]
    threshold: float
    config: Config
    inputs: list[str]

    def write(self, epoch: int, labels: EpochPseudoLabels) -> dict[str, Any]:
        chosen = labels.selection()
        rule = PseudoLabeling(source=Source.ACTION, theta=self.threshold)  # the teacher's f_E confidence
        pl = PseudoLabels(labels.video_ids, chosen.p, None, chosen, labels.truth, self.class_names, rule, epoch)
        folder = self.out / f"epoch_{epoch}"
        folder.mkdir(parents=True, exist_ok=True)
        write_pseudo_labels(folder / "pseudo.h5", pl, self.config, self.inputs)
        return pl.stats()


ModuleT = TypeVar("ModuleT", bound=nn.Module)


def teacher_copy(module: ModuleT) -> ModuleT:
    """A frozen copy of `module` in eval mode: the EMA teacher's start (it learns only by `ema_update`)."""
    teacher = copy.deepcopy(module).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


class FixMatchStep:
    """One FixMatch step with an EMA teacher: L_sup on the labeled clips, thresholded consistency on
    the unlabeled ones (weak view -> teacher label, strong view -> student), then the teacher follows."""

    def __init__(
        self,
        student: nn.Module,
        options: TeacherStudentTraining,
        labels: EpochPseudoLabels,
        files: PseudoLabelFiles,
    ) -> None:
        self.teacher = teacher_copy(student)
        self.options = options
        self.labels = labels
        self.files = files
        self.truth = torch.as_tensor(labels.truth)  # once: read by every step's logged accuracy

    # ------------------------------------------------------------------ the step

    def __call__(self, model: nn.Module, batch: dict[str, Any]) -> dict[str, Tensor]:
        batch = nested_to_device(batch, next(model.parameters()).device)
        labeled, unlabeled = batch["labeled"], batch["unlabeled"]
        with torch.no_grad():
            teacher_probs, coefficient = self.teacher_targets(unlabeled)
        pseudo_label = teacher_probs.argmax(1)
        with autocast(labeled["video"].device):
            supervised_logits = self.student_logits(model, labeled["video"], strong=False).float()
            strong_logits = self.student_logits(model, unlabeled["strong"], strong=True).float()
        supervised = F.cross_entropy(supervised_logits, labeled["label"])
        unsupervised = consistency_loss(strong_logits, pseudo_label, coefficient)
        self.labels.record(unlabeled["index"], teacher_probs, coefficient)
        return {
            "loss": supervised + self.options.unsupervised_weight * unsupervised,
            "supervised": supervised.detach(),
            "unsupervised": unsupervised.detach(),
            "mask": coefficient.mean().detach(),
            "pl_acc": self._batch_accuracy(pseudo_label, unlabeled, coefficient),
        }

    def teacher_targets(self, unlabeled: dict[str, Any]) -> tuple[Tensor, Tensor]:
        """(class probabilities (N, C), coefficient (N,)) of the teacher on the weak views."""
        with autocast(unlabeled["weak"].device):
            probs = self.teacher(unlabeled["weak"]).float().softmax(1)
        _, mask = confident_pseudo_labels(probs, self.options.threshold)
        return probs, mask

    def student_logits(self, model: nn.Module, clips: Tensor, strong: bool) -> Tensor:
        return model(clips)

    def _batch_accuracy(self, label: Tensor, unlabeled: dict[str, Any], weight: Tensor) -> Tensor:
        """Accuracy of the weighted pseudo-labels against the truth where known (a logged figure)."""
        truth = self.truth.to(label.device)[unlabeled["index"]]
        known = (weight > 0) & (truth >= 0)
        if not known.any():
            return torch.tensor(float("nan"))
        return (label[known] == truth[known]).float().mean()

    # ------------------------------------------------------------------ the engine's hooks

    def after_update(self, model: nn.Module) -> None:
        ema_update(self.teacher, model, self.options.ema_decay)

    def epoch_end(self, epoch: int) -> dict[str, float]:
        stats = self.files.write(epoch, self.labels)
        self.labels.reset()
        return {"pl_count": float(stats["accepted_count"]), "pl_accuracy": float(stats["accepted_accuracy"])}

    def state_dict(self) -> dict[str, Any]:
        return {"teacher": self.teacher.state_dict(), "labels": self.labels.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.teacher.load_state_dict(state["teacher"])
        self.labels.load_state_dict(state["labels"])


class SefarStep(FixMatchStep):
    """SeFAR: the student and the teacher see the dual-level elements of the K sampled frames (f_E's
    `frame_order` is the weak layout); the strong view reverses each fine-grained element (the context
    element keeps its order) on top of the strong spatial augmentation; the teacher predicts each clip
    R times (R weak views) and Adaptive Regulation turns their agreement into the clip's weight."""

    def __init__(
        self,
        student: nn.Module,
        options: TeacherStudentTraining,
        sefar: SefarOptions,
        layout: ElementLayout,
        labels: EpochPseudoLabels,
        files: PseudoLabelFiles,
    ) -> None:
        super().__init__(student, options, labels, files)
        self.sefar = sefar
        self.layout = layout
        self.epoch = 1  # the epoch being trained: the warm-up factor xi depends on it

    def teacher_targets(self, unlabeled: dict[str, Any]) -> tuple[Tensor, Tensor]:
        weak = unlabeled["weak"]  # (N, R, T, ...) or (N, T, ...) with one pass
        views = weak if self.sefar.teacher_passes > 1 else weak[:, None]
        n, r = views.shape[:2]
        with autocast(weak.device):
            probs = self.teacher(views.flatten(0, 1)).float().softmax(1)  # the teacher's frame_order: weak layout
        repeated = probs.reshape(n, r, -1).transpose(0, 1)  # (R, N, C)
        _, coefficient, mean_probs = adaptive_regulation(repeated)
        # Eq. 8's xi: supervised-only warm-up epochs (the student and the teacher learn the element
        # layout first), then the authors' sine ramp; it scales each clip's weight
        xi = unsupervised_ramp(self.epoch - 1, self.options.epochs, self.sefar.warmup_epochs)
        return mean_probs, coefficient * xi

    def epoch_end(self, epoch: int) -> dict[str, float]:
        self.epoch = epoch + 1
        return super().epoch_end(epoch)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "epoch": self.epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.epoch = int(state["epoch"])

    def student_logits(self, model: nn.Module, clips: Tensor, strong: bool) -> Tensor:
        if not strong:
            return model(clips)  # f_E's frame_order arranges the weak layout
        return model(clips[:, self.layout.strong.to(clips.device)], reorder=False)


class AclMtlHeads(nn.Module):
    """ACL+MTL's heads on f_E's trunk: the spatial head h (Eq. 6; TCLR's projection head, unit-length
    output, as Eq. 11's dot products want) on the pooled clip embedding, and one temporal head g_n per
    long scale (Eq. 16; Linear-GELU-Linear, ours: the paper gives no size) on a per-position average."""

    def __init__(self, feature_dim: int, position_channels: int, scales: int, options: AclMtlOptions) -> None:
        super().__init__()
        self.spatial = ProjectionHead(feature_dim, options.projection_dim)
        self.temporal = nn.ModuleList(
            nn.Sequential(nn.Linear(position_channels, 512), nn.GELU(), nn.Linear(512, options.temporal_dim))
            for _ in range(scales)
        )


class MultiScaleTargets(NamedTuple):
    """What the teacher gives one batch of unlabeled clips (all without gradient)."""

    probs: Tensor  # (N, C) mean class probabilities over the short and long clips
    label: Tensor  # (N,) Eq. 19's pseudo-label
    confidence: Tensor  # (N,) the max of `probs`
    positive: Tensor  # (N, projection_dim) f^p = h_t(teacher's weak short clip), unit length
    temporal: list[Tensor]  # per scale n, (N, temporal_dim): g_t_n of the calibrated long clip (Eq. 13-16)


class AclMtlStep(FixMatchStep):
    """ACL+MTL (Eq. 20): L = L_l + lambda_u gamma-weighted L_u + mu_1 L_MTL + mu_2 L_ACL over the
    teacher-student base (docs/PEERS_ACL_MTL.md, "One training step", with our choices).

    Each unlabeled clip comes as a short clip (weak and strong views) and N long clips that contain
    it (`ClipMode.MULTISCALE`). The teacher labels it from all N + 1 clips (Eq. 19) and gives f^p and
    the calibrated long-clip outputs; the student's strong short clip is the anchor of Eq. 11, the
    input of L_u and the query side of Eq. 17. The heads h and g_n are the step's own: trained by
    their own AdamW (f_E's learning rate and cosine schedule), followed by the teacher's copies, and
    kept with the prototypes, the feature bank and the centres in the step state, so E.pt stays a
    plain f_E checkpoint and a resumed run continues all of them."""

    def __init__(
        self,
        student: ActionEncoder,
        options: TeacherStudentTraining,
        acl: AclMtlOptions,
        training: Optimization,
        labels: EpochPseudoLabels,
        files: PseudoLabelFiles,
    ) -> None:
        super().__init__(student, options, labels, files)
        self.acl = acl
        device = next(student.parameters()).device
        scales = len(acl.long_multipliers)
        self.heads = AclMtlHeads(student.feature_dim, student.position_channels, scales, acl).to(device)
        self.teacher_heads = teacher_copy(self.heads)
        self.head_optimizer = torch.optim.AdamW(
            self.heads.parameters(), lr=training.lr, weight_decay=training.weight_decay
        )
        self.head_scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
            self.head_optimizer, T_max=max(training.epochs, 1)
        )
        self.prototypes = PrototypeMemory(labels.num_classes, acl.projection_dim, acl.prototype_momentum, device)
        self.bank = FeatureBank(min(acl.bank_size, len(labels.video_ids)), acl.projection_dim, device)
        self.centers = [TeacherCenter(acl.temporal_dim, acl.center_momentum, device) for _ in range(scales)]
        self._pending: MultiScaleTargets | None = None  # what after_update puts in the bank and the centres

    def __call__(self, model: nn.Module, batch: dict[str, Any]) -> dict[str, Tensor]:
        assert isinstance(model, ActionEncoder)
        acl = self.acl
        batch = nested_to_device(batch, next(model.parameters()).device)
        labeled, unlabeled = batch["labeled"], batch["unlabeled"]
        self.heads.train(model.training)
        with torch.no_grad():
            targets = self.multiscale_targets(unlabeled)
        with autocast(labeled["video"].device):
            labeled_features = model.pool_positions(model.position_features(labeled["video"]))
            strong_positions = model.position_features(unlabeled["strong"])
            strong_features = model.pool_positions(strong_positions)
            supervised_logits = model.fc(model.dropout(labeled_features)).float()
            strong_logits = model.fc(model.dropout(strong_features)).float()
            labeled_projection = self.heads.spatial(labeled_features).float()
            anchor = self.heads.spatial(strong_features).float()  # f^a, Eq. 6
            # Eq. 15: the student's short clip f^q* for g_s_n, its positions averaged
            student_temporal = [g(strong_positions.mean(1)).float() for g in self.heads.temporal]
        supervised = F.cross_entropy(supervised_logits, labeled["label"])  # Eq. 1
        self.prototypes.update(labeled_projection.detach(), labeled["label"])  # Eq. 4-5, Alg. 1 line 2
        bank_features, bank_labels = self.bank.features, self.bank.labels
        reliability = prototype_reliability(  # Eq. 7-10
            targets.positive,
            targets.label,
            bank_features,
            bank_labels,
            self.prototypes.prototypes,
            acl.reliability_threshold,
        )
        contrastive = adaptive_contrastive_loss(  # Eq. 11
            anchor,
            targets.positive,
            targets.label,
            reliability.anchor_reliable,
            bank_features,
            bank_labels,
            reliability.bank_reliable,
            acl.contrastive_temperature,
        )
        unsupervised = reliability_weighted_unlabeled_loss(  # Sec. 3.5
            strong_logits, targets.label, targets.confidence, reliability.anchor, acl.confidence_threshold
        )
        temporal = multi_scale_temporal_loss(  # Eq. 17-18
            student_temporal,
            targets.temporal,
            acl.student_temperature,
            acl.teacher_temperature,
            [c.center for c in self.centers],
        )
        weight = reliability.anchor * (targets.confidence > acl.confidence_threshold)
        self.labels.record(unlabeled["index"], targets.probs, weight)
        self._pending = targets
        return {
            "loss": supervised
            + self.options.unsupervised_weight * unsupervised
            + acl.mtl_weight * temporal
            + acl.acl_weight * contrastive,  # Eq. 20
            "supervised": supervised.detach(),
            "unsupervised": unsupervised.detach(),
            "contrastive": contrastive.detach(),
            "temporal": temporal.detach(),
            "mask": (weight > 0).float().mean(),
            "pl_acc": self._batch_accuracy(targets.label, unlabeled, weight),
        }

    def multiscale_targets(self, unlabeled: dict[str, Any]) -> MultiScaleTargets:
        """The teacher on the weak short clip and the N long clips (`unlabeled["long"]`, (N, L, T, ...)).
        The query f^q of Eq. 13 is the teacher's short clip (ours: the paper takes it from the student;
        no gradient flows through it either way, and the teacher's costs no extra forward)."""
        teacher, heads = self.teacher, self.teacher_heads
        assert isinstance(teacher, ActionEncoder)
        with autocast(unlabeled["weak"].device):
            short_positions = teacher.position_features(unlabeled["weak"])
            short_features = teacher.pool_positions(short_positions)
            probs = [teacher.fc(short_features).float().softmax(1)]
            positive = heads.spatial(short_features).float()
            temporal = []
            for n, head in enumerate(heads.temporal):
                long_positions = teacher.position_features(unlabeled["long"][:, n])
                probs.append(teacher.fc(teacher.pool_positions(long_positions)).float().softmax(1))
                calibrated = cross_scale_calibration(short_positions.float(), long_positions.float())
                temporal.append(head(calibrated.pooled).float())
        label, confidence = multi_clip_pseudo_labels(probs)
        return MultiScaleTargets(torch.stack(probs).mean(0), label, confidence, positive, temporal)

    # ------------------------------------------------------------------ the engine's hooks

    def after_update(self, model: nn.Module) -> None:
        self.head_optimizer.step()
        self.head_optimizer.zero_grad(set_to_none=True)
        super().after_update(model)
        ema_update(self.teacher_heads, self.heads, self.options.ema_decay)
        if self._pending is not None:  # after the loss (choice 6): no clip is its own positive or negative
            self.bank.push(self._pending.positive, self._pending.label)
            for center, outputs in zip(self.centers, self._pending.temporal, strict=True):
                center.update(outputs)
            self._pending = None

    def epoch_end(self, epoch: int) -> dict[str, float]:
        self.head_scheduler.step()
        return super().epoch_end(epoch)

    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "heads": self.heads.state_dict(),
            "teacher_heads": self.teacher_heads.state_dict(),
            "head_optimizer": self.head_optimizer.state_dict(),
            "head_scheduler": self.head_scheduler.state_dict(),
            "prototypes": self.prototypes.state_dict(),
            "bank": self.bank.state_dict(),
            "centers": [c.state_dict() for c in self.centers],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.heads.load_state_dict(state["heads"])
        self.teacher_heads.load_state_dict(state["teacher_heads"])
        self.head_optimizer.load_state_dict(state["head_optimizer"])
        self.head_scheduler.load_state_dict(state["head_scheduler"])
        self.prototypes.load_state_dict(state["prototypes"])
        self.bank.load_state_dict(state["bank"])
        for center, saved in zip(self.centers, state["centers"], strict=True):
            center.load_state_dict(saved)
