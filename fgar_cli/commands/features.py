"""`fgar data features`: embed every frame of a video index once with a frozen backbone (stages/features.py)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from fgar_cli.commands.options import default_note
from fgar_cli.config import FeaturesConfig, validate

console = Console()

FEATURES_EPILOG = (
    "Examples: fgar data features --index d48.json --ckpt-a runs/pre/A0.pt --out-dir features/d48  "
    "(f_A's frame backbone, at the frame size of its recipe);  "
    "fgar data features --index d48.json --backbone resnet50 --weights resnet50_imagenet.pth --stride 2 "
    "--out-dir features/d48_r50  (a torchvision model with your own weights; nothing is downloaded).  "
    "Then train on the features: fgar fit-labeled --index features/d48/index.json --split d48_split.json "
    "--arch-e tcn --backbone-a mlp  (the video index's split files apply: the ids are the same)."
)

BACKBONE = "Backbone"
DEFAULTS = FeaturesConfig.model_fields  # the options' defaults are the config's


def features_command(
    index: Path = typer.Option(
        ..., "--index", metavar="FILE", help="Video index JSON, from `fgar data index`.", rich_help_panel="Data"
    ),
    stride: int = typer.Option(
        DEFAULTS["stride"].default, "--stride", help="Embed every N-th frame.", rich_help_panel="Data"
    ),
    ckpt_a: Path | None = typer.Option(
        None,
        "--ckpt-a",
        metavar="FILE",
        help="Embed frames with the frame backbone of this f_A checkpoint (A0.pt from pretrain, A.pt from "
        "fit-labeled or selftrain), at its recipe's frame size.",
        rich_help_panel=BACKBONE,
    ),
    backbone: str | None = typer.Option(
        None,
        "--backbone",
        metavar="NAME",
        help="Embed frames with this torchvision classification model (resnet18, resnet50, vit_b_16, ...), "
        "its classifier removed; needs --weights.",
        rich_help_panel=BACKBONE,
    ),
    weights: Path | None = typer.Option(
        None,
        "--weights",
        metavar="FILE",
        help="State dict of --backbone saved with torch.save (bare, or under 'state_dict' or 'model').",
        rich_help_panel=BACKBONE,
    ),
    size: int | None = typer.Option(
        None,
        "--size",
        help="Frame side in pixels for --backbone (short side resized, centre crop, ImageNet mean/std)."
        + default_note("224; --ckpt-a: its recipe's size"),
        rich_help_panel=BACKBONE,
    ),
    out: Path = typer.Option(
        ...,
        "--out-dir",
        metavar="DIR",
        help="Folder for features.h5 and index.json (the feature index).",
        rich_help_panel="Output",
    ),
    force: bool = typer.Option(
        False,
        "--force/--no-force",
        help="Replace a complete feature store in --out-dir, or a partial one made with other options.",
        rich_help_panel="Output",
    ),
    batch_size: int = typer.Option(
        DEFAULTS["batch_size"].default, "--batch-size", help="Frames per forward pass.", rich_help_panel="Run"
    ),
    device: str = typer.Option(
        DEFAULTS["device"].default,
        "--device",
        help="Where to run: auto (a GPU when there is one), cpu, cuda or cuda:N.",
        rich_help_panel="Run",
    ),
) -> None:
    """Run a frozen per-frame backbone over every frame of a video index; write an HDF5 feature store.

    Writes OUT/features.h5 (one float32 (frames, D) dataset per video, sequences/<id>) and OUT/index.json,
    a sequence index with the video index's ids, labels and subsets, which every training stage reads.
    An interrupted run continues where it stopped when rerun; videos that do not decode are skipped.
    """
    from fgar_cli.stages.features import compute_features  # imports torch: only when run

    values = {
        "index": str(index),
        "out_dir": str(out),
        "ckpt_a": None if ckpt_a is None else str(ckpt_a),
        "backbone": backbone,
        "weights": None if weights is None else str(weights),
        "stride": stride,
        "batch_size": batch_size,
        "size": size,
        "device": device,
        "force": force,
    }
    summary = compute_features(validate(FeaturesConfig, values, "fgar data features"))
    console.print(f"wrote {summary.store} and {summary.index}", soft_wrap=True, markup=False)
    table = Table(show_header=False)
    for key, value in (
        ("entries", summary.entries),
        ("reused from an earlier run", summary.reused),
        ("frames", summary.frames),
        ("values per frame (D)", summary.dim),
        ("seconds", f"{summary.seconds:.1f}"),
        ("skipped", len(summary.skipped)),
    ):
        table.add_row(key, str(value))
    console.print(table)
