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
    network with dropout on, at the cost of a matrix product. The masks come from `mc_seed`."""
    models = {"probs": action, "embeddings": alignability}
    generator: torch.Generator | None = None
    if mc_passes and action is not None:
        generator = torch.Generator(device).manual_seed(mc_seed)
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
            views = getattr(loader.dataset, "num_views", 1) > 1  # (B, V, T, 3, H, W) or, sequences, (B, V, T, D)
            flat = clips.flatten(0, 1) if views else clips
            idx = batch["index"]
            outputs: dict[str, Tensor] = {}
            for name, model in models.items():
                if model is None:
                    continue
                if name == "probs" and generator is not None:
                    assert action is not None
                    outputs["probs"], outputs["mc_probs"] = _mc_dropout(action, flat, device, mc_passes, generator)
                    continue
                with autocast(device):
                    out = model(flat).float()
                outputs[name] = out.softmax(-1) if name == "probs" else out
            for name, out in outputs.items():
                out = out.unflatten(0, clips.shape[:2]) if views else out.unsqueeze(1)
                if name not in results:
                    results[name] = torch.full((n, *out.shape[1:]), float("nan"))
                results[name][idx] = out.cpu()
            valid[idx] = True
    if not valid.any():
        raise FgarError(f"{what}: none of the {n} clips could be read (see the warnings above)")
    return Outputs(results.get("probs"), results.get("embeddings"), valid, results.get("mc_probs"))


def _mc_dropout(
    action: nn.Module, clips: Tensor, device: torch.device, passes: int, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """f_E's softmax without dropout (B, C), and under `passes` dropout masks (B, passes, C)."""
    with autocast(device):
        features = action.features(clips).float()
    keep = 1.0 - action.dropout.p
    masks = torch.rand((passes, *features.shape), generator=generator, device=features.device) < keep
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
