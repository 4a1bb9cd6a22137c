"""f_E's self-supervised start: TCLR's losses, its clips, its model, its released weights, the stage."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torchvision

from fgar_cli.checkpoints import load_checkpoint
from fgar_cli.config import ActionEncoderConfig, Augmentation, ClipConfig, TclrLoss, validate
from fgar_cli.contrastive import global_local_loss, instance_loss, local_local_loss
from fgar_cli.data.sampling import tclr_indices, temporal_crop
from fgar_cli.data.transforms import ClipTransform
from fgar_cli.errors import FgarError
from fgar_cli.models import _dilate_layer4, build_action_encoder, build_pretrained_action_encoder
from fgar_cli.objectives import TclrStep

from helpers import CLIP, fgar, fit_labeled

# --------------------------------------------------------------------------- losses against hand values


def one_line(error: FgarError, *fragments: str) -> str:
    """The error's message: one line holding every fragment."""
    text = str(error)
    assert "\n" not in text and all(f in text for f in fragments), text
    return text


def unit(*values: float) -> torch.Tensor:
    v = torch.tensor(values, dtype=torch.float64)
    return v / v.norm()


def nll(logits: list[float], target: int) -> float:
    """-log softmax(logits)[target], written out."""
    return -logits[target] + math.log(sum(math.exp(x) for x in logits))


def test_local_local_loss_matches_a_hand_computation():
    # one video, K = 2 local clips, two views: a0, a1 (view a) and b0, b1 (view b)
    a0, a1, b0, b1 = unit(1, 0), unit(0, 1), unit(1, 1), unit(-1, 2)
    tau = 0.5
    z = [a0, a1, b0, b1]
    positive = {0: 2, 1: 3, 2: 0, 3: 1}  # each clip's other view
    expected = 0.0
    for i in range(4):  # anchor i against the 3 others (itself left out)
        others = [j for j in range(4) if j != i]
        logits = [float(z[i] @ z[j]) / tau for j in others]
        expected += nll(logits, others.index(positive[i])) / 4
    got = local_local_loss(torch.stack([a0, a1])[None], torch.stack([b0, b1])[None], tau)
    assert float(got) == pytest.approx(expected, rel=1e-9)


def test_local_local_loss_uses_only_the_same_videos_clips_as_negatives():
    video_1 = torch.stack([unit(1, 0, 0), unit(0, 1, 0)])[None]
    alone = local_local_loss(video_1, video_1.clone(), 0.1)
    # a second video in the batch, whose clips would be hard negatives if other videos counted
    together = local_local_loss(torch.cat([video_1, video_1]), torch.cat([video_1, video_1]), 0.1)
    assert float(together) == pytest.approx(float(alone), rel=1e-9)


def test_global_local_loss_matches_a_hand_computation_in_both_directions():
    steps = torch.stack([unit(1, 0), unit(1, 1)])  # global time steps q = 0, 1
    local = torch.stack([unit(2, 1), unit(0, 1)])  # local clips k = 0, 1
    tau = 0.25
    sim = [[float(steps[q] @ local[k]) / tau for k in range(2)] for q in range(2)]
    rows = [nll(sim[q], q) for q in range(2)]  # step q picks local clip q
    cols = [nll([sim[q][k] for q in range(2)], k) for k in range(2)]  # local clip k picks step k
    expected = (sum(rows) + sum(cols)) / 4
    assert float(global_local_loss(steps[None], local[None], tau)) == pytest.approx(expected, rel=1e-9)


def test_global_local_loss_pairs_time_step_q_with_local_clip_q():
    basis = torch.eye(4, dtype=torch.float64)[None]  # step q and local clip q: the same unit vector
    matched = global_local_loss(basis, basis, 0.1)
    swapped = global_local_loss(basis, basis[:, [1, 0, 3, 2]], 0.1)  # local clips out of time order
    assert float(matched) < 1e-3 < float(swapped)


def test_instance_loss_matches_a_hand_computation():
    a, b = torch.stack([unit(1, 0), unit(0, 1)]), torch.stack([unit(1, 1), unit(-1, 1)])
    tau = 0.5
    z = [a[0], a[1], b[0], b[1]]
    expected = 0.0
    for i in range(4):
        others = [j for j in range(4) if j != i]
        expected += nll([float(z[i] @ z[j]) / tau for j in others], others.index((i + 2) % 4)) / 4
    assert float(instance_loss(a, b, tau)) == pytest.approx(expected, rel=1e-9)


# --------------------------------------------------------------------------- clips


def test_tclr_clips_follow_tclrs_code_on_a_long_video():
    global_idx, local_idx = tclr_indices(100, 300, 16, 4, 16, np.random.default_rng(0))
    start = global_idx[0]
    assert np.array_equal(global_idx, start + 4 * np.arange(16))  # stride 4 over 64 frames
    for q in range(4):  # local clip q: 16 consecutive frames, the global clip's q-th quarter
        assert np.array_equal(local_idx[q], start + 16 * q + np.arange(16))
        assert set(global_idx[4 * q : 4 * q + 4]) <= set(local_idx[q])
    assert 100 <= start and start + 63 < 300


def test_tclr_clips_of_a_short_video_stay_in_range_and_do_not_overlap():
    global_idx, local_idx = tclr_indices(2, 42, 16, 4, 16, None)
    assert global_idx.min() >= 2 and global_idx.max() < 42
    assert all(local_idx[q].max() < local_idx[q + 1].min() for q in range(3))
    assert local_idx.min() == 2 and local_idx.max() == 41


def test_temporal_crop_keeps_at_least_its_fraction():
    rng = np.random.default_rng(3)
    for _ in range(50):
        s, e = temporal_crop(10, 110, 0.6, rng)
        assert 10 <= s < e <= 110 and e - s >= 60


# --------------------------------------------------------------------------- augmentation


def frames(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (8, 40, 48, 3), dtype=np.uint8)


STRONG = Augmentation(min_scale=0.6, brightness=0.3, contrast=0.3, tint=0.1)


def test_augmentation_is_deterministic_per_seed():
    transform = ClipTransform(32, train=True, augment=STRONG)
    one = transform(frames(), np.random.default_rng([7, 0, 3]))
    again = transform(frames(), np.random.default_rng([7, 0, 3]))
    other = transform(frames(), np.random.default_rng([8, 0, 3]))
    assert torch.equal(one, again) and not torch.allclose(one, other)
    assert one.shape == (8, 3, 32, 32)


def test_default_augmentation_changes_nothing():
    plain = ClipTransform(32, train=True)(frames(), np.random.default_rng(5))
    default = ClipTransform(32, train=True, augment=Augmentation())(frames(), np.random.default_rng(5))
    assert torch.equal(plain, default)


def test_colour_jitter_is_one_draw_for_the_whole_clip():
    constant = np.full((6, 32, 32, 3), 100, np.uint8)
    out = ClipTransform(32, train=True, flip=False, augment=Augmentation(brightness=0.5, tint=0.2))(
        constant, np.random.default_rng(1)
    )
    per_frame = out.mean((2, 3))  # (T, 3): one colour per frame
    assert torch.allclose(per_frame, per_frame[0].expand_as(per_frame), atol=1e-5)
    plain = ClipTransform(32, train=True, flip=False)(constant, np.random.default_rng(1))
    assert not torch.allclose(out, plain)


def test_test_clips_are_never_augmented():
    plain = ClipTransform(32, train=False)(frames())
    assert torch.equal(plain, ClipTransform(32, train=False, augment=STRONG)(frames()))


def test_augmented_training_clips_keep_their_labels_and_reproduce(tiny_run):
    from fgar_cli.config import DataPaths
    from fgar_cli.data.dataset import ClipMode
    from fgar_cli.data.run_data import load_run_data

    data = load_run_data(DataPaths(index=str(tiny_run / "index.json"), split=str(tiny_run / "split.json")))
    ids = data.split.labeled
    clip = ClipConfig(num_frames=8, size=32, augment=STRONG.model_copy(update={"temporal_crop": 0.5}))
    first = data.clips(ids, clip, ClipMode.TRAIN, seed=4)
    second = data.clips(ids, clip, ClipMode.TRAIN, seed=4)
    labels = data.labels(ids)
    for i in range(len(ids)):
        a, b = first[i], second[i]
        assert torch.equal(a["video"], b["video"])
        assert a["label"] == labels[ids[i]]


# --------------------------------------------------------------------------- the model


def test_time_steps_come_from_their_own_part_of_the_clip():
    model = build_pretrained_action_encoder(ActionEncoderConfig(arch="small3d", width=4)).eval()

    class FrameMeans(torch.nn.Module):  # a trunk whose map at time t is frame t's mean, in 16 channels
        def forward(self, x):
            return x.mean((1, 3, 4), keepdim=True).expand(-1, 16, -1, 2, 2)

    model.backbone.blocks = FrameMeans()
    model.head = torch.nn.Identity()  # see the pooled time map itself (F.normalize of Identity: unit)
    x = torch.zeros(1, 8, 3, 8, 8)
    x[:, 6:8] = 1.0  # only the last quarter of the clip is bright
    _, steps = model(x, 4)
    bright = steps[0, :, 0]
    assert bright[3] > 0 and torch.all(bright[:3] == 0)


def test_pretrained_encoder_needs_enough_time_steps():
    model = build_pretrained_action_encoder(ActionEncoderConfig(arch="small3d", width=4))
    with pytest.raises(FgarError, match="fewer than the 4 local clips"):
        model(torch.zeros(2, 8, 3, 32, 32), 4)  # 8 frames leave 2 time steps


def test_tclr_step_returns_named_terms_with_gradients():
    model = build_pretrained_action_encoder(ActionEncoderConfig(arch="small3d", width=4))
    g = torch.Generator().manual_seed(0)
    batch = {
        "global": torch.randn(3, 2, 8, 3, 32, 32, generator=g),
        "local": torch.randn(3, 2, 2, 8, 3, 32, 32, generator=g),
    }
    terms = TclrStep(TclrLoss(local_clips=2, instance_weight=0.5))(model, batch)
    assert set(terms) == {"loss", "local_local", "global_local", "instance"}
    expected = terms["local_local"] + terms["global_local"] + 0.5 * terms["instance"]
    assert torch.isclose(terms["loss"], expected)
    terms["loss"].backward()
    assert model.backbone.blocks[0][0].weight.grad.abs().sum() > 0


# --------------------------------------------------------------------------- TCLR's released weights


def tclr_r2plus1d_file(path, *, drop: str | None = None):
    """A file laid out as TCLR's released R(2+1)D-18 weights: nn.Sequential(trunk, mlp) under
    DataParallel ('module.0.<torchvision name>', 'module.1.fc1.*'), its layer4 dilated, with the
    training state (an optimizer state and a pickled GradScaler) beside the weights."""
    trunk = torchvision.models.video.r2plus1d_18(weights=None)
    _dilate_layer4(trunk)
    trunk.fc = torch.nn.Identity()
    trunk.eval()
    state = {f"module.0.{k}": v for k, v in trunk.state_dict().items() if k != drop}
    state |= {"module.1.fc1.weight": torch.zeros(512, 512), "module.1.bn2.running_mean": torch.zeros(128)}
    torch.save(
        {
            "epoch": 150,
            "state_dict": state,
            "optimizer": {"state": {}, "param_groups": []},
            "amp_scaler": torch.amp.GradScaler("cpu"),
        },
        path,
    )
    return trunk


TCLR_FLAGS = {"bgr": True, "raw_input": True, "dilated_layer4": True}


def test_tclr_named_weights_load_into_r2plus1d_18_and_reproduce_its_features(tmp_path):
    path = tmp_path / "rpd18kin400.pth"
    reference = tclr_r2plus1d_file(path)
    config = validate(ActionEncoderConfig, {"arch": "r2plus1d_18", **TCLR_FLAGS}, "test")
    model = build_action_encoder(config, 48, init=path).eval()
    assert model.init_report.missing == ["fc.bias", "fc.weight"]  # only our classifier is new
    assert model.init_report.unexpected == ["1.bn2.running_mean", "1.fc1.weight"]  # TCLR's head, left out
    x = torch.randn(1, 8, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    raw_bgr = (
        x * torch.tensor([0.22803, 0.22145, 0.216989]).view(3, 1, 1)
        + torch.tensor([0.43216, 0.394666, 0.37645]).view(3, 1, 1)
    ).flip(2)
    with torch.no_grad():
        torch.testing.assert_close(model.features(x), reference(raw_bgr.permute(0, 2, 1, 3, 4)), rtol=1e-4, atol=1e-5)


def test_tclr_weights_without_tclrs_input_and_layer4_name_the_flags(tmp_path):
    path = tmp_path / "rpd18kin400.pth"
    tclr_r2plus1d_file(path)
    with pytest.raises(FgarError) as err:
        build_action_encoder(ActionEncoderConfig(arch="r2plus1d_18"), 48, init=path)
    line = one_line(err.value, str(path), "--bgr", "--raw-input", "--dilated-layer4")
    assert "TCLR" in line


def test_a_mismatched_state_dict_lists_what_did_not_match(tmp_path):
    path = tmp_path / "partial.pth"
    tclr_r2plus1d_file(path, drop="layer3.1.conv2.0.3.weight")
    config = validate(ActionEncoderConfig, {"arch": "r2plus1d_18", **TCLR_FLAGS}, "test")
    with pytest.raises(FgarError) as err:
        build_action_encoder(config, 48, init=path)
    one_line(err.value, str(path), "1 of its tensors missing", "layer3.1.conv2.0.3.weight")
    # TCLR's hybrid layer4 given to a standard r2plus1d_18: named, with the option that fixes it
    plain = tmp_path / "plain.pth"
    trunk = torchvision.models.video.r2plus1d_18(weights=None)
    _dilate_layer4(trunk)
    torch.save({k: v for k, v in trunk.state_dict().items() if not k.startswith("fc.")}, plain)
    with pytest.raises(FgarError) as err:
        build_action_encoder(ActionEncoderConfig(arch="r2plus1d_18"), 48, init=plain)
    one_line(err.value, "layer4.0.conv1.0.0.weight", "pass --dilated-layer4")


def test_a_file_with_other_python_objects_is_refused_by_name(tmp_path):
    path = tmp_path / "odd.pth"
    torch.save({"state_dict": {"stem.0.weight": torch.zeros(1)}, "when": np.float64(1.0).__class__}, path)
    with pytest.raises(FgarError) as err:
        build_action_encoder(ActionEncoderConfig(arch="r2plus1d_18"), 4, init=path)
    one_line(err.value, str(path), "will not unpickle")


# --------------------------------------------------------------------------- the stage, end to end


def test_pretrain_action_then_fit_labeled_starts_from_it(tiny_run, tmp_path):
    data = ["--index", tiny_run / "index.json", "--split", tiny_run / "split.json"]
    pre = tmp_path / "pre_e"
    args = ["pretrain", "--encoder", "action", *data, "--out-dir", pre, "--arch-e", "small3d", "--epochs-e", "1"]
    assert fgar(*args, "--batch-size-e", "3", "--local-clips", "2", *CLIP) == 0
    e0 = load_checkpoint(pre / "E0.pt")
    assert e0["kind"] == "action_pretrained" and e0["recipe"]["loss"]["local_clips"] == 2
    assert {"local_local", "global_local", "loss"} <= set(e0["history"][-1])

    fit = tmp_path / "fit"
    assert fit_labeled(tiny_run, tiny_run / "split.json", fit, 0, 1, "--init-e", pre / "E0.pt") == 0
    e = load_checkpoint(fit / "E.pt")
    assert e["arch"] == e0["arch"]  # f_E was built as E0.pt, though fit-labeled's default arch differs
    trunk = {k: v for k, v in e0["state_dict"].items() if k.startswith("backbone.")}
    assert trunk and all(torch.equal(e["state_dict"][k], v) for k, v in trunk.items())  # 0 epochs: E0's trunk


def test_pretrain_action_resumes_to_the_same_weights(tiny_run, tmp_path, interrupt_after_epochs):
    data = ["--index", tiny_run / "index.json", "--split", tiny_run / "split.json"]
    args = ["pretrain", "--encoder", "action", *data, "--arch-e", "small3d", "--epochs-e", "2"]
    args += ["--batch-size-e", "3", "--local-clips", "2", *CLIP]
    assert fgar(*args, "--out-dir", tmp_path / "whole") == 0
    interrupt_after_epochs(1)
    assert fgar(*args, "--out-dir", tmp_path / "cut") == 130
    interrupt_after_epochs(None)
    assert fgar(*args, "--out-dir", tmp_path / "cut", "--resume") == 0
    whole, cut = load_checkpoint(tmp_path / "whole" / "E0.pt"), load_checkpoint(tmp_path / "cut" / "E0.pt")
    assert all(torch.equal(whole["state_dict"][k], cut["state_dict"][k]) for k in whole["state_dict"])


@pytest.mark.parametrize("arch", ["r3d_18", "r2plus1d_18"])
def test_torchvision_trunks_keep_tclrs_time_steps_only_with_the_dilated_layer4(arch):
    x = torch.randn(2, 8, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    dilated = build_pretrained_action_encoder(ActionEncoderConfig(arch=arch, dilated_layer4=True)).eval()
    with torch.no_grad():
        clip, steps = dilated(x, 2)  # 8 frames: time halves in layer2 and layer3 only, 2 steps remain
    assert clip.shape == (2, 128) and steps.shape == (2, 2, 128)
    assert torch.allclose(steps.norm(dim=-1), torch.ones(2, 2))
    standard = build_pretrained_action_encoder(ActionEncoderConfig(arch=arch)).eval()
    with pytest.raises(FgarError, match=r"leave 1 time steps .* or --dilated-layer4\)"):
        standard(x, 2)
