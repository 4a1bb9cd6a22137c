"""The six FinePseudo stages as commands: parse options into a config, call the stage, print a summary.

Options left out on the command line are None here, so a config file (`--config run.yaml`, whose
top-level table may be named after the stage, e.g. `fit_labeled:`) fills them, then the defaults.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from fgar_cli.cli import app
from fgar_cli.config import (
    EvaluateConfig,
    FitLabeledConfig,
    OpenWorldConfig,
    PretrainConfig,
    PseudoLabelConfig,
    SelfTrainConfig,
    build_config,
)

console = Console()

CONFIG = typer.Option(None, "--config", help="YAML/TOML/JSON file of options (CLI options win).")
INDEX = typer.Option(None, "--index", help="Dataset index JSON from `fgar data index`.")
SPLIT = typer.Option(None, "--split", help="Label split JSON from `fgar data split`.")
DEVICE = typer.Option(None, "--device", help="auto (default), cpu, cuda or cuda:N.")
SEED = typer.Option(None, "--seed", help="Random seed (default 0).")
RESUME = typer.Option(None, "--resume/--no-resume", help="Continue from the last checkpoint in --out-dir.")
CKPT_A = typer.Option(None, "--ckpt-a", help="f_A checkpoint (A.pt).")
CKPT_E = typer.Option(None, "--ckpt-e", help="f_E checkpoint (E.pt).")
THETA = typer.Option(None, "--theta", help="Confidence threshold in [0, 1] (default 0.8).")
TAU = typer.Option(
    None,
    "--tau",
    help="Temperature of the non-parametric classifier, Eq. 8 (default: fitted on the labeled gallery, leave-one-out).",
)
RHO = typer.Option(None, "--rho", help="Gallery clips per class (default 8).")
SOURCE = typer.Option(None, "--source", help="collab (FinePseudo), action, alignability or verify.")


def _print_summary(title: str, summary: dict[str, Any]) -> None:
    table = Table(title=title, show_header=False)
    for key, value in summary.items():
        if isinstance(value, float):
            value = "nan" if math.isnan(value) else f"{value:.4g}"
        elif isinstance(value, (dict, list)):
            value = json.dumps(value, default=str)
            value = value if len(value) < 200 else value[:197] + "..."
        table.add_row(str(key), str(value))
    console.print(table)


@app.command("pretrain")
def pretrain_cmd(
    index: str = INDEX,
    split: str = SPLIT,
    out_dir: Path = typer.Option(None, "--out-dir", help="Run folder; writes A0.pt (default runs/fgar)."),
    epochs: int = typer.Option(None, "--epochs", help="GITDL epochs (default 10)."),
    batch_size: int = typer.Option(None, "--batch-size"),
    lr: float = typer.Option(None, "--lr"),
    num_frames: int = typer.Option(None, "--num-frames", help="Frames per clip T (default 16)."),
    size: int = typer.Option(None, "--size", help="Crop size in pixels (default 112)."),
    backbone_a: str = typer.Option(None, "--backbone-a", help="small2d (default) or resnet18."),
    cross_video_negatives: bool = typer.Option(
        None, "--cross-video-negatives/--intra-video-only", help="Other videos' frames as negatives (default: off)."
    ),
    device: str = DEVICE,
    seed: int = SEED,
    resume: bool = RESUME,
    config: Path = CONFIG,
) -> None:
    """GITDL self-supervised pretraining of the alignability encoder f_A on the unlabeled split.

    Example: fgar pretrain --index run/index.json --split run/split.json --out-dir run/pretrain --epochs 10
    """
    from fgar_cli.stages.pretrain import pretrain

    overrides = {k: v for k, v in locals().items() if k not in ("config", "pretrain")}
    cfg = build_config(PretrainConfig, config, _stringify(overrides), section="pretrain")
    _print_summary("pretrain", pretrain(cfg))


@app.command("fit-labeled")
def fit_labeled_cmd(
    index: str = INDEX,
    split: str = SPLIT,
    out_dir: Path = typer.Option(None, "--out-dir", help="Run folder; writes E.pt and A.pt."),
    init_a: str = typer.Option(None, "--init-a", help="Start f_A from this pretrain checkpoint (A0.pt)."),
    init_e: str = typer.Option(None, "--init-e", help="Start f_E from this state_dict file (e.g. SSL weights)."),
    bgr: bool = typer.Option(None, "--bgr/--rgb", help="--init-e weights expect BGR input."),
    arch_e: str = typer.Option(None, "--arch-e", help="r2plus1d_18 (default), r3d_18 or small3d."),
    epochs_e: int = typer.Option(None, "--epochs-e"),
    epochs_a: int = typer.Option(None, "--epochs-a"),
    lr_e: float = typer.Option(None, "--lr-e"),
    lr_a: float = typer.Option(None, "--lr-a"),
    batch_size: int = typer.Option(None, "--batch-size"),
    gamma: float = typer.Option(None, "--gamma", help="Soft-DTW gamma (default 0.1)."),
    margin: float = typer.Option(None, "--margin", help="Triplet margin m (default 0.1)."),
    omega: float = typer.Option(None, "--omega", help="Weight of L_Score (default 1.0)."),
    num_frames: int = typer.Option(None, "--num-frames"),
    size: int = typer.Option(None, "--size"),
    device: str = DEVICE,
    seed: int = SEED,
    resume: bool = RESUME,
    config: Path = CONFIG,
) -> None:
    """Train f_E (cross-entropy) and f_A (L_AV = L_AT + omega L_Score) on the labeled split.

    Example: fgar fit-labeled --index run/index.json --split run/split.json --init-a run/pre/A0.pt --out-dir run/fit
    """
    from fgar_cli.stages.fit_labeled import fit_labeled

    overrides = {k: v for k, v in locals().items() if k not in ("config", "fit_labeled")}
    cfg = build_config(FitLabeledConfig, config, _stringify(overrides), section="fit_labeled")
    _print_summary("fit-labeled", fit_labeled(cfg))


@app.command("pseudolabel")
def pseudolabel_cmd(
    ckpt_a: str = CKPT_A,
    ckpt_e: str = CKPT_E,
    theta: float = THETA,
    tau: float | None = TAU,
    rho: int = RHO,
    source: str = SOURCE,
    gallery: str = typer.Option(None, "--gallery", help="Reuse this gallery.h5 instead of embedding D_l."),
    index: str = typer.Option(None, "--index", help="Default: the index stored in --ckpt-e."),
    split: str = typer.Option(None, "--split", help="Default: the split stored in --ckpt-e."),
    out_dir: Path = typer.Option(
        None, "--out-dir", help="Where gallery.h5 and pseudo.h5 go (default: beside --ckpt-e)."
    ),
    device: str = DEVICE,
    seed: int = SEED,
    config: Path = CONFIG,
) -> None:
    """Pseudo-label the unlabeled split with f_E and f_A; writes gallery.h5 and pseudo.h5.

    Example: fgar pseudolabel --ckpt-a run/fit/A.pt --ckpt-e run/fit/E.pt --theta 0.8
    """
    from fgar_cli.stages.pseudolabel import run_pseudolabel

    overrides = {k: v for k, v in locals().items() if k not in ("config", "run_pseudolabel")}
    cfg = build_config(PseudoLabelConfig, config, _stringify(overrides), section="pseudolabel")
    _print_summary("pseudolabel", run_pseudolabel(cfg))


@app.command("selftrain")
def selftrain_cmd(
    ckpt_a: str = CKPT_A,
    ckpt_e: str = CKPT_E,
    out_dir: Path = typer.Option(None, "--out-dir", help="Run folder: round_K/{pseudo.h5,E.pt,A.pt}, E.pt, A.pt."),
    rounds: int = typer.Option(None, "--rounds", help="Self-training rounds, max_iter (default 2)."),
    epochs: int = typer.Option(None, "--epochs", help="Epochs per round, max_epoch_st (default 5)."),
    theta: float = THETA,
    tau: float | None = TAU,
    rho: int = RHO,
    source: str = SOURCE,
    lr_e: float = typer.Option(None, "--lr-e"),
    lr_a: float = typer.Option(None, "--lr-a"),
    index: str = typer.Option(None, "--index"),
    split: str = typer.Option(None, "--split"),
    device: str = DEVICE,
    seed: int = SEED,
    resume: bool = RESUME,
    config: Path = CONFIG,
) -> None:
    """Collaborative self-training (Algorithm 1): pseudo-label, retrain f_E and f_A, repeat.

    Example: fgar selftrain --ckpt-a run/fit/A.pt --ckpt-e run/fit/E.pt --rounds 2 --epochs 5 --out-dir run/st
    """
    from fgar_cli.stages.selftrain import selftrain

    overrides = {k: v for k, v in locals().items() if k not in ("config", "selftrain")}
    cfg = build_config(SelfTrainConfig, config, _stringify(overrides), section="selftrain")
    summary = selftrain(cfg)
    _print_summary("selftrain", {k: v for k, v in summary.items() if k != "rounds"})


@app.command("evaluate")
def evaluate_cmd(
    ckpt_e: str = CKPT_E,
    ckpt_a: str = typer.Option(
        None, "--ckpt-a", help="Also score f_A's non-parametric classifier and the combination."
    ),
    out_dir: Path = typer.Option(None, "--out-dir", help="Writes metrics.json, predictions.h5, confusion_*.png."),
    num_views: int = typer.Option(None, "--num-views", help="Clips per video, averaged (default 3)."),
    subset: str = typer.Option(None, "--subset", help="test (default), unlabeled or labeled."),
    tau: float | None = TAU,
    rho: int = RHO,
    index: str = typer.Option(None, "--index"),
    split: str = typer.Option(None, "--split"),
    device: str = DEVICE,
    seed: int = SEED,
    config: Path = CONFIG,
) -> None:
    """Top-1, top-5, mean class accuracy, per-class accuracy and confusion matrices on the test split.

    Example: fgar evaluate --ckpt-e run/st/E.pt --ckpt-a run/st/A.pt --out-dir run/eval
    """
    from fgar_cli.stages.evaluate import evaluate

    overrides = {k: v for k, v in locals().items() if k not in ("config", "evaluate")}
    cfg = build_config(EvaluateConfig, config, _stringify(overrides), section="evaluate")
    metrics = evaluate(cfg)
    summary = {"protocol": metrics["protocol"], "videos": metrics["videos"]}
    for head in ("action", "alignability", "combined"):
        if head in metrics:
            summary[f"{head} top1"] = metrics[head]["top1"]
            summary[f"{head} top5"] = metrics[head]["top5"]
            summary[f"{head} mean class acc"] = metrics[head]["mean_class_accuracy"]
    summary["metrics"] = str(Path(cfg.out_dir) / "metrics.json")
    _print_summary("evaluate", summary)


@app.command("openworld")
def openworld_cmd(
    ckpt_a: str = CKPT_A,
    ckpt_e: str = CKPT_E,
    out_dir: Path = typer.Option(None, "--out-dir"),
    novel_threshold: float = typer.Option(
        None, "--novel-threshold", help="Best class alignability below this is novel (default: calibrated on D_l)."
    ),
    novel_quantile: float = typer.Option(None, "--novel-quantile", help="Quantile for the calibrated threshold."),
    rounds: int = typer.Option(None, "--rounds"),
    epochs: int = typer.Option(None, "--epochs"),
    theta: float = THETA,
    tau: float | None = TAU,
    rho: int = RHO,
    index: str = typer.Option(None, "--index"),
    split: str = typer.Option(None, "--split"),
    device: str = DEVICE,
    seed: int = SEED,
    resume: bool = RESUME,
    config: Path = CONFIG,
) -> None:
    """Open-world self-training: novel clips (low alignability to every known class) are set aside.

    Needs encoders fitted on an open-world split (`fgar data split --known-classes K`).
    Example: fgar openworld --ckpt-a ow/fit/A.pt --ckpt-e ow/fit/E.pt --out-dir ow/openworld
    """
    from fgar_cli.stages.openworld import openworld

    overrides = {k: v for k, v in locals().items() if k not in ("config", "openworld")}
    cfg = build_config(OpenWorldConfig, config, _stringify(overrides), section="openworld")
    metrics = openworld(cfg)
    _print_summary("openworld", {k: v for k, v in metrics.items() if k != "rounds"})


def _stringify(values: dict[str, Any]) -> dict[str, Any]:
    return {k: str(v) if isinstance(v, Path) else v for k, v in values.items()}
