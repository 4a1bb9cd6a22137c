"""Where `make demo`'s time goes: every stage command sampled with py-spy, by kind of work.

    pip install py-spy     # a sampling profiler; not a dependency of fgar
    python benchmarks/profile_demo.py [--rev REV] [--seed 0] [--rate 50]

Runs examples/compare.sh (with examples/demo.yaml, 30% labels, as `make demo` does) of this working
tree, or of commit REV in a git worktree, under `py-spy record` one command at a time, then sorts
every sample by the innermost frame it recognises: start-up imports, numba compilation, decoding,
clip transforms, f_E's and f_A's forward and backward passes, soft-DTW, inference, checkpoints and
HDF5, plots. Prints one table per stage and one for the whole run (seconds, from samples / rate).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# (kind, substrings of a frame), tried from the innermost frame outwards; the first match wins.
KINDS = [
    ("numba compilation", ("numba/core/compiler", "numba/core/dispatcher.py", "llvmlite")),
    ("soft-DTW", ("kernels/cpu.py", "softdtw.py", "alignment_distances", "pairwise_soft_dtw")),
    ("decoding", ("video.py", "/av/", "PIL/")),
    ("frame cache", ("frame_cache.py",)),
    ("clip transforms", ("transforms.py", "collate_skip_none")),
    ("checkpoints", ("save_checkpoint", "load_checkpoint", "torch/serialization.py")),
    ("HDF5 artifacts", ("write_h5", "read_h5", "h5py")),
    ("plots", ("matplotlib", "save_confusion_png")),
]
ROLES = [  # which model a forward or backward pass belongs to, from the frames around it
    ("f_E", ("cross_entropy_step", "train_action_epoch", "EncoderTrainer.action", "fit_action_encoder")),
    (
        "f_A",
        (
            "AlignabilityStep",
            "GitdlStep",
            "train_alignability_epoch",
            "train_gitdl_epoch",
            "EncoderTrainer.alignability",
            "fit_alignability_encoder",
            "pretrain",
        ),
    ),  # fmt: skip
]


def kind_of(frames: list[str]) -> str:
    """The kind of work of one sampled stack (outermost frame first)."""
    for frame in reversed(frames):
        for kind, marks in KINDS:
            if any(m in frame for m in marks):
                return kind
    joined = ";".join(frames)
    if "_find_and_load" in joined and "train_one_epoch" not in joined and "run_encoders" not in joined:
        return "imports (start-up)"
    if any(m in joined for m in ("run_encoders", "predict_clips", "embed_clips", "_run_inference")):
        return "inference"
    role = next((name for name, marks in ROLES if any(m in joined for m in marks)), "model")
    if "backward" in joined:
        return f"{role} backward"
    if "_call_impl" in joined:
        return f"{role} forward"
    if "step" in joined and "optim" in joined:
        return f"{role} optimizer"
    return "other"


def read_profile(path: Path) -> Counter[str]:
    kinds: Counter[str] = Counter()
    for line in path.read_text().splitlines():
        if line.strip():
            stack, count = line.rsplit(" ", 1)
            kinds[kind_of(stack.split(";"))] += int(count)
    return kinds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rev", default=None, help="profile this commit instead of the working tree")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rate", type=int, default=50, help="samples per second")
    args = parser.parse_args()
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        sys.exit("py-spy is needed: pip install py-spy")
    with tempfile.TemporaryDirectory(prefix="fgar-profile-") as tmp:
        root = Path(tmp)
        tree = REPO
        if args.rev:
            tree = root / "tree"
            subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(tree), args.rev], check=True,
                           capture_output=True)  # fmt: skip
            (tree / "fgar_cli" / "kernels").symlink_to(tree / "kernels")
        try:
            env = {**os.environ, "FGAR_NO_PROGRESS": "1", "FRACTION": "0.3", "FGAR_CACHE_DIR": str(root / "cache")}
            env.pop("PYTHONPATH", None)
            synth = ["synth", "--out", str(root / "data"), "--seed", str(args.seed)]
            cli = [sys.executable, "-c", "from fgar_cli.cli import main; main()"]
            subprocess.run([*cli, *synth], check=True, env=env, capture_output=True)
            bin_dir = root / "bin"
            bin_dir.mkdir()
            (bin_dir / "fgar").write_text(
                "#!/usr/bin/env bash\n"
                f'n=$(ls "{root}"/*.spy 2>/dev/null | wc -l)\n'
                f'PYTHONPATH="{tree}" "{spy}" record -r {args.rate} -f raw -o "{root}/$(printf %02d $n)_$1.spy" -- '
                f'"{sys.executable}" -c "from fgar_cli.cli import main; main()" "$@" 2> >(grep -v "^py-spy" >&2)\n'
            )
            (bin_dir / "python").write_text(f'#!/usr/bin/env bash\nPYTHONPATH="{tree}" exec "{sys.executable}" "$@"\n')
            for script in bin_dir.iterdir():
                script.chmod(0o755)
            env["PATH"] = f"{bin_dir}:{env['PATH']}"
            compare = [str(tree / "examples" / "compare.sh"), str(root / "data"), str(root / "run")]
            result = subprocess.run(["bash", *compare, str(tree / "examples" / "demo.yaml")], env=env, cwd=root,
                                    capture_output=True, text=True)  # fmt: skip
            if result.returncode != 0:
                sys.exit(result.stderr[-2000:])
            total: Counter[str] = Counter()
            for profile in sorted(root.glob("*.spy")):
                kinds = read_profile(profile)
                total += kinds
                seconds = sum(kinds.values()) / args.rate
                parts = ", ".join(f"{k} {v / args.rate:.1f}" for k, v in kinds.most_common() if v / args.rate >= 0.3)
                print(f"{profile.stem:<18} {seconds:6.1f} s: {parts}")
            whole = sum(total.values()) / args.rate
            print(f"\nthe whole run, {whole:.0f} s sampled ({args.rev or 'working tree'}):")
            for kind, count in total.most_common():
                print(f"  {kind:<22} {count / args.rate:7.1f} s  {100 * count / sum(total.values()):5.1f}%")
        finally:
            if args.rev:
                subprocess.run(
                    ["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)], capture_output=True
                )


if __name__ == "__main__":
    main()
