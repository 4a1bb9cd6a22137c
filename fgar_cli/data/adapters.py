"""Dataset adapters: read an official annotation layout into a `DatasetIndex`.

Formats (docs/DATA.md):
* diving48: `Diving48_V2_train.json`, `Diving48_V2_test.json` (optional), `Diving48_vocab.json` in
  the annotation folder (default: root); videos `root/rgb/<vid_name>.mp4`. Class names join the
  vocab parts: "Back_15som_05Twis_FREE". The JSON `start_frame`/`end_frame` are read as the
  half-open range [start, end); `measure_entries` clips `end` to the frames that decode.
* finegym: element lists `<element_id> <label>` (`gym99_train_element_v1.0.txt`,
  `gym99_val_element.txt`, gym288 likewise), by default the gym99 pair found in root; names from
  `<gym99|gym288>_categories.txt` (`Clabel: 0; set: 1; Glabel: 1; <name>`) beside the list or in
  root. Clips are `root/<element_id>.mp4`.
* finediving: `fine-grained_annotation_aqa.pkl`, `train_split.pkl`, `test_split.pkl` in the
  annotation folder (default: root/Annotations), read with the restricted unpickler. The 52 dive
  numbers become class ids in sorted order. Each video is the frame folder `root/<event>/<idx>/`.
* list: `<path> <label>` lines (mmaction2 `<path> <num_frames> <label>` too) or a CSV with a header
  (`path`/`video`/`filename` or Kinetics' `youtube_id,time_start,time_end`, plus `label` and an
  optional `split`). Labels are class ids or names; names come from `--classes` or, without it,
  are the sorted distinct names in the lists. A line with a path alone (or an empty or `-1` label)
  is an unlabeled video.
* folder: `root/<class>/<video file or frame folder>`; or `root/{train,val,test}/<class>/...`. Videos
  in a folder named `unlabeled` (beside the class folders, or beside train/test) are unlabeled,
  unless `--classes` names a class `unlabeled`.

* ts: UEA/UCR `.ts` files, `NAME_TRAIN.ts` and `NAME_TEST.ts` (either may be missing) in root or the
  `--annotations` folder, or the `.ts` files given; one entry per case (`NAME_TRAIN_0007`, key = its
  row), `input_dim` the files' dimensions, class names the @classLabel lists (TRAIN's first).
* npz: a CSV `path,label[,group][,split]` (header required) of `.npy`/`.npz` files relative to root,
  each one (T, D) sequence (`FILE.npz:NAME` picks one array of an .npz holding several); labels as in
  list. The files are read here for T and D: unreadable ones, and any whose D differs from the D of
  most files, are skipped and listed.

Unlabeled videos get the subset "unlabeled": every split puts them in D_u, never in the labeled or
test sets.

A list file whose name has a `val`/`test` token gives test entries; any other gives train entries.
Adapters only read annotations; `measure_entries` then decodes every video to count its frames.
Sequence adapters (ts, npz) measure their entries themselves: `measure_entries` leaves them alone.
"""

from __future__ import annotations

import csv
import io
import numbers
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

from fgar_cli.data.index import NO_LABEL, DatasetIndex, VideoEntry, read_json
from fgar_cli.data.safe_pickle import load_pickle
from fgar_cli.errors import FgarError
from fgar_cli.files import read_text

FORMATS = ("diving48", "finegym", "finediving", "list", "folder", "ts", "npz")
VIDEO_SUFFIXES = {".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg", ".flv"}
_TEST_TOKENS = {"val", "valid", "validation", "test", "testing"}
UNLABELED = "unlabeled"  # the folder name of unlabeled videos (folder format)
_NO_LABEL_TEXT = ("", "-1")  # a list line's label that means "nobody labeled this video"


def read_dataset(
    fmt: str,
    root: str | Path,
    annotations: list[Path] | None = None,
    classes_file: str | Path | None = None,
    allow_outside_root: bool = False,
) -> DatasetIndex:
    """Read a dataset's annotations into an index whose `num_frames` are still -1 (not counted).

    Every video must lie inside `root` (an annotation naming `../../elsewhere` is refused) unless
    `allow_outside_root`."""
    root_path = Path(root)
    if not root_path.is_dir():
        raise FgarError(f"{root_path}: dataset root folder not found")
    root_path = root_path.resolve()
    annotations = list(annotations or [])
    if fmt == "diving48":
        index = read_diving48(root_path, _single_folder(annotations, root_path, fmt))
    elif fmt == "finegym":
        index = read_finegym(root_path, annotations)
    elif fmt == "finediving":
        index = read_finediving(root_path, _single_folder(annotations, root_path / "Annotations", fmt))
    elif fmt == "list":
        index = read_lists(root_path, annotations, classes_file)
    elif fmt == "folder":
        index = read_folder(root_path, classes_file)
    elif fmt == "ts":
        index = read_ts(root_path, annotations)
    elif fmt == "npz":
        index = read_npz(root_path, annotations, classes_file, allow_outside_root)
    else:
        raise FgarError(f"unknown dataset format '{fmt}' (choose from {', '.join(FORMATS)})")
    if not index.entries:
        raise FgarError(f"{root_path}: the annotations list no videos")
    _check_unique_ids(index)
    index.allow_outside_root = allow_outside_root
    index.check_inside_root(", ".join(map(str, annotations)) or root_path)
    return index


def subset_of(name: str) -> str:
    """'test' when a file stem or split name has a val/test token (gym99_val_element), else 'train'."""
    tokens = re.split(r"[^a-z0-9]+", name.lower())
    return "test" if _TEST_TOKENS.intersection(tokens) else "train"


def _single_folder(annotations: list[Path], default: Path, fmt: str) -> Path:
    """The annotation folder: the one --annotations (a folder, or a file inside it), or `default`."""
    if not annotations:
        return default
    if len(annotations) > 1:
        raise FgarError(f"--annotations: {fmt} takes one annotation folder, got {len(annotations)} paths")
    if not annotations[0].exists():
        raise FgarError(f"{annotations[0]}: annotation path not found")
    return annotations[0] if annotations[0].is_dir() else annotations[0].parent


def _check_unique_ids(index: DatasetIndex) -> None:
    seen: set[str] = set()
    for e in index.entries:
        if e.id in seen:
            raise FgarError(f"{index.root}: video id '{e.id}' appears twice in the annotations")
        seen.add(e.id)


def _require_file(folder: Path, name: str) -> Path:
    path = folder / name
    if not path.is_file():
        raise FgarError(f"{path}: annotation file not found")
    return path


def _as_int(value: Any) -> int | None:
    """An int from a JSON number or a digit string; None for anything else (bools included)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()):
        return int(value)
    return None


# --------------------------------------------------------------------------- Diving48


def read_diving48(root: Path, ann_dir: Path) -> DatasetIndex:
    vocab_path = _require_file(ann_dir, "Diving48_vocab.json")
    vocab = read_json(vocab_path)
    if not isinstance(vocab, list) or not vocab:
        raise FgarError(f"{vocab_path}: expected a JSON list of class descriptions")
    class_names = []
    for i, parts in enumerate(vocab):
        if isinstance(parts, str):
            class_names.append(parts)
        elif isinstance(parts, list) and all(isinstance(p, str) for p in parts):
            class_names.append("_".join(parts))
        else:
            raise FgarError(f"{vocab_path}: vocab entry {i} is not a list of strings")
    entries: list[VideoEntry] = []
    for name, subset in (("Diving48_V2_train.json", "train"), ("Diving48_V2_test.json", "test")):
        path = ann_dir / name
        if subset == "test" and not path.is_file():
            continue  # a train-only copy of the dataset is still usable
        entries += _diving48_entries(_require_file(ann_dir, name), subset, len(class_names))
    return DatasetIndex(format="diving48", root=str(root), class_names=class_names, entries=entries)


def _diving48_entries(path: Path, subset: str, num_classes: int) -> list[VideoEntry]:
    items = read_json(path)
    if not isinstance(items, list):
        raise FgarError(f"{path}: expected a JSON list of videos")
    entries = []
    for i, item in enumerate(items):
        where = f"{path}: entry {i}"
        if not isinstance(item, dict) or not isinstance(item.get("vid_name"), str):
            raise FgarError(f"{where}: expected an object with a string 'vid_name'")
        where += f" ('{item['vid_name']}')"
        label = _as_int(item.get("label"))
        if label is None:
            raise FgarError(f"{where}: 'label' must be an integer, got {item.get('label')!r}")
        if not 0 <= label < num_classes:
            raise FgarError(f"{where}: unknown label {label} (the vocab has {num_classes} classes)")
        start, end = _as_int(item.get("start_frame", 0)), _as_int(item.get("end_frame", -1))
        if start is None or end is None or start < 0 or (end != -1 and end < start):
            raise FgarError(f"{where}: bad frame range {item.get('start_frame')!r}..{item.get('end_frame')!r}")
        entries.append(
            VideoEntry(
                id=item["vid_name"],
                path=f"rgb/{item['vid_name']}.mp4",
                label=label,
                start_frame=start,
                end_frame=end,
                subset=subset,
            )
        )
    return entries


# --------------------------------------------------------------------------- FineGym


def read_finegym(root: Path, annotations: list[Path]) -> DatasetIndex:
    lists = _finegym_lists(root, annotations)
    prefixes = {p.name.split("_")[0] for p in lists}
    if len(prefixes) != 1:
        raise FgarError(f"--annotations: element lists of different sets ({', '.join(sorted(prefixes))})")
    prefix = prefixes.pop()
    class_names = read_finegym_categories(_finegym_categories_path(root, lists[0], prefix))
    entries = []
    for path in lists:
        subset = subset_of(path.stem)
        for line_no, element_id, raw in _read_pairs(path):
            label = _as_int(raw)
            if label is None or not 0 <= label < len(class_names):
                raise FgarError(
                    f"{path}: line {line_no}: unknown label '{raw}' for '{element_id}' "
                    f"({prefix} has {len(class_names)} classes)"
                )
            entries.append(VideoEntry(id=element_id, path=f"{element_id}.mp4", label=label, subset=subset))
    return DatasetIndex(format="finegym", root=str(root), class_names=class_names, entries=entries)


def _finegym_lists(root: Path, annotations: list[Path]) -> list[Path]:
    if annotations and not (len(annotations) == 1 and annotations[0].is_dir()):
        missing = next((p for p in annotations if not p.is_file()), None)
        if missing is not None:
            raise FgarError(f"{missing}: annotation file not found")
        return annotations
    folder = annotations[0] if annotations else root
    found = [folder / n for n in ("gym99_train_element_v1.0.txt", "gym99_val_element.txt") if (folder / n).is_file()]
    if not found:
        raise FgarError(
            f"{folder}: no FineGym element list found (gym99_train_element_v1.0.txt); pass one with --annotations"
        )
    return found


def _finegym_categories_path(root: Path, first_list: Path, prefix: str) -> Path:
    name = f"{prefix}_categories.txt"
    for folder in (first_list.parent, root):
        if (folder / name).is_file():
            return folder / name
    raise FgarError(f"{first_list.parent / name}: categories file not found (looked beside the list and in {root})")


def read_finegym_categories(path: Path) -> list[str]:
    """`Clabel: 0; set: 1; Glabel: 1; (VT) round-off ...` lines -> class names indexed by Clabel."""
    names: dict[int, str] = {}
    for line_no, line in enumerate(read_text(path, "annotation file").splitlines(), start=1):
        if not line.strip():
            continue
        fields = [f.strip() for f in line.split(";", 3)]
        match = re.fullmatch(r"Clabel:\s*(\d+)", fields[0])
        if match is None or len(fields) < 4:
            raise FgarError(f"{path}: line {line_no}: expected 'Clabel: <id>; set: ..; Glabel: ..; <name>'")
        clabel = int(match.group(1))
        if clabel in names:
            raise FgarError(f"{path}: line {line_no}: Clabel {clabel} appears twice")
        names[clabel] = fields[3]
    if sorted(names) != list(range(len(names))) or not names:
        raise FgarError(f"{path}: Clabel values must be 0..N-1 with none missing")
    return [names[i] for i in range(len(names))]


def _read_pairs(path: Path) -> Iterable[tuple[int, str, str]]:
    """Lines `<element_id> <label>` -> (line number, element id, label text)."""
    for line_no, line in enumerate(read_text(path, "annotation file").splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2:
            raise FgarError(f"{path}: line {line_no}: expected '<element_id> <label>'")
        yield line_no, fields[0], fields[1]


# --------------------------------------------------------------------------- FineDiving


def read_finediving(root: Path, ann_dir: Path) -> DatasetIndex:
    ann_path = _require_file(ann_dir, "fine-grained_annotation_aqa.pkl")
    annotation = load_pickle(ann_path)
    if not isinstance(annotation, dict) or not annotation:
        raise FgarError(f"{ann_path}: expected a dict keyed by (event_name, idx)")
    action_of: dict[tuple[str, int], str] = {}
    for key, value in annotation.items():
        if not _is_finediving_key(key) or not isinstance(value, (list, tuple)) or not value:
            raise FgarError(f"{ann_path}: entry {key!r} is not (event_name, idx) -> [action_type, ...]")
        action_of[(key[0], int(key[1]))] = str(value[0])
    class_names = sorted(set(action_of.values()))
    class_id = {name: i for i, name in enumerate(class_names)}
    entries = []
    for name, subset in (("train_split.pkl", "train"), ("test_split.pkl", "test")):
        path = _require_file(ann_dir, name)
        keys = load_pickle(path)
        if not isinstance(keys, (list, tuple)):
            raise FgarError(f"{path}: expected a list of (event_name, idx) keys")
        for i, key in enumerate(keys):
            if not _is_finediving_key(key):
                raise FgarError(f"{path}: entry {i} ({key!r}) is not an (event_name, idx) key")
            event, idx = key[0], int(key[1])
            if (event, idx) not in action_of:
                raise FgarError(f"{path}: entry {i} ({event!r}, {idx}) has no annotation in {ann_path.name}")
            entries.append(
                VideoEntry(
                    id=f"{event}/{idx}", path=f"{event}/{idx}", label=class_id[action_of[(event, idx)]], subset=subset
                )
            )
    return DatasetIndex(format="finediving", root=str(root), class_names=class_names, entries=entries)


def _is_finediving_key(key: Any) -> bool:
    # numpy integers register as numbers.Integral, so an idx stored as np.int64 passes too
    return (
        isinstance(key, tuple)
        and len(key) == 2
        and isinstance(key[0], str)
        and isinstance(key[1], numbers.Integral)
        and not isinstance(key[1], bool)
    )


# --------------------------------------------------------------------------- lists and CSV


def read_classes_file(path: str | Path) -> list[str]:
    """Class names: a text file (one per line, line order = id), a JSON list, or a JSON {name: id}."""
    p = Path(path)
    if p.suffix == ".json":
        data = read_json(p)
        if isinstance(data, list) and all(isinstance(c, str) for c in data):
            return list(data)
        if isinstance(data, dict) and all(_as_int(v) is not None for v in data.values()):
            by_id = {_as_int(v): str(k) for k, v in data.items()}
            if sorted(by_id) != list(range(len(by_id))):
                raise FgarError(f"{p}: class ids must be 0..N-1 with none missing or repeated")
            return [by_id[i] for i in range(len(by_id))]
        raise FgarError(f"{p}: expected a JSON list of class names or a {{name: id}} mapping")
    if not p.is_file():
        raise FgarError(f"{p}: classes file not found")
    names = [line.strip() for line in read_text(p, "classes file").splitlines() if line.strip()]
    if len(set(names)) != len(names):
        raise FgarError(f"{p}: a class name appears twice")
    return names


def read_lists(root: Path, annotations: list[Path], classes_file: str | Path | None) -> DatasetIndex:
    if not annotations:
        raise FgarError("--annotations: the list format needs at least one list or CSV file")
    rows: list[tuple[str, str, str, str]] = []  # (where, path, raw label, subset)
    for path in annotations:
        if not path.is_file():
            raise FgarError(f"{path}: annotation file not found")
        rows += _read_csv(path) if path.suffix.lower() == ".csv" else _read_list(path)
    given = read_classes_file(classes_file) if classes_file else None
    unlabeled = [r for r in rows if r[2] in _NO_LABEL_TEXT]
    rows = [r for r in rows if r[2] not in _NO_LABEL_TEXT]
    class_names = given if given is not None else _classes_from_labels(rows)
    class_id = {name: i for i, name in enumerate(class_names)}
    ids_allowed = given is not None or _all_ints(rows)
    entries = [VideoEntry(id=video, path=video, label=NO_LABEL, subset=UNLABELED) for _, video, _, _ in unlabeled]
    for where, video, raw, subset in rows:
        label = _resolve_label(raw, class_id, len(class_names), ids_allowed)
        if label is None:
            raise FgarError(f"{where}: unknown label '{raw}' (not one of the {len(class_names)} classes)")
        entries.append(VideoEntry(id=video, path=video, label=label, subset=subset))
    return DatasetIndex(format="list", root=str(root), class_names=class_names, entries=entries)


def _read_list(path: Path) -> list[tuple[str, str, str, str]]:
    rows, subset = [], subset_of(path.stem)
    for line_no, line in enumerate(read_text(path, "annotation file").splitlines(), start=1):
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        if len(fields) > 3:
            raise FgarError(
                f"{path}: line {line_no}: expected '<path> <label>', '<path> <num_frames> <label>' "
                "or '<path>' alone (unlabeled)"
            )
        label = fields[-1] if len(fields) > 1 else ""
        rows.append((f"{path}: line {line_no}", fields[0], label, subset))
    return rows


_CSV_PATH_COLUMNS = ("path", "video", "filename", "file", "video_path")


def _read_csv(path: Path) -> list[tuple[str, str, str, str]]:
    lines = io.StringIO(read_text(path, "annotation file"), newline="")
    table = [(n, r) for n, r in enumerate(csv.reader(lines), start=1) if any(c.strip() for c in r)]
    if not table:
        return []
    header = [c.strip().lower() for c in table[0][1]]
    if "label" not in header:  # no header: `path,label` rows (`path` alone: unlabeled)
        return [_csv_row(path, n, r, 0, len(r) - 1, subset_of(path.stem)) for n, r in table]
    col = {name: i for i, name in enumerate(header)}
    path_col = next((c for c in _CSV_PATH_COLUMNS if c in col), None)
    if path_col is None and not all(c in col for c in ("youtube_id", "time_start", "time_end")):
        raise FgarError(
            f"{path}: CSV header needs a path column ({', '.join(_CSV_PATH_COLUMNS)}) or youtube_id,time_start,time_end"
        )
    rows = []
    for n, r in table[1:]:
        if len(r) != len(header):
            raise FgarError(f"{path}: line {n}: {len(r)} fields, the header has {len(header)}")
        if path_col is None:  # Kinetics: clips are conventionally named <youtube_id>_<start:06d>_<end:06d>.mp4
            start, end = _as_int(r[col["time_start"]].split(".")[0]), _as_int(r[col["time_end"]].split(".")[0])
            if start is None or end is None:
                raise FgarError(f"{path}: line {n}: time_start/time_end must be numbers")
            r = [*r, f"{r[col['youtube_id']].strip()}_{start:06d}_{end:06d}.mp4"]
        subset = subset_of(r[col["split"]]) if "split" in col else subset_of(path.stem)
        rows.append(_csv_row(path, n, r, col[path_col] if path_col else len(r) - 1, col["label"], subset))
    return rows


def _csv_row(
    path: Path, line_no: int, row: list[str], path_col: int, label_col: int, subset: str
) -> tuple[str, str, str, str]:
    video = row[path_col].strip()
    label = row[label_col].strip() if label_col != path_col else ""
    if not video:
        raise FgarError(f"{path}: line {line_no}: expected a video path (and a label, or none if unlabeled)")
    return (f"{path}: line {line_no}", video, label, subset)


def _all_ints(rows: list[tuple[str, str, str, str]]) -> bool:
    return all(_as_int(raw) is not None for _, _, raw, _ in rows)


def _classes_from_labels(rows: list[tuple[str, str, str, str]]) -> list[str]:
    """Without a classes file: ids 0..max when every label is an id, else the sorted distinct names."""
    if not rows:
        return []
    if _all_ints(rows):
        ids = [_as_int(raw) for _, _, raw, _ in rows]
        bad = next((r for r, i in zip(rows, ids, strict=True) if i is None or i < 0), None)
        if bad is not None:
            raise FgarError(f"{bad[0]}: unknown label '{bad[2]}' (class ids start at 0)")
        return [str(i) for i in range(max(i for i in ids if i is not None) + 1)]
    numeric = next((r for r in rows if _as_int(r[2]) is not None), None)
    if numeric is not None:
        raise FgarError(
            f"{numeric[0]}: label '{numeric[2]}' is a class id, but other labels are class names "
            "(pass --classes to map ids to names)"
        )
    return sorted({raw for _, _, raw, _ in rows})


def _resolve_label(raw: str, class_id: dict[str, int], num_classes: int, ids_allowed: bool) -> int | None:
    as_int = _as_int(raw) if ids_allowed else None
    if as_int is not None:
        return as_int if 0 <= as_int < num_classes else None
    return class_id.get(raw)


# --------------------------------------------------------------------------- folder per class


def read_folder(root: Path, classes_file: str | Path | None) -> DatasetIndex:
    class_names = read_classes_file(classes_file) if classes_file else None
    unlabeled_is_class = class_names is not None and UNLABELED in class_names
    subdirs = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    layout_names = {"train", "val", "test"} | (set() if unlabeled_is_class else {UNLABELED})
    split_layout = "train" in subdirs and set(subdirs) <= layout_names
    tops = [(root / s, subset_of(s)) for s in subdirs if s != UNLABELED] if split_layout else [(root, "train")]
    found: list[tuple[Path, str, str]] = []  # (video, class name, subset)
    for top, subset in tops:
        for class_dir in _subfolders(top):
            if class_dir.name == UNLABELED and not unlabeled_is_class:
                continue
            found += [(video, class_dir.name, subset) for video in _videos_in(class_dir)]
    # root/unlabeled/, and train/unlabeled/ (or val/, test/) in the split layout
    unlabeled_dirs = (
        [] if unlabeled_is_class else list(dict.fromkeys([root / UNLABELED, *(t / UNLABELED for t, _ in tops)]))
    )
    unlabeled = [v for d in unlabeled_dirs if d.is_dir() for v in _videos_in(d)]
    if class_names is None:
        class_names = sorted({c for _, c, _ in found})
    class_id = {name: i for i, name in enumerate(class_names)}
    entries = []
    for video, class_name, subset in found:
        if class_name not in class_id:
            raise FgarError(f"{video.parent}: unknown class folder '{class_name}' (not in {classes_file})")
        rel = video.relative_to(root).as_posix()
        entries.append(VideoEntry(id=rel, path=rel, label=class_id[class_name], subset=subset))
    for video in unlabeled:
        rel = video.relative_to(root).as_posix()
        entries.append(VideoEntry(id=rel, path=rel, label=NO_LABEL, subset=UNLABELED))
    if not any(e.label != NO_LABEL for e in entries):
        raise FgarError(f"{root}: no labeled videos found in <root>/<class>/ folders")
    return DatasetIndex(format="folder", root=str(root), class_names=class_names, entries=entries)


def _subfolders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _videos_in(folder: Path) -> list[Path]:
    """The video files and frame folders directly inside `folder`."""
    return [
        v
        for v in sorted(folder.iterdir())
        if not v.name.startswith(".") and (v.is_dir() or v.suffix.lower() in VIDEO_SUFFIXES)
    ]


# --------------------------------------------------------------------------- sequences: .ts files


def read_ts(root: Path, annotations: list[Path]) -> DatasetIndex:
    """UEA/UCR `.ts` files -> one entry per case; subsets from the file names (`_TEST`: test)."""
    from fgar_cli.data.sequences import parse_ts

    files = sorted(_ts_files(root, annotations), key=lambda p: subset_of(p.stem) != "train")  # TRAIN first
    parsed = [parse_ts(p) for p in files]
    first = parsed[0]
    other = next((ts for ts in parsed if ts.dims != first.dims), None)
    if other is not None:
        raise FgarError(
            f"{other.path}: cases of {other.dims} dimensions, but {first.path.name} has {first.dims}; "
            "the files of one dataset must agree"
        )
    # the union of the header class lists, in order of first appearance (TRAIN's header first)
    class_names = list(dict.fromkeys(label for ts in parsed for label in ts.class_labels))
    class_id = {name: i for i, name in enumerate(class_names)}
    entries = []
    for ts in parsed:
        subset, rel = subset_of(ts.path.stem), _relative_to(ts.path, root)
        width = max(4, len(str(len(ts.series) - 1)))
        for row, (case, label) in enumerate(zip(ts.series, ts.labels, strict=True)):
            entries.append(
                VideoEntry(
                    id=f"{ts.path.stem}_{row:0{width}d}",
                    path=rel,
                    label=class_id[label],
                    num_frames=case.shape[0],
                    subset=subset,
                    key=str(row),
                )
            )
    return DatasetIndex(format="ts", root=str(root), class_names=class_names, entries=entries, input_dim=first.dims)


def _ts_files(root: Path, annotations: list[Path]) -> list[Path]:
    """The .ts files given, or those of one problem found in the one folder given (default: root)."""
    if annotations and not (len(annotations) == 1 and annotations[0].is_dir()):
        for path in annotations:
            if not path.is_file():
                raise FgarError(f"{path}: annotation file not found")
            if path.suffix.lower() != ".ts":
                raise FgarError(f"{path}: not a .ts file (the ts format reads NAME_TRAIN.ts and NAME_TEST.ts)")
        return annotations
    folder = annotations[0] if annotations else root
    found = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() == ".ts")
    split_files = [p for p in found if re.search(r"_(train|test)$", p.stem, re.IGNORECASE)]
    problems = sorted({p.stem.rsplit("_", 1)[0] for p in split_files})
    if len(problems) > 1:
        raise FgarError(f"{folder}: .ts files of several problems ({', '.join(problems)}); pass one with --annotations")
    if split_files:
        return split_files
    if len(found) == 1:
        return found
    if not found:
        raise FgarError(f"{folder}: no .ts file found (expected NAME_TRAIN.ts and NAME_TEST.ts)")
    raise FgarError(
        f"{folder}: {len(found)} .ts files and none named NAME_TRAIN.ts or NAME_TEST.ts; pass them with --annotations"
    )


def _relative_to(path: Path, root: Path) -> str:
    """`path` relative to root when it lies inside (portable indexes), else absolute."""
    resolved = path.resolve()
    try:
        return resolved.relative_to(root).as_posix()
    except ValueError:
        return str(resolved)


# --------------------------------------------------------------------------- sequences: .npy / .npz files

_NPZ_COLUMNS = ("path", "label", "group", "split")
_NPZ_SUFFIXES = (".npy", ".npz")
_NPZ_MEMBER = re.compile(r"(.+\.npz):([^/\\:]+)", re.IGNORECASE)  # FILE.npz:NAME, one array of an .npz


def read_npz(
    root: Path, annotations: list[Path], classes_file: str | Path | None = None, allow_outside_root: bool = False
) -> DatasetIndex:
    """A CSV `path,label[,group][,split]` of .npy/.npz sequences; each file is read here for its T and D.

    D is the D of most readable files (ties: the first); a file with another D, and an unreadable one,
    goes to `skipped` with its reason, as an unreadable video does."""
    if not annotations:
        raise FgarError("--annotations: the npz format needs a CSV file with the columns path,label[,group][,split]")
    rows: list[tuple[str, str, str, str]] = []  # (where, path text, raw label, subset), as read_lists has them
    groups: dict[str, str] = {}  # path text -> group
    for csv_path in annotations:
        if not csv_path.is_file():
            raise FgarError(f"{csv_path}: annotation file not found")
        for row, group in _read_npz_csv(csv_path):
            rows.append(row)
            groups[row[1]] = group
    if not rows:
        raise FgarError(f"{', '.join(map(str, annotations))}: the CSV lists no sequences")
    given = read_classes_file(classes_file) if classes_file else None
    labeled = [r for r in rows if r[2] not in _NO_LABEL_TEXT]
    class_names = given if given is not None else _classes_from_labels(labeled)
    class_id = {name: i for i, name in enumerate(class_names)}
    ids_allowed = given is not None or _all_ints(labeled)
    entries = []
    for where, text, raw, subset in rows:
        file, key = npz_member(text)
        if raw in _NO_LABEL_TEXT:
            label, subset = NO_LABEL, UNLABELED
        else:
            resolved = _resolve_label(raw, class_id, len(class_names), ids_allowed)
            if resolved is None:
                raise FgarError(f"{where}: unknown label '{raw}' (not one of the {len(class_names)} classes)")
            label = resolved
        entries.append(VideoEntry(id=text, path=file, label=label, subset=subset, key=key, group=groups[text]))
    index = DatasetIndex(format="npz", root=str(root), class_names=class_names, entries=entries)
    index.allow_outside_root = allow_outside_root
    index.check_inside_root(", ".join(map(str, annotations)))  # before any file outside root is opened
    return _measure_sequences(index)


def _read_npz_csv(path: Path) -> list[tuple[tuple[str, str, str, str], str]]:
    """((where, path text, raw label, subset), group) per data row of one CSV."""
    lines = io.StringIO(read_text(path, "annotation file"), newline="")
    table = [(n, r) for n, r in enumerate(csv.reader(lines), start=1) if any(c.strip() for c in r)]
    if not table:
        return []
    header = [c.strip().lower() for c in table[0][1]]
    unknown = [c for c in header if c not in _NPZ_COLUMNS]
    if "path" not in header or "label" not in header or unknown or len(set(header)) != len(header):
        raise FgarError(
            f"{path}: line {table[0][0]}: the header must name the columns path,label[,group][,split]"
            + (f" (unknown: {', '.join(unknown)})" if unknown else "")
        )
    col = {name: i for i, name in enumerate(header)}
    rows = []
    for n, r in table[1:]:
        where = f"{path}: line {n}"
        if len(r) != len(header):
            raise FgarError(f"{where}: {len(r)} fields, the header has {len(header)}")
        text = r[col["path"]].strip()
        if not text:
            raise FgarError(f"{where}: expected the path of a .npy or .npz file")
        file, _ = npz_member(text)
        if Path(file).suffix.lower() not in _NPZ_SUFFIXES:
            raise FgarError(f"{where}: '{text}' is not a .npy or .npz file")
        split = r[col["split"]].strip().lower() if "split" in col else ""
        if split not in ("", "train", "test"):
            raise FgarError(f"{where}: split '{r[col['split']].strip()}' must be train or test")
        group = r[col["group"]].strip() if "group" in col else ""
        rows.append(((where, text, r[col["label"]].strip(), split or "train"), group))
    return rows


def npz_member(text: str) -> tuple[str, str]:
    """'clips/a.npz:pose' -> ('clips/a.npz', 'pose'); any other path -> (path, '')."""
    member = _NPZ_MEMBER.fullmatch(text)
    return (member.group(1), member.group(2)) if member else (text, "")


def _measure_sequences(index: DatasetIndex) -> DatasetIndex:
    """Read every entry's sequence for its length T and step size D; skip the unreadable ones."""
    from fgar_cli.data.sequences import SequenceReadError, read_sequence

    shapes: dict[str, tuple[int, int]] = {}
    skipped = list(index.skipped)
    for entry in index.entries:
        try:
            shapes[entry.id] = read_sequence(index.resolve(entry), entry.key).shape
        except SequenceReadError as exc:
            skipped.append({"path": _skip_name(index, entry), "reason": exc.problem})
    if not shapes:
        first = skipped[0] if skipped else {"path": index.root, "reason": "nothing listed"}
        raise FgarError(
            f"{first['path']}: {first['reason']} (none of the {len(index.entries)} sequences could be read)"
        )
    # most_common keeps first-seen order among equal counts: ties go to the first file's D
    input_dim = Counter(d for _, d in shapes.values()).most_common(1)[0][0]
    kept = []
    for entry in index.entries:
        if entry.id not in shapes:
            continue
        steps, dim = shapes[entry.id]
        if dim != input_dim:
            skipped.append(
                {"path": _skip_name(index, entry), "reason": f"{dim} values per step; most files have {input_dim}"}
            )
            continue
        kept.append(replace(entry, num_frames=steps))
    return replace(index, entries=kept, skipped=skipped, input_dim=input_dim)


def _skip_name(index: DatasetIndex, entry: VideoEntry) -> str:
    """The skipped list's name of a sequence: its file, and `:NAME` for one array of an .npz."""
    return f"{index.resolve(entry)}:{entry.key}" if entry.key else str(index.resolve(entry))


# --------------------------------------------------------------------------- counting frames


def _count_one(path: str) -> tuple[int, str]:
    """(decodable frames, '') or (-1, the reason without the path in front)."""
    from fgar_cli.data.video import count_frames

    try:
        return count_frames(path), ""
    except FgarError as exc:
        reason = str(exc)
        return -1, reason[len(path) + 2 :] if reason.startswith(f"{path}: ") else reason


def measure_entries(index: DatasetIndex, on_done: Callable[[VideoEntry], None] | None = None) -> DatasetIndex:
    """Decode every video to count its frames; keep the entries with frames in [start, end).

    Unreadable videos, and videos with no decodable frame in range, go to `skipped` with a reason.
    `end_frame` is clipped to the decodable count, so `num_frames = end_frame - start_frame`.
    """
    if index.is_sequence:  # no frames to count: the sequence adapters read T and D themselves
        return index
    kept, skipped = [], list(index.skipped)
    for entry in index.entries:
        path = str(index.resolve(entry))
        total, reason = _count_one(path)
        if on_done is not None:
            on_done(entry)
        if total < 0:
            skipped.append({"path": path, "reason": reason})
            continue
        end = total if entry.end_frame < 0 else min(entry.end_frame, total)
        if end - entry.start_frame <= 0:
            asked = f"[{entry.start_frame}, {entry.end_frame if entry.end_frame >= 0 else 'end'})"
            skipped.append({"path": path, "reason": f"no decodable frames in {asked} ({total} decodable)"})
            continue
        kept.append(replace(entry, end_frame=end, num_frames=end - entry.start_frame))
    return DatasetIndex(
        format=index.format, root=index.root, class_names=index.class_names, entries=kept, skipped=skipped
    )
