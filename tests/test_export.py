"""`fgar export`: the TorchScript file gives f_E's outputs, with its preprocessing and class names."""

from __future__ import annotations

import numpy as np
import torch

from fgar_cli.checkpoints import load_action
from fgar_cli.data.transforms import ClipTransform
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
