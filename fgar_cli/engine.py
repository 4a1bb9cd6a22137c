"""The training engine every stage uses: one epoch (`train_one_epoch`), and `fit`, which runs the
epochs, writes a resumable checkpoint after each, resumes from it, and stops on a non-finite loss.
With a `Validation` it scores the model after each epoch and keeps the best epoch's weights; with a
`RunLog` each epoch goes into the run folder's log.txt, metrics.csv and TensorBoard scalars.
`fit_once` turns the resumable X_last.pt into the finished X.pt and then removes X_last.pt.

Shaped after torchvision's references/video_classification/train.py: a plain checkpoint dict, and
resume in a few lines. What a step computes lives in `fgar_cli.objectives`; which batches an epoch
sees, in `fgar_cli.data.batches.EpochBatches`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

from fgar_cli import distributed
from fgar_cli.checkpoints import CheckpointRecord, load_checkpoint, model_fields, save_checkpoint
from fgar_cli.config import Optimization
from fgar_cli.data.batches import EpochBatches
from fgar_cli.errors import FgarError
from fgar_cli.interrupts import Interrupted
from fgar_cli.objectives import StatefulStep, Step
from fgar_cli.progress import console, progress_bar
from fgar_cli.runlog import RunLog
from fgar_cli.runtime import to_device, training_precision

RESUME_ONLY = ("optimizer", "scheduler", "step_state")  # in X_last.pt, not in the finished X.pt
History = list[dict[str, float]]


@dataclass(frozen=True)
class Validation:
    """Score the model after each epoch (`score`: higher is better, the model comes in train mode and
    may be left in any mode), and keep the best epoch's weights in `best_path` (a finished checkpoint)."""

    score: Callable[[nn.Module], float]
    best_path: Path
    name: str = "val_top1"


def best_epoch(history: History, name: str) -> tuple[int, float] | None:
    """The (epoch, score) of the best-scored epoch in `history` (the earliest of equal scores)."""
    scored = [(int(h["epoch"]), float(h[name])) for h in history if name in h]
    return max(scored, key=lambda es: (es[1], -es[0])) if scored else None


def last_path_of(final_path: Path) -> Path:
    """X_last.pt beside X.pt: the resumable checkpoint of the training that makes X.pt."""
    return final_path.with_name(f"{final_path.stem}_last{final_path.suffix}")


class NonFiniteLoss(Exception):
    def __init__(self, value: float) -> None:
        super().__init__(f"the loss became {value}")
        self.value = value


class Meter:
    """Running means of named values, and clips per second."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.count = 0
        self.clips = 0
        self.start = time.perf_counter()

    def update(self, clips: int, values: dict[str, float]) -> None:
        self.count += 1
        self.clips += clips
        for k, v in values.items():
            self.sums[k] = self.sums.get(k, 0.0) + v

    def means(self) -> dict[str, float]:
        out = {k: v / max(self.count, 1) for k, v in self.sums.items()}
        out["clips_per_s"] = self.clips / max(time.perf_counter() - self.start, 1e-9)
        out["steps"] = float(self.count)  # optimisation steps (under torchrun: this rank's, every rank's alike)
        return out

    def info(self) -> str:
        return "  ".join(f"{k} {v:.3g}" for k, v in self.means().items())


def train_one_epoch(
    model: nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    step: Step,
    device: torch.device,
    description: str,
) -> dict[str, float]:
    """One pass over `loader`: step, backward, optimizer step. Returns the means of the step's terms."""
    model.train()
    stateful = isinstance(step, StatefulStep)  # a protocol check: once, not per batch
    meter = Meter()
    with progress_bar() as progress:
        task = progress.add_task(description, total=len(loader), info="")
        for batch in loader:
            progress.advance(task)
            # every video of the batch was unreadable (under torchrun: on some rank; all skip the step)
            if distributed.any_rank(batch is None, device):
                continue
            batch = to_device(batch, device)
            terms = step(model, batch)
            loss = terms["loss"]
            if distributed.any_rank(not bool(torch.isfinite(loss).all()), device):
                raise NonFiniteLoss(loss.item())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            distributed.average_gradients(model)  # under torchrun: what DDP synchronises
            optimizer.step()
            distributed.broadcast_module(model, buffers_only=True)
            if stateful:
                step.after_update(model)  # e.g. the EMA teacher follows the student
            meter.update(len(batch["index"]), {k: v.item() for k, v in terms.items()})
            progress.update(task, info=meter.info())
    return meter.means()


def fit(
    model: nn.Module,
    step: Step,
    batches: EpochBatches,
    optim: Optimization,
    record: CheckpointRecord,
    last_path: Path,
    resume: bool,
    device: torch.device,
    description: str,
    validation: Validation | None = None,
    log: RunLog | None = None,
) -> History:
    """Train `model` for `optim.epochs` epochs (AdamW, cosine schedule), saving `last_path` after each.

    `last_path` holds `record`, the model, and the optimizer and scheduler states. With `resume`,
    training continues after the epoch stored there. With `validation` each epoch is scored and the
    best one written to `validation.best_path`; with `log` each epoch and checkpoint is recorded in
    the run folder. Returns the per-epoch metrics (all epochs).
    """
    # fused: one kernel for all parameters; on the CPU the step took 0.4 ms instead of 1.3 for small3d
    optimizer = torch.optim.AdamW(model.parameters(), lr=optim.lr, weight_decay=optim.weight_decay, fused=True)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(optim.epochs, 1))

    def finished_payload(epoch: int, history: History) -> dict[str, object]:
        return {**record.fields(), **model_fields(model), "epoch": epoch, "history": history}

    def save(epoch: int, history: History) -> None:
        state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}
        if isinstance(step, StatefulStep):
            state["step_state"] = step.state_dict()
        save_checkpoint(last_path, {**finished_payload(epoch, history), **state})

    place = distributed.world()
    if place.distributed:  # every rank starts from rank 0's weights, as DDP does
        distributed.broadcast_module(model)
        console.print(
            f"{description}: {place.size} processes, batch size {per_process_batch(batches)} per process "
            f"(the configured one; {place.size} x it in all), gradients averaged over them",
            markup=False,
        )
    start, history = 1, []
    if resume and last_path.exists():
        ckpt = load_checkpoint(last_path, kind=model.kind)
        model.load_state_dict(ckpt["state_dict"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        if isinstance(step, StatefulStep):
            if "step_state" not in ckpt:
                raise FgarError(f"{last_path}: no step state to resume (a teacher, a feature bank) in it")
            step.load_state_dict(ckpt["step_state"])
        start, history = int(ckpt["epoch"]) + 1, list(ckpt.get("history", []))
        console.print(f"resuming {model.kind} from {last_path} after epoch {start - 1}")
    name = last_path.stem.removesuffix("_last")
    track = log.training(name, description, optim.epochs, start) if log is not None else None
    best = best_epoch(history, validation.name) if validation is not None else None
    saved = start - 1  # the epoch that `last_path` holds
    try:
        for epoch in range(start, optim.epochs + 1):
            try:
                began = time.perf_counter()
                lr = float(optimizer.param_groups[0]["lr"])  # this epoch's, before the scheduler steps
                loader = batches.for_epoch(epoch)
                what = f"{description} {epoch}/{optim.epochs}"
                with training_precision(optim.precision):
                    metrics = train_one_epoch(model, loader, optimizer, step, device, what)
                scheduler.step()
                if isinstance(step, StatefulStep):
                    metrics |= step.epoch_end(epoch)
                if validation is not None:
                    # no draw of the validation may move a generator that the next epoch's draws start from
                    with torch.random.fork_rng(devices=[]):
                        metrics[validation.name] = score = float(validation.score(model))
                history.append({"epoch": epoch, **metrics, "lr": lr})
                improved = validation is not None and (best is None or score > best[1])
                if improved:
                    # before X_last.pt: a run killed in between redoes this epoch and writes it again
                    save_checkpoint(validation.best_path, finished_payload(epoch, history))
                    best = (epoch, score)
                if track is not None:  # the row goes in before the checkpoint; a resume drops it if need be
                    track.epoch(epoch, metrics, lr, time.perf_counter() - began)
                if improved and log is not None:
                    log.wrote(validation.best_path, f"epoch {epoch}, {validation.name} {score:.4g}")
                save(epoch, history)
                saved = epoch
                if log is not None:
                    log.wrote(last_path, f"epoch {epoch}")
            except (Interrupted, KeyboardInterrupt):
                kept = f"{last_path} keeps epoch {saved}" if saved > 0 else "no epoch of it was finished"
                raise Interrupted(
                    f"interrupted in epoch {epoch} of {description}; {kept}: rerun with --resume"
                ) from None
            except NonFiniteLoss as exc:
                kept = f"; the last good checkpoint is {last_path}" if last_path.exists() else ""
                raise FgarError(
                    f"{description} {epoch}/{optim.epochs}: {exc} (lower the learning rate?){kept}"
                ) from None
    finally:
        if track is not None:
            track.close()
    if not last_path.exists():  # zero epochs asked for: the untrained model is the result
        save(0, history)
    return history


def per_process_batch(batches: object) -> str:
    """The clips of one step of one process, as the configuration gives them."""
    sampler = getattr(batches, "sampler", None)
    if sampler is not None:  # P x K class-balanced
        return f"{sampler.P} x {sampler.K} = {sampler.P * sampler.K}"
    labeled = getattr(batches, "labeled", None)  # a peer method's paired batches
    if labeled is not None:
        return f"{labeled.batch_size} labeled + {batches.unlabeled.batch_size} unlabeled"  # type: ignore[attr-defined]
    return str(getattr(batches, "batch_size", "?"))


def fit_once(
    final_path: Path,
    model: nn.Module,
    resume: bool,
    train: Callable[[Path], History],
    log: RunLog | None = None,
) -> History:
    """Make `final_path` by training, unless a resumed run finds it finished: then load it into `model`.

    `train(last_path)` runs `fit` with `last_path` (`final_path` with `_last` before the suffix) and
    returns its history; `final_path` is then written from it atomically, without the optimizer and
    scheduler states that only `--resume` needs (they are twice the model's size for AdamW), and
    `last_path` is removed: a finished training leaves X.pt alone. Returns the history of every
    epoch (read from `final_path` when it was finished already).
    """
    last_path = last_path_of(final_path)
    if resume and final_path.exists():
        ckpt = load_checkpoint(final_path, kind=model.kind)
        model.load_state_dict(ckpt["state_dict"])
        console.print(f"{final_path} is complete; not training it again")
        if log is not None:
            log.line(f"{final_path.name} is complete; not training it again")
        remove_last(last_path)  # a run killed between writing X.pt and removing X_last.pt
        return list(ckpt.get("history", []))
    history = train(last_path)
    final = load_checkpoint(last_path, kind=model.kind)
    save_checkpoint(final_path, {k: v for k, v in final.items() if k not in RESUME_ONLY})
    if log is not None:
        log.wrote(final_path, f"finished, epoch {final.get('epoch')}")
    remove_last(last_path)
    return history


def remove_last(last_path: Path) -> None:
    """Remove X_last.pt once X.pt is complete; one that cannot be removed is only a warning (X.pt wins)."""
    try:
        last_path.unlink(missing_ok=True)
    except OSError as exc:
        console.print(f"warning: {last_path}: cannot remove it ({exc.strerror}); the finished checkpoint is beside it")
