"""The one index type every dataset adapter produces, and its JSON file.

An index file is a JSON object:
    {"schema": "fgar.index", "schema_version": 1, "format": "diving48", "root": "/data/d48",
     "class_names": [...], "entries": [{"id", "path", "label", "start_frame", "end_frame",
     "num_frames", "subset"}, ...], "skipped": [{"path", "reason"}, ...]}
`path` is absolute, or relative to `root`. `end_frame` is exclusive. `num_frames` is the count
of frames that actually decode (container headers lie; docs/DATA.md). `subset` is
"train" or "test" where the dataset defines them, else "train".
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fgar_cli.errors import FgarError

INDEX_SCHEMA = "fgar.index"
INDEX_VERSION = 1


@dataclass
class VideoEntry:
    id: str
    path: str  # a video file, or a folder of frames (FineDiving)
    label: int
    start_frame: int = 0
    end_frame: int = -1  # exclusive; -1 means "to the end"
    num_frames: int = -1  # decodable frames in [start_frame, end_frame); -1 until counted
    subset: str = "train"


@dataclass
class DatasetIndex:
    format: str
    root: str
    class_names: list[str]
    entries: list[VideoEntry]
    skipped: list[dict[str, str]] = field(default_factory=list)

    def resolve(self, entry: VideoEntry) -> Path:
        """Absolute path of an entry's video or frame folder."""
        p = Path(entry.path)
        return p if p.is_absolute() else Path(self.root) / p

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
        "entries": [asdict(e) for e in index.entries],
        "skipped": index.skipped,
    }
    atomic_write_text(path, json.dumps(payload, indent=1))


def load_index(path: str | Path) -> DatasetIndex:
    data = read_json(path)
    if not isinstance(data, dict) or data.get("schema") != INDEX_SCHEMA:
        raise FgarError(f"{path}: not an fgar index (expected schema '{INDEX_SCHEMA}')")
    if data.get("schema_version") != INDEX_VERSION:
        raise FgarError(
            f"{path}: index schema_version {data.get('schema_version')} is not supported "
            f"(this fgar reads {INDEX_VERSION})"
        )
    try:
        entries = [VideoEntry(**e) for e in data["entries"]]
        class_names = [str(c) for c in data["class_names"]]
    except (KeyError, TypeError) as exc:
        raise FgarError(f"{path}: malformed index entry ({exc})") from None
    for e in entries:
        if not 0 <= e.label < len(class_names):
            raise FgarError(f"{path}: entry '{e.id}' has label {e.label} outside 0..{len(class_names) - 1}")
    return DatasetIndex(
        format=str(data.get("format", "")),
        root=str(data.get("root", "")),
        class_names=class_names,
        entries=entries,
        skipped=list(data.get("skipped", [])),
    )


def read_json(path: str | Path) -> Any:
    """Read a JSON file; a missing or malformed file is a one-line FgarError."""
    p = Path(path)
    if not p.is_file():
        raise FgarError(f"{p}: file not found")
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise FgarError(f"{p}: malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    except UnicodeDecodeError:
        raise FgarError(f"{p}: not a UTF-8 text file") from None
