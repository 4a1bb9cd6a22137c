"""The process a stage runs in: its device, its seeds, and mixed precision."""

from __future__ import annotations

import contextlib
import contextvars
import functools
import os
import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from fgar_cli.config import Precision
from fgar_cli.errors import FgarError


def resolve_device(name: str) -> torch.device:
    """The device a stage runs on; under torchrun, also this process's place in the run
    (`fgar_cli.distributed`): it joins the process group, and "auto" or "cuda" is its own GPU."""
    from fgar_cli.distributed import init_from_environment

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise FgarError(f"--device: unknown device '{name}' (use auto, cpu, cuda or cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise FgarError(f"--device {name}: CUDA is not available on this machine")
    place = init_from_environment(device.type)
    if device.type == "cuda" and place.distributed and device.index is None:
        return torch.device("cuda", place.local_rank)
    return device


# The precision of the training that is running (engine.fit sets it); None outside training.
_training_precision: contextvars.ContextVar[Precision | None] = contextvars.ContextVar("precision", default=None)


@contextlib.contextmanager
def training_precision(precision: Precision) -> Iterator[None]:
    """Inside, `autocast` follows `precision` (a training's `Optimization.precision`)."""
    token = _training_precision.set(precision)
    try:
        yield
    finally:
        _training_precision.reset(token)


@functools.cache
def cpu_computes_bf16() -> bool:
    """Whether this CPU has bfloat16 arithmetic (AVX-512 BF16 or AMX), where oneDNN's bf16 convolutions
    are fast; elsewhere they are emulated and slower than fp32."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # torch.cpu's own detection
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """Mixed precision for a forward pass: bf16 (no loss scaling needed) on CUDA, and in training on
    CPUs that compute bf16 natively (about 1.7x faster for small3d's training step on this project's
    machine, docs/PERFORMANCE.md), unless the training's precision says otherwise; fp32 elsewhere.
    Outside training (inference) the CPU stays in fp32: it is cheap there, and scores stay exact."""
    precision = _training_precision.get()
    if device.type == "cuda" and precision != Precision.FP32:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    if device.type == "cpu" and (precision == Precision.BF16 or (precision == Precision.AUTO and cpu_computes_bf16())):
        return torch.autocast("cpu", dtype=torch.bfloat16)
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
