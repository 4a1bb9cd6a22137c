"""Label splits: which training videos are labeled, which are unlabeled, which are for testing.

Protocol (docs/DATA.md, paper Sec. 4): for each class with n training videos, the first
max(1, round(fraction * n)) of them in a seeded order are labeled (round half up, at most n);
unlabeled = train minus labeled, plus every video nobody labeled (the index's "unlabeled" subset);
test = the test subset. Seeds 0, 1, 2 are the paper's three splits. A dataset without a test subset
(a folder of class folders) can hold out `test_fraction` of each class's videos as the test set: the
same videos for every seed (the order key does not involve it), so that splits compare on one test set.
With `num_known_classes=K` (open world, paper Table 4) K classes are picked by the seed; only
they get labeled videos, while the unlabeled set keeps every class.

The seeded order is a sha256 of "<seed>:<id>", not a random generator: the same index and seed give
the same split on any machine and any Python/numpy version, and a smaller fraction's labeled set is
contained in a larger one's for the same seed.

Groups (an entry's `group`: the subject or recording it comes from) are never divided: a group's
training clips are all labeled or all unlabeled, and a held-out test set takes whole groups. Whole
groups are taken in the seeded order of sha256("<seed>:group:<name>") (entries without a group are
groups of one, ordered as above), and a group is taken when it brings the per-class labeled counts
closer to their targets (the sum over classes of |count - target| falls); a group may hold several
classes, so the counts are as close as whole groups allow. A class that no such group reached gets
the first group, in the seeded order, that holds it: every class with training clips keeps at least
one labeled clip, as without groups. For entries without groups this is exactly the per-class rule
above. With groups, a smaller fraction's labeled set is not always inside a larger one's. Two
exceptions, both for clips that cannot be labeled: in the open world a labeled group's clips of
unknown classes stay unlabeled, and footage nobody labeled (the "unlabeled" subset) goes to the
unlabeled set, except that of a group held out for testing, which is left out of the split (training
on a test subject's footage is the leak groups exist to stop).

A split file is JSON: {"schema": "fgar.split", "schema_version": 1, "index", "index_sha256",
"fraction", "seed", "known_classes", "test_fraction", "labeled", "unlabeled", "test"}.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from fgar_cli.data.index import NO_LABEL, DatasetIndex, VideoEntry, read_json
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
    test_fraction: float = 0.0  # share of each class held out as the test set (0: the index's test subset)


def check_fraction(fraction: float) -> None:
    if not 0 <= fraction <= 1:  # also false for NaN
        raise FgarError(
            f"--fraction {fraction} is outside [0, 1]: give the share of training videos to label "
            "(0: none, a split for self-supervised pretraining on every training video)"
        )


def check_test_fraction(test_fraction: float) -> None:
    if not 0 <= test_fraction < 1:  # also false for NaN
        raise FgarError(f"--test-fraction {test_fraction} is outside [0, 1): give the share of each class to test on")


def _order_key(seed: int, name: str) -> str:
    return hashlib.sha256(f"{seed}:{name}".encode()).hexdigest()


def labeled_count(fraction: float, n: int) -> int:
    """round(fraction * n), half up, at least 1 and at most n (0 when the class has no video, or for
    fraction 0: a split with no labels, for self-supervised pretraining on every training video)."""
    return min(n, max(1, math.floor(fraction * n + 0.5))) if n and fraction > 0 else 0


def choose_known_classes(train: list[VideoEntry], count: int, seed: int) -> list[int]:
    """`count` classes that have training videos, picked by the seed; returned sorted."""
    present = sorted({e.label for e in train})
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
    test_fraction: float = 0.0,
) -> Split:
    check_fraction(fraction)
    check_test_fraction(test_fraction)
    where = index_path or "index"
    test = index.subset("test")
    train = index.subset("train")
    if test_fraction > 0:
        if test:
            raise FgarError(
                f"{where}: already has {len(test)} test videos; --test-fraction is for datasets without a test set"
            )
        test_ids = held_out_for_test(index, test_fraction)
        test = [e for e in train if e.id in test_ids]
        train = [e for e in train if e.id not in test_ids]
    if not train:
        raise FgarError(f"{where}: has no training videos to split")
    known = choose_known_classes(train, num_known_classes, seed) if num_known_classes is not None else None
    candidates = [e for e in train if known is None or e.label in known]
    sizes = Counter(e.label for e in candidates)
    targets = {label: labeled_count(fraction, n) for label, n in sizes.items()}
    chosen = _choose_groups(candidates, targets, lambda name: _order_key(seed, name), at_least_one=fraction > 0)
    test_groups = {e.group for e in test if e.group} if test_fraction > 0 else set()
    return Split(
        index=index_path,
        index_sha256=index_sha256,
        fraction=fraction,
        seed=seed,
        known_classes=known,
        labeled=[e.id for e in train if e.id in chosen],  # index order, for readable files
        unlabeled=[e.id for e in train if e.id not in chosen]
        + [e.id for e in index.subset("unlabeled") if not (e.group and e.group in test_groups)],
        test=[e.id for e in test],
        test_fraction=test_fraction,
    )


def held_out_for_test(index: DatasetIndex, test_fraction: float) -> set[str]:
    """round(test_fraction * n) of each class's n videos (half up), leaving each class at least one to train on.

    Seed-free on purpose: every label split of the dataset tests on the same videos. Grouped entries are
    held out a whole group at a time (the module docstring says how groups are chosen); a group that
    would leave one of its classes no training clip is not taken."""
    train = index.subset("train")
    sizes = Counter(e.label for e in train)
    targets = {label: min(n - 1, math.floor(test_fraction * n + 0.5)) for label, n in sizes.items()}
    limits = {label: n - 1 for label, n in sizes.items()}
    return _choose_groups(train, targets, lambda name: _order_key(0, f"test:{name}"), limits=limits)


def _choose_groups(
    entries: list[VideoEntry],
    targets: dict[int, int],
    order_key: Callable[[str], str],
    limits: dict[int, int] | None = None,
    at_least_one: bool = False,
) -> set[str]:
    """The ids of the whole groups chosen, in `order_key` order, towards `targets` clips per class.

    An entry without a group is a group of one, ordered by its id; a group by "group:<name>". A group
    is taken when it lowers the sum over classes of |chosen - target| and keeps every class within
    `limits`; for groups of one that is "the first target ids of each class in order", the rule
    without groups. `at_least_one`: a class still without a chosen clip then gets the first group, in
    order, that holds it (within `limits`)."""
    members: dict[tuple[bool, str], list[VideoEntry]] = defaultdict(list)  # (grouped, name) -> entries
    for e in entries:
        members[(True, e.group) if e.group else (False, e.id)].append(e)
    ordered = sorted(members, key=lambda unit: order_key(f"group:{unit[1]}" if unit[0] else unit[1]))
    counts = {unit: Counter(e.label for e in members[unit]) for unit in ordered}
    have: Counter[int] = Counter()
    taken: list[tuple[bool, str]] = []

    def fits(unit: tuple[bool, str]) -> bool:
        return limits is None or all(have[c] + n <= limits[c] for c, n in counts[unit].items())

    def take(unit: tuple[bool, str]) -> None:
        taken.append(unit)
        have.update(counts[unit])

    for unit in ordered:
        gain = sum(abs(have[c] - targets[c]) - abs(have[c] + n - targets[c]) for c, n in counts[unit].items())
        if gain > 0 and fits(unit):
            take(unit)
    if at_least_one:
        for label in sorted(targets):
            if targets[label] > 0 and have[label] == 0:
                unit = next((u for u in ordered if label in counts[u] and u not in taken and fits(u)), None)
                if unit is not None:
                    take(unit)
    return {e.id for unit in taken for e in members[unit]}


def thin_classes(split: Split, index: DatasetIndex) -> list[tuple[str, int]]:
    """(class name, labeled clips) of every class with fewer than two labeled clips: too few for the
    alignability classifier's temperature (fitted leave-one-out) and a weak gallery for its scores."""
    counts = {c: 0 for c in (split.known_classes if split.known_classes is not None else range(len(index.class_names)))}
    by_id = index.by_id()
    for vid in split.labeled:
        counts[by_id[vid].label] = counts.get(by_id[vid].label, 0) + 1
    return [(index.class_names[c], n) for c, n in sorted(counts.items()) if n < 2]


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
    test_fraction = data.get("test_fraction", 0.0)
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, (int, float)) or not 0 <= test_fraction < 1:
        raise FgarError(f"{path}: 'test_fraction' must be a number in [0, 1), got {test_fraction!r}")
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 <= fraction <= 1:
        raise FgarError(f"{path}: 'fraction' must be a number in [0, 1], got {fraction!r}")
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
        test_fraction=float(test_fraction),
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
    for name in ("labeled", "test"):
        unlabeled = next((v for v in getattr(split, name) if by_id[v].label == NO_LABEL), None)
        if unlabeled is not None:
            raise FgarError(f"{split_path}: '{name}' video '{unlabeled}' has no label in the index")
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
        rows.append((name, len(ids), len({by_id[v].label for v in ids if v in by_id} - {NO_LABEL})))
    return rows
