"""`fgar data index|split|inspect`: build a dataset index, make label splits, look inside any fgar file."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from fgar_cli.artifacts import sha256_file
from fgar_cli.commands.options import default_note
from fgar_cli.data.adapters import measure_entries, read_dataset
from fgar_cli.data.index import DatasetIndex, load_index, read_json, save_index
from fgar_cli.data.splits import (
    Split,
    check_fraction,
    check_split,
    check_test_fraction,
    load_split,
    make_split,
    save_split,
    split_summary,
    thin_classes,
)
from fgar_cli.errors import FgarError
from fgar_cli.files import check_output_file, read_bytes

data_app = typer.Typer(
    help="Dataset indexes (videos, .ts and .npy/.npz sequences), label splits, frozen-backbone features "
    "and a viewer for fgar files.",
    no_args_is_help=True,
    epilog="Example: fgar data index --format diving48 --root /data/Diving48 --out d48.json",
)

console = Console()
err_console = Console(stderr=True)


class DatasetFormat(StrEnum):
    diving48 = "diving48"
    finegym = "finegym"
    finediving = "finediving"
    list_ = "list"  # trailing underscore: the value is what users type
    folder = "folder"
    ts = "ts"  # UEA/UCR time series: sequences of D values per step
    npz = "npz"  # a CSV of .npy/.npz sequences


# --------------------------------------------------------------------------- index


@data_app.command(
    "index",
    epilog="Example: fgar data index --format finegym --root /data/gym/clips "
    "--annotations gym288_train_element_v1.0.txt --annotations gym288_val_element.txt --out gym288.json.  "
    "Sequences: fgar data index --format ts --root /data/UEA/BasicMotions --out basicmotions.json "
    "(BasicMotions_TRAIN.ts, BasicMotions_TEST.ts);  "
    "fgar data index --format npz --root /data/pose --annotations pose.csv --out pose.json "
    "(a CSV path,label[,group][,split]).",
)
def index_command(
    fmt: DatasetFormat = typer.Option(
        ..., "--format", help="Annotation layout of the dataset.", rich_help_panel="Data", show_default=False
    ),
    root: Path = typer.Option(
        ...,
        "--root",
        metavar="DIR",
        help="Dataset folder: the videos, and the annotations unless --annotations says otherwise.",
        rich_help_panel="Data",
    ),
    annotations: list[Path] | None = typer.Option(
        None,
        "--annotations",
        metavar="PATH",
        help="Annotation folder (diving48, finediving, ts) or list/CSV file (finegym, list, npz), or .ts files "
        "(ts); repeatable." + default_note("the dataset's own annotation files under --root"),
        rich_help_panel="Data",
    ),
    classes: Path | None = typer.Option(
        None,
        "--classes",
        metavar="FILE",
        help="Class names for list/folder/npz: one per line, or a JSON list / {name: id}."
        + default_note("the labels found in the annotations"),
        rich_help_panel="Data",
    ),
    allow_outside_root: bool = typer.Option(
        False,
        "--allow-outside-root/--no-allow-outside-root",
        help="Index videos that the annotations place outside --root.",
        rich_help_panel="Data",
    ),
    strict: bool = typer.Option(
        False,
        "--strict/--no-strict",
        help="Fail when any video (or sequence file) cannot be read, instead of skipping and listing it.",
        rich_help_panel="Data",
    ),
    out: Path = typer.Option(..., "--out", metavar="FILE", help="Index JSON file to write.", rich_help_panel="Output"),
) -> None:
    """Read a dataset's annotations, decode every video to count its frames, write an index.

    Unreadable videos (missing, empty, truncated, no frames in range) are skipped and listed. Sequence
    formats (ts, npz) read each sequence's length and step size instead; bad files are skipped likewise.
    """
    check_output_file(out)  # before every video is opened, not after
    index = read_dataset(fmt.value, root, annotations, classes, allow_outside_root)
    if not index.is_sequence:  # sequence adapters measured their entries already: no frames to count
        index = _measure_with_progress(index)
    for skip in index.skipped:
        console.print(f"skipped {skip['path']}: {skip['reason']}", soft_wrap=True, markup=False)
    if strict and index.skipped:
        first = index.skipped[0]
        what = "sequences" if index.is_sequence else "videos"
        raise FgarError(
            f"{first['path']}: {first['reason']} ({len(index.skipped)} unreadable {what}; "
            "rerun without --strict to skip them)"
        )
    save_index(index, out)
    _print_index(index, heading=f"wrote {out}")


def _measure_with_progress(index: DatasetIndex) -> DatasetIndex:
    columns = (TextColumn("counting frames"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=err_console, transient=True) as progress:
        task = progress.add_task("count", total=len(index.entries))
        return measure_entries(index, on_done=lambda _e: progress.advance(task))


def _print_index(index: DatasetIndex, heading: str) -> None:
    steps = f", {index.input_dim} values per step" if index.is_sequence else ""
    console.print(
        f"{heading}: {index.format} index, {len(index.class_names)} classes{steps}, root {index.root}",
        soft_wrap=True,
        markup=False,
    )
    table = Table()
    columns = ("sequences", "steps (mean)") if index.is_sequence else ("videos", "frames (mean)")
    for column in ("subset", columns[0], "classes", columns[1]):
        table.add_column(column, justify="left" if column == "subset" else "right")
    for subset in sorted({e.subset for e in index.entries}):
        entries = index.subset(subset)
        counted = [e.num_frames for e in entries if e.num_frames >= 0]
        mean = f"{sum(counted) / len(counted):.1f}" if counted else "-"
        classes = str(len({e.label for e in entries})) if subset != "unlabeled" else "-"
        table.add_row(subset, str(len(entries)), classes, mean)
    table.add_row("skipped", str(len(index.skipped)), "", "")
    console.print(table)


# --------------------------------------------------------------------------- split


@data_app.command(
    "split",
    epilog="Example: fgar data split --index d48.json --fraction 0.1 --seed 0 --out d48_10pct_s0.json  "
    "(the paper's three splits: --seeds 0,1,2 --out-dir splits/)",
)
def split_command(
    index_path: Path = typer.Option(
        ..., "--index", metavar="FILE", help="Dataset index JSON, from `fgar data index`.", rich_help_panel="Data"
    ),
    fraction: float = typer.Option(
        ...,
        "--fraction",
        help="Share of each class's train videos to label, in [0, 1] (0: none, for pretraining on every one).",
        rich_help_panel="Data",
    ),
    seed: int = typer.Option(
        0, "--seed", help="Seed choosing the labeled videos (with --out).", rich_help_panel="Data"
    ),
    known_classes: int | None = typer.Option(
        None,
        "--known-classes",
        help="Open world: label only K classes, chosen by the seed; the unlabeled set keeps every class."
        + default_note("every class, closed world"),
        rich_help_panel="Data",
    ),
    test_fraction: float = typer.Option(
        0.0,
        "--test-fraction",
        help="For a dataset without a test set: hold out this share of each class's videos for testing, "
        "the same videos for every seed (0: use the index's test videos).",
        rich_help_panel="Data",
    ),
    out: Path | None = typer.Option(
        None, "--out", metavar="FILE", help="Split JSON file to write, for one --seed.", rich_help_panel="Output"
    ),
    seeds: str | None = typer.Option(
        None,
        "--seeds",
        metavar="0,1,2",
        help="Comma-separated seeds, one split file each in --out-dir (instead of --seed and --out).",
        rich_help_panel="Output",
    ),
    out_dir: Path | None = typer.Option(
        None,
        "--out-dir",
        metavar="DIR",
        help="Folder for the split_<fraction>_seed<seed>.json files of --seeds.",
        rich_help_panel="Output",
    ),
) -> None:
    """Choose the labeled videos per class (at least one each); the rest of train, and every video
    without a label, is unlabeled."""
    check_fraction(fraction)
    check_test_fraction(test_fraction)
    jobs = _split_jobs(seed, out, seeds, out_dir, fraction)
    for _, job_out in jobs:
        check_output_file(job_out)
    index = load_index(index_path)
    digest = sha256_file(index_path)
    for job_seed, job_out in jobs:
        split = make_split(index, fraction, job_seed, known_classes, str(index_path), digest, test_fraction)
        save_split(split, job_out)
        _print_split(split, index, heading=f"wrote {job_out}")
        _warn_thin_classes(split, index, job_out)


def _warn_thin_classes(split: Split, index: DatasetIndex, path: Path) -> None:
    thin = thin_classes(split, index)
    if thin:
        names = ", ".join(f"'{name}' ({count})" for name, count in thin[:5]) + (" ..." if len(thin) > 5 else "")
        err_console.print(
            f"warning: {path}: {len(thin)} classes have fewer than two labeled clips: {names}. The "
            "pseudo-label stages cannot fit f_A's temperature from them: raise --fraction, label more "
            "clips, or pass --tau to those stages.",
            soft_wrap=True,
            markup=False,
        )


def _split_jobs(
    seed: int, out: Path | None, seeds: str | None, out_dir: Path | None, fraction: float
) -> list[tuple[int, Path]]:
    if seeds is None:
        if out is None or out_dir is not None:
            raise FgarError("--out: give --out FILE (one seed), or --seeds 0,1,2 with --out-dir DIR")
        return [(seed, out)]
    if out_dir is None or out is not None:
        raise FgarError("--seeds: needs --out-dir DIR (and no --out)")
    try:
        values = [int(s) for s in seeds.split(",") if s.strip()]
    except ValueError:
        raise FgarError(f"--seeds '{seeds}': expected comma-separated integers such as 0,1,2") from None
    if not values:
        raise FgarError(f"--seeds '{seeds}': expected comma-separated integers such as 0,1,2")
    return [(s, out_dir / f"split_{fraction:g}_seed{s}.json") for s in values]


def _print_split(split: Split, index: DatasetIndex | None, heading: str) -> None:
    known = "closed world" if split.known_classes is None else f"known classes {split.known_classes}"
    console.print(f"{heading}: fraction {split.fraction:g}, seed {split.seed}, {known}", soft_wrap=True, markup=False)
    table = Table()
    table.add_column("set")
    table.add_column("videos", justify="right")
    table.add_column("classes", justify="right")
    if index is not None:
        rows = split_summary(split, index)
    else:
        rows = [(name, len(getattr(split, name)), -1) for name in ("labeled", "unlabeled", "test")]
    for name, videos, classes in rows:
        table.add_row(name, str(videos), str(classes) if classes >= 0 else "?")
    console.print(table)


# --------------------------------------------------------------------------- inspect


@data_app.command("inspect", epilog="Example: fgar data inspect runs/d48/pseudo_round1.h5")
def inspect_command(
    file: Path = typer.Argument(
        ..., help="An index or split JSON, an HDF5 artifact or a .pt checkpoint.", show_default=False
    ),
) -> None:
    """Summarise any fgar file: index, split, HDF5 artifact (gallery, pseudo, predictions) or checkpoint."""
    head = read_bytes(file, limit=8)
    if head == b"\x89HDF\r\n\x1a\n":
        _inspect_h5(file)
    elif head.startswith(b"PK\x03\x04") or head.startswith(b"\x80"):  # torch zip, or legacy pickle
        _inspect_checkpoint(file)
    elif head.lstrip()[:1] in (b"{", b"["):
        _inspect_json(file)
    else:
        raise FgarError(f"{file}: not an fgar index, split, HDF5 artifact or checkpoint")


def _inspect_json(path: Path) -> None:
    data = read_json(path)
    schema = data.get("schema") if isinstance(data, dict) else None
    if schema == "fgar.index":
        index = load_index(path)
        _print_index(index, heading=str(path))
        console.print(f"classes: {_preview(index.class_names)}", soft_wrap=True)
        for skip in index.skipped[:10]:
            console.print(f"skipped {escape(skip.get('path', '?'))}: {escape(skip.get('reason', ''))}", soft_wrap=True)
        if len(index.skipped) > 10:
            console.print(f"... and {len(index.skipped) - 10} more skipped")
    elif schema == "fgar.split":
        split = load_split(path)
        index = _index_of_split(split, path)
        _print_split(split, index, heading=f"{path}: split of {split.index} (sha256 {split.index_sha256[:12]})")
    else:
        raise FgarError(f"{path}: JSON file is not an fgar index or split (schema {schema!r})")


def _index_of_split(split: Split, split_path: Path) -> DatasetIndex | None:
    """The split's index, when it is still where the split says (as given, or beside the split)."""
    for candidate in (Path(split.index), split_path.parent / split.index):
        if split.index and candidate.is_file():
            try:
                index = load_index(candidate)
                check_split(split, index, split_path)
                return index
            except FgarError as exc:
                console.print(f"note: {escape(str(exc))}", soft_wrap=True)
                return None
    return None


_PROVENANCE = ("schema", "schema_version", "created_by", "git_hash", "config", "inputs")


def _inspect_h5(path: Path) -> None:
    import h5py

    try:
        f = h5py.File(path, "r")
    except OSError:
        raise FgarError(f"{path}: not a readable HDF5 file") from None
    with f:
        attrs = {k: v.decode() if isinstance(v, bytes) else v for k, v in f.attrs.items()}
        schema = attrs.get("schema", "none")
        console.print(
            f"[bold]{escape(str(path))}[/]: schema {escape(str(schema))} "
            f"v{attrs.get('schema_version', '?')}, created by {escape(str(attrs.get('created_by', '?')))}",
            soft_wrap=True,
        )
        console.print(f"config keys: {escape(', '.join(_json_keys(attrs.get('config'))) or '-')}", soft_wrap=True)
        console.print(f"inputs: {escape(', '.join(_json_keys(attrs.get('inputs'))) or '-')}", soft_wrap=True)
        extra = {k: v for k, v in attrs.items() if k not in _PROVENANCE}
        for key, value in extra.items():  # pseudo.h5: theta, tau, rho, round, accepted count/accuracy
            console.print(f"{escape(key)} = {escape(_short(value))}", soft_wrap=True)
        table = Table()
        for column in ("name", "shape", "dtype", "first values"):
            table.add_column(column)
        for name, ds in _walk_datasets(f):
            first = _short(_decode(ds[: min(5, ds.shape[0])])) if ds.ndim == 1 else ""
            table.add_row(escape(name), str(ds.shape), str(ds.dtype), escape(first))
        console.print(table)
        if schema == "fgar.pseudo" and "accepted" in f and f["accepted"].ndim == 1:
            accepted = f["accepted"][()]
            console.print(f"accepted pseudo-labels: {int(accepted.sum())} of {accepted.shape[0]}")


def _walk_datasets(group: Any, prefix: str = "") -> list[tuple[str, Any]]:
    import h5py

    found = []
    for name, item in group.items():
        if isinstance(item, h5py.Dataset):
            found.append((prefix + name, item))
        else:
            found += _walk_datasets(item, f"{prefix}{name}/")
    return found


def _decode(values: Any) -> list[Any]:
    return [
        v.decode("utf-8", "replace") if isinstance(v, bytes) else v.item() if hasattr(v, "item") else v for v in values
    ]


def _json_keys(text: Any) -> list[str]:
    try:
        value = json.loads(text) if isinstance(text, str) else None
    except json.JSONDecodeError:
        return []
    return sorted(value) if isinstance(value, dict) else []


def _inspect_checkpoint(path: Path) -> None:
    from fgar_cli.checkpoints import load_checkpoint

    ckpt = load_checkpoint(path)
    console.print(f"{path}: checkpoint", soft_wrap=True, markup=False)
    table = Table(show_header=False)
    table.add_column("key")
    table.add_column("value", overflow="fold")
    for key, value in ckpt.items():
        if key == "class_names" and isinstance(value, list):
            table.add_row(key, escape(f"{len(value)} classes: {_preview(value)}"))
        elif key in ("metrics", "config", "arch_args", "args") and isinstance(value, dict):
            table.add_row(key, escape(json.dumps(value, default=str, sort_keys=True)))
        else:
            table.add_row(key, escape(_short(value)))
    console.print(table)


def _short(value: Any) -> str:
    """A one-line description: tensors and arrays by shape, containers by size, scalars as they are."""
    if hasattr(value, "shape") and hasattr(value, "dtype") and getattr(value, "ndim", 0) > 0:
        return f"{type(value).__name__}{tuple(value.shape)} {value.dtype}"
    if isinstance(value, dict):
        tensors = [v for v in value.values() if hasattr(v, "numel")]
        if tensors:
            return f"{len(tensors)} tensors, {sum(int(t.numel()) for t in tensors):,} values"
        return f"{{{', '.join(map(str, list(value)[:8]))}{', ...' if len(value) > 8 else ''}}}"
    if isinstance(value, list) and len(value) > 8:
        return f"list of {len(value)}: {value[:5]}..."
    text = str(value.item() if hasattr(value, "item") and getattr(value, "ndim", 1) == 0 else value)
    return text if len(text) <= 200 else text[:200] + "..."


def _preview(names: list[str], count: int = 8) -> str:
    return escape(", ".join(names[:count]) + (f", ... ({len(names)} in all)" if len(names) > count else ""))
