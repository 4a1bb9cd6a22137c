"""Batches: loaders for inference, the batches of one training epoch, and P x K class-balanced batches."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from enum import IntEnum

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from fgar_cli.data.dataset import ClipDataset, collate_skip_none
from fgar_cli.distributed import shard_indices, world
from fgar_cli.errors import FgarError
from fgar_cli.runtime import epoch_seed


def inference_loader(dataset: ClipDataset, batch_size: int) -> DataLoader:
    """The clips of `dataset` in order, `batch_size` at a time (skipped videos dropped from each batch)."""
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate_skip_none)


class ClassBalancedBatches(Sampler[list[int]]):
    """P classes x K clips per batch, so every anchor has a positive (L_AT needs one).

    Classes with fewer than K clips are sampled with replacement. One epoch yields enough batches
    to visit about every clip once. Deterministic given (seed, epoch).
    """

    def __init__(self, labels: list[int], classes_per_batch: int, clips_per_class: int, seed: int) -> None:
        self.by_class: dict[int, list[int]] = {}
        for i, y in enumerate(labels):
            if y >= 0:
                self.by_class.setdefault(y, []).append(i)
        if len(self.by_class) < 2:
            raise FgarError("alignability training needs labeled clips of at least 2 classes")
        self.P = min(classes_per_batch, len(self.by_class))
        self.K = clips_per_class
        self.seed = seed
        self.epoch = 0
        self.num_batches = max(1, math.ceil(sum(len(v) for v in self.by_class.values()) / (self.P * self.K)))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return max(1, math.ceil(self.num_batches / world().size))

    def __iter__(self) -> Iterator[list[int]]:
        place = world()
        # under torchrun each rank draws its own batches, and together they make about one epoch
        rng = np.random.default_rng(
            [self.seed, self.epoch, place.rank] if place.distributed else [self.seed, self.epoch]
        )
        classes = list(self.by_class)
        for _ in range(len(self)):
            batch: list[int] = []
            for c in rng.choice(classes, size=self.P, replace=False):
                members = self.by_class[int(c)]
                batch.extend(rng.choice(members, size=self.K, replace=len(members) < self.K).tolist())
            yield batch


@dataclass
class EpochBatches:
    """The training batches of each epoch, drawn so that epoch e is the same in any run that reaches it.

    `for_epoch(e)` sets every source of randomness of epoch e from (seed, stream, e): the clips'
    frames and augmentation (the dataset), the order of the batches (the loader's generator, or the
    class-balanced `sampler`), and torch's global generator, which the model's dropout draws from.
    `stream` keeps the draws of different trainings in one run apart (see `Stream`).
    """

    dataset: ClipDataset
    seed: int
    stream: Stream
    batch_size: int = 1
    sampler: ClassBalancedBatches | None = None
    num_workers: int = 0
    drop_last: bool = False

    def for_epoch(self, epoch: int) -> DataLoader:
        place = world()
        # under torchrun each rank's dropout draws its own masks (its own seed from the run's)
        torch.manual_seed(epoch_seed(self.seed, self.stream, epoch, *([place.rank] if place.distributed else [])))
        self.dataset.set_epoch(epoch)
        if self.sampler is not None:
            self.sampler.set_epoch(epoch)
            return DataLoader(
                self.dataset, batch_sampler=self.sampler, num_workers=self.num_workers, collate_fn=collate_skip_none
            )
        if place.distributed:
            # one shuffle for all ranks (the same generator everywhere), then each rank's share of it
            order = torch.randperm(
                len(self.dataset),
                generator=torch.Generator().manual_seed(epoch_seed(self.seed, self.stream + 1, epoch)),
            ).tolist()
            return DataLoader(
                self.dataset,
                batch_size=self.batch_size,
                sampler=shard_indices(order, place),
                num_workers=self.num_workers,
                collate_fn=collate_skip_none,
                drop_last=self.drop_last,
            )
        return DataLoader(
            self.dataset,
            batch_size=self.batch_size,
            shuffle=True,
            generator=torch.Generator().manual_seed(epoch_seed(self.seed, self.stream + 1, epoch)),
            num_workers=self.num_workers,
            collate_fn=collate_skip_none,
            drop_last=self.drop_last,
        )

    def __len__(self) -> int:
        return len(self.dataset)


class Stream(IntEnum):
    """Seed streams of `EpochBatches` (each uses its number and the next): one per kind of training."""

    GITDL = 1
    ACTION = 3
    ALIGNABILITY = 5
    TCLR = 7
    TEACHER_STUDENT = 9  # the unlabeled clips of a peer method's steps
