"""Stage 2, `fgar fit-labeled`: train f_E and f_A on the labeled set D_l.

Algorithm 1, lines 11-17: f_E with cross-entropy (Eq. 6), then f_A with the alignability-
verification loss L_AV = L_AT + omega * L_Score (Eq. 5) on class-balanced P x K batches, starting
from the GITDL-pretrained f_A when `--init-a` is given. The two encoders do not interact while they
train, so training one after the other is the same as interleaving their epochs.

When the labeled set is large enough (`validation`), a fraction of each class is held out: neither
encoder trains on it, f_E is scored on it after each epoch, and its best epoch is kept (E_best.pt).
The pseudo-label stages' gallery is still the whole labeled set. fit_labeled.json sums the run up,
with the held-out clips.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from fgar_cli.artifacts import atomic_write_json
from fgar_cli.checkpoints import CheckpointRecord, check_model_input, init_action_config, load_alignability_weights
from fgar_cli.config import (
    ActionRecipe,
    AlignabilityRecipe,
    ClassifierConfig,
    FitLabeledConfig,
    with_absolute_paths,
)
from fgar_cli.data.batches import Stream
from fgar_cli.data.dataset import ClipMode
from fgar_cli.data.run_data import RunData, fit_input_norm, load_run_data
from fgar_cli.engine import History, best_epoch
from fgar_cli.errors import FgarError
from fgar_cli.method.gallery import tau_unfittable
from fgar_cli.models import (
    AlignabilityEncoder,
    action_config_for,
    alignability_config_for,
    build_action_encoder,
    build_alignability_encoder,
)
from fgar_cli.progress import console
from fgar_cli.runlog import records_run
from fgar_cli.runs import RunFolder
from fgar_cli.runtime import epoch_seed, resolve_device, seed_everything
from fgar_cli.training import EncoderTrainer, hold_out

SUMMARY_FILE = "fit_labeled.json"


@records_run
def fit_labeled(cfg: FitLabeledConfig) -> dict[str, Any]:
    seed_everything(cfg.run.seed)
    data = load_run_data(cfg.data, cfg.run)
    ids = data.split.labeled
    if not ids:
        raise FgarError(f"{cfg.data.split}: the labeled split is empty (a --fraction 0 split is for pretraining)")
    labels = data.labels(ids)
    if min(labels.values()) < 0:
        raise FgarError(f"{cfg.data.split}: labeled clips must belong to the known classes")
    if reason := tau_unfittable(data, ClassifierConfig()):  # warn now, the pseudo-label stages will refuse
        console.print(f"warning: {reason} to the pseudo-label stages", soft_wrap=True, markup=False)
    device = resolve_device(cfg.run.device)
    if cfg.init_e and (pretrained := init_action_config(cfg.init_e)) is not None and pretrained != cfg.action:
        # f_E must be built as the checkpoint it starts from; the stored config says so
        console.print(f"f_E's architecture comes from {cfg.init_e}: {pretrained.arch.value}")
        cfg = cfg.model_copy(update={"action": pretrained.model_copy(update={"dropout": cfg.action.dropout})})
    config = with_absolute_paths(cfg, data.paths)  # absolute paths, so later stages find the data
    # Both encoders are built (and --init-e, --init-a checked) before any training starts.
    action = action_config_for(cfg.action, data.index.input_dim, data.paths.index or "the index")
    model_e = build_action_encoder(action, data.num_classes, init=cfg.init_e)
    model_a = initial_alignability_encoder(cfg, data)
    fit_input_norm(data, cfg.run.seed, model_e, model_a)
    model_e.to(device)
    model_a.to(device)
    run = RunFolder(Path(cfg.out_dir), "fit_labeled").open(config, cfg.resume, cfg.force)
    out = run.path
    trainer = EncoderTrainer(device, cfg.run.seed, cfg.resume, cfg.run.num_workers, log=run.log)
    train_ids, held_ids = hold_out(labels, cfg.validation, cfg.run.seed)
    if held_ids:
        console.print(f"{len(held_ids)} of {len(ids)} labeled clips held out to pick f_E's best epoch")
    dataset = data.clips(train_ids, cfg.clip, ClipMode.TRAIN, {i: labels[i] for i in train_ids}, seed=cfg.run.seed)
    held_out = data.clips(held_ids, cfg.clip, ClipMode.TEST, {i: labels[i] for i in held_ids}) if held_ids else None

    recipe_e = ActionRecipe(data=data.paths, clip=cfg.clip, training=cfg.action_training)
    record_e = CheckpointRecord(data.class_names, recipe_e, config, {"round": 0})
    history_e = trainer.action(
        model_e, dataset, recipe_e.training, out / "E.pt", record_e, "f_E labeled", held_out=held_out
    )

    recipe_a = AlignabilityRecipe(
        data=data.paths, clip=cfg.clip, training=cfg.alignability_training, loss=cfg.alignability_loss
    )
    record_a = CheckpointRecord(data.class_names, recipe_a, config, {"round": 0})
    history_a = trainer.alignability(
        model_a, dataset, recipe_a.training, recipe_a.loss, out / "A.pt", record_a, "f_A labeled"
    )
    summary = {
        "labeled_clips": len(ids),
        "classes": data.num_classes,
        "f_E": history_e[-1] if history_e else {},
        "f_A": history_a[-1] if history_a else {},
        "ckpt_e": str(out / "E.pt"),
        "ckpt_a": str(out / "A.pt"),
        "validation": validation_summary(history_e, held_ids, out),
    }
    atomic_write_json(out / SUMMARY_FILE, {**summary, "held_out_clips": held_ids})
    return summary


def validation_summary(history_e: History, held_ids: list[str], out: Path) -> dict[str, Any]:
    """How many clips were held out, and f_E's best epoch on them (E_best.pt)."""
    if not held_ids:
        return {"held_out": 0}
    best = best_epoch(history_e, "val_top1")
    return {
        "held_out": len(held_ids),
        "best_epoch": best[0] if best else None,
        "best_top1": best[1] if best else None,
        "ckpt_best": str(out / "E_best.pt") if best else None,
    }


def initial_alignability_encoder(cfg: FitLabeledConfig, data: RunData) -> AlignabilityEncoder:
    """f_A from the GITDL checkpoint when given (its architecture wins), else a fresh one.

    A fresh f_A draws its initial weights from a seed of its own, so that it is the same whether
    f_E was trained in this process or, on --resume, loaded finished.
    """
    if cfg.init_a:
        model = load_alignability_weights(cfg.init_a)
        check_model_input(model.config, data.index.input_dim, data.paths.index, cfg.init_a)
        console.print(f"f_A initialised from {cfg.init_a}")
        return model
    torch.manual_seed(epoch_seed(cfg.run.seed, Stream.ALIGNABILITY, 0))
    index = data.paths.index or "the index"
    config = alignability_config_for(cfg.alignability, cfg.clip.num_frames, data.index.input_dim, index)
    return build_alignability_encoder(config)
