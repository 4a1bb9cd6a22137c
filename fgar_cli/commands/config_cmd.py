"""`fgar config show STAGE`: every key of a stage's config, its type, default and description.

With `--config FILE` and `--set KEY=VALUE` it also shows the values they resolve to (the same way the
stage command resolves them, commands/options.py); `--format yaml` prints the resolved config as a
file the stage reads back (`fgar STAGE --config that.yaml`).
"""

from __future__ import annotations

import difflib
import enum
import typing
from enum import StrEnum
from pathlib import Path
from typing import Any

import typer
import yaml
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from fgar_cli.commands import options
from fgar_cli.commands import stages as _stages  # noqa: F401  (registers every stage's options)
from fgar_cli.config import STAGE_SECTIONS, Config
from fgar_cli.errors import FgarError

config_app = typer.Typer(
    help="Look at a stage's config: every key, its type, default, description and option.",
    no_args_is_help=True,
)

console = Console()


class Format(StrEnum):
    TABLE = "table"
    YAML = "yaml"


def type_name(annotation: Any) -> str:
    """A field's type in plain words: `int`, `float or null`, `r2plus1d_18|r3d_18|small3d`, `list[str]`."""
    inner = options.strip_none(annotation)
    optional = " or null" if inner is not annotation else ""
    if isinstance(inner, type) and issubclass(inner, enum.Enum):
        name = "|".join(str(m.value) for m in inner)
    elif typing.get_origin(inner) is list:
        name = f"list[{type_name(typing.get_args(inner)[0])}]"
    else:
        name = getattr(inner, "__name__", str(inner))
    return name + optional


def stage_name(text: str) -> str:
    """A stage's section name; the command's spelling (fit-labeled) is taken too."""
    section = text.replace("-", "_")
    if section not in STAGE_SECTIONS:
        near = difflib.get_close_matches(section, STAGE_SECTIONS, n=1)
        hint = f"did you mean {near[0]}? " if near else ""
        raise FgarError(f"config show: no stage '{text}' ({hint}stages: {', '.join(STAGE_SECTIONS)})")
    return section


def option_names(section: str) -> dict[str, str]:
    """Dotted key -> the command-line option that sets it."""
    return {opt.field: opt.flags for opt in options.STAGE_COMMANDS[section].options}


def key_table(section: str, resolved: Config | None) -> Table:
    config_type = options.STAGE_COMMANDS[section].config_type
    defaults = config_type()
    flags = option_names(section)
    table = Table(
        title=f"{section} config",
        caption=f"Set any key with --set KEY=VALUE, or in a config file's '{section}:' table.",
    )
    table.add_column("key", no_wrap=True)
    table.add_column("type")
    table.add_column("default")
    if resolved is not None:
        table.add_column("value")
    table.add_column("option", no_wrap=True)
    table.add_column("description", overflow="fold")
    for key, info in options.config_keys(config_type):
        default = options.shown(options.field_default(defaults, key))
        row = [key, type_name(info.annotation), default]
        if resolved is not None:
            value = options.shown(options.field_default(resolved, key))
            row.append(value if value == default else f"[bold]{escape(value)}[/]")
        row += [flags.get(key, ""), info.description or ""]
        table.add_row(*[cell if cell.startswith("[bold]") else escape(cell) for cell in row])
    return table


def resolved_yaml(section: str, cfg: Config) -> str:
    """The config as a file of one stage table, which `fgar STAGE --config` reads back."""
    return yaml.safe_dump({section: cfg.model_dump(mode="json")}, sort_keys=False)


@config_app.command(
    "show",
    epilog="Examples: fgar config show fit_labeled;  fgar config show selftrain --config examples/demo.yaml "
    "--set pseudo_labeling.theta=0.9 --format yaml > st.yaml  (then: fgar selftrain --config st.yaml)",
)
def show(
    stage: str = typer.Argument(
        ...,
        metavar="STAGE",
        help=f"The stage, one of: {', '.join(STAGE_SECTIONS)} (or the command's spelling, fit-labeled).",
        show_default=False,
    ),
    config_file: Path | None = options.config_file_option(),
    sets: list[str] | None = options.set_option(),
    fmt: Format = typer.Option(
        Format.TABLE,
        "--format",
        help="table: every key with its type, default and description; yaml: the resolved config, re-runnable.",
    ),
) -> None:
    """Every key of STAGE's config with its type, default, description and option; with --config or
    --set, the values they resolve to."""
    section = stage_name(stage)
    config_type = options.STAGE_COMMANDS[section].config_type
    given = config_file is not None or bool(sets)
    cfg = options.resolve_config(config_type, section, config_file, sets or ())
    if fmt is Format.YAML:
        typer.echo(resolved_yaml(section, cfg), nl=False)
    else:
        console.print(key_table(section, cfg if given else None))
