"""The data of a run: a dataset index, a label split, and the classes the models know."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from fgar_cli.config import Augmentation, ClipConfig, DataPaths, RunConfig, SequenceAugmentation, TclrLoss
from fgar_cli.data.dataset import ClipDataset, ClipMode
from fgar_cli.data.frame_cache import FrameCache, open_cache
from fgar_cli.data.index import NO_LABEL, NO_TRUTH, DatasetIndex, VideoEntry, load_index
from fgar_cli.data.sequences import SequenceReadError, channel_stats, read_sequence
from fgar_cli.data.splits import Split, check_split, load_split
from fgar_cli.data.transforms import ClipTransform
from fgar_cli.errors import FgarError
from fgar_cli.progress import console


@dataclass
class RunData:
    """The index, the split and the class set of a run.

    The models' classes are the split's known classes (open world) or all of the index's classes.
    `label_of` maps a video id to its model class, -1 for a clip of a class the models do not
    know (a novel clip in the open-world protocol), or NO_TRUTH for a clip nobody labeled.
    """

    index: DatasetIndex
    split: Split
    paths: DataPaths  # absolute, so that a later stage finds the data from anywhere
    class_names: list[str]
    label_of: dict[str, int]
    run: RunConfig = field(default_factory=RunConfig)
    caches: dict[int, FrameCache | None] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def entries(self, ids: list[str]) -> list[VideoEntry]:
        by_id = self.index.by_id()
        return [by_id[i] for i in ids]

    def labels(self, ids: list[str]) -> dict[str, int]:
        """The true model class of each clip (-1 for an unknown class, NO_TRUTH where nobody knows)."""
        return {i: self.label_of[i] for i in ids}

    def truth(self, ids: list[str]) -> np.ndarray:
        return np.array([self.label_of[i] for i in ids], dtype=np.int64)

    def clips(
        self,
        ids: list[str],
        clip: ClipConfig,
        mode: ClipMode,
        labels: dict[str, int] | None = None,
        num_views: int = 1,
        seed: int = 0,
        tclr: TclrLoss | None = None,
        strong: Augmentation | SequenceAugmentation | None = None,
        weak_views: int = 1,
        frame_steps: Sequence[int] = (),
    ) -> ClipDataset:
        """A ClipDataset over `ids`, labelled with the true model classes unless `labels` says otherwise
        (`strong`, `weak_views`: the views of ClipMode.PAIR; `frame_steps`: ClipMode.MULTISCALE's clips)."""
        return ClipDataset(
            self.index,
            self.entries(ids),
            clip,
            mode,
            num_views=num_views,
            labels=labels if labels is not None else self.labels(ids),
            seed=seed,
            cache=self.frame_cache(ClipTransform(clip.size, train=False).short_side),
            tclr=tclr,
            strong=strong,
            weak_views=weak_views,
            frame_steps=frame_steps,
        )

    def frame_cache(self, short_side: int) -> FrameCache | None:
        """The run's frame cache at this short side (decided once, on the split's videos); none for
        sequence indexes, which have nothing to decode."""
        if self.index.is_sequence:
            return None
        if short_side not in self.caches:
            ids = self.split.labeled + self.split.unlabeled + self.split.test
            videos = [(self.index.resolve(e), e.num_frames) for e in self.entries(ids)]
            self.caches[short_side], line = open_cache(
                videos, short_side, self.run.frame_cache, self.run.frame_cache_gb
            )
            console.print(line, soft_wrap=True, markup=False)
        return self.caches[short_side]


def load_run_data(paths: DataPaths, run: RunConfig | None = None) -> RunData:
    if not paths.index:
        raise FgarError("no dataset index given: pass --index (made by `fgar data index`)")
    if not paths.split:
        raise FgarError("no label split given: pass --split (made by `fgar data split`)")
    index = load_index(paths.index)
    split = load_split(paths.split)
    check_split(split, index, paths.split)
    class_ids = sorted(split.known_classes) if split.known_classes is not None else list(range(len(index.class_names)))
    model_class = {c: k for k, c in enumerate(class_ids)}
    return RunData(
        index=index,
        split=split,
        paths=DataPaths(index=str(Path(paths.index).resolve()), split=str(Path(paths.split).resolve())),
        class_names=[index.class_names[c] for c in class_ids],
        label_of={e.id: NO_TRUTH if e.label == NO_LABEL else model_class.get(e.label, -1) for e in index.entries},
        run=run or RunConfig(),
    )


# Sequences that `input_stats` reads at most: the statistics of a channel settle long before, and a
# feature store of 15,000 clips need not be read whole before training starts.
STATS_SAMPLE = 1000


def fit_input_norm(data: RunData, seed: int, *models: torch.nn.Module) -> None:
    """Set sequence models' input normalisation from the run's training clips (labeled and unlabeled,
    never test; read once for all `models`), except where a model came with one (from pretrained
    weights); videos: nothing to do."""
    from fgar_cli.models import needs_input_stats, set_input_stats  # here: models import the data layer

    unset = [model for model in models if needs_input_stats(model)] if data.index.is_sequence else []
    if unset:
        stats = input_stats(data, data.split.labeled + data.split.unlabeled, seed)
        for model in unset:
            set_input_stats(model, *stats)


def input_stats(data: RunData, ids: list[str], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std (D,) of a sequence index's clips `ids` (at most STATS_SAMPLE of them,
    chosen by seed), for the models' InputNorm. Unreadable sequences are left out, as training skips them."""
    ordered = sorted(ids)
    chosen = [ordered[k] for k in np.random.default_rng(seed).permutation(len(ordered))[:STATS_SAMPLE]]
    arrays = []
    for entry in data.entries(chosen):
        try:
            arrays.append(read_sequence(data.index.resolve(entry), entry.key))
        except SequenceReadError:
            continue
    if not arrays:
        raise FgarError(f"{data.paths.index}: none of the {len(chosen)} training sequences could be read")
    mean, std = channel_stats(arrays)
    return torch.as_tensor(mean, dtype=torch.float32), torch.as_tensor(std, dtype=torch.float32)
