"""Does f_E's self-supervised start help? The supervised f_E from scratch against f_E from TCLR.

    python benchmarks/tclr_start.py --variant NAME=TABLE.KEY:VALUE,... [--variant ...]
        [--seeds 1] [--splits 0,1,2] [--fraction 0.1] [--with-alignability] [--out DIR]
    e.g. --variant scratch= --variant tclr=pretrain.action_training.epochs:8
         --variant tclr_ic=pretrain.action_training.epochs:8,pretrain.action_loss.instance_weight:1

Each variant lays its keys over examples/demo.yaml (TABLE is `pretrain` or `fit_labeled`). A variant
with a `pretrain.` key first runs `fgar pretrain --encoder action` (small3d, the demo's clips) on the
unlabeled split and starts f_E from its E0.pt; one without trains f_E from scratch. For each
generator seed, label split and variant: the supervised f_E (fit-labeled, the demo's 40 epochs, no
f_A) and its test top-1 (3 views). `--with-alignability` adds f_A alone per cell (GITDL 2 epochs,
fit-labeled 20 epochs; its non-parametric classifier's test top-1), the paper's Table 5 row (a).
Prints per run, the mean and spread per variant, the paired difference against the first variant
with a 95% t interval, and the pretraining and training times. Finished runs are reused.
Use development seeds (1, 5) to choose; report on others.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path
from typing import Any

import yaml
from model_variants import REPO, T95, fgar, prepare


def parse_variant(text: str) -> tuple[str, dict[str, Any]]:
    name, _, body = text.partition("=")
    tables: dict[str, Any] = {}
    for item in filter(None, body.split(",")):
        key, _, value = item.partition(":")
        *path, leaf = key.split(".")
        node = tables
        for part in path:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(value)
    return name, tables


def merged(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        out[key] = merged(out.get(key, {}), value) if isinstance(value, dict) else value
    return out


def run_action(out: Path, cell: str, data_args: list[Any], variant: tuple[str, dict[str, Any]]) -> dict[str, float]:
    name, tables = variant
    folder = out / f"{cell}_{name}"
    metrics = folder / "eval" / "metrics.json"
    times = folder / "seconds.json"
    if not metrics.exists():
        folder.mkdir(parents=True, exist_ok=True)
        demo = yaml.safe_load((REPO / "examples" / "demo.yaml").read_text())
        pretrain = "pretrain" in tables
        config = merged(demo, tables)
        config["pretrain"] = merged(config["pretrain"], {"encoder": "action", "action": {"arch": "small3d"}})
        (folder / "config.yaml").write_text(yaml.safe_dump(config))
        seconds = {"pretrain": 0.0}
        init = []
        if pretrain:
            start = time.perf_counter()
            fgar("pretrain", "--config", folder / "config.yaml", *data_args, "--out-dir", folder / "pre", "--resume")
            seconds["pretrain"] = time.perf_counter() - start
            init = ["--init-e", folder / "pre" / "E0.pt"]
        start = time.perf_counter()
        fit = ["--out-dir", folder / "fit", "--epochs-a", 0, "--resume", *init]
        fgar("fit-labeled", "--config", folder / "config.yaml", *data_args, *fit)
        seconds["fit"] = time.perf_counter() - start
        times.write_text(json.dumps(seconds))
        fgar(
            "evaluate",
            "--config",
            folder / "config.yaml",
            "--ckpt-e",
            folder / "fit" / "E.pt",
            "--out-dir",
            folder / "eval",
        )
    return {"top1": json.loads(metrics.read_text())["action"]["top1"], **json.loads(times.read_text())}


def run_alignability(out: Path, cell: str, data_args: list[Any]) -> float:
    folder = out / f"{cell}_f_A"
    metrics = folder / "eval" / "metrics.json"
    if not metrics.exists():
        config = REPO / "examples" / "demo.yaml"
        fgar("pretrain", "--config", config, *data_args, "--out-dir", folder / "pre", "--resume")
        fit = ["--out-dir", folder / "fit", "--init-a", folder / "pre" / "A0.pt", "--epochs-e", 0, "--resume"]
        fgar("fit-labeled", "--config", config, *data_args, *fit)
        ckpts = ["--ckpt-e", folder / "fit" / "E.pt", "--ckpt-a", folder / "fit" / "A.pt"]
        fgar("evaluate", "--config", config, *ckpts, "--out-dir", folder / "eval")
    return json.loads(metrics.read_text())["alignability"]["top1"]


def describe(name: str, values: list[float], base: list[float] | None) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else float("nan")
    line = f"{name}: mean test top-1 {statistics.mean(values):.3f} (sd {spread:.3f}, {len(values)} runs)"
    if base is not None and len(values) > 1:
        diffs = [a - b for a, b in zip(values, base, strict=True)]
        half = T95.get(len(diffs) - 1, 2.0) * statistics.stdev(diffs) / math.sqrt(len(diffs))
        line += f"; paired difference {statistics.mean(diffs):+.3f} (95% CI +-{half:.3f})"
    return line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", action="append", required=True, help="NAME=TABLE.KEY:VALUE,...")
    parser.add_argument("--seeds", default="1", help="generator seeds (development: 1, 5)")
    parser.add_argument("--splits", default="0,1,2")
    parser.add_argument("--fraction", type=float, default=0.1)
    parser.add_argument("--with-alignability", action="store_true")
    parser.add_argument("--out", default="runs/tclr_start")
    args = parser.parse_args()
    variants = [parse_variant(v) for v in args.variant]
    out = Path(args.out)
    results: dict[str, list[dict[str, float]]] = {name: [] for name, _ in variants}
    alignability: list[float] = []
    for seed in map(int, args.seeds.split(",")):
        for split in map(int, args.splits.split(",")):
            index, split_file = prepare(out, seed, split, args.fraction, f"split{seed}_{args.fraction}_{split}.json")
            cell = f"s{seed}_f{args.fraction}_split{split}"
            data_args = ["--index", index, "--split", split_file]
            row = []
            for variant in variants:
                result = run_action(out, cell, data_args, variant)
                results[variant[0]].append(result)
                row.append(f"{variant[0]} {result['top1']:.3f} ({result['pretrain']:.0f} + {result['fit']:.0f} s)")
            if args.with_alignability:
                alignability.append(run_alignability(out, cell, data_args))
                row.append(f"f_A alone {alignability[-1]:.3f}")
            print(f"seed {seed} split {split}: " + ", ".join(row), flush=True)
    base = [r["top1"] for r in results[variants[0][0]]]
    for name, _ in variants:
        top1 = [r["top1"] for r in results[name]]
        took = statistics.mean(r["pretrain"] for r in results[name])
        print(describe(f"f_E {name}", top1, None if name == variants[0][0] else base) + f", pretraining {took:.0f} s")
    if alignability:
        print(describe("f_A alone", alignability, None))
        for name, _ in variants:
            print(describe(f"f_E {name} - f_A alone", [r["top1"] for r in results[name]], alignability))


if __name__ == "__main__":
    main()
