"""`fgar reproduce`: the paper's tables on the embedded benchmark (`make table1 ... tables`).

plan.py says what runs (scale, cells, arms), workspace.py runs it step by step (resumable),
results.py reads the stages' files back, stats.py holds the statistics, tables.py builds each table
and checks the paper's claims, pairs.py measures Fig. 1(c), render.py writes and prints a table.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fgar_cli.errors import FgarError
from fgar_cli.progress import console
from fgar_cli.reproduce.plan import DEVELOPMENT_SEEDS, Scale
from fgar_cli.reproduce.render import write_table
from fgar_cli.reproduce.tables import TABLES
from fgar_cli.reproduce.workspace import Workspace

REPOSITORY = Path(__file__).resolve().parents[2]
PAPER_FILE = REPOSITORY / "reproductions" / "paper.json"
ORDER = ("table1", "table2", "table6", "table5", "table4", "fig1c")  # table1 first: the others reuse its runs


def load_paper(path: Path = PAPER_FILE) -> dict[str, Any]:
    try:
        paper = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise FgarError(f"{path}: cannot read the paper's figures ({exc})") from None
    missing = [name for name in TABLES if name not in paper]
    if missing:
        raise FgarError(f"{path}: no figures for {', '.join(missing)}")
    return paper


def resolve_names(names: list[str]) -> list[str]:
    chosen: list[str] = []
    for name in names:
        if name == "tables":
            chosen += ORDER
        elif name in TABLES:
            chosen.append(name)
        else:
            raise FgarError(f"unknown table '{name}': choose from {', '.join(ORDER)} or tables")
    return sorted(dict.fromkeys(chosen), key=ORDER.index)


def reproduce(names: list[str], scale: Scale, out: Path, paper_file: Path = PAPER_FILE) -> list[Path]:
    """Run what the tables `names` need under `out`/work (skipping what is done), then write each
    table into `out`/<name>/. Returns the table.md files."""
    tables = resolve_names(names)
    paper = load_paper(paper_file)
    scale = scale.model_copy(
        update={
            "config": str(resolve_config(scale.config)),
            "sequence_config": str(resolve_config(scale.sequence_config)),
        }
    )
    development = sorted(set(scale.synth_seeds) & set(DEVELOPMENT_SEEDS))
    if development and not scale.quick:
        console.print(f"warning: generator seeds {development} were used for development; the tables will say so")
    workspace = Workspace(out / "work", scale)
    count, seconds = workspace.plan(lambda: [TABLES[name](workspace, paper) for name in tables])
    console.print(
        f"{', '.join(tables)}: {scale.runs} runs per cell; {count} steps to run, about {seconds / 60:.0f} min "
        f"on a 2-core CPU (work in {out / 'work'}; an interrupted run continues where it stopped)",
        soft_wrap=True,
        markup=False,
    )
    return [write_table(TABLES[name](workspace, paper), scale, out / name, console) for name in tables]


def resolve_config(config: str) -> Path:
    """The stage options file: as given, else relative to the repository (examples/, reproductions/)."""
    path = Path(config)
    if path.is_file():
        return path.resolve()
    if not path.is_absolute() and (REPOSITORY / path).is_file():
        return REPOSITORY / path
    raise FgarError(f"{config}: stage options file not found")
