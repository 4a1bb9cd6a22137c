"""Typed configs: small parts composed into one config per stage.

Each part says one thing (how clips are cut, how f_E is built, how f_A is trained, the alignability
loss, the pseudo-labeling rule) and is passed whole to the code that uses it, the way nanoGPT passes
its `GPTConfig`. Every default is written once, here. A checkpoint stores the recipe its encoder was
made with (`ActionRecipe`, `AlignabilityRecipe`, `PretrainRecipe`), and later stages rebuild it with
`model_validate`, so a setting is never guessed again downstream.

Values come from the defaults, then a config file (YAML, TOML or JSON; its table named after the
stage, e.g. `fit_labeled:`), then command-line options. An option left out on the command line is
None and overrides nothing. Invalid values raise one FgarError listing every bad field by its
dotted path (`action_training.lr: ...`), so a user fixes them all in one go.

Where the defaults come from (the paper leaves most hyperparameters out; docs/METHOD.md):
* theta 0.8: the paper names a confidence threshold (Sec. 3.2) but gives no value.
* verify_threshold 0.6: the paper's label-verification variant (Table 6).
* tau: fitted by leave-one-out on the labeled gallery unless given; rho 8, gamma 0.1, margin 0.1,
  omega 1.0: ours, see docs/METHOD.md.
* num_frames 16, size 112: the usual R(2+1)D-18 input for fine-grained video (paper Table 1).
The distances that the losses and scores see are soft-DTW values divided by the clip length T (an
alignment cost per frame, in [0, 2] for cosine cost), so margin and f_S do not depend on T.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fgar_cli.errors import FgarError
from fgar_cli.files import read_text


class Config(BaseModel):
    """Base of every config part: unknown keys are errors (a typo must not pass silently), NaN and
    infinity are refused, and a config never changes once built (`model_copy(update=...)` makes a
    changed one)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


C = TypeVar("C", bound=Config)


# --------------------------------------------------------------------------- choices


class Source(StrEnum):
    """Where pseudo-labels come from: the rows of the paper's Table 6."""

    COLLAB = "collab"  # FinePseudo: the average of p_A and p_E
    ACTION = "action"  # f_E's confidence alone (confidence-only pseudo-labeling)
    ALIGNABILITY = "alignability"  # f_A's non-parametric classifier p_A alone
    VERIFY = "verify"  # f_E's label, kept when its class alignability is high enough
    UNCERTAINTY = "uncertainty"  # UPS (Rizve et al. 2021): f_E's MC-dropout mean, kept when its spread is low
    NONE = "none"  # no pseudo-label: the compute-matched control (the same epochs on D_l alone)

    @property
    def needs_alignability(self) -> bool:
        """The rule reads f_A's scores, so f_A must be given (and self-training retrains it)."""
        return self in (Source.COLLAB, Source.ALIGNABILITY, Source.VERIFY)

    @property
    def uses_action_only(self) -> bool:
        """f_E alone decides, and f_A takes no part in self-training (confidence-only, UPS)."""
        return self in (Source.ACTION, Source.UNCERTAINTY)


class ActionArch(StrEnum):
    R2PLUS1D_18 = "r2plus1d_18"
    R3D_18 = "r3d_18"
    SMALL3D = "small3d"  # ours: a small 3D CNN that trains on a laptop CPU
    TCN = "tcn"  # ours, for sequence indexes (features, poses, sensors): a dilated temporal CNN

    @property
    def for_sequences(self) -> bool:
        return self == ActionArch.TCN


class FrameBackbone(StrEnum):
    SMALL2D = "small2d"  # ours: a small 2D CNN for CPU runs
    RESNET18 = "resnet18"
    MLP = "mlp"  # for sequence indexes: a per-step MLP on each step's vector (VTN minus the 2D CNN)

    @property
    def for_sequences(self) -> bool:
        return self == FrameBackbone.MLP


class Precision(StrEnum):
    """The number format of a training's forward pass (fgar_cli/runtime.py `autocast`)."""

    AUTO = "auto"  # bfloat16 where the hardware computes it natively (CUDA; CPUs with AVX-512 BF16 or AMX)
    FP32 = "fp32"
    BF16 = "bf16"


class CacheMode(StrEnum):
    AUTO = "auto"  # on when the run's decoded frames fit in run.frame_cache_gb
    ON = "on"
    OFF = "off"


class PretrainEncoder(StrEnum):
    ALIGNABILITY = "alignability"  # f_A with GITDL (the paper's pretraining of f_A)
    ACTION = "action"  # f_E with TCLR's temporal contrastive losses (the paper's start of f_E)


class ExportFormat(StrEnum):
    TORCHSCRIPT = "torchscript"  # torch.jit.load, libtorch (C++)
    ONNX = "onnx"  # onnxruntime and other ONNX runtimes; needs the `onnx` extra (pip install 'fgar[onnx]')


class Subset(StrEnum):
    TEST = "test"
    UNLABELED = "unlabeled"
    LABELED = "labeled"


# --------------------------------------------------------------------------- parts


class Augmentation(Config):
    """Training-time augmentation of a clip. Every draw is made once per clip and applied to all its
    frames (a clip stays temporally consistent: phases are told apart by how poses change, so a
    per-frame jitter would be motion that is not there). The defaults change nothing."""

    min_scale: float = Field(
        1.0,
        gt=0,
        le=1,
        description="random resized crop: side of the crop as a fraction of the short side, from U[min_scale, 1]",
    )
    brightness: float = Field(0.0, ge=0, lt=1, description="brightness factor from U[1 - b, 1 + b]")
    contrast: float = Field(0.0, ge=0, lt=1, description="contrast factor from U[1 - c, 1 + c] around the clip's mean")
    tint: float = Field(0.0, ge=0, lt=1, description="per-channel gain from U[1 - t, 1 + t] (colour tint)")
    temporal_crop: float = Field(
        1.0, gt=0, le=1, description="a training clip samples a random window of at least this fraction of the video"
    )

    @property
    def enabled(self) -> bool:
        return self != Augmentation()


class SequenceAugmentation(Config):
    """Training-time augmentation of a sequence clip (each step a D-vector: features, keypoints,
    sensor readings), the usual ones for time series that keep the class (Um et al. 2017): drawn once
    per clip, on the raw values, before the model's channel normalisation. The defaults change nothing."""

    time_warp: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="smooth random change of speed: the clip is resampled along a monotone warp whose local "
        "speed stays within [1 - w, 1 + w] of the original",
    )
    scale: float = Field(0.0, ge=0, lt=1, description="per-channel gain from U[1 - s, 1 + s]")
    jitter: float = Field(
        0.0, ge=0, le=1, description="Gaussian noise on every value, its std this fraction of the clip's channel std"
    )

    @property
    def enabled(self) -> bool:
        return self != SequenceAugmentation()


class ClipConfig(Config):
    """How clips are cut from a video. Stages after fit-labeled take these from f_E's checkpoint."""

    num_frames: int = Field(16, ge=1, le=512, description="frames per clip, T")
    size: int = Field(112, ge=16, le=1024, description="square crop size in pixels")
    hflip: bool = Field(
        True, description="random horizontal flips in training (turn off where left/right decides the class)"
    )
    augment: Augmentation = Field(Augmentation(), description="training-time augmentation of f_E's and f_A's clips")
    sequence_augment: SequenceAugmentation = Field(
        SequenceAugmentation(), description="training-time augmentation of sequence clips (sequence indexes only)"
    )


class DataPaths(Config):
    """The dataset index and the label split of a run."""

    index: str | None = Field(None, description="dataset index JSON (fgar data index)")
    split: str | None = Field(None, description="label split JSON (fgar data split)")


class RunConfig(Config):
    """How this process runs on this machine; none of it changes a result."""

    device: str = Field("auto", description="auto, cpu, cuda or cuda:N")
    seed: int = Field(0, description="random seed of the run")
    num_workers: int = Field(0, ge=0, description="DataLoader worker processes for training")
    inference_batch_size: int = Field(16, ge=1, description="clips per batch when embedding or predicting")
    frame_cache: CacheMode = Field(CacheMode.AUTO, description="decode each video once (fgar_cli/data/frame_cache.py)")
    frame_cache_gb: float = Field(2.0, gt=0, description="the most the frame cache may hold, in GiB")


class ActionEncoderConfig(Config):
    """f_E's architecture: a video CNN (or, on sequence indexes, a temporal CNN) with dropout and a
    linear classifier."""

    arch: ActionArch = Field(ActionArch.R2PLUS1D_18, description="video CNN trunk")
    bgr: bool = Field(False, description="the init weights expect BGR input (channels are reversed)")
    dropout: float = Field(0.5, ge=0, lt=1, description="dropout before the classifier")
    width: int | None = Field(
        None, ge=4, description="small3d: channels of the first block (default 16); tcn: channels (default 64)"
    )
    temporal_stem: bool = Field(
        False, description="small3d only: the first block convolves time too (3x3x3), not space alone (1x3x3)"
    )
    dilated_layer4: bool = Field(
        False,
        description="r3d_18/r2plus1d_18 only: layer4 keeps the time steps (TCLR's dilated first convolution); "
        "TCLR's released weights need it",
    )
    raw_input: bool = Field(
        False, description="the init weights expect frames in [0, 1] without mean/std normalisation (TCLR)"
    )
    input_dim: int = Field(
        0, ge=0, description="tcn: size D of each step's vector, set from the dataset index (0: video)"
    )
    frame_order: list[int] | None = Field(
        None,
        description="the frames the trunk sees, as positions in the sampled clip (SeFAR's dual-level elements, "
        "set by `selftrain --method sefar`); None: the clip as sampled",
    )


class AlignabilityEncoderConfig(Config):
    """f_A's architecture (VTN style): a 2D CNN per frame (on sequence indexes an MLP per step), a
    temporal transformer, a per-frame projection."""

    backbone: FrameBackbone = Field(FrameBackbone.SMALL2D, description="per-frame 2D CNN")
    width: int | None = Field(
        None, ge=4, description="small2d: channels of the first block (default 16); mlp: hidden size (default 128)"
    )
    input_dim: int = Field(
        0, ge=0, description="mlp: size D of each step's vector, set from the dataset index (0: video)"
    )
    feature_dim: int = Field(128, ge=8, description="size of each frame's embedding, F")
    hidden_dim: int = Field(128, ge=8, description="width of the temporal transformer")
    depth: int = Field(2, ge=1, description="transformer layers")
    heads: int = Field(4, ge=1, description="attention heads")
    max_frames: int = Field(64, ge=1, description="longest clip the time embedding covers")
    dropout: float = Field(0.1, ge=0, lt=1, description="dropout in the transformer")
    score_init_distance: float = Field(8.0, description="f_S's initial S = 0.5 point, before calibration")
    score_init_slope: float = Field(1.0, gt=0, description="f_S's initial slope, before calibration")


class Optimization(Config):
    """AdamW with a cosine learning-rate schedule over `epochs`: how every encoder is trained."""

    epochs: int = Field(ge=0)
    lr: float = Field(gt=0)
    weight_decay: float = Field(1e-4, ge=0, description="AdamW's weight decay")
    precision: Precision = Field(
        Precision.AUTO,
        description="number format of the forward pass: auto (bf16 where the hardware computes it natively: "
        "CUDA, CPUs with AVX-512 BF16 or AMX; else fp32), fp32 or bf16; losses are always fp32",
    )


class ActionTraining(Optimization):
    """How f_E is trained: cross-entropy (Eq. 6) on shuffled batches."""

    epochs: int = Field(30, ge=0, description="epochs of f_E training")
    lr: float = Field(1e-3, gt=0, description="f_E's learning rate")
    batch_size: int = Field(8, ge=1, description="clips per f_E batch (per process under torchrun)")


class AlignabilityTraining(Optimization):
    """How f_A is trained: L_AV (Eq. 5) on class-balanced batches of P classes x K clips."""

    epochs: int = Field(30, ge=0, description="epochs of f_A training")
    lr: float = Field(3e-4, gt=0, description="f_A's learning rate")
    classes_per_batch: int = Field(4, ge=2, description="P of the P x K batches")
    clips_per_class: int = Field(4, ge=2, description="K of the P x K batches")


class GitdlTraining(Optimization):
    """How f_A is pretrained with GITDL on the unlabeled set."""

    epochs: int = Field(10, ge=1, description="GITDL epochs")
    lr: float = Field(3e-4, gt=0, description="learning rate")
    batch_size: int = Field(8, ge=1, description="videos per batch (per process under torchrun)")


# TCLR's augmentation, as its authors' code draws it per clip (scale 0.6 to 1, jitter of 0.25, which
# they apply with probability 0.25 to 0.3 each; here always, at the same range).
TCLR_AUGMENTATION = Augmentation(min_scale=0.6, brightness=0.25, contrast=0.25, tint=0.1)


class ActionPretraining(Optimization):
    """How f_E is pretrained with TCLR's temporal contrastive losses on the unlabeled set."""

    epochs: int = Field(20, ge=1, description="TCLR epochs")
    lr: float = Field(1e-3, gt=0, description="learning rate (TCLR: Adam, 1e-3)")
    batch_size: int = Field(
        8, ge=2, description="videos per batch (each gives 2 x (1 + local_clips) clips; per process under torchrun)"
    )
    augment: Augmentation = Field(TCLR_AUGMENTATION, description="augmentation of each clip of each view")


class TclrLoss(Config):
    """TCLR's losses (Dave et al., CVIU 2022): local-local and global-local temporal contrast, and
    optionally the instance contrast across videos. fgar_cli/losses.py gives the formulas."""

    local_clips: int = Field(4, ge=2, description="non-overlapping local clips per video, K (TCLR: 4)")
    local_frames: int | None = Field(
        None, ge=1, le=512, description="frames per local clip; None: as many as the global clip (TCLR)"
    )
    tau: float = Field(0.1, gt=0, description="temperature of every similarity (TCLR: 0.1)")
    global_local_weight: float = Field(1.0, ge=0, description="weight of the global-local loss")
    # 1 by default, chosen on a development seed (generator seed 1, 3 label splits at 10% labels): the
    # supervised f_E from it reached 0.167 test top-1, against 0.142 without the term and 0.148 from
    # scratch (docs/RESULTS.md). Unlike GITDL's cross-video negatives it did not latch onto per-video
    # nuisance, as the views' brightness and tint are jittered per clip.
    instance_weight: float = Field(
        1.0, ge=0, description="weight of the instance-contrastive loss across videos (0: within videos only)"
    )


class AlignabilityLoss(Config):
    """L_AV = L_AT + omega L_Score (Eq. 5), and the soft-DTW smoothing of its distances."""

    gamma: float = Field(0.1, gt=0, description="soft-DTW smoothing; scoring uses the value f_A was trained with")
    margin: float = Field(0.1, ge=0, description="triplet margin m on the per-frame alignment cost")
    omega: float = Field(1.0, ge=0, description="weight of the score loss L_Score (0: Table 5 row d)")
    triplet_weight: float = Field(1.0, ge=0, description="weight of the triplet loss L_AT (0: Table 5 row e)")


class GitdlLoss(Config):
    """The GITDL pretraining loss (our interpretation; docs/METHOD.md)."""

    tau: float = Field(0.1, gt=0, description="temperature of the frame-similarity logits")
    sigma: float = Field(1.0, gt=0, description="width of the Gaussian target over time, in frames")
    # Off by default: with other videos' frames as negatives the encoder can tell clips apart by
    # per-video nuisance (brightness, tint, build) instead of pose, and on the embedded benchmark the
    # pretrained f_A fell to chance (docs/RESULTS.md). Intra-video only is also what GITDL's name says.
    cross_video_negatives: bool = Field(False, description="other videos' frames as negatives")


class ClassifierConfig(Config):
    """f_A's non-parametric classifier over the labeled gallery (Eq. 7 and 8)."""

    rho: int = Field(8, ge=1, description="gallery clips per class averaged in Eq. 7")
    tau: float | None = Field(
        None, gt=0, description="temperature of Eq. 8; None: fitted on the labeled gallery by leave-one-out"
    )


class PseudoLabeling(Config):
    """Which clips get a pseudo-label (Algorithm 1 and the variants of Table 6)."""

    source: Source = Field(Source.COLLAB, description="where the label and its confidence come from")
    theta: float = Field(0.8, ge=0, le=1, description="confidence a clip needs to be accepted")
    verify_threshold: float = Field(
        0.6, ge=0, le=1, description="class alignability that --source verify needs (Table 6)"
    )
    mc_passes: int = Field(
        10, ge=2, description="--source uncertainty: MC-dropout passes of f_E's classifier (UPS: 10)"
    )
    uncertainty_threshold: float = Field(
        0.05,
        gt=0,
        description="--source uncertainty: largest std of the label's MC-dropout probability (UPS's kappa_p)",
    )
    oracle: bool = Field(
        False,
        description="a control: accepted clips get their true label, and clips of unknown classes are dropped "
        "(needs ground truth for every unlabeled clip)",
    )


class ValidationConfig(Config):
    """fit-labeled's held-out labeled clips: f_E is scored on them after each epoch and its best epoch
    kept (E_best.pt). Only a labeled set large enough for a hold-out to mean something gets one, so
    small sets (the embedded demo's 8 clips per class) train on every clip."""

    fraction: float = Field(
        0.1, ge=0, lt=1, description="labeled clips of each class held out (at least 1); 0: no hold-out"
    )
    min_per_class: int = Field(
        20, ge=2, description="hold out only when every class has at least this many labeled clips"
    )


class NoveltyConfig(Config):
    """Open world: which unlabeled clips are set aside as novel (paper Sec. 4.4)."""

    threshold: float | None = Field(
        None, description="best class alignability below this is novel; None: calibrated on the labeled set"
    )
    quantile: float = Field(
        0.05, gt=0, lt=1, description="calibrated threshold: this quantile of labeled clips' own-class alignability"
    )


# --------------------------------------------------------------------------- what checkpoints record


class ActionRecipe(Config):
    """What an f_E checkpoint records: its data (absolute paths), how clips are cut, how it was trained."""

    data: DataPaths
    clip: ClipConfig
    training: ActionTraining


class AlignabilityRecipe(Config):
    """What an f_A checkpoint from fit-labeled or selftrain records."""

    data: DataPaths
    clip: ClipConfig
    training: AlignabilityTraining
    loss: AlignabilityLoss


class ActionPretrainRecipe(Config):
    """What a TCLR-pretrained f_E checkpoint (E0.pt) records."""

    data: DataPaths
    clip: ClipConfig
    training: ActionPretraining
    loss: TclrLoss


class PretrainRecipe(Config):
    """What a GITDL-pretrained f_A checkpoint records."""

    data: DataPaths
    clip: ClipConfig
    training: GitdlTraining
    loss: GitdlLoss


# --------------------------------------------------------------------------- stage configs


class PretrainConfig(Config):
    """`fgar pretrain`: GITDL for f_A (A0.pt), or TCLR for f_E (E0.pt), on the unlabeled split."""

    encoder: PretrainEncoder = Field(PretrainEncoder.ALIGNABILITY, description="which encoder to pretrain")
    data: DataPaths = DataPaths()
    clip: ClipConfig = ClipConfig()
    alignability: AlignabilityEncoderConfig = AlignabilityEncoderConfig()
    training: GitdlTraining = GitdlTraining()
    loss: GitdlLoss = GitdlLoss()
    action: ActionEncoderConfig = ActionEncoderConfig()
    action_training: ActionPretraining = ActionPretraining()
    action_loss: TclrLoss = TclrLoss()
    run: RunConfig = RunConfig()
    out_dir: str | None = Field(
        None, description="run folder for A0.pt or E0.pt; default runs/fgar/pretrain or runs/fgar/pretrain_action"
    )
    resume: bool = Field(False, description="continue from the last checkpoint in out_dir")
    force: bool = Field(False, description="replace the run in out_dir, or resume it with other options")


class FitLabeledConfig(Config):
    """`fgar fit-labeled`: f_E and f_A on the labeled split."""

    data: DataPaths = DataPaths()
    clip: ClipConfig = ClipConfig()
    action: ActionEncoderConfig = ActionEncoderConfig()
    action_training: ActionTraining = ActionTraining()
    alignability: AlignabilityEncoderConfig = AlignabilityEncoderConfig()
    alignability_training: AlignabilityTraining = AlignabilityTraining()
    alignability_loss: AlignabilityLoss = AlignabilityLoss()
    validation: ValidationConfig = ValidationConfig()
    init_e: str | None = Field(None, description="weights file to start f_E from (e.g. self-supervised weights)")
    init_a: str | None = Field(None, description="f_A checkpoint from pretrain (its architecture wins)")
    run: RunConfig = RunConfig()
    out_dir: str = Field("runs/fgar/fit", description="run folder; E.pt and A.pt go here")
    resume: bool = Field(False, description="continue from the last checkpoints in out_dir")
    force: bool = Field(False, description="replace the run in out_dir, or resume it with other options")


class PseudoLabelConfig(Config):
    """`fgar pseudolabel`: one pseudo-labeling pass over the unlabeled split."""

    ckpt_e: str | None = Field(None, description="f_E checkpoint (E.pt)")
    ckpt_a: str | None = Field(None, description="f_A checkpoint (A.pt)")
    gallery: str | None = Field(None, description="reuse this gallery.h5 instead of embedding the labeled set")
    data: DataPaths = Field(DataPaths(), description="default: the data stored in the f_E checkpoint")
    classifier: ClassifierConfig = ClassifierConfig()
    pseudo_labeling: PseudoLabeling = PseudoLabeling()
    run: RunConfig = RunConfig()
    out_dir: str | None = Field(None, description="where gallery.h5 and pseudo.h5 go; default: beside ckpt_e")


class SelfTrainMethod(StrEnum):
    """`fgar selftrain --method`: FinePseudo's rounds, or a peer method's teacher-student training."""

    FINEPSEUDO = "finepseudo"  # Algorithm 1: rounds of pseudo-labeling, then training on D_l + pseudo-labels
    FIXMATCH = "fixmatch"  # Sohn et al. 2020, with an EMA teacher: weak/strong views, thresholded consistency
    SEFAR = "sefar"  # Huang et al. AAAI 2025: dual-level elements, their reversal, Adaptive Regulation
    ACL_MTL = "acl-mtl"  # adaptive contrastive learning + multi-scale temporal learning

    @property
    def teacher_student(self) -> bool:
        return self != SelfTrainMethod.FINEPSEUDO


class TeacherStudentTraining(Config):
    """The base every peer method shares (FixMatch with a mean teacher, as SeFAR uses it): each step
    takes a batch of labeled clips and `unlabeled_ratio` times as many unlabeled clips; the EMA teacher
    labels each unlabeled clip's weak view, the student learns the label from its strong view."""

    epochs: int = Field(10, ge=1, description="passes over the unlabeled clips")
    batch_size: int | None = Field(None, ge=1, description="labeled clips per step; None: the one f_E was trained with")
    unlabeled_ratio: int = Field(2, ge=1, description="unlabeled clips per labeled clip in a step (FixMatch's mu)")
    threshold: float = Field(
        0.95, ge=0, le=1, description="teacher confidence an unlabeled clip needs (FixMatch's tau)"
    )
    unsupervised_weight: float = Field(1.0, ge=0, description="weight of the unlabeled loss (FixMatch's lambda_u)")
    ema_decay: float = Field(
        0.99, ge=0, lt=1, description="teacher = decay x teacher + (1 - decay) x student, per step"
    )
    lr: float | None = Field(None, gt=0, description="the student's learning rate; None: the one f_E was trained with")
    strong_augment: Augmentation = Field(
        Augmentation(min_scale=0.4, brightness=0.4, contrast=0.4, tint=0.2),
        description="the strong view's spatial augmentation (video); the weak view is f_E's own",
    )
    strong_sequence_augment: SequenceAugmentation = Field(
        SequenceAugmentation(time_warp=0.3, scale=0.2, jitter=0.1),
        description="the strong view's augmentation (sequence indexes)",
    )


class SefarOptions(Config):
    """SeFAR's dual-level temporal elements {L-...-L-C} over the K sampled frames, and its teacher."""

    fine_elements: int = Field(2, ge=1, description="M fine-grained temporal elements")
    element_length: int = Field(2, ge=1, description="L frames per fine-grained element")
    context_length: int = Field(4, ge=1, description="frames of the context element (about 2L in the paper)")
    teacher_passes: int = Field(10, ge=1, description="the teacher's repeated predictions for Adaptive Regulation")
    warmup_epochs: int = Field(
        2,
        ge=0,
        description="supervised-only epochs before the unlabeled loss ramps up (the authors' 5 of 30, scaled)",
    )


class AclMtlOptions(Config):
    """ACL+MTL (Wang et al., ACM MM 2024): adaptive contrastive learning over class prototypes and a
    bank of pseudo-labeled features, and multi-scale temporal learning over long-term clips
    (docs/PEERS_ACL_MTL.md says which of these the paper gives and which are ours)."""

    short_interval: int | None = Field(
        None,
        ge=1,
        description="frame step of the short clip x^S; None: the longest clip spans about the median video",
    )
    long_multipliers: list[int] = Field(
        [2, 4],
        min_length=1,
        description="the long clips' frame steps, as multiples of the short one (paper 16, 32 : 8)",
    )
    confidence_threshold: float = Field(0.3, ge=0, le=1, description="delta of Eq. 2 on the Eq. 19 pseudo-label")
    reliability_threshold: float = Field(0.7, ge=0, le=1, description="epsilon of Eq. 10 on the GMM's gamma")
    contrastive_temperature: float = Field(0.07, gt=0, description="tau of Eq. 11")
    prototype_momentum: float = Field(0.9, ge=0, lt=1, description="beta of Eq. 5")
    bank_size: int = Field(4096, ge=1, description="the feature bank's capacity (at most the unlabeled clips)")
    acl_weight: float = Field(1.0, ge=0, description="mu_2 of Eq. 20 (0: no ACL)")
    mtl_weight: float = Field(1.0, ge=0, description="mu_1 of Eq. 20 (0: no MTL)")
    student_temperature: float = Field(0.1, gt=0, description="tau_s of Eq. 17")
    teacher_temperature: float = Field(0.04, gt=0, description="tau_t of Eq. 17")
    center_momentum: float = Field(0.9, ge=0, lt=1, description="DINO's centring of the teacher's MTL outputs")
    projection_dim: int = Field(128, ge=1, description="the spatial head h's output (Eq. 6, 11)")
    temporal_dim: int = Field(256, ge=1, description="the temporal heads g_n's outputs (Eq. 16)")


class SelfTrainConfig(Config):
    """`fgar selftrain`: collaborative self-training, Algorithm 1 lines 18-31, or a peer method."""

    method: SelfTrainMethod = Field(SelfTrainMethod.FINEPSEUDO, description="finepseudo, fixmatch, sefar or acl-mtl")

    ckpt_e: str | None = Field(None, description="f_E checkpoint to start from (E.pt)")
    ckpt_a: str | None = Field(None, description="f_A checkpoint to start from (A.pt)")
    data: DataPaths = Field(DataPaths(), description="default: the data stored in the f_E checkpoint")
    classifier: ClassifierConfig = ClassifierConfig()
    pseudo_labeling: PseudoLabeling = PseudoLabeling()
    rounds: int = Field(2, ge=1, description="self-training rounds, max_iter of Algorithm 1")
    epochs: int = Field(5, ge=1, description="epochs per round for each encoder, max_epoch_st")
    alignability_epochs: int | None = Field(
        None, ge=0, description="f_A's epochs per round; None: `epochs`; 0: f_A is never retrained (Table 5 row c)"
    )
    lr_e: float | None = Field(None, gt=0, description="f_E's learning rate; None: the one f_E was trained with")
    lr_a: float | None = Field(None, gt=0, description="f_A's learning rate; None: the one f_A was trained with")
    teacher_student: TeacherStudentTraining = TeacherStudentTraining()
    sefar: SefarOptions = SefarOptions()
    acl_mtl: AclMtlOptions = AclMtlOptions()
    run: RunConfig = RunConfig()
    out_dir: str = Field("runs/fgar/selftrain", description="run folder: round_K/ and the final E.pt, A.pt")
    resume: bool = Field(False, description="continue after the last finished epoch in out_dir")
    force: bool = Field(False, description="replace the run in out_dir, or resume it with other options")


class EvaluateConfig(Config):
    """`fgar evaluate`: accuracy of f_E, f_A's non-parametric classifier and both."""

    ckpt_e: str | None = Field(None, description="f_E checkpoint (E.pt)")
    ckpt_a: str | None = Field(None, description="f_A checkpoint (A.pt); also scores f_A and the combination")
    data: DataPaths = Field(DataPaths(), description="default: the data stored in the f_E checkpoint")
    subset: Subset = Field(Subset.TEST, description="which part of the split to evaluate")
    num_views: int = Field(3, ge=1, description="clips per video, their predictions averaged")
    classifier: ClassifierConfig = ClassifierConfig()
    run: RunConfig = RunConfig()
    out_dir: str = Field("runs/fgar/eval", description="where metrics.json, predictions.h5 and the plots go")


class PredictConfig(Config):
    """`fgar predict`: the top-k classes of new videos (or sequences), with no labels, split or index."""

    ckpt_e: str | None = Field(None, description="f_E checkpoint (E.pt)")
    ckpt_a: str | None = Field(None, description="f_A checkpoint (A.pt): adds the collaborative prediction")
    inputs: list[str] = Field(
        default_factory=list,
        description="video files, folders of videos (searched recursively), .txt lists of paths; "
        "for a sequence model, sequence files (.npy, .npz, .ts, .h5) the same ways",
    )
    out: str = Field("predictions.csv", description="CSV of the top-k classes per video; a .json beside it")
    top_k: int = Field(5, ge=1, description="classes listed per video")
    num_views: int = Field(3, ge=1, description="clips per video, their predictions averaged")
    classifier: ClassifierConfig = ClassifierConfig()
    run: RunConfig = RunConfig()


class ExportConfig(Config):
    """`fgar export`: f_E as one TorchScript or ONNX file with its preprocessing and class names."""

    ckpt_e: str | None = Field(None, description="f_E checkpoint (E.pt)")
    format: ExportFormat = Field(
        ExportFormat.TORCHSCRIPT, description="torchscript, or onnx (needs pip install 'fgar[onnx]')"
    )
    out: str | None = Field(None, description="the file to write; default: E.torchscript.pt, or E.onnx for onnx")


DEFAULT_FEATURE_SIZE = 224  # `fgar data features --backbone`'s frame size; an f_A checkpoint brings its own


class FeaturesConfig(Config):
    """`fgar data features`: what to embed, with which frozen backbone, and where to."""

    index: str = Field(description="video index JSON (fgar data index)")
    out_dir: str = Field(description="folder for features.h5 and index.json")
    ckpt_a: str | None = Field(None, description="f_A checkpoint whose frame backbone embeds the frames")
    backbone: str | None = Field(None, description="torchvision classification model name (with weights)")
    weights: str | None = Field(None, description="state dict file for backbone")
    stride: int = Field(1, ge=1, description="embed every stride-th frame")
    batch_size: int = Field(64, ge=1, description="frames per forward pass")
    size: int | None = Field(None, ge=16, le=1024, description=f"frame side for backbone; None: {DEFAULT_FEATURE_SIZE}")
    device: str = Field("auto", description="auto, cpu, cuda or cuda:N")
    force: bool = Field(False, description="replace a complete feature store in out_dir")


class OpenWorldConfig(SelfTrainConfig):
    """`fgar openworld`: self-training that sets novel clips aside."""

    novelty: NoveltyConfig = NoveltyConfig()
    out_dir: str = Field("runs/fgar/openworld", description="run folder")


STAGE_SECTIONS = ("pretrain", "fit_labeled", "pseudolabel", "selftrain", "evaluate", "openworld", "predict", "export")
PATH_FIELDS = ("ckpt_e", "ckpt_a", "init_e", "init_a", "gallery", "out_dir")


def with_absolute_paths(cfg: C, data: DataPaths | None = None) -> C:
    """`cfg` with every file path absolute (and `data` in place of its data paths), so that the
    record of a run means the same from any working folder."""
    update: dict[str, Any] = {
        name: str(Path(value).resolve())
        for name in PATH_FIELDS
        if isinstance(value := getattr(cfg, name, None), str) and value
    }
    if data is not None and hasattr(cfg, "data"):
        update["data"] = data
    return cfg.model_copy(update=update)


# --------------------------------------------------------------------------- loading


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML, TOML or JSON config file into a dict."""
    p = Path(path)
    text = read_text(p, "config file")
    try:
        if p.suffix == ".toml":
            data = tomllib.loads(text)
        elif p.suffix == ".json":
            data = json.loads(text)
        else:
            data = yaml.safe_load(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, yaml.YAMLError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise FgarError(f"{p}: cannot parse config file: {first}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise FgarError(f"{p}: config file must hold a mapping of option names to values")
    return data


def stage_table(data: Mapping[str, Any], section: str | None) -> Mapping[str, Any]:
    """The part of a config file that one stage reads: its own table in a file of stage tables
    (like examples/demo.yaml; empty when it has none), else the whole file."""
    if section is None or not any(key in STAGE_SECTIONS for key in data):
        return data
    table = data.get(section) or {}
    if not isinstance(table, Mapping):
        raise FgarError(f"the '{section}' table of the config file must be a mapping of option names to values")
    return table


def merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """`base` with `update` laid over it, nested tables merged key by key; None in `update` changes nothing."""
    merged = dict(base)
    for key, value in update.items():
        if value is None:
            continue
        if isinstance(value, Mapping):
            below = merged.get(key)
            merged[key] = merge(below if isinstance(below, Mapping) else {}, value)
        else:
            merged[key] = value
    return merged


def build_config(
    model: type[C],
    config_file: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    section: str | None = None,
) -> C:
    """Defaults < the stage's table of `config_file` < `overrides` (nested, None meaning not given)."""
    values: dict[str, Any] = {}
    source = "command line"
    if config_file is not None:
        values = merge(values, stage_table(read_config_file(config_file), section))
        source = str(config_file)
    values = merge(values, overrides or {})
    return validate(model, values, source)


def validate(model: type[C], values: Mapping[str, Any], source: str) -> C:
    """`model.model_validate(values)`, with every problem in one line that names `source`."""
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        raise FgarError(f"{source}: invalid {model.__name__} ({'; '.join(problems(exc))})") from None


def problems(exc: ValidationError, prefix: str = "") -> list[str]:
    """Each validation error as `dotted.field: what is wrong`."""
    return [f"{prefix}{'.'.join(str(x) for x in err['loc']) or '(root)'}: {err['msg']}" for err in exc.errors()]
