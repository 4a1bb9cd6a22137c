"""What every stage shares: the run's data, loaders, devices, progress bars, and epoch checkpoints.

Kept flat on purpose (torchvision's references/video_classification/train.py is the model): a
stage builds its data with `load_stage_data`, its model, then loops `run_epochs`, which saves a
checkpoint after every epoch and picks up from the last one with `--resume`.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from torch.utils.data import DataLoader, Sampler

from fgar_cli.artifacts import load_checkpoint, save_checkpoint
from fgar_cli.data.dataset import ClipDataset, collate_skip_none
from fgar_cli.data.index import DatasetIndex, VideoEntry, load_index
from fgar_cli.data.splits import Split, check_split, load_split
from fgar_cli.errors import FgarError
from fgar_cli.models import model_checkpoint_fields

console = Console(stderr=True)


# --------------------------------------------------------------------------- data


@dataclass
class StageData:
    """The index, the split and the class set of a run.

    The model's classes are the split's known classes (open world) or all of the index's classes.
    `label_of` maps a video id to its model class, or -1 for a clip of a class the model does not
    know (a novel clip in the open-world protocol).
    """

    index: DatasetIndex
    split: Split
    index_path: str
    split_path: str
    class_names: list[str]
    label_of: dict[str, int]

    def entries(self, ids: list[str]) -> list[VideoEntry]:
        by_id = self.index.by_id()
        return [by_id[i] for i in ids]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def load_stage_data(index_path: str | None, split_path: str | None) -> StageData:
    if not index_path:
        raise FgarError("no dataset index given: pass --index (made by `fgar data index`)")
    if not split_path:
        raise FgarError("no label split given: pass --split (made by `fgar data split`)")
    index = load_index(index_path)
    split = load_split(split_path)
    check_split(split, index, split_path)
    class_ids = sorted(split.known_classes) if split.known_classes is not None else list(range(len(index.class_names)))
    model_class = {c: k for k, c in enumerate(class_ids)}
    label_of = {e.id: model_class.get(e.label, -1) for e in index.entries}
    return StageData(
        index=index,
        split=split,
        index_path=str(Path(index_path).resolve()),
        split_path=str(Path(split_path).resolve()),
        class_names=[index.class_names[c] for c in class_ids],
        label_of=label_of,
    )


def data_paths_from_checkpoint(ckpt: dict[str, Any], index: str | None, split: str | None) -> tuple[str, str]:
    """Index and split paths: the ones given, else the ones stored in the checkpoint's config."""
    cfg = ckpt.get("config", {})
    return index or cfg.get("index") or "", split or cfg.get("split") or ""


def clip_dataset(
    data: StageData,
    ids: list[str],
    clip: dict[str, Any],
    mode: str,
    labels: dict[str, int] | None = None,
    num_views: int = 1,
    seed: int = 0,
) -> ClipDataset:
    """A ClipDataset over `ids`, labelled with model classes unless `labels` overrides them."""
    return ClipDataset(
        data.index,
        data.entries(ids),
        num_frames=int(clip["num_frames"]),
        size=int(clip["size"]),
        mode=mode,
        num_views=num_views,
        labels=labels if labels is not None else {i: data.label_of[i] for i in ids},
        seed=seed,
        flip=bool(clip.get("hflip", True)),
    )


def make_loader(
    dataset: ClipDataset,
    batch_size: int,
    shuffle: bool,
    seed: int,
    num_workers: int = 0,
    batch_sampler: Sampler | None = None,
    drop_last: bool = False,
) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    if batch_sampler is not None:
        return DataLoader(dataset, batch_sampler=batch_sampler, num_workers=num_workers, collate_fn=collate_skip_none)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        generator=generator,
        num_workers=num_workers,
        collate_fn=collate_skip_none,
        drop_last=drop_last,
    )


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
        return self.num_batches

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        classes = list(self.by_class)
        for _ in range(self.num_batches):
            batch: list[int] = []
            for c in rng.choice(classes, size=self.P, replace=False):
                members = self.by_class[int(c)]
                batch.extend(rng.choice(members, size=self.K, replace=len(members) < self.K).tolist())
            yield batch


# --------------------------------------------------------------------------- devices and seeds


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise FgarError(f"--device: unknown device '{name}' (use auto, cpu, cuda or cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise FgarError(f"--device {name}: CUDA is not available on this machine")
    return device


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 mixed precision on CUDA (no loss scaling needed); full precision on the CPU."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def seed_everything(seed: int) -> None:
    """Seeds, and deterministic kernels: without them oneDNN's backward passes differ from run to run
    on the CPU, and an interrupted run resumed with --resume would not reach the same weights."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_seed(seed: int, *parts: int) -> int:
    """A seed for one epoch of one round: a resumed run replays exactly what it would have done."""
    return int(np.random.SeedSequence([seed, *parts]).generate_state(1)[0])


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


# --------------------------------------------------------------------------- progress


def progress_bar() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
        disable=os.environ.get("FGAR_NO_PROGRESS") == "1",
    )


class Meter:
    """Running mean of named values and clips per second."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.count = 0
        self.clips = 0
        self.start = time.perf_counter()

    def update(self, clips: int, **values: float) -> None:
        self.count += 1
        self.clips += clips
        for k, v in values.items():
            self.sums[k] = self.sums.get(k, 0.0) + float(v)

    def means(self) -> dict[str, float]:
        out = {k: v / max(self.count, 1) for k, v in self.sums.items()}
        out["clips_per_s"] = self.clips / max(time.perf_counter() - self.start, 1e-9)
        return out

    def info(self) -> str:
        return "  ".join(f"{k} {v:.3g}" for k, v in self.means().items())


def check_finite(loss: torch.Tensor, what: str, last_good: Path | None) -> None:
    """A NaN or inf loss stops training; the last good checkpoint stays as it was."""
    if os.environ.get("FGAR_FAULT_NAN") == what:  # fault injection for the tests
        loss = loss * float("nan")
    if not torch.isfinite(loss).all():
        where = f"; the last good checkpoint is {last_good}" if last_good and last_good.exists() else ""
        raise FgarError(f"{what}: the loss became {loss.item()} (lower the learning rate?){where}")


_epochs_this_process = 0


def maybe_simulate_interrupt(last_path: Path) -> None:
    """Fault injection for the resume tests: stop as Ctrl-C would after N epochs of this process."""
    global _epochs_this_process
    _epochs_this_process += 1
    limit = os.environ.get("FGAR_INTERRUPT_AFTER_EPOCHS")
    if limit is not None and _epochs_this_process >= int(limit):
        raise FgarError(f"interrupted (FGAR_INTERRUPT_AFTER_EPOCHS={limit}); {last_path} is saved: rerun with --resume")


# --------------------------------------------------------------------------- epochs and checkpoints


def run_epochs(
    epochs: int,
    last_path: Path,
    resume: bool,
    train_epoch: Callable[[int], dict[str, float]],
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    payload: dict[str, Any],
    kind: str,
) -> list[dict[str, float]]:
    """Run epochs 1..`epochs`, saving `last_path` (a resumable checkpoint) after each one.

    The checkpoint holds `payload` (class names, config, ...), the model's architecture and weights,
    and the optimizer and scheduler states. With `resume`, training continues after the epoch stored
    in `last_path`.
    """
    def state() -> dict[str, Any]:
        return {
            **payload,
            **model_checkpoint_fields(model),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "kind": kind,
        }

    start = 1
    history: list[dict[str, float]] = []
    if resume and last_path.exists():
        ckpt = load_checkpoint(last_path, kind=kind)
        model.load_state_dict(ckpt["state_dict"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        start = int(ckpt["epoch"]) + 1
        history = list(ckpt.get("history", []))
        console.print(f"resuming {kind} from {last_path} after epoch {start - 1}")
    for epoch in range(start, epochs + 1):
        try:
            metrics = train_epoch(epoch)
        except KeyboardInterrupt:
            raise FgarError(
                f"interrupted in epoch {epoch}; {last_path} keeps epoch {epoch - 1}: rerun with --resume"
            ) from None
        history.append({"epoch": epoch, **metrics})
        save_checkpoint(last_path, {**state(), "epoch": epoch, "history": history})
        maybe_simulate_interrupt(last_path)
    if not last_path.exists():  # zero epochs asked for: the untrained model is the result
        save_checkpoint(last_path, {**state(), "epoch": 0, "history": history})
    return history
