"""Stage 5, `fgar evaluate`: test accuracy of f_E, of f_A's non-parametric classifier, and of both.

The test protocol is `num_views` clips x 1 centre crop per video, their predictions averaged; it is
written into metrics.json beside every number. The non-parametric classifier uses the labeled split
as its gallery (Eq. 7-8) with the same rho and tau as pseudo-labeling.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from fgar_cli.artifacts import atomic_write_json, write_h5
from fgar_cli.config import EvaluateConfig
from fgar_cli.errors import FgarError
from fgar_cli.metrics import classification_metrics, save_confusion_png
from fgar_cli.models import build_model_from_checkpoint
from fgar_cli.stages.common import (
    clip_dataset,
    data_paths_from_checkpoint,
    load_stage_data,
    make_loader,
    resolve_device,
    seed_everything,
)
from fgar_cli.stages.pseudolabel import (
    build_gallery,
    check_classes,
    class_logits,
    gallery_temperature,
    load_encoders,
    nonparametric_probs,
)
from fgar_cli.training import alignability_logits, embed_clips, predict_clips

PREDICTIONS_SCHEMA, PREDICTIONS_VERSION = "fgar.predictions", 1


def evaluate(cfg: EvaluateConfig) -> dict[str, Any]:
    seed_everything(cfg.seed)
    ckpt_a, ckpt_e = load_encoders(cfg.ckpt_a, cfg.ckpt_e, need_a=False)
    index, split = data_paths_from_checkpoint(ckpt_e, cfg.index, cfg.split)
    data = load_stage_data(index, split)
    check_classes(data, ckpt_e, cfg.ckpt_e)
    ids = getattr(data.split, cfg.subset)
    if not ids:
        raise FgarError(f"{data.split_path}: the {cfg.subset} split is empty: nothing to evaluate")
    device = resolve_device(cfg.device)
    clip = ckpt_e["config"]
    dataset = clip_dataset(data, ids, clip, mode="test", num_views=cfg.num_views)
    loader = make_loader(dataset, max(1, cfg.batch_size // cfg.num_views), False, 0)
    truth = np.array([data.label_of[i] for i in ids])
    protocol = f"{cfg.num_views} clips x 1 centre crop, {clip['num_frames']} frames at {clip['size']}px"

    model_e = build_model_from_checkpoint(ckpt_e).to(device)
    p_E, valid = predict_clips(model_e, loader, device, f"{cfg.subset} f_E")
    probs = {"action": p_E.mean(1)}
    tau = None
    if ckpt_a is not None:
        model_a = build_model_from_checkpoint(ckpt_a).to(device)
        gamma = float(ckpt_a["config"].get("gamma", 0.1))
        gallery = build_gallery(model_a, data, clip, device, cfg.batch_size)
        emb, _ = embed_clips(model_a, loader, device, f"{cfg.subset} f_A")
        logits = alignability_logits(model_a, emb.nan_to_num(), gallery.embeddings, gamma, device)
        class_logit = class_logits(logits, gallery.labels, data.num_classes, cfg.rho, cfg.seed)
        tau = cfg.tau or gallery_temperature(model_a, gallery, data.num_classes, cfg.rho, gamma, device, cfg.seed)
        probs["alignability"] = nonparametric_probs(class_logit, tau)
        probs["combined"] = (probs["action"] + probs["alignability"]) / 2

    keep = valid.numpy()
    metrics: dict[str, Any] = {
        "protocol": protocol,
        "subset": cfg.subset,
        "videos": len(ids),
        "unreadable": int((~keep).sum()),
        "checkpoint_e": cfg.ckpt_e,
        "checkpoint_a": cfg.ckpt_a,
        "tau": tau,
    }
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for head, p in probs.items():
        m = classification_metrics(p.numpy()[keep], truth[keep], data.class_names)
        save_confusion_png(
            np.array(m["confusion"]),
            data.class_names,
            out / f"confusion_{head}.png",
            f"{head}: top-1 {m['top1']:.3f} ({protocol})",
        )
        metrics[head] = m
    metrics["top1"] = metrics["action"]["top1"]
    atomic_write_json(out / "metrics.json", metrics)
    write_h5(
        out / "predictions.h5",
        PREDICTIONS_SCHEMA,
        PREDICTIONS_VERSION,
        {
            "video_ids": ids,
            "labels": truth,
            "valid": keep,
            "class_names": data.class_names,
            **{f"probs_{head}": p.float() for head, p in probs.items()},
            "logits_views_action": torch.log(p_E.clamp_min(1e-12)),
        },
        attrs={"protocol": protocol},
        config=cfg.model_dump(),
        inputs=[p for p in (cfg.ckpt_a, cfg.ckpt_e) if p],
    )
    return metrics
