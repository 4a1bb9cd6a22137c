"""`fgar report RUN_DIR`: a run folder of examples/compare.sh as report.md and report.html (`fgar_cli.report`)."""

from __future__ import annotations

from pathlib import Path

import typer

from fgar_cli.commands.options import default_note


def report(
    run: Path = typer.Argument(
        ..., help="A run folder of examples/compare.sh (eval_*/, st_*/ inside), or one stage's output folder."
    ),
    out_dir: Path | None = typer.Option(
        None, "--out-dir", help="Where to write the report." + default_note("RUN/report")
    ),
) -> None:
    """Write report.md, report.html (one self-contained file) and report.json for a run folder.

    It holds the table of `fgar summary`, the pseudo-labels per round, the
    theta sweep of every pseudo.h5, per-class accuracy and the confusion
    matrices of each arm and head. Arms not run yet are listed as missing.

    Example: fgar report demo/run
    """
    from fgar_cli.report import write_report  # matplotlib and torch: only when a report is made

    files = write_report(run, out_dir)
    for line in files.missing:
        typer.echo(f"missing: {line}")
    typer.echo(f"wrote {files.markdown}, {files.html} and {len(files.images)} images beside them")
