"""What one training step computes: a model and a batch in, a dict of named loss terms out.

As in MMAction2's recognizers, a step returns named terms: "loss" is what the optimizer minimises,
every other entry is logged beside it. The engine (`fgar_cli.engine`) does the rest: device,
backward, optimizer step, meters, checkpoints. A new method adds a step here and reuses the engine.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch.nn.functional as F
from torch import Tensor, nn

from fgar_cli.config import AlignabilityLoss, GitdlLoss
from fgar_cli.losses import alignability_loss, gitdl_loss
from fgar_cli.runtime import autocast


class Step(Protocol):
    def __call__(self, model: nn.Module, batch: dict[str, Any]) -> dict[str, Tensor]: ...


def cross_entropy_step(model: nn.Module, batch: dict[str, Any]) -> dict[str, Tensor]:
    """f_E: cross-entropy of its logits (Eq. 6); logs the batch accuracy."""
    with autocast(batch["video"].device):
        logits = model(batch["video"]).float()
    loss = F.cross_entropy(logits, batch["label"])
    return {"loss": loss, "acc": (logits.argmax(1) == batch["label"]).float().mean()}


@dataclass(frozen=True)
class AlignabilityStep:
    """f_A: L_AV = L_AT + omega L_Score (Eq. 5) on a class-balanced batch; logs both terms."""

    loss: AlignabilityLoss

    def __call__(self, model: nn.Module, batch: dict[str, Any]) -> dict[str, Tensor]:
        with autocast(batch["video"].device):
            embeddings = model(batch["video"])
        return alignability_loss(
            embeddings.float(), batch["label"], model.score_head, self.loss.gamma, self.loss.margin, self.loss.omega
        )


@dataclass(frozen=True)
class GitdlStep:
    """f_A pretraining: the GITDL loss between a global and a local clip of each video."""

    loss: GitdlLoss

    def __call__(self, model: nn.Module, batch: dict[str, Any]) -> dict[str, Tensor]:
        with autocast(batch["local"].device):
            local = model(batch["local"])
            global_ = model(batch["global"])
        loss = gitdl_loss(
            local.float(),
            global_.float(),
            batch["local_t"].float(),
            batch["global_t"].float(),
            tau=self.loss.tau,
            sigma=self.loss.sigma,
            cross_video_negatives=self.loss.cross_video_negatives,
        )
        return {"loss": loss}
