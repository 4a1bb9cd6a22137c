"""Dataset adapters on tiny fixtures in the official layouts, good and bad."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from fgar_cli.data.adapters import measure_entries, read_dataset, read_finegym_categories
from fgar_cli.data.safe_pickle import load_pickle
from fgar_cli.errors import FgarError

from helpers import (
    evil_pickle,
    make_diving48,
    make_finediving,
    make_finegym,
    write_frame_folder,
    write_video,
)

# --------------------------------------------------------------------------- Diving48


def test_diving48_reads_names_subsets_and_ranges(tmp_path: Path) -> None:
    root = make_diving48(tmp_path / "d48", train=[("a", 0, 0, 6), ("b", 2, 1, 4)], test=[("c", 1, 0, 6)], videos=False)
    index = read_dataset("diving48", root)
    assert index.class_names == ["Back_00som_05Twis_FREE", "Back_01som_05Twis_FREE", "Back_02som_05Twis_FREE"]
    by_id = index.by_id()
    assert [(e.id, e.subset, e.label) for e in index.entries] == [
        ("a", "train", 0),
        ("b", "train", 2),
        ("c", "test", 1),
    ]
    assert by_id["b"].path == "rgb/b.mp4" and (by_id["b"].start_frame, by_id["b"].end_frame) == (1, 4)
    assert index.resolve(by_id["b"]) == root.resolve() / "rgb" / "b.mp4"


def test_diving48_annotations_elsewhere(tmp_path: Path) -> None:
    ann = make_diving48(tmp_path / "ann", train=[("a", 0, 0, 6)], test=[], videos=False)
    (tmp_path / "videos").mkdir()
    index = read_dataset("diving48", tmp_path / "videos", [ann / "Diving48_V2_train.json"])
    assert index.root == str((tmp_path / "videos").resolve()) and [e.id for e in index.entries] == ["a"]


def test_diving48_unknown_label_names_file_and_entry(tmp_path: Path) -> None:
    root = make_diving48(tmp_path / "d48", train=[("a", 0, 0, 6), ("bad_vid", 99, 0, 6)], test=[], videos=False)
    with pytest.raises(FgarError) as err:
        read_dataset("diving48", root)
    message = str(err.value)
    assert "Diving48_V2_train.json" in message and "entry 1" in message and "bad_vid" in message
    assert "99" in message and "\n" not in message


def test_diving48_malformed_json_is_one_line_error(tmp_path: Path) -> None:
    root = make_diving48(tmp_path / "d48", train=[("a", 0, 0, 6)], test=[], videos=False)
    (root / "Diving48_V2_train.json").write_text('[{"vid_name": "a", "label": 0,')
    with pytest.raises(FgarError, match=r"Diving48_V2_train.json: malformed JSON at line 1") as err:
        read_dataset("diving48", root)
    assert "\n" not in str(err.value)


def test_diving48_missing_vocab_is_an_error(tmp_path: Path) -> None:
    root = make_diving48(tmp_path / "d48", train=[("a", 0, 0, 6)], test=[], videos=False)
    (root / "Diving48_vocab.json").unlink()
    with pytest.raises(FgarError, match="Diving48_vocab.json: annotation file not found"):
        read_dataset("diving48", root)


def test_duplicate_ids_are_an_error(tmp_path: Path) -> None:
    root = make_diving48(tmp_path / "d48", train=[("a", 0, 0, 6)], test=[("a", 1, 0, 6)], videos=False)
    with pytest.raises(FgarError, match="'a' appears twice"):
        read_dataset("diving48", root)


# --------------------------------------------------------------------------- counting frames


def test_measure_skips_missing_and_empty_and_clips_ranges(tmp_path: Path) -> None:
    root = make_diving48(
        tmp_path / "d48",
        train=[("full", 0, 0, 6), ("long_range", 1, 2, 50), ("missing", 1, 0, 6), ("empty", 2, 0, 6)],
        test=[("past_end", 0, 8, 12), ("truncated", 2, 0, 6)],
        frames=6,
    )
    (root / "rgb" / "missing.mp4").unlink()
    (root / "rgb" / "empty.mp4").write_bytes(b"")
    whole = (root / "rgb" / "truncated.mp4").read_bytes()
    (root / "rgb" / "truncated.mp4").write_bytes(whole[: len(whole) // 2])
    seen: list[str] = []
    index = measure_entries(read_dataset("diving48", root), on_done=lambda e: seen.append(e.id))
    assert sorted(seen) == ["empty", "full", "long_range", "missing", "past_end", "truncated"]
    by_id = index.by_id()
    assert sorted(by_id) == ["full", "long_range"]
    assert (by_id["full"].end_frame, by_id["full"].num_frames) == (6, 6)
    # [2, 50) on a 6-frame video is clipped to the frames that decode: [2, 6)
    assert (by_id["long_range"].start_frame, by_id["long_range"].end_frame, by_id["long_range"].num_frames) == (2, 6, 4)
    skipped = {Path(s["path"]).name: s["reason"] for s in index.skipped}
    assert sorted(skipped) == ["empty.mp4", "missing.mp4", "past_end.mp4", "truncated.mp4"]
    assert all(reason and "\n" not in reason for reason in skipped.values())
    assert "no decodable frames" in skipped["past_end.mp4"]


def test_measure_counts_frame_folders(tmp_path: Path) -> None:
    root = make_finediving(tmp_path / "fd", {("ev", 1): "101b", ("ev", 2): "405c"}, [("ev", 1)], [("ev", 2)])
    write_frame_folder(root / "ev" / "2", 7, size=16)
    index = measure_entries(read_dataset("finediving", root))
    assert {e.id: e.num_frames for e in index.entries} == {"ev/1": 4, "ev/2": 7}
    assert index.skipped == []


# --------------------------------------------------------------------------- FineGym


def test_finegym_default_lists_and_categories(tmp_path: Path) -> None:
    root = make_finegym(
        tmp_path / "gym",
        "gym99",
        train=[("vid_E_1_2_A_3_4", 3), ("vid_E_1_2_A_5_6", 0)],
        val=[("vid_E_1_2_A_7_8", 98)],
        num_classes=99,
        videos=False,
    )
    index = read_dataset("finegym", root)
    assert len(index.class_names) == 99 and index.class_names[3] == "(VT) element 3; tucked"
    assert [(e.id, e.label, e.subset, e.path) for e in index.entries] == [
        ("vid_E_1_2_A_3_4", 3, "train", "vid_E_1_2_A_3_4.mp4"),
        ("vid_E_1_2_A_5_6", 0, "train", "vid_E_1_2_A_5_6.mp4"),
        ("vid_E_1_2_A_7_8", 98, "test", "vid_E_1_2_A_7_8.mp4"),
    ]


def test_finegym_annotations_pick_a_list(tmp_path: Path) -> None:
    root = make_finegym(tmp_path / "gym", "gym288", train=[("t1", 287)], val=[("v1", 5)], num_classes=288, videos=False)
    index = read_dataset("finegym", root, [root / "gym288_val_element.txt"])
    assert [(e.id, e.label, e.subset) for e in index.entries] == [("v1", 5, "test")]
    assert len(index.class_names) == 288


def test_finegym_unknown_label_names_line(tmp_path: Path) -> None:
    root = make_finegym(tmp_path / "gym", "gym99", train=[("ok", 1), ("bad", 99)], val=[], num_classes=99, videos=False)
    with pytest.raises(FgarError, match=r"gym99_train_element_v1.0.txt: line 2: unknown label '99' for 'bad'"):
        read_dataset("finegym", root)


def test_finegym_missing_categories(tmp_path: Path) -> None:
    root = make_finegym(tmp_path / "gym", "gym99", train=[("a", 1)], val=[], num_classes=99, videos=False)
    (root / "gym99_categories.txt").unlink()
    with pytest.raises(FgarError, match="gym99_categories.txt: categories file not found"):
        read_dataset("finegym", root)


def test_finegym_categories_with_a_gap(tmp_path: Path) -> None:
    path = tmp_path / "gym99_categories.txt"
    path.write_text("Clabel: 0; set: 1; Glabel: 1; a\nClabel: 2; set: 1; Glabel: 2; b\n")
    with pytest.raises(FgarError, match="0..N-1"):
        read_finegym_categories(path)
    path.write_text("Clabel: 0; set: 1; Glabel: 1; a\nnot a category line\n")
    with pytest.raises(FgarError, match="line 2"):
        read_finegym_categories(path)


# --------------------------------------------------------------------------- FineDiving


def test_finediving_classes_in_sorted_order_and_frame_folders(tmp_path: Path) -> None:
    actions = {
        ("FINAWorldChampionships2019_Women10m_final_r1", 0): "407c",
        ("Olympics_r2", 3): "105b",
        ("Olympics_r2", 4): "407c",
        ("Olympics_r2", 5): "5253b",
    }
    root = make_finediving(
        tmp_path / "fd",
        actions,
        train=[("Olympics_r2", 3), ("Olympics_r2", 4)],
        test=[("FINAWorldChampionships2019_Women10m_final_r1", 0)],
        frames=False,
    )
    index = read_dataset("finediving", root)
    assert index.class_names == ["105b", "407c", "5253b"]  # from the whole annotation, sorted
    assert [(e.id, e.path, e.label, e.subset) for e in index.entries] == [
        ("Olympics_r2/3", "Olympics_r2/3", 0, "train"),
        ("Olympics_r2/4", "Olympics_r2/4", 1, "train"),
        ("FINAWorldChampionships2019_Women10m_final_r1/0", "FINAWorldChampionships2019_Women10m_final_r1/0", 1, "test"),
    ]


def test_finediving_split_key_without_annotation(tmp_path: Path) -> None:
    root = make_finediving(tmp_path / "fd", {("ev", 1): "101b"}, train=[("ev", 1), ("ev", 9)], test=[], frames=False)
    with pytest.raises(FgarError, match=r"train_split.pkl: entry 1 \('ev', 9\) has no annotation"):
        read_dataset("finediving", root)


def test_finediving_code_in_pickle_is_refused_and_not_run(tmp_path: Path) -> None:
    root = make_finediving(tmp_path / "fd", {("ev", 1): "101b"}, train=[("ev", 1)], test=[], frames=False)
    marker = tmp_path / "pwned"
    evil_pickle(root / "Annotations" / "fine-grained_annotation_aqa.pkl", marker)
    with pytest.raises(FgarError) as err:
        read_dataset("finediving", root)
    assert "fine-grained_annotation_aqa.pkl" in str(err.value) and "posix.system" in str(err.value)
    assert not marker.exists()


# --------------------------------------------------------------------------- safe_pickle


def test_evil_fixture_really_runs_code_with_plain_pickle(tmp_path: Path) -> None:
    # Guards the test above: the fixture must be a real attack, or refusing it proves nothing.
    marker = tmp_path / "ran"
    pickle.loads(evil_pickle(tmp_path / "e.pkl", marker).read_bytes())
    assert marker.exists()


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_safe_pickle_loads_plain_data_and_numpy(tmp_path: Path, protocol: int) -> None:
    data = {
        ("ev", 3): ["407c", np.float64(81.6), 3.2, np.array([12, 40]), np.arange(5, dtype=np.int32)],
        "strings": np.array(["a", "bc"]),
        "objects": np.array([1, "x"], dtype=object),
        "set": {1, 2},
    }
    path = tmp_path / "ok.pkl"
    path.write_bytes(pickle.dumps(data, protocol=protocol))
    loaded = load_pickle(path)
    assert loaded[("ev", 3)][0] == "407c" and loaded[("ev", 3)][1] == 81.6
    assert loaded[("ev", 3)][4].tolist() == [0, 1, 2, 3, 4] and loaded[("ev", 3)][4].dtype == np.int32
    assert loaded["strings"].tolist() == ["a", "bc"] and loaded["objects"].tolist() == [1, "x"]
    assert loaded["set"] == {1, 2}


@pytest.mark.parametrize("payload", [b"cbuiltins\neval\n(S'1+1'\ntR.", b"csubprocess\ncall\n(S'ls'\ntR."])
def test_safe_pickle_refuses_other_globals(tmp_path: Path, payload: bytes) -> None:
    path = tmp_path / "bad.pkl"
    path.write_bytes(payload)
    with pytest.raises(FgarError, match=r"bad.pkl: refusing to unpickle global '(builtins.eval|subprocess.call)'"):
        load_pickle(path)


def test_safe_pickle_truncated_file(tmp_path: Path) -> None:
    path = tmp_path / "cut.pkl"
    path.write_bytes(pickle.dumps({"a": list(range(100))})[:20])
    with pytest.raises(FgarError, match="cut.pkl: not a readable pickle"):
        load_pickle(path)


# --------------------------------------------------------------------------- lists and CSV


def test_list_with_int_labels_and_subsets_from_file_names(tmp_path: Path) -> None:
    (tmp_path / "train_list.txt").write_text("a.mp4 0\nsub/b.mp4 2\n")
    (tmp_path / "val_list.txt").write_text("c.mp4 120 1\n")  # mmaction2 rawframes: path num_frames label
    index = read_dataset("list", tmp_path, [tmp_path / "train_list.txt", tmp_path / "val_list.txt"])
    assert index.class_names == ["0", "1", "2"]
    assert [(e.path, e.label, e.subset) for e in index.entries] == [
        ("a.mp4", 0, "train"),
        ("sub/b.mp4", 2, "train"),
        ("c.mp4", 1, "test"),
    ]


def test_list_with_class_names_and_classes_file(tmp_path: Path) -> None:
    (tmp_path / "train.txt").write_text("a.mp4 jump\nb.mp4 spin\n")
    (tmp_path / "classes.txt").write_text("spin\njump\nfall\n")
    index = read_dataset("list", tmp_path, [tmp_path / "train.txt"], tmp_path / "classes.txt")
    assert index.class_names == ["spin", "jump", "fall"] and [e.label for e in index.entries] == [1, 0]
    without = read_dataset("list", tmp_path, [tmp_path / "train.txt"])
    assert without.class_names == ["jump", "spin"] and [e.label for e in without.entries] == [0, 1]


def test_list_unknown_class_name_names_line(tmp_path: Path) -> None:
    (tmp_path / "train.txt").write_text("a.mp4 jump\nb.mp4 cartwheel\n")
    (tmp_path / "classes.json").write_text(json.dumps({"jump": 0, "spin": 1}))
    with pytest.raises(FgarError, match=r"train.txt: line 2: unknown label 'cartwheel'"):
        read_dataset("list", tmp_path, [tmp_path / "train.txt"], tmp_path / "classes.json")


def test_list_int_label_out_of_range_with_classes(tmp_path: Path) -> None:
    (tmp_path / "train.txt").write_text("a.mp4 0\nb.mp4 7\n")
    (tmp_path / "classes.txt").write_text("spin\njump\n")
    with pytest.raises(FgarError, match=r"train.txt: line 2: unknown label '7'"):
        read_dataset("list", tmp_path, [tmp_path / "train.txt"], tmp_path / "classes.txt")


def test_csv_with_header_and_split_column(tmp_path: Path) -> None:
    (tmp_path / "all.csv").write_text("path,label,split\nx/a.mp4,swing,train\nx/b.mp4,jump,val\n")
    index = read_dataset("list", tmp_path, [tmp_path / "all.csv"])
    assert index.class_names == ["jump", "swing"]
    assert [(e.path, e.label, e.subset) for e in index.entries] == [("x/a.mp4", 1, "train"), ("x/b.mp4", 0, "test")]


def test_kinetics_csv(tmp_path: Path) -> None:
    (tmp_path / "kinetics_400_val.csv").write_text(
        "label,youtube_id,time_start,time_end,split\nabseiling,--07WQ2iBlw,1,11,val\n"
    )
    index = read_dataset("list", tmp_path, [tmp_path / "kinetics_400_val.csv"])
    assert [(e.path, e.subset) for e in index.entries] == [("--07WQ2iBlw_000001_000011.mp4", "test")]


def test_list_mixing_ids_and_names_needs_classes(tmp_path: Path) -> None:
    (tmp_path / "train.txt").write_text("a.mp4 jump\nb.mp4 3\n")
    with pytest.raises(FgarError, match="line 2: label '3' is a class id"):
        read_dataset("list", tmp_path, [tmp_path / "train.txt"])


# --------------------------------------------------------------------------- folder per class


def test_folder_per_class_with_videos_and_frame_folders(tmp_path: Path) -> None:
    write_video(tmp_path / "jump" / "j1.mp4", 3)
    write_frame_folder(tmp_path / "spin" / "s1", 2, size=16)
    (tmp_path / "spin" / "notes.txt").write_text("not a video")
    index = measure_entries(read_dataset("folder", tmp_path))
    assert index.class_names == ["jump", "spin"]
    assert [(e.id, e.label, e.num_frames) for e in index.entries] == [("jump/j1.mp4", 0, 3), ("spin/s1", 1, 2)]


def test_folder_split_layout(tmp_path: Path) -> None:
    for subset in ("train", "test"):
        (tmp_path / subset / "jump").mkdir(parents=True)
        (tmp_path / subset / "jump" / f"{subset}.mp4").write_bytes(b"")
    index = read_dataset("folder", tmp_path)
    assert index.class_names == ["jump"]
    assert [(e.path, e.subset) for e in index.entries] == [
        ("test/jump/test.mp4", "test"),
        ("train/jump/train.mp4", "train"),
    ]


def test_folder_unknown_class_with_classes_file(tmp_path: Path) -> None:
    (tmp_path / "videos" / "cartwheel").mkdir(parents=True)
    (tmp_path / "videos" / "cartwheel" / "a.mp4").write_bytes(b"")
    (tmp_path / "classes.txt").write_text("jump\n")
    with pytest.raises(FgarError, match="unknown class folder 'cartwheel'"):
        read_dataset("folder", tmp_path / "videos", classes_file=tmp_path / "classes.txt")


def test_missing_root_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FgarError, match="dataset root folder not found"):
        read_dataset("folder", tmp_path / "nope")
