"""ACL+MTL through `fgar selftrain --method acl-mtl`: the multi-scale clips, the per-position
features the calibration reads, the step's state across a resume, and the method end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from fgar_cli.checkpoints import load_checkpoint
from fgar_cli.config import AclMtlOptions, ActionEncoderConfig, ClipConfig, SequenceAugmentation
from fgar_cli.data.dataset import ClipDataset, ClipMode
from fgar_cli.data.index import VideoEntry, load_index
from fgar_cli.models import build_action_encoder
from fgar_cli.stages.peers import multiscale_frame_steps

from conftest import Cli
from helpers import fgar, write_ts


def _selftrain(cli: Cli, run: Path, out: Path, *extra: object):  # noqa: ANN202
    args = ["selftrain", "--method", "acl-mtl", "--ckpt-e", run / "fit" / "E.pt", "--out-dir", out, "--ts-epochs", 2]
    return cli([*args, "--set", "teacher_student.batch_size=2", *extra])


def test_acl_mtl_end_to_end_writes_finepseudos_artifacts(cli: Cli, tiny_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "acl"
    done = _selftrain(cli, tiny_run, out, "--set", "acl_mtl.confidence_threshold=0")
    assert done.code == 0, done.out + done.err
    summary = json.loads((out / "selftrain.json").read_text())
    unlabeled = json.loads((tiny_run / "split.json").read_text())["unlabeled"]
    assert summary["method"] == "acl-mtl" and len(summary["rounds"]) == 2
    # delta 0: every clip's Eq. 19 confidence clears it; its weight is then its GMM gamma, which is 0
    # only for a clip far out in the noisy component
    assert all(0 < r["round_pl_count"] <= len(unlabeled) for r in summary["rounds"])
    assert all(r["round_candidates"] == len(unlabeled) for r in summary["rounds"])
    ckpt = load_checkpoint(out / "E.pt", kind="action")  # weights_only: a plain f_E checkpoint, no heads
    assert ckpt["method"] == "acl-mtl" and not any(k.startswith(("heads", "spatial")) for k in ckpt["state_dict"])
    rows = (out / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    for term in ("contrastive", "temporal", "unsupervised"):
        values = [float(r.split(",")[header.index(term)]) for r in rows[1:] if r]
        assert values and all(np.isfinite(values)), term
    # MTL's loss is a cross-entropy between distributions over 256 outputs: positive once trained
    assert all(float(r.split(",")[header.index("temporal")]) > 0 for r in rows[1:] if r)
    evaluated = cli(["evaluate", "--ckpt-e", out / "E.pt", "--out-dir", tmp_path / "eval", "--num-views", 1])
    assert evaluated.code == 0, evaluated.out + evaluated.err


def test_acl_mtl_resumes_to_the_same_weights(cli: Cli, tiny_run: Path, tmp_path: Path, interrupt_after_epochs) -> None:  # noqa: ANN001
    whole = tmp_path / "whole"
    assert _selftrain(cli, tiny_run, whole).code == 0
    cut = tmp_path / "cut"
    interrupt_after_epochs(1)
    assert _selftrain(cli, tiny_run, cut).code != 0
    state = load_checkpoint(cut / "E_last.pt", kind="action")["step_state"]
    unlabeled = len(json.loads((tiny_run / "split.json").read_text())["unlabeled"])
    assert state["bank"]["size"] == unlabeled  # one epoch pushed every unlabeled clip, and it was saved
    assert state["prototypes"]["initialised"].any() and "head_optimizer" in state
    interrupt_after_epochs(None)
    resumed = _selftrain(cli, tiny_run, cut, "--resume")
    assert resumed.code == 0, resumed.out + resumed.err
    a, b = (load_checkpoint(d / "E.pt", kind="action")["state_dict"] for d in (whole, cut))
    for key in a:  # the heads, prototypes, bank and centres resumed too, or the second epoch would differ
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=0, msg=key)


def test_acl_mtl_delta_one_gives_no_clip_weight(cli: Cli, tiny_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "strict"
    assert _selftrain(cli, tiny_run, out, "--set", "acl_mtl.confidence_threshold=1").code == 0
    assert json.loads((out / "selftrain.json").read_text())["cumulative_pl_count"] == 0
    rows = (out / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    assert all(float(r.split(",")[header.index("unsupervised")]) == 0 for r in rows[1:] if r)


@pytest.mark.parametrize(("arch", "shape"), [("small3d", (2, 8, 3, 32, 32)), ("tcn", (2, 12, 5))])
def test_position_features_pool_into_the_clip_embedding(arch: str, shape: tuple[int, ...]) -> None:
    config = ActionEncoderConfig(arch=arch, input_dim=5 if arch == "tcn" else 0)
    model = build_action_encoder(config, 4).eval()
    x = torch.randn(*shape)
    with torch.no_grad():
        positions = model.position_features(x)
        assert positions.shape == (2, 16 if arch == "small3d" else 4, model.position_channels)
        torch.testing.assert_close(model.pool_positions(positions), model.features(x), rtol=0, atol=0)
        # each position is its own place: changing the last frames moves the last time positions only
        later = x.clone()
        later[:, -2:] += 3.0
        moved = (model.position_features(later) - positions).abs().flatten(2).amax(2)[0]
        assert moved[-1] > 0


def _sequence_index(tmp_path: Path, steps: int = 40) -> Path:
    series = [np.arange(steps, dtype=float)[None].repeat(2, 0).tolist() for _ in range(4)]
    labels = ["a", "b", "a", "b"]
    write_ts(tmp_path / "d" / "X_TRAIN.ts", series, labels)
    write_ts(tmp_path / "d" / "X_TEST.ts", series[:2], labels[:2])
    assert fgar("data", "index", "--format", "ts", "--root", tmp_path / "d", "--out", tmp_path / "i.json") == 0
    return tmp_path / "i.json"


def test_multiscale_items_hold_a_short_clip_inside_its_long_clips(tmp_path: Path) -> None:
    index = load_index(_sequence_index(tmp_path))  # every step's value is its time: clips show their frames
    clip = ClipConfig(num_frames=4)
    data = ClipDataset(
        index, index.entries, clip, ClipMode.MULTISCALE, strong=SequenceAugmentation(), frame_steps=(2, 4, 8)
    )
    item = data[0]
    assert item["weak"].shape == item["strong"].shape == (4, 2) and item["long"].shape == (2, 4, 2)
    short = item["weak"][:, 0].numpy()
    assert np.diff(short).tolist() == [2, 2, 2]
    for n, step in enumerate((4, 8)):
        frames = item["long"][n, :, 0].numpy()
        assert np.diff(frames).tolist() == [step] * 3
        assert frames[0] <= short[0] and short[-1] <= frames[-1]  # contains the short clip's span
    with pytest.raises(Exception, match="multiscale mode"):
        ClipDataset(index, index.entries, clip, ClipMode.PAIR, frame_steps=(2, 4))
    with pytest.raises(Exception, match="multiscale mode"):
        ClipDataset(index, index.entries, clip, ClipMode.MULTISCALE)


def test_frame_steps_make_the_longest_clip_span_the_median_video() -> None:
    entries = [VideoEntry(id=str(i), path="x", label=0, num_frames=n) for i, n in enumerate((40, 48, 60))]
    assert multiscale_frame_steps(AclMtlOptions(), 16, entries) == [1, 2, 4]  # 4 x 15 + 1 = 61 ~ 48
    assert multiscale_frame_steps(AclMtlOptions(), 4, entries) == [4, 8, 16]  # 16 x 3 + 1 = 49 ~ 48
    assert multiscale_frame_steps(AclMtlOptions(short_interval=3, long_multipliers=[5]), 4, entries) == [3, 15]
