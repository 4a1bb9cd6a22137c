"""`fgar data features`: a frozen frame backbone over the embedded benchmark, the store it writes, the
feature index, resuming after an interruption, and the refusals."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import torch
import torchvision

import fgar_cli.stages.features as stage
from fgar_cli.checkpoints import CheckpointRecord, load_alignability_weights, model_fields, save_checkpoint
from fgar_cli.config import (
    AlignabilityEncoderConfig,
    ClipConfig,
    DataPaths,
    GitdlLoss,
    GitdlTraining,
    PretrainConfig,
    PretrainRecipe,
)
from fgar_cli.data.index import DatasetIndex, load_index, save_index
from fgar_cli.data.sequences import FEATURES_SCHEMA, read_sequence
from fgar_cli.data.transforms import ClipTransform
from fgar_cli.data.video import read_frames
from fgar_cli.models import build_alignability_encoder

from conftest import Cli
from helpers import fgar

SIZE = 32  # the recipe's frame size of the tiny f_A, and --size of the torchvision runs


@pytest.fixture(scope="module")
def video_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The embedded benchmark at its smallest (2 classes x 2 videos of ~16 frames, 32 px) and its index."""
    root = tmp_path_factory.mktemp("features_data")
    synth = ["--classes", "2", "--videos-per-class", "2", "--frames", "16", "--size", SIZE, "--seed", "1"]
    assert fgar("synth", "--out-dir", root / "data", *synth) == 0
    assert fgar("data", "index", "--format", "diving48", "--root", root / "data", "--out", root / "index.json") == 0
    return root / "index.json"


@pytest.fixture(scope="module")
def ckpt_a(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A pretrain-style A0.pt (no class set) of an untrained small2d f_A, written as the engine writes one."""
    path = tmp_path_factory.mktemp("features_ckpt") / "A0.pt"
    model = build_alignability_encoder(AlignabilityEncoderConfig(width=4))
    clip = ClipConfig(num_frames=8, size=SIZE)
    recipe = PretrainRecipe(data=DataPaths(), clip=clip, training=GitdlTraining(), loss=GitdlLoss())
    record = CheckpointRecord(class_names=[], recipe=recipe, config=PretrainConfig())
    save_checkpoint(path, {**model_fields(model), **record.fields(), "epoch": 1, "history": []})
    return path


@pytest.fixture(scope="module")
def resnet18_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("features_weights") / "resnet18.pth"
    torch.manual_seed(0)
    torch.save({"state_dict": torchvision.models.resnet18(weights=None).state_dict()}, path)
    return path


def run_features(cli: Cli, index: Path, out: Path, *args: object) -> Any:
    return cli(["data", "features", "--index", index, "--out-dir", out, "--device", "cpu", *args])


def stored(out: Path) -> dict[str, np.ndarray]:
    with h5py.File(out / "features.h5", "r") as f:
        return {name: f["sequences"][name][()] for name in f["sequences"]}


def decoded(index: DatasetIndex, entry_id: str, stride: int) -> np.ndarray:
    """The frames of one entry that the store should hold, decoded here."""
    entry = index.by_id()[entry_id]
    frames = np.arange(entry.start_frame, entry.start_frame + entry.num_frames, stride)
    return read_frames(index.resolve(entry), frames)


def test_ckpt_a_store_holds_the_frame_backbone_features(cli: Cli, video_index: Path, ckpt_a: Path, tmp_path: Path):
    out = tmp_path / "feats"
    result = run_features(cli, video_index, out, "--ckpt-a", ckpt_a, "--stride", 2, "--batch-size", 3)
    assert result.code == 0, result.out + result.err
    videos = load_index(video_index)
    model = load_alignability_weights(str(ckpt_a)).eval()
    dim = 32 * 16  # small2d: 32 channels on a 4 x 4 map

    with h5py.File(out / "features.h5", "r") as f:
        assert f.attrs["schema"] == FEATURES_SCHEMA and f.attrs["input_dim"] == dim and f.attrs["stride"] == 2
        backbone = json.loads(f.attrs["backbone"])
        assert backbone["checkpoint"] == str(ckpt_a.resolve()) and backbone["size"] == SIZE
    features = stored(out)
    assert sorted(features) == sorted(e.id for e in videos.entries)
    for entry in videos.entries:  # L = ceil(frames / stride), D = the backbone's
        assert features[entry.id].shape == (-(-entry.num_frames // 2), dim)
        assert features[entry.id].dtype == np.float32

    first = videos.entries[0]
    pixels = ClipTransform(SIZE, train=False)(decoded(videos, first.id, 2))  # f_A's test-time frames
    with torch.inference_mode():
        expected = model.backbone(pixels).numpy()
    np.testing.assert_allclose(features[first.id], expected, rtol=1e-4, atol=1e-5)

    index = load_index(out / "index.json")
    assert index.format == "features" and index.input_dim == dim and index.is_sequence
    assert [(e.id, e.label, e.subset, e.group) for e in index.entries] == [
        (e.id, e.label, e.subset, e.group) for e in videos.entries
    ]
    assert index.class_names == videos.class_names
    assert [e.key for e in index.entries] == [e.id for e in index.entries]
    assert all(e.num_frames == len(features[e.id]) and e.path == "features.h5" for e in index.entries)
    # the reader every training stage uses finds each entry through the index
    np.testing.assert_array_equal(
        read_sequence(index.resolve(index.entries[1]), index.entries[1].key), features[index.entries[1].id]
    )
    assert not (out / "features.h5.partial").exists()


def test_torchvision_backbone_with_user_weights(cli: Cli, video_index: Path, resnet18_weights: Path, tmp_path: Path):
    out = tmp_path / "r18"
    result = run_features(
        cli, video_index, out, "--backbone", "resnet18", "--weights", resnet18_weights, "--size", SIZE
    )
    assert result.code == 0, result.out + result.err
    assert load_index(out / "index.json").input_dim == 512
    features = stored(out)
    assert {f.shape[1] for f in features.values()} == {512}

    net = torchvision.models.resnet18(weights=None)
    net.load_state_dict(torch.load(resnet18_weights, weights_only=True)["state_dict"])
    net.fc = torch.nn.Identity()
    videos = load_index(video_index)
    entry = videos.entries[-1]
    imagenet = ClipTransform(SIZE, train=False, resize=SIZE, mean=stage.IMAGENET_MEAN, std=stage.IMAGENET_STD)
    with torch.inference_mode():
        expected = net.eval()(imagenet(decoded(videos, entry.id, 1))).numpy()
    np.testing.assert_allclose(features[entry.id], expected, rtol=1e-4, atol=1e-5)


def test_weights_that_do_not_fit_are_one_line(cli: Cli, video_index: Path, tmp_path: Path):
    wrong = tmp_path / "wrong.pth"
    torch.save({"model": {"encoder.conv.weight": torch.ones(3)}}, wrong)
    result = run_features(cli, video_index, tmp_path / "out", "--backbone", "resnet18", "--weights", wrong)
    assert result.code == 1
    result.error_line(str(wrong), "resnet18", "missing", "1 unexpected")
    assert not (tmp_path / "out" / "features.h5.partial").exists()


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        ([], ("--ckpt-a", "--backbone")),
        (["--backbone", "resnet18"], ("--weights",)),
        (["--backbone", "resnet_nope", "--weights", "w.pth"], ("resnet_nope", "torchvision classification")),
        (["--stride", "0", "--backbone", "resnet18"], ("stride",)),
    ],
)
def test_usage_errors(cli: Cli, video_index: Path, tmp_path: Path, args: list[str], fragments: tuple[str, ...]):
    result = run_features(cli, video_index, tmp_path / "out", *args)
    assert result.code == 1
    result.error_line(*fragments)


def test_interrupted_run_resumes_without_recomputing(
    cli: Cli, video_index: Path, ckpt_a: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    videos = load_index(video_index)
    paths = [str(videos.resolve(e)) for e in videos.entries]
    reads: list[str] = []
    interrupt_at = [2]  # Ctrl-C as the third video is decoded

    def read_frames_spy(path: Path, *args: Any, **kwargs: Any) -> np.ndarray:
        if len(reads) == interrupt_at[0]:
            raise KeyboardInterrupt
        reads.append(str(path))
        return read_frames(path, *args, **kwargs)

    monkeypatch.setattr(stage, "read_frames", read_frames_spy)
    out = tmp_path / "feats"
    result = run_features(cli, video_index, out, "--ckpt-a", ckpt_a)
    assert result.code == 130, result.out + result.err
    assert "2 of 4 entries are kept" in result.err and "features.h5.partial" in result.err
    assert not (out / "features.h5").exists() and not (out / "index.json").exists()
    with h5py.File(out / "features.h5.partial", "r") as f:
        kept = {name: f["sequences"][name][()] for name in f["sequences"]}
    assert sorted(kept) == sorted(e.id for e in videos.entries[:2])

    refused = run_features(cli, video_index, out, "--ckpt-a", ckpt_a, "--stride", 2)  # other settings
    assert refused.code == 1
    refused.error_line("features.h5.partial", "--force")

    reads.clear()
    interrupt_at[0] = -1
    result = run_features(cli, video_index, out, "--ckpt-a", ckpt_a)
    assert result.code == 0, result.out + result.err
    assert reads == paths[2:]  # only the videos the first run did not finish were decoded
    features = stored(out)
    for name, values in kept.items():
        np.testing.assert_array_equal(features[name], values)
    assert "reused from an earlier run │ 2" in result.out

    # and the resumed store is the one an uninterrupted run writes
    assert run_features(cli, video_index, tmp_path / "whole", "--ckpt-a", ckpt_a).code == 0
    whole = stored(tmp_path / "whole")
    assert sorted(whole) == sorted(features)
    for name in whole:
        np.testing.assert_allclose(features[name], whole[name], rtol=1e-5, atol=1e-6)


def test_existing_store_needs_force(cli: Cli, video_index: Path, ckpt_a: Path, tmp_path: Path):
    out = tmp_path / "feats"
    assert run_features(cli, video_index, out, "--ckpt-a", ckpt_a).code == 0
    before = (out / "features.h5").stat().st_mtime_ns
    result = run_features(cli, video_index, out, "--ckpt-a", ckpt_a)
    assert result.code == 1
    result.error_line(str(out / "features.h5"), "--force")
    assert (out / "features.h5").stat().st_mtime_ns == before
    assert run_features(cli, video_index, out, "--ckpt-a", ckpt_a, "--force").code == 0


def test_video_that_does_not_decode_is_skipped(cli: Cli, video_index: Path, ckpt_a: Path, tmp_path: Path):
    videos = load_index(video_index)
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42 not really a video")
    videos.entries[1].path = str(broken)
    videos.allow_outside_root = True
    save_index(videos, tmp_path / "index.json")

    out = tmp_path / "feats"
    result = run_features(cli, tmp_path / "index.json", out, "--ckpt-a", ckpt_a)
    assert result.code == 0, result.out + result.err
    assert f"warning: skipped {broken}" in result.err
    index = load_index(out / "index.json")
    assert [e.id for e in index.entries] == [e.id for i, e in enumerate(videos.entries) if i != 1]
    assert index.skipped[-1]["path"] == str(broken)
    assert videos.entries[1].id not in stored(out)
