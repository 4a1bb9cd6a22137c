"""`fgar summary RUN_DIR`: the table of examples/compare.sh, written to summary.json.

Reads RUN_DIR/eval_{supervised,confidence,finepseudo}/metrics.json and the two self-training
summaries, and maps `supervised`, `confidence_pl`, `finepseudo` to their metrics.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from fgar_cli.artifacts import atomic_write_json
from fgar_cli.data.index import read_json

ARMS = {
    "supervised": ("eval_supervised", None),
    "confidence_pl": ("eval_confidence", "st_confidence"),
    "finepseudo": ("eval_finepseudo", "st_finepseudo"),
}


def summarize(run: Path) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for arm, (eval_dir, st_dir) in ARMS.items():
        metrics = read_json(run / eval_dir / "metrics.json")
        row = {
            "top1": metrics["action"]["top1"],
            "top5": metrics["action"]["top5"],
            "mean_class_accuracy": metrics["action"]["mean_class_accuracy"],
            "protocol": metrics["protocol"],
        }
        if "combined" in metrics:
            row["top1_alignability"] = metrics["alignability"]["top1"]
            row["top1_combined"] = metrics["combined"]["top1"]
        if st_dir is not None:
            st = read_json(run / st_dir / "selftrain.json")
            row["pl_count"] = st["pl_count"]
            row["pl_accuracy"] = st["pl_accuracy"]
            row["pl_rounds"] = st["rounds"]
        summary[arm] = row
    atomic_write_json(run / "summary.json", summary)
    return summary


def print_table(summary: dict[str, Any]) -> None:
    def fmt(x: Any) -> str:
        if x is None:
            return "-"
        if isinstance(x, float):
            return "-" if math.isnan(x) else f"{x:.3f}"  # nan: no pseudo-label was accepted
        return str(x)

    table = Table(title=f"test accuracy ({next(iter(summary.values()))['protocol']})")
    for col in ("arm", "E top1", "E top5", "class acc", "A top1", "E+A top1", "PLs", "PL acc"):
        table.add_column(col)
    for arm, row in summary.items():
        table.add_row(
            arm,
            fmt(row["top1"]),
            fmt(row["top5"]),
            fmt(row["mean_class_accuracy"]),
            fmt(row.get("top1_alignability")),
            fmt(row.get("top1_combined")),
            fmt(row.get("pl_count")),
            fmt(row.get("pl_accuracy")),
        )
    Console().print(table)


def summary(
    run: Path = typer.Argument(..., help="A run folder of examples/compare.sh (eval_*/ and st_*/ inside)."),
) -> None:
    """Print the comparison table of a compare.sh run folder and write it to RUN/summary.json.

    Example: fgar summary demo/run
    """
    print_table(summarize(run))
