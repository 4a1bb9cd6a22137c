"""Checkpoints: what they hold, how they are written and read, and the checks between them.

A checkpoint is a dict of plain containers and tensors, saved with `torch.save` and loaded with
`torch.load(weights_only=True)`, so loading never unpickles arbitrary objects:

    format, format_version, created_by      what wrote it
    kind, arch, num_classes, state_dict      the model: its typed config (`arch`) rebuilds it
    class_names                              the classes f_E predicts (empty after pretraining)
    recipe                                   its data, clip and training settings (config.py's
                                             ActionRecipe, AlignabilityRecipe or PretrainRecipe)
    config                                   the resolved config of the stage that wrote it
    epoch, history                           epochs trained and their metrics
    round, pseudo_labels                     self-training: the round, and its pseudo-label stats
    optimizer, scheduler                     only in the `*_last.pt` files that --resume reads

Later stages read checkpoints through `load_action`, `load_alignability` and `load_encoders`, which
rebuild the model and the recipe and check them against each other and against the data.
"""

from __future__ import annotations

import io
import pickle
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError
from torch import nn

from fgar_cli import __version__
from fgar_cli.config import (
    ActionEncoderConfig,
    ActionRecipe,
    AlignabilityEncoderConfig,
    AlignabilityRecipe,
    Config,
    DataPaths,
    problems,
    validate,
)
from fgar_cli.data.run_data import RunData
from fgar_cli.distributed import after_write
from fgar_cli.errors import FgarError
from fgar_cli.files import atomic_write_bytes, os_error
from fgar_cli.models import (
    ActionEncoder,
    AlignabilityEncoder,
    EncoderKind,
    PretrainedActionEncoder,
    build_action_encoder,
    build_alignability_encoder,
    build_pretrained_action_encoder,
)

CHECKPOINT_FORMAT = "fgar.checkpoint"
CHECKPOINT_VERSION = 2


# --------------------------------------------------------------------------- files


def save_checkpoint(path: str | Path, payload: Mapping[str, Any]) -> None:
    """Save a checkpoint dict atomically, stamped with the format name and version."""
    full = {"format": CHECKPOINT_FORMAT, "format_version": CHECKPOINT_VERSION, "created_by": __version__}
    full.update(payload)
    buffer = io.BytesIO()  # serialised in memory: torch never writes to the disk itself (fgar_cli.files)
    torch.save(full, buffer)
    atomic_write_bytes(path, buffer.getvalue())
    after_write(path)  # under torchrun: rank 0 wrote it (fgar_cli.distributed)


def load_checkpoint(path: str | Path, kind: EncoderKind | None = None) -> dict[str, Any]:
    """Load a checkpoint with `weights_only=True`; check its format and (optionally) its kind."""
    p = Path(path)
    if not p.is_file():
        raise FgarError(f"{p}: {'is a folder, not a checkpoint' if p.is_dir() else 'checkpoint not found'}")
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=True)
    except OSError as exc:
        raise os_error(p, exc, "cannot read the checkpoint") from None
    except pickle.UnpicklingError as exc:
        if "global" in str(exc).lower():  # weights_only refused to build a Python object
            raise FgarError(
                f"{p}: not a checkpoint fgar can load safely (it holds Python objects other than tensors, "
                "numbers, strings and containers; fgar never unpickles code)"
            ) from None
        raise FgarError(f"{p}: not a loadable fgar checkpoint (not a torch file, or damaged)") from None
    except (RuntimeError, EOFError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise FgarError(f"{p}: not a loadable fgar checkpoint (truncated or not a torch file: {first[:120]})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise FgarError(f"{p}: not an fgar checkpoint (no '{CHECKPOINT_FORMAT}' format tag)")
    if ckpt.get("format_version") != CHECKPOINT_VERSION:
        raise FgarError(
            f"{p}: checkpoint format_version {ckpt.get('format_version')} is not supported "
            f"(this fgar reads {CHECKPOINT_VERSION}; retrain with this version)"
        )
    if kind is not None and ckpt.get("kind") != kind:
        raise FgarError(f"{p}: this is a '{ckpt.get('kind')}' checkpoint, but a '{kind}' checkpoint is needed")
    return ckpt


# --------------------------------------------------------------------------- models in checkpoints


def model_fields(model: nn.Module) -> dict[str, Any]:
    """The checkpoint fields that rebuild `model`: kind, arch, num_classes, state_dict (CPU tensors)."""
    if not isinstance(model, ActionEncoder | AlignabilityEncoder | PretrainedActionEncoder):
        raise TypeError(f"not an fgar model: {type(model).__name__}")
    fields: dict[str, Any] = {"kind": model.kind.value, "arch": model.config.model_dump(mode="json")}
    if isinstance(model, ActionEncoder):
        fields["num_classes"] = model.num_classes
    fields["state_dict"] = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    return fields


def build_model(ckpt: Mapping[str, Any], source: str = "checkpoint") -> nn.Module:
    """Rebuild f_E or f_A from checkpoint fields and load its weights (strict). `source` names the file."""
    missing = [k for k in ("kind", "arch", "state_dict") if k not in ckpt]
    if missing:
        raise FgarError(f"{source}: checkpoint lacks field(s) {', '.join(missing)}")
    kind = ckpt["kind"]
    if kind == EncoderKind.ACTION:
        num_classes = ckpt.get("num_classes")
        if not isinstance(num_classes, int):
            raise FgarError(f"{source}: action checkpoint has no num_classes")
        model: nn.Module = build_action_encoder(validate(ActionEncoderConfig, ckpt["arch"], source), num_classes)
    elif kind == EncoderKind.ALIGNABILITY:
        model = build_alignability_encoder(validate(AlignabilityEncoderConfig, ckpt["arch"], source))
    elif kind == EncoderKind.ACTION_PRETRAINED:
        model = build_pretrained_action_encoder(validate(ActionEncoderConfig, ckpt["arch"], source))
    else:
        kinds = ", ".join(f"'{k.value}'" for k in EncoderKind)
        raise FgarError(f"{source}: unknown checkpoint kind '{kind}' (expected one of {kinds})")
    try:
        result = model.load_state_dict(ckpt["state_dict"], strict=False)
    except RuntimeError as exc:  # shape mismatches; the first line of torch's message says nothing
        detail = re.sub(r"^Error\(s\) in loading state_dict for \w+:\s*", "", " ".join(str(exc).split()))
        raise FgarError(f"{source}: state_dict does not fit its architecture ({detail[:200]})") from None
    if result.missing_keys or result.unexpected_keys:
        raise FgarError(
            f"{source}: state_dict does not fit its architecture ({len(result.missing_keys)} missing, "
            f"{len(result.unexpected_keys)} unexpected keys, e.g. "
            f"'{(result.missing_keys + result.unexpected_keys)[0]}')"
        )
    return model


@dataclass
class CheckpointRecord:
    """What a checkpoint records besides the model and its training state."""

    class_names: list[str]
    recipe: Config
    config: Config  # the stage config that made it
    extra: dict[str, Any] = field(default_factory=dict)  # round, pseudo-label statistics

    def fields(self) -> dict[str, Any]:
        return {
            "class_names": list(self.class_names),
            "recipe": self.recipe.model_dump(mode="json"),
            "config": self.config.model_dump(mode="json"),
            **self.extra,
        }


# --------------------------------------------------------------------------- encoders for later stages


@dataclass
class ActionCheckpoint:
    path: str
    model: ActionEncoder
    class_names: list[str]
    recipe: ActionRecipe


@dataclass
class AlignabilityCheckpoint:
    path: str
    model: AlignabilityEncoder
    class_names: list[str]
    recipe: AlignabilityRecipe


def _check_payload(ckpt: Mapping[str, Any], path: str, recipe_type: type[Config]) -> Config:
    """Every problem of a checkpoint's payload in one line; returns its recipe, validated."""
    found: list[str] = []
    if not isinstance(ckpt.get("arch"), Mapping):
        found.append("no architecture ('arch' must be a mapping)")
    state = ckpt.get("state_dict")
    if not isinstance(state, Mapping) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        found.append("no weights ('state_dict' must map parameter names to tensors)")
    if not isinstance(ckpt.get("config"), Mapping):
        found.append("no config ('config' must be a mapping of options)")
    names = ckpt.get("class_names")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        found.append("no class names ('class_names' must be a list of names)")
    if ckpt.get("kind") == EncoderKind.ACTION and not isinstance(ckpt.get("num_classes"), int):
        found.append("no 'num_classes'")
    recipe = None
    try:
        recipe = recipe_type.model_validate(ckpt.get("recipe"))
    except ValidationError as exc:
        found += problems(exc, prefix="recipe.")
    if found:
        raise FgarError(f"{path}: not a valid {ckpt.get('kind')} checkpoint: {'; '.join(found)}")
    assert recipe is not None
    return recipe


def load_action(path: str) -> ActionCheckpoint:
    """An f_E checkpoint from fit-labeled or selftrain, checked whole, then rebuilt."""
    ckpt = load_checkpoint(path, kind=EncoderKind.ACTION)
    recipe = _check_payload(ckpt, path, ActionRecipe)
    model = build_model(ckpt, path)
    assert isinstance(model, ActionEncoder) and isinstance(recipe, ActionRecipe)
    names = list(ckpt["class_names"])
    if len(names) != model.num_classes:
        raise FgarError(f"{path}: {len(names)} class names for a classifier of {model.num_classes} classes")
    return ActionCheckpoint(path, model, names, recipe)


def load_alignability(path: str) -> AlignabilityCheckpoint:
    """An f_A checkpoint from fit-labeled or selftrain (one that knows the classes), checked whole, then rebuilt."""
    ckpt = load_checkpoint(path, kind=EncoderKind.ALIGNABILITY)
    if ckpt.get("class_names") == []:
        raise FgarError(
            f"{path}: this f_A checkpoint has no class set (a pretrain checkpoint?); "
            "pass the A.pt written by fit-labeled"
        )
    recipe = _check_payload(ckpt, path, AlignabilityRecipe)
    model = build_model(ckpt, path)
    assert isinstance(model, AlignabilityEncoder) and isinstance(recipe, AlignabilityRecipe)
    return AlignabilityCheckpoint(path, model, list(ckpt["class_names"]), recipe)


def load_alignability_weights(path: str) -> AlignabilityEncoder:
    """f_A from any alignability checkpoint (pretrain's A0.pt too), to start training from."""
    model = build_model(load_checkpoint(path, kind=EncoderKind.ALIGNABILITY), path)
    assert isinstance(model, AlignabilityEncoder)
    return model


def init_action_config(path: str) -> ActionEncoderConfig | None:
    """The architecture recorded in an fgar f_E checkpoint (E0.pt from `pretrain --encoder action`, or
    an E.pt), which f_E must be built with to start from it; None for any other weights file."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # not an fgar checkpoint: the weights loader reports what is wrong with it
        return None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        return None
    if ckpt.get("kind") not in (EncoderKind.ACTION, EncoderKind.ACTION_PRETRAINED):
        raise FgarError(f"{path}: a '{ckpt.get('kind')}' checkpoint cannot start f_E (pass E0.pt or an E.pt)")
    return validate(ActionEncoderConfig, ckpt.get("arch"), path)


@dataclass
class Encoders:
    """The f_E and (optional) f_A that a stage scores with, checked to agree on their classes."""

    action: ActionCheckpoint
    alignability: AlignabilityCheckpoint | None
    device: torch.device = torch.device("cpu")

    @property
    def class_names(self) -> list[str]:
        return self.action.class_names

    def data_paths(self, given: DataPaths) -> DataPaths:
        """The index and split given on the command line, else the ones f_E was trained on."""
        stored = self.action.recipe.data
        return DataPaths(index=given.index or stored.index, split=given.split or stored.split)

    def check_data(self, data: RunData) -> None:
        for checkpoint in (self.action, self.alignability):
            if checkpoint is not None:
                check_model_input(checkpoint.model.config, data.index.input_dim, data.paths.index, checkpoint.path)
        if self.class_names != data.class_names:
            raise FgarError(
                f"{self.action.path}: the checkpoint's {len(self.class_names)} classes differ from the "
                f"{data.num_classes} classes of {data.paths.index} with this split"
            )

    def to(self, device: torch.device) -> Encoders:
        self.device = device
        self.action.model.to(device)
        if self.alignability is not None:
            self.alignability.model.to(device)
        return self

    @property
    def paths(self) -> list[str]:
        return [c.path for c in (self.alignability, self.action) if c is not None]


def load_encoders(ckpt_e: str | None, ckpt_a: str | None, need_alignability: bool) -> Encoders:
    """Load f_E (and f_A when given), and check that they agree on the classes."""
    if not ckpt_e:
        raise FgarError("no action encoder given: pass --ckpt-e (E.pt from fit-labeled or selftrain)")
    if not ckpt_a and need_alignability:
        raise FgarError("no alignability encoder given: pass --ckpt-a (A.pt from fit-labeled or selftrain)")
    action = load_action(ckpt_e)
    alignability = load_alignability(ckpt_a) if ckpt_a else None
    if alignability is not None and alignability.class_names != action.class_names:
        raise FgarError(
            f"{ckpt_a}: its {len(alignability.class_names)} classes differ from the "
            f"{len(action.class_names)} classes of {ckpt_e}"
        )
    return Encoders(action, alignability)


def check_model_input(
    config: ActionEncoderConfig | AlignabilityEncoderConfig, input_dim: int, index_path: str | None, source: str
) -> None:
    """A checkpoint's model reads what the index holds: video, or sequences of the same step size."""
    if config.input_dim != input_dim:
        reads, holds = (f"sequences of {d} values per step" if d else "video" for d in (config.input_dim, input_dim))
        raise FgarError(f"{source}: the model reads {reads}, but {index_path} holds {holds}")
