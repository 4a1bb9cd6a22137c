"""The pipeline's speed, measured in one run: the demo's stages against a baseline commit, and the
clips per second of training and inference with and without each speed-up.

    python benchmarks/pipeline.py [--baseline REV] [--skip-demo] [--seed 0]

1. `make demo`'s pipeline (examples/compare.sh with examples/demo.yaml on the embedded benchmark),
   once with the code of REV (a git worktree) and once with this working tree, on the same data and
   the same machine, one after the other: the wall time of every stage command and the ratio of the
   totals. Each tree runs its own compare.sh and demo.yaml, so what is compared is what `make demo`
   did at each commit, with f_E from scratch (PRETRAIN_E=0; set PRETRAIN_E=1 to time TCLR's
   pretraining too, which a baseline from before it does not run). Data generation is not timed (it
   is the same generator in both).
2. In this process, on the same data: clips per second for f_E (small3d) and f_A (small2d) training
   steps with the frame cache off and on, with channels-last memory off and on, with the training
   forward in fp32 and in bf16 (`precision`, where the CPU computes bf16 natively), and for inference
   of both encoders in one pass against two passes.
Figures are best-of-N wall times; run it on a quiet machine, and read the ratios.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
SHIM = """#!/usr/bin/env bash
start=$(date +%s.%N)
PYTHONPATH="{tree}" "{python}" -c "from fgar_cli.cli import main; main()" "$@"
code=$?
echo "$start $(date +%s.%N) $code $1 $2" >> "{log}"
exit $code
"""


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} CPUs, torch {torch.__version__} ({torch.get_num_threads()} threads)"


def checkout(rev: str, into: Path) -> Path:
    """The code of `rev` in `into`, importable with PYTHONPATH (kernels/ is fgar_cli.kernels)."""
    subprocess.run(
        ["git", "-C", str(REPO), "worktree", "add", "--detach", str(into), rev], check=True, capture_output=True
    )
    (into / "fgar_cli" / "kernels").symlink_to(into / "kernels")
    return into


WARM_NUMBA = """
import torch
from fgar_cli.softdtw import pairwise_soft_dtw, soft_dtw
cost = torch.rand(3, 4, 4, requires_grad=True)
soft_dtw(cost, 0.1).sum().backward()
pairwise_soft_dtw(torch.rand(2, 4, 8), torch.rand(3, 4, 8), 0.1)
"""


def run_demo(tree: Path, data: Path, work: Path) -> list[tuple[str, float]]:
    """examples/compare.sh of `tree` on `data`, as examples/demo.sh runs it; (stage, seconds) per command.

    numba's kernels are compiled (or loaded from its cache) before the clock starts, for both trees
    alike: this compares a run of `make demo` after the first; the first compilation is its own figure
    (docs/PERFORMANCE.md)."""
    warm = {**os.environ, "PYTHONPATH": str(tree)}
    subprocess.run([sys.executable, "-c", WARM_NUMBA], env=warm, cwd=work.parent, check=True, capture_output=True)
    bin_dir, log = work / "bin", work / "stages.log"
    bin_dir.mkdir(parents=True)
    shim = bin_dir / "fgar"
    shim.write_text(SHIM.format(tree=tree, python=sys.executable, log=log))
    python = bin_dir / "python"  # older compare.sh ran `python -m fgar_cli.summary`
    python.write_text(f'#!/usr/bin/env bash\nPYTHONPATH="{tree}" exec "{sys.executable}" "$@"\n')
    for script in (shim, python):
        script.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "FGAR_NO_PROGRESS": "1", "FRACTION": "0.3"}
    # f_E from scratch, as before TCLR joined compare.sh (a baseline from before ignores it): the same work
    env.setdefault("PRETRAIN_E", "0")
    env["FGAR_CACHE_DIR"] = str(work / "cache")  # a cold cache, as on a first run
    env.pop("PYTHONPATH", None)
    config = tree / "examples" / "demo.yaml"
    result = subprocess.run(
        ["bash", str(tree / "examples" / "compare.sh"), str(data), str(work / "run"), str(config)],
        env=env,
        capture_output=True,
        text=True,
        cwd=work,  # not the repository: `python -c` puts the working folder first on sys.path
    )
    if result.returncode != 0:
        sys.exit(f"the demo of {tree} failed:\n{result.stderr[-2000:]}")
    stages = []
    for line in log.read_text().splitlines():
        start, end, _, command, sub = line.split(" ", 4)
        name = f"{command} {sub.split()[0]}" if command == "data" else command
        if command == "pretrain" and sub.startswith("--encoder"):  # compare.sh: `pretrain --encoder action`
            name = "pretrain f_E (TCLR)"
        stages.append((name, float(end) - float(start)))
    return stages


def paired(old: list[tuple[str, float]], new: list[tuple[str, float]]) -> list[tuple[str, float | None, float | None]]:
    """The stages of both runs side by side, matched by name and occurrence (a stage only one tree
    runs gets a dash on the other side), in the order of the newer run."""

    def keyed(stages: list[tuple[str, float]]) -> dict[tuple[str, int], float]:
        seen: dict[str, int] = {}
        out = {}
        for name, seconds in stages:
            seen[name] = seen.get(name, 0) + 1
            out[(name, seen[name])] = seconds
        return out

    a, b = keyed(old), keyed(new)
    order = list(b) + [k for k in a if k not in b]
    return [(name, a.get((name, k)), b.get((name, k))) for name, k in order]


def demo_comparison(baseline: str, seed: int) -> None:
    with tempfile.TemporaryDirectory(prefix="fgar-pipeline-") as tmp:
        root = Path(tmp)
        data = root / "data"
        subprocess.run([sys.executable, "-m", "fgar_cli.cli", "synth", "--out", str(data), "--seed", str(seed)],
                       check=True, capture_output=True, env={**os.environ, "FGAR_NO_PROGRESS": "1"})  # fmt: skip
        old_tree = checkout(baseline, root / "baseline")
        try:
            timings = {}
            for name, tree in (("baseline", old_tree), ("now", REPO)):
                start = time.perf_counter()
                stages = run_demo(tree, data, root / name)
                timings[name] = (stages, time.perf_counter() - start)
                print(f"  {name}: {timings[name][1]:.0f} s", flush=True)
        finally:
            subprocess.run(
                ["git", "-C", str(REPO), "worktree", "remove", "--force", str(old_tree)], capture_output=True
            )
    (old, old_total), (new, new_total) = timings["baseline"], timings["now"]
    print(f"\n(1) the demo's pipeline, baseline {baseline} against this tree (seconds of wall time)")
    print(f"  {'stage':<34} {'baseline':>9} {'now':>9} {'ratio':>7}")
    for name, a, b in paired(old, new):
        shown = [f"{x:9.1f}" if x is not None else f"{'-':>9}" for x in (a, b)]
        ratio = f"{a / b:6.2f}x" if a is not None and b is not None else ""
        print(f"  {name:<34} {shown[0]} {shown[1]} {ratio}")
    print(f"  {'all of compare.sh':<34} {old_total:9.1f} {new_total:9.1f} {old_total / new_total:6.2f}x")
    both = [(a, b) for _, a, b in paired(old, new) if a is not None and b is not None]
    old_same, new_same = sum(a for a, _ in both), sum(b for _, b in both)
    print(f"  {'the stages both trees run':<34} {old_same:9.1f} {new_same:9.1f} {old_same / new_same:6.2f}x")


def timed(fn, repeats: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def clip_rates(seed: int, repeats: int) -> None:
    """Clips per second of the building blocks, with each speed-up on and off."""
    import torch.nn.functional as F

    from fgar_cli.config import ActionEncoderConfig, AlignabilityEncoderConfig, ClipConfig, Precision, RunConfig
    from fgar_cli.data.batches import inference_loader
    from fgar_cli.data.dataset import ClipMode
    from fgar_cli.data.run_data import load_run_data
    from fgar_cli.inference import run_encoders
    from fgar_cli.losses import alignability_loss
    from fgar_cli.models import build_action_encoder, build_alignability_encoder
    from fgar_cli.runtime import autocast, training_precision

    with tempfile.TemporaryDirectory(prefix="fgar-rates-") as tmp:
        root = Path(tmp)
        env = {**os.environ, "FGAR_NO_PROGRESS": "1"}
        run = [sys.executable, "-m", "fgar_cli.cli"]
        subprocess.run(
            [*run, "synth", "--out", str(root / "d"), "--seed", str(seed)], check=True, env=env, capture_output=True
        )
        subprocess.run([*run, "data", "index", "--format", "diving48", "--root", str(root / "d"), "--out",
                        str(root / "i.json")], check=True, env=env, capture_output=True)  # fmt: skip
        subprocess.run([*run, "data", "split", "--index", str(root / "i.json"), "--fraction", "0.3", "--out",
                        str(root / "s.json")], check=True, env=env, capture_output=True)  # fmt: skip
        os.environ["FGAR_CACHE_DIR"] = str(root / "cache")
        from fgar_cli.config import DataPaths

        paths = DataPaths(index=str(root / "i.json"), split=str(root / "s.json"))
        clip = ClipConfig(num_frames=16, size=56, hflip=False)
        ids = load_run_data(paths).split.labeled[:64]
        print("\n(2) clips per second on the demo's clips (16 frames, 56 px), best of", repeats)

        def loader_rate(cache: str) -> float:
            data = load_run_data(paths, RunConfig(frame_cache=cache))
            dataset = data.clips(ids, clip, ClipMode.TRAIN)
            [dataset[i] for i in range(len(ids))]  # the first pass fills the cache
            return len(ids) / timed(lambda: [dataset[i] for i in range(len(ids))], repeats)

        off, on = loader_rate("off"), loader_rate("on")
        print(f"  reading training clips: decoded {off:7.1f}/s, from the frame cache {on:7.1f}/s ({on / off:.1f}x)")

        torch.manual_seed(0)
        x, y = torch.randn(8, 16, 3, 56, 56), torch.randint(0, 12, (8,))
        for layout in ("contiguous", "channels-last"):
            model = build_action_encoder(ActionEncoderConfig(arch="small3d"), 12)
            if layout == "contiguous":  # as before the change: the default memory format
                model.backbone.to(memory_format=torch.contiguous_format)
                model.features = lambda v, m=model: m.backbone(v.permute(0, 2, 1, 3, 4))  # type: ignore[method-assign]
            opt = torch.optim.AdamW(model.parameters())

            def step(model=model, opt=opt) -> None:
                opt.zero_grad()
                F.cross_entropy(model(x), y).backward()
                opt.step()

            print(f"  f_E small3d training step, {layout:<13} {8 / timed(step, repeats):7.1f} clips/s")
        model = build_action_encoder(ActionEncoderConfig(arch="small3d"), 12)
        opt = torch.optim.AdamW(model.parameters())
        for precision in (Precision.FP32, Precision.BF16):  # channels-last, the forward in fp32 or bf16

            def step_p(precision=precision) -> None:
                opt.zero_grad()
                with training_precision(precision), autocast(torch.device("cpu")):
                    logits = model(x).float()
                F.cross_entropy(logits, y).backward()
                opt.step()

            rate = 8 / timed(step_p, repeats)
            print(f"  f_E small3d training step, channels-last, {precision.value} forward {rate:7.1f} clips/s")
        xa, ya = torch.randn(16, 16, 3, 56, 56), torch.arange(4).repeat_interleave(4)
        for layout in ("contiguous", "channels-last"):
            model = build_alignability_encoder(AlignabilityEncoderConfig())
            if layout == "contiguous":
                model.backbone.to(memory_format=torch.contiguous_format)
                real = model.backbone.forward
                model.backbone.forward = lambda v, real=real: real(v.contiguous())  # type: ignore[method-assign]
            opt = torch.optim.AdamW(model.parameters())

            def step_a(model=model, opt=opt) -> None:
                opt.zero_grad()
                alignability_loss(model(xa), ya, model.score_head, 0.1, 0.1, 1.0)["loss"].backward()
                opt.step()

            print(f"  f_A small2d L_AV training step, {layout:<13} {16 / timed(step_a, repeats):7.1f} clips/s")
        model = build_alignability_encoder(AlignabilityEncoderConfig())
        opt = torch.optim.AdamW(model.parameters())
        for precision in (Precision.FP32, Precision.BF16):

            def step_ap(precision=precision) -> None:
                opt.zero_grad()
                with training_precision(precision), autocast(torch.device("cpu")):
                    embeddings = model(xa)
                alignability_loss(embeddings.float(), ya, model.score_head, 0.1, 0.1, 1.0)["loss"].backward()
                opt.step()

            rate = 16 / timed(step_ap, repeats)
            print(f"  f_A small2d L_AV training step, channels-last, {precision.value} forward {rate:7.1f} clips/s")

        data = load_run_data(paths)
        model_e = build_action_encoder(ActionEncoderConfig(arch="small3d"), 12)
        model_a = build_alignability_encoder(AlignabilityEncoderConfig())
        loader = inference_loader(data.clips(ids, clip, ClipMode.TEST), 16)
        cpu = torch.device("cpu")
        both = timed(lambda: run_encoders(loader, cpu, "both", model_e, model_a), repeats)
        apart = timed(lambda: (run_encoders(loader, cpu, "e", model_e), run_encoders(loader, cpu, "a", None, model_a)),
                      repeats)  # fmt: skip
        print(f"  inference of f_E and f_A: one pass {len(ids) / both:7.1f} clips/s, two passes "
              f"{len(ids) / apart:7.1f} clips/s")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", default="HEAD", help="commit to compare the working tree with")
    parser.add_argument("--skip-demo", action="store_true", help="only (2), the clip rates")
    parser.add_argument("--seed", type=int, default=0, help="generator seed of the embedded benchmark")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    os.environ.setdefault("FGAR_NO_PROGRESS", "1")
    print(machine(), flush=True)
    if not args.skip_demo:
        if shutil.which("git") is None:
            sys.exit("git is needed for the baseline checkout")
        demo_comparison(args.baseline, args.seed)
    clip_rates(args.seed, args.repeats)


if __name__ == "__main__":
    main()
