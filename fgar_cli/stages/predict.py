"""`fgar predict`: what a trained f_E (and, given f_A, FinePseudo's collaborative classifier) says
about new videos or sequences, with no labels, split or index.

The inputs are read as evaluation reads its test clips (`num_views` clips x 1 centre crop, the clip
settings f_E was trained with) and their views averaged. With f_A, its non-parametric classifier
compares every input with the labeled gallery of f_E's training data (Eq. 7-8) and the prediction is
the average of both (the "combined" head of `fgar evaluate`). Writes a CSV with one row per input
(its top-k classes and probabilities; an `error` column for one that could not be read) and the
same as JSON beside it.

A sequence model (f_E trained on a sequence index) reads sequence files instead of videos: .npy (one
sequence), .npz (each array one sequence; FILE.npz:NAME picks one), .ts (each case, its label
ignored) and fgar feature stores .h5 (each `sequences/<key>`), given as files, folders or lists. A
record of a file that holds several is named FILE:KEY in the output.
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
from fgar_cli.data.adapters import VIDEO_SUFFIXES, npz_member
from fgar_cli.data.batches import inference_loader
from fgar_cli.data.dataset import ClipDataset, ClipMode
from fgar_cli.data.index import NO_LABEL, DatasetIndex, VideoEntry
from fgar_cli.data.run_data import load_run_data
from fgar_cli.data.sequences import SEQUENCE_SUFFIXES, SequenceReadError, read_sequence, sequence_keys
from fgar_cli.errors import FgarError
from fgar_cli.files import check_output_file, read_text
from fgar_cli.inference import run_encoders
from fgar_cli.method.gallery import head_probabilities, require_fittable_tau
from fgar_cli.runtime import resolve_device, seed_everything

LIST_SUFFIXES = {".txt", ".lst"}


def collect_inputs(inputs: list[str], suffixes: tuple[str, ...], what: str) -> list[Path]:
    """The files named by `inputs`: files, folders (searched recursively for files ending in one of
    `suffixes`) and .txt/.lst lists (one path per line, relative to the list's folder; '#' starts a
    comment). A list's line or an input may name one array of an .npz as FILE.npz:NAME."""
    files: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.suffix.lower() in suffixes and f.is_file())
        elif p.suffix.lower() in LIST_SUFFIXES and p.is_file():
            lines = [line.split("#", 1)[0].strip() for line in read_text(p, f"{what} list").splitlines()]
            files += [q if (q := Path(line)).is_absolute() else p.parent / q for line in lines if line]
        elif p.exists() or Path(npz_member(item)[0]).is_file():
            files.append(p)
        else:
            raise FgarError(f"{p}: not found (give {what} files, folders of them or .txt lists of paths)")
    if not files:
        raise FgarError(f"no {what} found in {', '.join(inputs) or 'the inputs'} (pass --input FILE, FOLDER or LIST)")
    return list(dict.fromkeys(f.resolve() for f in files))


def collect_videos(inputs: list[str]) -> list[Path]:
    """The videos named by `inputs` (see `collect_inputs`)."""
    return collect_inputs(inputs, VIDEO_SUFFIXES, "video")


def sequence_entries(files: list[Path], input_dim: int) -> tuple[list[str], list[VideoEntry], dict[str, str]]:
    """The name of every sequence record of `files` in order (FILE:KEY for a record of a file that holds
    several); an entry, with its length, per readable record; and the reason of each record (or file)
    that cannot be read or has not `input_dim` values per step."""
    names: dict[str, None] = {}  # ordered, each name once (an input may name FILE and FILE:KEY)
    entries: list[VideoEntry] = []
    unreadable: dict[str, str] = {}
    for file in files:
        path, key = npz_member(str(file))
        try:
            keys = [key] if key else sequence_keys(Path(path))
        except SequenceReadError as exc:
            names[str(file)] = None
            unreadable[str(file)] = str(exc)
            continue
        several = len(keys) > 1 or Path(path).suffix.lower() in (".ts", ".h5", ".hdf5")
        for record in keys:
            name = f"{path}:{record}" if several or key else path
            if name in names:
                continue
            names[name] = None
            try:
                steps = read_sequence(Path(path), record, input_dim)
            except SequenceReadError as exc:
                unreadable[name] = str(exc)
                continue
            entries.append(
                VideoEntry(id=name, path=path, label=NO_LABEL, subset="unlabeled", key=record, num_frames=len(steps))
            )
    return list(names), entries, unreadable


def predict(cfg: PredictConfig) -> dict[str, Any]:
    seed_everything(cfg.run.seed)
    out = check_output_file(cfg.out)  # before the work, not after it
    encoders = load_encoders(cfg.ckpt_e, cfg.ckpt_a, need_alignability=False)
    input_dim = encoders.action.model.config.input_dim
    if input_dim:  # a sequence model: records of sequence files
        files = collect_inputs(cfg.inputs, SEQUENCE_SUFFIXES, "sequence file")
        inputs, entries, unreadable = sequence_entries(files, input_dim)
    else:
        videos = collect_videos(cfg.inputs)
        entries = [VideoEntry(id=str(v), path=str(v), label=NO_LABEL, subset="unlabeled") for v in videos]
        inputs, unreadable = [str(v) for v in videos], {}
    device = resolve_device(cfg.run.device)
    encoders.to(device)
    data = None
    if encoders.alignability is not None:  # f_A's gallery: the labeled split f_E was trained on
        data = load_run_data(encoders.data_paths(DataPaths()), cfg.run)
        encoders.check_data(data)
        require_fittable_tau(data, cfg.classifier)  # before the inputs are run, not after
    names = encoders.class_names
    clip = encoders.action.recipe.clip
    rows = []
    head = "combined" if encoders.alignability is not None else "action"
    if entries:
        index = DatasetIndex("predict", "/", names, entries, allow_outside_root=True, input_dim=input_dim)
        dataset = ClipDataset(index, entries, clip, ClipMode.TEST, num_views=cfg.num_views)
        loader = inference_loader(dataset, max(1, cfg.run.inference_batch_size // cfg.num_views))
        model_a = encoders.alignability.model if encoders.alignability is not None else None
        what = "sequences" if input_dim else "videos"
        outputs = run_encoders(loader, device, what, encoders.action.model, model_a)
        heads, _ = head_probabilities(
            encoders, outputs, data, cfg.classifier, cfg.run.inference_batch_size, cfg.run.seed
        )
        head = "combined" if "combined" in heads else "action"
        rows = prediction_rows(
            [e.id for e in entries], heads[head], outputs.valid, dataset.skip_reasons, names, cfg.top_k
        )
    rows += [{"path": name, "top": [], "error": reason} for name, reason in unreadable.items()]
    position = {name: i for i, name in enumerate(inputs)}
    rows.sort(key=lambda row: position[row["path"]])  # the inputs' order, unreadable ones in their place
    write_predictions(out, rows, min(cfg.top_k, len(names)))
    if input_dim:
        protocol = f"{cfg.num_views} clips of {clip.num_frames} steps"
    else:
        protocol = f"{cfg.num_views} clips x 1 centre crop, {clip.num_frames} frames at {clip.size}px"
    return {
        "sequences" if input_dim else "videos": len(rows),
        "unreadable": sum(1 for row in rows if row["error"]),
        "head": head,
        "protocol": protocol,
        "csv": str(out),
        "json": str(out.with_suffix(".json")),
    }


def prediction_rows(
    ids: list[str], probs: torch.Tensor, valid: torch.Tensor, reasons: dict[str, str], names: list[str], k: int
) -> list[dict[str, Any]]:
    rows = []
    for i, name in enumerate(ids):
        if not valid[i]:
            rows.append({"path": name, "top": [], "error": reasons.get(name, "could not be read")})
            continue
        p, order = probs[i].sort(descending=True)
        top = [{"class": names[int(c)], "probability": float(q)} for q, c in zip(p[:k], order[:k], strict=True)]
        rows.append({"path": name, "top": top, "error": ""})
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
