"""Label splits: which training videos are labeled, which are unlabeled, which are for testing.

Protocol (docs/DATA.md, paper Sec. 4): for each class with n training videos, the first
max(1, round(fraction * n)) of them in a seeded order are labeled (round half up, at most n);
unlabeled = train minus labeled; test = the test subset. Seeds 0, 1, 2 are the paper's three
splits. With `num_known_classes=K` (open world, paper Table 4) K classes are picked by the seed; only
they get labeled videos, while the unlabeled set keeps every class.

The seeded order is a sha256 of "<seed>:<id>", not a random generator: the same index and seed give
the same split on any machine and any Python/numpy version, and a smaller fraction's labeled set is
contained in a larger one's for the same seed.

A split file is JSON: {"schema": "fgar.split", "schema_version": 1, "index", "index_sha256",
"fraction", "seed", "known_classes", "labeled", "unlabeled", "test"}.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

from fgar_cli.data.index import DatasetIndex, read_json
from fgar_cli.errors import FgarError

SPLIT_SCHEMA = "fgar.split"
SPLIT_VERSION = 1


@dataclass
class Split:
    index: str
    index_sha256: str
    fraction: float
    seed: int
    known_classes: list[int] | None
    labeled: list[str]
    unlabeled: list[str]
    test: list[str]


def check_fraction(fraction: float) -> None:
    if not 0 < fraction <= 1:  # also false for NaN
        raise FgarError(f"--fraction {fraction} is outside (0, 1]: give the share of training videos to label")


def _order_key(seed: int, name: str) -> str:
    return hashlib.sha256(f"{seed}:{name}".encode()).hexdigest()


def labeled_count(fraction: float, n: int) -> int:
    """round(fraction * n), half up, at least 1 and at most n (0 when the class has no video)."""
    return min(n, max(1, math.floor(fraction * n + 0.5))) if n else 0


def choose_known_classes(index: DatasetIndex, count: int, seed: int) -> list[int]:
    """`count` classes that have training videos, picked by the seed; returned sorted."""
    present = sorted({e.label for e in index.subset("train")})
    if not 1 <= count <= len(present):
        raise FgarError(
            f"--known-classes {count}: must be between 1 and {len(present)} (the classes with training videos)"
        )
    return sorted(sorted(present, key=lambda c: _order_key(seed, f"class:{c}"))[:count])


def make_split(
    index: DatasetIndex,
    fraction: float,
    seed: int,
    num_known_classes: int | None = None,
    index_path: str = "",
    index_sha256: str = "",
) -> Split:
    check_fraction(fraction)
    train = index.subset("train")
    if not train:
        raise FgarError(f"{index_path or 'index'}: has no training videos to split")
    known = choose_known_classes(index, num_known_classes, seed) if num_known_classes is not None else None
    by_class: dict[int, list[str]] = defaultdict(list)
    for e in train:
        if known is None or e.label in known:
            by_class[e.label].append(e.id)
    chosen: set[str] = set()
    for ids in by_class.values():
        ordered = sorted(ids, key=lambda i: _order_key(seed, i))
        chosen.update(ordered[: labeled_count(fraction, len(ordered))])
    return Split(
        index=index_path,
        index_sha256=index_sha256,
        fraction=fraction,
        seed=seed,
        known_classes=known,
        labeled=[e.id for e in train if e.id in chosen],  # index order, for readable files
        unlabeled=[e.id for e in train if e.id not in chosen],
        test=[e.id for e in index.subset("test")],
    )


def save_split(split: Split, path: str | Path) -> None:
    from fgar_cli.artifacts import atomic_write_text

    payload = {"schema": SPLIT_SCHEMA, "schema_version": SPLIT_VERSION, **asdict(split)}
    atomic_write_text(path, json.dumps(payload, indent=1) + "\n")


def load_split(path: str | Path) -> Split:
    data = read_json(path)
    if not isinstance(data, dict) or data.get("schema") != SPLIT_SCHEMA:
        raise FgarError(f"{path}: not an fgar split file (expected schema '{SPLIT_SCHEMA}')")
    if data.get("schema_version") != SPLIT_VERSION:
        raise FgarError(
            f"{path}: split schema_version {data.get('schema_version')} is not supported "
            f"(this fgar reads {SPLIT_VERSION})"
        )
    for key in ("labeled", "unlabeled", "test"):
        value = data.get(key)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise FgarError(f"{path}: '{key}' must be a list of video ids")
    fraction, seed, known = data.get("fraction"), data.get("seed"), data.get("known_classes")
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction <= 1:
        raise FgarError(f"{path}: 'fraction' must be a number in (0, 1], got {fraction!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise FgarError(f"{path}: 'seed' must be an integer, got {seed!r}")
    if known is not None and not (isinstance(known, list) and all(type(c) is int for c in known)):
        raise FgarError(f"{path}: 'known_classes' must be null or a list of class ids")
    split = Split(
        index=str(data.get("index", "")),
        index_sha256=str(data.get("index_sha256", "")),
        fraction=float(fraction),
        seed=seed,
        known_classes=known,
        labeled=data["labeled"],
        unlabeled=data["unlabeled"],
        test=data["test"],
    )
    _check_disjoint(split, path)
    return split


def _check_disjoint(split: Split, path: str | Path) -> None:
    seen: dict[str, str] = {}
    for name in ("labeled", "unlabeled", "test"):
        for vid in getattr(split, name):
            if vid in seen:
                raise FgarError(
                    f"{path}: video '{vid}' is in both '{seen[vid]}' and '{name}'"
                    if seen[vid] != name
                    else f"{path}: video '{vid}' appears twice in '{name}'"
                )
            seen[vid] = name


def check_split(split: Split, index: DatasetIndex, split_path: str | Path = "split") -> None:
    """Every id of the split is in the index; labeled ones belong to known classes (open world)."""
    by_id = index.by_id()
    for name in ("labeled", "unlabeled", "test"):
        ids = getattr(split, name)
        missing = [v for v in ids if v not in by_id]
        if missing:
            raise FgarError(
                f"{split_path}: {len(missing)} '{name}' ids are not in the index "
                f"(first: '{missing[0]}'); was the split made from another index?"
            )
    known = set(split.known_classes) if split.known_classes is not None else None
    if known is not None:
        wrong = next((v for v in split.labeled if by_id[v].label not in known), None)
        if wrong is not None:
            raise FgarError(f"{split_path}: labeled video '{wrong}' is not of a known class")


def split_summary(split: Split, index: DatasetIndex) -> list[tuple[str, int, int]]:
    """(name, videos, classes covered) for labeled, unlabeled and test."""
    by_id = index.by_id()
    rows = []
    for name in ("labeled", "unlabeled", "test"):
        ids = getattr(split, name)
        rows.append((name, len(ids), len({by_id[v].label for v in ids if v in by_id})))
    return rows
