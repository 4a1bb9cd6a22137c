"""Every `--help` explains itself, and `--set KEY=VALUE` and `fgar config show` reach every config key.

The help checks read typer's rendered help (a wide terminal, so that a row is one option) against the
command's own parameters: each option has plain help, one `[default: ...]` when it has a default, its
choices when it is an enum, and no `<bool>` for a flag, which takes no value.
"""

from __future__ import annotations

import enum
import re
from pathlib import Path
from typing import Any

import pytest
import typer.main
import yaml
from typer.testing import CliRunner

from fgar_cli.cli import app
from fgar_cli.commands import options
from fgar_cli.config import STAGE_SECTIONS, FitLabeledConfig, build_config

from conftest import Cli

WIDE = {"COLUMNS": "200", "TERMINAL_WIDTH": "200"}


def _commands(group: Any, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = []
    for name, command in group.commands.items():
        if hasattr(command, "commands"):
            found += _commands(command, (*path, name))
        else:
            found.append((*path, name))
    return found


ROOT = typer.main.get_command(app)
COMMANDS = _commands(ROOT)
# Section name -> command path, for the commands built from a config.
CONFIG_COMMANDS = {section: (section.replace("_", "-"),) for section in options.STAGE_COMMANDS}


def _command(path: tuple[str, ...]) -> Any:
    command = ROOT
    for name in path:
        command = command.commands[name]
    return command


def _help(path: tuple[str, ...]) -> str:
    result = CliRunner().invoke(app, [*path, "--help"], env=WIDE)
    assert result.exit_code == 0, result.output
    return result.output


ROW = re.compile(r"^│\s*(?:\*\s+)?(--[\w-]+)")


def option_rows(text: str) -> dict[str, str]:
    """Each option's row of the rendered help (wrapped lines joined), by its first flag."""
    rows: dict[str, str] = {}
    current = None
    for line in text.splitlines():
        if not line.startswith("│"):
            current = None
            continue
        body = line.strip("│ ")
        match = ROW.match(line)
        if match:
            current = match.group(1)
            rows[current] = body
        elif current is not None and body:
            rows[current] += " " + body
    return rows


def _choices(param: Any) -> list[str]:
    desc = getattr(param, "type_descriptor", None)  # typer >= 0.2x; click's Choice before
    values = (desc.choices if desc.is_choice else None) if desc is not None else getattr(param.type, "choices", None)
    return [str(v.value) if isinstance(v, enum.Enum) else str(v) for v in values or ()]


def _has_default(path: tuple[str, ...], param: Any) -> bool:
    """Whether the help must show a default for `param`: from config.py for a config-built command."""
    section = next((s for s, p in CONFIG_COMMANDS.items() if p == path), None)
    if section is not None and param.name.startswith("option_"):
        stage = options.STAGE_COMMANDS[section]
        opt = next(o for o in stage.options if o.flags.split("/")[0] == param.opts[0])
        return options.default_text(opt, options.field_default(stage.config_type(), opt.field)) is not None
    return param.default is not None and param.default != [] and not param.required


def test_every_command_is_checked() -> None:
    names = {" ".join(p) for p in COMMANDS}
    expected = {"synth", "data index", "data split", "data inspect", "config show", "summary"}
    assert expected | {p[0] for p in CONFIG_COMMANDS.values()} <= names
    assert set(options.STAGE_COMMANDS) == set(STAGE_SECTIONS)


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_help_explains_every_option(path: tuple[str, ...]) -> None:
    text = _help(path)
    rows = option_rows(text)
    assert "<bool>" not in text and "BOOLEAN" not in text, text
    for param in _command(path).params:
        if getattr(param, "hidden", False):
            assert param.opts[0] not in rows, f"{param.opts[0]} is hidden"
            continue
        assert (param.help or "").strip(), f"{' '.join(path)}: {param.name} has no help"
        if param.param_type_name != "option":
            continue
        flag = param.opts[0]
        row = rows[flag]
        assert "(default" not in row.lower(), row  # defaults are shown as [default: X] only
        defaults = row.count("[default:")
        if param.is_eager:  # --version: an action, not a setting
            continue
        assert defaults == (1 if _has_default(path, param) else defaults) and defaults <= 1, row
        for choice in _choices(param):
            assert choice in row, f"{flag}: choice {choice} not listed: {row}"


@pytest.mark.parametrize("section", sorted(options.STAGE_COMMANDS))
def test_config_commands_group_options_and_list_choices(section: str) -> None:
    stage = options.STAGE_COMMANDS[section]
    rows = option_rows(_help(CONFIG_COMMANDS[section]))
    for opt in stage.options:
        assert opt.panel in options.PANELS, opt
        row = rows[opt.flags.split("/")[0]]
        annotation = options.field_annotation(stage.config_type, opt.field)
        if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
            assert all(m.value in row for m in annotation), row
    for flag in ("--config", "--set"):
        assert flag in rows
    if "--device" in rows:
        assert all(word in rows["--device"] for word in ("auto", "cpu", "cuda:N")), rows["--device"]


def test_help_panels() -> None:
    text = _help(("fit-labeled",))
    for panel in ("Data", "Encoders", "Clip", "Training", "Output", "Run"):
        assert f"─ {panel} ─" in text, panel


def test_flags_have_both_forms() -> None:
    rows = option_rows(_help(("data", "index")))
    assert "--no-strict" in rows["--strict"] and "[default: no-strict]" in rows["--strict"]
    rows = option_rows(_help(("fit-labeled",)))
    assert "--no-resume" in rows["--resume"] and "[default: no-resume]" in rows["--resume"]


# --------------------------------------------------------------------------- --set KEY=VALUE


def _show_yaml(cli: Cli, section: str, *args: object) -> dict[str, Any]:
    result = cli(["config", "show", section, *args, "--format", "yaml"])
    assert result.code == 0, result.out + result.err
    return yaml.safe_load(result.out)[section]


def test_set_reaches_nested_keys(cli: Cli) -> None:
    cfg = _show_yaml(
        cli,
        "fit_labeled",
        "--set",
        "action_training.weight_decay=0.01",
        "--set",
        "run.num_workers=2",
        "--set",
        "clip.augment.min_scale=0.8",
        "--set",
        "clip.hflip=false",
        "--set",
        "run.frame_cache=off",  # YAML's false, kept as the text an enum field wants
        "--set",
        "out_dir=2024",  # a text field keeps its text
    )
    assert cfg["action_training"]["weight_decay"] == 0.01
    assert cfg["run"]["num_workers"] == 2
    assert cfg["clip"]["augment"]["min_scale"] == 0.8
    assert cfg["clip"]["hflip"] is False
    assert cfg["run"]["frame_cache"] == "off"
    assert cfg["out_dir"] == "2024"


def test_set_wins_over_config_file_and_loses_to_options(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "run.yaml"
    config.write_text(
        "fit_labeled:\n  action_training: {weight_decay: 0.5, lr: 0.01, epochs: 3}\n"
        "selftrain:\n  classifier: {tau: 0.5}\n"
    )
    cfg = _show_yaml(cli, "fit_labeled", "--config", config, "--set", "action_training.weight_decay=0.02")
    assert cfg["action_training"] == {
        "epochs": 3,
        "lr": 0.01,
        "weight_decay": 0.02,
        "batch_size": 8,
        "precision": "auto",
    }
    # null clears what the file gave
    assert _show_yaml(cli, "selftrain", "--config", config)["classifier"]["tau"] == 0.5
    assert _show_yaml(cli, "selftrain", "--config", config, "--set", "classifier.tau=null")["classifier"]["tau"] is None

    # The stage command resolves the same way, and its named options win over --set.
    import fgar_cli.stages.fit_labeled as stage

    seen: list[FitLabeledConfig] = []
    monkeypatch.setattr(stage, "fit_labeled", lambda cfg: seen.append(cfg) or {})
    args = ["--config", config, "--set", "action_training.epochs=5", "--set", "action_training.lr=0.1"]
    result = cli(["fit-labeled", *args, "--epochs-e", "7"])
    assert result.code == 0, result.out + result.err
    assert seen[0].action_training.epochs == 7  # option > --set > file
    assert seen[0].action_training.lr == 0.1  # --set > file
    assert seen[0].action_training.weight_decay == 0.5  # file > default


def test_set_unknown_key_names_the_nearest(cli: Cli) -> None:
    result = cli(["config", "show", "fit_labeled", "--set", "action_training.weight_dcay=0.1"])
    assert result.code == 1
    result.error_line("--set action_training.weight_dcay", "nearest", "action_training.weight_decay")
    result = cli(["fit-labeled", "--set", "weight_decay=0.1"])
    assert result.code == 1
    result.error_line("--set weight_decay", "action_training.weight_decay", "alignability_training.weight_decay")
    result = cli(["fit-labeled", "--set", "num_workers"])
    assert result.code == 1
    result.error_line("--set 'num_workers'", "KEY=VALUE")


def test_set_invalid_value_is_one_line(cli: Cli) -> None:
    result = cli(["fit-labeled", "--set", "action_training.lr=-1", "--set", "run.num_workers=many"])
    assert result.code == 1
    result.error_line("invalid FitLabeledConfig", "action_training.lr", "run.num_workers")


# --------------------------------------------------------------------------- fgar config show


def test_config_show_lists_every_key(cli: Cli) -> None:
    result = cli(["config", "show", "fit-labeled"])
    assert result.code == 0, result.out + result.err
    for key in (
        "run.num_workers",
        "clip.hflip",
        "action_training.weight_decay",
        "alignability_training.classes_per_batch",
    ):
        assert key in result.out, key
    row = next(line for line in result.out.splitlines() if "action_training.epochs" in line)
    assert "--epochs-e" in row and "int" in row and "30" in row
    assert "verify_threshold" in cli(["config", "show", "selftrain"]).out


def test_config_show_resolves_and_round_trips(cli: Cli, tmp_path: Path) -> None:
    result = cli(["config", "show", "pseudolabel", "--set", "pseudo_labeling.verify_threshold=0.7"])
    row = next(line for line in result.out.splitlines() if "verify_threshold" in line)
    assert "0.6" in row and "0.7" in row  # default and resolved value
    text = cli(["config", "show", "predict", "--set", "inputs=[a.mp4, b]", "--format", "yaml"]).out
    saved = tmp_path / "predict.yaml"
    saved.write_text(text)
    cfg = build_config(options.STAGE_COMMANDS["predict"].config_type, saved, section="predict")
    assert cfg.inputs == ["a.mp4", "b"]


def test_config_show_unknown_stage(cli: Cli) -> None:
    result = cli(["config", "show", "fitlabeled"])
    assert result.code == 1
    result.error_line("no stage 'fitlabeled'", "fit_labeled")


# --------------------------------------------------------------------------- one name for output folders


def test_folder_outputs_are_out_dir_and_files_out() -> None:
    file_writers = {("data", "index"), ("predict",), ("export",)}
    for path in COMMANDS:
        rows = option_rows(_help(path))
        if path in file_writers:
            assert "--out" in rows and "FILE" in rows["--out"], path
        elif "--out" in rows:
            assert path == ("data", "split"), path  # one file per seed with --out, several with --out-dir


def test_synth_still_reads_the_old_out(cli: Cli, tmp_path: Path) -> None:
    small = ["--classes", "2", "--videos-per-class", "2", "--frames", "16", "--size", "32"]
    result = cli(["synth", "--out", tmp_path / "d", *small])
    assert result.code == 0, result.out + result.err
    assert (tmp_path / "d" / "synth_meta.json").is_file()
    result = cli(["synth", "--out", tmp_path / "a", "--out-dir", tmp_path / "b", *small])
    assert result.code == 1
    result.error_line("--out-dir", "once")
    result = cli(["synth", *small])
    assert result.code == 1
    result.error_line("--out-dir")
