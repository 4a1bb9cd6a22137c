"""What one training step computes: a model and a batch in, a dict of named loss terms out.

As in MMAction2's recognizers, a step returns named terms: "loss" is what the optimizer minimises,
every other entry is logged beside it. The engine (`fgar_cli.engine`) does the rest: device,
backward, optimizer step, meters, checkpoints. A new method adds a step here and reuses the engine.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fgar_cli.config import AlignabilityLoss, GitdlLoss, TclrLoss
from fgar_cli.contrastive import global_local_loss, instance_loss, local_local_loss
from fgar_cli.losses import alignability_loss, gitdl_loss
from fgar_cli.runtime import autocast


class Step(Protocol):
    def __call__(self, model: nn.Module, batch: dict[str, Any]) -> dict[str, Tensor]: ...


@runtime_checkable
class StatefulStep(Step, Protocol):
    """A step with state of its own that the engine keeps with the model: an EMA teacher, a feature
    bank. `after_update` runs after each optimizer step; `epoch_end` after each epoch (its figures
    join the epoch's metrics); the state goes into X_last.pt, so a resumed run continues it."""

    def after_update(self, model: nn.Module) -> None: ...

    def epoch_end(self, epoch: int) -> dict[str, float]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


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
            embeddings.float(),
            batch["label"],
            model.score_head,
            self.loss.gamma,
            self.loss.margin,
            self.loss.omega,
            self.loss.triplet_weight,
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


@dataclass(frozen=True)
class TclrStep:
    """f_E pretraining: TCLR's losses on two views of a global clip and of its K local clips.

    The 2 global and 2K local clips of every video go through the trunk in two batches. The total is
    L_LL + w_GL L_GL + w_IC L_IC, L_GL averaged over the four pairs of views (fgar_cli.contrastive).
    """

    loss: TclrLoss

    def __call__(self, model: nn.Module, batch: dict[str, Any]) -> dict[str, Tensor]:
        global_views, local_views = batch["global"], batch["local"]  # (B, 2, T, ...), (B, 2, K, T, ...)
        B, _, K = local_views.shape[:3]
        # two trunk calls, as local clips may have fewer frames than the global clip
        with autocast(global_views.device):
            global_clip, global_steps = model(global_views.flatten(0, 1), K)
            local, _ = model(local_views.flatten(0, 2), 1)
        global_clip = global_clip.float().reshape(B, 2, -1)
        global_steps = global_steps.float().reshape(B, 2, K, -1)
        local = local.float().reshape(B, 2, K, -1)
        tau = self.loss.tau
        terms = {"local_local": local_local_loss(local[:, 0], local[:, 1], tau)}
        terms["global_local"] = torch.stack(
            [global_local_loss(global_steps[:, v], local[:, u], tau) for v in (0, 1) for u in (0, 1)]
        ).mean()
        total = terms["local_local"] + self.loss.global_local_weight * terms["global_local"]
        if self.loss.instance_weight > 0:
            terms["instance"] = instance_loss(global_clip[:, 0], global_clip[:, 1], tau)
            total = total + self.loss.instance_weight * terms["instance"]
        return {"loss": total, **terms}
