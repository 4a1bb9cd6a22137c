"""Configs: pydantic models, loaded from an optional YAML/TOML/JSON file, overridden by CLI options.

Precedence is CLI > config file > defaults. An option the user did not give on the command line is
passed here as None and does not override the file. Invalid values raise one FgarError that lists
every bad field, so a user fixes them all in one go.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fgar_cli.errors import FgarError


class Config(BaseModel):
    """Base of every stage config: unknown keys are errors (a typo must not pass silently)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


C = TypeVar("C", bound=Config)


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML, TOML or JSON config file into a dict."""
    p = Path(path)
    if not p.is_file():
        raise FgarError(f"{p}: config file not found")
    text = p.read_text(encoding="utf-8")
    try:
        if p.suffix == ".toml":
            data = tomllib.loads(text)
        elif p.suffix == ".json":
            data = json.loads(text)
        else:
            data = yaml.safe_load(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, yaml.YAMLError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise FgarError(f"{p}: cannot parse config file: {first}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise FgarError(f"{p}: config file must hold a mapping of option names to values")
    return data


def build_config(
    model: type[C],
    config_file: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    section: str | None = None,
) -> C:
    """Defaults < file (its `section` table, when the file has one) < overrides that are not None."""
    values: dict[str, Any] = {}
    source = "command line"
    if config_file is not None:
        data = read_config_file(config_file)
        if section is not None and isinstance(data.get(section), dict):
            data = data[section]
        values.update(data)
        source = str(config_file)
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(x) for x in err['loc']) or '(root)'}: {err['msg']}" for err in exc.errors()
        )
        raise FgarError(f"{source}: invalid {model.__name__} ({problems})") from None


# --------------------------------------------------------------------------- stage configs
#
# Where each default comes from (the paper leaves most hyperparameters out, DESIGN.md section 1):
# * theta 0.8: the paper names a confidence threshold (Sec. 3.2) but gives no value; 0.8 is our design notes' example.
# * verify_threshold 0.6: the paper's label-verification variant (Table 6).
# * tau: fitted by leave-one-out on the labeled gallery unless given; rho 8, gamma 0.1, margin, omega 1.0:
#   ours; see docs/METHOD.md for the reasoning.
# * num_frames 16, size 112: the usual R(2+1)D-18 input for fine-grained video (paper Table 1).
# The distances that the losses and scores see are soft-DTW values divided by the clip length T
# (an alignment cost per frame, in [0, 2] for cosine cost), so margin and f_S do not depend on T.

Source = Literal["collab", "action", "alignability", "verify"]


class ClipOptions(Config):
    """Where the clips come from and how they are cut; shared by every stage."""

    index: str | None = Field(None, description="dataset index JSON (fgar data index)")
    split: str | None = Field(None, description="label split JSON (fgar data split)")
    num_frames: int = Field(16, ge=1, le=512, description="frames per clip, T")
    size: int = Field(112, ge=16, le=1024, description="square crop size in pixels")
    hflip: bool = Field(
        True, description="random horizontal flips in training (off where left/right decides the class)"
    )
    num_workers: int = Field(0, ge=0, description="DataLoader worker processes")
    device: str = Field("auto", description="auto, cpu, cuda or cuda:N")
    seed: int = 0
    out_dir: str = "runs/fgar"


class AlignabilityArch(Config):
    backbone_a: Literal["small2d", "resnet18"] = "small2d"
    feature_dim: int = Field(128, ge=8)
    hidden_dim: int = Field(128, ge=8)
    depth: int = Field(2, ge=1)
    heads: int = Field(4, ge=1)


class AlignabilityLossOptions(Config):
    gamma: float = Field(0.1, gt=0, description="soft-DTW smoothing")
    margin: float = Field(0.1, ge=0, description="triplet margin on per-frame alignment cost")
    omega: float = Field(1.0, ge=0, description="weight of the score loss, Eq. 5")
    classes_per_batch: int = Field(4, ge=2, description="P of the P x K batches")
    clips_per_class: int = Field(4, ge=2, description="K of the P x K batches")


class PretrainConfig(ClipOptions, AlignabilityArch):
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(8, ge=1)
    lr: float = Field(3e-4, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    gitdl_tau: float = Field(0.1, gt=0, description="temperature of the GITDL logits")
    gitdl_sigma: float = Field(1.0, gt=0, description="width of the Gaussian target, in frames")
    # Off by default: with other videos' frames as negatives the encoder can tell clips apart by
    # per-video nuisance (brightness, tint, build) instead of pose, and on the embedded benchmark the
    # pretrained f_A fell to chance (benchmarks/diagnose_run.py; docs/RESULTS.md). Intra-video only is
    # also what GITDL's name says.
    cross_video_negatives: bool = False
    resume: bool = False


class FitLabeledConfig(ClipOptions, AlignabilityArch, AlignabilityLossOptions):
    arch_e: Literal["r2plus1d_18", "r3d_18", "small3d"] = "r2plus1d_18"
    init_e: str | None = Field(None, description="state_dict file to initialise f_E from")
    bgr: bool = Field(False, description="the f_E init weights expect BGR input")
    init_a: str | None = Field(None, description="f_A checkpoint from pretrain")
    epochs_e: int = Field(30, ge=0)
    epochs_a: int = Field(30, ge=0)
    batch_size: int = Field(8, ge=1)
    lr_e: float = Field(1e-3, gt=0)
    lr_a: float = Field(3e-4, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    resume: bool = False


class PseudoLabelOptions(Config):
    theta: float = Field(0.8, ge=0, le=1, description="confidence threshold")
    tau: float | None = Field(
        None, gt=0, description="temperature of the non-parametric classifier, Eq. 8; None: fitted (leave-one-out)"
    )
    rho: int = Field(8, ge=1, description="gallery members per class, Eq. 7")
    source: Source = "collab"
    verify_threshold: float = Field(0.6, ge=0, le=1, description="alignability needed by --source verify")
    batch_size: int = Field(16, ge=1)


class PseudoLabelConfig(PseudoLabelOptions):
    ckpt_a: str | None = None
    ckpt_e: str | None = None
    gallery: str | None = Field(None, description="reuse this gallery.h5 instead of embedding")
    index: str | None = None
    split: str | None = None
    device: str = "auto"
    seed: int = 0
    out_dir: str | None = None


class SelfTrainConfig(PseudoLabelOptions):
    ckpt_a: str | None = None
    ckpt_e: str | None = None
    index: str | None = None
    split: str | None = None
    rounds: int = Field(2, ge=1, description="max_iter of Algorithm 1")
    epochs: int = Field(5, ge=1, description="max_epoch_st of Algorithm 1")
    lr_e: float | None = Field(None, gt=0, description="default: the fit-labeled value")
    lr_a: float | None = Field(None, gt=0, description="default: the fit-labeled value")
    novel_threshold: float | None = Field(
        None, description="open world: clips whose best class alignability is below are novel"
    )
    device: str = "auto"
    seed: int = 0
    out_dir: str = "runs/fgar/selftrain"
    resume: bool = False


class EvaluateConfig(Config):
    ckpt_e: str | None = None
    ckpt_a: str | None = None
    index: str | None = None
    split: str | None = None
    subset: Literal["test", "unlabeled", "labeled"] = "test"
    num_views: int = Field(3, ge=1, description="clips per test video, averaged")
    tau: float | None = Field(None, gt=0, description="None: fitted on the gallery (leave-one-out)")
    rho: int = Field(8, ge=1)
    batch_size: int = Field(16, ge=1)
    device: str = "auto"
    seed: int = 0
    out_dir: str = "runs/fgar/eval"


class OpenWorldConfig(SelfTrainConfig):
    novel_quantile: float = Field(
        0.05, gt=0, lt=1, description="auto threshold: this quantile of labeled clips' own-class alignability"
    )
    out_dir: str = "runs/fgar/openworld"
