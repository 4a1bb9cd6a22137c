"""Training f_E and f_A on labeled clips (true labels, or true plus pseudo-labels): what fit-labeled
and every self-training round do. Each encoder trains into its own checkpoint through the engine.

* f_E: cross-entropy (Eq. 6) on shuffled batches.
* f_A: L_AV = L_AT + omega L_Score (Eq. 5) on class-balanced batches of P classes x K clips.

With held-out labeled clips (`hold_out`), f_E is scored on them after each epoch (top-1, eval mode)
and its best epoch is kept beside its checkpoint (E_best.pt).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fgar_cli.checkpoints import CheckpointRecord
from fgar_cli.config import ActionTraining, AlignabilityLoss, AlignabilityTraining, ValidationConfig
from fgar_cli.data.batches import ClassBalancedBatches, EpochBatches, Stream, inference_loader
from fgar_cli.data.dataset import ClipDataset
from fgar_cli.engine import History, Validation, fit, fit_once
from fgar_cli.inference import predict_clips
from fgar_cli.models import ActionEncoder, AlignabilityEncoder
from fgar_cli.objectives import AlignabilityStep, cross_entropy_step
from fgar_cli.runlog import RunLog

HOLD_OUT_STREAM = 11  # the seed stream of the held-out draw, apart from every training's (data.batches.Stream)


def hold_out(labels: dict[str, int], validation: ValidationConfig, seed: int) -> tuple[list[str], list[str]]:
    """(training clips, held-out clips) of the labeled clips `labels`, in their given order.

    Only when every class has at least `min_per_class` clips (and `fraction` > 0): then
    round(fraction x n), at least 1 and at most n - 1, clips of each class of n are held out, drawn
    from (seed, class), so a run and its resume hold out the same clips. Otherwise nothing is.
    """
    by_class: dict[int, list[str]] = {}
    for clip, label in labels.items():
        by_class.setdefault(label, []).append(clip)
    if validation.fraction == 0 or min(len(v) for v in by_class.values()) < validation.min_per_class:
        return list(labels), []
    held: set[str] = set()
    for label, clips in sorted(by_class.items()):
        n = min(max(1, round(validation.fraction * len(clips))), len(clips) - 1)
        rng = np.random.default_rng([seed, HOLD_OUT_STREAM, label])
        held.update(clips[i] for i in rng.choice(len(clips), size=n, replace=False))
    return [c for c in labels if c not in held], [c for c in labels if c in held]


@dataclass(frozen=True)
class HeldOutTop1:
    """f_E's top-1 accuracy on held-out clips (one centre clip each, eval mode, no gradients)."""

    dataset: ClipDataset
    device: torch.device
    batch_size: int

    def __call__(self, model: nn.Module) -> float:
        loader = inference_loader(self.dataset, self.batch_size)
        probs, valid = predict_clips(model, loader, self.device, "validate f_E")
        labels = torch.tensor([self.dataset.label(i) for i in range(len(self.dataset))])
        hits = probs[:, 0].argmax(-1) == labels
        return float(hits[valid].float().mean())


@dataclass(frozen=True)
class EncoderTrainer:
    """Trains an encoder into `final` (resuming from the `_last` file beside it with `resume`), or, when a
    resumed run finds `final` finished, loads it. `seed` fixes every draw of the training."""

    device: torch.device
    seed: int
    resume: bool
    num_workers: int = 0
    log: RunLog | None = None  # the run folder's log.txt, metrics.csv and TensorBoard scalars

    def action(
        self,
        model: ActionEncoder,
        dataset: ClipDataset,
        training: ActionTraining,
        final: Path,
        record: CheckpointRecord,
        description: str,
        held_out: ClipDataset | None = None,
    ) -> History:
        """`held_out`: labeled clips f_E never trains on; scored after each epoch, best kept in X_best.pt."""
        batches = EpochBatches(dataset, self.seed, Stream.ACTION, training.batch_size, num_workers=self.num_workers)
        validation = None
        if held_out is not None and len(held_out):
            best = final.with_name(f"{final.stem}_best{final.suffix}")
            validation = Validation(HeldOutTop1(held_out, self.device, training.batch_size), best)
        return fit_once(
            final,
            model,
            self.resume,
            lambda last: fit(
                model,
                cross_entropy_step,
                batches,
                training,
                record,
                last,
                self.resume,
                self.device,
                description,
                validation=validation,
                log=self.log,
            ),
            log=self.log,
        )

    def alignability(
        self,
        model: AlignabilityEncoder,
        dataset: ClipDataset,
        training: AlignabilityTraining,
        loss: AlignabilityLoss,
        final: Path,
        record: CheckpointRecord,
        description: str,
    ) -> History:
        labels = [dataset.label(i) for i in range(len(dataset))]
        sampler = ClassBalancedBatches(labels, training.classes_per_batch, training.clips_per_class, self.seed)
        batches = EpochBatches(dataset, self.seed, Stream.ALIGNABILITY, sampler=sampler, num_workers=self.num_workers)
        step = AlignabilityStep(loss)
        return fit_once(
            final,
            model,
            self.resume,
            lambda last: fit(
                model, step, batches, training, record, last, self.resume, self.device, description, log=self.log
            ),
            log=self.log,
        )
