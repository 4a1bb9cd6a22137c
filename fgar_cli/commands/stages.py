"""The six FinePseudo stages as commands: parse options into a config, call the stage, print a summary.

Each option sets one field of the stage's config (commands/options.py); fields without an option are
set with `--set KEY=VALUE` or in a config file (`--config run.yaml`, whose table named after the stage
is read, e.g. `fit_labeled:`); `fgar config show STAGE` lists them. The stage modules are imported
when a command runs, so `fgar --help` stays fast.
"""

from __future__ import annotations

import json
import math
from typing import Any

from rich.console import Console
from rich.table import Table

from fgar_cli.commands.options import PANELS, Opt, config_command
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
from fgar_cli.distributed import world

console = Console()

DATA_PANEL, ENCODERS_PANEL, CLIP_PANEL, TRAINING_PANEL, CLASSIFIER_PANEL, PSEUDO_PANEL, OUTPUT_PANEL, RUN_PANEL = PANELS
STORED = "the one stored in --ckpt-e"
SCRATCH = "random weights"

INDEX = Opt("--index", "data.index", "Dataset index JSON, from `fgar data index`.", DATA_PANEL, metavar="FILE")
SPLIT = Opt("--split", "data.split", "Label split JSON, from `fgar data split`.", DATA_PANEL, metavar="FILE")
STORED_INDEX = Opt("--index", "data.index", "Dataset index JSON.", DATA_PANEL, STORED, "FILE")
STORED_SPLIT = Opt("--split", "data.split", "Label split JSON.", DATA_PANEL, STORED, "FILE")
NUM_FRAMES = Opt("--num-frames", "clip.num_frames", "Frames per clip (T).", CLIP_PANEL)
SIZE = Opt("--size", "clip.size", "Side of the square crop, in pixels.", CLIP_PANEL)
NUM_VIEWS = Opt("--num-views", "num_views", "Clips per video, their predictions averaged.", CLIP_PANEL)
DEVICE = Opt("--device", "run.device", "Where to run: auto (a GPU when there is one), cpu, cuda or cuda:N.", RUN_PANEL)
SEED = Opt("--seed", "run.seed", "Random seed of the run.", RUN_PANEL)
RESUME = Opt("--resume/--no-resume", "resume", "Continue the run in --out-dir from its last checkpoint.", RUN_PANEL)
FORCE = Opt("--force/--no-force", "force", "Replace the run in --out-dir, or resume it with other options.", RUN_PANEL)
CKPT_A = Opt(
    "--ckpt-a",
    "ckpt_a",
    "Alignability encoder, A.pt from fit-labeled or selftrain (f_A).",
    ENCODERS_PANEL,
    None,
    "FILE",
)
CKPT_E = Opt(
    "--ckpt-e", "ckpt_e", "Action encoder, E.pt from fit-labeled or selftrain (f_E).", ENCODERS_PANEL, None, "FILE"
)
ARCH_E = Opt(
    "--arch-e", "action.arch", "Video CNN of the action encoder, or tcn for sequence indexes (f_E).", ENCODERS_PANEL
)
THETA = Opt(
    "--theta",
    "pseudo_labeling.theta",
    "Confidence a clip needs to get a pseudo-label, in [0, 1] (theta).",
    PSEUDO_PANEL,
)
TAU = Opt(
    "--tau",
    "classifier.tau",
    "Temperature of the alignability classifier's softmax (tau, Eq. 8).",
    CLASSIFIER_PANEL,
    "fitted on the labeled gallery, leave-one-out",
)
RHO = Opt(
    "--rho", "classifier.rho", "Labeled clips per class that each clip is compared with (rho, Eq. 7).", CLASSIFIER_PANEL
)
SOURCE = Opt(
    "--source",
    "pseudo_labeling.source",
    "Where pseudo-labels come from: collab (f_E and f_A together, FinePseudo), action (f_E's confidence alone), "
    "alignability (f_A alone) or verify (f_E's label, kept when its class alignability is high enough; Table 6).",
    PSEUDO_PANEL,
)
ROUNDS = Opt("--rounds", "rounds", "Self-training rounds (max_iter, Algorithm 1).", TRAINING_PANEL)
EPOCHS = Opt("--epochs", "epochs", "Epochs per round for each encoder (max_epoch_st).", TRAINING_PANEL)
METHOD = Opt(
    "--method",
    "method",
    "finepseudo (Algorithm 1's rounds, the default), or a peer method on the same data and f_E: fixmatch "
    "(EMA teacher, thresholded weak-to-strong consistency), sefar (dual-level elements, their reversal, "
    "Adaptive Regulation) or acl-mtl (prototype-reliability contrastive learning, multi-scale temporal "
    "learning); their options: `fgar config show selftrain` (teacher_student.*, sefar.*, acl_mtl.*).",
    TRAINING_PANEL,
)
TEACHER_EPOCHS = Opt(
    "--ts-epochs",
    "teacher_student.epochs",
    "fixmatch, sefar, acl-mtl: passes over the unlabeled clips.",
    TRAINING_PANEL,
)
LR_E = Opt(
    "--lr-e", "lr_e", "Learning rate of the action encoder (f_E).", TRAINING_PANEL, "the one it was trained with"
)
LR_A = Opt(
    "--lr-a", "lr_a", "Learning rate of the alignability encoder (f_A).", TRAINING_PANEL, "the one it was trained with"
)


def out_dir(help_text: str, default: str | None = None) -> Opt:
    return Opt("--out-dir", "out_dir", help_text, OUTPUT_PANEL, default, "DIR")


# Options that come in groups.
DATA = (INDEX, SPLIT)
STORED_DATA = (STORED_INDEX, STORED_SPLIT)
CLIP = (NUM_FRAMES, SIZE)
PROCESS = (DEVICE, SEED)
ENCODERS = (CKPT_A, CKPT_E)
CLASSIFIER = (THETA, TAU, RHO)


def print_summary(title: str, summary: dict[str, Any]) -> None:
    place = world()
    if not place.is_main:  # under torchrun: one summary, rank 0's
        return
    table = Table(title=title, show_header=False)
    if place.distributed:  # under torchrun: how the configured batch sizes were read
        table.add_row("processes", f"{place.size} (batch sizes are per process: {place.size} x them per step)")
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
        Opt(
            "--encoder",
            "encoder",
            "Which encoder to pretrain: alignability (f_A with GITDL, writes A0.pt) or action (f_E with TCLR, "
            "writes E0.pt).",
            ENCODERS_PANEL,
        ),
        *DATA,
        out_dir(
            "Run folder for A0.pt or E0.pt.", "runs/fgar/pretrain, or runs/fgar/pretrain_action for --encoder action"
        ),
        *CLIP,
        Opt("--epochs", "training.epochs", "Alignability encoder: GITDL epochs (f_A).", TRAINING_PANEL),
        Opt("--batch-size", "training.batch_size", "Alignability encoder: videos per batch (f_A).", TRAINING_PANEL),
        Opt("--lr", "training.lr", "Alignability encoder: learning rate (f_A).", TRAINING_PANEL),
        Opt(
            "--backbone-a",
            "alignability.backbone",
            "Per-frame 2D CNN of the alignability encoder, or mlp for sequence indexes (f_A).",
            ENCODERS_PANEL,
        ),
        Opt(
            "--cross-video-negatives/--intra-video-only",
            "loss.cross_video_negatives",
            "Alignability encoder: other videos' frames as negatives too, not only the video's own (GITDL).",
            TRAINING_PANEL,
        ),
        Opt(
            "--arch-e",
            "action.arch",
            "Video CNN of the action encoder (tcn for sequence indexes), for --encoder action (f_E).",
            ENCODERS_PANEL,
        ),
        Opt(
            "--dilated-layer4/--standard-layer4",
            "action.dilated_layer4",
            "Action encoder: r3d_18/r2plus1d_18 with TCLR's layer4, which keeps 4 time steps of 16 frames.",
            ENCODERS_PANEL,
        ),
        Opt("--epochs-e", "action_training.epochs", "Action encoder: TCLR epochs (f_E).", TRAINING_PANEL),
        Opt(
            "--batch-size-e",
            "action_training.batch_size",
            "Action encoder: videos per batch, each giving 10 clips at 4 local clips (f_E).",
            TRAINING_PANEL,
        ),
        Opt("--lr-e", "action_training.lr", "Action encoder: learning rate (f_E).", TRAINING_PANEL),
        Opt(
            "--local-clips",
            "action_loss.local_clips",
            "Action encoder: non-overlapping local clips per video (K, TCLR).",
            TRAINING_PANEL,
        ),
        Opt(
            "--local-frames",
            "action_loss.local_frames",
            "Action encoder: frames per local clip (TCLR).",
            TRAINING_PANEL,
            "--num-frames",
        ),
        Opt(
            "--instance-weight",
            "action_loss.instance_weight",
            "Action encoder: weight of TCLR's instance loss across videos (0: within videos only).",
            TRAINING_PANEL,
        ),
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
        out_dir("Run folder; E.pt and A.pt go here."),
        Opt(
            "--init-a",
            "init_a",
            "Start the alignability encoder from this pretrain checkpoint, A0.pt (f_A).",
            ENCODERS_PANEL,
            SCRATCH,
            "FILE",
        ),
        Opt(
            "--init-e",
            "init_e",
            "Start the action encoder from E0.pt (pretrain --encoder action) or a weights file, TCLR's too (f_E).",
            ENCODERS_PANEL,
            SCRATCH,
            "FILE",
        ),
        Opt("--bgr/--rgb", "action.bgr", "The --init-e weights expect BGR input.", ENCODERS_PANEL),
        Opt(
            "--raw-input/--normalized-input",
            "action.raw_input",
            "The --init-e weights expect frames in [0, 1], not mean/std normalised (TCLR).",
            ENCODERS_PANEL,
        ),
        Opt(
            "--dilated-layer4/--standard-layer4",
            "action.dilated_layer4",
            "r3d_18/r2plus1d_18 with TCLR's layer4, which keeps the time steps.",
            ENCODERS_PANEL,
        ),
        ARCH_E,
        Opt(
            "--backbone-a",
            "alignability.backbone",
            "Per-frame 2D CNN of the alignability encoder, or mlp for sequence indexes (f_A; --init-a's wins).",
            ENCODERS_PANEL,
        ),
        Opt("--epochs-e", "action_training.epochs", "Epochs of action encoder training (f_E).", TRAINING_PANEL),
        Opt(
            "--epochs-a",
            "alignability_training.epochs",
            "Epochs of alignability encoder training (f_A).",
            TRAINING_PANEL,
        ),
        Opt("--lr-e", "action_training.lr", "Learning rate of the action encoder (f_E).", TRAINING_PANEL),
        Opt("--lr-a", "alignability_training.lr", "Learning rate of the alignability encoder (f_A).", TRAINING_PANEL),
        Opt("--batch-size", "action_training.batch_size", "Clips per action encoder batch (f_E).", TRAINING_PANEL),
        Opt("--gamma", "alignability_loss.gamma", "Smoothing of the soft-DTW alignment (gamma).", TRAINING_PANEL),
        Opt(
            "--margin",
            "alignability_loss.margin",
            "Triplet margin on the per-frame alignment cost (m, L_AT).",
            TRAINING_PANEL,
        ),
        Opt(
            "--omega", "alignability_loss.omega", "Weight of the score loss (omega, L_Score in Eq. 5).", TRAINING_PANEL
        ),
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
        Opt(
            "--gallery",
            "gallery",
            "Reuse this gallery.h5 instead of embedding the labeled set.",
            DATA_PANEL,
            "embed the labeled set",
            "FILE",
        ),
        *STORED_DATA,
        out_dir("Where gallery.h5 and pseudo.h5 go.", "the folder of --ckpt-e"),
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
        out_dir("Run folder: round_K/ (pseudo.h5, E.pt, A.pt) and the final E.pt, A.pt."),
        METHOD,
        ROUNDS,
        EPOCHS,
        TEACHER_EPOCHS,
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
    | fgar selftrain --method sefar --ckpt-e run/fit/E.pt --ts-epochs 10 --out-dir run/sefar
    | fgar selftrain --method acl-mtl --ckpt-e run/fit/E.pt --set acl_mtl.confidence_threshold=0.5 --out-dir run/acl
    """
    from fgar_cli.stages.selftrain import selftrain as run

    summary = run(cfg)
    print_summary("selftrain", {k: v for k, v in summary.items() if k != "rounds"})


@config_command(
    EvaluateConfig,
    "evaluate",
    [
        CKPT_E,
        Opt(
            "--ckpt-a",
            "ckpt_a",
            "Alignability encoder, A.pt (f_A): also score its non-parametric classifier and the combination.",
            ENCODERS_PANEL,
            "f_E alone",
            "FILE",
        ),
        out_dir("Where metrics.json, predictions.h5 and confusion_*.png go."),
        NUM_VIEWS,
        Opt("--subset", "subset", "Which part of the split to evaluate.", DATA_PANEL),
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
        out_dir("Run folder: round_K/ and the final E.pt, A.pt."),
        Opt(
            "--novel-threshold",
            "novelty.threshold",
            "A clip whose best class alignability is below this is set aside as novel.",
            PSEUDO_PANEL,
            "calibrated on the labeled set, see --novel-quantile",
        ),
        Opt(
            "--novel-quantile",
            "novelty.quantile",
            "Quantile of labeled clips' own-class alignability that the calibrated threshold is.",
            PSEUDO_PANEL,
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
        Opt(
            "--input",
            "inputs",
            "A video file, a folder of videos (searched recursively) or a .txt list of paths; repeatable. "
            "For a sequence model: .npy, .npz (FILE.npz:NAME for one array), .ts or .h5 files, folders, lists.",
            DATA_PANEL,
            metavar="PATH",
        ),
        Opt(
            "--ckpt-a",
            "ckpt_a",
            "Alignability encoder, A.pt (f_A): adds FinePseudo's collaborative prediction.",
            ENCODERS_PANEL,
            "f_E alone",
            "FILE",
        ),
        CKPT_E,
        Opt(
            "--out",
            "out",
            "CSV file of each video's top-k classes and probabilities; a .json goes beside it.",
            OUTPUT_PANEL,
            metavar="FILE",
        ),
        Opt("--top-k", "top_k", "Classes listed per video.", OUTPUT_PANEL),
        NUM_VIEWS,
        *PROCESS,
    ],
)
def predict(cfg: PredictConfig) -> None:
    """Predict the classes of new videos or sequences with a trained f_E (with --ckpt-a: FinePseudo's f_E + f_A).

    No labels, split or index are needed. Examples:
      fgar predict --ckpt-e run/st/E.pt --input new_videos/ --out predictions.csv
      fgar predict --ckpt-e run/st/E.pt --ckpt-a run/st/A.pt --input clip1.mp4 --input more.txt --top-k 3
      fgar predict --ckpt-e seq_run/st/E.pt --input NEW_TEST.ts --input poses/ --out predictions.csv
    """
    from fgar_cli.stages.predict import predict as run

    print_summary("predict", run(cfg))


@config_command(
    ExportConfig,
    "export",
    [
        CKPT_E,
        Opt(
            "--format",
            "format",
            "torchscript (torch.jit.load, libtorch) or onnx (onnxruntime; needs pip install 'fgar[onnx]').",
            OUTPUT_PANEL,
        ),
        Opt(
            "--out",
            "out",
            "File to write.",
            OUTPUT_PANEL,
            "E.torchscript.pt, or E.onnx with --format onnx",
            "FILE",
        ),
    ],
)
def export(cfg: ExportConfig) -> None:
    """Export f_E as one file: uint8 RGB frames (B, T, H, W, 3) in, class probabilities (B, C) out.

    Class names and clip settings are stored in the file: TorchScript extra files, ONNX metadata_props.

    ONNX fixes T, H and W (the clip settings) and leaves the batch size free. Examples:
      fgar export --ckpt-e run/st/E.pt --out E.torchscript.pt
      fgar export --ckpt-e run/st/E.pt --format onnx --out E.onnx
    """
    from fgar_cli.stages.export import export as run

    print_summary("export", run(cfg))
