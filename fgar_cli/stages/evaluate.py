"""Stage 5, `fgar evaluate`: test accuracy of f_E, of f_A's non-parametric classifier, and of both.

The test protocol is `num_views` clips x 1 centre crop per video, their predictions averaged; it is
written into metrics.json beside every number. The non-parametric classifier uses the labeled split
as its gallery (Eq. 7-8), scored as in pseudo-labeling (`method.gallery.score_queries`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from fgar_cli.artifacts import atomic_write_json, write_h5
from fgar_cli.checkpoints import Encoders, load_encoders
from fgar_cli.config import EvaluateConfig
from fgar_cli.data.batches import inference_loader
from fgar_cli.data.dataset import ClipMode
from fgar_cli.data.run_data import RunData, load_run_data
from fgar_cli.errors import FgarError
from fgar_cli.files import check_writable_folder
from fgar_cli.inference import run_encoders
from fgar_cli.method.gallery import head_probabilities, tau_unfittable
from fgar_cli.metrics import classification_metrics, save_confusion_png
from fgar_cli.progress import console
from fgar_cli.runtime import resolve_device, seed_everything

PREDICTIONS_SCHEMA, PREDICTIONS_VERSION = "fgar.predictions", 1


def evaluate(cfg: EvaluateConfig) -> dict[str, Any]:
    seed_everything(cfg.run.seed)
    out = check_writable_folder(cfg.out_dir)  # before the work, not after it
    encoders = load_encoders(cfg.ckpt_e, cfg.ckpt_a, need_alignability=False)
    data = load_run_data(encoders.data_paths(cfg.data), cfg.run)
    encoders.check_data(data)
    ids = getattr(data.split, cfg.subset.value)
    if not ids:
        raise FgarError(f"{data.paths.split}: the {cfg.subset.value} split is empty: nothing to evaluate")
    # Without a tau to fit, f_A's heads cannot be scored; f_E's metrics are still worth writing.
    skipped = tau_unfittable(data, cfg.classifier) if encoders.alignability is not None else None
    if skipped is not None:
        console.print(f"note: {skipped}; writing f_E's metrics only", soft_wrap=True, markup=False)
    encoders.to(resolve_device(cfg.run.device))
    probs, p_E_views, valid, tau = predict(cfg, encoders, data, ids, use_alignability=skipped is None)
    clip = encoders.action.recipe.clip
    protocol = f"{cfg.num_views} clips x 1 centre crop, {clip.num_frames} frames at {clip.size}px"
    truth, keep = data.truth(ids), valid.numpy()
    metrics: dict[str, Any] = {
        "protocol": protocol,
        "subset": cfg.subset.value,
        "videos": len(ids),
        "unreadable": int((~keep).sum()),
        "checkpoint_e": cfg.ckpt_e,
        "checkpoint_a": cfg.ckpt_a,
        "tau": tau,
        **({"alignability_skipped": skipped} if skipped is not None else {}),
    }
    # metrics.json, written last, says the folder is complete: an earlier one must not vouch for the rest
    (out / "metrics.json").unlink(missing_ok=True)
    for head, p in probs.items():
        m = classification_metrics(p.numpy()[keep], truth[keep], data.class_names)
        # the output folder names the arm (compare.sh: eval_supervised, eval_finepseudo, ...)
        title = f"{out.resolve().name}, {head}: top-1 {m['top1']:.3f}\n{protocol}"
        save_confusion_png(np.array(m["confusion"]), data.class_names, out / f"confusion_{head}.png", title)
        metrics[head] = m
    metrics["top1"] = metrics["action"]["top1"]
    datasets = {f"probs_{head}": p.float() for head, p in probs.items()}
    datasets["logits_views_action"] = torch.log(p_E_views.clamp_min(1e-12))
    write_h5(
        out / "predictions.h5",
        PREDICTIONS_SCHEMA,
        PREDICTIONS_VERSION,
        {"video_ids": ids, "labels": truth, "valid": keep, "class_names": data.class_names, **datasets},
        attrs={"protocol": protocol},
        config=cfg.model_dump(mode="json"),
        inputs=encoders.paths,
    )
    atomic_write_json(out / "metrics.json", metrics)
    return metrics


def predict(
    cfg: EvaluateConfig, encoders: Encoders, data: RunData, ids: list[str], use_alignability: bool = True
) -> tuple[dict[str, Tensor], Tensor, Tensor, float | None]:
    """Class probabilities of each head for the clips `ids` (views averaged): f_E ("action"), and with
    f_A its non-parametric classifier ("alignability") and the two averaged ("combined"). Also f_E's
    per-view probabilities, which clips decoded, and the fitted tau."""
    clip, device, batch_size = encoders.action.recipe.clip, encoders.device, cfg.run.inference_batch_size
    dataset = data.clips(ids, clip, ClipMode.TEST, num_views=cfg.num_views)
    loader = inference_loader(dataset, max(1, batch_size // cfg.num_views))
    model_a = encoders.alignability.model if encoders.alignability is not None and use_alignability else None
    out = run_encoders(loader, device, f"{cfg.subset.value} clips", encoders.action.model, model_a)
    assert out.probs is not None
    probs, tau = head_probabilities(encoders, out, data, cfg.classifier, batch_size, cfg.run.seed)
    return probs, out.probs, out.valid, tau
