"""The sequence models (f_E's tcn, f_A's mlp), their input normalisation, and sequence augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fgar_cli.checkpoints import build_model, model_fields
from fgar_cli.config import ActionEncoderConfig, AlignabilityEncoderConfig, SequenceAugmentation
from fgar_cli.data.transforms import SequenceTransform, augment_sequence
from fgar_cli.errors import FgarError
from fgar_cli.models import (
    action_config_for,
    alignability_config_for,
    build_action_encoder,
    build_alignability_encoder,
    build_pretrained_action_encoder,
    needs_input_stats,
    set_input_stats,
)

D = 5


def tcn(num_classes: int = 3) -> torch.nn.Module:
    return build_action_encoder(action_config_for(ActionEncoderConfig(arch="tcn"), D, "idx.json"), num_classes)


def mlp_encoder() -> torch.nn.Module:
    return build_alignability_encoder(
        alignability_config_for(AlignabilityEncoderConfig(backbone="mlp", hidden_dim=32, heads=4), 12, D, "idx.json")
    )


def test_tcn_classifies_sequences_and_keeps_the_order_of_phases() -> None:
    torch.manual_seed(0)
    model = tcn().eval()
    x = torch.randn(2, 16, D)
    assert model(x).shape == (2, 3)
    assert model.config.width == 64 and model.config.input_dim == D  # recorded, so a checkpoint rebuilds it
    # the pool keeps 4 time steps: the same steps in reverse order give other features
    assert not torch.allclose(model.features(x), model.features(x.flip(1)), atol=1e-4)
    with pytest.raises(ValueError, match=r"\(B, T, 5\)"):
        model(torch.randn(2, 16, D + 1))


def test_pretrained_tcn_gives_a_clip_and_per_step_vectors() -> None:
    model = build_pretrained_action_encoder(action_config_for(ActionEncoderConfig(arch="tcn"), D, "i"))
    clip, steps = model.eval()(torch.randn(3, 16, D), 4)
    assert clip.shape == (3, 128) and steps.shape == (3, 4, 128)
    assert torch.allclose(clip.norm(dim=1), torch.ones(3), atol=1e-5)


def test_missing_values_count_as_the_channel_mean() -> None:
    """A NaN is normalised to 0, the same as a value equal to the training mean: nothing else changes."""
    model = mlp_encoder().eval()
    mean, std = torch.arange(D, dtype=torch.float32), torch.full((D,), 2.0)
    set_input_stats(model, mean, std)
    x = torch.randn(1, 12, D) * 2 + mean
    gap, at_mean = x.clone(), x.clone()
    gap[0, 3, 1] = float("nan")
    at_mean[0, 3, 1] = mean[1]
    out = model(gap)
    assert torch.isfinite(out).all()
    assert torch.allclose(out, model(at_mean), atol=1e-6)
    assert not torch.allclose(out, model(x), atol=1e-4)


def test_input_statistics_travel_in_the_checkpoint() -> None:
    model = tcn()
    assert needs_input_stats(model)
    set_input_stats(model, torch.full((D,), 3.0), torch.full((D,), 0.5))
    assert not needs_input_stats(model)
    rebuilt = build_model(model_fields(model))
    assert not needs_input_stats(rebuilt)
    assert torch.equal(rebuilt.backbone.norm.mean, torch.full((D,), 3.0))
    x = torch.randn(2, 16, D)
    assert torch.allclose(model.eval()(x), rebuilt.eval()(x))


def test_video_and_sequence_models_refuse_the_other_kind_of_index() -> None:
    with pytest.raises(FgarError, match=r"idx.json: a sequence index \(5 values per step\) needs f_E's tcn"):
        action_config_for(ActionEncoderConfig(), D, "idx.json")
    with pytest.raises(FgarError, match="--backbone-a mlp"):
        alignability_config_for(AlignabilityEncoderConfig(), 16, D, "idx.json")
    with pytest.raises(FgarError, match="a video index"):
        action_config_for(ActionEncoderConfig(arch="tcn"), 0, "idx.json")
    built_for_5 = action_config_for(ActionEncoderConfig(arch="tcn"), D, "a.json")
    with pytest.raises(FgarError, match="steps of 7 values, but f_E was built for 5"):
        action_config_for(built_for_5, 7, "b.json")
    with pytest.raises(FgarError, match="bgr and raw_input"):
        build_action_encoder(ActionEncoderConfig(arch="tcn", input_dim=D, bgr=True), 3)


def test_sequence_augmentation_defaults_change_nothing() -> None:
    clip = np.random.default_rng(0).normal(size=(20, D)).astype(np.float32)
    out = SequenceTransform(train=True, augment=SequenceAugmentation())(clip, np.random.default_rng(1))
    assert np.array_equal(out.numpy(), clip)


def test_time_warp_keeps_the_ends_and_the_order() -> None:
    ramp = np.tile(np.arange(30, dtype=np.float32)[:, None], (1, 2))
    warped = augment_sequence(ramp, SequenceAugmentation(time_warp=0.5), np.random.default_rng(3))
    assert warped[0, 0] == 0 and warped[-1, 0] == pytest.approx(29)
    assert np.all(np.diff(warped[:, 0]) > 0)  # monotone: phases keep their order
    speeds = np.diff(warped[:, 0])
    assert speeds.min() >= 0.5 / 1.5 - 1e-5 and speeds.max() <= 1.5 / 0.5 + 1e-5
    assert not np.allclose(warped, ramp)


def test_scale_and_jitter_stay_in_their_ranges() -> None:
    rng = np.random.default_rng(0)
    clip = rng.normal(size=(200, D)).astype(np.float32) * np.arange(1, D + 1, dtype=np.float32)
    scaled = augment_sequence(clip, SequenceAugmentation(scale=0.2), np.random.default_rng(1))
    gains = scaled[0] / clip[0]
    assert np.allclose(scaled, clip * gains, rtol=1e-5) and np.all((gains >= 0.8) & (gains <= 1.2))
    jittered = augment_sequence(clip, SequenceAugmentation(jitter=0.1), np.random.default_rng(1))
    noise_std = (jittered - clip).std(0) / clip.std(0)
    assert np.allclose(noise_std, 0.1, atol=0.02)  # relative to each channel's own spread
    missing = clip.copy()
    missing[:, 2] = np.nan  # a channel never observed stays missing, and adds no NaN elsewhere
    out = augment_sequence(missing, SequenceAugmentation(time_warp=0.2, scale=0.1, jitter=0.1), rng)
    assert np.isnan(out[:, 2]).all() and np.isfinite(np.delete(out, 2, axis=1)).all()
