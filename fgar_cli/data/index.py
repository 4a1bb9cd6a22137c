"""The one index type every dataset adapter produces, and its JSON file.

An index file is a JSON object:
    {"schema": "fgar.index", "schema_version": 1, "format": "diving48", "root": "/data/d48",
     "class_names": [...], "entries": [{"id", "path", "label", "start_frame", "end_frame",
     "num_frames", "subset"}, ...], "skipped": [{"path", "reason"}, ...]}
`path` is absolute, or relative to `root`. `end_frame` is exclusive. `num_frames` is the count
of frames that actually decode (container headers lie; docs/DATA.md). `subset` is
"train" or "test" where the dataset defines them, else "train"; "unlabeled" marks footage nobody
labeled (label NO_LABEL), which every split puts in D_u and never in the labeled or test sets.

Sequence indexes (`--format ts`, `npz`, `features`; docs/DATA.md) hold per-step vectors instead of
videos: the top-level `input_dim` D > 0 is the size of each step's vector (0, or absent: videos),
each entry's `path` is the file holding its sequence and `key` the record inside it (a row of a
`.ts` file, a dataset of an HDF5 feature store, an array of an `.npz`; "" for a lone `.npy`), and
`num_frames` its length in steps. `group` (any index) names the subject or recording an entry comes
from: splits never put one group on both sides of labeled/unlabeled or train/test.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fgar_cli.errors import FgarError
from fgar_cli.files import read_text

INDEX_SCHEMA = "fgar.index"
INDEX_VERSION = 1
SUBSETS = ("train", "test", "unlabeled")
NO_LABEL = -1  # the label of an entry in the "unlabeled" subset
# A run's truth for an unlabeled entry: not known at all, unlike -1 (a known-wrong class the models
# do not know, a novel clip in the open world); pseudo-label accuracy leaves such clips out.
NO_TRUTH = -2


@dataclass
class VideoEntry:
    id: str
    path: str  # a video file, or a folder of frames (FineDiving)
    label: int
    start_frame: int = 0
    end_frame: int = -1  # exclusive; -1 means "to the end"
    num_frames: int = -1  # decodable frames in [start_frame, end_frame); -1 until counted
    subset: str = "train"
    key: str = ""  # the record inside `path` for sequence indexes ("" for videos and lone .npy files)
    group: str = ""  # subject or recording; splits keep a group on one side ("" : every entry its own)


SEQUENCE_FORMATS = ("ts", "npz", "features")  # indexes of per-step vectors, not videos


@dataclass
class DatasetIndex:
    format: str
    root: str
    class_names: list[str]
    entries: list[VideoEntry]
    skipped: list[dict[str, str]] = field(default_factory=list)
    allow_outside_root: bool = False  # entries may point outside `root` (the user asked for it)
    input_dim: int = 0  # D of a sequence index (each step a D-vector); 0: a video index

    @property
    def is_sequence(self) -> bool:
        return self.input_dim > 0

    def resolve(self, entry: VideoEntry) -> Path:
        """Absolute path of an entry's video or frame folder."""
        p = Path(entry.path)
        return p if p.is_absolute() else Path(self.root) / p

    def check_inside_root(self, where: str | Path) -> None:
        """Every entry's path lies inside `root` (judged on the names, `..` included), unless allowed."""
        if self.allow_outside_root:
            return
        root = os.path.normpath(os.path.abspath(self.root))
        for entry in self.entries:
            target = os.path.normpath(os.path.abspath(self.resolve(entry)))
            if os.path.commonpath([root, target]) != root:
                kind = "sequence" if self.is_sequence or self.format in SEQUENCE_FORMATS else "video"
                raise FgarError(
                    f"{where}: {kind} '{entry.id}' lies outside the dataset root {root} ({entry.path}); "
                    "pass --allow-outside-root to index it anyway"
                )

    def by_id(self) -> dict[str, VideoEntry]:
        return {e.id: e for e in self.entries}

    def subset(self, name: str) -> list[VideoEntry]:
        return [e for e in self.entries if e.subset == name]


def save_index(index: DatasetIndex, path: str | Path) -> None:
    from fgar_cli.artifacts import atomic_write_text

    payload = {
        "schema": INDEX_SCHEMA,
        "schema_version": INDEX_VERSION,
        "format": index.format,
        "root": index.root,
        "class_names": index.class_names,
        "entries": [_entry_json(e) for e in index.entries],
        "skipped": index.skipped,
        "allow_outside_root": index.allow_outside_root,
    }
    if index.input_dim:
        payload["input_dim"] = index.input_dim
    atomic_write_text(path, json.dumps(payload, indent=1))


def _entry_json(entry: VideoEntry) -> dict[str, Any]:
    """An entry's JSON object; `key` and `group` only where set, so video indexes read as before."""
    fields = asdict(entry)
    for name in ("key", "group"):
        if not fields[name]:
            del fields[name]
    return fields


def load_index(path: str | Path) -> DatasetIndex:
    data = read_json(path)
    if not isinstance(data, dict) or data.get("schema") != INDEX_SCHEMA:
        raise FgarError(f"{path}: not an fgar index (expected schema '{INDEX_SCHEMA}')")
    if data.get("schema_version") != INDEX_VERSION:
        raise FgarError(
            f"{path}: index schema_version {data.get('schema_version')} is not supported "
            f"(this fgar reads {INDEX_VERSION})"
        )
    class_names = data.get("class_names")
    if not isinstance(class_names, list) or not all(isinstance(c, str) for c in class_names):
        raise FgarError(f"{path}: 'class_names' must be a list of class names")
    raw = data.get("entries")
    if not isinstance(raw, list):
        raise FgarError(f"{path}: 'entries' must be a list of videos")
    entries = [_entry(e, n, path, len(class_names)) for n, e in enumerate(raw)]
    input_dim = data.get("input_dim", 0)
    if not isinstance(input_dim, int) or isinstance(input_dim, bool) or input_dim < 0:
        raise FgarError(f"{path}: 'input_dim' must be a non-negative integer, got {input_dim!r}")
    index = DatasetIndex(
        format=str(data.get("format", "")),
        root=str(data.get("root", "")),
        class_names=class_names,
        entries=entries,
        skipped=list(data.get("skipped", [])),
        allow_outside_root=data.get("allow_outside_root") is True,
        input_dim=input_dim,
    )
    index.check_inside_root(path)
    return index


_ENTRY_FIELDS = {
    "id": str,
    "path": str,
    "label": int,
    "start_frame": int,
    "end_frame": int,
    "num_frames": int,
    "key": str,
    "group": str,
}
_REQUIRED = ("id", "path", "label")


def _entry(raw: Any, n: int, path: str | Path, num_classes: int) -> VideoEntry:
    """One index entry, type-checked: a wrong field is named with its entry, never a crash later."""
    if not isinstance(raw, dict):
        raise FgarError(f"{path}: entry {n} must be an object with id, path and label")
    where = f"{path}: entry {n}" + (f" ('{raw['id']}')" if isinstance(raw.get("id"), str) else "")
    unknown = sorted(set(raw) - set(_ENTRY_FIELDS) - {"subset"})
    missing = [k for k in _REQUIRED if k not in raw]
    if unknown or missing:
        raise FgarError(
            f"{where}: " + "; ".join([f"unknown field '{k}'" for k in unknown] + [f"no '{k}'" for k in missing])
        )
    for key, kind in _ENTRY_FIELDS.items():
        value = raw.get(key)
        if key in raw and (not isinstance(value, kind) or isinstance(value, bool)):
            expected = "an integer" if kind is int else "a string"
            raise FgarError(f"{where}: '{key}' must be {expected}, got {value!r}")
    subset = raw.get("subset", "train")
    if subset not in SUBSETS:
        raise FgarError(f"{where}: 'subset' must be one of {', '.join(SUBSETS)}, got {subset!r}")
    if subset == "unlabeled" or raw["label"] == NO_LABEL:
        if subset != "unlabeled" or raw["label"] != NO_LABEL:
            raise FgarError(f"{where}: an entry without a label has label {NO_LABEL} and subset 'unlabeled'")
    elif not 0 <= raw["label"] < num_classes:
        raise FgarError(f"{where}: label {raw['label']} outside 0..{num_classes - 1}")
    return VideoEntry(**raw)


def read_json(path: str | Path) -> Any:
    """Read a JSON file; a missing or malformed file is a one-line FgarError."""
    p = Path(path)
    text = read_text(p)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise FgarError(f"{p}: malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
