"""Stage commands built from their config: each command-line option names the config field it sets.

`config_command(FitLabeledConfig, "fit_labeled", [Opt("--epochs-e", "action_training.epochs", ...)])`
turns a function `run(cfg: FitLabeledConfig)` into a Typer command whose options are typed after the
fields they set (an enum field lists its choices), whose help shows the field's default from
config.py (the one place defaults live), and which parses what was given into the config (defaults
< `--config FILE` < options) before calling `run`. An option left out is None and overrides nothing.
"""

from __future__ import annotations

import enum
import inspect
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import typer
from pydantic import BaseModel
from rich.markup import escape

from fgar_cli.config import Config, build_config, merge

C = TypeVar("C", bound=Config)


@dataclass(frozen=True)
class Opt:
    """A command-line option that sets one config field (`field` is its dotted path)."""

    flags: str  # "--epochs-e"; a bool field gives both forms: "--resume/--no-resume"
    field: str
    help: str


def field_annotation(model: type[BaseModel], path: str) -> Any:
    """The type of the field at dotted `path`, without its `| None`."""
    *parents, name = path.split(".")
    for part in parents:
        model = model.model_fields[part].annotation
    annotation = model.model_fields[name].annotation
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
    return annotation


def field_default(config: Config, path: str) -> Any:
    value: Any = config
    for part in path.split("."):
        value = getattr(value, part)
    return value


def _shown(value: Any) -> str:
    return value.value if isinstance(value, enum.Enum) else str(value)


def _nested(path: str, value: Any) -> dict[str, Any]:
    *parents, name = path.split(".")
    tree: dict[str, Any] = {name: value}
    for part in reversed(parents):
        tree = {part: tree}
    return tree


def config_command(
    config_type: type[C], section: str, options: Sequence[Opt]
) -> Callable[[Callable[[C], None]], Callable[..., None]]:
    """Decorate `run(cfg)` into a Typer command with `options` and `--config` (see the module notes)."""
    defaults = config_type()

    def decorate(run: Callable[[C], None]) -> Callable[..., None]:
        params, fields = [], {}
        for index, opt in enumerate(options):
            name = f"option_{index}"
            default = field_default(defaults, opt.field)
            shown = escape(f" [default: {_shown(default)}]") if default is not None else ""  # not rich markup
            info = typer.Option(None, opt.flags, help=opt.help + shown)
            annotation = field_annotation(config_type, opt.field)
            params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=info, annotation=annotation))
            fields[name] = opt.field
        config_help = "YAML/TOML/JSON file of options; its table named after the stage is read (options win)."
        params.append(
            inspect.Parameter(
                "config_file",
                inspect.Parameter.KEYWORD_ONLY,
                default=typer.Option(None, "--config", help=config_help),
                annotation=Path,
            )
        )

        def command(**values: Any) -> None:
            config_file = values.pop("config_file")
            overrides: dict[str, Any] = {}
            for name, value in values.items():
                if value is not None:
                    overrides = merge(overrides, _nested(fields[name], value))
            run(build_config(config_type, config_file, overrides, section=section))

        command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in params}
        command.__doc__ = run.__doc__
        command.__name__ = run.__name__
        return command

    return decorate
