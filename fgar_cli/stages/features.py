"""`fgar data features`: run a frozen per-frame backbone over every frame of a video index, once.

For each entry: decode its frames [start_frame, end_frame) every `stride`-th, cut them into batches,
embed each batch under `torch.inference_mode`, and write the (L, D) float32 result to the feature store
`sequences/<entry id>` (docs/DATA.md, "Feature store"). The store's index (`format` "features") keeps the
video index's ids, labels, subsets and groups, so the video dataset's split files apply to it unchanged.

Backbones:
* `ckpt_a`: the frame backbone of an fgar f_A checkpoint (A0.pt from `pretrain`, A.pt from `fit-labeled`
  or `selftrain`), with the frames prepared exactly as f_A saw them at test time (the recipe's clip size,
  resize to size x 8/7 and centre crop, Kinetics mean/std). The feature of a frame is the backbone's
  output, the vector f_A's `input_proj` reads: the projection, the time embedding and the transformer are
  left out, as they see a frame only together with its neighbours and a model trained on the sequences
  learns its own input layer anyway.
* `backbone` + `weights`: a torchvision classification model built with `weights=None` (nothing is
  downloaded) and the user's state dict, loaded strictly except for the classifier, whose last Linear
  layer becomes an Identity; frames resized (short side) to `size`, centre-cropped, ImageNet mean/std.

Resuming: entries go into `features.h5.partial`, each one written under `pending/` and moved into
`sequences/` by a single HDF5 call, then flushed, so an interruption never leaves a half-written entry
where a rerun would trust it. A rerun with the same backbone and stride skips the entries of the right
shape there. At the end the file is renamed to `features.h5` and `index.json` is written atomically.
The store is written in place, not built in memory like other artifacts (fgar_cli.files): a dataset's
features may not fit in memory, and resuming needs what is on the disk.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from fgar_cli import __version__
from fgar_cli.artifacts import sha256_file
from fgar_cli.checkpoints import build_model, load_checkpoint
from fgar_cli.config import DEFAULT_FEATURE_SIZE, ClipConfig, FeaturesConfig, validate
from fgar_cli.data.index import DatasetIndex, VideoEntry, load_index, save_index
from fgar_cli.data.sequences import FEATURES_SCHEMA, SEQUENCES_GROUP
from fgar_cli.data.transforms import ClipTransform
from fgar_cli.data.video import VideoDecodeError, count_frames, read_frames
from fgar_cli.errors import FgarError
from fgar_cli.files import check_writable_folder, os_error
from fgar_cli.interrupts import Interrupted
from fgar_cli.models import AlignabilityEncoder, EncoderKind, read_weights_file
from fgar_cli.progress import console, progress_bar
from fgar_cli.runtime import resolve_device

FEATURES_FILE = "features.h5"
INDEX_FILE = "index.json"
PARTIAL_SUFFIX = ".partial"
PENDING_GROUP = "pending"  # an entry is written here first, then moved into sequences/ in one call
DECODE_FRAMES = 256  # frames decoded at a time (about): bounds the memory that long, large videos take
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HEAD_NAMES = ("fc", "head", "heads", "classifier")  # torchvision's names for the classifier


@dataclass(frozen=True)
class FrameEncoder:
    """A frozen per-frame network and the frame preparation its weights expect."""

    net: nn.Module  # normalised frames (N, 3, S, S) -> features (N, D), in eval mode on its device
    transform: ClipTransform  # uint8 frames (N, H, W, 3) -> normalised (N, 3, S, S)
    dim: int  # D
    description: str  # the store's `backbone` attribute: JSON text naming the source

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def __call__(self, frames: Tensor) -> Tensor:
        # channels-last: what f_A's forward gives its backbone, and oneDNN's faster layout on the CPU
        return self.net(frames.to(self.device).contiguous(memory_format=torch.channels_last)).float()


@dataclass
class FeaturesSummary:
    store: str
    index: str
    entries: int
    frames: int
    dim: int
    seconds: float
    reused: int  # entries found complete in the partial store of an earlier run
    skipped: list[dict[str, str]] = field(default_factory=list)  # this run's unreadable videos


# --------------------------------------------------------------------------- the stage


def compute_features(cfg: FeaturesConfig) -> FeaturesSummary:
    """For each entry: decode, batch, embed, write; then publish the store and its index."""
    started = time.perf_counter()
    index = load_index(cfg.index)
    if index.is_sequence:
        raise FgarError(f"{cfg.index}: a sequence index ({index.format}); features are computed from videos")
    check_store_names(index, cfg.index)
    out = check_writable_folder(cfg.out_dir)
    final, partial = out / FEATURES_FILE, out / (FEATURES_FILE + PARTIAL_SUFFIX)
    if final.exists() and not cfg.force:
        raise FgarError(f"{final}: a feature store is already there; pass --force to replace it")
    encoder = load_frame_encoder(cfg, resolve_device(cfg.device))

    skipped: list[dict[str, str]] = []
    plans: list[tuple[VideoEntry, np.ndarray, int | None]] = []
    for entry in index.entries:  # every frame range first, so the progress bar knows the total
        try:
            plans.append((entry, *frame_plan(index, entry, cfg.stride)))
        except VideoDecodeError as exc:
            skipped.append(skip(index, entry, exc))
    lengths: dict[str, int] = {}
    reused = 0
    try:
        with open_partial(partial, store_attrs(encoder, cfg.stride), cfg.force) as store, progress_bar() as bar:
            task = bar.add_task("embedding frames", total=sum(len(frames) for _, frames, _ in plans), info="")
            for entry, frames, total in plans:
                bar.update(task, info=entry.id)
                if has_entry(store, entry.id, (len(frames), encoder.dim)):
                    reused += 1
                else:
                    try:
                        features = embed_video(encoder, index.resolve(entry), frames, total, cfg.batch_size)
                    except VideoDecodeError as exc:
                        skipped.append(skip(index, entry, exc))
                        bar.advance(task, len(frames))
                        continue
                    write_entry(store, entry.id, features, partial)
                lengths[entry.id] = len(frames)
                bar.advance(task, len(frames))
            drop_other_entries(store, set(lengths))
    except (Interrupted, KeyboardInterrupt):
        raise Interrupted(
            f"interrupted: {len(lengths)} of {len(plans)} entries are kept in {partial}; "
            "rerun the same command to continue"
        ) from None
    if not lengths:
        raise FgarError(f"{cfg.index}: no entry's video decodes ({len(skipped)} skipped); nothing written")
    publish(partial, final)
    feature_index = features_index(index, out, lengths, encoder.dim, skipped)
    save_index(feature_index, out / INDEX_FILE)
    return FeaturesSummary(
        store=str(final),
        index=str(out / INDEX_FILE),
        entries=len(lengths),
        frames=sum(lengths.values()),
        dim=encoder.dim,
        seconds=time.perf_counter() - started,
        reused=reused,
        skipped=skipped,
    )


def frame_plan(index: DatasetIndex, entry: VideoEntry, stride: int) -> tuple[np.ndarray, int | None]:
    """The absolute frames to embed, and the file's decodable frame count when the index says it."""
    start = entry.start_frame
    if entry.num_frames >= 0:  # counted by `fgar data index`: these frames decode
        end = start + entry.num_frames
        total = end if entry.end_frame < 0 else None
    else:  # a hand-written index: count them now (decodes the whole video once)
        total = count_frames(index.resolve(entry))
        end = total if entry.end_frame < 0 else min(entry.end_frame, total)
    if end <= start:
        raise VideoDecodeError(f"{index.resolve(entry)}: no frame in the range [{start}, {end})")
    return np.arange(start, end, stride), total


@torch.inference_mode()
def embed_video(
    encoder: FrameEncoder, path: Path, frames: np.ndarray, total: int | None, batch_size: int
) -> np.ndarray:
    """Features (L, D) float32 of the given frames of one video, decoded a chunk of whole batches at a time."""
    chunk = batch_size * max(1, DECODE_FRAMES // batch_size)
    parts = []
    for first in range(0, len(frames), chunk):
        pixels = encoder.transform(read_frames(path, frames[first : first + chunk], total_frames=total))
        parts += [encoder(pixels[b : b + batch_size]).cpu() for b in range(0, len(pixels), batch_size)]
    return torch.cat(parts).numpy()


def skip(index: DatasetIndex, entry: VideoEntry, exc: VideoDecodeError) -> dict[str, str]:
    """Warn about a video that does not decode; its record for the index's `skipped` list."""
    path = str(index.resolve(entry))
    reason = str(exc).removeprefix(f"{path}: ")
    console.print(f"warning: skipped {path}: {reason}", soft_wrap=True, markup=False, highlight=False)
    return {"path": path, "reason": reason}


def features_index(
    index: DatasetIndex, out: Path, lengths: Mapping[str, int], dim: int, skipped: list[dict[str, str]]
) -> DatasetIndex:
    """The store's index: the video index's entries (ids, labels, subsets, groups) as sequences of L steps."""
    entries = [
        VideoEntry(
            id=e.id,
            path=FEATURES_FILE,
            label=e.label,
            num_frames=lengths[e.id],
            subset=e.subset,
            key=e.id,
            group=e.group,
        )
        for e in index.entries
        if e.id in lengths
    ]
    return DatasetIndex(
        format="features",
        root=str(out),
        class_names=list(index.class_names),
        entries=entries,
        skipped=[*index.skipped, *skipped],  # videos the video index left out stay listed
        input_dim=dim,
    )


def check_store_names(index: DatasetIndex, where: str) -> None:
    """Entry ids become HDF5 paths `sequences/<id>`: a '/' nests groups, so no empty, '.' or '..' part,
    and no id may be the group of another."""
    ids = {e.id for e in index.entries}
    for entry_id in ids:
        parts = entry_id.split("/")
        if any(part in ("", ".", "..") for part in parts):
            raise FgarError(f"{where}: entry id '{entry_id}' cannot name a dataset of the feature store")
        for n in range(1, len(parts)):
            if "/".join(parts[:n]) in ids:
                raise FgarError(f"{where}: entry id '{'/'.join(parts[:n])}' is a folder of '{entry_id}'")


# --------------------------------------------------------------------------- the backbones


def load_frame_encoder(cfg: FeaturesConfig, device: torch.device) -> FrameEncoder:
    if (cfg.ckpt_a is None) == (cfg.backbone is None):
        raise FgarError("give the frame backbone: --ckpt-a A.pt, or --backbone NAME with --weights FILE")
    if cfg.ckpt_a is not None:
        if cfg.weights is not None:
            raise FgarError("--weights: goes with --backbone; an f_A checkpoint (--ckpt-a) holds its own weights")
        return alignability_frame_encoder(Path(cfg.ckpt_a), cfg.size, device)
    if cfg.weights is None:
        raise FgarError(f"--backbone {cfg.backbone}: needs --weights FILE (fgar never downloads weights)")
    return torchvision_frame_encoder(cfg.backbone, Path(cfg.weights), cfg.size or DEFAULT_FEATURE_SIZE, device)


def alignability_frame_encoder(path: Path, size: int | None, device: torch.device) -> FrameEncoder:
    """f_A's frame backbone, with the frames prepared as f_A's test-time clips are (ClipDataset, test mode)."""
    ckpt = load_checkpoint(path, kind=EncoderKind.ALIGNABILITY)
    recipe = ckpt.get("recipe")
    if not isinstance(recipe, Mapping) or not isinstance(recipe.get("clip"), Mapping):
        raise FgarError(f"{path}: the checkpoint records no clip recipe (frame size)")
    clip = validate(ClipConfig, recipe["clip"], f"{path}: recipe.clip")
    if size is not None and size != clip.size:
        raise FgarError(f"--size {size}: {path} was trained on {clip.size} px frames, which its recipe fixes")
    model = build_model(ckpt, str(path))
    assert isinstance(model, AlignabilityEncoder)
    if model.config.backbone.for_sequences:
        raise FgarError(f"{path}: its frame backbone ({model.config.backbone.value}) reads sequences, not video")
    transform = ClipTransform(clip.size, train=False)  # ClipDataset's own: resize size x 8/7, centre crop
    net = model.backbone.to(device).eval().requires_grad_(False)
    description = {
        "source": "fgar f_A checkpoint",
        "checkpoint": str(path.resolve()),
        "sha256": sha256_file(path),
        "frame_backbone": model.config.backbone.value,
        "width": model.config.width,
        "output": "frame backbone, before input_proj",
        **_frames(transform),
    }
    dim = feature_dim(net, clip.size, str(path))
    return FrameEncoder(net, transform, dim, json.dumps(description, sort_keys=True))


def torchvision_frame_encoder(name: str, weights: Path, size: int, device: torch.device) -> FrameEncoder:
    """A torchvision classification model with the user's weights and an Identity for its last Linear layer."""
    import torchvision.models  # here, not at the top: importing torchvision takes seconds

    known = torchvision.models.list_models(module=torchvision.models)  # classification models only
    if name not in known:
        raise FgarError(f"--backbone {name}: not a torchvision classification model (e.g. {', '.join(known[:6])}, ...)")
    net = torchvision.models.get_model(name, weights=None)  # never a weights enum: nothing downloads
    head = remove_classifier(net, name)
    load_strict(net, weights, head, name)
    transform = ClipTransform(size, train=False, resize=size, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    net = net.to(device).eval().requires_grad_(False)
    description = {
        "source": "torchvision",
        "model": name,
        "weights": str(weights.resolve()),
        "sha256": sha256_file(weights),
        "output": f"{head.rstrip('.')} replaced by Identity",
        **_frames(transform),
    }
    dim = feature_dim(net, size, f"--backbone {name}")
    return FrameEncoder(net, transform, dim, json.dumps(description, sort_keys=True))


def _frames(transform: ClipTransform) -> dict[str, Any]:
    return {"size": transform.size, "resize": transform.short_side, "mean": transform.mean, "std": transform.std}


def remove_classifier(net: nn.Module, name: str) -> str:
    """Replace the classifier's last Linear layer with Identity; returns that layer's state_dict prefix."""
    for attr in HEAD_NAMES:
        head = getattr(net, attr, None)
        if isinstance(head, nn.Linear):
            setattr(net, attr, nn.Identity())
            return f"{attr}."
        if isinstance(head, nn.Sequential):  # vit's heads, vgg's or convnext's classifier: keep what precedes it
            linears = [child for child, module in head.named_children() if isinstance(module, nn.Linear)]
            if linears:
                setattr(head, linears[-1], nn.Identity())
                return f"{attr}.{linears[-1]}."
    raise FgarError(f"--backbone {name}: no classifier ending in a Linear layer ({', '.join(HEAD_NAMES)}) to remove")


def load_strict(net: nn.Module, path: Path, head: str, name: str) -> None:
    """Every tensor of the model from the file and nothing else, the removed classifier's aside (any
    number of classes is fine); a 'module.' prefix (DataParallel) is dropped."""
    state = {k.removeprefix("module."): v for k, v in read_weights_file(path).items()}
    state = {k: v for k, v in state.items() if not k.startswith(head)}
    try:
        result = net.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shapes that do not fit: torch lists them after a heading line
        lines = [line.strip() for line in str(exc).splitlines() if "size mismatch" in line]
        raise FgarError(f"{path}: weights do not fit {name} ({(lines or ['shapes differ'])[0][:200]})") from None
    if result.missing_keys or result.unexpected_keys:
        example = (result.missing_keys + result.unexpected_keys)[0]
        raise FgarError(
            f"{path}: weights do not fit {name}: {len(result.missing_keys)} missing and "
            f"{len(result.unexpected_keys)} unexpected keys (e.g. '{example}')"
        )


@torch.inference_mode()
def feature_dim(net: nn.Module, size: int, who: str) -> int:
    """D, from one blank frame: also proves, before any video is decoded, that the net reads this size."""
    device = next(net.parameters()).device
    try:
        out = net(torch.zeros(1, 3, size, size, device=device))
    except (RuntimeError, AssertionError, ValueError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise FgarError(f"{who}: cannot embed {size} x {size} frames ({first[:160]})") from None
    if out.dim() != 2:
        raise FgarError(f"{who}: gives {tuple(out.shape[1:])} per frame, not a vector")
    return int(out.shape[1])


# --------------------------------------------------------------------------- the store


def store_attrs(encoder: FrameEncoder, stride: int) -> dict[str, Any]:
    return {
        "schema": FEATURES_SCHEMA,
        "schema_version": 1,  # also in the schema's name; `fgar data inspect` shows this one
        "input_dim": encoder.dim,
        "backbone": encoder.description,
        "stride": stride,
        "created_by": f"fgar {__version__}",
    }


# What must agree for a partial store's entries to be reused.
_RESUME_KEYS = ("schema", "input_dim", "backbone", "stride")


@contextmanager
def open_partial(path: Path, attrs: Mapping[str, Any], force: bool) -> Iterator[Any]:
    """The partial store to add entries to: an earlier run's with the same settings, else a new one."""
    import h5py

    if path.exists():
        try:
            store = h5py.File(path, "a")
        except OSError:  # killed in the middle of a write: nothing in it can be trusted
            console.print(f"warning: {path} cannot be read; starting over", soft_wrap=True, markup=False)
            path.unlink()
        else:
            found = {k: _attr(store.attrs.get(k)) for k in _RESUME_KEYS}
            if found == {k: _attr(attrs[k]) for k in _RESUME_KEYS}:
                with store:
                    if PENDING_GROUP in store:  # an entry whose move never happened
                        del store[PENDING_GROUP]
                    yield store
                return
            store.close()
            if not force:
                raise FgarError(
                    f"{path}: an earlier run with another backbone or stride left this partial store; "
                    "rerun with its options to continue it, or pass --force to start over"
                )
            path.unlink()
    try:
        store = h5py.File(path, "w")
    except OSError as exc:
        raise os_error(path, exc, "cannot create the feature store") from None
    with store:
        store.attrs.update(attrs)
        store.require_group(SEQUENCES_GROUP)
        yield store


def _attr(value: Any) -> Any:
    return value.decode() if isinstance(value, bytes) else value.item() if isinstance(value, np.generic) else value


def has_entry(store: Any, entry_id: str, shape: tuple[int, int]) -> bool:
    dataset = store.get(f"{SEQUENCES_GROUP}/{entry_id}")
    return dataset is not None and getattr(dataset, "shape", None) == shape and dataset.dtype == np.float32


def write_entry(store: Any, entry_id: str, features: np.ndarray, path: Path) -> None:
    """Write one entry so that `sequences/<id>` is complete or absent, and flush it to the file."""
    try:
        target = f"{SEQUENCES_GROUP}/{entry_id}"
        if target in store:  # of another shape: an earlier run's, for a changed index
            del store[target]
        pending = f"{PENDING_GROUP}/{entry_id}"
        store.create_dataset(pending, data=features.astype(np.float32, copy=False))
        store.move(pending, target)  # one HDF5 call: an interruption cannot split it
        store.flush()
    except OSError as exc:
        raise os_error(path, exc, "cannot write the feature store") from None


def drop_other_entries(store: Any, keep: set[str]) -> None:
    """Remove what an earlier run wrote for entries this index no longer has (or no longer reads)."""
    import h5py

    found: list[str] = []
    store[SEQUENCES_GROUP].visititems(lambda name, obj: found.append(name) if isinstance(obj, h5py.Dataset) else None)
    for name in found:
        if name not in keep:
            del store[f"{SEQUENCES_GROUP}/{name}"]
    if PENDING_GROUP in store:
        del store[PENDING_GROUP]


def publish(partial: Path, final: Path) -> None:
    try:
        os.replace(partial, final)
    except OSError as exc:
        raise os_error(final, exc, "cannot rename the finished feature store into place") from None
