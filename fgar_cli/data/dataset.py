"""The torch Dataset of clips every training and evaluation stage reads.

`ClipDataset(index, entries, clip, mode)` yields dicts (`clip` is a `ClipConfig`: frames, crop size, flips):
* mode "train": `video` (T, 3, S, S), random segment frames, random crop and flip;
* mode "test": `video` (T, 3, S, S), centre frames and centre crop, or (V, T, 3, S, S) with
  `num_views` V > 1 (view v offsets within segments, see `segment_indices`);
* mode "gitdl": `global` and `local` clips (T, 3, S, S) for GITDL pretraining, each with its own
  random crop and flip (so frames cannot be matched by pixel position alone), and `global_t`,
  `local_t`: float tensors (T,) of absolute frame times;
* mode "pair": for the peer methods' teacher-student training, `weak` (T, 3, S, S), the clip with f_E's
  own training augmentation, or (R, T, 3, S, S) with `weak_views` R > 1 (R draws, for a teacher's repeated
  predictions), and `strong` (T, 3, S, S), the same frames under the `strong` augmentation;
* mode "multiscale": for ACL+MTL, a short clip of T frames every `frame_steps[0]` frames, as `weak`
  and `strong` (T, 3, S, S) like mode "pair", and `long` (N, T, 3, S, S), weak views of N clips every
  frame_steps[1:] frames that contain the short clip's span (`sampling.long_term_indices`);
* mode "tclr": for TCLR pretraining of f_E, `global` (2, T, 3, S, S), two views of the global clip,
  and `local` (2, K, T, 3, S, S), two views of each of the K local clips (`sampling.tclr_indices`);
  every one of these 2 (1 + K) clips gets its own augmentation draw, as in TCLR's code;
plus `label` (int; `labels` overrides by id, e.g. pseudo-labels), `index` (position in
`entries`) and `id`.

Sequence indexes (`index.is_sequence`: per-step vectors from `fgar data features`, pose or sensor
files) yield the same items with steps in place of frames: `video` is (T, D) raw values (NaN where a
channel was never observed; gaps inside a channel are filled by linear interpolation), cut by the
same samplers, and augmented by `SequenceTransform` (time warp, scaling, jitter) in training.

Determinism: each item's randomness comes from numpy's Generator seeded with (seed, epoch,
item position), so samples do not depend on worker count or order, and a run resumed at epoch e
(call `set_epoch(e)` before each epoch) draws exactly the samples the original run drew. The
epoch lives in shared memory, so persistent DataLoader workers see `set_epoch` too.

Bad videos: a missing, empty, truncated or undecodable video (or an empty frame range) makes `__getitem__`
return None, logs one warning for that video and marks it; later reads of a marked video return
None without trying again. `collate_skip_none` drops the Nones from a batch. The marks live in a
shared-memory tensor, so `num_skipped` and `skipped_ids()` count videos skipped in DataLoader
worker processes too; the reasons (`skip_reasons`) are only known in the process that hit them
(complete with num_workers=0, otherwise see the workers' log warnings).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, default_collate

from fgar_cli.config import Augmentation, ClipConfig, SequenceAugmentation, TclrLoss
from fgar_cli.data.frame_cache import FrameCache
from fgar_cli.data.index import DatasetIndex, VideoEntry
from fgar_cli.data.sampling import gitdl_indices, long_term_indices, segment_indices, tclr_indices, temporal_crop
from fgar_cli.data.sequences import SequenceReadError, fill_missing, read_sequence
from fgar_cli.data.transforms import ClipTransform, SequenceTransform
from fgar_cli.data.video import VideoDecodeError, count_frames, read_frames
from fgar_cli.distributed import decode_watchdog
from fgar_cli.errors import FgarError

log = logging.getLogger(__name__)


class ClipMode(StrEnum):
    TRAIN = "train"  # random frames per segment, random crop and flip
    TEST = "test"  # centre frames (or several views), centre crop
    GITDL = "gitdl"  # a global and a local clip of one video, for GITDL pretraining
    TCLR = "tclr"  # two views of a global clip and of its K local clips, for TCLR pretraining
    PAIR = "pair"  # a weak and a strong view of the same frames, for teacher-student training
    MULTISCALE = "multiscale"  # ACL+MTL: a short clip (weak and strong) and long clips that contain it


class ClipDataset(Dataset):
    def __init__(
        self,
        index: DatasetIndex,
        entries: list[VideoEntry],
        clip: ClipConfig,
        mode: ClipMode,
        num_views: int = 1,
        labels: dict[str, int] | None = None,
        seed: int = 0,
        cache: FrameCache | None = None,
        tclr: TclrLoss | None = None,
        strong: Augmentation | SequenceAugmentation | None = None,
        weak_views: int = 1,
        frame_steps: Sequence[int] = (),
    ) -> None:
        try:
            mode = ClipMode(mode)
        except ValueError:
            raise FgarError(f"unknown clip mode '{mode}' (use train, test, gitdl, tclr, pair or multiscale)") from None
        if num_views < 1 or (num_views > 1 and mode != ClipMode.TEST):
            raise FgarError(f"num_views {num_views}: several views are for test mode only")
        self.index = index
        self.entries = entries
        self.num_frames = clip.num_frames
        self.mode = mode
        self.num_views = num_views
        self.labels = labels
        self.seed = seed
        self.tclr = tclr or TclrLoss()
        # Shared memory, so set_epoch in the parent reaches persistent DataLoader workers too.
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()
        train = mode != ClipMode.TEST
        if weak_views < 1 or (weak_views > 1 and mode != ClipMode.PAIR):
            raise FgarError(f"weak_views {weak_views}: several weak views are for pair mode only")
        self.weak_views = weak_views
        if (mode == ClipMode.MULTISCALE) != (len(frame_steps) >= 2):
            raise FgarError(
                f"frame_steps {list(frame_steps)}: multiscale mode, and only it, takes the short clip's frame step "
                "and at least one long clip's"
            )
        self.frame_steps = tuple(frame_steps)
        self.transform: ClipTransform | SequenceTransform
        self.strong_transform: ClipTransform | SequenceTransform | None = None
        if index.is_sequence:
            self.transform = SequenceTransform(train=train, augment=clip.sequence_augment)
            cache = None  # a sequence is read in one go, from memory or HDF5: nothing to decode twice
            if mode in (ClipMode.PAIR, ClipMode.MULTISCALE):
                assert strong is None or isinstance(strong, SequenceAugmentation)
                self.strong_transform = SequenceTransform(train=True, augment=strong)
        else:
            self.transform = ClipTransform(clip.size, train=train, flip=clip.hflip, augment=clip.augment)
            if mode in (ClipMode.PAIR, ClipMode.MULTISCALE):
                assert strong is None or isinstance(strong, Augmentation)
                self.strong_transform = ClipTransform(clip.size, train=True, flip=clip.hflip, augment=strong)
        # the augmentation whose temporal crop training clips use (the video one, for either input)
        self.augment = clip.augment if train else None
        if cache is not None and cache.short_side != self.transform.short_side:
            raise ValueError(f"a frame cache of {cache.short_side} px for clips resized to {self.transform.short_side}")
        self.cache = cache
        # 1 marks a video that failed; shared memory so DataLoader workers' marks reach the parent.
        self._bad = torch.zeros(len(entries), dtype=torch.uint8).share_memory_()
        self.skip_reasons: dict[str, str] = {}
        self._frame_counts: dict[int, int] = {}  # entries indexed without counting (num_frames == -1)

    def __len__(self) -> int:
        return len(self.entries)

    def set_epoch(self, epoch: int) -> None:
        """Call before each epoch's iteration; samples depend on (seed, epoch, item position) only."""
        self._epoch.fill_(epoch)

    @property
    def epoch(self) -> int:
        return int(self._epoch)

    @property
    def num_skipped(self) -> int:
        return int(self._bad.sum())

    def skipped_ids(self) -> list[str]:
        return [self.entries[i].id for i in torch.nonzero(self._bad).flatten().tolist()]

    def __getitem__(self, i: int) -> dict[str, Any] | None:
        if self._bad[i]:
            return None
        entry = self.entries[i]
        rng = np.random.default_rng([self.seed, self.epoch, i])
        try:
            item = self._load(i, entry, rng)
        except VideoDecodeError as exc:
            self._skip(i, entry, str(exc))
            return None
        item.update(label=self.label(i), index=i, id=entry.id)
        return item

    def label(self, i: int) -> int:
        """The label of item i: `labels[id]` where given (e.g. a pseudo-label), else the index's."""
        entry = self.entries[i]
        return int(entry.label if self.labels is None else self.labels.get(entry.id, entry.label))

    def _load(self, i: int, entry: VideoEntry, rng: np.random.Generator) -> dict[str, Any]:
        path = self.index.resolve(entry)
        start, end, total = self._frame_range(i, entry)
        if end <= start:
            raise VideoDecodeError(f"{path}: no frame in the range [{start}, {end})")
        if self.mode == ClipMode.GITDL:
            global_idx, local_idx = gitdl_indices(start, end, self.num_frames, rng)
            frames = self._read(entry, path, [global_idx, local_idx], start, end, total)
            return {
                "global": self.transform(frames[0], rng),
                "local": self.transform(frames[1], rng),
                "global_t": torch.from_numpy(global_idx.astype(np.float32)),
                "local_t": torch.from_numpy(local_idx.astype(np.float32)),
            }
        if self.mode == ClipMode.TCLR:
            local_frames = self.tclr.local_frames or self.num_frames
            global_idx, local_idx = tclr_indices(start, end, self.num_frames, self.tclr.local_clips, local_frames, rng)
            frames = self._read(entry, path, [global_idx, *local_idx], start, end, total)
            views = [[self.transform(clip, rng).numpy() for clip in frames] for _ in range(2)]
            return {  # numpy's stack, as below
                "global": torch.from_numpy(np.stack([view[0] for view in views])),
                "local": torch.from_numpy(np.stack([np.stack(view[1:]) for view in views])),
            }
        if self.mode == ClipMode.MULTISCALE:
            assert self.strong_transform is not None
            short_step, *long_steps = self.frame_steps
            clips = long_term_indices(end - start, self.num_frames, long_steps, rng, short_interval=short_step)
            frames = self._read(entry, path, [start + c for c in clips], start, end, total)
            return {
                "weak": self.transform(frames[0], rng),
                "strong": self.strong_transform(frames[0], rng),
                "long": torch.from_numpy(np.stack([self.transform(f, rng).numpy() for f in frames[1:]])),
            }
        if self.mode in (ClipMode.TRAIN, ClipMode.PAIR):
            window = (start, end)
            if self.augment is not None and self.augment.temporal_crop < 1:
                window = temporal_crop(start, end, self.augment.temporal_crop, rng)
            clip = self._read(entry, path, [segment_indices(*window, self.num_frames, True, rng)], start, end, total)[0]
            if self.mode == ClipMode.TRAIN:
                return {"video": self.transform(clip, rng)}
            assert self.strong_transform is not None
            weak = [self.transform(clip, rng) for _ in range(self.weak_views)]
            return {
                "weak": weak[0] if self.weak_views == 1 else torch.from_numpy(np.stack([w.numpy() for w in weak])),
                "strong": self.strong_transform(clip, rng),
            }
        views = [
            segment_indices(start, end, self.num_frames, False, None, view, self.num_views)
            for view in range(self.num_views)
        ]
        clips = [self.transform(frames) for frames in self._read(entry, path, views, start, end, total)]
        if self.num_views == 1:
            return {"video": clips[0]}
        # numpy's stack: torch.stack of these took 48 ms instead of 0.3 with 2 threads on a busy CPU
        return {"video": torch.from_numpy(np.stack([clip.numpy() for clip in clips]))}

    def _read(
        self, entry: VideoEntry, path: Path, clips: Sequence[np.ndarray], start: int, end: int, total: int | None
    ) -> list[np.ndarray]:
        """The frames of several index arrays, decoded in one pass (or from the frame cache); one
        (T, H, W, 3) array per clip."""
        if self.index.is_sequence:
            return self._read_steps(entry, path, clips, end)
        wanted = np.concatenate(clips)
        watchdog = decode_watchdog()  # under torchrun: a hung decode names its rank and file
        with watchdog.watch(path) if watchdog is not None else contextlib.nullcontext():
            if self.cache is not None:
                frames = self.cache.read(path, wanted, start, end, total)
            else:
                frames = read_frames(path, wanted, total_frames=total)
        return np.split(frames, np.cumsum([len(c) for c in clips])[:-1])

    def _read_steps(self, entry: VideoEntry, path: Path, clips: Sequence[np.ndarray], end: int) -> list[np.ndarray]:
        """The steps (T, D) of several index arrays of the entry's sequence (record `key` of `path`)."""
        steps = fill_missing(read_sequence(path, entry.key))
        if len(steps) < end or steps.shape[1] != self.index.input_dim:
            raise SequenceReadError(
                f"{path}{f' [{entry.key}]' if entry.key else ''}: {steps.shape[0]} steps of {steps.shape[1]} values, "
                f"the index says {end} of {self.index.input_dim} (re-run `fgar data index`)"
            )
        return [steps[idx] for idx in clips]

    def _frame_range(self, i: int, entry: VideoEntry) -> tuple[int, int, int | None]:
        """[start, end) of decodable frames, and the file's total decodable count when known."""
        start = entry.start_frame
        if entry.num_frames >= 0:  # counted at indexing: decodable frames in [start, end_frame)
            total = start + entry.num_frames if entry.end_frame < 0 else None
            return start, start + entry.num_frames, total
        if i not in self._frame_counts:
            self._frame_counts[i] = count_frames(self.index.resolve(entry))
        total = self._frame_counts[i]
        end = total if entry.end_frame < 0 else min(entry.end_frame, total)
        return start, end, total

    def _skip(self, i: int, entry: VideoEntry, reason: str) -> None:
        self._bad[i] = 1
        self.skip_reasons[entry.id] = reason
        log.warning("skipping video '%s': %s", entry.id, reason)


def collate_skip_none(batch: list[dict[str, Any] | None]) -> dict[str, Any] | None:
    """Batch the items that are not None (skipped videos); None when every item was skipped.

    Like default_collate, except that tensors are stacked with numpy: torch.stack of a batch of
    clips took 118 ms instead of 0.5 ms with 2 intra-op threads on a busy 2-core CPU, and with
    num_workers=0 collation runs in the main process under the model's thread setting.
    """
    kept = [item for item in batch if item is not None]
    if not kept:
        return None
    collated = {}
    for key in kept[0]:
        values = [item[key] for item in kept]
        if isinstance(values[0], torch.Tensor):
            collated[key] = torch.from_numpy(np.stack([v.numpy() for v in values]))
        else:
            collated[key] = default_collate(values)
    return collated
