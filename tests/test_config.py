"""Config precedence (CLI > file > defaults) and error messages that list every bad field."""

from __future__ import annotations

from pathlib import Path

import pytest

from fgar_cli.config import FitLabeledConfig, PseudoLabelConfig, build_config
from fgar_cli.errors import FgarError


def test_cli_overrides_file_and_file_overrides_defaults(tmp_path: Path) -> None:
    cfg_file = tmp_path / "run.yaml"
    cfg_file.write_text("fit_labeled:\n  epochs_e: 7\n  margin: 0.3\n  arch_e: small3d\n")
    cfg = build_config(FitLabeledConfig, cfg_file, {"margin": 0.5, "epochs_a": None}, section="fit_labeled")
    assert cfg.epochs_e == 7  # from the file
    assert cfg.margin == 0.5  # the CLI wins
    assert cfg.epochs_a == FitLabeledConfig().epochs_a  # None means "not given": the default stays
    assert cfg.arch_e == "small3d"


def test_toml_and_json_files_are_read(tmp_path: Path) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text("theta = 0.5\nrho = 3\n")
    assert build_config(PseudoLabelConfig, toml).rho == 3
    js = tmp_path / "c.json"
    js.write_text('{"theta": 0.25}')
    assert build_config(PseudoLabelConfig, js).theta == 0.25


def test_every_bad_field_is_listed_in_one_message(tmp_path: Path) -> None:
    with pytest.raises(FgarError) as err:
        build_config(PseudoLabelConfig, None, {"theta": 1.5, "rho": 0, "source": "magic"})
    msg = str(err.value)
    assert "\n" not in msg
    for field in ("theta", "rho", "source"):
        assert field in msg


def test_unknown_key_in_file_is_an_error(tmp_path: Path) -> None:
    cfg_file = tmp_path / "bad.yaml"
    cfg_file.write_text("thetta: 0.8\n")
    with pytest.raises(FgarError, match="thetta"):
        build_config(PseudoLabelConfig, cfg_file)


def test_unparsable_file_names_the_file(tmp_path: Path) -> None:
    cfg_file = tmp_path / "bad.yaml"
    cfg_file.write_text("a: [1, 2\n")
    with pytest.raises(FgarError, match="bad.yaml: cannot parse config file"):
        build_config(PseudoLabelConfig, cfg_file)
