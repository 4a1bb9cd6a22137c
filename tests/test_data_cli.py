"""`fgar data index|split|inspect` through the real entry point (`fgar_cli.cli.main`)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fgar_cli.artifacts import sha256_file, write_h5
from fgar_cli.checkpoints import save_checkpoint
from fgar_cli.data.index import load_index
from fgar_cli.data.splits import load_split

from conftest import Cli
from helpers import evil_pickle, make_diving48, make_finediving, one_error_line


def table_rows(out: str) -> dict[str, list[str]]:
    """Rows of the rich tables in `out`, keyed by their first cell."""
    rows = {}
    for line in out.splitlines():
        if line.startswith("│"):
            cells = [c.strip() for c in line.strip().strip("│").split("│")]
            rows[cells[0]] = cells[1:]
    return rows


@pytest.fixture
def diving48_root(tmp_path: Path) -> Path:
    root = make_diving48(
        tmp_path / "d48",
        train=[
            ("a1", 0, 0, 5),
            ("a2", 0, 0, 5),
            ("b1", 1, 0, 5),
            ("gone", 1, 0, 5),
            ("zero", 2, 0, 5),
            ("c1", 2, 0, 5),
        ],
        test=[("t1", 0, 0, 5), ("t2", 2, 0, 5)],
        frames=5,
    )
    (root / "rgb" / "gone.mp4").unlink()
    (root / "rgb" / "zero.mp4").write_bytes(b"")
    return root


@pytest.fixture
def index_file(tmp_path: Path) -> Path:
    """An index of 4 classes x 10 train videos and 1 test video each (no videos needed to split)."""
    entries = [
        {
            "id": f"c{c}_{i}",
            "path": f"c{c}_{i}.mp4",
            "label": c,
            "start_frame": 0,
            "end_frame": 8,
            "num_frames": 8,
            "subset": "train" if i < 10 else "test",
        }
        for c in range(4)
        for i in range(11)
    ]
    path = tmp_path / "index.json"
    path.write_text(
        json.dumps(
            {
                "schema": "fgar.index",
                "schema_version": 1,
                "format": "list",
                "root": "/data",
                "class_names": ["w", "x", "y", "z"],
                "entries": entries,
                "skipped": [],
            }
        )
    )
    return path


# --------------------------------------------------------------------------- index


def test_index_skips_and_reports_unreadable_videos(diving48_root: Path, tmp_path: Path, cli: Cli) -> None:
    out_path = tmp_path / "out" / "index.json"
    code, out, err = cli(
        ["data", "index", "--format", "diving48", "--root", str(diving48_root), "--out", str(out_path)]
    )
    assert code == 0, out + err
    index = load_index(out_path)
    assert sorted(e.id for e in index.entries) == ["a1", "a2", "b1", "c1", "t1", "t2"]
    assert all(e.num_frames == 5 for e in index.entries)
    assert sorted(Path(s["path"]).name for s in index.skipped) == ["gone.mp4", "zero.mp4"]
    skipped_lines = [line for line in out.splitlines() if line.startswith("skipped ")]
    assert len(skipped_lines) == 2
    assert any(str(diving48_root / "rgb" / "gone.mp4") in line for line in skipped_lines)
    assert any(str(diving48_root / "rgb" / "zero.mp4") in line for line in skipped_lines)
    assert "error:" not in out + err


def test_index_strict_fails_without_writing(diving48_root: Path, tmp_path: Path, cli: Cli) -> None:
    out_path = tmp_path / "index.json"
    code, out, err = cli(
        ["data", "index", "--format", "diving48", "--root", str(diving48_root), "--out", str(out_path), "--strict"]
    )
    assert code == 1
    one_error_line(out + err, "2 unreadable videos", "--strict")
    assert not out_path.exists()


def test_index_unknown_label_is_an_error(tmp_path: Path, cli: Cli) -> None:
    root = make_diving48(
        tmp_path / "d48", train=[("a", 0, 0, 5), ("b", 48, 0, 5)], test=[], num_classes=3, videos=False
    )
    code, out, err = cli(
        ["data", "index", "--format", "diving48", "--root", str(root), "--out", str(tmp_path / "i.json")]
    )
    assert code == 1
    one_error_line(out + err, "Diving48_V2_train.json", "entry 1", "unknown label 48")


def test_index_malformed_json_is_one_line(tmp_path: Path, cli: Cli) -> None:
    root = make_diving48(tmp_path / "d48", train=[("a", 0, 0, 5)], test=[], videos=False)
    (root / "Diving48_vocab.json").write_text('[["Back", ')
    code, out, err = cli(
        ["data", "index", "--format", "diving48", "--root", str(root), "--out", str(tmp_path / "i.json")]
    )
    assert code == 1
    one_error_line(out + err, "Diving48_vocab.json", "malformed JSON")


def test_index_refuses_pickle_that_runs_code(tmp_path: Path, cli: Cli) -> None:
    root = make_finediving(tmp_path / "fd", {("ev", 1): "101b"}, train=[("ev", 1)], test=[], frames=False)
    marker = tmp_path / "command_ran"
    evil_pickle(root / "Annotations" / "train_split.pkl", marker)
    code, out, err = cli(
        ["data", "index", "--format", "finediving", "--root", str(root), "--out", str(tmp_path / "i.json")]
    )
    assert code == 1
    one_error_line(out + err, "train_split.pkl", "refusing to unpickle global 'posix.system'")
    assert not marker.exists()


# --------------------------------------------------------------------------- split


def test_split_writes_file_and_summary(index_file: Path, tmp_path: Path, cli: Cli) -> None:
    out_path = tmp_path / "split.json"
    code, out, err = cli(
        ["data", "split", "--index", str(index_file), "--fraction", "0.2", "--seed", "1", "--out", str(out_path)]
    )
    assert code == 0, out + err
    split = load_split(out_path)
    assert (split.fraction, split.seed, split.index) == (0.2, 1, str(index_file))
    assert split.index_sha256 == sha256_file(index_file)
    assert len(split.labeled) == 8 and len(split.unlabeled) == 32 and len(split.test) == 4
    rows = table_rows(out)
    assert rows["labeled"] == ["8", "4"] and rows["unlabeled"] == ["32", "4"] and rows["test"] == ["4", "4"]


def test_split_three_seeds_into_folder(index_file: Path, tmp_path: Path, cli: Cli) -> None:
    code, out, err = cli(
        [
            "data",
            "split",
            "--index",
            str(index_file),
            "--fraction",
            "0.1",
            "--seeds",
            "0,1,2",
            "--out-dir",
            str(tmp_path / "splits"),
        ]
    )
    assert code == 0, out + err
    files = sorted((tmp_path / "splits").iterdir())
    assert [f.name for f in files] == [f"split_0.1_seed{s}.json" for s in (0, 1, 2)]
    labeled = [load_split(f).labeled for f in files]
    assert labeled[0] != labeled[1] != labeled[2] and labeled[0] != labeled[2]


@pytest.mark.parametrize("fraction", ["1.5", "-0.2", "nan"])
def test_split_fraction_out_of_range(index_file: Path, tmp_path: Path, fraction: str, cli: Cli) -> None:
    code, out, err = cli(
        ["data", "split", "--index", str(index_file), "--fraction", fraction, "--out", str(tmp_path / "s.json")]
    )
    assert code == 1
    one_error_line(out + err, "--fraction", "outside [0, 1]")
    assert not (tmp_path / "s.json").exists()


def test_split_open_world(index_file: Path, tmp_path: Path, cli: Cli) -> None:
    out_path = tmp_path / "ow.json"
    code, out, err = cli(
        [
            "data",
            "split",
            "--index",
            str(index_file),
            "--fraction",
            "0.5",
            "--known-classes",
            "2",
            "--out",
            str(out_path),
        ]
    )
    assert code == 0, out + err
    split = load_split(out_path)
    index = load_index(index_file).by_id()
    assert split.known_classes is not None and len(split.known_classes) == 2
    assert {index[v].label for v in split.labeled} == set(split.known_classes)
    assert {index[v].label for v in split.unlabeled} == {0, 1, 2, 3}


# --------------------------------------------------------------------------- inspect


def test_inspect_index_and_split(index_file: Path, tmp_path: Path, cli: Cli) -> None:
    code, out, err = cli(["data", "inspect", str(index_file)])
    assert code == 0, out + err
    rows = table_rows(out)
    assert rows["train"][:2] == ["40", "4"] and rows["test"][:2] == ["4", "4"] and rows["skipped"][0] == "0"
    split_path = tmp_path / "s.json"
    cli(["data", "split", "--index", str(index_file), "--fraction", "0.1", "--out", str(split_path)])
    code, out, err = cli(["data", "inspect", str(split_path)])
    assert code == 0, out + err
    rows = table_rows(out)
    assert rows["labeled"] == ["4", "4"] and rows["unlabeled"] == ["36", "4"]


def test_inspect_pseudo_h5(tmp_path: Path, cli: Cli) -> None:
    path = tmp_path / "pseudo.h5"
    accepted = np.array([True, False, True, True])
    write_h5(
        path,
        "fgar.pseudo",
        1,
        {
            "video_ids": ["v0", "v1", "v2", "v3"],
            "p": np.full((4, 3), 1 / 3, dtype=np.float32),
            "accepted": accepted,
            "label": np.array([2, 0, 1, 1]),
        },
        attrs={"theta": 0.8, "tau": 0.5, "rho": 0.1, "round": 2},
        config={"batch_size": 8, "lr": 0.1},
    )
    code, out, err = cli(["data", "inspect", str(path)])
    assert code == 0, out + err
    assert "schema fgar.pseudo v1" in out and "config keys: batch_size, lr" in out
    assert "theta = 0.8" in out and "round = 2" in out
    assert "accepted pseudo-labels: 3 of 4" in out
    rows = table_rows(out)
    assert rows["p"][:2] == ["(4, 3)", "float32"]
    assert rows["video_ids"][2] == "['v0', 'v1', 'v2', 'v3']"


def test_inspect_checkpoint(tmp_path: Path, cli: Cli) -> None:
    import torch

    path = tmp_path / "A.pt"
    save_checkpoint(
        path,
        {
            "kind": "alignability",
            "arch": "r2plus1d_18",
            "epoch": 7,
            "class_names": ["jump", "spin", "fall"],
            "metrics": {"top1": 0.625},
            "state_dict": {"w": torch.zeros(2, 3), "b": torch.zeros(3)},
            "config": {"lr": 0.01},
        },
    )
    code, out, err = cli(["data", "inspect", str(path)])
    assert code == 0, out + err
    rows = {key: cells[0] for key, cells in table_rows(out).items()}
    assert rows["format"] == "fgar.checkpoint" and rows["kind"] == "alignability" and rows["epoch"] == "7"
    assert rows["class_names"] == "3 classes: jump, spin, fall" and rows["metrics"] == '{"top1": 0.625}'
    assert rows["state_dict"] == "2 tensors, 9 values"


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b"hello, not an fgar file", "not an fgar index, split"),
        (b'{"schema": "something.else"}', "not an fgar index or split"),
    ],
)
def test_inspect_unknown_file(tmp_path: Path, content: bytes, fragment: str, cli: Cli) -> None:
    path = tmp_path / "mystery.bin"
    path.write_bytes(content)
    code, out, err = cli(["data", "inspect", str(path)])
    assert code == 1
    one_error_line(out + err, "mystery.bin", fragment)


@pytest.mark.parametrize("command", ["index", "split", "inspect"])
def test_help_has_an_example(command: str, cli: Cli) -> None:
    code, out, err = cli(["data", command, "--help"])
    assert code == 0 and f"Example: fgar data {command}" in out
