"""Stage 1, `fgar pretrain`: self-supervised pretraining on the unlabeled set, of f_A (GITDL) or of f_E (TCLR).

f_A (the default, A0.pt): Algorithm 1, lines 6-10: for each epoch, theta_A <- theta_A - alpha_A *
grad L_GITDL. The loss is our documented interpretation of the paper's supplement
(fgar_cli.losses.gitdl_loss): frames of a local clip must find the frames of a global clip that lie
closest in time, with a Gaussian soft target over the time difference.

f_E (`--encoder action`, E0.pt): the paper starts f_E from TCLR's self-supervised weights (Table 1);
here TCLR's temporal contrastive losses (fgar_cli.contrastive) train f_E's trunk on D_u itself, and
E0.pt starts f_E in `fit-labeled --init-e`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from fgar_cli.checkpoints import CheckpointRecord
from fgar_cli.config import (
    ActionPretrainRecipe,
    ClipConfig,
    PretrainConfig,
    PretrainEncoder,
    PretrainRecipe,
    with_absolute_paths,
)
from fgar_cli.data.batches import EpochBatches, Stream
from fgar_cli.data.dataset import ClipDataset, ClipMode
from fgar_cli.data.run_data import RunData, fit_input_norm, load_run_data
from fgar_cli.engine import fit, fit_once
from fgar_cli.errors import FgarError
from fgar_cli.models import (
    PretrainedActionEncoder,
    action_config_for,
    alignability_config_for,
    build_alignability_encoder,
    build_pretrained_action_encoder,
)
from fgar_cli.objectives import GitdlStep, TclrStep
from fgar_cli.runlog import records_run
from fgar_cli.runs import RunFolder
from fgar_cli.runtime import resolve_device, seed_everything

DEFAULT_OUT = {PretrainEncoder.ALIGNABILITY: "runs/fgar/pretrain", PretrainEncoder.ACTION: "runs/fgar/pretrain_action"}


@records_run
def pretrain(cfg: PretrainConfig) -> dict[str, Any]:
    seed_everything(cfg.run.seed)
    if cfg.out_dir is None:
        cfg = cfg.model_copy(update={"out_dir": DEFAULT_OUT[cfg.encoder]})
    data = load_run_data(cfg.data, cfg.run)
    if not data.split.unlabeled:
        raise FgarError(f"{cfg.data.split}: the unlabeled split is empty; pretraining has nothing to learn from")
    device = resolve_device(cfg.run.device)
    config = with_absolute_paths(cfg, data.paths)
    if cfg.encoder == PretrainEncoder.ACTION:
        return pretrain_action_encoder(cfg, config, data, device)
    run = RunFolder(Path(cfg.out_dir), "pretrain").open(config, cfg.resume, cfg.force)
    out = run.path

    index = data.paths.index or "the index"
    alignability = alignability_config_for(cfg.alignability, cfg.clip.num_frames, data.index.input_dim, index)
    model = build_alignability_encoder(alignability)
    fit_input_norm(data, cfg.run.seed, model)
    model.to(device)
    dataset = data.clips(data.split.unlabeled, cfg.clip, ClipMode.GITDL, seed=cfg.run.seed)
    batches = video_batches(dataset, cfg, Stream.GITDL, cfg.training.batch_size)
    recipe = PretrainRecipe(data=data.paths, clip=cfg.clip, training=cfg.training, loss=cfg.loss)
    record = CheckpointRecord(class_names=[], recipe=recipe, config=config)
    final = out / "A0.pt"
    history = fit_once(
        final,
        model,
        cfg.resume,
        lambda last: fit(
            model, GitdlStep(cfg.loss), batches, cfg.training, record, last, cfg.resume, device, "pretrain", log=run.log
        ),
        log=run.log,
    )
    return {
        "checkpoint": str(final),
        "epochs": cfg.training.epochs,
        "final": history[-1] if history else {},
        "clips": len(dataset),
        "skipped_videos": dataset.num_skipped,
    }


def pretrain_action_encoder(
    cfg: PretrainConfig, config: PretrainConfig, data: RunData, device: torch.device
) -> dict[str, Any]:
    """TCLR on D_u: for each epoch, theta_E <- theta_E - alpha * grad (L_LL + L_GL [+ L_IC])."""
    assert cfg.out_dir is not None
    run = RunFolder(Path(cfg.out_dir), "pretrain").open(config, cfg.resume, cfg.force)
    out = run.path
    model = build_pretrained_action_encoder(
        action_config_for(cfg.action, data.index.input_dim, data.paths.index or "the index")
    )
    fit_input_norm(data, cfg.run.seed, model)
    model.to(device)
    training, loss = cfg.action_training, cfg.action_loss
    check_time_steps(model, cfg.clip, loss.local_clips, device)
    # every clip of every view gets TCLR's augmentation, drawn on its own
    clip = cfg.clip.model_copy(update={"augment": training.augment})
    dataset = data.clips(data.split.unlabeled, clip, ClipMode.TCLR, seed=cfg.run.seed, tclr=loss)
    batches = video_batches(dataset, cfg, Stream.TCLR, training.batch_size)
    recipe = ActionPretrainRecipe(data=data.paths, clip=cfg.clip, training=training, loss=loss)
    record = CheckpointRecord(class_names=[], recipe=recipe, config=config)
    final = out / "E0.pt"
    history = fit_once(
        final,
        model,
        cfg.resume,
        lambda last: fit(
            model, TclrStep(loss), batches, training, record, last, cfg.resume, device, "pretrain f_E", log=run.log
        ),
        log=run.log,
    )
    return {
        "checkpoint": str(final),
        "epochs": training.epochs,
        "final": history[-1] if history else {},
        "clips": len(dataset),
        "skipped_videos": dataset.num_skipped,
    }


def video_batches(dataset: ClipDataset, cfg: PretrainConfig, stream: Stream, batch_size: int) -> EpochBatches:
    """Shuffled batches of unlabeled videos; the last partial batch is dropped, as a batch of one video
    has nothing to contrast (unless there is only one batch)."""
    drop_last = len(dataset) > batch_size
    return EpochBatches(dataset, cfg.run.seed, stream, batch_size, num_workers=cfg.run.num_workers, drop_last=drop_last)


def check_time_steps(model: PretrainedActionEncoder, clip: ClipConfig, local_clips: int, device: torch.device) -> None:
    """Fail before training, not at its first batch, when the trunk leaves fewer time steps than local clips."""
    with torch.no_grad():
        dim = model.config.input_dim
        shape = (2, clip.num_frames, dim) if dim else (2, clip.num_frames, 3, clip.size, clip.size)
        model.eval()(torch.zeros(shape, device=device), local_clips)
