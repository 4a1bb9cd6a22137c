"""Config precedence (CLI > file > defaults), nested parts, stage tables, and error messages that list
every bad field."""

from __future__ import annotations

from pathlib import Path

import pytest

from fgar_cli.config import (
    ActionArch,
    EvaluateConfig,
    FitLabeledConfig,
    OpenWorldConfig,
    PretrainConfig,
    PseudoLabelConfig,
    SelfTrainConfig,
    Source,
    build_config,
    read_config_file,
)
from fgar_cli.errors import FgarError


def test_cli_overrides_file_and_file_overrides_defaults(tmp_path: Path) -> None:
    cfg_file = tmp_path / "run.yaml"
    cfg_file.write_text(
        "fit_labeled:\n"
        "  action_training: {epochs: 7, lr: 0.002}\n"
        "  alignability_loss: {margin: 0.3}\n"
        "  action: {arch: small3d}\n"
    )
    overrides = {"alignability_loss": {"margin": 0.5}, "alignability_training": {"epochs": None}}
    cfg = build_config(FitLabeledConfig, cfg_file, overrides, section="fit_labeled")
    assert cfg.action_training.epochs == 7 and cfg.action_training.lr == 0.002  # from the file
    assert cfg.action_training.batch_size == FitLabeledConfig().action_training.batch_size  # merged, not replaced
    assert cfg.alignability_loss.margin == 0.5  # the CLI wins
    assert cfg.alignability_training.epochs == FitLabeledConfig().alignability_training.epochs  # None: not given
    assert cfg.action.arch is ActionArch.SMALL3D


def test_each_stage_reads_only_its_own_table(tmp_path: Path) -> None:
    cfg_file = tmp_path / "shared.yaml"
    cfg_file.write_text("fit_labeled:\n  action: {arch: small3d}\nselftrain:\n  rounds: 3\n")
    cfg = build_config(PseudoLabelConfig, cfg_file, section="pseudolabel")  # no pseudolabel table: defaults
    assert cfg == PseudoLabelConfig()


def test_toml_and_json_files_are_read(tmp_path: Path) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text("[pseudo_labeling]\ntheta = 0.5\n[classifier]\nrho = 3\n")
    cfg = build_config(PseudoLabelConfig, toml)
    assert cfg.classifier.rho == 3 and cfg.pseudo_labeling.theta == 0.5
    js = tmp_path / "c.json"
    js.write_text('{"pseudo_labeling": {"theta": 0.25, "source": "verify"}}')
    cfg = build_config(PseudoLabelConfig, js)
    assert cfg.pseudo_labeling.theta == 0.25 and cfg.pseudo_labeling.source is Source.VERIFY


def test_every_bad_field_is_listed_in_one_message() -> None:
    overrides = {"pseudo_labeling": {"theta": 1.5, "source": "magic"}, "classifier": {"rho": 0}}
    with pytest.raises(FgarError) as err:
        build_config(PseudoLabelConfig, None, overrides)
    msg = str(err.value)
    assert "\n" not in msg
    for field in ("pseudo_labeling.theta", "classifier.rho", "pseudo_labeling.source"):
        assert field in msg


def test_unknown_key_in_file_is_an_error(tmp_path: Path) -> None:
    cfg_file = tmp_path / "bad.yaml"
    cfg_file.write_text("pseudo_labeling:\n  thetta: 0.8\n")
    with pytest.raises(FgarError, match="pseudo_labeling.thetta"):
        build_config(PseudoLabelConfig, cfg_file)


def test_unparsable_file_names_the_file(tmp_path: Path) -> None:
    cfg_file = tmp_path / "bad.yaml"
    cfg_file.write_text("a: [1, 2\n")
    with pytest.raises(FgarError, match="bad.yaml: cannot parse config file"):
        build_config(PseudoLabelConfig, cfg_file)


def test_configs_are_frozen() -> None:
    cfg = FitLabeledConfig()
    with pytest.raises(Exception, match="frozen"):
        cfg.action_training.lr = 1.0  # type: ignore[misc]
    assert cfg.action_training.model_copy(update={"lr": 1.0}).lr == 1.0


STAGES = {
    "pretrain": PretrainConfig,
    "fit_labeled": FitLabeledConfig,
    "pseudolabel": PseudoLabelConfig,
    "selftrain": SelfTrainConfig,
    "evaluate": EvaluateConfig,
    "openworld": OpenWorldConfig,
}


@pytest.mark.parametrize("example", sorted((Path(__file__).parents[1] / "examples").glob("*.yaml")), ids=str)
@pytest.mark.parametrize("section", sorted(STAGES))
def test_example_configs_are_valid_for_every_stage(example: Path, section: str) -> None:
    cfg = build_config(STAGES[section], example, section=section)
    table = read_config_file(example).get(section, {})
    for part, values in table.items():  # what the file says is what the stage gets
        if isinstance(values, dict):
            for key, value in values.items():
                actual = getattr(getattr(cfg, part), key)
                assert (actual.model_dump(include=set(value)) if isinstance(value, dict) else actual) == value
        else:
            assert getattr(cfg, part) == values
