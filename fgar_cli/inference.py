"""Running an encoder over a loader: f_A's frame embeddings and f_E's class probabilities.

Results come back in dataset order; a clip whose video could not be read gets NaN and `valid = False`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from fgar_cli.errors import FgarError
from fgar_cli.progress import progress_bar
from fgar_cli.runtime import autocast, to_device


@torch.no_grad()
def embed_clips(model: nn.Module, loader: DataLoader, device: torch.device, what: str) -> tuple[Tensor, Tensor]:
    """f_A embeddings (N, V, T, F) in dataset order, and a (N,) mask of clips that decoded."""
    return _run(model, loader, device, what, lambda out: out.float())


@torch.no_grad()
def predict_clips(model: nn.Module, loader: DataLoader, device: torch.device, what: str) -> tuple[Tensor, Tensor]:
    """f_E class probabilities (N, V, C) in dataset order, and a (N,) mask of clips that decoded."""
    return _run(model, loader, device, what, lambda out: out.float().softmax(-1))


def _run(
    model: nn.Module, loader: DataLoader, device: torch.device, what: str, post: Callable[[Tensor], Tensor]
) -> tuple[Tensor, Tensor]:
    model.eval()
    n = len(loader.dataset)
    result: Tensor | None = None
    valid = torch.zeros(n, dtype=torch.bool)
    with progress_bar() as progress:
        task = progress.add_task(what, total=len(loader), info="")
        for batch in loader:
            progress.advance(task)
            if batch is None:
                continue
            batch = to_device(batch, device)
            clips = batch["video"]
            views = clips.dim() == 6  # (B, V, T, 3, H, W)
            flat = clips.flatten(0, 1) if views else clips
            with autocast(device):
                out = post(model(flat))
            out = out.unflatten(0, clips.shape[:2]) if views else out.unsqueeze(1)
            if result is None:
                result = torch.full((n, *out.shape[1:]), float("nan"))
            idx = batch["index"].cpu()
            result[idx] = out.cpu()
            valid[idx] = True
    if result is None:
        raise FgarError(f"{what}: none of the {n} clips could be read (see the warnings above)")
    return result, valid
