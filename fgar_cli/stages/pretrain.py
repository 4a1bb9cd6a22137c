"""Stage 1, `fgar pretrain`: GITDL self-supervised pretraining of f_A on the unlabeled set.

Algorithm 1, lines 6-10: for each epoch, theta_A <- theta_A - alpha_A * grad L_GITDL. The loss is
our documented interpretation of the paper's supplement (fgar_cli.losses.gitdl_loss): frames of a
local clip must find the frames of a global clip that lie closest in time, with a Gaussian soft
target over the time difference.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from fgar_cli.artifacts import atomic_copy
from fgar_cli.config import PretrainConfig
from fgar_cli.errors import FgarError
from fgar_cli.models import build_alignability_encoder
from fgar_cli.stages.common import (
    clip_dataset,
    epoch_seed,
    load_stage_data,
    make_loader,
    resolve_device,
    run_epochs,
    seed_everything,
)
from fgar_cli.training import train_gitdl_epoch


def alignability_arch_args(cfg: Any) -> dict[str, Any]:
    return {
        "backbone": cfg.backbone_a,
        "feature_dim": cfg.feature_dim,
        "hidden_dim": cfg.hidden_dim,
        "depth": cfg.depth,
        "heads": cfg.heads,
        "max_frames": max(64, cfg.num_frames),
    }


def pretrain(cfg: PretrainConfig) -> dict[str, Any]:
    seed_everything(cfg.seed)
    data = load_stage_data(cfg.index, cfg.split)
    if not data.split.unlabeled:
        raise FgarError(f"{cfg.split}: the unlabeled split is empty; GITDL pretraining has nothing to learn from")
    device = resolve_device(cfg.device)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    last_path, final_path = out / "A0_last.pt", out / "A0.pt"

    model = build_alignability_encoder(**alignability_arch_args(cfg)).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs)
    dataset = clip_dataset(data, data.split.unlabeled, cfg.model_dump(), mode="gitdl", seed=cfg.seed)

    def train_epoch(epoch: int) -> dict[str, float]:
        torch.manual_seed(epoch_seed(cfg.seed, 1, epoch))
        dataset.set_epoch(epoch)
        loader = make_loader(
            dataset,
            cfg.batch_size,
            True,
            epoch_seed(cfg.seed, 2, epoch),
            cfg.num_workers,
            drop_last=len(dataset) > cfg.batch_size,
        )
        metrics = train_gitdl_epoch(
            model,
            loader,
            optimizer,
            device,
            cfg.gitdl_tau,
            cfg.gitdl_sigma,
            cfg.cross_video_negatives,
            f"pretrain {epoch}/{cfg.epochs}",
            last_path,
        )
        scheduler.step()
        return metrics

    history = run_epochs(
        cfg.epochs,
        last_path,
        cfg.resume,
        train_epoch,
        model,
        optimizer,
        scheduler,
        {"class_names": [], "config": cfg.model_dump()},
        kind="alignability",
    )
    atomic_copy(last_path, final_path)
    return {
        "checkpoint": str(final_path),
        "epochs": cfg.epochs,
        "final": history[-1] if history else {},
        "clips": len(dataset),
        "skipped_videos": dataset.num_skipped,
    }
