"""Stage commands built from their config: each command-line option names the config field it sets.

`config_command(FitLabeledConfig, "fit_labeled", [Opt("--epochs-e", "action_training.epochs", ...)])`
turns a function `run(cfg: FitLabeledConfig)` into a Typer command whose options are typed after the
fields they set (an enum field lists its choices), whose help shows the field's default from
config.py (the one place defaults live) in one `[default: X]` form, grouped in panels, and which
parses what was given into the config before calling `run`:

    defaults < `--config FILE` (its table named after the stage) < `--set KEY=VALUE` < options

An option left out is None and overrides nothing. `--set` reaches every key of the stage's config,
named by its dotted path (`--set action_training.weight_decay=0.01`), the way MMAction2's
`--cfg-options` does; `fgar config show STAGE` lists the keys.
"""

from __future__ import annotations

import difflib
import enum
import inspect
import types
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import typer
import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from rich.markup import escape

from fgar_cli.config import Config, merge, read_config_file, stage_table, validate
from fgar_cli.errors import FgarError

C = TypeVar("C", bound=Config)

CONFIG_PANEL = "Options"  # typer prints its default panel first: --config, --set and --help lead
# The other panels, in the order a reader needs them (typer prints panels in the order options come).
PANELS = ("Data", "Encoders", "Clip", "Training", "Classifier", "Pseudo-labels", "Output", "Run")


@dataclass(frozen=True)
class Opt:
    """A command-line option that sets one config field (`field` is its dotted path)."""

    flags: str  # "--epochs-e"; a bool field gives both forms: "--resume/--no-resume"
    field: str
    help: str  # plain words first; a paper symbol may follow in parentheses: "Frames per clip (T)."
    panel: str = "Run"  # the help panel it is listed in
    default: str | None = None  # how a default left None in config.py is worked out, e.g. "beside --ckpt-e"
    metavar: str | None = None  # FILE, DIR: what a str field holds; None: typer's <type> or choices


@dataclass(frozen=True)
class StageCommand:
    """What `fgar config show` needs to know of a stage command."""

    config_type: type[Config]
    options: tuple[Opt, ...]


# Filled by `config_command` as commands/stages.py is imported: section name -> its command.
STAGE_COMMANDS: dict[str, StageCommand] = {}


# --------------------------------------------------------------------------- fields of a config


def strip_none(annotation: Any) -> Any:
    """`annotation` without its `| None`."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return next(a for a in typing.get_args(annotation) if a is not type(None))
    return annotation


def _sub_model(annotation: Any) -> type[BaseModel] | None:
    inner = strip_none(annotation)
    return inner if isinstance(inner, type) and issubclass(inner, BaseModel) else None


def field_info(model: type[BaseModel], path: str) -> FieldInfo:
    """The pydantic field at dotted `path` (KeyError when there is none)."""
    *parents, name = path.split(".")
    for part in parents:
        below = _sub_model(model.model_fields[part].annotation)
        if below is None:
            raise KeyError(path)
        model = below
    return model.model_fields[name]


def field_annotation(model: type[BaseModel], path: str) -> Any:
    """The type of the field at dotted `path`, without its `| None`."""
    return strip_none(field_info(model, path).annotation)


def field_default(config: Config, path: str) -> Any:
    value: Any = config
    for part in path.split("."):
        value = getattr(value, part)
    return value


def config_keys(model: type[BaseModel], prefix: str = "") -> Iterator[tuple[str, FieldInfo]]:
    """Every leaf key of `model` as (dotted path, field), in declaration order; parts are walked into."""
    for name, info in model.model_fields.items():
        below = _sub_model(info.annotation)
        if below is None:
            yield prefix + name, info
        else:
            yield from config_keys(below, f"{prefix}{name}.")


def _sections(model: type[BaseModel], prefix: str = "") -> Iterator[str]:
    for name, info in model.model_fields.items():
        below = _sub_model(info.annotation)
        if below is not None:
            yield prefix + name
            yield from _sections(below, f"{prefix}{name}.")


def shown(value: Any) -> str:
    """A value as a user types it."""
    if isinstance(value, enum.Enum):
        return str(value.value)
    if isinstance(value, bool):
        return str(value).lower()
    return "null" if value is None else str(value)


# --------------------------------------------------------------------------- help text


def default_note(text: str) -> str:
    """` [default: text]`, escaped so that rich does not read it as markup."""
    return escape(f" [default: {text}]")


def default_text(opt: Opt, default: Any) -> str | None:
    """What `[default: ...]` says for `opt`, or None when it has no default."""
    if opt.default is not None:
        return opt.default
    if default is None or default == []:
        return None
    if isinstance(default, bool) and "/" in opt.flags:  # name the flag form, as typer does
        on, off = opt.flags.split("/")
        return (on if default else off).lstrip("-")
    return shown(default)


def _typer_option(opt: Opt, default: Any) -> Any:
    note = default_text(opt, default)
    text = escape(opt.help) + (default_note(note) if note is not None else "")
    # show_default=False: the default is in the text, from config.py, written once.
    return typer.Option(None, opt.flags, help=text, metavar=opt.metavar, rich_help_panel=opt.panel, show_default=False)


# --------------------------------------------------------------------------- --set KEY=VALUE


def nearest_keys(key: str, keys: Sequence[str], count: int = 4) -> list[str]:
    """The keys closest to `key`, by whole path and by last part (`weight_decay` finds
    `action_training.weight_decay`)."""
    by_path = difflib.get_close_matches(key, keys, n=count, cutoff=0.6)
    last = {k: k.rsplit(".", 1)[-1] for k in keys}
    close = set(difflib.get_close_matches(key.rsplit(".", 1)[-1], sorted(set(last.values())), n=count, cutoff=0.7))
    by_last = [k for k in keys if last[k] in close]
    return list(dict.fromkeys(by_path + by_last))[:count]


def parse_value(text: str, annotation: Any) -> Any:
    """A `--set` value: YAML scalar or list (`0.01`, `true`, `null`, `[a, b]`); text fields keep the text
    as given, so that `--set run.frame_cache=off` or `--set out_dir=2024` are not read as YAML's
    false or 2024."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if value is None:
        return None
    inner = strip_none(annotation)
    if inner is str or (isinstance(inner, type) and issubclass(inner, enum.Enum)):
        return text
    return value


def parse_sets(model: type[Config], section: str, items: Sequence[str]) -> list[tuple[str, Any]]:
    """`KEY=VALUE` items as (dotted path, value), every key checked against `model`."""
    keys = [key for key, _ in config_keys(model)]
    sections = set(_sections(model))
    parsed = []
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise FgarError(f"--set {item!r}: expected KEY=VALUE, e.g. --set run.num_workers=2")
        if key in sections:
            value = parse_value(text, dict)
            if not isinstance(value, Mapping):
                raise FgarError(f"--set {key}: '{key}' is a table; set one of its keys, e.g. {key}.KEY=VALUE")
        elif key in keys:
            value = parse_value(text, field_info(model, key).annotation)
        else:
            near = nearest_keys(key, keys)
            hint = f"nearest: {', '.join(near)}" if near else f"`fgar config show {section}` lists every key"
            raise FgarError(f"--set {key}: no such key in the {section} config ({hint})")
        parsed.append((key, value))
    return parsed


def assign(values: Mapping[str, Any], path: str, value: Any) -> dict[str, Any]:
    """`values` with the key at dotted `path` set to `value` (None too: `--set classifier.tau=null`
    clears a value a config file gave)."""
    head, _, rest = path.partition(".")
    updated = dict(values)
    if rest:
        below = updated.get(head)
        updated[head] = assign(below if isinstance(below, Mapping) else {}, rest, value)
    else:
        updated[head] = value
    return updated


def _nested(path: str, value: Any) -> dict[str, Any]:
    return assign({}, path, value)


def resolve_config(
    config_type: type[C],
    section: str,
    config_file: str | Path | None = None,
    sets: Sequence[str] = (),
    options: Mapping[str, Any] | None = None,
) -> C:
    """Defaults < the stage's table of `config_file` < `sets` (KEY=VALUE) < `options` (nested, None
    meaning not given), validated into one config; every problem is one FgarError line."""
    parsed = parse_sets(config_type, section, sets)  # a misspelt key fails before any file is read
    values: dict[str, Any] = {}
    if config_file is not None:
        values = merge(values, stage_table(read_config_file(config_file), section))
    for path, value in parsed:
        values = assign(values, path, value)
    values = merge(values, options or {})
    sources = ([str(config_file)] if config_file is not None else []) + (["--set"] if sets else [])
    return validate(config_type, values, " and ".join(sources) or "command line")


def config_file_option() -> Any:
    return typer.Option(
        None,
        "--config",
        metavar="FILE",
        help=escape(
            "Config file (YAML, TOML or JSON) of this stage's keys; in a file of stage tables (examples/demo.yaml) "
            "the table named after the stage is read. --set and the named options win over it."
        ),
        rich_help_panel=CONFIG_PANEL,
        show_default=False,
    )


def set_option() -> Any:
    return typer.Option(
        None,
        "--set",
        metavar="KEY=VALUE",
        help=escape(
            "Set any config key by its dotted path, e.g. --set action_training.weight_decay=0.01 --set "
            "run.num_workers=2; repeatable. Values are YAML (0.01, true, null, [a, b]). Wins over --config, "
            "loses to the named options; `fgar config show STAGE` lists every key."
        ),
        rich_help_panel=CONFIG_PANEL,
        show_default=False,
    )


# --------------------------------------------------------------------------- the command


def _given(value: Any) -> bool:
    # A repeatable option left out may arrive as an empty list; that overrides nothing either.
    return value is not None and value != [] and value != ()


def config_command(
    config_type: type[C], section: str, options: Sequence[Opt]
) -> Callable[[Callable[[C], None]], Callable[..., None]]:
    """Decorate `run(cfg)` into a Typer command with `options`, `--config` and `--set` (module notes)."""
    defaults = config_type()
    STAGE_COMMANDS[section] = StageCommand(config_type, tuple(options))

    def decorate(run: Callable[[C], None]) -> Callable[..., None]:
        params, fields = [], {}
        in_panels = sorted(options, key=lambda o: PANELS.index(o.panel) if o.panel in PANELS else len(PANELS))
        for index, opt in enumerate(in_panels):
            name = f"option_{index}"
            info = _typer_option(opt, field_default(defaults, opt.field))
            annotation = field_annotation(config_type, opt.field)
            params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=info, annotation=annotation))
            fields[name] = opt.field
        for name, info, annotation in (
            ("config_file", config_file_option(), Path | None),
            ("sets", set_option(), list[str] | None),
        ):
            params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=info, annotation=annotation))

        def command(**values: Any) -> None:
            config_file = values.pop("config_file")
            sets = values.pop("sets") or ()
            overrides: dict[str, Any] = {}
            for name, value in values.items():
                if _given(value):
                    overrides = merge(overrides, _nested(fields[name], value))
            run(resolve_config(config_type, section, config_file, sets, overrides))

        command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in params}
        command.__doc__ = run.__doc__
        command.__name__ = run.__name__
        return command

    return decorate


# --------------------------------------------------------------------------- flags in rich help


def _hide_flag_types() -> None:
    """typer 0.29's rich help labels every flag `<bool>` (`--resume <bool>`, `--help <bool>`), although
    a flag takes no value and `--resume true` is refused; its plain help leaves flags bare. Make the
    rich help do the same."""
    option = getattr(typer.core, "TyperOption", None)
    original = getattr(option, "display_type_rich", None)
    if original is None or getattr(original, "_fgar_flags_bare", False):
        return

    def display_type_rich(self: Any, ctx: Any) -> str | None:
        if getattr(self, "is_flag", False) and self.metavar is None:
            return None
        return original(self, ctx)

    display_type_rich._fgar_flags_bare = True  # type: ignore[attr-defined]
    option.display_type_rich = display_type_rich


_hide_flag_types()
