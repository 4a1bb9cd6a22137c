"""Training f_E and f_A on labeled clips (true labels, or true plus pseudo-labels): what fit-labeled
and every self-training round do. Each encoder trains into its own checkpoint through the engine.

* f_E: cross-entropy (Eq. 6) on shuffled batches.
* f_A: L_AV = L_AT + omega L_Score (Eq. 5) on class-balanced batches of P classes x K clips.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from fgar_cli.checkpoints import CheckpointRecord
from fgar_cli.config import ActionTraining, AlignabilityLoss, AlignabilityTraining
from fgar_cli.data.batches import ClassBalancedBatches, EpochBatches, Stream
from fgar_cli.data.dataset import ClipDataset
from fgar_cli.engine import fit, fit_once
from fgar_cli.models import ActionEncoder, AlignabilityEncoder
from fgar_cli.objectives import AlignabilityStep, cross_entropy_step

History = list[dict[str, float]]


@dataclass(frozen=True)
class EncoderTrainer:
    """Trains an encoder into `final` (resuming from the `_last` file beside it with `resume`), or, when a
    resumed run finds `final` finished, loads it. `seed` fixes every draw of the training."""

    device: torch.device
    seed: int
    resume: bool
    num_workers: int = 0

    def action(
        self,
        model: ActionEncoder,
        dataset: ClipDataset,
        training: ActionTraining,
        final: Path,
        record: CheckpointRecord,
        description: str,
    ) -> History:
        batches = EpochBatches(dataset, self.seed, Stream.ACTION, training.batch_size, num_workers=self.num_workers)
        return fit_once(
            final,
            model,
            self.resume,
            lambda last: fit(
                model, cross_entropy_step, batches, training, record, last, self.resume, self.device, description
            ),
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
            lambda last: fit(model, step, batches, training, record, last, self.resume, self.device, description),
        )
