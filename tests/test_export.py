"""`fgar export`: the TorchScript and ONNX files give f_E's outputs, with its preprocessing and class names."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from fgar_cli.checkpoints import load_action, model_fields, save_checkpoint
from fgar_cli.config import ActionEncoderConfig
from fgar_cli.data.transforms import ClipTransform
from fgar_cli.models import build_action_encoder
from fgar_cli.stages import export as export_stage
from fgar_cli.stages.export import load_exported

from helpers import one_error_line


def test_the_exported_model_gives_the_checkpoints_outputs(tiny_run, tmp_path, cli):
    out = tmp_path / "E.torchscript.pt"
    result = cli(["export", "--ckpt-e", tiny_run / "fit" / "E.pt", "--out", out])
    assert result.code == 0, result.out + result.err
    exported, class_names = load_exported(out)
    action = load_action(str(tiny_run / "fit" / "E.pt"))
    assert class_names == action.class_names
    clip = action.recipe.clip
    frames = np.random.default_rng(0).integers(0, 256, (2, clip.num_frames, clip.size, clip.size, 3), dtype=np.uint8)
    # what evaluation feeds f_E: the test transform of the same frames (no resize: they are at crop size)
    transform = ClipTransform(clip.size, train=False, resize=clip.size)
    reference = torch.stack([transform(f) for f in frames])
    with torch.no_grad():
        expected = action.model.eval()(reference).softmax(-1)
        got = exported(torch.from_numpy(frames))
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    assert got.shape == (2, len(class_names))


def test_export_of_a_missing_checkpoint_is_one_line(tmp_path, cli):
    result = cli(["export", "--ckpt-e", tmp_path / "none.pt", "--out", tmp_path / "x.pt"])
    one_error_line(result.out + result.err, "none.pt", "not found")


# --------------------------------------------------------------------------- ONNX

# (arch config, or None for the tiny run's own small3d f_E). These are every f_E trunk and every
# option that changes its graph; r3d_18 and r2plus1d_18 take about 4 s each to export.
ONNX_ARCHS = {
    "small3d": None,
    "small3d-temporal-stem-raw-bgr": {"arch": "small3d", "temporal_stem": True, "raw_input": True, "bgr": True},
    "r3d_18": {"arch": "r3d_18"},
    "r2plus1d_18-dilated": {"arch": "r2plus1d_18", "dilated_layer4": True},
}


def _checkpoint_with_arch(tiny_run: Path, arch: dict[str, object], out: Path) -> Path:
    """The tiny run's E.pt with its network replaced by a random `arch` (batch-norm statistics too,
    so that the exported normalisation is checked)."""
    ckpt = torch.load(tiny_run / "fit" / "E.pt", map_location="cpu", weights_only=True)
    torch.manual_seed(0)
    model = build_action_encoder(ActionEncoderConfig.model_validate(arch), ckpt["num_classes"])
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
    save_checkpoint(out, {**ckpt, **model_fields(model)})
    return out


@pytest.mark.parametrize("name", list(ONNX_ARCHS))
def test_the_onnx_model_gives_the_checkpoints_outputs(name, tiny_run, tmp_path, cli):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    arch = ONNX_ARCHS[name]
    ckpt = tiny_run / "fit" / "E.pt" if arch is None else _checkpoint_with_arch(tiny_run, arch, tmp_path / "E.pt")
    out = tmp_path / "E.onnx"
    result = cli(["export", "--ckpt-e", ckpt, "--format", "onnx", "--out", out])
    assert result.code == 0, result.out + result.err
    action = load_action(str(ckpt))
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert json.loads(session.get_modelmeta().custom_metadata_map["class_names"]) == action.class_names
    clip = action.recipe.clip
    (frames_in,) = session.get_inputs()
    assert (frames_in.name, frames_in.type) == ("frames", "tensor(uint8)")
    assert frames_in.shape == ["batch", clip.num_frames, clip.size, clip.size, 3]
    transform = ClipTransform(clip.size, train=False, resize=clip.size)
    for batch in (1, 3):  # neither is the batch size it was exported with
        frames = np.random.default_rng(batch).integers(
            0, 256, (batch, clip.num_frames, clip.size, clip.size, 3), dtype=np.uint8
        )
        (got,) = session.run(["probabilities"], {"frames": frames})
        with torch.no_grad():
            expected = action.model.eval()(torch.stack([transform(f) for f in frames])).softmax(-1)
        # float32 through two runtimes: within 1e-5 absolute, 1e-4 relative of the checkpoint's probabilities
        torch.testing.assert_close(torch.from_numpy(got), expected, rtol=1e-4, atol=1e-5)


def test_an_architecture_onnx_cannot_express_is_one_line(tiny_run, tmp_path, cli, monkeypatch):
    pytest.importorskip("onnxscript")
    # without the fixed-size pools, small3d's (4, 2, 2) adaptive pool has no ONNX operator
    monkeypatch.setattr(export_stage, "onnx_ready", lambda wrapper, example: wrapper)
    result = cli(["export", "--ckpt-e", tiny_run / "fit" / "E.pt", "--format", "onnx", "--out", tmp_path / "E.onnx"])
    assert result.code == 1
    one_error_line(result.out + result.err, "small3d", "adaptive_avg_pool3d", "--format torchscript")
    assert not (tmp_path / "E.onnx").exists()


def test_onnx_without_its_packages_is_one_line(tmp_path, cli, monkeypatch):
    monkeypatch.setattr(export_stage, "ONNX_PACKAGES", ("onnx", "fgar_no_such_package"))
    result = cli(["export", "--ckpt-e", tmp_path / "E.pt", "--format", "onnx", "--out", tmp_path / "E.onnx"])
    one_error_line(result.out + result.err, "fgar_no_such_package", "pip install 'fgar[onnx]'")


def test_export_help_lists_the_formats(cli):
    text = cli(["export", "--help"]).out
    assert "torchscript" in text and "onnx" in text and "E.onnx" in text


@pytest.mark.parametrize("size_in", [(2, 2, 2), (4, 3, 3), (1, 7, 5), (6, 1, 4)])  # divisible, not, and upsampled
def test_the_fixed_pool_is_torchs_adaptive_pool(size_in):
    x = torch.randn(2, 5, *size_in)
    fixed = export_stage.FixedAdaptiveAvgPool3d(size_in, (4, 2, 2))
    torch.testing.assert_close(fixed(x), torch.nn.AdaptiveAvgPool3d((4, 2, 2))(x), rtol=1e-6, atol=1e-6)
