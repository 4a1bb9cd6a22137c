"""Mixed precision: which number format a forward pass runs in, in training and in inference."""

from __future__ import annotations

import pytest
import torch

from fgar_cli import runtime
from fgar_cli.config import ActionTraining, Precision
from fgar_cli.runtime import autocast, training_precision

CPU = torch.device("cpu")


def forward_dtype() -> torch.dtype:
    """The dtype a linear layer's output has under `autocast(cpu)` where this is called."""
    layer = torch.nn.Linear(4, 3)
    with autocast(CPU):
        return layer(torch.randn(2, 4)).dtype


@pytest.mark.parametrize("native", [True, False])
def test_training_precision_decides_the_cpu_forward(monkeypatch: pytest.MonkeyPatch, native: bool) -> None:
    monkeypatch.setattr(runtime, "cpu_computes_bf16", lambda: native)
    with training_precision(Precision.FP32):
        assert forward_dtype() == torch.float32
    with training_precision(Precision.BF16):
        assert forward_dtype() == torch.bfloat16  # asked for: bf16 even where it is emulated
    with training_precision(Precision.AUTO):
        assert forward_dtype() == (torch.bfloat16 if native else torch.float32)
    assert forward_dtype() == torch.float32  # outside training (inference) the CPU stays in fp32


def test_precision_is_a_training_key_with_auto_by_default() -> None:
    assert ActionTraining().precision == Precision.AUTO
    assert ActionTraining(precision="fp32").precision == Precision.FP32


def test_training_precision_is_restored_after_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime, "cpu_computes_bf16", lambda: True)
    with pytest.raises(RuntimeError), training_precision(Precision.BF16):
        raise RuntimeError("a failed epoch")
    assert forward_dtype() == torch.float32


def test_a_bf16_training_step_keeps_the_loss_and_weights_in_fp32(monkeypatch: pytest.MonkeyPatch) -> None:
    from fgar_cli.config import ActionArch, ActionEncoderConfig
    from fgar_cli.models import build_action_encoder
    from fgar_cli.objectives import cross_entropy_step

    torch.manual_seed(0)
    model = build_action_encoder(ActionEncoderConfig(arch=ActionArch.SMALL3D), 3)
    batch = {"video": torch.rand(2, 8, 3, 32, 32), "label": torch.tensor([0, 2])}
    with training_precision(Precision.BF16):
        terms = cross_entropy_step(model, batch)
    terms["loss"].backward()
    assert terms["loss"].dtype == torch.float32
    assert all(p.dtype == torch.float32 and p.grad is not None for p in model.parameters() if p.requires_grad)
    with training_precision(Precision.FP32):
        exact = cross_entropy_step(model, batch)["loss"]
    # the same step in bf16 is close to fp32's, not equal to it (bf16 keeps about 3 significant digits)
    assert terms["loss"].item() == pytest.approx(exact.item(), rel=0.05)
    assert terms["loss"].item() != exact.item()
