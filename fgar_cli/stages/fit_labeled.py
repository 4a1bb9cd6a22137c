"""Stage 2, `fgar fit-labeled`: train f_E and f_A on the labeled set D_l.

Algorithm 1, lines 11-17: f_E with cross-entropy (Eq. 6), then f_A with the alignability-
verification loss L_AV = L_AT + omega * L_Score (Eq. 5) on class-balanced P x K batches, starting
from the GITDL-pretrained f_A when `--init-a` is given. The two encoders do not interact while they
train, so training one after the other is the same as interleaving their epochs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from fgar_cli.artifacts import atomic_copy, load_checkpoint
from fgar_cli.config import FitLabeledConfig
from fgar_cli.errors import FgarError
from fgar_cli.models import (
    build_action_encoder,
    build_alignability_encoder,
    build_model_from_checkpoint,
)
from fgar_cli.stages.common import (
    ClassBalancedBatches,
    StageData,
    clip_dataset,
    console,
    epoch_seed,
    load_stage_data,
    make_loader,
    resolve_device,
    run_epochs,
    seed_everything,
)
from fgar_cli.stages.pretrain import alignability_arch_args
from fgar_cli.training import train_action_epoch, train_alignability_epoch


def stored_config(cfg: Any, data: StageData) -> dict[str, Any]:
    """The resolved config with absolute data paths, so later stages find the data from anywhere."""
    return {**cfg.model_dump(), "index": data.index_path, "split": data.split_path}


def fit_action_encoder(
    model: nn.Module,
    data: StageData,
    ids: list[str],
    labels: dict[str, int],
    clip: dict[str, Any],
    epochs: int,
    lr: float,
    weight_decay: float,
    batch_size: int,
    seed: int,
    device: torch.device,
    last_path: Path,
    resume: bool,
    payload: dict[str, Any],
    what: str,
) -> list[dict[str, float]]:
    """Cross-entropy training of f_E on `ids` with `labels` (Eq. 6); a checkpoint every epoch."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(epochs, 1))
    dataset = clip_dataset(data, ids, clip, mode="train", labels=labels, seed=seed)

    def train_epoch(epoch: int) -> dict[str, float]:
        torch.manual_seed(epoch_seed(seed, 3, epoch))
        dataset.set_epoch(epoch)
        loader = make_loader(dataset, batch_size, True, epoch_seed(seed, 4, epoch), int(clip.get("num_workers", 0)))
        metrics = train_action_epoch(model, loader, optimizer, device, f"{what} {epoch}/{epochs}", last_path)
        scheduler.step()
        return metrics

    return run_epochs(epochs, last_path, resume, train_epoch, model, optimizer, scheduler, payload, kind="action")


def fit_alignability_encoder(
    model: nn.Module,
    data: StageData,
    ids: list[str],
    labels: dict[str, int],
    clip: dict[str, Any],
    loss: dict[str, Any],
    epochs: int,
    lr: float,
    weight_decay: float,
    seed: int,
    device: torch.device,
    last_path: Path,
    resume: bool,
    payload: dict[str, Any],
    what: str,
) -> list[dict[str, float]]:
    """L_AV training of f_A (Eq. 5) on P x K class-balanced batches; a checkpoint every epoch."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(epochs, 1))
    dataset = clip_dataset(data, ids, clip, mode="train", labels=labels, seed=seed)
    sampler = ClassBalancedBatches([labels[i] for i in ids], loss["classes_per_batch"], loss["clips_per_class"], seed)

    def train_epoch(epoch: int) -> dict[str, float]:
        torch.manual_seed(epoch_seed(seed, 5, epoch))
        dataset.set_epoch(epoch)
        sampler.set_epoch(epoch)
        loader = make_loader(dataset, 0, False, seed, int(clip.get("num_workers", 0)), batch_sampler=sampler)
        metrics = train_alignability_epoch(
            model,
            loader,
            optimizer,
            device,
            loss["gamma"],
            loss["margin"],
            loss["omega"],
            f"{what} {epoch}/{epochs}",
            last_path,
        )
        scheduler.step()
        return metrics

    return run_epochs(epochs, last_path, resume, train_epoch, model, optimizer, scheduler, payload, kind="alignability")


def initial_alignability_encoder(cfg: FitLabeledConfig) -> nn.Module:
    """f_A from the GITDL checkpoint when given (its architecture wins), else a fresh one."""
    if cfg.init_a:
        ckpt = load_checkpoint(cfg.init_a, kind="alignability")
        console.print(f"f_A initialised from {cfg.init_a}")
        return build_model_from_checkpoint(ckpt)
    return build_alignability_encoder(**alignability_arch_args(cfg))


def fit_labeled(cfg: FitLabeledConfig) -> dict[str, Any]:
    seed_everything(cfg.seed)
    data = load_stage_data(cfg.index, cfg.split)
    ids = data.split.labeled
    if not ids:
        raise FgarError(f"{cfg.split}: the labeled split is empty")
    labels = {i: data.label_of[i] for i in ids}
    if min(labels.values()) < 0:
        raise FgarError(f"{cfg.split}: labeled clips must belong to the known classes")
    device = resolve_device(cfg.device)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    clip = cfg.model_dump()
    payload = {"class_names": data.class_names, "config": stored_config(cfg, data), "round": 0}
    summary: dict[str, Any] = {"labeled_clips": len(ids), "classes": data.num_classes}

    if (out / "E.pt").exists() and cfg.resume:
        console.print(f"{out / 'E.pt'} is complete; skipping f_E")
    else:
        model_e = build_action_encoder(
            cfg.arch_e, data.num_classes, init=cfg.init_e, channel_order="bgr" if cfg.bgr else "rgb"
        ).to(device)
        history = fit_action_encoder(
            model_e,
            data,
            ids,
            labels,
            clip,
            cfg.epochs_e,
            cfg.lr_e,
            cfg.weight_decay,
            cfg.batch_size,
            cfg.seed,
            device,
            out / "E_last.pt",
            cfg.resume,
            payload,
            "f_E labeled",
        )
        atomic_copy(out / "E_last.pt", out / "E.pt")
        summary["f_E"] = history[-1] if history else {}

    if (out / "A.pt").exists() and cfg.resume:
        console.print(f"{out / 'A.pt'} is complete; skipping f_A")
    else:
        model_a = initial_alignability_encoder(cfg).to(device)
        loss = cfg.model_dump(include={"gamma", "margin", "omega", "classes_per_batch", "clips_per_class"})
        history = fit_alignability_encoder(
            model_a,
            data,
            ids,
            labels,
            clip,
            loss,
            cfg.epochs_a,
            cfg.lr_a,
            cfg.weight_decay,
            cfg.seed,
            device,
            out / "A_last.pt",
            cfg.resume,
            payload,
            "f_A labeled",
        )
        atomic_copy(out / "A_last.pt", out / "A.pt")
        summary["f_A"] = history[-1] if history else {}
    summary.update({"ckpt_e": str(out / "E.pt"), "ckpt_a": str(out / "A.pt")})
    return summary
