"""Running the encoders over a loader: f_E's class probabilities and f_A's frame embeddings, from
one pass over the clips (each clip is decoded and transformed once, whichever encoders run).

Results come back in dataset order; a clip whose video could not be read gets NaN and `valid = False`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from fgar_cli.errors import FgarError
from fgar_cli.progress import progress_bar
from fgar_cli.runtime import autocast, to_device


@dataclass
class Outputs:
    probs: Tensor | None  # (N, V, C): f_E's softmax, when f_E ran
    embeddings: Tensor | None  # (N, V, T, F): f_A's frame embeddings, when f_A ran
    valid: Tensor  # (N,) bool: the clip's video could be read


@torch.inference_mode()
def run_encoders(
    loader: DataLoader,
    device: torch.device,
    what: str,
    action: nn.Module | None = None,
    alignability: nn.Module | None = None,
) -> Outputs:
    """f_E's probabilities and/or f_A's embeddings for every clip of `loader`'s dataset, in one pass."""
    models = {"probs": action, "embeddings": alignability}
    for model in models.values():
        if model is not None:
            model.eval()
    n = len(loader.dataset)
    results: dict[str, Tensor] = {}
    valid = torch.zeros(n, dtype=torch.bool)
    with progress_bar() as progress:
        task = progress.add_task(what, total=len(loader), info="")
        for batch in loader:
            progress.advance(task)
            if batch is None:
                continue
            clips = to_device(batch, device)["video"]
            views = clips.dim() == 6  # (B, V, T, 3, H, W)
            flat = clips.flatten(0, 1) if views else clips
            idx = batch["index"]
            for name, model in models.items():
                if model is None:
                    continue
                with autocast(device):
                    out = model(flat).float()
                if name == "probs":
                    out = out.softmax(-1)
                out = out.unflatten(0, clips.shape[:2]) if views else out.unsqueeze(1)
                if name not in results:
                    results[name] = torch.full((n, *out.shape[1:]), float("nan"))
                results[name][idx] = out.cpu()
            valid[idx] = True
    if not valid.any():
        raise FgarError(f"{what}: none of the {n} clips could be read (see the warnings above)")
    return Outputs(results.get("probs"), results.get("embeddings"), valid)


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
