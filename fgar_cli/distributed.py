"""Several processes, one run: every stage under `torchrun --nproc-per-node N $(which fgar) STAGE ...`.

torchrun starts N copies of the same command and tells each its place through the environment
(RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT). `init_from_environment` (called by
`runtime.resolve_device`, which every stage calls before its work) joins them into one process group:
`nccl` when the device is CUDA (each process on GPU LOCAL_RANK), `gloo` on CPUs. Without torchrun
(WORLD_SIZE unset or 1) nothing here does anything, and a stage runs exactly as it always has.

The rules the stages follow under several processes:
* **Training** (`engine.fit`): every rank holds the same model (rank 0's weights are broadcast at the
  start), draws its own shard of each epoch's batches (`shard_indices`; the P x K sampler draws per
  rank), and after each backward pass the gradients are averaged over the ranks (`average_gradients`)
  and rank 0's BatchNorm statistics are broadcast (`broadcast_buffers`), which is what
  DistributedDataParallel synchronises, without its overlap of communication and backward: the
  stages' steps call encoder methods other than `forward` (features, per-position features, f_A's
  sequences), which DDP's wrapper would not see. Batch sizes in the configs are per rank.
* **Inference** (`inference.run_encoders`): batch k of a pass goes to rank k mod N, so every batch
  holds the clips it holds in one process; the outputs are summed over ranks (each clip is filled on
  one rank and zero on the others), so every rank ends with the whole, bit-equal result.
* **Files**: only rank 0 writes (`fgar_cli.files.atomic_path` skips the write elsewhere; run logs
  likewise); each artifact write ends in a barrier (`after_write`), so a file one rank wrote is there
  for every rank that reads it next.
* **Failures**: a decode that hangs ends its process after `FGAR_DECODE_TIMEOUT` seconds (default:
  the collective timeout) with a line naming the rank and the file (`DecodeWatchdog`); collectives
  time out after `FGAR_DIST_TIMEOUT` seconds (default 600) with an error that names the rank; a rank
  that exits with an error ends the job through torchrun, which names the failed rank. Resume from
  the checkpoints as after any interruption.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime
import math
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from fgar_cli.errors import FgarError

if TYPE_CHECKING:
    import torch
    from torch import Tensor, nn

# torch is imported inside the functions that need it: `fgar --help` and the data commands never
# join a process group, and importing torch there would cost them seconds of start-up

TIMEOUT_VARIABLE = "FGAR_DIST_TIMEOUT"
T = TypeVar("T")


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def environment_world() -> World:
    """The place torchrun gave this process (one process of one when run without it)."""
    try:
        return World(
            int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))
        )
    except ValueError:
        raise FgarError("RANK, WORLD_SIZE and LOCAL_RANK must be whole numbers (torchrun sets them)") from None


def world() -> World:
    """This process's place in the run: the process group's once joined, else one of one."""
    dist = sys.modules.get("torch.distributed")  # not imported: no group can have been joined
    if dist is not None and dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size(), environment_world().local_rank)
    return World()


def is_main() -> bool:
    return world().is_main


def timeout_seconds() -> float:
    try:
        return float(os.environ.get(TIMEOUT_VARIABLE, 600))
    except ValueError:
        raise FgarError(f"{TIMEOUT_VARIABLE} must be a number of seconds") from None


def init_from_environment(device_type: str) -> World:
    """Join torchrun's process group (once per process); returns this process's place."""
    place = environment_world()
    if not place.distributed:
        return world()
    import torch
    import torch.distributed as dist

    if dist.is_initialized():
        return world()
    if not dist.is_available():
        raise FgarError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    backend = "nccl" if device_type == "cuda" else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(place.local_rank)
        # a rank whose collective fails or times out raises instead of hanging (the most reported NCCL problem)
        os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")
    try:
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_seconds()))
    except (RuntimeError, ValueError) as exc:
        raise FgarError(f"rank {place.rank}: could not join the {backend} process group ({exc})") from None
    atexit.register(_leave)
    if place.rank != 0:
        from fgar_cli.progress import console

        console.quiet = True  # one copy of the progress and summaries: rank 0's (errors still print)
    return world()


def _leave() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def collective(what: str, run: Callable[[], T]) -> T:
    """Run a collective; a timeout or a peer that died becomes one error line naming this rank."""
    import torch.distributed as dist

    try:
        return run()
    except (RuntimeError, dist.DistBackendError) as exc:  # gloo and nccl report timeouts and peers this way
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise FgarError(f"rank {world().rank}: {what} failed: {first} (another rank died or hangs?)") from None


def barrier(what: str = "barrier") -> None:
    if world().distributed:
        import torch.distributed as dist

        collective(what, dist.barrier)


def after_write(path: object) -> None:
    """The end of an artifact write: every rank waits until rank 0's file is in place."""
    barrier(f"writing {path}")


def shard_indices(indices: list[int], place: World) -> list[int]:
    """This rank's share of an epoch's clips: the list padded by wrapping to a multiple of the ranks
    (so every rank takes as many steps, as DistributedSampler does), then every N-th from the rank."""
    if not place.distributed or not indices:
        return indices
    padded = indices + indices[: (-len(indices)) % place.size]
    while len(padded) % place.size:  # fewer clips than ranks
        padded += indices[: place.size - len(padded) % place.size]
    return padded[place.rank :: place.size]


def block_of(count: int, place: World) -> slice:
    """This rank's contiguous block of `count` rows (all of them in one process)."""
    if not place.distributed:
        return slice(0, count)
    size = math.ceil(count / place.size)
    return slice(min(place.rank * size, count), min((place.rank + 1) * size, count))


def average_gradients(model: nn.Module) -> None:
    """Average the gradients of `model` over the ranks (one all-reduce of them all, flattened)."""
    if not world().distributed:
        return
    import torch
    import torch.distributed as dist

    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    collective("averaging gradients", lambda: dist.all_reduce(flat))
    flat /= world().size
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def broadcast_module(model: nn.Module, buffers_only: bool = False) -> None:
    """Give every rank rank 0's parameters and buffers (or its buffers alone: BatchNorm statistics)."""
    if not world().distributed:
        return
    import torch
    import torch.distributed as dist

    tensors = list(model.buffers()) if buffers_only else [*model.parameters(), *model.buffers()]
    with torch.no_grad():
        for t in tensors:
            collective("broadcasting weights", lambda t=t: dist.broadcast(t.data, src=0))


def sum_over_ranks(tensor: Tensor) -> Tensor:
    """`tensor` summed over the ranks, in place (on its device), returned."""
    if not world().distributed:
        return tensor
    import torch
    import torch.distributed as dist

    if dist.get_backend() == "nccl" and tensor.device.type != "cuda":  # nccl reduces GPU tensors only
        on_gpu = tensor.to(torch.device("cuda", torch.cuda.current_device()))
        collective("gathering results", lambda: dist.all_reduce(on_gpu))
        tensor.copy_(on_gpu.cpu())
        return tensor
    collective("gathering results", lambda: dist.all_reduce(tensor))
    return tensor


def gather_objects(obj: T) -> list[T]:
    """`obj` from every rank, in rank order (small things: shapes, counts)."""
    if not world().distributed:
        return [obj]
    import torch.distributed as dist

    out: list[T] = [obj] * world().size
    collective("gathering results", lambda: dist.all_gather_object(out, obj))
    return out


def any_rank(flag: bool, device: torch.device) -> bool:
    """Whether `flag` holds on any rank (every rank gets the same answer)."""
    if not world().distributed:
        return flag
    import torch

    value = torch.tensor([1.0 if flag else 0.0], device=device)
    return bool(sum_over_ranks(value).item() > 0)


# --------------------------------------------------------------------------- hung decodes

DECODE_TIMEOUT_VARIABLE = "FGAR_DECODE_TIMEOUT"


class DecodeWatchdog:
    """Ends a process whose decode of one file takes longer than `timeout` seconds, with one line
    naming the rank and the file. Under torchrun the other ranks would otherwise wait on this one in
    their next collective until it timed out, and say only that a peer was missing; this says which
    rank and which file (decord's hangs on damaged files are the most reported problem of peer
    tools). torchrun then ends the others. A thread per process (DataLoader workers included)."""

    def __init__(self, timeout: float, on_hang: Callable[[str], None] | None = None, poll: float = 1.0) -> None:
        self.timeout = timeout
        self.on_hang = on_hang or _end_process
        self.poll = poll
        self._current: tuple[str, float] | None = None
        self._owner = -1  # the process whose thread watches (a forked worker starts its own)

    @contextlib.contextmanager
    def watch(self, path: object) -> Iterator[None]:
        self._start()
        self._current = (str(path), time.monotonic())
        try:
            yield
        finally:
            self._current = None

    def _start(self) -> None:
        if self._owner == os.getpid():
            return
        self._owner = os.getpid()
        threading.Thread(target=self._run, name="fgar-decode-watchdog", daemon=True).start()

    def _run(self) -> None:
        while True:
            time.sleep(self.poll)
            current = self._current
            if current is not None and time.monotonic() - current[1] > self.timeout:
                self._current = None
                self.on_hang(
                    f"rank {environment_world().rank}: decoding {current[0]} has not finished after "
                    f"{self.timeout:g} s (a hung decoder? {DECODE_TIMEOUT_VARIABLE} sets the limit); ending the run"
                )


def _end_process(message: str) -> None:
    print(f"error: {message}", file=sys.stderr, flush=True)
    os._exit(3)  # the decoding thread cannot be interrupted; torchrun sees the exit and ends the others


def decode_watchdog() -> DecodeWatchdog | None:
    """The process's watchdog: under torchrun, or wherever FGAR_DECODE_TIMEOUT is set; else None."""
    global _watchdog
    if _watchdog is None and (environment_world().distributed or DECODE_TIMEOUT_VARIABLE in os.environ):
        try:
            limit = float(os.environ.get(DECODE_TIMEOUT_VARIABLE, timeout_seconds()))
        except ValueError:
            raise FgarError(f"{DECODE_TIMEOUT_VARIABLE} must be a number of seconds") from None
        _watchdog = DecodeWatchdog(limit)
    return _watchdog


_watchdog: DecodeWatchdog | None = None
