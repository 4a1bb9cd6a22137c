"""Running the encoders over a loader: f_E's class probabilities and f_A's frame embeddings, from
one pass over the clips (each clip is decoded and transformed once, whichever encoders run).

Results come back in dataset order; a clip whose video could not be read gets NaN and `valid = False`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from fgar_cli import distributed
from fgar_cli.errors import FgarError
from fgar_cli.progress import progress_bar
from fgar_cli.runtime import autocast, to_device


@dataclass
class Outputs:
    probs: Tensor | None  # (N, V, C): f_E's softmax, when f_E ran
    embeddings: Tensor | None  # (N, V, T, F): f_A's frame embeddings, when f_A ran
    valid: Tensor  # (N,) bool: the clip's video could be read
    mc_probs: Tensor | None = None  # (N, V, passes, C): f_E's MC-dropout softmax, when asked for


@torch.inference_mode()
def run_encoders(
    loader: DataLoader,
    device: torch.device,
    what: str,
    action: nn.Module | None = None,
    alignability: nn.Module | None = None,
    mc_passes: int = 0,
    mc_seed: int = 0,
) -> Outputs:
    """f_E's probabilities and/or f_A's embeddings for every clip of `loader`'s dataset, in one pass.

    With `mc_passes` > 0, also f_E's softmax under that many draws of its dropout (MC dropout, as UPS
    estimates uncertainty). f_E's only dropout sits before its linear classifier, so the trunk runs
    once and each pass redraws the mask on the pooled features: the same as rerunning the whole
    network with dropout on, at the cost of a matrix product. Each clip's masks come from `mc_seed`
    and its place in the dataset alone, so they do not depend on the batch it ran in, on which clips
    before it could be read, or on the rank that ran it (under torchrun)."""
    models = {"probs": action, "embeddings": alignability}
    for model in models.values():
        if model is not None:
            model.eval()
    n = len(loader.dataset)
    results: dict[str, Tensor] = {}
    valid = torch.zeros(n, dtype=torch.bool)
    shard = RankBatches(loader, distributed.world())
    views = getattr(loader.dataset, "num_views", 1)
    with progress_bar() as progress:
        task = progress.add_task(what, total=len(shard), info="")
        for batch in shard:
            progress.advance(task)
            if batch is None:
                continue
            clips = to_device(batch, device)["video"]
            several = views > 1  # (B, V, T, 3, H, W) or, sequences, (B, V, T, D)
            flat = clips.flatten(0, 1) if several else clips
            idx = batch["index"]
            outputs: dict[str, Tensor] = {}
            for name, model in models.items():
                if model is None:
                    continue
                if name == "probs" and mc_passes:
                    assert action is not None
                    masks = dropout_masks(idx.tolist(), mc_passes, views, action.feature_dim, mc_seed)
                    outputs["probs"], outputs["mc_probs"] = _mc_dropout(action, flat, device, masks)
                    continue
                with autocast(device):
                    out = model(flat).float()
                outputs[name] = out.softmax(-1) if name == "probs" else out
            for name, out in outputs.items():
                out = out.unflatten(0, clips.shape[:2]) if several else out.unsqueeze(1)
                if name not in results:
                    results[name] = torch.full((n, *out.shape[1:]), float("nan"))
                results[name][idx] = out.cpu()
            valid[idx] = True
    if shard.place.distributed:
        results, valid = _gather(results, valid)
    if not valid.any():
        raise FgarError(f"{what}: none of the {n} clips could be read (see the warnings above)")
    return Outputs(results.get("probs"), results.get("embeddings"), valid, results.get("mc_probs"))


class RankBatches:
    """The batches of `loader` this rank runs: batch k goes to rank k mod N (all of them in one
    process), so each batch holds the clips it holds in one process and scores come out bit-equal.
    Yields each batch, or None for a batch none of whose clips could be read."""

    def __init__(self, loader: DataLoader, place: distributed.World) -> None:
        self.loader, self.place = loader, place
        size, n = loader.batch_size or 1, len(loader.dataset)
        self.mine = [list(range(k, min(k + size, n))) for k in range(place.rank * size, n, place.size * size)]

    def __len__(self) -> int:
        return len(self.mine)

    def __iter__(self) -> Iterator[dict[str, Any] | None]:
        if not self.place.distributed:
            yield from self.loader
            return
        yield from DataLoader(
            self.loader.dataset,
            batch_sampler=self.mine,
            num_workers=self.loader.num_workers,
            collate_fn=self.loader.collate_fn,
        )


def _gather(results: dict[str, Tensor], valid: Tensor) -> tuple[dict[str, Tensor], Tensor]:
    """Every rank's rows in one result: each clip was run on one rank, so summing over ranks with
    zeros elsewhere gives its value exactly (x + 0 = x); never-read clips stay NaN."""
    # a rank that read no clip has no result yet: the shapes come from the ranks that did
    shapes: dict[str, tuple[int, ...]] = {}
    for theirs in distributed.gather_objects({name: tuple(t.shape) for name, t in results.items()}):
        shapes.update(theirs)
    counts = distributed.sum_over_ranks(valid.to(torch.int32))
    gathered = {}
    for name in sorted(shapes):  # the same order on every rank
        mine = results.get(name, torch.full(shapes[name], float("nan")))
        summed = distributed.sum_over_ranks(torch.where(_rows(valid, mine), mine, torch.zeros_like(mine)))
        gathered[name] = torch.where(_rows(counts > 0, summed), summed, torch.full_like(summed, float("nan")))
    return gathered, counts > 0


def _rows(mask: Tensor, like: Tensor) -> Tensor:
    return mask.view(-1, *([1] * (like.ndim - 1))).expand_as(like)


def dropout_masks(clips: list[int], passes: int, views: int, features: int, seed: int) -> Tensor:
    """Uniform draws (passes, len(clips) * views, features) for the dropout masks of these dataset
    places, clip-major as a batch flattens its views; each clip's draws from (seed, its place) only."""
    draws = [np.random.default_rng([seed, clip]).random((passes, views, features), dtype=np.float32) for clip in clips]
    return torch.from_numpy(np.concatenate(draws, axis=1)) if draws else torch.empty(passes, 0, features)


def _mc_dropout(action: nn.Module, clips: Tensor, device: torch.device, draws: Tensor) -> tuple[Tensor, Tensor]:
    """f_E's softmax without dropout (B, C), and under one dropout mask per pass of `draws`
    (passes, B, features), as (B, passes, C)."""
    with autocast(device):
        features = action.features(clips).float()
    keep = 1.0 - action.dropout.p
    passes = draws.shape[0]
    masks = draws.to(features.device) < keep
    dropped = features * masks / keep if keep < 1 else features.expand(passes, *features.shape)
    samples = action.fc(dropped).softmax(-1).transpose(0, 1)
    return action.fc(features).softmax(-1), samples


def embed_clips(model: nn.Module, loader: DataLoader, device: torch.device, what: str) -> tuple[Tensor, Tensor]:
    """f_A embeddings (N, V, T, F) in dataset order, and a (N,) mask of clips that decoded."""
    out = run_encoders(loader, device, what, alignability=model)
    assert out.embeddings is not None
    return out.embeddings, out.valid


def predict_clips(model: nn.Module, loader: DataLoader, device: torch.device, what: str) -> tuple[Tensor, Tensor]:
    """f_E class probabilities (N, V, C) in dataset order, and a (N,) mask of clips that decoded."""
    out = run_encoders(loader, device, what, action=model)
    assert out.probs is not None
    return out.probs, out.valid
