"""`fgar summary RUN_DIR`: the table of examples/compare.sh, written to summary.json.

The table is `fgar_cli.report.results_table` (the first table of `fgar report`): per arm
(`supervised`, `confidence_pl`, `finepseudo`) what RUN_DIR/eval_*/metrics.json and
st_*/selftrain.json report. Arms not run yet are listed as missing, not an error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from fgar_cli.artifacts import atomic_write_json


def summarize(run: Path) -> tuple[dict[str, Any], list[str]]:
    """The results table of `run` (also written to RUN/summary.json) and what is missing from it."""
    from fgar_cli.report import gather  # torch and h5py: only when the command runs

    report = gather(run)
    table = report.table()
    atomic_write_json(run / "summary.json", table)
    return table, report.missing


def print_table(table: dict[str, Any], missing: list[str]) -> None:
    from fgar_cli.report import TABLE_COLUMNS, protocols, table_cells

    rich_table = Table(title=f"test accuracy ({protocols(table) or 'no evaluation yet'})")
    rich_table.add_column("arm", no_wrap=True)
    for header, _ in TABLE_COLUMNS:
        rich_table.add_column(header)
    for arm, row in table.items():
        rich_table.add_row(arm, *table_cells(row))
    console = Console()
    console.print(rich_table)
    for line in missing:
        console.print(f"missing: {line}", soft_wrap=True, markup=False)


def summary(
    run: Path = typer.Argument(..., help="A run folder of examples/compare.sh (eval_*/ and st_*/ inside)."),
) -> None:
    """Print the comparison table of a compare.sh run folder and write it to RUN/summary.json.

    `fgar report RUN` writes the same table with plots, the theta sweep and confusion matrices.

    Example: fgar summary demo/run
    """
    print_table(*summarize(run))
