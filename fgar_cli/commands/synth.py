"""`fgar synth`: render the embedded fine-grained benchmark in the Diving48 V2 layout."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from fgar_cli.data import synth
from fgar_cli.errors import FgarError

console = Console()
err_console = Console(stderr=True)


SYNTH_EPILOG = (
    "Example: fgar synth --out-dir data/synth --seed 0  (then: fgar data index --format diving48 "
    "--root data/synth --out data/synth_index.json; check it: python benchmarks/synth_separability.py data/synth)"
)


def synth_command(
    seed: int = typer.Option(
        0, "--seed", help="Seed: the same seed and settings give the same videos.", rich_help_panel="Data"
    ),
    classes: int = typer.Option(
        synth.DEFAULT_CLASSES,
        "--classes",
        help=f"Number of classes, 2 to {synth.MAX_CLASSES} (combinations of the phase attributes).",
        rich_help_panel="Data",
    ),
    videos_per_class: int = typer.Option(
        synth.DEFAULT_VIDEOS_PER_CLASS,
        "--videos-per-class",
        help="Videos per class, train and test together.",
        rich_help_panel="Data",
    ),
    frames: int = typer.Option(
        synth.DEFAULT_FRAMES,
        "--frames",
        help="Typical video length in frames; each video varies by +-15%.",
        rich_help_panel="Data",
    ),
    size: int = typer.Option(
        synth.DEFAULT_SIZE, "--size", help="Frame width and height in pixels (even).", rich_help_panel="Data"
    ),
    test_fraction: float = typer.Option(
        synth.DEFAULT_TEST_FRACTION,
        "--test-fraction",
        help="Share of each class's videos in the test set.",
        rich_help_panel="Data",
    ),
    out_dir: Path | None = typer.Option(
        None,
        "--out-dir",
        metavar="DIR",
        help="Folder to write (created; must be empty unless --overwrite)." + escape(" [required]"),
        rich_help_panel="Output",
        show_default=False,
    ),
    overwrite: bool = typer.Option(
        False,
        "--overwrite/--no-overwrite",
        help="Replace a synthetic dataset already in --out-dir.",
        rich_help_panel="Output",
    ),
    old_out: Path | None = typer.Option(None, "--out", hidden=True, help="Old name of --out-dir."),
) -> None:
    """Render synthetic fine-grained dives as H.264 MP4s with Diving48 V2 annotations.

    Classes combine four phase attributes (takeoff direction, somersault count, twists, flight
    position); all share one scene, so the order and number of phases decide the class, not any
    one frame. Writes Diving48_V2_train.json, Diving48_V2_test.json, Diving48_vocab.json,
    rgb/*.mp4 and synth_meta.json.
    """
    out = _out_dir(out_dir, old_out)
    synth.validate_options(classes, videos_per_class, frames, size, test_fraction)
    columns = (
        TextColumn("rendering videos"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err_console, transient=True) as progress:
        task = progress.add_task("render", total=classes * videos_per_class)
        summary = synth.generate(
            out,
            seed=seed,
            classes=classes,
            videos_per_class=videos_per_class,
            frames=frames,
            size=size,
            test_fraction=test_fraction,
            overwrite=overwrite,
            progress=lambda done, _total: progress.update(task, completed=done),
        )
    console.print(
        f"wrote {summary.out_dir}: synthetic Diving48 layout, seed {summary.seed}, {summary.seconds:.1f} s",
        soft_wrap=True,
        markup=False,
    )
    table = Table()
    for column in ("classes", "train", "test", "frames per video", "size"):
        table.add_column(column, justify="right")
    table.add_row(
        str(summary.classes),
        str(summary.train),
        str(summary.test),
        f"{summary.frames_min}-{summary.frames_max}",
        f"{summary.size}x{summary.size}",
    )
    console.print(table)


def _out_dir(out_dir: Path | None, old_out: Path | None) -> Path:
    """--out-dir, or --out, its name before every command that writes a folder said --out-dir."""
    if out_dir is not None and old_out is not None and out_dir != old_out:
        raise FgarError(f"--out-dir {out_dir} and --out {old_out}: give the folder once, as --out-dir")
    chosen = out_dir if out_dir is not None else old_out
    if chosen is None:
        raise FgarError("--out-dir: give the folder to write, e.g. fgar synth --out-dir data/synth")
    return chosen
