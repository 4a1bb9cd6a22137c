"""Sequence inputs: the .ts reader, read_sequence on every file type, missing values and channel
statistics, `fgar data index --format ts|npz`, and splits that never divide a group."""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from pathlib import Path

import h5py
import numpy as np
import pytest

from fgar_cli.data import sequences
from fgar_cli.data.index import NO_LABEL, DatasetIndex, VideoEntry, load_index
from fgar_cli.data.sequences import (
    FEATURES_SCHEMA,
    SequenceReadError,
    channel_stats,
    fill_missing,
    parse_ts,
    read_sequence,
)
from fgar_cli.data.splits import held_out_for_test, labeled_count, load_split, make_split
from fgar_cli.data.video import VideoDecodeError
from fgar_cli.errors import FgarError

from conftest import Cli
from helpers import write_npz_folder, write_ts

NAN = float("nan")


def one_line_error(exc: pytest.ExceptionInfo[BaseException], path: Path, *fragments: str) -> str:
    """The error is an FgarError on one line that names the file and holds every fragment."""
    message = str(exc.value)
    assert isinstance(exc.value, FgarError) and "\n" not in message, message
    assert message.startswith(str(path)), message
    for fragment in fragments:
        assert fragment in message, message
    return message


# --------------------------------------------------------------------------- parse_ts


def test_parse_univariate_with_string_labels(tmp_path: Path) -> None:
    path = write_ts(
        tmp_path / "Toy_TRAIN.ts",
        [[[1, 2, 3]], [[4, 5, 6]], [[7, 8, 9]]],
        ["walk-fast", "1.5", "walk-fast"],
        class_labels=["walk-fast", "1.5", "sit"],
    )
    ts = parse_ts(path)
    assert (ts.problem_name, ts.dims, ts.univariate, ts.equal_length, ts.series_length) == ("Toy", 1, True, True, 3)
    assert ts.class_labels == ["walk-fast", "1.5", "sit"] and ts.labels == ["walk-fast", "1.5", "walk-fast"]
    assert [s.shape for s in ts.series] == [(3, 1)] * 3 and all(s.dtype == np.float32 for s in ts.series)
    np.testing.assert_array_equal(ts.series[1][:, 0], [4, 5, 6])
    assert ts.lines == [11, 12, 13]  # a comment line, 8 header lines and @data come first


def test_parse_multivariate_comments_and_case_insensitive_tags(tmp_path: Path) -> None:
    path = tmp_path / "m.ts"
    path.write_text(
        "# a comment\n\n@PROBLEMNAME Motion\n@timestamps FALSE\n@Univariate false\n@dimensions 2\n"
        "@equallength true\n@serieslength 2\n@classlabel true up down\n@futureTag whatever\n@DATA\n"
        "1,2:10,20:up\n\n# between cases\n 3.5, -4e-1 : 30,40 : down \n"
    )
    ts = parse_ts(path)
    assert ts.problem_name == "Motion" and ts.dims == 2 and not ts.univariate
    np.testing.assert_array_equal(ts.series[0], [[1, 10], [2, 20]])
    np.testing.assert_allclose(ts.series[1], [[3.5, 30], [-0.4, 40]])
    assert ts.labels == ["up", "down"]


def test_parse_unequal_lengths_pads_with_nan(tmp_path: Path) -> None:
    path = write_ts(tmp_path / "u.ts", [[[1, 2, 3], [4, 5]], [[6], [7]]], ["a", "b"])
    ts = parse_ts(path)
    assert not ts.equal_length and ts.series_length is None
    assert ts.series[0].shape == (3, 2) and ts.series[1].shape == (1, 2)
    np.testing.assert_array_equal(ts.series[0], [[1, 4], [2, 5], [3, NAN]])


def test_parse_missing_values(tmp_path: Path) -> None:
    path = write_ts(tmp_path / "q.ts", [[[1, NAN, 3]]], ["a"])
    text = path.read_text().replace("1.0,?,3.0", "?,NaN,3.0")
    path.write_text(text)
    ts = parse_ts(path)
    assert ts.missing
    np.testing.assert_array_equal(ts.series[0][:, 0], [NAN, NAN, 3])


def test_parse_without_dimensions_header_takes_the_first_case(tmp_path: Path) -> None:
    path = write_ts(tmp_path / "d.ts", [[[1], [2], [3]], [[4], [5], [6]]], ["a", "a"], dimensions=False)
    assert parse_ts(path).dims == 3


HEADER = ["@problemName P", "@univariate false", "@dimensions 2", "@equalLength true", "@classLabel true a b"]


@pytest.mark.parametrize(
    ("lines", "fragments"),
    [
        (["@timeStamps true", *HEADER, "@data", "1:2:a"], ["line 2", "time stamps are not supported"]),
        (["@classLabel false", "@data", "1:2:a"], ["line 2", "no class labels"]),
        (["@targetLabel true", "@data", "1:2:1.5"], ["line 2", "regression"]),
        (["@problemName P", "@data", "1:2:a"], ["line 3", "no @classLabel"]),
        ([*HEADER, "@data", "1,2:3,4:a", "1,2:a"], ["line 9", "1 dimensions, expected 2"]),
        (["@classLabel true a", "@data", "1:2:a", "1:2:3:a"], ["line 5", "3 dimensions, expected 2"]),
        ([*HEADER, "@data", "1,2:3,4:c"], ["line 8", "label 'c' is not one of @classLabel (a b)"]),
        ([*HEADER, "@data", "1,x:3,4:a"], ["line 8", "dimension 1: 'x' is not a number"]),
        ([*HEADER, "@data", "1,,2:3,4,5:a"], ["line 8", "empty value"]),
        ([*HEADER, "@data", "1,2:3:a"], ["line 8", "dimension lengths 2/1", "@equalLength true"]),
        ([*HEADER, "@seriesLength 3", "@data", "1,2:3,4:a"], ["line 9", "@seriesLength 3"]),
        ([*HEADER, "@data", "1,inf:3,4:a"], ["line 8", "infinite"]),
        ([*HEADER, "@data", ":3,4:a"], ["line 8", "dimension 1 has no values"]),
        ([*HEADER, "@data", "(0,1),(1,2):(0,3):a"], ["line 8", "time stamps"]),
        ([*HEADER], ["no @data section"]),
        ([*HEADER, "@data", "# nothing"], ["no cases after @data"]),
        (["@problemName P", "1,2:a"], ["line 3", "expected a @header"]),
        (["@missing maybe"], ["line 2", "@missing must be true or false"]),
        (["@dimensions two"], ["line 2", "@dimensions must be a positive integer"]),
        (["@univariate true", "@dimensions 2", "@classLabel true a", "@data"], ["line 5", "@univariate true"]),
        (["@classLabel true a a"], ["line 2", "appears twice"]),
    ],
)
def test_parse_errors_name_the_file_and_line(tmp_path: Path, lines: list[str], fragments: list[str]) -> None:
    path = tmp_path / "bad.ts"
    path.write_text("# header\n" + "\n".join(lines) + "\n")
    with pytest.raises(SequenceReadError) as exc:
        parse_ts(path)
    one_line_error(exc, path, *fragments)
    assert isinstance(exc.value, VideoDecodeError)  # the training loop skips it like a bad video


@pytest.mark.parametrize(("content", "fragment"), [(None, "not found"), (b"\xff\xfe@data", "not a UTF-8")])
def test_parse_unreadable_file(tmp_path: Path, content: bytes | None, fragment: str) -> None:
    path = tmp_path / "x.ts"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(SequenceReadError) as exc:
        parse_ts(path)
    one_line_error(exc, path, fragment)
    assert not exc.value.problem.startswith(str(path))


# --------------------------------------------------------------------------- read_sequence


def test_read_ts_rows_parses_once_and_again_after_a_change(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_ts(tmp_path / "a.ts", [[[1, 2], [3, 4]], [[5, 6], [7, 8]]], ["a", "b"])
    calls: list[Path] = []
    real = sequences.parse_ts
    monkeypatch.setattr(sequences, "parse_ts", lambda p: calls.append(p) or real(p))
    np.testing.assert_array_equal(read_sequence(path, "1"), [[5, 7], [6, 8]])
    np.testing.assert_array_equal(read_sequence(path, "0"), [[1, 3], [2, 4]])
    assert len(calls) == 1
    write_ts(path, [[[9, 9], [9, 9]]], ["a"], class_labels=["a", "b"])
    stamp = path.stat().st_mtime_ns + 10**9  # a rewrite within the clock's resolution still counts
    os.utime(path, ns=(stamp, stamp))
    np.testing.assert_array_equal(read_sequence(path, "0"), [[9, 9], [9, 9]])
    assert len(calls) == 2
    for key in ("1", "x", ""):
        with pytest.raises(SequenceReadError) as exc:
            read_sequence(path, key)
        one_line_error(exc, path, f"no case '{key}'")


def write_store(path: Path, sequences_by_id: dict[str, np.ndarray], schema: str | None = FEATURES_SCHEMA) -> Path:
    """A feature store as docs/DATA.md describes it."""
    with h5py.File(path, "w") as f:
        if schema is not None:
            f.attrs["schema"] = schema
        f.attrs["input_dim"] = 3
        f.attrs["backbone"] = "test"
        for key, value in sequences_by_id.items():
            f.create_dataset(f"sequences/{key}", data=value)
    return path


def test_read_feature_store_keys_and_handles_per_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a = np.arange(12, dtype=np.float32).reshape(4, 3)
    path = write_store(tmp_path / "f.h5", {"clip/a": a, "b": np.ones((2, 3), np.float64)})
    np.testing.assert_array_equal(read_sequence(path, "clip/a"), a)
    first = sequences._h5_files[str(path.absolute())][1]
    assert read_sequence(path, "b").dtype == np.float32
    assert sequences._h5_files[str(path.absolute())][1] is first  # opened once
    monkeypatch.setattr(sequences, "_h5_pid", -1)  # as if this process were a freshly forked worker
    np.testing.assert_array_equal(read_sequence(path, "clip/a"), a)
    assert sequences._h5_files[str(path.absolute())][1] is not first and first in sequences._h5_inherited
    with pytest.raises(SequenceReadError) as exc:
        read_sequence(path, "missing")
    one_line_error(exc, path, "[missing]", "no dataset 'sequences/missing'")
    with pytest.raises(SequenceReadError) as exc:
        read_sequence(path, "b", input_dim=4)
    one_line_error(exc, path, "3 values per step, expected 4")


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (lambda p: write_store(p, {"a": np.ones((2, 3))}, schema="fgar.pseudo"), "not an fgar feature store"),
        (lambda p: p.write_bytes(b"not hdf5 at all"), "not a readable HDF5 file"),
        (lambda p: None, "file not found"),
    ],
)
def test_read_feature_store_errors(tmp_path: Path, make: object, fragment: str) -> None:
    path = tmp_path / "bad.h5"
    make(path)  # type: ignore[operator]
    with pytest.raises(SequenceReadError) as exc:
        read_sequence(path, "a")
    one_line_error(exc, path, fragment)


def test_read_feature_store_without_schema(tmp_path: Path) -> None:
    path = write_store(tmp_path / "plain.hdf5", {"a": np.ones((2, 3))}, schema=None)
    assert read_sequence(path, "a").shape == (2, 3)


def test_read_npy_and_npz(tmp_path: Path) -> None:
    np.save(tmp_path / "one.npy", np.array([1, 2, 3], dtype=np.int64))
    steps = read_sequence(tmp_path / "one.npy", "")
    assert steps.shape == (3, 1) and steps.dtype == np.float32
    np.savez(tmp_path / "single.npz", pose=np.zeros((5, 2)))
    assert read_sequence(tmp_path / "single.npz", "").shape == (5, 2)
    assert read_sequence(tmp_path / "single.npz", "pose").shape == (5, 2)
    np.savez(tmp_path / "two.npz", pose=np.zeros((5, 2)), imu=np.ones((7, 6)))
    assert read_sequence(tmp_path / "two.npz", "imu").shape == (7, 6)
    with pytest.raises(SequenceReadError) as exc:
        read_sequence(tmp_path / "two.npz", "")
    one_line_error(exc, tmp_path / "two.npz", "holds 2 arrays (pose, imu)", "FILE.npz:NAME")
    with pytest.raises(SequenceReadError) as exc:
        read_sequence(tmp_path / "two.npz", "depth")
    one_line_error(exc, tmp_path / "two.npz", "[depth]", "no array 'depth'")


@pytest.mark.parametrize(
    ("name", "content", "key", "fragment"),
    [
        ("cube.npy", np.zeros((2, 3, 4)), "", "a 3-D array of shape (2, 3, 4), expected (steps, values)"),
        ("empty.npy", np.zeros((0, 3)), "", "empty"),
        ("text.npy", np.array(["a", "b"]), "", "expected numbers"),
        ("inf.npy", np.array([[1.0, np.inf]]), "", "infinite"),
        ("huge.npy", np.array([[1e300]]), "", "beyond float32"),
        ("keyed.npy", np.zeros((2, 2)), "pose", "holds one array"),
        ("broken.npy", b"\x93NUMPY garbage", "", "not a readable .npy file"),
        ("broken.npz", b"PK not a zip", "", "not a readable .npz file"),
        ("objects.npz", {"seq": np.array([{"a": 1}], dtype=object)}, "", "not a readable .npz file"),
        ("clip.mp4", b"", "", "unknown sequence file type '.mp4'"),
        ("gone.npy", None, "", "file not found"),
    ],
)
def test_read_sequence_rejects_bad_arrays(tmp_path: Path, name: str, content: object, key: str, fragment: str) -> None:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif isinstance(content, dict):
        np.savez(path, **content)
    elif content is not None:
        np.save(path, content)
    with pytest.raises(SequenceReadError) as exc:
        read_sequence(path, key)
    one_line_error(exc, path, fragment)


# --------------------------------------------------------------------------- fill_missing, channel_stats


def test_fill_missing_interpolates_and_holds_the_edges() -> None:
    x = np.array([[NAN, 1, NAN], [2, NAN, NAN], [NAN, NAN, NAN], [4, 7, NAN], [NAN, NAN, NAN]], dtype=np.float32)
    filled = fill_missing(x)
    np.testing.assert_array_equal(filled[:, 0], [2, 2, 3, 4, 4])  # edges take the nearest value
    np.testing.assert_array_equal(filled[:, 1], [1, 3, 5, 7, 7])
    assert np.isnan(filled[:, 2]).all()  # no value at all: left for the model's normalisation
    assert np.isnan(x[0, 0]) and filled.dtype == np.float32  # the input is untouched
    np.testing.assert_array_equal(fill_missing(np.array([1.0, NAN, 5.0])), [[1], [3], [5]])


def test_channel_stats_by_hand() -> None:
    first = np.array([[1, 10, NAN, 5], [3, NAN, NAN, 5]], dtype=np.float32)
    second = np.array([[5, NAN, NAN, 5]], dtype=np.float32)
    mean, std = channel_stats([first, second])
    # channel 0: 1, 3, 5; channel 1: 10 alone (std 0 -> 1); channel 2: nothing; channel 3: constant
    np.testing.assert_allclose(mean, [3, 10, 0, 5])
    np.testing.assert_allclose(std, [math.sqrt(8 / 3), 1, 1, 1])
    assert mean.dtype == np.float64


def test_channel_stats_matches_pooled_numpy_and_survives_an_offset() -> None:
    rng = np.random.default_rng(0)
    arrays = [1e6 + rng.normal(size=(int(rng.integers(1, 40)), 3)) for _ in range(20)]
    for a in arrays:
        a[rng.random(a.shape) < 0.2] = np.nan
    pooled = np.concatenate(arrays)
    mean, std = channel_stats(iter(arrays))  # one pass over any iterable
    np.testing.assert_allclose(mean, np.nanmean(pooled, axis=0), rtol=1e-12)
    np.testing.assert_allclose(std, np.nanstd(pooled, axis=0), rtol=1e-9)


def test_channel_stats_refuses_mixed_widths_and_nothing() -> None:
    with pytest.raises(FgarError, match="3 and 2 values per step"):
        channel_stats([np.zeros((2, 3)), np.zeros((2, 2))])
    with pytest.raises(FgarError, match="at least one sequence"):
        channel_stats([])


# --------------------------------------------------------------------------- fgar data index --format ts


@pytest.fixture
def ts_root(tmp_path: Path) -> Path:
    root = tmp_path / "Toy"
    train = [[[i, i + 1, i + 2], [0, NAN, 1]] for i in range(12)]
    write_ts(root / "Toy_TRAIN.ts", train, ["run", "sit", "walk"] * 4, class_labels=["walk", "run", "sit"])
    write_ts(root / "Toy_TEST.ts", [[[1, 2], [3, 4]], [[5], [6]]], ["jump", "sit"], class_labels=["sit", "jump"])
    return root


def test_index_ts(ts_root: Path, tmp_path: Path, cli: Cli) -> None:
    out_path = tmp_path / "ts.json"
    result = cli(["data", "index", "--format", "ts", "--root", ts_root, "--out", out_path])
    assert result.code == 0, result.out + result.err
    assert "2 values per step" in result.out and "counting frames" not in result.err
    index = load_index(out_path)
    assert index.format == "ts" and index.input_dim == 2 and index.is_sequence
    assert index.class_names == ["walk", "run", "sit", "jump"]  # TRAIN's header, then TEST's new ones
    assert [e.id for e in index.entries[:2]] == ["Toy_TRAIN_0000", "Toy_TRAIN_0001"]
    first, last = index.entries[0], index.entries[-1]
    assert (first.path, first.key, first.label, first.num_frames, first.subset) == ("Toy_TRAIN.ts", "0", 1, 3, "train")
    assert (first.start_frame, first.end_frame) == (0, -1)
    assert (last.id, last.key, last.label, last.num_frames, last.subset) == ("Toy_TEST_0001", "1", 2, 1, "test")
    raw = json.loads(out_path.read_text())
    assert raw["input_dim"] == 2 and raw["entries"][0]["key"] == "0" and "group" not in raw["entries"][0]
    steps = read_sequence(index.resolve(first), first.key, index.input_dim)
    np.testing.assert_array_equal(fill_missing(steps), [[0, 0], [1, 0.5], [2, 1]])


def test_index_ts_single_file_is_train_and_files_must_agree(tmp_path: Path, cli: Cli) -> None:
    root = tmp_path / "one"
    write_ts(root / "recordings.ts", [[[1, 2]], [[3, 4]]], ["a", "b"])
    out_path = tmp_path / "one.json"
    assert cli(["data", "index", "--format", "ts", "--root", root, "--out", out_path]).code == 0
    index = load_index(out_path)
    assert [(e.id, e.subset) for e in index.entries] == [("recordings_0000", "train"), ("recordings_0001", "train")]
    assert index.input_dim == 1

    write_ts(root / "X_TRAIN.ts", [[[1, 2]]], ["a"])
    write_ts(root / "X_TEST.ts", [[[1, 2], [3, 4]]], ["a"])
    result = cli(["data", "index", "--format", "ts", "--root", root, "--out", tmp_path / "x.json"])
    assert result.code == 1
    result.error_line("X_TEST.ts", "2 dimensions", "X_TRAIN.ts has 1")
    bad = write_ts(tmp_path / "bad" / "B_TRAIN.ts", [[[1, 2]]], ["a"])
    bad.write_text(bad.read_text().replace("1.0,2.0:a", "1.0,oops:a"))
    result = cli(["data", "index", "--format", "ts", "--root", tmp_path / "bad", "--out", tmp_path / "b.json"])
    assert result.code == 1
    result.error_line(str(bad), "line 11", "'oops' is not a number")
    assert not (tmp_path / "b.json").exists()


# --------------------------------------------------------------------------- fgar data index --format npz


@pytest.fixture
def npz_root(tmp_path: Path) -> Path:
    root = tmp_path / "pose"
    rng = np.random.default_rng(1)
    arrays: dict[str, object] = {f"s{g}/c{c}.npy": rng.normal(size=(5 + c, 4)) for g in range(3) for c in range(2)}
    arrays["multi.npz"] = {"left": np.zeros((6, 4)), "right": np.ones((8, 4))}
    arrays["broken.npy"] = b"\x93NUMPY broken"
    arrays["narrow.npz"] = np.zeros((9, 3))
    labels: dict[str, object] = {name: ("wave", "clap")[int(name[-5])] for name in arrays if name.startswith("s")}
    labels.update({"multi.npz:left": "wave", "multi.npz:right": "", "broken.npy": "clap", "narrow.npz": "wave"})
    groups = {name: name.split("/")[0] for name in labels if name.startswith("s")} | {"multi.npz:left": "s9"}
    splits = {"s2/c0.npy": "test", "s2/c1.npy": "TEST"}
    write_npz_folder(root, arrays, labels, groups, splits)
    return root


def test_index_npz_skips_bad_files_and_keeps_groups(npz_root: Path, tmp_path: Path, cli: Cli) -> None:
    out_path = tmp_path / "npz.json"
    args = ["data", "index", "--format", "npz", "--root", npz_root, "--annotations", npz_root / "sequences.csv"]
    result = cli([*args, "--out", out_path])
    assert result.code == 0, result.out + result.err
    skipped = [line for line in result.out.splitlines() if line.startswith("skipped ")]
    assert len(skipped) == 2
    assert any(str(npz_root / "broken.npy") in line and "not a readable .npy file" in line for line in skipped)
    assert any(
        str(npz_root / "narrow.npz") in line and "3 values per step; most files have 4" in line for line in skipped
    )
    index = load_index(out_path)
    assert index.format == "npz" and index.input_dim == 4 and index.class_names == ["clap", "wave"]
    by_id = index.by_id()
    files = [f"s{g}/c{c}.npy" for g in range(3) for c in range(2)]
    assert sorted(by_id) == sorted([*files, "multi.npz:left", "multi.npz:right"])
    assert (by_id["s1/c1.npy"].num_frames, by_id["s1/c1.npy"].group, by_id["s1/c1.npy"].label) == (6, "s1", 0)
    assert by_id["s2/c0.npy"].subset == "test" and by_id["s0/c0.npy"].subset == "train"
    left, right = by_id["multi.npz:left"], by_id["multi.npz:right"]
    assert (left.path, left.key, left.group, left.num_frames) == ("multi.npz", "left", "s9", 6)
    assert (right.key, right.label, right.subset, right.num_frames) == ("right", NO_LABEL, "unlabeled", 8)
    assert {s["path"] for s in index.skipped} == {str(npz_root / "broken.npy"), str(npz_root / "narrow.npz")}

    strict = cli([*args, "--out", tmp_path / "strict.json", "--strict"])
    assert strict.code == 1
    strict.error_line(str(npz_root / "broken.npy"), "2 unreadable sequences", "--strict")
    assert not (tmp_path / "strict.json").exists()


@pytest.mark.parametrize(
    ("csv_text", "fragments"),
    [
        ("file,label\na.npy,x\n", ["line 1", "path,label[,group][,split]"]),
        ("path,label,subject\na.npy,x,1\n", ["line 1", "unknown: subject"]),
        ("path,label\na.mp4,x\n", ["line 2", "'a.mp4' is not a .npy or .npz file"]),
        ("path,label,split\na.npy,x,val\n", ["line 2", "split 'val' must be train or test"]),
        ("path,label\na.npy\n", ["line 2", "1 fields, the header has 2"]),
        ("path,label\n", ["lists no sequences"]),
    ],
)
def test_index_npz_csv_errors(tmp_path: Path, csv_text: str, fragments: list[str], cli: Cli) -> None:
    np.save(tmp_path / "a.npy", np.zeros((3, 2)))
    (tmp_path / "list.csv").write_text(csv_text)
    csv_path = tmp_path / "list.csv"
    result = cli(
        [
            "data",
            "index",
            "--format",
            "npz",
            "--root",
            tmp_path,
            "--annotations",
            csv_path,
            "--out",
            tmp_path / "i.json",
        ]
    )
    assert result.code == 1
    result.error_line(*fragments)


def test_index_npz_all_unreadable_and_outside_root(tmp_path: Path, cli: Cli) -> None:
    root = tmp_path / "root"
    csv_path = write_npz_folder(root, {"a.npy": b"junk"}, {"a.npy": "x"})
    args = ["data", "index", "--format", "npz", "--root", root, "--annotations", csv_path, "--out", tmp_path / "i.json"]
    cli(args).error_line(str(root / "a.npy"), "none of the 1 sequences could be read")
    np.save(tmp_path / "outside.npy", np.zeros((2, 2)))
    csv_path.write_text("path,label\n../outside.npy,x\n")
    cli(args).error_line("sequence ", "lies outside the dataset root", "--allow-outside-root")
    assert cli([*args, "--allow-outside-root"]).code == 0


# --------------------------------------------------------------------------- splits never divide a group


def grouped_index(subjects: int = 12, classes: int = 4, clips: int = 2, test: bool = False) -> DatasetIndex:
    """`subjects` groups, each with `clips` clips of every class; plus 5 ungrouped clips and 2 unlabeled ones."""
    entries = [
        VideoEntry(id=f"s{s}_c{c}_{k}", path=f"s{s}_c{c}_{k}.npy", label=c, num_frames=5, group=f"s{s}")
        for s in range(subjects)
        for c in range(classes)
        for k in range(clips)
    ]
    if test:
        for e in entries:
            e.subset = "test" if int(e.group[1:]) >= subjects - 2 else "train"
    entries += [VideoEntry(id=f"loose{i}", path=f"loose{i}.npy", label=i % classes, num_frames=5) for i in range(5)]
    entries += [
        VideoEntry(id=f"u{i}", path=f"u{i}.npy", label=NO_LABEL, subset="unlabeled", num_frames=5, group=f"s{i}")
        for i in range(2)
    ]
    return DatasetIndex("npz", "/data", [f"k{c}" for c in range(classes)], entries, input_dim=3)


def sides(index: DatasetIndex, ids_by_side: dict[str, list[str]]) -> dict[str, set[str]]:
    """group -> the sides its clips are on."""
    by_id = index.by_id()
    found: dict[str, set[str]] = {}
    for side, ids in ids_by_side.items():
        for i in ids:
            if by_id[i].group:
                found.setdefault(by_id[i].group, set()).add(side)
    return found


@pytest.mark.parametrize("fraction", [0.05, 0.1, 0.25, 0.5, 0.9, 1.0])
def test_split_keeps_groups_on_one_side(fraction: float) -> None:
    index = grouped_index()
    train = [e for e in index.entries if e.subset == "train"]
    for seed in range(5):
        split = make_split(index, fraction, seed)
        assert set(split.labeled) | set(split.unlabeled) >= {e.id for e in train}
        labeled_footage = [i for i in split.unlabeled if index.by_id()[i].label != NO_LABEL]
        train_sides = sides(index, {"labeled": split.labeled, "unlabeled": labeled_footage})
        assert all(len(s) == 1 for s in train_sides.values()), train_sides
        counts = Counter(index.by_id()[i].label for i in split.labeled)
        assert all(counts[c] >= 1 for c in range(4))  # every class keeps a labeled clip
        assert all(i in split.unlabeled for i in ("u0", "u1"))  # footage nobody labeled: always D_u


def test_split_counts_follow_the_targets_when_groups_allow() -> None:
    index = grouped_index(subjects=12, clips=2)
    # each class has 24 grouped clips + 1 or 2 loose ones; 3 subjects give 6 per class, loose clips fill up
    for seed in range(4):
        split = make_split(index, 0.25, seed)
        counts = Counter(index.by_id()[i].label for i in split.labeled)
        sizes = Counter(e.label for e in index.entries if e.subset == "train")
        for c in range(4):
            assert abs(counts[c] - labeled_count(0.25, sizes[c])) <= 1, (seed, counts)


def test_groups_of_one_follow_the_per_class_rule() -> None:
    index = grouped_index(subjects=1, clips=1)
    for i, e in enumerate(index.entries):
        e.group = f"solo{i}" if e.label != NO_LABEL else ""
    sizes = Counter(e.label for e in index.subset("train"))
    for fraction in (0.1, 0.5):
        counts = Counter(index.by_id()[i].label for i in make_split(index, fraction, 3).labeled)
        assert counts == Counter({c: labeled_count(fraction, n) for c, n in sizes.items()})


def test_held_out_test_takes_whole_groups_the_same_for_every_seed() -> None:
    index = grouped_index()
    held = held_out_for_test(index, 0.25)
    held_groups = {index.by_id()[i].group for i in held} - {""}
    assert held_groups and all(e.id in held for e in index.entries if e.group in held_groups and e.subset == "train")
    tests = set()
    for seed in range(4):
        split = make_split(index, 0.3, seed, test_fraction=0.25)
        tests.add(tuple(split.test))
        group_sides = sides(index, {"train": split.labeled + split.unlabeled, "test": split.test})
        assert all(len(s) == 1 for s in group_sides.values()), group_sides
        assert Counter(index.by_id()[i].label for i in split.labeled + split.unlabeled).keys() - {NO_LABEL} == {
            0,
            1,
            2,
            3,
        }
        # u0/u1 belong to s0/s1: in D_u unless their group is tested on
        for u in ("u0", "u1"):
            assert (u in split.unlabeled) == (index.by_id()[u].group not in held_groups)
    assert len(tests) == 1


def test_index_test_subset_and_open_world_with_groups() -> None:
    index = grouped_index(test=True)
    split = make_split(index, 0.2, 0)
    assert split.test == [e.id for e in index.subset("test")]
    world = make_split(index, 0.5, 1, num_known_classes=2)
    by_id, known = index.by_id(), set(world.known_classes or [])
    assert {by_id[i].label for i in world.labeled} <= known
    labeled_groups = {by_id[i].group for i in world.labeled} - {""}
    # the one exception to whole groups: a labeled group's clips of unknown classes cannot be labeled
    stray = [i for i in world.unlabeled if by_id[i].group in labeled_groups and by_id[i].label != NO_LABEL]
    assert stray and all(by_id[i].label not in known for i in stray)


def test_data_split_on_a_grouped_npz_index(tmp_path: Path, cli: Cli) -> None:
    root = tmp_path / "subjects"
    rng = np.random.default_rng(2)
    arrays = {f"s{s}/{c}_{k}.npy": rng.normal(size=(4, 2)) for s in range(8) for c in "abc" for k in range(2)}
    labels = {name: name.split("/")[1][0] for name in arrays}
    csv_path = write_npz_folder(root, arrays, labels, groups={name: name.split("/")[0] for name in arrays})
    index_path = tmp_path / "index.json"
    index_args = ["--format", "npz", "--root", root, "--annotations", csv_path, "--out", index_path]
    assert cli(["data", "index", *index_args]).code == 0
    index = load_index(index_path)
    for fraction in ("0.1", "0.3", "0.6"):
        out_dir = tmp_path / f"splits{fraction}"
        split_args = ["--index", index_path, "--fraction", fraction, "--test-fraction", "0.25"]
        result = cli(["data", "split", *split_args, "--seeds", "0,1,2", "--out-dir", out_dir])
        assert result.code == 0, result.out + result.err
        for path in sorted(out_dir.iterdir()):
            split = load_split(path)
            group_sides = sides(index, {"labeled": split.labeled, "unlabeled": split.unlabeled, "test": split.test})
            assert all(len(s) == 1 for s in group_sides.values()), (path.name, group_sides)
            assert split.test and split.labeled
