"""The six FinePseudo stages as commands: parse options into a config, call the stage, print a summary.

Each option sets one field of the stage's config (commands/options.py); fields without an option are
set in a config file (`--config run.yaml`, whose table named after the stage is read, e.g.
`fit_labeled:`). The stage modules are imported when a command runs, so `fgar --help` stays fast.
"""

from __future__ import annotations

import json
import math
from typing import Any

from rich.console import Console
from rich.table import Table

from fgar_cli.commands.options import Opt, config_command
from fgar_cli.config import (
    EvaluateConfig,
    ExportConfig,
    FitLabeledConfig,
    OpenWorldConfig,
    PredictConfig,
    PretrainConfig,
    PseudoLabelConfig,
    SelfTrainConfig,
)

console = Console()

INDEX = Opt("--index", "data.index", "Dataset index JSON from `fgar data index`.")
SPLIT = Opt("--split", "data.split", "Label split JSON from `fgar data split`.")
STORED_INDEX = Opt("--index", "data.index", "Dataset index JSON (default: the one stored in --ckpt-e).")
STORED_SPLIT = Opt("--split", "data.split", "Label split JSON (default: the one stored in --ckpt-e).")
NUM_FRAMES = Opt("--num-frames", "clip.num_frames", "Frames per clip, T.")
SIZE = Opt("--size", "clip.size", "Square crop size in pixels.")
DEVICE = Opt("--device", "run.device", "auto, cpu, cuda or cuda:N.")
SEED = Opt("--seed", "run.seed", "Random seed.")
RESUME = Opt("--resume/--no-resume", "resume", "Continue the run in --out-dir from its last checkpoint.")
FORCE = Opt("--force/--no-force", "force", "Replace the run in --out-dir, or resume it with other options.")
CKPT_A = Opt("--ckpt-a", "ckpt_a", "f_A checkpoint (A.pt from fit-labeled or selftrain).")
CKPT_E = Opt("--ckpt-e", "ckpt_e", "f_E checkpoint (E.pt from fit-labeled or selftrain).")
THETA = Opt("--theta", "pseudo_labeling.theta", "Confidence a clip needs to get a pseudo-label, in [0, 1].")
TAU = Opt(
    "--tau",
    "classifier.tau",
    "Temperature of the non-parametric classifier, Eq. 8 (default: fitted on the labeled gallery, leave-one-out).",
)
RHO = Opt("--rho", "classifier.rho", "Labeled clips per class that each clip is compared with (Eq. 7).")
SOURCE = Opt(
    "--source",
    "pseudo_labeling.source",
    "collab (FinePseudo), action (f_E's confidence), alignability (f_A alone) or verify (Table 6).",
)
ROUNDS = Opt("--rounds", "rounds", "Self-training rounds (max_iter of Algorithm 1).")
EPOCHS = Opt("--epochs", "epochs", "Epochs per round for each encoder (max_epoch_st).")
LR_E = Opt("--lr-e", "lr_e", "f_E's learning rate (default: the one it was trained with).")
LR_A = Opt("--lr-a", "lr_a", "f_A's learning rate (default: the one it was trained with).")

# Options that come in groups.
DATA = (INDEX, SPLIT)
STORED_DATA = (STORED_INDEX, STORED_SPLIT)
CLIP = (NUM_FRAMES, SIZE)
PROCESS = (DEVICE, SEED)
ENCODERS = (CKPT_A, CKPT_E)
CLASSIFIER = (THETA, TAU, RHO)


def print_summary(title: str, summary: dict[str, Any]) -> None:
    table = Table(title=title, show_header=False)
    for key, value in summary.items():
        if isinstance(value, float):
            value = "nan" if math.isnan(value) else f"{value:.4g}"
        elif isinstance(value, (dict, list)):
            value = json.dumps(value, default=str)
            value = value if len(value) < 200 else value[:197] + "..."
        table.add_row(str(key), str(value))
    console.print(table)


@config_command(
    PretrainConfig,
    "pretrain",
    [
        Opt("--encoder", "encoder", "alignability: f_A with GITDL (A0.pt); action: f_E with TCLR (E0.pt)."),
        *DATA,
        Opt("--out-dir", "out_dir", "Run folder (default runs/fgar/pretrain, or runs/fgar/pretrain_action)."),
        *CLIP,
        Opt("--epochs", "training.epochs", "f_A: GITDL epochs."),
        Opt("--batch-size", "training.batch_size", "f_A: videos per batch."),
        Opt("--lr", "training.lr", "f_A: learning rate."),
        Opt("--backbone-a", "alignability.backbone", "f_A's per-frame 2D CNN."),
        Opt(
            "--cross-video-negatives/--intra-video-only",
            "loss.cross_video_negatives",
            "f_A: other videos' frames as negatives.",
        ),
        Opt("--arch-e", "action.arch", "f_E's video CNN (--encoder action)."),
        Opt(
            "--dilated-layer4/--standard-layer4",
            "action.dilated_layer4",
            "f_E: r3d_18/r2plus1d_18 with TCLR's layer4, which keeps 4 time steps of 16 frames.",
        ),
        Opt("--epochs-e", "action_training.epochs", "f_E: TCLR epochs."),
        Opt("--batch-size-e", "action_training.batch_size", "f_E: videos per batch (each gives 10 clips at K = 4)."),
        Opt("--lr-e", "action_training.lr", "f_E: learning rate."),
        Opt("--local-clips", "action_loss.local_clips", "f_E: non-overlapping local clips per video, K."),
        Opt("--local-frames", "action_loss.local_frames", "f_E: frames per local clip (default: --num-frames)."),
        Opt("--instance-weight", "action_loss.instance_weight", "f_E: weight of TCLR's instance loss across videos."),
        *PROCESS,
        RESUME,
        FORCE,
    ],
)
def pretrain(cfg: PretrainConfig) -> None:
    """Self-supervised pretraining on the unlabeled split: f_A with GITDL, or f_E with TCLR.

    Examples:
      fgar pretrain --index run/index.json --split run/split.json --out-dir run/pretrain --epochs 10
      fgar pretrain --encoder action --arch-e small3d --index run/index.json --split run/split.json
        --out-dir run/pretrain_e     (then: fgar fit-labeled --init-e run/pretrain_e/E0.pt ...)
    """
    from fgar_cli.stages.pretrain import pretrain as run

    print_summary("pretrain", run(cfg))


@config_command(
    FitLabeledConfig,
    "fit_labeled",
    [
        *DATA,
        Opt("--out-dir", "out_dir", "Run folder; E.pt and A.pt go here."),
        Opt("--init-a", "init_a", "Start f_A from this pretrain checkpoint (A0.pt)."),
        Opt("--init-e", "init_e", "Start f_E from E0.pt (pretrain --encoder action) or a weights file (TCLR's too)."),
        Opt("--bgr/--rgb", "action.bgr", "The --init-e weights expect BGR input."),
        Opt("--raw-input/--normalized-input", "action.raw_input", "The --init-e weights expect [0, 1] frames (TCLR)."),
        Opt("--dilated-layer4/--standard-layer4", "action.dilated_layer4", "r3d_18/r2plus1d_18 with TCLR's layer4."),
        Opt("--arch-e", "action.arch", "f_E's video CNN."),
        Opt("--epochs-e", "action_training.epochs", "Epochs of f_E training."),
        Opt("--epochs-a", "alignability_training.epochs", "Epochs of f_A training."),
        Opt("--lr-e", "action_training.lr", "f_E's learning rate."),
        Opt("--lr-a", "alignability_training.lr", "f_A's learning rate."),
        Opt("--batch-size", "action_training.batch_size", "Clips per f_E batch."),
        Opt("--gamma", "alignability_loss.gamma", "Soft-DTW smoothing."),
        Opt("--margin", "alignability_loss.margin", "Triplet margin m."),
        Opt("--omega", "alignability_loss.omega", "Weight of the score loss L_Score."),
        *CLIP,
        *PROCESS,
        RESUME,
        FORCE,
    ],
)
def fit_labeled(cfg: FitLabeledConfig) -> None:
    """Train f_E (cross-entropy) and f_A (L_AV = L_AT + omega L_Score) on the labeled split.

    Examples:
      fgar fit-labeled --index run/index.json --split run/split.json --init-a run/pre/A0.pt --out-dir run/fit
      fgar fit-labeled ... --init-e run/pretrain_e/E0.pt      (f_E's architecture comes from E0.pt)
      fgar fit-labeled ... --arch-e r2plus1d_18 --init-e tclr_r2plus1d_k400.pth --bgr --raw-input --dilated-layer4
    """
    from fgar_cli.stages.fit_labeled import fit_labeled as run

    print_summary("fit-labeled", run(cfg))


@config_command(
    PseudoLabelConfig,
    "pseudolabel",
    [
        *ENCODERS,
        *CLASSIFIER,
        SOURCE,
        Opt("--gallery", "gallery", "Reuse this gallery.h5 instead of embedding the labeled set."),
        *STORED_DATA,
        Opt("--out-dir", "out_dir", "Where gallery.h5 and pseudo.h5 go (default: beside --ckpt-e)."),
        *PROCESS,
    ],
)
def pseudolabel(cfg: PseudoLabelConfig) -> None:
    """Pseudo-label the unlabeled split with f_E and f_A; writes gallery.h5 and pseudo.h5.

    Example: fgar pseudolabel --ckpt-a run/fit/A.pt --ckpt-e run/fit/E.pt --theta 0.8
    """
    from fgar_cli.stages.pseudolabel import run_pseudolabel

    print_summary("pseudolabel", run_pseudolabel(cfg))


@config_command(
    SelfTrainConfig,
    "selftrain",
    [
        *ENCODERS,
        Opt("--out-dir", "out_dir", "Run folder: round_K/{pseudo.h5,E.pt,A.pt}, E.pt, A.pt."),
        ROUNDS,
        EPOCHS,
        *CLASSIFIER,
        SOURCE,
        LR_E,
        LR_A,
        *STORED_DATA,
        *PROCESS,
        RESUME,
        FORCE,
    ],
)
def selftrain(cfg: SelfTrainConfig) -> None:
    """Collaborative self-training (Algorithm 1): pseudo-label, retrain f_E and f_A, repeat.

    Example: fgar selftrain --ckpt-a run/fit/A.pt --ckpt-e run/fit/E.pt --rounds 2 --epochs 5 --out-dir run/st
    """
    from fgar_cli.stages.selftrain import selftrain as run

    summary = run(cfg)
    print_summary("selftrain", {k: v for k, v in summary.items() if k != "rounds"})


@config_command(
    EvaluateConfig,
    "evaluate",
    [
        CKPT_E,
        Opt("--ckpt-a", "ckpt_a", "Also score f_A's non-parametric classifier and the combination."),
        Opt("--out-dir", "out_dir", "Writes metrics.json, predictions.h5, confusion_*.png."),
        Opt("--num-views", "num_views", "Clips per video, their predictions averaged."),
        Opt("--subset", "subset", "Which part of the split to evaluate."),
        TAU,
        RHO,
        *STORED_DATA,
        *PROCESS,
    ],
)
def evaluate(cfg: EvaluateConfig) -> None:
    """Top-1, top-5, mean class accuracy, per-class accuracy and confusion matrices on the test split.

    Example: fgar evaluate --ckpt-e run/st/E.pt --ckpt-a run/st/A.pt --out-dir run/eval
    """
    from fgar_cli.stages.evaluate import evaluate as run

    metrics = run(cfg)
    summary = {"protocol": metrics["protocol"], "videos": metrics["videos"]}
    for head in ("action", "alignability", "combined"):
        if head in metrics:
            summary[f"{head} top1"] = metrics[head]["top1"]
            summary[f"{head} top5"] = metrics[head]["top5"]
            summary[f"{head} mean class acc"] = metrics[head]["mean_class_accuracy"]
    summary["metrics"] = f"{cfg.out_dir}/metrics.json"
    print_summary("evaluate", summary)


@config_command(
    OpenWorldConfig,
    "openworld",
    [
        *ENCODERS,
        Opt("--out-dir", "out_dir", "Run folder."),
        Opt(
            "--novel-threshold",
            "novelty.threshold",
            "Best class alignability below this is novel (default: calibrated on the labeled set).",
        ),
        Opt(
            "--novel-quantile",
            "novelty.quantile",
            "Quantile of labeled clips' alignability for the calibrated threshold.",
        ),
        ROUNDS,
        EPOCHS,
        *CLASSIFIER,
        *STORED_DATA,
        *PROCESS,
        RESUME,
        FORCE,
    ],
)
def openworld(cfg: OpenWorldConfig) -> None:
    """Open-world self-training: novel clips (low alignability to every known class) are set aside.

    Needs encoders fitted on an open-world split (`fgar data split --known-classes K`).
    Example: fgar openworld --ckpt-a ow/fit/A.pt --ckpt-e ow/fit/E.pt --out-dir ow/openworld
    """
    from fgar_cli.stages.openworld import openworld as run

    metrics = run(cfg)
    print_summary("openworld", {k: v for k, v in metrics.items() if k != "rounds"})


@config_command(
    PredictConfig,
    "predict",
    [
        Opt("--input", "inputs", "A video file, a folder of videos (searched recursively) or a .txt list; repeat it."),
        *ENCODERS,
        Opt("--out", "out", "CSV of each video's top-k classes and probabilities (a .json goes beside it)."),
        Opt("--top-k", "top_k", "Classes listed per video."),
        Opt("--num-views", "num_views", "Clips per video, their predictions averaged."),
        *PROCESS,
    ],
)
def predict(cfg: PredictConfig) -> None:
    """Predict the classes of new videos with a trained f_E (with --ckpt-a: FinePseudo's f_E + f_A).

    No labels, split or index are needed. Examples:
      fgar predict --ckpt-e run/st/E.pt --input new_videos/ --out predictions.csv
      fgar predict --ckpt-e run/st/E.pt --ckpt-a run/st/A.pt --input clip1.mp4 --input more.txt --top-k 3
    """
    from fgar_cli.stages.predict import predict as run

    print_summary("predict", run(cfg))


@config_command(
    ExportConfig,
    "export",
    [CKPT_E, Opt("--out", "out", "The TorchScript file to write.")],
)
def export(cfg: ExportConfig) -> None:
    """Export f_E as one TorchScript file: uint8 RGB frames (B, T, H, W, 3) in, class probabilities out.

    Its class names and clip settings are stored in the file (extra files class_names.json, clip.json).
    Example: fgar export --ckpt-e run/st/E.pt --out E.torchscript.pt
    """
    from fgar_cli.stages.export import export as run

    print_summary("export", run(cfg))
