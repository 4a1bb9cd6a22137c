"""Stage 1, `fgar pretrain`: GITDL self-supervised pretraining of f_A on the unlabeled set.

Algorithm 1, lines 6-10: for each epoch, theta_A <- theta_A - alpha_A * grad L_GITDL. The loss is
our documented interpretation of the paper's supplement (fgar_cli.losses.gitdl_loss): frames of a
local clip must find the frames of a global clip that lie closest in time, with a Gaussian soft
target over the time difference.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fgar_cli.checkpoints import CheckpointRecord
from fgar_cli.config import PretrainConfig, PretrainRecipe, with_absolute_paths
from fgar_cli.data.batches import EpochBatches, Stream
from fgar_cli.data.dataset import ClipMode
from fgar_cli.data.run_data import load_run_data
from fgar_cli.engine import fit, fit_once
from fgar_cli.errors import FgarError
from fgar_cli.models import alignability_config_for, build_alignability_encoder
from fgar_cli.objectives import GitdlStep
from fgar_cli.runs import RunFolder
from fgar_cli.runtime import resolve_device, seed_everything


def pretrain(cfg: PretrainConfig) -> dict[str, Any]:
    seed_everything(cfg.run.seed)
    data = load_run_data(cfg.data, cfg.run)
    if not data.split.unlabeled:
        raise FgarError(f"{cfg.data.split}: the unlabeled split is empty; GITDL pretraining has nothing to learn from")
    device = resolve_device(cfg.run.device)
    config = with_absolute_paths(cfg, data.paths)
    out = RunFolder(Path(cfg.out_dir), "pretrain").open(config, cfg.resume, cfg.force).path

    model = build_alignability_encoder(alignability_config_for(cfg.alignability, cfg.clip.num_frames)).to(device)
    dataset = data.clips(data.split.unlabeled, cfg.clip, ClipMode.GITDL, seed=cfg.run.seed)
    batch_size = cfg.training.batch_size
    batches = EpochBatches(
        dataset,
        cfg.run.seed,
        Stream.GITDL,
        batch_size,
        num_workers=cfg.run.num_workers,
        drop_last=len(dataset) > batch_size,
    )
    recipe = PretrainRecipe(data=data.paths, clip=cfg.clip, training=cfg.training, loss=cfg.loss)
    record = CheckpointRecord(class_names=[], recipe=recipe, config=config)
    final = out / "A0.pt"
    history = fit_once(
        final,
        model,
        cfg.resume,
        lambda last: fit(
            model, GitdlStep(cfg.loss), batches, cfg.training, record, last, cfg.resume, device, "pretrain"
        ),
    )
    return {
        "checkpoint": str(final),
        "epochs": cfg.training.epochs,
        "final": history[-1] if history else {},
        "clips": len(dataset),
        "skipped_videos": dataset.num_skipped,
    }
