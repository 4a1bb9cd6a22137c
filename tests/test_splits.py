"""Label splits: the per-class protocol, seeds, open world, and the split file."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from fgar_cli.data.index import DatasetIndex, VideoEntry
from fgar_cli.data.splits import (
    check_split,
    labeled_count,
    load_split,
    make_split,
    save_split,
    split_summary,
)
from fgar_cli.errors import FgarError

# train videos per class: a class with 1 video, one with 2, one with 15, one with 40, one with 7
TRAIN_SIZES = [1, 2, 15, 40, 7]


def toy_index(train_sizes: list[int] = TRAIN_SIZES, test_per_class: int = 2) -> DatasetIndex:
    entries = []
    for label, n in enumerate(train_sizes):
        entries += [VideoEntry(id=f"c{label}_v{i}", path=f"c{label}_v{i}.mp4", label=label) for i in range(n)]
        entries += [
            VideoEntry(id=f"c{label}_t{i}", path=f"c{label}_t{i}.mp4", label=label, subset="test")
            for i in range(test_per_class)
        ]
    names = [f"class{i}" for i in range(len(train_sizes))]
    return DatasetIndex(format="list", root="/data", class_names=names, entries=entries)


def labels_of(index: DatasetIndex, ids: list[str]) -> Counter[int]:
    by_id = index.by_id()
    return Counter(by_id[i].label for i in ids)


def test_per_class_counts_follow_round_with_at_least_one() -> None:
    index = toy_index()
    split = make_split(index, fraction=0.1, seed=0)
    # round half up of 0.1 * n, at least 1: 1 -> 1, 2 -> 1, 15 -> 2 (1.5 rounds up), 40 -> 4, 7 -> 1
    assert labels_of(index, split.labeled) == Counter({0: 1, 1: 1, 2: 2, 3: 4, 4: 1})
    assert [labeled_count(0.1, n) for n in TRAIN_SIZES] == [1, 1, 2, 4, 1]
    assert labeled_count(0.5, 5) == 3 and labeled_count(1.0, 7) == 7 and labeled_count(0.3, 0) == 0


def test_labeled_and_unlabeled_partition_train_and_test_is_test_subset() -> None:
    index = toy_index()
    split = make_split(index, fraction=0.2, seed=1)
    train_ids = {e.id for e in index.subset("train")}
    assert not set(split.labeled) & set(split.unlabeled)
    assert set(split.labeled) | set(split.unlabeled) == train_ids
    assert len(split.labeled) + len(split.unlabeled) == len(train_ids)
    assert split.test == [e.id for e in index.subset("test")]
    assert split.known_classes is None


def test_full_fraction_labels_everything() -> None:
    split = make_split(toy_index(), fraction=1.0, seed=0)
    assert split.unlabeled == [] and len(split.labeled) == sum(TRAIN_SIZES)


def test_deterministic_per_seed_and_different_across_seeds() -> None:
    index = toy_index()
    first = [make_split(index, 0.1, seed).labeled for seed in (0, 1, 2)]
    again = [make_split(toy_index(), 0.1, seed).labeled for seed in (0, 1, 2)]
    assert first == again
    assert first[0] != first[1] and first[1] != first[2] and first[0] != first[2]


def test_split_does_not_depend_on_entry_order() -> None:
    index = toy_index()
    shuffled = DatasetIndex(index.format, index.root, index.class_names, list(reversed(index.entries)))
    assert set(make_split(index, 0.2, 3).labeled) == set(make_split(shuffled, 0.2, 3).labeled)


def test_smaller_fraction_is_nested_in_larger() -> None:
    index = toy_index()
    assert set(make_split(index, 0.05, 2).labeled) <= set(make_split(index, 0.3, 2).labeled)


def test_no_test_subset_gives_empty_test_list() -> None:
    split = make_split(toy_index(test_per_class=0), 0.1, 0)
    assert split.test == []


@pytest.mark.parametrize("fraction", [-0.1, 1.5, float("nan")])
def test_fraction_outside_unit_interval(fraction: float) -> None:
    with pytest.raises(FgarError, match=r"--fraction .* is outside \[0, 1\]"):
        make_split(toy_index(), fraction, 0)


def test_fraction_zero_labels_nothing() -> None:
    """A split for self-supervised pretraining on every training video (fgar reproduce uses one)."""
    split = make_split(toy_index(), 0.0, 0)
    assert split.labeled == [] and len(split.unlabeled) == sum(TRAIN_SIZES)
    assert labeled_count(0.0, 7) == 0


def test_open_world_labels_only_known_classes() -> None:
    index = toy_index(train_sizes=[6] * 10)
    split = make_split(index, fraction=0.5, seed=0, num_known_classes=4)
    assert split.known_classes is not None and len(split.known_classes) == 4
    assert set(labels_of(index, split.labeled)) == set(split.known_classes)
    assert set(labels_of(index, split.unlabeled)) == set(range(10))  # unknown classes stay unlabeled
    assert set(split.labeled) | set(split.unlabeled) == {e.id for e in index.subset("train")}
    other_seeds = {tuple(make_split(index, 0.5, s, num_known_classes=4).known_classes or []) for s in range(1, 6)}
    assert len(other_seeds | {tuple(split.known_classes)}) > 1  # the seed picks the classes


@pytest.mark.parametrize("count", [0, 6])
def test_open_world_known_class_count_out_of_range(count: int) -> None:
    with pytest.raises(FgarError, match=f"--known-classes {count}: must be between 1 and 5"):
        make_split(toy_index(), 0.1, 0, num_known_classes=count)


def test_save_load_roundtrip_and_schema(tmp_path: Path) -> None:
    index = toy_index()
    split = make_split(index, 0.1, 2, num_known_classes=3, index_path="idx.json", index_sha256="ab" * 32)
    path = tmp_path / "split.json"
    save_split(split, path)
    raw = json.loads(path.read_text())
    assert raw["schema"] == "fgar.split" and raw["schema_version"] == 1 and raw["index"] == "idx.json"
    assert sorted(raw) == sorted(
        [
            "schema",
            "schema_version",
            "index",
            "index_sha256",
            "fraction",
            "seed",
            "known_classes",
            "test_fraction",
            "labeled",
            "unlabeled",
            "test",
        ]
    )
    assert load_split(path) == split
    check_split(load_split(path), index, path)
    # class 0 has a single training video: when it is known, that video is labeled and none is left
    unlabeled_classes = 4 if 0 in (split.known_classes or []) else 5
    assert split_summary(split, index) == [
        ("labeled", len(split.labeled), 3),
        ("unlabeled", len(split.unlabeled), unlabeled_classes),
        ("test", 10, 5),
    ]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"schema": "fgar.index"}, "not an fgar split file"),
        ({"schema_version": 7}, "schema_version 7 is not supported"),
        ({"fraction": 2}, "'fraction' must be a number in"),
        ({"seed": "zero"}, "'seed' must be an integer"),
        ({"labeled": "c0_v0"}, "'labeled' must be a list of video ids"),
        ({"known_classes": ["a"]}, "'known_classes' must be null or a list"),
        ({"unlabeled": ["c0_v0"]}, "'c0_v0' is in both 'labeled' and 'unlabeled'"),
    ],
)
def test_load_split_rejects_bad_files(tmp_path: Path, change: dict, message: str) -> None:
    path = tmp_path / "split.json"
    save_split(make_split(toy_index(), 0.1, 0), path)
    raw = json.loads(path.read_text())
    raw.update(change)
    path.write_text(json.dumps(raw))
    with pytest.raises(FgarError, match=message) as err:
        load_split(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_check_split_against_another_index(tmp_path: Path) -> None:
    split = make_split(toy_index(), 0.1, 0)
    smaller = toy_index(train_sizes=[1, 2])
    with pytest.raises(FgarError, match=r"split.json: \d+ 'labeled' ids are not in the index"):
        check_split(split, smaller, tmp_path / "split.json")
