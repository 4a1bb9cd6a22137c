"""`fgar export`: f_E as one TorchScript or ONNX file that needs neither fgar nor its config to run.

The file holds the network, its preprocessing (uint8 RGB frames -> the mean/std normalisation, and
the channel order and scaling its weights expect, as in training) and the softmax. Input: clips of
uint8 RGB frames shaped (B, T, H, W, 3), already cut to the clip settings (T frames, H = W = the crop
size); output: class probabilities (B, C).

TorchScript (the default; what C++ libtorch deployments load) also takes 0-255 floats; its class names
and clip settings ride along as extra files (`class_names.json`, `clip.json`):

    model = torch.jit.load("E.torchscript.pt", _extra_files=(files := {"class_names.json": ""}))
    probs = model(frames)

ONNX (`--format onnx`, torch's dynamo exporter, which needs the `onnx` and `onnxscript` packages:
pip install 'fgar[onnx]') takes uint8 only; the input is named `frames`, the output `probabilities`,
the batch axis is free (`batch`) and T, H, W are fixed. Class names and clip settings are JSON in the
model's metadata_props (`class_names`, `clip`):

    session = onnxruntime.InferenceSession("E.onnx")
    names = json.loads(session.get_modelmeta().custom_metadata_map["class_names"])
    probs = session.run(["probabilities"], {"frames": frames})[0]

ONNX has no adaptive average pooling, which small3d's (4, 2, 2) pool is, so the ONNX copy replaces
each such pool by the same averages written as fixed matrices for the one input size the clip
settings give (`FixedAdaptiveAvgPool3d`); every f_E architecture then exports (tests/test_export.py).
An operator the exporter cannot translate is one error line naming the architecture.

A sequence model (f_E trained on a sequence index: tcn) exports the same ways with its input
normalisation (the training split's per-channel statistics): input float32 steps (B, T, D), T the
clip's steps and D the values per step the index had, ONNX name `steps`. fgar fills gaps by linear
interpolation over time before f_E sees a clip (`sequences.fill_missing`); do the same, since a NaN
left in becomes the channel's mean.

torch 2.14 warns that TorchScript is deprecated in favour of `torch.export`, whose `.pt2` form is the
natural next format.
"""

from __future__ import annotations

import copy
import importlib.util
import io
import json
import re
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from fgar_cli.checkpoints import ActionCheckpoint, load_action
from fgar_cli.config import ExportConfig, ExportFormat
from fgar_cli.data.transforms import KINETICS_MEAN, KINETICS_STD
from fgar_cli.errors import FgarError
from fgar_cli.files import atomic_write_bytes, check_output_file
from fgar_cli.models import ActionEncoder

DEFAULT_OUT = {ExportFormat.TORCHSCRIPT: "E.torchscript.pt", ExportFormat.ONNX: "E.onnx"}
ONNX_INPUT, ONNX_SEQUENCE_INPUT, ONNX_OUTPUT = "frames", "steps", "probabilities"
ONNX_OPSET = 18  # onnxruntime >= 1.14 runs it
ONNX_PACKAGES = ("onnx", "onnxscript")  # what torch.onnx.export(dynamo=True) imports


class ExportedActionEncoder(nn.Module):
    """uint8 RGB frames (B, T, H, W, 3) -> f_E's class probabilities (B, C), as training normalised them."""

    def __init__(self, model: ActionEncoder) -> None:
        super().__init__()
        self.model = model.eval()
        self.register_buffer("mean", torch.tensor(KINETICS_MEAN).view(1, 1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(KINETICS_STD).view(1, 1, 3, 1, 1))

    def forward(self, frames: Tensor) -> Tensor:
        clips = frames.permute(0, 1, 4, 2, 3).float() / 255.0  # (B, T, 3, H, W)
        return self.model((clips - self.mean) / self.std).softmax(-1)


class ExportedSequenceEncoder(nn.Module):
    """float32 steps (B, T, D) -> f_E's class probabilities (B, C); the model normalises them itself."""

    def __init__(self, model: ActionEncoder) -> None:
        super().__init__()
        self.model = model.eval()

    def forward(self, steps: Tensor) -> Tensor:
        return self.model(steps.float()).softmax(-1)


Exported = ExportedActionEncoder | ExportedSequenceEncoder


def export(cfg: ExportConfig) -> dict[str, Any]:
    if cfg.format == ExportFormat.ONNX:
        missing_onnx_packages()  # before the checkpoint is read: the fix is an install
    out = check_output_file(cfg.out or DEFAULT_OUT[cfg.format])
    action = load_action(cfg.ckpt_e)
    clip = action.recipe.clip
    input_dim = action.model.config.input_dim
    wrapper = (ExportedSequenceEncoder if input_dim else ExportedActionEncoder)(action.model).eval()
    if cfg.format == ExportFormat.ONNX:
        data = onnx_bytes(wrapper, action)
    else:
        data = torchscript_bytes(wrapper, action)
    atomic_write_bytes(out, data)
    summary: dict[str, Any] = {cfg.format.value: str(out), "classes": len(action.class_names)}
    if input_dim:
        return summary | {"steps": clip.num_frames, "values_per_step": input_dim}
    return summary | {"frames": clip.num_frames, "size": clip.size}


def _clip_json(action: ActionCheckpoint) -> str:
    clip = action.recipe.clip
    if input_dim := action.model.config.input_dim:
        return json.dumps({"num_frames": clip.num_frames, "input_dim": input_dim, "input": "float32 steps (B, T, D)"})
    return json.dumps({"num_frames": clip.num_frames, "size": clip.size, "input": "uint8 RGB (B, T, H, W, 3)"})


def _example(action: ActionCheckpoint, batch: int) -> Tensor:
    clip = action.recipe.clip
    if input_dim := action.model.config.input_dim:
        return torch.randn(batch, clip.num_frames, input_dim)
    return torch.randint(0, 256, (batch, clip.num_frames, clip.size, clip.size, 3), dtype=torch.uint8)


def torchscript_bytes(wrapper: Exported, action: ActionCheckpoint) -> bytes:
    with torch.no_grad():
        traced = torch.jit.trace(wrapper, _example(action, 1), check_trace=False)
    extra = {"class_names.json": json.dumps(action.class_names), "clip.json": _clip_json(action)}
    buffer = io.BytesIO()
    torch.jit.save(traced, buffer, _extra_files=extra)
    return buffer.getvalue()


# --------------------------------------------------------------------------- ONNX


def missing_onnx_packages() -> None:
    """One FgarError line when the packages torch's ONNX exporter imports are not installed."""
    missing = [name for name in ONNX_PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        raise FgarError(
            f"--format onnx needs the Python package(s) {', '.join(missing)}: pip install 'fgar[onnx]' "
            "(or export with --format torchscript)"
        )


def _bin_matrix(size_in: int, size_out: int) -> Tensor:
    """(size_out, size_in): row i averages the inputs of adaptive pooling's bin i, as torch bins them
    (from floor(i * in / out) to ceil((i + 1) * in / out))."""
    matrix = torch.zeros(size_out, size_in)
    for i in range(size_out):
        start, end = (i * size_in) // size_out, -(-((i + 1) * size_in) // size_out)
        matrix[i, start:end] = 1.0 / (end - start)
    return matrix


class FixedAdaptiveAvgPool3d(nn.Module):
    """nn.AdaptiveAvgPool3d for one input size (T, H, W), as an average over each axis in turn: a
    matrix product ONNX has (Einsum), where adaptive pooling to more than one place it has not."""

    def __init__(self, size_in: tuple[int, ...], size_out: tuple[int, ...]) -> None:
        super().__init__()
        self.size_in = size_in
        for axis, (n, m) in enumerate(zip(size_in, size_out, strict=True)):
            self.register_buffer(f"bins{axis}", _bin_matrix(n, m))

    def forward(self, x: Tensor) -> Tensor:  # (B, C, T, H, W) -> (B, C, T', H', W')
        if tuple(x.shape[2:]) != self.size_in:
            raise ValueError(f"FixedAdaptiveAvgPool3d: built for {self.size_in}, got {tuple(x.shape[2:])}")
        return torch.einsum("bcthw,it,jh,kw->bcijk", x, self.bins0, self.bins1, self.bins2)


def onnx_ready(wrapper: Exported, example: Tensor) -> Exported:
    """A copy of `wrapper` whose adaptive pools to more than one place are FixedAdaptiveAvgPool3d,
    each for the input size `example` gives it (global pools export as they are)."""
    ready = copy.deepcopy(wrapper).eval()
    sizes: dict[str, tuple[int, ...]] = {}
    hooks: list[torch.utils.hooks.RemovableHandle] = []
    for name, module in ready.named_modules():
        if isinstance(module, nn.AdaptiveAvgPool3d):

            def record(module: nn.Module, inputs: tuple[Tensor, ...], name: str = name) -> None:
                sizes[name] = tuple(inputs[0].shape[2:])

            hooks.append(module.register_forward_pre_hook(record))
    with torch.no_grad():
        ready(example)
    for hook in hooks:
        hook.remove()
    for name, size_in in sizes.items():
        pool = ready.get_submodule(name)
        wanted = pool.output_size if isinstance(pool.output_size, tuple) else (pool.output_size,) * 3
        size_out = tuple(n if m is None else m for n, m in zip(size_in, wanted, strict=True))
        if size_out == (1, 1, 1):
            continue
        parent, _, child = name.rpartition(".")
        setattr(ready.get_submodule(parent), child, FixedAdaptiveAvgPool3d(size_in, size_out))
    return ready


def _export_failure(exc: BaseException) -> str:
    """What stopped the ONNX exporter, in a few words: the untranslatable operator when it names one."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and all(current is not seen for seen in chain):
        chain.append(current)
        current = current.__cause__ or current.__context__
    op = re.search(r"op='([^']+)'", " ".join(str(e) for e in chain))  # a DispatchError's OpOverload
    if op:
        return f"no ONNX operator for {op.group(1)}"
    first = re.sub(r"\x1b\[[0-9;]*m", "", str(chain[-1])).strip().splitlines()
    return f"{type(chain[-1]).__name__}: {first[0][:160] if first else ''}".rstrip(": ")


def onnx_bytes(wrapper: Exported, action: ActionCheckpoint) -> bytes:
    """The ONNX model of `wrapper`, class names and clip settings in its metadata_props."""
    example = _example(action, 2)  # 2, not 1: torch.export fixes an axis seen at size 1
    ready = onnx_ready(wrapper, example)
    arch = action.model.config.arch.value
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's deprecation and tracing notes are not the user's
            program = torch.onnx.export(
                ready,
                (example,),
                input_names=[ONNX_SEQUENCE_INPUT if action.model.config.input_dim else ONNX_INPUT],
                output_names=[ONNX_OUTPUT],
                opset_version=ONNX_OPSET,
                dynamo=True,
                dynamic_shapes=({0: torch.export.Dim("batch")},),  # the input's first axis
                verbose=False,
            )
    except Exception as exc:  # the exporter's errors are many types, from torch.export, dispatch and onnxscript
        raise FgarError(
            f"{action.path}: f_E's architecture {arch} does not export to ONNX ({_export_failure(exc)}); "
            "use --format torchscript"
        ) from None
    assert program is not None
    proto = program.model_proto
    for key, value in (("class_names", json.dumps(action.class_names)), ("clip", _clip_json(action))):
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    return proto.SerializeToString()


def load_exported(path: str | Path) -> tuple[torch.jit.ScriptModule, list[str]]:
    """An exported f_E and its class names."""
    files = {"class_names.json": ""}
    model = torch.jit.load(str(path), map_location="cpu", _extra_files=files)
    return model, json.loads(files["class_names.json"])
