"""The process a stage runs in: its device, its seeds, and mixed precision."""

from __future__ import annotations

import contextlib
import os
import random
from typing import Any

import numpy as np
import torch

from fgar_cli.errors import FgarError


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise FgarError(f"--device: unknown device '{name}' (use auto, cpu, cuda or cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise FgarError(f"--device {name}: CUDA is not available on this machine")
    return device


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 mixed precision on CUDA (no loss scaling needed); full precision on the CPU."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def seed_everything(seed: int) -> None:
    """Seeds, and deterministic kernels: without them oneDNN's backward passes differ from run to run
    on the CPU, and an interrupted run resumed with --resume would not reach the same weights."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_seed(seed: int, *parts: int) -> int:
    """A seed for one epoch of one round: a resumed run replays exactly what it would have done."""
    return int(np.random.SeedSequence([seed, *parts]).generate_state(1)[0])


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
