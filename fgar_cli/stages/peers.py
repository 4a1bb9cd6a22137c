"""`fgar selftrain --method fixmatch|sefar|acl-mtl`: the peer methods, on the same data, splits and f_E as
FinePseudo, writing the same artifacts.

    student = f_E from --ckpt-e (fit-labeled's), teacher = a copy of it
    for epoch in 1..teacher_student.epochs:
        for each batch of mu x B unlabeled clips (each beside B labeled ones):
            L_sup = CE(student(labeled clips), their labels)
            teacher labels each unlabeled clip's weak view; the clip's weight: FixMatch, confidence >
            threshold; SeFAR, Adaptive Regulation over R repeated teacher predictions; ACL+MTL,
            the GMM reliability gamma of the clip's feature (its label from a short and two long clips)
            L_un = mean over the unlabeled clips of weight x CE(student(strong view), teacher label)
            step on L_sup + lambda_u L_un (ACL+MTL: + mu_1 L_MTL + mu_2 L_ACL); teacher = EMA of the student
        epoch_K/pseudo.h5: the teacher's labels of every unlabeled clip in that epoch, count, accuracy

The result is the student (SeFAR evaluates the student; so do we for every method) as E.pt, a
plain f_E checkpoint that evaluate, predict and export read; with SeFAR its `frame_order` arranges
the dual-level elements, so those stages see clips as it was trained on them. selftrain.json has
FinePseudo's layout, with epochs in place of rounds: `rounds[k]` is epoch k+1's pseudo-labels, and the
cumulative figures are the last epoch's (the labels in force when training ended; a teacher-student
method re-labels every clip each epoch rather than accumulating them).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from fgar_cli.artifacts import atomic_copy, atomic_write_json
from fgar_cli.checkpoints import CheckpointRecord, load_encoders
from fgar_cli.config import (
    AclMtlOptions,
    ActionRecipe,
    OpenWorldConfig,
    SelfTrainConfig,
    SelfTrainMethod,
    with_absolute_paths,
)
from fgar_cli.data.batches import EpochBatches, Stream
from fgar_cli.data.dataset import ClipMode
from fgar_cli.data.index import VideoEntry
from fgar_cli.data.run_data import load_run_data
from fgar_cli.engine import fit, fit_once
from fgar_cli.errors import FgarError
from fgar_cli.method.pseudolabels import read_pseudo_labels
from fgar_cli.method.sefar import element_layout
from fgar_cli.method.teacher_student import (
    AclMtlStep,
    EpochPseudoLabels,
    FixMatchStep,
    PairedBatches,
    PseudoLabelFiles,
    SefarStep,
)
from fgar_cli.progress import console
from fgar_cli.runs import RunFolder
from fgar_cli.runtime import resolve_device, seed_everything


def teacher_student_selftrain(cfg: SelfTrainConfig) -> dict[str, Any]:
    method = cfg.method
    if isinstance(cfg, OpenWorldConfig):
        raise FgarError(f"fgar openworld runs FinePseudo only, not --method {method.value}")
    seed_everything(cfg.run.seed)
    encoders = load_encoders(cfg.ckpt_e, cfg.ckpt_a, need_alignability=False)
    data = load_run_data(encoders.data_paths(cfg.data), cfg.run)
    encoders.check_data(data)
    if not data.split.unlabeled:
        raise FgarError(f"{data.paths.split}: the unlabeled split is empty: there is nothing to self-train on")
    options = cfg.teacher_student
    stored = encoders.action.recipe
    training = stored.training.model_copy(
        update={
            "epochs": options.epochs,
            "lr": options.lr or stored.training.lr,
            "batch_size": options.batch_size or stored.training.batch_size,
        }
    )
    recipe = ActionRecipe(data=data.paths, clip=stored.clip, training=training)
    student = encoders.action.model
    layout = None
    if method == SelfTrainMethod.SEFAR:
        if student.config.frame_order is not None:
            raise FgarError(f"{cfg.ckpt_e}: f_E already has a frame order (a SeFAR result?): start from fit-labeled's")
        s = cfg.sefar
        try:
            layout = element_layout(stored.clip.num_frames, s.fine_elements, s.element_length, s.context_length)
        except ValueError as exc:
            raise FgarError(f"--set sefar.*: {exc}") from None
        if s.warmup_epochs >= options.epochs:
            raise FgarError(
                f"--set sefar.warmup_epochs={s.warmup_epochs}: needs fewer warm-up epochs than the "
                f"{options.epochs} epochs of training (--ts-epochs)"
            )
        # the trunk sees the elements from now on: no weight depends on the clip length
        student.config = student.config.model_copy(update={"frame_order": layout.weak.tolist()})
    device = resolve_device(cfg.run.device)
    student.to(device)
    config = with_absolute_paths(cfg, data.paths)
    run = RunFolder(Path(cfg.out_dir), "selftrain").open(config, cfg.resume, cfg.force)
    out = run.path

    seed = cfg.run.seed + 1000
    labeled = data.clips(data.split.labeled, stored.clip, ClipMode.TRAIN, seed=seed)
    strong = options.strong_sequence_augment if data.index.is_sequence else options.strong_augment
    passes = cfg.sefar.teacher_passes if method == SelfTrainMethod.SEFAR else 1
    unlabeled_ids = data.split.unlabeled
    if method == SelfTrainMethod.ACL_MTL:
        steps = multiscale_frame_steps(cfg.acl_mtl, stored.clip.num_frames, data.entries(unlabeled_ids))
        console.print(f"acl-mtl: short clips every {steps[0]} frames, long clips every {list(steps[1:])}")
        unlabeled = data.clips(
            unlabeled_ids, stored.clip, ClipMode.MULTISCALE, seed=seed, strong=strong, frame_steps=steps
        )
    else:
        unlabeled = data.clips(unlabeled_ids, stored.clip, ClipMode.PAIR, seed=seed, strong=strong, weak_views=passes)
    workers = cfg.run.num_workers
    batches = PairedBatches(
        EpochBatches(labeled, seed, Stream.ACTION, training.batch_size, num_workers=workers),
        EpochBatches(
            unlabeled, seed, Stream.TEACHER_STUDENT, training.batch_size * options.unlabeled_ratio, num_workers=workers
        ),
    )
    labels = EpochPseudoLabels(unlabeled_ids, data.truth(unlabeled_ids), data.num_classes)
    threshold = cfg.acl_mtl.confidence_threshold if method == SelfTrainMethod.ACL_MTL else options.threshold
    files = PseudoLabelFiles(out, data.class_names, threshold, config, encoders.paths)
    step: FixMatchStep
    if method == SelfTrainMethod.ACL_MTL:
        step = AclMtlStep(student, options, cfg.acl_mtl, training, labels, files)
    elif layout is not None:
        step = SefarStep(student, options, cfg.sefar, layout, labels, files)
    else:
        step = FixMatchStep(student, options, labels, files)
    record = CheckpointRecord(data.class_names, recipe, config, {"method": method.value})
    console.print(
        f"{method.value}: {len(data.split.labeled)} labeled and {len(unlabeled_ids)} unlabeled clips, "
        f"{math.ceil(len(unlabeled_ids) / (training.batch_size * options.unlabeled_ratio))} steps per epoch of "
        f"{training.batch_size} + "
        f"{training.batch_size * options.unlabeled_ratio} clips, {options.epochs} epochs",
        markup=False,
    )
    fit_once(
        out / "E.pt",
        student,
        cfg.resume,
        lambda last: fit(
            student, step, batches, training, record, last, cfg.resume, device, f"{method.value} f_E", log=run.log
        ),
        log=run.log,
    )
    return finish(cfg, out, options.epochs)


def multiscale_frame_steps(options: AclMtlOptions, clip_frames: int, entries: list[VideoEntry]) -> list[int]:
    """ACL+MTL's frame steps: the short clip's, then each long clip's (a multiple of it). Without a
    `short_interval`, the longest clip spans about the median video (the paper's 32-frame step over
    8 frames spans 225 frames, about a UCF101 video of 186), so the long clips see the whole action
    and the short one a part of it."""
    short = options.short_interval
    if short is None:
        counted = [e.num_frames for e in entries if e.num_frames > 0]
        median = float(np.median(counted)) if counted else float(clip_frames)
        short = max(1, round(median / (max(options.long_multipliers) * max(clip_frames - 1, 1))))
    return [short, *(short * m for m in options.long_multipliers)]


def finish(cfg: SelfTrainConfig, out: Path, epochs: int) -> dict[str, Any]:
    """selftrain.json from the epochs' pseudo.h5 files (so a resumed, finished run writes it too)."""
    rounds = []
    for epoch in range(1, epochs + 1):
        attrs = read_pseudo_labels(out / f"epoch_{epoch}" / "pseudo.h5")["attrs"]
        count, accuracy = int(attrs["accepted_count"]), float(attrs["accepted_accuracy"])
        rounds.append(
            {
                "round": epoch,
                "round_pl_count": count,
                "round_pl_accuracy": accuracy,
                "round_candidates": int(attrs["scored_count"]),
                "cumulative_pl_count": count,
                "cumulative_pl_accuracy": accuracy,
                "unlabeled": int(attrs["scored_count"]),
            }
        )
    if cfg.ckpt_a:
        atomic_copy(cfg.ckpt_a, out / "A.pt")  # untouched: evaluate can still score f_A beside f_E
    summary = {
        "method": cfg.method.value,
        "rounds": rounds,
        "cumulative_pl_count": rounds[-1]["cumulative_pl_count"],
        "cumulative_pl_accuracy": rounds[-1]["cumulative_pl_accuracy"],
        "ckpt_e": str(out / "E.pt"),
        "ckpt_a": str(out / "A.pt") if cfg.ckpt_a else None,
        "source": cfg.method.value,
        "novel_threshold": None,
    }
    atomic_write_json(out / "selftrain.json", summary)
    return summary
