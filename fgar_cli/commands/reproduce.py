"""`fgar reproduce TABLE...`: the paper's tables on the embedded benchmark (`fgar_cli.reproduce`)."""

from __future__ import annotations

from pathlib import Path

import typer

from fgar_cli.errors import FgarError

REPRODUCE_EPILOG = (
    "Examples: fgar reproduce table1  |  fgar reproduce tables --quick --out-dir /tmp/repro  |  "
    "fgar reproduce table6 --synth-seeds 11,12,13 --splits 0,1  (make table1 ... make tables run these)"
)


def parse_seeds(text: str | None, option: str) -> list[int] | None:
    if text is None or not text.strip():
        return None
    try:
        return [int(part) for part in text.replace(",", " ").split()]
    except ValueError:
        raise FgarError(f"{option} {text!r}: give whole numbers separated by commas or spaces") from None


def reproduce(
    tables: list[str] = typer.Argument(..., help="table1, table4, table5, table6, fig1c, or tables (all of them)."),
    synth_seeds: str | None = typer.Option(
        None,
        "--synth-seeds",
        help="Generator seeds of the datasets, e.g. 11,12,13 [default: 11,12,13, none used for development].",
    ),
    splits: str | None = typer.Option(None, "--splits", help="Label split seeds per dataset [default: 0]."),
    quick: bool = typer.Option(
        False, "--quick/--no-quick", help="The small form: every step in a few minutes; its figures mean nothing."
    ),
    config: str | None = typer.Option(
        None,
        "--config",
        metavar="FILE",
        help="Stage options (one table per stage) [default: examples/demo.yaml; --quick: reproductions/quick.yaml].",
    ),
    out: Path = typer.Option(
        Path("reproductions"), "--out-dir", metavar="DIR", help="Tables go to DIR/<table>/, the runs to DIR/work/."
    ),
) -> None:
    """Reproduce the paper's tables on the embedded benchmark, with their spread and paired intervals.

    Each table writes DIR/<table>/table.md (ours beside the paper's figures, and
    the paper's claims checked), table.json and table.png. Before starting it
    prints how many steps are left and about how long they take; a rerun
    continues where the last one stopped (everything lives in DIR/work/).
    """
    from fgar_cli.reproduce import reproduce as run
    from fgar_cli.reproduce.plan import QUICK, Scale

    scale = QUICK if quick else Scale()
    update: dict[str, object] = {}
    if (seeds := parse_seeds(synth_seeds, "--synth-seeds")) is not None:
        update["synth_seeds"] = seeds
    if (split_seeds := parse_seeds(splits, "--splits")) is not None:
        update["splits"] = split_seeds
    if config is not None:
        update["config"] = config
    scale = Scale.model_validate(scale.model_dump() | update)
    for path in run(tables, scale, out):
        typer.echo(f"table: {path}")
