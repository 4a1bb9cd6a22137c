"""One epoch of each kind of training, and inference over a loader.

`train_action_epoch` is Eq. 6 (cross-entropy for f_E), `train_alignability_epoch` is Eq. 5
(L_AV = L_AT + omega * L_Score for f_A), `train_gitdl_epoch` is the self-supervised pretraining.
`embed_clips` and `predict_clips` run the encoders over a loader and return results in dataset
order (a clip whose video could not be read gets NaN and `valid = False`).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from fgar_cli.losses import alignability_loss, gitdl_loss
from fgar_cli.softdtw import pairwise_soft_dtw
from fgar_cli.stages.common import Meter, autocast, check_finite, progress_bar, to_device


def train_action_epoch(
    model: nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    what: str,
    last_good: Path | None,
) -> dict[str, float]:
    model.train()
    meter = Meter()
    with progress_bar() as progress:
        task = progress.add_task(what, total=len(loader), info="")
        for batch in loader:
            progress.advance(task)
            if batch is None:
                continue
            batch = to_device(batch, device)
            with autocast(device):
                logits = model(batch["video"]).float()
            loss = F.cross_entropy(logits, batch["label"])
            check_finite(loss, what, last_good)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            acc = (logits.argmax(1) == batch["label"]).float().mean()
            meter.update(len(batch["label"]), loss=loss.item(), acc=acc.item())
            progress.update(task, info=meter.info())
    return meter.means()


def train_alignability_epoch(
    model: nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    gamma: float,
    margin: float,
    omega: float,
    what: str,
    last_good: Path | None,
) -> dict[str, float]:
    model.train()
    meter = Meter()
    with progress_bar() as progress:
        task = progress.add_task(what, total=len(loader), info="")
        for batch in loader:
            progress.advance(task)
            if batch is None:
                continue
            batch = to_device(batch, device)
            with autocast(device):
                embeddings = model(batch["video"])
            terms = alignability_loss(embeddings.float(), batch["label"], model.score_head, gamma, margin, omega)
            terms.pop("distances")
            check_finite(terms["loss"], what, last_good)
            optimizer.zero_grad(set_to_none=True)
            terms["loss"].backward()
            optimizer.step()
            meter.update(len(batch["label"]), **{k: v.item() for k, v in terms.items()})
            progress.update(task, info=meter.info())
    return meter.means()


def train_gitdl_epoch(
    model: nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    tau: float,
    sigma: float,
    cross_video_negatives: bool,
    what: str,
    last_good: Path | None,
) -> dict[str, float]:
    model.train()
    meter = Meter()
    with progress_bar() as progress:
        task = progress.add_task(what, total=len(loader), info="")
        for batch in loader:
            progress.advance(task)
            if batch is None:
                continue
            batch = to_device(batch, device)
            with autocast(device):
                local = model(batch["local"])
                global_ = model(batch["global"])
            loss = gitdl_loss(
                local.float(),
                global_.float(),
                batch["local_t"].float(),
                batch["global_t"].float(),
                tau=tau,
                sigma=sigma,
                cross_video_negatives=cross_video_negatives,
            )
            check_finite(loss, what, last_good)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            meter.update(len(local), loss=loss.item())
            progress.update(task, info=meter.info())
    return meter.means()


@torch.no_grad()
def embed_clips(
    model: nn.Module, loader: DataLoader, device: torch.device, what: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """f_A embeddings (N, V, T, F) in dataset order, and a (N,) mask of clips that decoded."""
    return _run_inference(model, loader, device, what, lambda out: out.float())


@torch.no_grad()
def predict_clips(
    model: nn.Module, loader: DataLoader, device: torch.device, what: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """f_E class probabilities (N, V, C) in dataset order, and a (N,) mask of clips that decoded."""
    return _run_inference(model, loader, device, what, lambda out: out.float().softmax(-1))


def _run_inference(
    model: nn.Module, loader: DataLoader, device: torch.device, what: str, post
) -> tuple[torch.Tensor, torch.Tensor]:
    model.eval()
    n = len(loader.dataset)
    result: torch.Tensor | None = None
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
        raise RuntimeError("no clip could be read")  # callers check for empty sets before this
    return result, valid


@torch.no_grad()
def alignability_logits(
    model: nn.Module, queries: torch.Tensor, gallery: torch.Tensor, gamma: float, device: torch.device
) -> torch.Tensor:
    """f_S(D(u, a) / T) for every query and gallery clip: (Q, G) logits; sigmoid gives S of Eq. 3.

    Logits rather than scores, because the classifier averages them (Eq. 7, docs/METHOD.md): a
    sigmoid saturates at 0 or 1 and hides which of two near classes aligns better. Queries and
    gallery may carry several views, (Q, V, T, F): the logits are averaged over views.
    """
    q = queries if queries.dim() == 4 else queries.unsqueeze(1)
    g = gallery if gallery.dim() == 4 else gallery.unsqueeze(1)
    T = q.shape[2]
    total = torch.zeros(q.shape[0], g.shape[0])
    for v in range(q.shape[1]):
        for w in range(g.shape[1]):
            d = pairwise_soft_dtw(q[:, v].to(device), g[:, w].to(device), gamma) / T
            total += model.score_head.logit(d).float().cpu()
    return total / (q.shape[1] * g.shape[1])
