"""End to end through the six stage commands on a tiny embedded benchmark, plus the ways they fail.

One tiny run (conftest.py: 3 classes, 32 px, 8 frames, one epoch per stage) feeds all tests, so the
expensive part happens once; so does one collaborative pseudo-labeling pass that several tests read.
Every test passes alone and in any order. Commands run in-process through `fgar_cli.cli.main`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from fgar_cli.artifacts import read_h5, write_h5
from fgar_cli.checkpoints import load_checkpoint
from fgar_cli.method.nonparametric import TAU_GRID
from fgar_cli.method.pseudolabels import read_pseudo_labels

from helpers import encoders, fgar, fit_labeled, one_error_line


@pytest.fixture(scope="module")
def run(tiny_run: Path) -> Path:
    """The tiny pipeline of conftest.py; each test here writes into a folder of its own inside it."""
    return tiny_run


def pseudolabel(run: Path, source: str, out: Path, *extra: object) -> int:
    return fgar("pseudolabel", *encoders(run), "--theta", "0.4", "--source", source, "--out-dir", out, *extra)


@pytest.fixture(scope="module")
def collab(run: Path) -> Path:
    """One FinePseudo pseudo-labeling pass (run/pl_collab: gallery.h5, pseudo.h5)."""
    assert pseudolabel(run, "collab", run / "pl_collab") == 0
    return run / "pl_collab"


def test_pretrain_and_fit_write_loadable_checkpoints(run: Path) -> None:
    a0 = load_checkpoint(run / "pre" / "A0.pt", kind="alignability")
    e = load_checkpoint(run / "fit" / "E.pt", kind="action")
    a = load_checkpoint(run / "fit" / "A.pt", kind="alignability")
    assert a0["epoch"] == 1 and e["epoch"] == 1 and a["epoch"] == 1
    assert e["class_names"] == a["class_names"] and len(e["class_names"]) == 3
    # The stored config carries absolute data paths, so later stages need no --index/--split.
    assert Path(e["recipe"]["data"]["index"]).is_absolute() and e["recipe"]["clip"]["num_frames"] == 8
    assert e["config"]["data"] == e["recipe"]["data"]  # the stage's own config, with the same absolute paths
    # f_A started from the pretrained weights: the transformer differs from a fresh init but the
    # checkpoint was trained one more epoch, so at least the shapes and keys agree.
    assert a["state_dict"].keys() == a0["state_dict"].keys()


@pytest.mark.parametrize("source", ["collab", "action", "alignability", "verify"])
def test_pseudolabel_sources_write_consistent_artifacts(run: Path, collab: Path, source: str, capsys) -> None:
    out = collab if source == "collab" else run / f"pl_{source}"
    if source != "collab":
        assert pseudolabel(run, source, out) == 0
        assert "accepted_count" in capsys.readouterr().out
    data, attrs = read_h5(out / "pseudo.h5", "fgar.pseudo", 1)
    p, p_A, p_E = data["p"], data["p_A"], data["p_E"]
    expected = {"collab": (p_A + p_E) / 2, "action": p_E, "alignability": p_A, "verify": p_E}[source]
    np.testing.assert_allclose(p, expected, rtol=1e-5)
    np.testing.assert_array_equal(data["label"], p.argmax(1))
    accepted = p.max(1) > 0.4
    if source == "verify":  # f_E's label also needs its class alignability above 0.6
        accepted &= np.take_along_axis(data["class_alignability"], data["label"][:, None], 1)[:, 0] > 0.6
    np.testing.assert_array_equal(data["accepted"], accepted)
    assert attrs["accepted_count"] == int(accepted.sum()) and attrs["scored_count"] == len(accepted)
    truth = data["truth"]
    if accepted.any():
        assert attrs["accepted_accuracy"] == pytest.approx(float((data["label"][accepted] == truth[accepted]).mean()))
    assert attrs["theta"] == 0.4 and attrs["source"] == source
    if source != "action":  # p_A is Eq. 8 over the stored class logits, with tau fitted on the gallery
        assert attrs["tau"] in TAU_GRID
        expected_p_A = torch.softmax(torch.from_numpy(data["class_logits"]) / attrs["tau"], 1).numpy()
        np.testing.assert_allclose(p_A, expected_p_A, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(data["class_alignability"], 1 / (1 + np.exp(-data["class_logits"])), rtol=1e-5)
    gallery, _ = read_h5(out / "gallery.h5", "fgar.gallery", 1)
    assert set(gallery["labels"].tolist()) == {0, 1, 2}
    assert gallery["embeddings"].shape[1:] == (8, 128)


def test_pseudolabel_reuses_a_gallery_and_gets_the_same_labels(run: Path, collab: Path) -> None:
    out = run / "pl_reuse"
    assert pseudolabel(run, "collab", out, "--gallery", collab / "gallery.h5") == 0
    assert not (out / "gallery.h5").exists()  # the given gallery is used, not a new one
    first, _ = read_h5(collab / "pseudo.h5", "fgar.pseudo", 1)
    again, _ = read_h5(out / "pseudo.h5", "fgar.pseudo", 1)
    np.testing.assert_allclose(first["p_A"], again["p_A"], rtol=1e-4, atol=1e-6)


def test_pseudolabel_takes_a_fixed_tau(run: Path) -> None:
    out = run / "pl_tau"
    assert fgar("pseudolabel", *encoders(run), "--tau", "0.5", "--out-dir", out) == 0
    data, attrs = read_h5(out / "pseudo.h5", "fgar.pseudo", 1)
    assert attrs["tau"] == 0.5
    np.testing.assert_allclose(data["p_A"], torch.softmax(torch.from_numpy(data["class_logits"]) / 0.5, 1), rtol=1e-4)


def test_selftrain_then_evaluate(run: Path) -> None:
    out = run / "st"
    assert fgar("selftrain", *encoders(run), "--theta", "0.4", "--rounds", "2", "--epochs", "1", "--out-dir", out) == 0
    for r in (1, 2):
        assert (out / f"round_{r}" / "pseudo.h5").exists() and (out / f"round_{r}" / "E.pt").exists()
    summary = json.loads((out / "selftrain.json").read_text())
    assert [r["round"] for r in summary["rounds"]] == [1, 2]
    assert load_checkpoint(out / "E.pt", kind="action")["round"] == 2
    # Algorithm 1 line 23: clips accepted in round 1 joined D_l; round 2 labels only the others.
    first, second = (read_pseudo_labels(out / f"round_{r}" / "pseudo.h5") for r in (1, 2))
    accepted_1 = {v for v, ok in zip(first["video_ids"], first["accepted"], strict=True) if ok}
    assert set(second["video_ids"]) == set(first["video_ids"]) - accepted_1
    # Per-round and cumulative counts under distinct names: round 2's own count is of its candidates.
    round_1, round_2 = summary["rounds"]
    assert round_1["round_pl_count"] == round_1["cumulative_pl_count"] == len(accepted_1)
    assert round_2["round_pl_count"] == int(second["accepted"].sum())
    assert round_2["round_candidates"] == len(second["video_ids"])
    assert round_2["cumulative_pl_count"] == len(accepted_1) + int(second["accepted"].sum())
    assert summary["cumulative_pl_count"] == round_2["cumulative_pl_count"]
    evaluate = ["--ckpt-e", out / "E.pt", "--ckpt-a", out / "A.pt", "--num-views", "2", "--out-dir", run / "eval"]
    assert fgar("evaluate", *evaluate) == 0
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    for head in ("action", "alignability", "combined"):
        assert 0 <= metrics[head]["top1"] <= metrics[head]["top5"] <= 1
        assert np.array(metrics[head]["confusion"]).sum() == metrics["videos"] - metrics["unreadable"]
        assert (run / "eval" / f"confusion_{head}.png").read_bytes()[:4] == b"\x89PNG"
    assert metrics["protocol"].startswith("2 clips x 1 centre crop")
    preds, _ = read_h5(run / "eval" / "predictions.h5", "fgar.predictions", 1)
    top1 = float((preds["probs_action"].argmax(1) == preds["labels"]).mean())
    assert top1 == pytest.approx(metrics["action"]["top1"])


def test_selftrain_keeps_accepted_clips_once_every_clip_is_labeled(run: Path, capsys) -> None:
    out = run / "st_all"
    assert fgar("selftrain", *encoders(run), "--theta", "0", "--rounds", "2", "--epochs", "1", "--out-dir", out) == 0
    first = read_pseudo_labels(out / "round_1" / "pseudo.h5")
    assert first["accepted"].all()  # theta 0 accepts every clip in round 1
    assert not (out / "round_2" / "pseudo.h5").exists()  # nothing left to label, yet round 2 trains
    assert (out / "round_2" / "E.pt").exists()
    summary = json.loads((out / "selftrain.json").read_text())
    assert [r["cumulative_pl_count"] for r in summary["rounds"]] == [len(first["video_ids"])] * 2
    assert [r["round_pl_count"] for r in summary["rounds"]] == [len(first["video_ids"]), 0]
    assert "every unlabeled clip is pseudo-labeled already" in capsys.readouterr().err


def test_interrupted_selftrain_resumes_to_the_same_weights(run: Path, interrupt_after_epochs, capsys) -> None:
    common = [*encoders(run), "--theta", "0.4", "--rounds", "2", "--epochs", "2"]
    assert fgar("selftrain", *common, "--out-dir", run / "st_full") == 0
    capsys.readouterr()
    interrupt_after_epochs(3)  # Ctrl-C with round 1's f_E done (2 epochs) and its f_A at epoch 1 of 2
    assert fgar("selftrain", *common, "--out-dir", run / "st_cut") == 130
    err = capsys.readouterr().err
    assert "Traceback" not in err and "interrupted in epoch 2 of round 1 f_A" in err and "rerun with --resume" in err
    assert not (run / "st_cut" / "round_1" / "A.pt").exists()
    assert load_checkpoint(run / "st_cut" / "round_1" / "A_last.pt")["epoch"] == 1
    interrupt_after_epochs(None)
    assert fgar("selftrain", *common, "--out-dir", run / "st_cut", "--resume") == 0
    for name in ("E.pt", "A.pt"):
        full = load_checkpoint(run / "st_full" / name)["state_dict"]
        cut = load_checkpoint(run / "st_cut" / name)["state_dict"]
        for key in full:
            torch.testing.assert_close(cut[key], full[key], rtol=0, atol=0, msg=f"{name} {key}")


def test_openworld_sets_novel_clips_aside(run: Path) -> None:
    split = ["--index", run / "index.json", "--fraction", "0.5", "--seed", "1", "--out", run / "ow_split.json"]
    assert fgar("data", "split", *split, "--known-classes", "2") == 0
    assert fit_labeled(run, run / "ow_split.json", run / "ow_fit") == 0
    options = ["--theta", "0.3", "--rounds", "1", "--epochs", "1", "--novel-threshold", "0.5"]
    assert fgar("openworld", *encoders(run, "ow_fit"), *options, "--out-dir", run / "ow") == 0
    metrics = json.loads((run / "ow" / "metrics.json").read_text())
    assert metrics["known_classes"] == 2 and metrics["novel_threshold"] == 0.5
    pl, _ = read_h5(run / "ow" / "round_1" / "pseudo.h5", "fgar.pseudo", 1)
    assert (pl["truth"] == -1).any()  # the unlabeled set holds clips of the unknown class
    np.testing.assert_array_equal(pl["novel"], pl["max_alignability"] < 0.5)
    assert not (pl["accepted"] & pl["novel"]).any()
    rej = metrics["novel_rejection_round1"]
    assert rej["novel_clips"] == int((pl["truth"] == -1).sum())
    assert 0 <= rej["auroc"] <= 1


# --------------------------------------------------------------------------- bad input


def test_f_A_checkpoint_given_as_f_E(run: Path, capsys) -> None:
    assert fgar("pseudolabel", "--ckpt-a", run / "fit" / "A.pt", "--ckpt-e", run / "fit" / "A.pt") == 1  # f_A twice
    line = one_error_line(capsys.readouterr().err)
    assert "A.pt" in line and "'alignability' checkpoint, but a 'action' checkpoint is needed" in line


def test_pretrain_f_A_has_no_class_set(run: Path, capsys) -> None:
    assert fgar("pseudolabel", "--ckpt-a", run / "pre" / "A0.pt", "--ckpt-e", run / "fit" / "E.pt") == 1
    assert "no class set" in one_error_line(capsys.readouterr().err)


def test_class_sets_that_differ_between_checkpoints(run: Path, capsys) -> None:
    ckpt = load_checkpoint(run / "fit" / "A.pt")
    ckpt["class_names"] = ckpt["class_names"][:2]
    torch.save(ckpt, run / "A_two.pt")
    assert fgar("pseudolabel", "--ckpt-a", run / "A_two.pt", "--ckpt-e", run / "fit" / "E.pt") == 1
    assert "classes differ" in one_error_line(capsys.readouterr().err)


@pytest.mark.parametrize("theta", ["1.5", "-0.1"])
def test_theta_outside_unit_interval(run: Path, theta: str, capsys) -> None:
    assert fgar("pseudolabel", *encoders(run), "--theta", theta) == 1
    assert "theta" in one_error_line(capsys.readouterr().err)


def test_empty_unlabeled_split(run: Path, capsys) -> None:
    assert fgar("data", "split", "--index", run / "index.json", "--fraction", "1.0", "--out", run / "all.json") == 0
    capsys.readouterr()
    assert fgar("pseudolabel", *encoders(run), "--split", run / "all.json", "--out-dir", run / "pl_empty") == 1
    assert "unlabeled split is empty" in one_error_line(capsys.readouterr().err)
    assert not (run / "pl_empty" / "pseudo.h5").exists()


def test_gallery_missing_a_class(run: Path, collab: Path, capsys) -> None:
    data, _ = read_h5(collab / "gallery.h5", "fgar.gallery", 1)
    keep = data["labels"] != 2
    kept = {key: data[key][keep] for key in ("embeddings", "labels")}
    names = {"video_ids": list(data["video_ids"][keep]), "class_names": list(data["class_names"])}
    write_h5(run / "gallery_no2.h5", "fgar.gallery", 1, {**kept, **names})
    options = ["--gallery", run / "gallery_no2.h5", "--out-dir", run / "pl_bad"]
    assert fgar("pseudolabel", *encoders(run), *options) == 1
    line = one_error_line(capsys.readouterr().err)
    assert "gallery_no2.h5" in line and "no member of class" in line


def test_nan_loss_stops_and_keeps_last_good_checkpoint(run: Path, nan_loss_in, capsys) -> None:
    def fit(out: Path, epochs: int) -> int:
        return fit_labeled(run, run / "split.json", out, epochs, 0)

    assert fit(run / "nan_ref", 1) == 0  # what epoch 1 gives (the learning rate of epoch 1 is the same)
    capsys.readouterr()
    nan_loss_in("f_E labeled 2/2")
    assert fit(run / "nan", 2) == 1
    line = one_error_line(capsys.readouterr().err)
    assert "loss became nan" in line and "E_last.pt" in line
    assert not (run / "nan" / "E.pt").exists()
    kept = load_checkpoint(run / "nan" / "E_last.pt")
    assert kept["epoch"] == 1
    assert "optimizer" in kept and "scheduler" in kept  # what --resume reads (the finished E.pt has neither)
    reference = load_checkpoint(run / "nan_ref" / "E.pt")["state_dict"]  # finished: its E_last.pt is gone
    for key, value in reference.items():
        torch.testing.assert_close(kept["state_dict"][key], value, rtol=0, atol=0)


def test_finished_checkpoints_hold_the_model_and_only_last_ones_the_optimizer(tiny_run: Path) -> None:
    for name in ("pre/A0", "fit/E", "fit/A"):
        final = load_checkpoint(tiny_run / f"{name}.pt")
        assert "optimizer" not in final and "scheduler" not in final
        assert final["epoch"] == 1 and len(final["history"]) == 1
        assert not (tiny_run / f"{name}_last.pt").exists()  # kept only while the training runs
