"""Writing a reproduced table: table.md (with the paper's figures beside ours and the claims
checked), table.json (rows other tools can read) and table.png; and printing it."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from fgar_cli.artifacts import atomic_write_json, atomic_write_text
from fgar_cli.metrics import pyplot
from fgar_cli.reproduce.plan import DEVELOPMENT_SEEDS, Scale
from fgar_cli.reproduce.tables import TableResult, shown_path

COLUMN_NAMES = {
    "pl_count": "PL count",
    "pl_accuracy": "PL acc.",
    "round1_count": "round-1 PL count",
    "round1_accuracy": "round-1 PL acc.",
    "accuracy_at_finepseudo_count": "acc. at FinePseudo's count",
    "accuracy_at_pl_count": "acc. at PL's count",
    "paper_pl_count": "paper PL count",
    "paper_pl_accuracy": "paper PL acc.",
    "novel_auroc": "novel AUROC",
    "novel_precision": "novel precision",
    "novel_recall": "novel recall",
    "average_precision": "AP",
    "average_precision_std": "AP std",
    "chance": "chance AP",
}


def fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.1f}" if abs(value) >= 10 else f"{value:.{digits}f}"
    return str(value)


def header(result: TableResult, scale: Scale) -> list[str]:
    lines = [f"# {result.title}", ""]
    if scale.quick:
        lines += ["**QUICK form: a few minutes of tiny runs that exercise every step. Not a result.**", ""]
    development = sorted(set(scale.synth_seeds) & set(DEVELOPMENT_SEEDS))
    if development and not scale.quick:
        lines += [f"**Generator seeds {development} were used for development: not a result.**", ""]
    lines += [
        f"Embedded benchmark (`fgar synth`): {scale.classes} classes, {scale.train_per_class} training and "
        f"{scale.test_per_class} test videos per class; generator seeds {scale.synth_seeds} x label splits "
        f"{scale.splits} = {scale.runs} runs per cell; stage options {shown_path(scale.config)}.",
        "",
    ]
    return lines


def top1_rows(result: TableResult) -> tuple[list[str], list[list[str]]]:
    head = ["method", "labels per class (paper)", "top-1 mean ± std (runs)", "vs supervised [95% CI over runs]"]
    head += [COLUMN_NAMES.get(c, c) for c in result.columns] + ["paper top-1"]
    body = []
    for row in result.rows:
        diff = row.get("diff_vs_supervised")
        diff_text = "-" if diff is None else f"{diff['mean']:+.3f} [{fmt(diff['low'])}, {fmt(diff['high'])}]"
        setting = f"{row['labeled_per_class']} ({row['paper_setting'] or '-'})"
        cells = [row["method"], setting, f"{row['top1']:.3f} ± {row['top1_std']:.3f} ({row['runs']})", diff_text]
        cells += [fmt(row.get(c)) for c in result.columns]
        paper = row.get("paper_top1")
        cells.append("-" if paper is None else f"{paper:.1f}")
        body.append(cells)
    return head, body


def ap_rows(result: TableResult) -> tuple[list[str], list[list[str]]]:
    head = ["measure", "AP mean ± std (runs)", "chance"]
    body = [
        [
            r["method"],
            f"{r['average_precision']:.3f} ± {r['average_precision_std']:.3f} ({r['runs']})",
            f"{r['chance']:.3f}",
        ]
        for r in result.rows
    ]
    return head, body


def markdown_table(head: list[str], body: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(head) + " |", "| " + " | ".join("---" for _ in head) + " |"]
    return lines + ["| " + " | ".join(cells) + " |" for cells in body]


def strict_json(value: Any) -> Any:
    """`value` with NaN and infinities as None: JSON has no NaN, and strict readers (JavaScript,
    jq, most non-Python tools) reject the bare `NaN` that Python writes (a rule with no
    pseudo-label has no accuracy)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: strict_json(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [strict_json(item) for item in value]
    return value


def write_table(result: TableResult, scale: Scale, out: Path, console: Console) -> Path:
    """table.md, table.json and table.png in `out`; the table and its claims printed."""
    out.mkdir(parents=True, exist_ok=True)
    head, body = ap_rows(result) if result.name == "fig1c" else top1_rows(result)
    lines = header(result, scale) + markdown_table(head, body) + [""]
    if result.claims:
        lines += ["## The paper's claims, checked", ""]
        lines += markdown_table(
            ["claim", "measured", "verdict"], [[c.text, c.measured, c.verdict] for c in result.claims]
        )
        lines += [""]
    lines += [f"* {note}" for note in result.notes] + [""]
    atomic_write_text(out / "table.md", "\n".join(lines))
    atomic_write_json(
        out / "table.json",
        {
            "table": result.name,
            "title": result.title,
            "scale": scale.model_dump(mode="json")
            | {"config": shown_path(scale.config), "sequence_config": shown_path(scale.sequence_config)},
            "rows": strict_json(result.rows),
            "claims": [c.__dict__ for c in result.claims],
            "notes": result.notes,
        },
    )
    plot(result, out / "table.png")
    printed = Table(title=result.title)
    for column in head:
        printed.add_column(column)
    for cells in body:
        printed.add_row(*cells)
    console.print(printed)
    for c in result.claims:
        console.print(f"  {c.verdict}: {c.text}: {c.measured}", soft_wrap=True, markup=False)
    console.print(f"wrote {out / 'table.md'}, table.json, table.png", markup=False)
    return out / "table.md"


def plot(result: TableResult, path: Path) -> None:
    """Ours beside the paper's: top-1 (or AP) per method and setting, with the spread over runs."""
    plt = pyplot()
    if result.name == "fig1c":
        fig, ax = plt.subplots(figsize=(8, 3.5))
        names = [r["method"] for r in result.rows]
        ax.barh(
            names, [r["average_precision"] for r in result.rows], xerr=[r["average_precision_std"] for r in result.rows]
        )
        ax.axvline(result.rows[0]["chance"], color="grey", linestyle="--", label="chance")
        ax.set_xlabel("average precision, same-class pairs")
        ax.legend()
    else:
        settings = sorted({r["labeled_per_class"] for r in result.rows})
        methods = list(dict.fromkeys(r["method"] for r in result.rows))
        fig, axes = plt.subplots(1, 2, figsize=(12, 4))
        width = 0.8 / max(1, len(methods))
        for k, method in enumerate(methods):
            rows = [
                next((r for r in result.rows if r["method"] == method and r["labeled_per_class"] == s), None)
                for s in settings
            ]
            xs = [i + k * width for i in range(len(settings))]
            axes[0].bar(
                xs,
                [r["top1"] if r else 0 for r in rows],
                width,
                yerr=[r["top1_std"] if r else 0 for r in rows],
                label=method,
            )
            paper = [r.get("paper_top1") if r else None for r in rows]
            axes[1].bar(xs, [p or 0 for p in paper], width, label=method)
        for ax, title in zip(
            axes, ("fgar on the embedded benchmark (mean ± std over runs)", "the paper (Diving48)"), strict=True
        ):
            ax.set_xticks([i + 0.4 - width / 2 for i in range(len(settings))])
            ax.set_title(title, fontsize=9)
        axes[0].set_xticklabels([f"{s} labels/class" for s in settings])
        axes[1].set_xticklabels(
            [next(r["paper_setting"] for r in result.rows if r["labeled_per_class"] == s) for s in settings]
        )
        axes[0].set_ylabel("test top-1")
        axes[1].set_ylabel("top-1 (%)")
        axes[0].legend(fontsize=7)
    fig.suptitle(result.title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
