"""Does a cheaper CPU model learn as well? The demo's supervised encoders, on development data.

    python benchmarks/model_variants.py --encoder action|alignability --variant NAME=KEY:VALUE,... ...
        [--seeds 1,5] [--splits 0,1,2] [--out DIR]
    e.g. --encoder action --variant before=width:32,temporal_stem:true --variant now=width:16

Each variant sets fields of the encoder's architecture (ActionEncoderConfig or
AlignabilityEncoderConfig in fgar_cli/config.py), or, with a dotted key, a key of fit-labeled's config
(`--set`; keys under `training.` go to pretrain's), e.g. `--variant bf16=action_training.precision:bf16`.
For each generator seed (development seeds only:
never the demo's seed 0 or a seed a table reports), each label split (30% labels, as `make demo`) and
each variant, it trains one encoder with the demo's settings (examples/demo.yaml) and evaluates it on
the test split (3 views):
* `action`: small3d f_E alone (fit-labeled, 40 epochs), its test top-1;
* `alignability`: small2d f_A, GITDL pretraining (2 epochs) then fit-labeled (20 epochs), the test
  top-1 of its non-parametric classifier.
Prints test top-1 per run, the mean per variant, the paired difference against the first variant with
a 95% t interval over the runs, and the training time. Finished runs are reused when rerun.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
T95 = {1: 12.71, 2: 4.30, 3: 3.18, 4: 2.78, 5: 2.57, 6: 2.45, 7: 2.36, 8: 2.31, 9: 2.26, 11: 2.20, 17: 2.11}


def fgar(*args: object) -> None:
    env = {**os.environ, "FGAR_NO_PROGRESS": "1"}
    command = [sys.executable, "-c", "from fgar_cli.entry import main; main()", *map(str, args)]
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"fgar {' '.join(map(str, args[:2]))} failed:\n{result.stderr[-1500:]}")


def prepare(out: Path, seed: int, split: int, fraction: float = 0.3, name: str | None = None) -> tuple[Path, Path]:
    """The embedded benchmark of generator seed `seed`, its index and a label split (made once)."""
    data = out / f"synth{seed}"
    if not (data / "Diving48_V2_test.json").exists():
        fgar("synth", "--out", data, "--seed", seed, "--overwrite")
    index = out / f"index{seed}.json"
    if not index.exists():
        fgar("data", "index", "--format", "diving48", "--root", data, "--out", index)
    split_file = out / (name or f"split{seed}_{split}.json")
    if not split_file.exists():
        fgar("data", "split", "--index", index, "--fraction", fraction, "--seed", split, "--out", split_file)
    return index, split_file


def run(out: Path, seed: int, split: int, variant: tuple[str, str], encoder: str) -> tuple[float, float]:
    index, split_file = prepare(out, seed, split)
    name, all_fields = variant
    items = [f.strip() for f in all_fields.split(",") if f.strip()]
    fields = ", ".join(f for f in items if "." not in f.split(":")[0])  # the architecture's fields
    dotted = [f.replace(": ", "=", 1) for f in items if "." in f.split(":")[0]]
    sets = [arg for f in dotted if not f.startswith("training.") for arg in ("--set", f)]  # fit-labeled's
    pretrain_sets = [arg for f in dotted if f.startswith("training.") for arg in ("--set", f)]
    folder = out / f"{encoder}_s{seed}_split{split}_{name}"
    metrics = folder / "eval" / "metrics.json"
    if not metrics.exists():
        config = folder / "config.yaml"
        folder.mkdir(parents=True, exist_ok=True)
        demo = (REPO / "examples" / "demo.yaml").read_text()
        if encoder == "action":
            demo = demo.replace("action: {arch: small3d}", f"action: {{arch: small3d{', ' if fields else ''}{fields}}}")
        else:
            demo = demo.replace("pretrain:\n", f"pretrain:\n  alignability: {{{fields}}}\n")
        config.write_text(demo)
        data_args = ["--index", index, "--split", split_file]
        start = time.perf_counter()
        if encoder == "action":
            fgar(
                "fit-labeled",
                "--config",
                config,
                *data_args,
                *sets,
                "--out-dir",
                folder / "fit",
                "--epochs-a",
                0,
                "--resume",
            )
        else:
            fgar("pretrain", "--config", config, *data_args, *pretrain_sets, "--out-dir", folder / "pre", "--resume")
            fit = ["--out-dir", folder / "fit", "--init-a", folder / "pre" / "A0.pt", "--epochs-e", 0, "--resume"]
            fgar("fit-labeled", "--config", config, *data_args, *sets, *fit)
        (folder / "seconds.txt").write_text(f"{time.perf_counter() - start:.1f}")
        ckpts = ["--ckpt-e", folder / "fit" / "E.pt"] + (["--ckpt-a", folder / "fit" / "A.pt"] * (encoder != "action"))
        fgar("evaluate", "--config", config, *ckpts, "--out-dir", folder / "eval")
    head = "action" if encoder == "action" else "alignability"
    return json.loads(metrics.read_text())[head]["top1"], float((folder / "seconds.txt").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--encoder", choices=["action", "alignability"], required=True)
    parser.add_argument("--variant", action="append", required=True, help="NAME=KEY:VALUE,KEY:VALUE")
    parser.add_argument("--seeds", default="1,5", help="development generator seeds")
    parser.add_argument("--splits", default="0,1,2")
    parser.add_argument("--out", default="runs/model_variants")
    args = parser.parse_args()
    variants = [(v.split("=", 1)[0], v.split("=", 1)[1].replace(":", ": ").replace(",", ", ")) for v in args.variant]
    names = [name for name, _ in variants]
    cells = [(int(s), int(k)) for s in args.seeds.split(",") for k in args.splits.split(",")]
    out = Path(args.out)
    results: dict[str, list[float]] = {name: [] for name in names}
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for seed, split in cells:
        row = []
        for variant in variants:
            top1, took = run(out, seed, split, variant, args.encoder)
            results[variant[0]].append(top1)
            seconds[variant[0]].append(took)
            row.append(f"{variant[0]} {top1:.3f} ({took:.0f} s)")
        print(f"seed {seed} split {split}: " + ", ".join(row), flush=True)
    base = names[0]
    for name in names:
        mean = statistics.mean(results[name])
        took = statistics.mean(seconds[name])
        line = f"{name}: mean test top-1 {mean:.3f} over {len(cells)} runs, training {took:.0f} s"
        if name != base and len(cells) > 1:
            diffs = [a - b for a, b in zip(results[name], results[base], strict=True)]
            half = T95.get(len(diffs) - 1, 2.0) * statistics.stdev(diffs) / math.sqrt(len(diffs))
            line += f"; paired difference to {base}: {statistics.mean(diffs):+.3f} (95% CI +-{half:.3f})"
        print(line)


if __name__ == "__main__":
    main()
