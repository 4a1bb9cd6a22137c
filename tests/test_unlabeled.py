"""Videos nobody labeled as a first-class input, test sets held out of class folders, and the stages'
behaviour when the labeled set is too thin for f_A's temperature."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from fgar_cli.config import DataPaths
from fgar_cli.data.adapters import read_dataset
from fgar_cli.data.index import NO_LABEL, NO_TRUTH, load_index
from fgar_cli.data.run_data import load_run_data
from fgar_cli.data.splits import load_split, make_split
from fgar_cli.method.pseudolabels import read_pseudo_labels

from helpers import fgar, fit_labeled, write_video

# --------------------------------------------------------------------------- adapters


def test_list_lines_without_a_label_are_unlabeled_videos(tmp_path: Path) -> None:
    (tmp_path / "train.txt").write_text("a.mp4 jump\nb.mp4 spin\nc.mp4\nd.mp4 -1\n")
    (tmp_path / "more.csv").write_text("path,label\ne.mp4,\nf.mp4,spin\n")
    index = read_dataset("list", tmp_path, [tmp_path / "train.txt", tmp_path / "more.csv"])
    assert index.class_names == ["jump", "spin"]  # the unlabeled lines add no class
    by_id = index.by_id()
    for vid in ("c.mp4", "d.mp4", "e.mp4"):
        assert (by_id[vid].label, by_id[vid].subset) == (NO_LABEL, "unlabeled")
    assert (by_id["f.mp4"].label, by_id["f.mp4"].subset) == (1, "train")


@pytest.mark.parametrize("layout", ["flat", "split"])
def test_an_unlabeled_folder_beside_the_class_folders(tmp_path: Path, layout: str) -> None:
    top = tmp_path / "train" if layout == "split" else tmp_path
    for name in ("jump/a.mp4", "spin/b.mp4", "unlabeled/c.mp4", "unlabeled/d.mp4"):
        (top / name).parent.mkdir(parents=True, exist_ok=True)
        (top / name).write_bytes(b"")
    if layout == "split":
        (tmp_path / "test" / "jump").mkdir(parents=True)
        (tmp_path / "test" / "jump" / "t.mp4").write_bytes(b"")
        (tmp_path / "unlabeled").mkdir()
        (tmp_path / "unlabeled" / "e.mp4").write_bytes(b"")  # beside train/ and test/ as well
    index = read_dataset("folder", tmp_path)
    assert index.class_names == ["jump", "spin"]
    unlabeled = sorted(e.id for e in index.subset("unlabeled"))
    prefix = "train/" if layout == "split" else ""
    expected = [f"{prefix}unlabeled/c.mp4", f"{prefix}unlabeled/d.mp4"] + (["unlabeled/e.mp4"] if prefix else [])
    assert unlabeled == sorted(expected)
    assert all(e.label == NO_LABEL for e in index.subset("unlabeled"))
    assert [e.id for e in index.subset("test")] == (["test/jump/t.mp4"] if layout == "split" else [])


def test_a_class_named_unlabeled_in_the_classes_file_stays_a_class(tmp_path: Path) -> None:
    for name in ("jump/a.mp4", "unlabeled/b.mp4"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "classes.txt").write_text("jump\nunlabeled\n")
    index = read_dataset("folder", tmp_path, classes_file=tmp_path / "classes.txt")
    assert not index.subset("unlabeled") and index.by_id()["unlabeled/b.mp4"].label == 1


def test_the_index_refuses_a_labeled_subset_without_a_label(tmp_path: Path, cli) -> None:
    entries = [{"id": "a", "path": "a.mp4", "label": -1, "subset": "train"}]
    payload = {"schema": "fgar.index", "schema_version": 1, "root": str(tmp_path), "class_names": ["x"]}
    (tmp_path / "index.json").write_text(json.dumps({**payload, "entries": entries}))
    result = cli(["data", "inspect", tmp_path / "index.json"])
    assert result.code == 1
    result.error_line("index.json", "entry 0 ('a')", "subset 'unlabeled'")


# --------------------------------------------------------------------------- splits


def _index_with_unlabeled(tmp_path: Path, per_class: int = 8) -> Path:
    lines = [f"c{c}_{i}.mp4 {c}" for c in range(3) for i in range(per_class)] + [f"u{i}.mp4" for i in range(5)]
    (tmp_path / "all.txt").write_text("\n".join(lines) + "\n")
    return tmp_path / "all.txt"


def test_unlabeled_entries_join_the_unlabeled_set_and_a_test_fraction_is_held_out_per_class(tmp_path: Path) -> None:
    index = read_dataset("list", tmp_path, [_index_with_unlabeled(tmp_path)])
    splits = [make_split(index, 0.5, seed, test_fraction=0.25) for seed in (0, 1)]
    for split in splits:
        assert {f"u{i}.mp4" for i in range(5)} <= set(split.unlabeled)
        labels_of = {e.id: e.label for e in index.entries}
        for name in ("labeled", "test"):
            assert all(labels_of[v] != NO_LABEL for v in getattr(split, name))
        test_per_class = np.bincount([labels_of[v] for v in split.test], minlength=3)
        assert test_per_class.tolist() == [2, 2, 2]  # round(0.25 * 8)
        labeled_per_class = np.bincount([labels_of[v] for v in split.labeled], minlength=3)
        assert labeled_per_class.tolist() == [3, 3, 3]  # round(0.5 * 6): of the 6 left to train on
        assert len(split.unlabeled) == 3 * 3 + 5
        assert not set(split.test) & (set(split.labeled) | set(split.unlabeled))
    assert splits[0].test == splits[1].test  # every seed tests on the same videos
    assert splits[0].labeled != splits[1].labeled


def test_split_cli_test_fraction_refused_when_the_index_has_a_test_set(tiny_run: Path, tmp_path: Path, cli) -> None:
    args = ["data", "split", "--index", tiny_run / "index.json", "--fraction", "0.5", "--test-fraction", "0.2"]
    result = cli([*args, "--out", tmp_path / "s.json"])
    assert result.code == 1
    result.error_line("index.json", "already has", "test videos")
    assert not (tmp_path / "s.json").exists()


def test_split_warns_about_classes_with_one_labeled_clip(tiny_run: Path, tmp_path: Path, cli) -> None:
    args = ["data", "split", "--index", tiny_run / "index.json", "--fraction", "0.01", "--out", tmp_path / "thin.json"]
    result = cli(args)
    assert result.code == 0
    assert "3 classes have fewer than two labeled clips" in result.err and "--tau" in result.err
    assert len(load_split(tmp_path / "thin.json").labeled) == 3


def test_run_data_knows_no_truth_for_unlabeled_entries(tmp_path: Path) -> None:
    from fgar_cli.data.index import save_index
    from fgar_cli.data.splits import save_split

    index = read_dataset("list", tmp_path, [_index_with_unlabeled(tmp_path, per_class=2)])
    save_index(index, tmp_path / "index.json")
    save_split(make_split(index, 0.5, 0, test_fraction=0.0), tmp_path / "split.json")
    data = load_run_data(DataPaths(index=str(tmp_path / "index.json"), split=str(tmp_path / "split.json")))
    truth = dict(zip(data.split.unlabeled, data.truth(data.split.unlabeled).tolist(), strict=True))
    assert [truth[f"u{i}.mp4"] for i in range(5)] == [NO_TRUTH] * 5  # nobody labeled them
    assert {v: t for v, t in truth.items() if v.startswith("c")} == {  # the split hid these labels
        v: int(v[1]) for v in truth if v.startswith("c")
    }
    assert len(truth) == 3 + 5


# --------------------------------------------------------------------------- too few labels for tau


@pytest.fixture(scope="module")
def thin_split(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("thin") / "thin.json"
    assert fgar("data", "split", "--index", tiny_run / "index.json", "--fraction", "0.01", "--out", path) == 0
    return path


def test_pseudolabel_refuses_a_thin_split_before_embedding(tiny_run: Path, thin_split: Path, tmp_path: Path, cli):
    ckpts = ["--ckpt-a", tiny_run / "fit" / "A.pt", "--ckpt-e", tiny_run / "fit" / "E.pt"]
    result = cli(["pseudolabel", *ckpts, "--split", thin_split, "--out-dir", tmp_path / "pl"])
    assert result.code == 1
    result.error_line("thin.json", "cannot fit f_A's temperature", "--tau")
    assert "unlabeled clips" not in result.out + result.err  # no embedding progress before the error
    assert not (tmp_path / "pl" / "pseudo.h5").exists()


def test_evaluate_writes_f_E_metrics_when_tau_cannot_be_fitted(tiny_run: Path, thin_split: Path, tmp_path: Path, cli):
    ckpts = ["--ckpt-a", tiny_run / "fit" / "A.pt", "--ckpt-e", tiny_run / "fit" / "E.pt"]
    result = cli(["evaluate", *ckpts, "--split", thin_split, "--out-dir", tmp_path / "ev"])
    assert result.code == 0, result.out + result.err
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert "action" in metrics and "alignability" not in metrics and "combined" not in metrics
    assert "cannot fit f_A's temperature" in metrics["alignability_skipped"]
    assert "writing f_E's metrics only" in result.err
    # the same f_E, evaluated with tau given, scores the same test clips the same way
    again = cli(["evaluate", *ckpts, "--split", thin_split, "--tau", "0.5", "--out-dir", tmp_path / "ev2"])
    assert again.code == 0
    metrics_tau = json.loads((tmp_path / "ev2" / "metrics.json").read_text())
    assert metrics_tau["action"]["top1"] == metrics["action"]["top1"] and "combined" in metrics_tau


# --------------------------------------------------------------------------- a newcomer's own videos, end to end


def test_own_videos_from_class_folders_to_predictions(tiny_run: Path, tmp_path: Path, cli) -> None:
    """Class folders plus an unlabeled/ folder of MP4s -> index -> split with a test fraction ->
    fit-labeled -> selftrain -> predict on new files -> a CSV of class names."""
    source = tiny_run / "data"
    vocab = json.loads((source / "Diving48_vocab.json").read_text())
    records = json.loads((source / "Diving48_V2_train.json").read_text())
    records += json.loads((source / "Diving48_V2_test.json").read_text())
    own, seen = tmp_path / "my_videos", {}
    for record in records:
        name = "_".join(vocab[record["label"]])
        count = seen[name] = seen.get(name, 0) + 1
        folder = own / (name if count <= 5 else "unlabeled")  # 5 labeled videos per class, the rest unlabeled
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(source / "rgb" / f"{record['vid_name']}.mp4", folder / f"{record['vid_name']}.mp4")
    unlabeled_files = sorted((own / "unlabeled").iterdir())
    assert len(unlabeled_files) == 3 * (6 - 5)

    assert cli(["data", "index", "--format", "folder", "--root", own, "--out", tmp_path / "index.json"]).code == 0
    index = load_index(tmp_path / "index.json")
    assert len(index.subset("unlabeled")) == len(unlabeled_files) and not index.subset("test")
    split = ["--index", tmp_path / "index.json", "--fraction", "0.5", "--test-fraction", "0.2"]
    assert cli(["data", "split", *split, "--out", tmp_path / "split.json"]).code == 0
    s = load_split(tmp_path / "split.json")
    assert len(s.test) == 3 and len(s.labeled) == 6  # round(0.2 * 5) = 1 test, round(0.5 * 4) = 2 labeled
    assert {e.id for e in index.subset("unlabeled")} <= set(s.unlabeled)

    run = tmp_path
    assert fit_labeled(run, run / "split.json", run / "fit", 1, 1) == 0
    st = [
        "selftrain",
        *["--ckpt-a", run / "fit" / "A.pt", "--ckpt-e", run / "fit" / "E.pt"],
        *["--theta", "0", "--rounds", "1", "--epochs", "1", "--out-dir", run / "st"],
    ]
    result = cli(st)
    assert result.code == 0, result.out + result.err
    pl = read_pseudo_labels(run / "st" / "round_1" / "pseudo.h5")
    assert pl["accepted"].all() and len(pl["video_ids"]) == len(s.unlabeled)
    truth = np.asarray(pl["truth"])
    nobody = np.array([v.startswith("unlabeled/") for v in pl["video_ids"]])
    assert (truth[nobody] == NO_TRUTH).all() and (truth[~nobody] >= 0).all()
    summary = json.loads((run / "st" / "selftrain.json").read_text())
    round_1 = summary["rounds"][0]
    assert round_1["round_pl_count"] == len(s.unlabeled)  # the unlabeled/ clips are pseudo-labeled too
    expected = float((pl["label"][~nobody] == truth[~nobody]).mean())  # ...but only known truth is scored
    assert round_1["round_pl_accuracy"] == pytest.approx(expected)

    new = [write_video(tmp_path / "new" / f"clip{i}.mp4", num_frames=12) for i in range(2)]
    out = tmp_path / "predictions.csv"
    inputs = [arg for video in new for arg in ("--input", video)]
    result = cli(["predict", "--ckpt-e", run / "st" / "E.pt", *inputs, "--out", out, "--top-k", "2"])
    assert result.code == 0, result.out + result.err
    rows = list(csv.DictReader(out.open()))
    assert [Path(r["path"]).name for r in rows] == ["clip0.mp4", "clip1.mp4"]
    class_names = {"_".join(v) for v in vocab}  # the folder names are the classes the user sees
    for row in rows:
        assert row["error"] == "" and {row["class_1"], row["class_2"]} <= class_names
        assert float(row["probability_1"]) >= float(row["probability_2"])
