"""Stage 4, `fgar selftrain`: collaborative self-training (Algorithm 1, lines 18-31).

    for round in 1..max_iter:
        pseudo-label every unlabeled clip with the current f_E and f_A      -> round_k/pseudo.h5
        train f_E (CE) and f_A (L_AV) for max_epoch_st epochs on D_l plus
        the accepted pseudo-labels                                          -> round_k/E.pt, A.pt

As in Algorithm 1 (line 23), an accepted clip is added to D_l with its label and keeps it: later
rounds pseudo-label only the clips not yet accepted, so the pseudo-labeled set grows round by round.
Choices where the paper is silent (docs/METHOD.md): the gallery is the truly labeled set only, so
pseudo-labels never vouch for themselves; training continues from the previous round's weights
with a fresh optimizer. With `--source action` (confidence-only pseudo-labeling) f_A takes
no part and is not trained.

Every epoch writes a resumable checkpoint and every round its pseudo.h5, so `--resume` after an
interruption replays nothing and reaches the same weights as an uninterrupted run.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np

from fgar_cli.artifacts import atomic_copy, atomic_write_json, load_checkpoint
from fgar_cli.config import SelfTrainConfig
from fgar_cli.errors import FgarError
from fgar_cli.models import build_model_from_checkpoint
from fgar_cli.stages.common import (
    StageData,
    console,
    data_paths_from_checkpoint,
    load_stage_data,
    resolve_device,
    seed_everything,
)
from fgar_cli.stages.fit_labeled import fit_action_encoder, fit_alignability_encoder
from fgar_cli.stages.pseudolabel import (
    check_classes,
    load_encoders,
    pseudo_label,
    pseudo_label_stats,
    read_pseudo_labels,
)

LOSS_KEYS = ("gamma", "margin", "omega", "classes_per_batch", "clips_per_class")


def accepted_labels(pl: dict[str, Any]) -> dict[str, int]:
    """The accepted clips of one pseudo.h5 and their labels."""
    return {vid: int(y) for vid, y, ok in zip(pl["video_ids"], pl["label"], pl["accepted"], strict=True) if ok}


def cumulative_stats(pseudo_labeled: dict[str, int], data: StageData) -> dict[str, Any]:
    """Count and accuracy (against the split's ground truth) of every pseudo-label accepted so far."""
    ids = list(pseudo_labeled)
    stats = pseudo_label_stats(
        np.array([pseudo_labeled[i] for i in ids], dtype=np.int64),
        np.ones(len(ids), dtype=bool),
        np.array([data.label_of[i] for i in ids], dtype=np.int64),
    )
    stats["unlabeled"] = len(data.split.unlabeled)
    return stats


def selftrain(cfg: SelfTrainConfig, novel_threshold: float | None = None) -> dict[str, Any]:
    seed_everything(cfg.seed)
    need_a = cfg.source != "action"
    ckpt_a, ckpt_e = load_encoders(cfg.ckpt_a, cfg.ckpt_e, need_a=need_a or novel_threshold is not None)
    index, split = data_paths_from_checkpoint(ckpt_e, cfg.index, cfg.split)
    data = load_stage_data(index, split)
    check_classes(data, ckpt_e, cfg.ckpt_e)
    if not data.split.unlabeled:
        raise FgarError(f"{data.split_path}: the unlabeled split is empty: there is nothing to self-train on")
    device = resolve_device(cfg.device)
    fit_cfg = ckpt_e["config"]
    a_cfg = ckpt_a["config"] if ckpt_a else {}
    loss = {k: a_cfg.get(k, fit_cfg.get(k)) for k in LOSS_KEYS}
    lr_e = cfg.lr_e or float(fit_cfg.get("lr_e", 1e-3))
    lr_a = cfg.lr_a or float(a_cfg.get("lr_a", 3e-4))
    weight_decay = float(fit_cfg.get("weight_decay", 1e-4))
    batch_size = int(fit_cfg.get("batch_size", 8))
    gamma = float(loss["gamma"] or 0.1)

    model_e = build_model_from_checkpoint(ckpt_e).to(device)
    model_a = build_model_from_checkpoint(ckpt_a).to(device) if ckpt_a else None
    train_a = need_a and model_a is not None
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if not cfg.resume:  # a fresh run: results of an earlier run in this folder must not count as done
        for stale in out.glob("round_*"):
            shutil.rmtree(stale)
    stored = {
        **fit_cfg,
        **{k: a_cfg[k] for k in LOSS_KEYS if k in a_cfg},
        "index": data.index_path,
        "split": data.split_path,
        "selftrain": cfg.model_dump(),
    }
    payload_base = {"class_names": data.class_names, "config": stored}
    inputs = [p for p in (cfg.ckpt_a, cfg.ckpt_e) if p]
    rounds: list[dict[str, Any]] = []
    pseudo_labeled: dict[str, int] = {}  # Algorithm 1 line 23: accepted clips join D_l for good

    for r in range(1, cfg.rounds + 1):
        rdir = out / f"round_{r}"
        done_e, done_a = rdir / "E.pt", rdir / "A.pt"
        remaining = [i for i in data.split.unlabeled if i not in pseudo_labeled]
        if cfg.resume and done_e.exists() and (done_a.exists() or not train_a):
            # A finished round: take its weights and pseudo-labels, redo nothing.
            model_e.load_state_dict(load_checkpoint(done_e, kind="action")["state_dict"])
            if train_a:
                model_a.load_state_dict(load_checkpoint(done_a, kind="alignability")["state_dict"])
            if remaining:
                pseudo_labeled |= accepted_labels(read_pseudo_labels(rdir / "pseudo.h5"))
            rounds.append({"round": r, **cumulative_stats(pseudo_labeled, data)})
            console.print(f"round {r} is complete; resuming after it")
            continue

        seed = cfg.seed + 1000 * r
        if not remaining:
            console.print(f"round {r}: every unlabeled clip is pseudo-labeled already")
        elif cfg.resume and (rdir / "pseudo.h5").exists():
            console.print(f"round {r}: reusing {rdir / 'pseudo.h5'}")
        else:
            pseudo_label(
                model_a,
                model_e,
                data,
                fit_cfg,
                cfg.model_dump(),
                gamma,
                device,
                rdir,
                cfg.seed,
                round_=r,
                novel_threshold=novel_threshold,
                config=stored,
                inputs=inputs,
                ids=remaining,
            )
        new = accepted_labels(read_pseudo_labels(rdir / "pseudo.h5")) if remaining else {}
        pseudo_labeled |= new
        stats = {"round": r, **cumulative_stats(pseudo_labeled, data)}
        console.print(
            f"round {r}: {len(new)} of {len(remaining)} clips newly accepted; "
            f"{stats['pl_count']} of {stats['unlabeled']} unlabeled clips pseudo-labeled, "
            f"accuracy {stats['pl_accuracy']:.3f}"
        )
        labels = {i: data.label_of[i] for i in data.split.labeled} | pseudo_labeled
        ids = list(labels)
        payload = {**payload_base, "round": r, "pseudo_labels": stats}

        fit_action_encoder(
            model_e,
            data,
            ids,
            labels,
            fit_cfg,
            cfg.epochs,
            lr_e,
            weight_decay,
            batch_size,
            seed,
            device,
            rdir / "E_last.pt",
            cfg.resume,
            payload,
            f"round {r} f_E",
        )
        atomic_copy(rdir / "E_last.pt", done_e)
        if train_a:
            fit_alignability_encoder(
                model_a,
                data,
                ids,
                labels,
                fit_cfg,
                loss,
                cfg.epochs,
                lr_a,
                weight_decay,
                seed,
                device,
                rdir / "A_last.pt",
                cfg.resume,
                payload,
                f"round {r} f_A",
            )
            atomic_copy(rdir / "A_last.pt", done_a)
        rounds.append(stats)

    last = out / f"round_{cfg.rounds}"
    atomic_copy(last / "E.pt", out / "E.pt")
    if train_a:
        atomic_copy(last / "A.pt", out / "A.pt")
    elif cfg.ckpt_a:
        atomic_copy(cfg.ckpt_a, out / "A.pt")
    summary = {
        "rounds": rounds,
        "pl_count": rounds[-1]["pl_count"],
        "pl_accuracy": rounds[-1]["pl_accuracy"],
        "ckpt_e": str(out / "E.pt"),
        "ckpt_a": str(out / "A.pt") if (out / "A.pt").exists() else None,
        "source": cfg.source,
        "novel_threshold": novel_threshold,
    }
    atomic_write_json(out / "selftrain.json", summary)
    return summary
