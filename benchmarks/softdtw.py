"""Soft-DTW benchmark: ns per DP cell for fgar's kernels, tslearn and pysdtw, measured in one run.

(a) training: B pairs of T frames of F features, cosine cost, forward + backward from the embeddings
    (the cost's matmuls and normalisation included, for every implementation alike), and fgar's
    `alignment_distances` on a batch of clips with as many pairs: the exact path L_AV training runs;
(b) gallery: every query against every gallery clip, forward only, from the embeddings;
(c) the same on a GPU against pysdtw's CUDA path, plus a Q = 15,000 gallery (skipped without one).

Usage: .venv/bin/python benchmarks/softdtw.py [--repeats 7] [--threads 2]
Timings are the best and the median of --repeats runs after one warm-up (which also compiles);
the best is the figure least disturbed by other processes on a shared machine.
"""

from __future__ import annotations

import argparse
import math
import platform
import statistics
import time
from collections.abc import Callable

import numba
import pysdtw
import torch
import tslearn
from tslearn.metrics import SoftDTWLossPyTorch

from fgar_cli.losses import alignment_distances
from fgar_cli.softdtw import SoftDTW, cosine_cost, pairwise_soft_dtw, soft_dtw

GAMMA = 0.1


def timed(fn: Callable[[], object], repeats: int, sync: bool) -> tuple[float, float]:
    """(best, median) wall time in seconds of fn() over `repeats` runs after one warm-up."""
    fn()
    times = []
    for _ in range(repeats):
        if sync:
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if sync:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return min(times), statistics.median(times)


def report(label: str, seconds: tuple[float, float], cells: int, reference: float | None = None) -> float:
    """Print best and median ns per DP cell (and the ratio to fgar's best); return the best."""
    best, median = (s / cells * 1e9 for s in seconds)
    line = f"  {label:<44} {best:8.2f} ns/cell (median {median:8.2f})"
    if reference is not None:
        line += f"   fgar is {best / reference:5.1f}x faster (best vs best)"
    print(line, flush=True)
    return best


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    return (
        f"{cpu}, {torch.get_num_threads()} torch threads, {numba.get_num_threads()} numba threads, {gpu}; "
        f"torch {torch.__version__}, numba {numba.__version__}, tslearn {tslearn.__version__}, "
        f"pysdtw {pysdtw.__version__}"
    )


def training(device: str, B: int, T: int, F: int, repeats: int, baselines: bool) -> None:
    print(f"(a) training on {device}: B = {B} pairs, T = {T}, F = {F}, gamma = {GAMMA}, forward + backward")
    torch.manual_seed(0)
    x = torch.randn(B, T, F, device=device, requires_grad=True)
    y = torch.randn(B, T, F, device=device, requires_grad=True)
    implementations: dict[str, torch.nn.Module] = {"fgar": SoftDTW(GAMMA)}
    if baselines:
        if device == "cpu":
            implementations["tslearn SoftDTWLossPyTorch"] = SoftDTWLossPyTorch(GAMMA, dist_func=cosine_cost)
        implementations[f"pysdtw ({device})"] = pysdtw.SoftDTW(GAMMA, cosine_cost, use_cuda=device == "cuda")
    values = {name: module(x, y).detach().double().cpu() for name, module in implementations.items()}
    for name, value in values.items():  # everyone computes the same numbers
        gap = (value - values["fgar"]).abs().max().item()
        assert gap < 1e-3 * value.abs().max().item(), f"{name} disagrees with fgar by {gap}"

    def step(module: torch.nn.Module) -> Callable[[], None]:
        def run() -> None:
            x.grad = y.grad = None
            module(x, y).sum().backward()

        return run

    sync = device == "cuda"
    ours = report("fgar", timed(step(implementations["fgar"]), repeats, sync), B * T * T)
    # where fgar's time goes: the cosine cost alone, and the three matmuls that no implementation avoids
    grad = torch.rand(B, T, T, device=device)
    cost_only = timed(lambda: torch.autograd.grad(cosine_cost(x, y), (x, y), grad), repeats, sync)
    report("  of which cosine_cost forward + backward", cost_only, B * T * T)
    xd, yd = x.detach(), y.detach()
    matmuls = timed(lambda: (xd @ yd.mT, grad @ yd, grad.mT @ xd), repeats, sync)
    report("  of which its 3 batched matmuls", matmuls, B * T * T)
    clips = max(2, round((math.sqrt(8 * B + 1) - 1) / 2))  # clips whose B(B+1)/2 pairs are about B
    pairs = clips * (clips + 1) // 2
    e = torch.randn(clips, T, F, device=device, requires_grad=True)
    training_path = timed(lambda: torch.autograd.grad(alignment_distances(e, GAMMA).sum(), e), repeats, sync)
    report(f"fgar alignment_distances ({clips} clips, {pairs} pairs)", training_path, pairs * T * T)
    for name, module in list(implementations.items())[1:]:
        report(name, timed(step(module), repeats, sync), B * T * T, ours)


def dp_only(device: str, B: int, T: int, repeats: int, baselines: bool) -> None:
    """The DP kernels alone: forward + backward from a given cost tensor (what (a) adds to the cost's
    matmuls). The baselines take it through a dist_func that returns the cost itself."""
    print(f"(a') DP only on {device}: B = {B} cost matrices T x T = {T} x {T}, forward + backward")
    torch.manual_seed(0)
    cost = torch.rand(B, T, T, device=device, requires_grad=True) * 2

    def given(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return x

    runs: dict[str, Callable[[], torch.Tensor]] = {"fgar soft_dtw": lambda: soft_dtw(cost, GAMMA)}
    if baselines:
        if device == "cpu":
            loss = SoftDTWLossPyTorch(GAMMA, dist_func=given)
            runs["tslearn SoftDTWLossPyTorch"] = lambda: loss(cost, cost)
        other = pysdtw.SoftDTW(GAMMA, given, use_cuda=device == "cuda")
        runs[f"pysdtw ({device})"] = lambda: other(cost, cost)
    ours = None
    for name, run in runs.items():
        seconds = timed(lambda run=run: torch.autograd.grad(run().sum(), cost), repeats, device == "cuda")
        best = report(name, seconds, B * T * T, ours)
        ours = ours or best


def gallery(device: str, Q: int, G: int, T: int, F: int, repeats: int, baselines: bool) -> None:
    print(f"(b) gallery on {device}: Q = {Q} x G = {G}, T = {T}, F = {F}, gamma = {GAMMA}, forward only")
    torch.manual_seed(0)
    queries = torch.randn(Q, T, F, device=device)
    clips = torch.randn(G, T, F, device=device)
    seconds = timed(lambda: pairwise_soft_dtw(queries, clips, GAMMA), repeats, device == "cuda")
    ours = report("fgar pairwise_soft_dtw", seconds, Q * G * T * T)
    # the frame products alone (what the DP adds to): the same matmuls, chunk by chunk
    rows = queries.permute(1, 0, 2).reshape(T, Q, F)
    columns = clips.permute(2, 1, 0).reshape(F, T * G)
    chunk = 64

    def products() -> None:
        for start in range(0, Q, chunk):
            rows[:, start : start + chunk].reshape(-1, F) @ columns

    report("  of which the frame-product matmuls", timed(products, repeats, device == "cuda"), Q * G * T * T)
    if not baselines:
        return
    # The others have no all-pairs entry point: score a slice of the queries against the gallery as a
    # batch of pairs (their cost matrices built the same way) and compare per DP cell.
    q = max(1, 20_000 // G)
    x = queries[:q, None].expand(q, G, T, F).reshape(q * G, T, F)
    y = clips[None].expand(q, G, T, F).reshape(q * G, T, F)
    others: dict[str, torch.nn.Module] = {}
    if device == "cpu":
        others["tslearn SoftDTWLossPyTorch"] = SoftDTWLossPyTorch(GAMMA, dist_func=cosine_cost)
    others[f"pysdtw ({device})"] = pysdtw.SoftDTW(GAMMA, cosine_cost, use_cuda=device == "cuda")
    expected = pairwise_soft_dtw(queries[:q], clips, GAMMA).reshape(-1).double().cpu()
    for name, module in others.items():
        with torch.no_grad():
            gap = (module(x, y).double().cpu() - expected).abs().max().item()
            assert gap < 1e-3 * expected.abs().max().item(), f"{name} disagrees with fgar by {gap}"
            seconds = timed(lambda module=module: module(x, y), max(1, repeats // 2), device == "cuda")
        report(f"{name} ({q} x {G} pairs)", seconds, q * G * T * T, ours)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=None, help="torch and numba threads (default: all)")
    parser.add_argument("--no-baselines", action="store_true", help="time fgar only")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
        numba.set_num_threads(args.threads)
    print(machine())
    baselines = not args.no_baselines
    training("cpu", 256, 32, 128, args.repeats, baselines)
    dp_only("cpu", 256, 32, args.repeats, baselines)
    gallery("cpu", 2000, 480, 16, 128, args.repeats, baselines)
    if not torch.cuda.is_available():
        print("(c) GPU: skipped, no CUDA device on this machine (GPU figures not measured)")
        return
    training("cuda", 256, 32, 128, args.repeats, baselines)
    dp_only("cuda", 256, 32, args.repeats, baselines)
    gallery("cuda", 2000, 480, 16, 128, args.repeats, baselines)
    gallery("cuda", 15000, 480, 16, 128, args.repeats, False)


if __name__ == "__main__":
    main()
