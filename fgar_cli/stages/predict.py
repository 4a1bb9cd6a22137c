"""`fgar predict`: what a trained f_E (and, given f_A, FinePseudo's collaborative classifier) says
about new videos, with no labels, split or index.

The videos are read as evaluation reads its test clips (`num_views` clips x 1 centre crop, the clip
settings f_E was trained with) and their views averaged. With f_A, its non-parametric classifier
compares every video with the labeled gallery of f_E's training data (Eq. 7-8) and the prediction is
the average of both (the "combined" head of `fgar evaluate`). Writes a CSV with one row per video
(its top-k classes and probabilities; an `error` column for a video that could not be read) and the
same as JSON beside it.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import torch

from fgar_cli.artifacts import atomic_write_text
from fgar_cli.checkpoints import load_encoders
from fgar_cli.config import DataPaths, PredictConfig
from fgar_cli.data.adapters import VIDEO_SUFFIXES
from fgar_cli.data.batches import inference_loader
from fgar_cli.data.dataset import ClipDataset, ClipMode
from fgar_cli.data.index import NO_LABEL, DatasetIndex, VideoEntry
from fgar_cli.data.run_data import load_run_data
from fgar_cli.errors import FgarError
from fgar_cli.files import check_output_file, read_text
from fgar_cli.inference import run_encoders
from fgar_cli.method.gallery import head_probabilities, require_fittable_tau
from fgar_cli.runtime import resolve_device, seed_everything

LIST_SUFFIXES = {".txt", ".lst"}


def collect_videos(inputs: list[str]) -> list[Path]:
    """The videos named by `inputs`: files, folders (searched recursively for video files) and
    .txt/.lst lists (one path per line, relative to the list's folder; '#' starts a comment)."""
    videos: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            videos += sorted(f for f in p.rglob("*") if f.suffix.lower() in VIDEO_SUFFIXES and f.is_file())
        elif p.suffix.lower() in LIST_SUFFIXES and p.is_file():
            lines = [line.split("#", 1)[0].strip() for line in read_text(p, "video list").splitlines()]
            videos += [q if (q := Path(line)).is_absolute() else p.parent / q for line in lines if line]
        elif p.exists():
            videos.append(p)
        else:
            raise FgarError(f"{p}: not found (give video files, folders of videos or .txt lists of paths)")
    if not videos:
        raise FgarError(f"no video found in {', '.join(inputs) or 'the inputs'} (pass --input FILE, FOLDER or LIST)")
    return list(dict.fromkeys(v.resolve() for v in videos))


def predict(cfg: PredictConfig) -> dict[str, Any]:
    seed_everything(cfg.run.seed)
    out = check_output_file(cfg.out)  # before the work, not after it
    videos = collect_videos(cfg.inputs)
    encoders = load_encoders(cfg.ckpt_e, cfg.ckpt_a, need_alignability=False)
    if encoders.action.model.config.input_dim:
        raise FgarError(
            f"{cfg.ckpt_e}: a sequence model; predict reads videos. Index the sequences "
            "(`fgar data index --format npz`) and run `fgar evaluate --subset unlabeled` on them"
        )
    device = resolve_device(cfg.run.device)
    encoders.to(device)
    data = None
    if encoders.alignability is not None:  # f_A's gallery: the labeled split f_E was trained on
        data = load_run_data(encoders.data_paths(DataPaths()), cfg.run)
        encoders.check_data(data)
        require_fittable_tau(data, cfg.classifier)  # before the videos are run, not after
    names = encoders.class_names
    entries = [VideoEntry(id=str(v), path=str(v), label=NO_LABEL, subset="unlabeled") for v in videos]
    index = DatasetIndex("predict", "/", names, entries, allow_outside_root=True)
    clip = encoders.action.recipe.clip
    dataset = ClipDataset(index, entries, clip, ClipMode.TEST, num_views=cfg.num_views)
    loader = inference_loader(dataset, max(1, cfg.run.inference_batch_size // cfg.num_views))
    model_a = encoders.alignability.model if encoders.alignability is not None else None
    outputs = run_encoders(loader, device, "videos", encoders.action.model, model_a)
    heads, _ = head_probabilities(encoders, outputs, data, cfg.classifier, cfg.run.inference_batch_size, cfg.run.seed)
    head = "combined" if "combined" in heads else "action"
    probs = heads[head]
    rows = prediction_rows(videos, probs, outputs.valid, dataset.skip_reasons, names, cfg.top_k)
    write_predictions(out, rows, min(cfg.top_k, len(names)))
    return {
        "videos": len(videos),
        "unreadable": int((~outputs.valid).sum()),
        "head": head,
        "protocol": f"{cfg.num_views} clips x 1 centre crop, {clip.num_frames} frames at {clip.size}px",
        "csv": str(out),
        "json": str(out.with_suffix(".json")),
    }


def prediction_rows(
    videos: list[Path], probs: torch.Tensor, valid: torch.Tensor, reasons: dict[str, str], names: list[str], k: int
) -> list[dict[str, Any]]:
    rows = []
    for i, video in enumerate(videos):
        if not valid[i]:
            rows.append({"path": str(video), "top": [], "error": reasons.get(str(video), "could not be read")})
            continue
        p, order = probs[i].sort(descending=True)
        top = [{"class": names[int(c)], "probability": float(q)} for q, c in zip(p[:k], order[:k], strict=True)]
        rows.append({"path": str(video), "top": top, "error": ""})
    return rows


def write_predictions(out: Path, rows: list[dict[str, Any]], k: int) -> None:
    """The CSV (path, class_1, probability_1, ..., error) and the JSON beside it, each atomically."""
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(["path", *[f"{what}_{r}" for r in range(1, k + 1) for what in ("class", "probability")], "error"])
    for row in rows:
        cells = [cell for t in row["top"] for cell in (t["class"], f"{t['probability']:.6f}")]
        writer.writerow([row["path"], *cells, *[""] * (2 * k - len(cells)), row["error"]])
    atomic_write_text(out, text.getvalue())
    atomic_write_text(out.with_suffix(".json"), json.dumps(rows, indent=1))
