"""Sequence inputs: per-step vectors (pose, sensors, precomputed features) instead of video frames.

One sequence is a float32 array (L, D): L steps of D values, NaN where a value is missing.
`read_sequence(path, key)` reads one from:
* `.ts`: a UEA/UCR time-series file (`parse_ts`); `key` is the case's row number ("0", "1", ...).
  The file is parsed once per process and cached by (path, mtime), so a DataLoader worker parses it
  once, not once per clip.
* `.h5` / `.hdf5`: an fgar feature store (docs/DATA.md): `key` names the dataset `sequences/<key>`.
  Handles open lazily and are cached per process id: a DataLoader worker forked from a process that
  had the file open opens its own (HDF5 handles are not safe to share across fork).
* `.npy`: one array, `key` "".
* `.npz`: `key` names the array; "" means the only array in the file.
A 1-D array is L steps of one value. Anything else wrong (a missing or unreadable file, no such record,
not numeric, not 1-D or 2-D, no steps, infinite values, or not the expected D values per step) raises
`SequenceReadError`, a `VideoDecodeError`: the training loop skips and counts it like a bad video, and
`fgar data index` skips it, or fails with `--strict`.

`fill_missing` interpolates the NaNs over time; `channel_stats` gives the per-channel mean and std that
the models' input normalisation uses.

The `.ts` format (the UEA/UCR archive; sktime's `load_from_tsfile` reads the same files): `#` comment
lines, then headers `@problemName NAME`, `@timeStamps false`, `@missing true|false`, `@univariate
true|false`, `@dimensions N` (optional), `@equalLength true|false`, `@seriesLength N`, `@classLabel
true LABEL ...`, then `@data` and one case per line: the dimensions separated by `:`, values by `,`, the
class label last. `?` or `NaN` is a missing value. Time stamps (`@timeStamps true`) and regression files
(`@targetLabel`) are refused with a line that says so; headers this reader does not know are ignored.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fgar_cli.data.video import VideoDecodeError
from fgar_cli.errors import FgarError
from fgar_cli.files import read_text

FEATURES_SCHEMA = "fgar.features/1"  # root attribute `schema` of a feature store (docs/DATA.md)
SEQUENCES_GROUP = "sequences"  # a feature store holds one dataset per clip: sequences/<entry id>
SEQUENCE_SUFFIXES = (".ts", ".h5", ".hdf5", ".npy", ".npz")


class SequenceReadError(VideoDecodeError):
    """A sequence file or record that is missing, unreadable or not a (steps, values) array.

    `problem` is the message without the file in front, for the index's `skipped` list."""

    def __init__(self, message: str, problem: str = "") -> None:
        super().__init__(message)
        self.problem = problem or message

    @classmethod
    def at(cls, path: str | Path, key: str, problem: str) -> SequenceReadError:
        """'<path> [<key>]: <problem>' (no key part for a lone array)."""
        return cls(f"{record_name(path, key)}: {problem}", problem)


def record_name(path: str | Path, key: str) -> str:
    """How messages name a record: the file, and the key inside it when there is one."""
    return f"{path} [{key}]" if key else str(path)


def _one_line(exc: BaseException) -> str:
    """An exception's text on one line (h5py and zipfile messages may span several)."""
    return " ".join(str(exc).split()) or type(exc).__name__


# --------------------------------------------------------------------------- reading one sequence


def read_sequence(path: Path, key: str = "", input_dim: int = 0) -> np.ndarray:
    """The sequence `key` of `path` as float32 (L, D), NaN where missing; `input_dim` > 0 checks D."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".ts":
        raw: Any = _ts_case(path, key)
    elif suffix in (".h5", ".hdf5"):
        raw = _h5_sequence(path, key)
    elif suffix == ".npy":
        raw = _npy_array(path, key)
    elif suffix == ".npz":
        raw = _npz_array(path, key)
    else:
        raise SequenceReadError.at(
            path, key, f"unknown sequence file type '{suffix}' (expected one of {', '.join(SEQUENCE_SUFFIXES)})"
        )
    return as_steps(raw, path, key, input_dim)


def as_steps(raw: Any, path: str | Path, key: str = "", input_dim: int = 0) -> np.ndarray:
    """Check an array read from `path` and return it as float32 (L, D); 1-D arrays become (L, 1)."""
    array = np.asarray(raw)
    if array.dtype.kind not in "iuf":  # bool, strings, objects, complex: not step values
        raise SequenceReadError.at(path, key, f"holds {array.dtype} values, expected numbers")
    if array.ndim == 1:
        array = array.reshape(-1, 1)
    if array.ndim != 2:
        raise SequenceReadError.at(
            path, key, f"a {array.ndim}-D array of shape {tuple(array.shape)}, expected (steps, values)"
        )
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise SequenceReadError.at(path, key, f"empty: shape {tuple(array.shape)}")
    if input_dim and array.shape[1] != input_dim:
        raise SequenceReadError.at(path, key, f"{array.shape[1]} values per step, expected {input_dim}")
    with np.errstate(over="ignore"):  # a float64 beyond float32's range becomes inf, refused just below
        steps = array.astype(np.float32, copy=False)
    if np.isinf(steps).any():  # NaN means missing; an infinity (or a float64 beyond float32) is broken data
        raise SequenceReadError.at(path, key, "holds infinite values (or values beyond float32)")
    return steps


def _file_stamp(path: Path, key: str) -> tuple[str, int, int]:
    """(absolute path, mtime in ns, size): the cache key that notices a rewritten file."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        raise SequenceReadError.at(path, key, "file not found") from None
    except OSError as exc:
        raise SequenceReadError.at(path, key, f"cannot read ({_one_line(exc)})") from None
    if not path.is_file():
        raise SequenceReadError.at(path, key, "not a file")
    return str(path.absolute()), stat.st_mtime_ns, stat.st_size


def _npy_array(path: Path, key: str) -> np.ndarray:
    if key:
        raise SequenceReadError.at(path, key, "a .npy file holds one array and no named records")
    _file_stamp(path, key)
    try:
        return np.load(path, allow_pickle=False)
    except Exception as exc:  # numpy raises ValueError, OSError, EOFError... for bad files
        raise SequenceReadError.at(path, key, f"not a readable .npy file ({_one_line(exc)})") from None


def _npz_array(path: Path, key: str) -> np.ndarray:
    _file_stamp(path, key)
    try:
        with np.load(path, allow_pickle=False) as archive:
            names = list(archive.files)
            if not key:
                if len(names) != 1:
                    listed = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
                    raise SequenceReadError.at(
                        path, key, f"holds {len(names)} arrays ({listed or 'none'}); name one as FILE.npz:NAME"
                    )
                return archive[names[0]]
            if key not in names:
                raise SequenceReadError.at(path, key, f"no array '{key}' (the file holds {', '.join(names) or 'none'})")
            return archive[key]
    except SequenceReadError:
        raise
    except Exception as exc:  # BadZipFile, ValueError (pickled objects), OSError, EOFError...
        raise SequenceReadError.at(path, key, f"not a readable .npz file ({_one_line(exc)})") from None


def sequence_keys(path: Path) -> list[str]:
    """The keys of every record a sequence file holds, in the file's order: a .ts file's rows ("0",
    "1", ...), a feature store's datasets, an .npz file's arrays; "" for a .npy file's one array.
    A file that cannot be read, or holds no record, raises SequenceReadError."""
    keys = _record_keys(Path(path))
    if not keys:
        raise SequenceReadError.at(path, "", "holds no sequences")
    return keys


def _record_keys(path: Path) -> list[str]:
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return [""]
    if suffix == ".ts":
        return [str(row) for row in range(len(_parsed_ts(path, "").series))]
    if suffix in (".h5", ".hdf5"):
        group = _h5_file(path, "").get(SEQUENCES_GROUP)
        return list(group.keys()) if group is not None else []
    if suffix == ".npz":
        _file_stamp(path, "")
        try:
            with np.load(path, allow_pickle=False) as archive:
                return list(archive.files)
        except Exception as exc:  # BadZipFile, OSError, EOFError...
            raise SequenceReadError.at(path, "", f"not a readable .npz file ({_one_line(exc)})") from None
    raise SequenceReadError.at(
        path, "", f"unknown sequence file type '{suffix}' (expected one of {', '.join(SEQUENCE_SUFFIXES)})"
    )


# --------------------------------------------------------------------------- HDF5 feature stores

_h5_files: dict[str, tuple[tuple[int, int], Any]] = {}  # absolute path -> ((mtime, size), open h5py.File)
_h5_pid = os.getpid()
# Handles a forked child inherited from its parent. They stay referenced so that the child never
# closes them: closing runs HDF5 library code on state copied from the parent, for no gain.
_h5_inherited: list[Any] = []


def _h5_file(path: Path, key: str) -> Any:
    """The open feature store at `path`, opened once per process (and again if the file changed)."""
    global _h5_pid
    import h5py

    if os.getpid() != _h5_pid:
        _h5_inherited.extend(handle for _, handle in _h5_files.values())
        _h5_files.clear()
        _h5_pid = os.getpid()
    name, mtime, size = _file_stamp(path, key)
    cached = _h5_files.get(name)
    if cached is not None and cached[0] == (mtime, size):
        return cached[1]
    if cached is not None:
        cached[1].close()
        del _h5_files[name]
    try:
        handle = h5py.File(path, "r")
    except OSError as exc:
        raise SequenceReadError.at(path, key, f"not a readable HDF5 file ({_one_line(exc)})") from None
    schema = handle.attrs.get("schema")
    schema = schema.decode() if isinstance(schema, bytes) else schema
    # A store without a schema (written by hand, or by another tool) is read on its layout alone.
    if schema is not None and schema not in (FEATURES_SCHEMA, FEATURES_SCHEMA.split("/")[0]):
        handle.close()
        raise SequenceReadError.at(
            path, key, f"not an fgar feature store (schema '{schema}', expected '{FEATURES_SCHEMA}')"
        )
    _h5_files[name] = ((mtime, size), handle)
    return handle


def _h5_sequence(path: Path, key: str) -> np.ndarray:
    import h5py

    if not key:
        raise SequenceReadError.at(path, key, f"a feature store needs a key (the dataset {SEQUENCES_GROUP}/<key>)")
    handle = _h5_file(path, key)
    dataset = handle.get(f"{SEQUENCES_GROUP}/{key}")
    if not isinstance(dataset, h5py.Dataset):
        raise SequenceReadError.at(path, key, f"no dataset '{SEQUENCES_GROUP}/{key}'")
    try:
        return dataset[()]
    except (OSError, TypeError, ValueError) as exc:
        raise SequenceReadError.at(path, key, f"cannot read '{SEQUENCES_GROUP}/{key}' ({_one_line(exc)})") from None


# --------------------------------------------------------------------------- .ts files


@dataclass
class TsFile:
    """A parsed UEA/UCR `.ts` classification file."""

    path: Path
    problem_name: str
    series: list[np.ndarray]  # one float32 (L, D) per case, NaN = missing (and padding of short dimensions)
    labels: list[str]  # each case's class label, one of class_labels
    class_labels: list[str]  # in the order of the @classLabel header
    dims: int  # D: dimensions of every case
    univariate: bool
    equal_length: bool
    series_length: int | None  # @seriesLength, when given
    missing: bool  # @missing: the header says values may be missing
    lines: list[int] = field(default_factory=list)  # the line number of each case, for messages


_ts_files: dict[str, tuple[tuple[int, int], TsFile]] = {}  # absolute path -> ((mtime, size), parsed file)


def _parsed_ts(path: Path, key: str) -> TsFile:
    name, mtime, size = _file_stamp(path, key)
    cached = _ts_files.get(name)
    if cached is None or cached[0] != (mtime, size):
        # Only the newest parse of a path is kept: one parsed file per .ts, however often it changes.
        cached = ((mtime, size), parse_ts(path))
        _ts_files[name] = cached
    return cached[1]


def _ts_case(path: Path, key: str) -> np.ndarray:
    ts = _parsed_ts(path, key)
    if not re.fullmatch(r"\d+", key) or int(key) >= len(ts.series):
        raise SequenceReadError.at(
            path, key, f"no case '{key}' (the key of a .ts record is its row, 0..{len(ts.series) - 1})"
        )
    return ts.series[int(key)].copy()  # the cached case itself must never reach a caller that edits it


_Fail = Callable[[int, str], SequenceReadError]  # (line number, problem) -> the error to raise
_BOOLEAN_HEADERS = ("timestamps", "missing", "univariate", "equallength")
_INTEGER_HEADERS = ("dimensions", "serieslength")


def parse_ts(path: str | Path) -> TsFile:
    """Read a `.ts` classification file; every problem is a one-line error naming the file and line."""
    path = Path(path)
    try:
        text = read_text(path, "time series file")
    except FgarError as exc:
        message = str(exc)
        raise SequenceReadError(message, message.removeprefix(f"{path}: ")) from None
    header: dict[str, Any] = {}
    class_labels: list[str] | None = None
    series: list[np.ndarray] = []
    labels: list[str] = []
    case_lines: list[int] = []
    dims: int | None = None
    in_data = False

    def fail(line_no: int, problem: str) -> SequenceReadError:
        return SequenceReadError(f"{path}: line {line_no}: {problem}", f"line {line_no}: {problem}")

    for line_no, raw_line in enumerate(text.splitlines(), start=1):
        line = raw_line.strip()
        if not line or line.startswith("#"):
            continue
        if in_data:
            assert class_labels is not None  # checked when @data was read
            case, label = _ts_case_line(line, line_no, dims, class_labels, header, fail)
            if dims is None:
                dims = case.shape[1]
            series.append(case)
            labels.append(label)
            case_lines.append(line_no)
            continue
        if not line.startswith("@"):
            raise fail(line_no, f"expected a @header or @data before the data, got '{line[:40]}'")
        tag, _, value = line.partition(" ")
        tag, value = tag[1:].lower(), value.strip()
        if tag in _BOOLEAN_HEADERS:
            if value.lower() not in ("true", "false"):
                raise fail(line_no, f"@{tag} must be true or false, got '{value}'")
            header[tag] = value.lower() == "true"
            if tag == "timestamps" and header[tag]:
                raise fail(line_no, "time stamps are not supported (@timeStamps true); write the values alone")
        elif tag in _INTEGER_HEADERS:
            if not re.fullmatch(r"\d+", value) or int(value) < 1:
                raise fail(line_no, f"@{tag} must be a positive integer, got '{value}'")
            header[tag] = int(value)
        elif tag == "problemname":
            header[tag] = value
        elif tag == "classlabel":
            flag, *names = value.split()
            if flag.lower() == "false":
                raise fail(line_no, "no class labels (@classLabel false): fgar reads classification files")
            if flag.lower() != "true" or not names:
                raise fail(line_no, "expected '@classLabel true LABEL LABEL ...'")
            if len(set(names)) != len(names):
                raise fail(line_no, "a class label appears twice in @classLabel")
            class_labels = names
        elif tag == "targetlabel":
            raise fail(line_no, "a regression file (@targetLabel); fgar reads classification files (@classLabel)")
        elif tag == "data":
            if class_labels is None:
                raise fail(line_no, "no @classLabel header before @data: fgar needs the class labels")
            if header.get("univariate") and header.get("dimensions", 1) != 1:
                raise fail(line_no, f"@univariate true but @dimensions {header['dimensions']}")
            dims = header.get("dimensions", 1 if header.get("univariate") else None)
            in_data = True
        # other headers (metadata of newer archive versions) say nothing this reader needs
    if not in_data:
        raise SequenceReadError(f"{path}: no @data section", "no @data section")
    if not series:
        raise SequenceReadError(f"{path}: no cases after @data", "no cases after @data")
    assert class_labels is not None and dims is not None
    return TsFile(
        path=path,
        problem_name=str(header.get("problemname", path.stem)),
        series=series,
        labels=labels,
        class_labels=class_labels,
        dims=dims,
        univariate=dims == 1,
        equal_length=bool(header.get("equallength", True)),
        series_length=header.get("serieslength"),
        missing=bool(header.get("missing", False)),
        lines=case_lines,
    )


def _ts_case_line(
    line: str, line_no: int, dims: int | None, class_labels: list[str], header: dict[str, Any], fail: _Fail
) -> tuple[np.ndarray, str]:
    """One data line -> (float32 (L, D) with NaN padding, label)."""
    if "(" in line:
        raise fail(line_no, "time stamps '(t,value)' are not supported; write the values alone")
    *fields, label = line.split(":")
    label = label.strip()
    if not fields:
        raise fail(line_no, "expected 'values:...:label' (dimensions separated by ':', the label last)")
    if dims is not None and len(fields) != dims:
        raise fail(line_no, f"{len(fields)} dimensions, expected {dims}")
    if label not in class_labels:
        shown = " ".join(class_labels[:10]) + (" ..." if len(class_labels) > 10 else "")
        raise fail(line_no, f"label '{label}' is not one of @classLabel ({shown})")
    values = [_ts_values(text, line_no, d, fail) for d, text in enumerate(fields, start=1)]
    lengths = {len(v) for v in values}
    if header.get("equallength", True):
        expected = header.get("serieslength")
        if len(lengths) > 1 or (expected is not None and lengths != {expected}):
            found = "/".join(str(len(v)) for v in values)
            wanted = f"@seriesLength {expected}" if expected is not None else "one length"
            raise fail(line_no, f"dimension lengths {found}, but @equalLength true says {wanted}")
    case = np.full((max(lengths), len(values)), np.nan, dtype=np.float32)
    for d, v in enumerate(values):
        case[: len(v), d] = v
    return case, label


def _ts_values(text: str, line_no: int, dim: int, fail: _Fail) -> np.ndarray:
    """'1.5,?,2' -> [1.5, nan, 2]; '?' and 'NaN' are missing values."""
    if not text.strip():
        raise fail(line_no, f"dimension {dim} has no values")
    tokens = text.split(",")
    try:
        # numpy parses 'nan' in any case; '?' is the archive's own missing marker
        values = np.array([t if t.strip() != "?" else "nan" for t in tokens], dtype=np.float64)
    except ValueError:
        bad = next(t.strip() for t in tokens if not _is_number(t))
        problem = f"'{bad}' is not a number (missing values are '?')" if bad else "an empty value between commas"
        raise fail(line_no, f"dimension {dim}: {problem}") from None
    if np.isinf(values).any():
        raise fail(line_no, f"dimension {dim}: an infinite value")
    return values


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return token.strip() == "?"
    return True


# --------------------------------------------------------------------------- missing values and statistics


def fill_missing(x: np.ndarray) -> np.ndarray:
    """NaNs replaced per channel by linear interpolation over time; the edges take the nearest value.

    A channel without any value stays NaN: the model's input normalisation maps it to 0."""
    out = np.array(x, dtype=np.float32, copy=True)
    if out.ndim == 1:
        out = out.reshape(-1, 1)
    missing = np.isnan(out)
    if not missing.any():
        return out
    steps = np.arange(out.shape[0])
    for channel in np.flatnonzero(missing.any(axis=0)):
        known = ~missing[:, channel]
        if known.any():
            # np.interp holds the first/last known value beyond the ends: nearest-value edges
            out[:, channel] = np.interp(steps, steps[known], out[known, channel])
    return out


def channel_stats(arrays: Iterable[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and (population) std over every step of every array, NaNs left out.

    Accumulated in float64 per array and merged with Chan et al.'s pairwise update, which stays
    accurate for long recordings with a large offset (a plain sum of squares does not). A channel
    without values gets mean 0; a std of 0 or NaN (constant or absent channel) becomes 1."""
    count: np.ndarray | None = None
    mean = m2 = np.zeros(0)
    for raw in arrays:
        x = np.asarray(raw, dtype=np.float64)
        x = x.reshape(-1, 1) if x.ndim == 1 else x
        if count is None:
            count, mean, m2 = np.zeros(x.shape[1]), np.zeros(x.shape[1]), np.zeros(x.shape[1])
        elif x.shape[1] != count.shape[0]:
            raise FgarError(f"sequences of {count.shape[0]} and {x.shape[1]} values per step cannot be pooled")
        known = ~np.isnan(x)
        n = known.sum(axis=0).astype(np.float64)
        safe_n = np.maximum(n, 1)
        part_mean = np.where(known, x, 0).sum(axis=0) / safe_n
        part_m2 = (np.where(known, x - part_mean, 0) ** 2).sum(axis=0)
        total = count + n
        safe_total = np.maximum(total, 1)
        delta = part_mean - mean
        mean = mean + delta * n / safe_total
        m2 = m2 + part_m2 + delta**2 * count * n / safe_total
        count = total
    if count is None:
        raise FgarError("channel statistics need at least one sequence")
    std = np.sqrt(m2 / np.maximum(count, 1))
    mean = np.where(count > 0, mean, 0.0)
    std = np.where((count > 0) & (std > 0) & np.isfinite(std), std, 1.0)
    return mean, std
