"""f_E, f_A, f_S: shapes, weight loading, checkpoint round trips (tiny CPU inputs)."""

from __future__ import annotations

import math

import pytest
import torch
import torchvision

from fgar_cli.checkpoints import build_model, model_fields
from fgar_cli.config import ActionEncoderConfig, AlignabilityEncoderConfig, validate
from fgar_cli.errors import FgarError
from fgar_cli.models import ScoreHead, build_action_encoder, build_alignability_encoder


@pytest.fixture(autouse=True)
def no_downloads(monkeypatch):
    """Any attempt to fetch weights fails the test: builders must use weights=None."""

    def refuse(*args, **kwargs):
        raise AssertionError("a model builder tried to download weights")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)


def tiny_alignability(**kwargs):
    args = {"feature_dim": 16, "hidden_dim": 32, "depth": 1, "heads": 2, "max_frames": 8} | kwargs
    return build_alignability_encoder(validate(AlignabilityEncoderConfig, args, "test"))


def action(arch="small3d", num_classes=5, init=None, **arch_args):
    """f_E as a user's options build it: the config validated first, so a bad value is an FgarError."""
    config = validate(ActionEncoderConfig, {"arch": arch, **arch_args}, "test")
    return build_action_encoder(config, num_classes, init=init)


def clips(b=2, t=8, size=32, seed=0):
    return torch.randn(b, t, 3, size, size, generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------- f_E


def test_small3d_gives_logits_and_features():
    model = action("small3d", 5, width=8).eval()
    x = clips()
    assert model(x).shape == (2, 5)
    assert model.features(x).shape == (2, 512)  # 4 * width channels x 4 time steps x 2 x 2 places


def test_small3d_features_keep_the_order_of_phases():
    # Two phases X then Y, and Y then X: the same frames in another order. A global pool over time
    # would nearly equate them; small3d's 4 time steps must not.
    torch.manual_seed(0)
    model = action("small3d", 5, width=8).eval()
    x, y = torch.randn(1, 1, 3, 32, 32).expand(1, 8, 3, 32, 32), torch.randn(1, 1, 3, 32, 32).expand(1, 8, 3, 32, 32)
    with torch.no_grad():
        xy = model.features(torch.cat([x, y], 1)).reshape(32, 4, 2, 2)
        yx = model.features(torch.cat([y, x], 1)).reshape(32, 4, 2, 2)
    order_blind = (xy.mean(1) - yx.mean(1)).norm() / xy.mean(1).norm()
    order_kept = (xy - yx).norm() / xy.norm()
    assert order_kept > 0.5 and order_kept > 2 * order_blind  # a global pool gives order_kept == order_blind


@pytest.mark.parametrize("arch", ["r2plus1d_18", "r3d_18"])
def test_torchvision_video_resnets_accept_btchw_clips(arch):
    model = action(arch, 7).eval()
    with torch.no_grad():
        assert model(clips(b=1, t=4)).shape == (1, 7)
        assert model.features(clips(b=1, t=4)).shape == (1, 512)


def test_unknown_arch_or_argument_is_a_one_line_error():
    with pytest.raises(FgarError, match="arch: Input should be 'r2plus1d_18', 'r3d_18', 'small3d' or 'tcn'"):
        action("resnet50", 5)
    with pytest.raises(FgarError, match="depth: Extra inputs are not permitted"):
        action("small3d", 5, depth=3)
    with pytest.raises(FgarError, match="bgr"):
        action("small3d", 5, bgr="grb")
    with pytest.raises(FgarError, match="width shapes small3d and tcn only"):
        action("r3d_18", 5, width=16)
    with pytest.raises(FgarError, match="dropout"):
        action("small3d", 5, dropout=1.5)


def test_bgr_model_sees_channels_reversed():
    rgb = action("small3d", 4, width=8).eval()
    bgr = action("small3d", 4, width=8, bgr=True).eval()
    bgr.load_state_dict(rgb.state_dict())
    x = clips()
    with torch.no_grad():
        torch.testing.assert_close(bgr(x), rgb(x.flip(2)))
        assert not torch.allclose(bgr(x), rgb(x), atol=1e-4)


def test_init_from_wrapped_state_dict_reproduces_outputs(tmp_path):
    source = action("small3d", 5, width=8).eval()
    path = tmp_path / "weights.pth"
    # the shape SSL / DataParallel codebases save: {'state_dict': {'module.backbone.xxx': ...}}
    torch.save({"state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}}, path)
    loaded = action("small3d", 5, init=path, width=8).eval()
    x = clips()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), source(x))
    report = loaded.init_report
    assert report.loaded == len(source.state_dict()) and not report.missing and not report.unexpected


def test_init_skips_a_head_of_another_size(tmp_path):
    source = action("small3d", 5, width=8).eval()
    path = tmp_path / "weights.pt"
    torch.save({"model": source.state_dict(), "epoch": 3}, path)
    loaded = action("small3d", 9, init=str(path), width=8).eval()
    x = clips()
    with torch.no_grad():
        torch.testing.assert_close(loaded.features(x), source.features(x))
    assert loaded.init_report.head_skipped
    assert sorted(loaded.init_report.missing) == ["fc.bias", "fc.weight"]


def test_init_loads_raw_torchvision_weights_and_counts_extra_keys(tmp_path):
    reference = torchvision.models.video.r3d_18(weights=None, num_classes=400).eval()
    state = reference.state_dict() | {"projection.weight": torch.zeros(3)}  # e.g. an SSL projection head
    path = tmp_path / "r3d18.pth"
    torch.save(state, path)
    model = action("r3d_18", 6, init=path).eval()
    x = clips(b=1, t=4)
    reference.fc = torch.nn.Identity()
    with torch.no_grad():
        torch.testing.assert_close(model.features(x), reference(x.permute(0, 2, 1, 3, 4)))
    assert model.init_report.unexpected == ["projection.weight"]
    assert model.init_report.head_skipped


def test_init_from_a_file_that_does_not_fit_is_a_one_line_error(tmp_path):
    small = tmp_path / "small.pt"
    torch.save(action("small3d", 5, width=8).state_dict(), small)
    with pytest.raises(FgarError, match="no parameter name matches arch 'r3d_18'") as err:
        action("r3d_18", 5, init=small)
    assert str(small) in str(err.value) and "\n" not in str(err.value)

    wider = tmp_path / "wider.pt"
    torch.save(action("small3d", 5, width=16).state_dict(), wider)
    with pytest.raises(FgarError, match="has shape") as err:
        action("small3d", 5, init=wider, width=8)
    assert "\n" not in str(err.value)

    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a torch file at all")
    with pytest.raises(FgarError, match="cannot load weights"):
        action("small3d", 5, init=junk)

    not_a_state_dict = tmp_path / "list.pt"
    torch.save([1, 2, 3], not_a_state_dict)
    with pytest.raises(FgarError, match="not a state_dict"):
        action("small3d", 5, init=not_a_state_dict)

    with pytest.raises(FgarError, match="not found"):
        action("small3d", 5, init=tmp_path / "missing.pt")


# --------------------------------------------------------------------------- f_A


def test_alignability_encoder_gives_unit_frame_embeddings():
    model = tiny_alignability().eval()
    u = model(clips(t=6))
    assert u.shape == (2, 6, 16)
    torch.testing.assert_close(u.norm(dim=-1), torch.ones(2, 6))


def test_alignability_encoder_mixes_information_across_time():
    model = tiny_alignability().eval()
    x = clips(b=1, t=6)
    changed = x.clone()
    changed[:, 0] = torch.randn_like(changed[:, 0])
    with torch.no_grad():
        before, after = model(x), model(changed)
    # only frame 0 changed, yet the temporal transformer must change the embedding of frame 5
    assert (before[0, 5] - after[0, 5]).abs().max() > 1e-4


def test_alignability_encoder_knows_frame_positions():
    model = tiny_alignability().eval()
    still = clips(b=1, t=1).repeat(1, 6, 1, 1, 1)  # the same image 6 times
    with torch.no_grad():
        u = model(still)
    # a transformer without time embeddings would give 6 identical vectors here
    assert (u[0, 0] - u[0, 5]).abs().max() > 1e-4


def test_alignability_encoder_rejects_more_frames_than_max_frames():
    model = tiny_alignability(max_frames=4)
    with pytest.raises(FgarError, match="6 frames .* at most 4"):
        model(clips(t=6))


def test_alignability_encoder_with_resnet18_backbone():
    model = tiny_alignability(backbone="resnet18").eval()
    with torch.no_grad():
        u = model(clips(b=1, t=2))
    assert u.shape == (1, 2, 16)
    torch.testing.assert_close(u.norm(dim=-1), torch.ones(1, 2))


def test_alignability_builder_checks_its_arguments():
    with pytest.raises(FgarError, match="backbone: Input should be 'small2d', 'resnet18' or 'mlp'"):
        tiny_alignability(backbone="vit")
    with pytest.raises(FgarError, match="not divisible by heads"):
        tiny_alignability(hidden_dim=30, heads=4)


# --------------------------------------------------------------------------- f_S


def test_score_head_is_monotone_decreasing_for_any_parameters():
    torch.manual_seed(0)
    d = torch.linspace(-5, 50, 200, dtype=torch.float64)
    head = ScoreHead().double()  # float64 so the tiniest slope still separates neighbouring logits
    for a_raw, b in [(-200.0, 0.0), (-5.0, 3.0), (0.0, -2.0), (4.0, 10.0), (30.0, 0.0)] + [
        (float(x), float(y)) for x, y in torch.randn(20, 2) * 10
    ]:
        with torch.no_grad():
            head.a_raw.fill_(a_raw)
            head.b.fill_(b)
        assert head.slope.item() < 0
        logits = head.logit(d)
        assert (logits[1:] < logits[:-1]).all()
        scores = head(d)
        assert (scores[1:] <= scores[:-1]).all() and ((scores >= 0) & (scores <= 1)).all()


def test_score_head_starts_at_one_half_at_the_initial_distance():
    head = ScoreHead(init_distance=12.0, init_slope=0.5)
    assert head(torch.tensor(12.0)).item() == pytest.approx(0.5, abs=1e-6)
    assert head.slope.item() == pytest.approx(-0.5, rel=1e-5)


def test_score_head_calibration_separates_class_means():
    labels = torch.tensor([0, 0, 1, 1])
    D = torch.tensor([[0.0, 2.0, 6.0, 6.0], [2.0, 0.0, 6.0, 6.0], [6.0, 6.0, 0.0, 2.0], [6.0, 6.0, 2.0, 0.0]])
    head = ScoreHead(init_distance=100.0)
    head.calibrate_(D, labels, logit_range=4.0)
    assert bool(head.calibrated)
    assert head.logit(torch.tensor(4.0)).item() == pytest.approx(0.0, abs=1e-5)  # midway between 2 and 6
    # The slope maps the standard deviation of the off-diagonal distances to 4 logits (not the gap
    # between class means, which is tiny for untrained features and would give extreme logits).
    spread = D[~torch.eye(4, dtype=torch.bool)].std().item()
    assert head.slope.item() == pytest.approx(-4.0 / spread, rel=1e-4)
    assert head.logit(torch.tensor(2.0)).item() == pytest.approx(2.0 * 4.0 / spread, rel=1e-4)


def test_score_head_calibration_keeps_logits_moderate_when_classes_do_not_separate_yet():
    labels = torch.tensor([0, 0, 1, 1])
    rng = torch.Generator().manual_seed(0)
    D = 5.0 + torch.rand(4, 4, generator=rng)
    D = (D + D.T) / 2
    head = ScoreHead()
    head.calibrate_(D, labels, logit_range=4.0)
    off = ~torch.eye(4, dtype=torch.bool)
    assert head.logit(D[off]).abs().max().item() < 8.0


# --------------------------------------------------------------------------- checkpoints


def _round_trip(model, tmp_path):
    path = tmp_path / "model.pt"
    torch.save(model_fields(model), path)
    ckpt = torch.load(path, weights_only=True)  # plain containers only
    return build_model(ckpt, source=str(path)).eval()


def test_action_checkpoint_round_trip_gives_the_same_outputs(tmp_path):
    model = action("small3d", 3, width=8, bgr=True, dropout=0.2).eval()
    fields = model_fields(model)
    assert fields["kind"] == "action" and fields["arch"]["arch"] == "small3d" and fields["num_classes"] == 3
    plain = (int, float, str, bool, type(None))
    assert all(
        isinstance(v, plain) or (isinstance(v, list) and all(isinstance(i, int) for i in v))
        for v in fields["arch"].values()
    )
    rebuilt = _round_trip(model, tmp_path)
    x = clips()
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), model(x))


def test_alignability_checkpoint_round_trip_includes_the_score_head(tmp_path):
    model = tiny_alignability().eval()
    with torch.no_grad():
        model.score_head.b.fill_(3.25)
    fields = model_fields(model)
    assert fields["kind"] == "alignability"
    assert {"score_head.a_raw", "score_head.b", "score_head.calibrated"} <= set(fields["state_dict"])
    rebuilt = _round_trip(model, tmp_path)
    x = clips(t=5)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), model(x))
    assert rebuilt.score_head.b.item() == 3.25
    assert rebuilt(x).shape == (2, 5, 16) and not math.isnan(rebuilt(x).sum().item())


def test_bad_checkpoints_are_one_line_errors():
    fields = model_fields(action("small3d", 3, width=8))
    with pytest.raises(FgarError, match="unknown checkpoint kind 'video'"):
        build_model(fields | {"kind": "video"}, source="e.pt")
    with pytest.raises(FgarError, match="lacks field"):
        build_model({"kind": "action"}, source="e.pt")
    with pytest.raises(FgarError, match="e.pt: state_dict does not fit") as err:
        build_model(fields | {"num_classes": 4}, source="e.pt")
    assert "\n" not in str(err.value) and "fc.weight" in str(err.value)
    with pytest.raises(FgarError, match="e.pt: invalid ActionEncoderConfig .*arch"):
        build_model(fields | {"arch": {"arch": "small4d"}}, source="e.pt")
    truncated = fields | {"state_dict": dict(list(fields["state_dict"].items())[:-2])}
    with pytest.raises(FgarError, match="missing"):
        build_model(truncated, source="e.pt")


def test_checkpoints_record_the_width_even_when_it_was_the_default():
    e = model_fields(action("small3d", 3))
    a = model_fields(tiny_alignability())
    assert e["arch"]["width"] == 16 and a["arch"]["width"] == 16  # a later default cannot change a checkpoint
    assert build_model(e).backbone.blocks[0][0].out_channels == 16
