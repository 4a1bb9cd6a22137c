"""`fgar export`: f_E as one TorchScript file that needs neither fgar nor its config to run.

The file holds the network, its preprocessing (uint8 RGB frames -> the mean/std normalisation, and
the channel order and scaling its weights expect, as in training) and the softmax; its class names
and clip settings ride along as extra files (`class_names.json`, `clip.json`). Input: clips of
uint8 (or 0-255 float) RGB frames shaped (B, T, H, W, 3), already cut to the clip settings (T frames,
H = W = the crop size); output: class probabilities (B, C).

    model = torch.jit.load("E.torchscript.pt", _extra_files=(files := {"class_names.json": ""}))
    probs = model(frames)

TorchScript is what the issue asked for and what C++ (libtorch) deployments load; torch 2.14 warns that
it is deprecated in favour of `torch.export`, whose `.pt2` form is the natural next format. ONNX is not
written: torch's exporter needs the `onnx` and `onnxscript` packages, which fgar does not depend on.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from fgar_cli.checkpoints import load_action
from fgar_cli.config import ExportConfig
from fgar_cli.data.transforms import KINETICS_MEAN, KINETICS_STD
from fgar_cli.files import atomic_write_bytes, check_output_file
from fgar_cli.models import ActionEncoder


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


def export(cfg: ExportConfig) -> dict[str, Any]:
    out = check_output_file(cfg.out)
    action = load_action(cfg.ckpt_e)
    clip = action.recipe.clip
    wrapper = ExportedActionEncoder(action.model).eval()
    example = torch.randint(0, 256, (1, clip.num_frames, clip.size, clip.size, 3), dtype=torch.uint8)
    with torch.no_grad():
        traced = torch.jit.trace(wrapper, example, check_trace=False)
    extra = {
        "class_names.json": json.dumps(action.class_names),
        "clip.json": json.dumps(
            {"num_frames": clip.num_frames, "size": clip.size, "input": "uint8 RGB (B, T, H, W, 3)"}
        ),
    }
    buffer = io.BytesIO()
    torch.jit.save(traced, buffer, _extra_files=extra)
    atomic_write_bytes(out, buffer.getvalue())
    return {"torchscript": str(out), "classes": len(action.class_names), "frames": clip.num_frames, "size": clip.size}


def load_exported(path: str | Path) -> tuple[torch.jit.ScriptModule, list[str]]:
    """An exported f_E and its class names."""
    files = {"class_names.json": ""}
    model = torch.jit.load(str(path), map_location="cpu", _extra_files=files)
    return model, json.loads(files["class_names.json"])
