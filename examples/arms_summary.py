"""The three arms of examples/compare.sh over several runs: mean and spread of test top-1, paired
differences from the supervised arm (95% t interval over runs), and the pseudo-labels' count and
accuracy. Writes OUT/summary.md and OUT/summary.json and prints the table.

    python examples/arms_summary.py OUT RUN_DIR [RUN_DIR ...]     (examples/motion.sh runs it)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from fgar_cli.artifacts import atomic_write_json, atomic_write_text
from fgar_cli.reproduce.stats import mean_std, t_interval

ARMS = {
    "supervised": ("eval_supervised", None),
    "control": ("eval_control", "st_control"),  # compute-matched: the same self-training epochs, no pseudo-label
    "PL": ("eval_confidence", "st_confidence"),
    "FinePseudo": ("eval_finepseudo", "st_finepseudo"),
}


def read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        sys.exit(f"error: {path} not found (has examples/compare.sh finished on this run?)")
    return json.loads(path.read_text())


def summarize(runs: list[Path]) -> dict[str, Any]:
    top1 = {
        arm: [read_json(run / ev / "metrics.json")["action"]["top1"] for run in runs] for arm, (ev, _) in ARMS.items()
    }
    rows = []
    for arm, (_, st) in ARMS.items():
        mean, std = mean_std(top1[arm])
        row: dict[str, Any] = {"method": arm, "top1": mean, "top1_std": std, "runs": len(runs), "per_run": top1[arm]}
        if st is not None:
            selftrain = [read_json(run / st / "selftrain.json") for run in runs]
            for baseline in ("supervised", "control"):
                if arm != baseline:
                    diff = t_interval([a - b for a, b in zip(top1[arm], top1[baseline], strict=True)])
                    row[f"minus_{baseline}"] = diff.as_dict()
            if arm != "control":  # the control accepts no pseudo-label
                row["pl_count"] = mean_std([s["cumulative_pl_count"] for s in selftrain])[0]
                row["pl_accuracy"] = mean_std([s["cumulative_pl_accuracy"] for s in selftrain])[0]
        rows.append(row)
    unlabeled = [len(json.loads((run / "split.json").read_text())["unlabeled"]) for run in runs]
    return {"runs": [str(r) for r in runs], "unlabeled_clips": unlabeled, "rows": rows}


def markdown(summary: dict[str, Any]) -> str:
    lines = [
        "| method | test top-1 (mean ± std) | minus supervised [95% CI over runs] | minus control [95% CI] "
        "| pseudo-labels | their accuracy |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    unlabeled = sum(summary["unlabeled_clips"]) / len(summary["unlabeled_clips"])
    for row in summary["rows"]:
        cis = [interval(row.get(f"minus_{baseline}")) for baseline in ("supervised", "control")]
        pl = f"{row['pl_count']:.1f} of {unlabeled:.0f}" if "pl_count" in row else ""
        acc = f"{row['pl_accuracy']:.3f}" if row.get("pl_accuracy") is not None else ""
        lines.append(
            f"| {row['method']} | {row['top1']:.3f} ± {row['top1_std']:.3f} | {' | '.join(cis)} | {pl} | {acc} |"
        )
    return "\n".join(lines) + f"\n\n{len(summary['runs'])} runs: {', '.join(summary['runs'])}\n"


def interval(diff: dict[str, float] | None) -> str:
    return f"{diff['mean']:+.3f} [{diff['low']:+.3f}, {diff['high']:+.3f}]" if diff else ""


def main(argv: list[str]) -> None:
    if len(argv) < 2:
        sys.exit(__doc__)
    out, runs = Path(argv[0]), [Path(a) for a in argv[1:]]
    summary = summarize(runs)
    text = markdown(summary)
    atomic_write_json(out / "summary.json", summary)
    atomic_write_text(out / "summary.md", text)
    print(text)


if __name__ == "__main__":
    main(sys.argv[1:])
