"""The peer methods through `fgar selftrain --method fixmatch|sefar`: the teacher-student base (paired
batches, weak and strong views, the engine's step state and resume), and each method end to end on
the tiny embedded benchmark, writing FinePseudo's artifacts."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from fgar_cli.checkpoints import load_checkpoint
from fgar_cli.config import ActionEncoderConfig, Augmentation, ClipConfig, SequenceAugmentation
from fgar_cli.data.batches import EpochBatches, Stream
from fgar_cli.data.dataset import ClipDataset, ClipMode
from fgar_cli.data.index import load_index
from fgar_cli.method.sefar import element_layout
from fgar_cli.method.teacher_student import PairedBatches
from fgar_cli.models import build_action_encoder

from conftest import Cli
from helpers import CLIP, fgar, write_ts


def _selftrain(cli: Cli, run: Path, out: Path, method: str, *extra: object):  # noqa: ANN202
    args = ["selftrain", "--method", method, "--ckpt-e", run / "fit" / "E.pt", "--out-dir", out, "--ts-epochs", 2]
    return cli([*args, "--set", "teacher_student.batch_size=2", *extra])


def _unlabeled(run: Path) -> list[str]:
    return json.loads((run / "split.json").read_text())["unlabeled"]


def test_fixmatch_end_to_end_writes_finepseudos_artifacts(cli: Cli, tiny_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "fixmatch"
    done = _selftrain(cli, tiny_run, out, "fixmatch", "--set", "teacher_student.threshold=0")
    assert done.code == 0, done.out + done.err
    summary = json.loads((out / "selftrain.json").read_text())
    unlabeled = _unlabeled(tiny_run)
    assert summary["method"] == "fixmatch" and len(summary["rounds"]) == 2
    # threshold 0: the teacher labels every unlabeled clip, every epoch
    assert [r["round_pl_count"] for r in summary["rounds"]] == [len(unlabeled)] * 2
    with h5py.File(out / "epoch_2" / "pseudo.h5") as f:
        ids = [v.decode() for v in f["video_ids"][:]]
        assert sorted(ids) == sorted(unlabeled) and f["accepted"][:].all()
    ckpt = load_checkpoint(out / "E.pt", kind="action")  # weights_only: a plain f_E checkpoint
    assert ckpt["method"] == "fixmatch" and "step_state" not in ckpt
    assert not (out / "E_last.pt").exists()
    evaluated = cli(["evaluate", "--ckpt-e", out / "E.pt", "--out-dir", tmp_path / "eval", "--num-views", 1])
    assert evaluated.code == 0, evaluated.out + evaluated.err
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["videos"] > 0


def test_fixmatch_threshold_one_accepts_nothing(cli: Cli, tiny_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "strict"
    assert _selftrain(cli, tiny_run, out, "fixmatch", "--set", "teacher_student.threshold=1").code == 0
    summary = json.loads((out / "selftrain.json").read_text())
    assert summary["cumulative_pl_count"] == 0
    rows = (out / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    unsupervised = [float(r.split(",")[header.index("unsupervised")]) for r in rows[1:] if r]
    assert unsupervised and all(u == 0 for u in unsupervised)


def test_sefar_trains_f_e_on_the_dual_level_elements(cli: Cli, tiny_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "sefar"
    done = _selftrain(cli, tiny_run, out, "sefar", "--set", "sefar.teacher_passes=2", "--set", "sefar.warmup_epochs=1")
    assert done.code == 0, done.out + done.err
    ckpt = load_checkpoint(out / "E.pt", kind="action")
    frames = int(CLIP[CLIP.index("--num-frames") + 1])
    assert ckpt["arch"]["frame_order"] == element_layout(frames, 2, 2, 4).weak.tolist()
    summary = json.loads((out / "selftrain.json").read_text())
    assert len(summary["rounds"]) == 2 and summary["method"] == "sefar"
    # epoch 1 is the supervised warm-up: no clip has weight; epoch 2 ramps to xi = 1 (its last epoch)
    assert summary["rounds"][0]["round_pl_count"] == 0 < summary["rounds"][1]["round_pl_count"]
    # evaluate (and so predict and export) see clips through the same frame order
    assert cli(["evaluate", "--ckpt-e", out / "E.pt", "--out-dir", tmp_path / "eval", "--num-views", 1]).code == 0
    again = _selftrain(cli, tiny_run, tmp_path / "twice", "sefar", "--ckpt-e", out / "E.pt")
    again.error_line("already has a frame order")
    _selftrain(cli, tiny_run, tmp_path / "warm", "sefar").error_line("sefar.warmup_epochs=2", "fewer warm-up epochs")


def test_a_layout_longer_than_the_clip_is_one_error_line(cli: Cli, tiny_run: Path, tmp_path: Path) -> None:
    done = _selftrain(
        cli, tiny_run, tmp_path / "long", "sefar", "--set", "sefar.context_length=40", "--set", "sefar.warmup_epochs=1"
    )
    done.error_line("sefar")


def test_openworld_refuses_a_peer_method(cli: Cli, tiny_run: Path, tmp_path: Path) -> None:
    args = ["openworld", "--ckpt-e", tiny_run / "fit" / "E.pt", "--ckpt-a", tiny_run / "fit" / "A.pt"]
    cli([*args, "--out-dir", tmp_path / "ow", "--set", "method=fixmatch"]).error_line("FinePseudo only")


def test_an_interrupted_run_resumes_to_the_same_weights(
    cli: Cli, tiny_run: Path, tmp_path: Path, interrupt_after_epochs
) -> None:  # noqa: ANN001
    whole = tmp_path / "whole"
    assert _selftrain(cli, tiny_run, whole, "fixmatch", "--set", "teacher_student.threshold=0.3").code == 0
    cut = tmp_path / "cut"
    interrupt_after_epochs(1)
    assert _selftrain(cli, tiny_run, cut, "fixmatch", "--set", "teacher_student.threshold=0.3").code != 0
    assert (cut / "E_last.pt").exists() and not (cut / "E.pt").exists()
    interrupt_after_epochs(None)
    resumed = _selftrain(cli, tiny_run, cut, "fixmatch", "--set", "teacher_student.threshold=0.3", "--resume")
    assert resumed.code == 0, resumed.out + resumed.err
    a, b = (load_checkpoint(d / "E.pt", kind="action")["state_dict"] for d in (whole, cut))
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=0, msg=key)
    assert json.loads((whole / "selftrain.json").read_text()) == {
        **json.loads((cut / "selftrain.json").read_text()),
        "ckpt_e": str(whole / "E.pt"),
    }


# --------------------------------------------------------------------------- the pieces


def test_frame_order_shows_the_trunk_those_frames() -> None:
    order = [1, 3, 0, 2]
    model = build_action_encoder(ActionEncoderConfig(arch="small3d", frame_order=order, dropout=0), 3).eval()
    clips = torch.randn(2, 4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(clips), model(clips[:, order], reorder=False))
        assert not torch.allclose(model(clips), model(clips, reorder=False))


def _sequence_index(tmp_path: Path) -> Path:
    series = [np.random.default_rng(i).normal(size=(2, 20)).tolist() for i in range(6)]
    labels = [f"c{i % 2}" for i in range(6)]
    write_ts(tmp_path / "d" / "X_TRAIN.ts", series, labels)
    write_ts(tmp_path / "d" / "X_TEST.ts", series[:2], labels[:2])

    assert fgar("data", "index", "--format", "ts", "--root", tmp_path / "d", "--out", tmp_path / "i.json") == 0
    return tmp_path / "i.json"


def test_pair_views_are_the_same_frames_differently_augmented(tmp_path: Path) -> None:
    index = load_index(_sequence_index(tmp_path))
    clip = ClipConfig(num_frames=8)
    plain = ClipDataset(index, index.entries, clip, ClipMode.PAIR, strong=SequenceAugmentation(), weak_views=3)
    item = plain[0]
    assert item["weak"].shape == (3, 8, 2) and item["strong"].shape == (8, 2)
    for view in item["weak"]:  # no augmentation anywhere: every view is the sampled frames themselves
        torch.testing.assert_close(view, item["strong"])
    strong = ClipDataset(index, index.entries, clip, ClipMode.PAIR, strong=SequenceAugmentation(jitter=0.5))
    assert not torch.allclose(strong[0]["strong"], strong[0]["weak"])
    with pytest.raises(Exception, match="pair mode only"):
        ClipDataset(index, index.entries, clip, ClipMode.TRAIN, weak_views=2)


def test_paired_batches_visit_every_unlabeled_clip_once_and_cycle_the_labeled(tmp_path: Path) -> None:
    index = load_index(_sequence_index(tmp_path))
    clip = ClipConfig(num_frames=4)
    labeled = ClipDataset(index, index.entries[:2], clip, ClipMode.TRAIN, seed=1)
    unlabeled = ClipDataset(index, index.entries[2:6], clip, ClipMode.PAIR, strong=SequenceAugmentation(), seed=1)
    batches = PairedBatches(
        EpochBatches(labeled, 1, Stream.ACTION, batch_size=2),
        EpochBatches(unlabeled, 1, Stream.TEACHER_STUDENT, batch_size=1),
    )
    epoch = list(batches.for_epoch(3))
    assert len(epoch) == len(batches.for_epoch(3)) == 4
    assert sorted(int(b["index"][0]) for b in epoch) == [0, 1, 2, 3]
    assert all(sorted(b["labeled"]["index"].tolist()) == [0, 1] for b in epoch)  # every pass, both clips
    again = list(batches.for_epoch(3))
    for x, y in zip(epoch, again, strict=True):
        torch.testing.assert_close(x["unlabeled"]["strong"], y["unlabeled"]["strong"])
        torch.testing.assert_close(x["labeled"]["video"], y["labeled"]["video"])


def test_a_video_strong_view_uses_its_own_augmentation(tiny_run: Path) -> None:
    index = load_index(tiny_run / "index.json")
    clip = ClipConfig(num_frames=4, size=32, hflip=False)
    strong = Augmentation(brightness=0.9, contrast=0.9)
    item = ClipDataset(index, index.entries[:1], clip, ClipMode.PAIR, strong=strong)[0]
    assert item["weak"].shape == item["strong"].shape == (4, 3, 32, 32)
    assert not torch.allclose(item["weak"], item["strong"])
