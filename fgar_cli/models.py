"""FinePseudo's networks: the action encoder f_E, the alignability encoder f_A and its score head f_S.

Every model takes clips shaped (B, T, 3, H, W), already normalised, and keeps the typed config it
was built from (`model.config`), so a checkpoint can rebuild it without pickled code
(`fgar_cli.checkpoints`). On sequence indexes (per-step vectors: frozen-backbone features, keypoints,
sensor streams) clips are (B, T, D) raw values, NaN where missing: f_E's trunk is a temporal CNN
(`tcn`), f_A's per-frame CNN is a per-step MLP (`mlp`), and each starts with `InputNorm`, the
training split's per-channel mean and std, kept as buffers so that a checkpoint carries them.

No builder ever downloads weights: torchvision models are built with `weights=None`, and pretrained
weights for f_E come from a local file (`init`).
"""

from __future__ import annotations

import logging
import math
import pickle
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fgar_cli.config import ActionArch, ActionEncoderConfig, AlignabilityEncoderConfig, FrameBackbone
from fgar_cli.data.transforms import KINETICS_MEAN, KINETICS_STD
from fgar_cli.errors import FgarError

log = logging.getLogger(__name__)

# small3d's first-block channels when the config leaves `width` out. 16, not the 32 it had: on
# development data its supervised f_E learned as well (mean test top-1 0.270 against 0.267 over 6 runs,
# paired difference +0.003 +- 0.028; benchmarks/model_variants.py) at half the training time.
SMALL3D_WIDTH = 16
# The same for small2d, for the same reason: its f_A's non-parametric classifier reached 0.651 against
# 0.551 (+0.100 +- 0.121 over 6 development runs) in 0.6 of the time.
SMALL2D_WIDTH = 16
# The sequence models' sizes when the config leaves `width` out: about the size of the video models'
# features (tcn: 64 channels x 4 steps = 256 per clip; mlp: 128 per step, f_A's hidden width).
TCN_WIDTH = 64
MLP_WIDTH = 128
DEFAULT_WIDTH: dict[ActionArch | FrameBackbone, int] = {
    ActionArch.SMALL3D: SMALL3D_WIDTH,
    ActionArch.TCN: TCN_WIDTH,
    FrameBackbone.SMALL2D: SMALL2D_WIDTH,
    FrameBackbone.MLP: MLP_WIDTH,
}


class EncoderKind(StrEnum):
    ACTION = "action"  # f_E
    ACTION_PRETRAINED = "action_pretrained"  # f_E's trunk with TCLR's projection head, from pretraining
    ALIGNABILITY = "alignability"  # f_A with its score head f_S


# Prefixes that wrappers put in front of parameter names: DataParallel/DDP ('module.'), SSL codebases
# that keep the trunk as an attribute ('backbone.'), and this module's own ActionEncoder.
_STRIP_PREFIXES = ("module.", "backbone.")


def _check_clip(x: Tensor, who: str, input_dim: int = 0) -> None:
    if input_dim and (x.dim() != 3 or x.shape[2] != input_dim):
        raise ValueError(f"{who}: expected sequence clips shaped (B, T, {input_dim}), got {tuple(x.shape)}")
    if not input_dim and (x.dim() != 5 or x.shape[2] != 3):
        raise ValueError(f"{who}: expected clips shaped (B, T, 3, H, W), got {tuple(x.shape)}")


# --------------------------------------------------------------------------- sequence inputs


class InputNorm(nn.Module):
    """Per-channel standardisation of sequence clips (B, T, D) with statistics of the training split
    (`set_input_stats`); a missing value (NaN: a gap, or a channel never observed) becomes 0, the
    channel's mean, so it adds nothing to a convolution or a linear layer. The statistics are buffers:
    a checkpoint carries them, and a model started from pretrained weights keeps the ones it learned on.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))
        self.register_buffer("fitted", torch.tensor(False))

    def forward(self, x: Tensor) -> Tensor:
        return torch.nan_to_num((x - self.mean) / self.std, nan=0.0, posinf=0.0, neginf=0.0)


def set_input_stats(model: nn.Module, mean: Tensor, std: Tensor) -> None:
    """Set every InputNorm of `model` to these per-channel statistics (D,)."""
    for norm in model.modules():
        if isinstance(norm, InputNorm):
            if norm.mean.shape != mean.shape:
                raise ValueError(f"input statistics of {tuple(mean.shape)} for a model of {tuple(norm.mean.shape)}")
            norm.mean.copy_(mean)
            norm.std.copy_(std)
            norm.fitted.fill_(True)


def needs_input_stats(model: nn.Module) -> bool:
    """The model reads sequences and its normalisation was never set (not from pretrained weights either)."""
    return any(isinstance(m, InputNorm) and not bool(m.fitted) for m in model.modules())


def _temporal_block(channels: int, dilation: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv1d(channels, channels, 3, padding=dilation, dilation=dilation, bias=False),
        nn.BatchNorm1d(channels),
        nn.ReLU(inplace=True),
        nn.Conv1d(channels, channels, 3, padding=dilation, dilation=dilation, bias=False),
        nn.BatchNorm1d(channels),
    )


class SequenceTCN(nn.Module):
    """f_E's trunk on sequences: InputNorm, a 1 x 1 stem, then residual blocks of two dilated 3-tap
    convolutions (dilations 1, 2, 4, 8: each output step sees 61 steps around it), and the pool.

    Time keeps its full rate through the blocks (no striding: a clip of 16-32 steps is short already),
    and the pool keeps 4 time steps for the same reason Small3D's does: the order of the phases is
    what tells fine-grained classes apart, and a global average over time would throw it away.
    """

    POOL = 4
    DILATIONS = (1, 2, 4, 8)

    def __init__(self, input_dim: int, width: int) -> None:
        super().__init__()
        self.norm = InputNorm(input_dim)
        self.stem = nn.Sequential(nn.Conv1d(input_dim, width, 1, bias=False), nn.BatchNorm1d(width), nn.ReLU())
        self.blocks = nn.ModuleList(_temporal_block(width, d) for d in self.DILATIONS)
        self.pool = nn.AdaptiveAvgPool1d(self.POOL)
        self.channels = width
        self.out_dim = width * self.POOL

    def time_map(self, x: Tensor) -> Tensor:
        """(B, T, D) -> (B, width, T), before pooling."""
        h = self.stem(self.norm(x).transpose(1, 2))
        for block in self.blocks:
            h = F.relu(h + block(h))
        return h

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(self.time_map(x)).flatten(1)


# --------------------------------------------------------------------------- f_E: action encoder


def _conv3d_block(
    cin: int, cout: int, stride: tuple[int, int, int], kernel: tuple[int, int, int] = (3, 3, 3)
) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv3d(cin, cout, kernel, stride=stride, padding=tuple(k // 2 for k in kernel), bias=False),
        nn.BatchNorm3d(cout),
        nn.ReLU(inplace=True),
    )


class Small3D(nn.Module):
    """A small 3D CNN trunk for CPU runs: 4 conv blocks (w, 2w, 4w, 4w channels), then a coarse pool.

    Space is halved by every block; time by the last two only, so the middle blocks see motion at the
    full frame rate (the phases of a fine-grained action are short), and 8-frame clips keep 2 steps.
    The first block convolves space only (1 x 3 x 3) unless `temporal_stem`: on development data that
    learned as well as a 3 x 3 x 3 first block (test top-1 +0.014 +- 0.030 over 6 runs) in 0.75 of the
    time, since a 3-channel input makes the full 3D kernel the slowest convolution of the net
    (benchmarks/model_variants.py). On 16 x 56 x 56 clips with width 16 this is about 0.05 GMAC per clip.

    The pool keeps 4 time steps x 2 x 2 places instead of one global average: fine-grained classes
    differ in the order of their phases (a forward and a back somersault visit the same poses in
    reverse order), and a global average over time throws the order away. On the embedded benchmark
    with 8 labeled clips per class, the global pool left f_E near chance (0.102 test top-1 after 40
    epochs), this pool reached 0.296 (`make demo`, docs/RESULTS.md).
    """

    POOL = (4, 2, 2)

    def __init__(self, width: int, temporal_stem: bool = False) -> None:
        super().__init__()
        w = width
        self.blocks = nn.Sequential(
            _conv3d_block(3, w, (1, 2, 2), (3, 3, 3) if temporal_stem else (1, 3, 3)),
            _conv3d_block(w, 2 * w, (1, 2, 2)),
            _conv3d_block(2 * w, 4 * w, (2, 2, 2)),
            _conv3d_block(4 * w, 4 * w, (2, 2, 2)),
        )
        self.pool = nn.AdaptiveAvgPool3d(self.POOL)
        self.channels = 4 * w  # of the last block's map
        self.out_dim = self.channels * math.prod(self.POOL)

    def forward(self, x: Tensor) -> Tensor:  # x: (B, 3, T, H, W)
        return self.pool(self.blocks(x)).flatten(1)

    def feature_map(self, x: Tensor) -> Tensor:
        """(B, 3, T, H, W) -> the last block's map (B, 4w, T / 4, H / 16, W / 16), before pooling."""
        return self.blocks(x)


def _video_trunk(config: ActionEncoderConfig) -> tuple[nn.Module, int]:
    """The trunk without its classifier, and its feature size."""
    if config.arch == ActionArch.SMALL3D:
        trunk = Small3D(config.width or SMALL3D_WIDTH, config.temporal_stem)
        return trunk, trunk.out_dim
    if config.arch == ActionArch.TCN:
        tcn = SequenceTCN(config.input_dim, config.width or TCN_WIDTH)
        return tcn, tcn.out_dim
    import torchvision.models.video  # here, not at the top: importing torchvision costs ~1.8 s (torch._dynamo)

    builder = getattr(torchvision.models.video, config.arch.value)
    trunk = builder(weights=None)
    if config.dilated_layer4:
        _dilate_layer4(trunk)
    dim = trunk.fc.in_features
    trunk.fc = nn.Identity()  # our head lives in ActionEncoder.fc, so the trunk ends at the pooled features
    return trunk, dim


def _dilate_layer4(trunk: nn.Module) -> None:
    """TCLR's change to torchvision's layer4 (its authors' model.py): the first convolution and the
    shortcut no longer halve time; the first convolution is dilated in time instead, so 16 frames end
    in 4 time steps, not 2. For R(2+1)D the whole factorised first convolution becomes one 3 x 3 x 3
    convolution, as in TCLR's R(2+1)D-18, so its released weights load with their key names."""
    block = trunk.layer4[0]
    block.conv1[0] = nn.Conv3d(256, 512, 3, stride=(1, 2, 2), padding=(2, 1, 1), dilation=(2, 1, 1), bias=False)
    block.downsample[0] = nn.Conv3d(256, 512, 1, stride=(1, 2, 2), bias=False)


def _trunk_time_map(trunk: nn.Module, x: Tensor) -> Tensor:
    """The trunk's last feature map averaged over space, (B, C, T'), before pooling, for what the
    trunk reads (`_trunk_input`)."""
    if isinstance(trunk, SequenceTCN):
        return trunk.time_map(x)
    if isinstance(trunk, Small3D):
        return trunk.feature_map(x).mean((3, 4))
    x = trunk.stem(x)  # torchvision's VideoResNet
    return trunk.layer4(trunk.layer3(trunk.layer2(trunk.layer1(x)))).mean((3, 4))


def _trunk_input(config: ActionEncoderConfig, x: Tensor) -> Tensor:
    """Normalised clips (B, T, 3, H, W) -> what the trunk reads: (B, 3, T, H, W), channels-last.
    Sequence clips (B, T, D) go to the trunk as they are (it normalises them itself)."""
    if config.arch.for_sequences:
        return x
    if config.raw_input:  # weights trained on [0, 1] frames: undo the data pipeline's normalisation
        x = x * x.new_tensor(KINETICS_STD).view(3, 1, 1) + x.new_tensor(KINETICS_MEAN).view(3, 1, 1)
    if config.bgr:  # weights trained on BGR frames (OpenCV-decoded) expect the channels reversed
        x = x.flip(2)
    # torchvision video models want (B, 3, T, H, W); channels-last memory makes oneDNN's 3D
    # convolutions about 1.3x faster on the CPU (docs/PERFORMANCE.md), and CUDA's no slower.
    return x.permute(0, 2, 1, 3, 4).contiguous(memory_format=torch.channels_last_3d)


def _check_action_config(config: ActionEncoderConfig) -> None:
    arch = config.arch
    if config.width is not None and arch not in (ActionArch.SMALL3D, ActionArch.TCN):
        raise FgarError(f"action encoder: width shapes small3d and tcn only, not {arch.value}")
    if config.temporal_stem and arch != ActionArch.SMALL3D:
        raise FgarError(f"action encoder: temporal_stem shapes small3d only, not {arch.value}")
    if config.dilated_layer4 and arch in (ActionArch.SMALL3D, ActionArch.TCN):
        raise FgarError(f"action encoder: dilated_layer4 changes r3d_18 and r2plus1d_18 only, not {arch.value}")
    if arch.for_sequences and (config.bgr or config.raw_input):
        raise FgarError(f"action encoder: bgr and raw_input describe video frames, not {arch.value}'s sequences")
    if arch.for_sequences != (config.input_dim > 0):
        raise FgarError(
            f"action encoder: {arch.value} needs input_dim > 0 (the index's step size)"
            if arch.for_sequences
            else f"action encoder: {arch.value} reads video, not sequences of {config.input_dim} values"
        )


def action_config_for(config: ActionEncoderConfig, input_dim: int, index_path: str) -> ActionEncoderConfig:
    """f_E's config for the data of `index_path` (`input_dim` its step size D, 0 for video): a sequence
    index needs tcn, a video index a video CNN, and a model built for one D cannot read another."""
    _check_input_kind(
        config.arch.value, config.arch.for_sequences, config.input_dim, input_dim, index_path, "f_E", "tcn"
    )
    return config.model_copy(update={"input_dim": input_dim})


def _check_input_kind(
    name: str, for_sequences: bool, built_dim: int, input_dim: int, index_path: str, who: str, sequence_name: str
) -> None:
    option = "--arch-e" if who == "f_E" else "--backbone-a"
    if input_dim and not for_sequences:
        raise FgarError(
            f"{index_path}: a sequence index ({input_dim} values per step) needs {who}'s {sequence_name}, "
            f"not {name} ({option} {sequence_name}; examples/sequences.yaml sets both encoders)"
        )
    if not input_dim and for_sequences:
        raise FgarError(f"{index_path}: a video index, but {who}'s {name} reads sequences (pick a video {option})")
    if built_dim and built_dim != input_dim:
        raise FgarError(f"{index_path}: steps of {input_dim} values, but {who} was built for {built_dim}")


class ActionEncoder(nn.Module):
    """f_E: a video CNN trunk, dropout and a linear classifier. forward -> logits (B, C)."""

    kind = EncoderKind.ACTION

    def __init__(self, config: ActionEncoderConfig, num_classes: int) -> None:
        super().__init__()
        if config.width is None and config.arch in DEFAULT_WIDTH:  # a checkpoint records the width itself,
            config = config.model_copy(
                update={"width": DEFAULT_WIDTH[config.arch]}
            )  # so a later default cannot change it
        self.config = config
        self.num_classes = num_classes
        self.backbone, self.feature_dim = _video_trunk(config)
        self.backbone.to(memory_format=torch.channels_last_3d)
        self.dropout = nn.Dropout(config.dropout)
        self.fc = nn.Linear(self.feature_dim, num_classes)
        self.init_report: InitReport | None = None

    def features(self, x: Tensor, reorder: bool = True) -> Tensor:
        """Pooled clip embedding (B, feature_dim) for clips (B, T, 3, H, W) or sequences (B, T, D).
        With a `frame_order` the trunk sees those frames of the clip, in that order, unless `reorder`
        is False (a caller that arranged the frames itself: SeFAR's strong view)."""
        _check_clip(x, "action encoder", self.config.input_dim)
        if reorder and self.config.frame_order is not None:
            x = self._reorder(x)
        return self.backbone(_trunk_input(self.config, x))

    def forward(self, x: Tensor, reorder: bool = True) -> Tensor:
        return self.fc(self.dropout(self.features(x, reorder)))

    def position_features(self, x: Tensor) -> Tensor:
        """The trunk's features per position, (B, P, channels), from one forward: small3d's 4 x 2 x 2
        pooled places, tcn's 4 pooled steps, a torchvision trunk's time steps (space averaged).
        `pool_positions` turns them into exactly what `features` gives (ACL+MTL needs both)."""
        _check_clip(x, "action encoder", self.config.input_dim)
        if self.config.frame_order is not None:
            x = self._reorder(x)
        trunk_input = _trunk_input(self.config, x)
        if isinstance(self.backbone, (Small3D, SequenceTCN)):
            pooled = self.backbone(trunk_input)  # flattened channel-major: (B, channels x positions)
            return pooled.view(len(x), self.backbone.channels, -1).transpose(1, 2)
        return _trunk_time_map(self.backbone, trunk_input).transpose(1, 2)

    @property
    def position_channels(self) -> int:
        """The last size of `position_features`."""
        if isinstance(self.backbone, (Small3D, SequenceTCN)):
            return self.backbone.channels
        return self.feature_dim

    def pool_positions(self, positions: Tensor) -> Tensor:
        """(B, P, channels) from `position_features` -> the pooled clip embedding (B, feature_dim)."""
        if isinstance(self.backbone, (Small3D, SequenceTCN)):
            return positions.transpose(1, 2).flatten(1)
        return positions.mean(1)  # torchvision's global average pool, over time after space

    def _reorder(self, x: Tensor) -> Tensor:
        order = self.config.frame_order
        assert order is not None
        if x.shape[1] <= max(order):
            raise FgarError(
                f"action encoder: its frame order reads frame {max(order)} of the clip, but clips have "
                f"{x.shape[1]} frames (the clip length it was trained with is in its recipe)"
            )
        return x[:, order]


def build_action_encoder(
    config: ActionEncoderConfig, num_classes: int, init: str | Path | None = None
) -> ActionEncoder:
    """Build f_E. `init` is a local weights file (a state_dict, or a dict holding one under
    'state_dict' or 'model'); what was loaded is in `model.init_report`."""
    if num_classes < 1:
        raise FgarError(f"action encoder: num_classes must be >= 1, got {num_classes}")
    _check_action_config(config)
    model = ActionEncoder(config, num_classes)
    if init is not None:
        model.init_report = load_init_weights(model, init)
        log.info("%s", model.init_report.summary())
    return model


class ProjectionHead(nn.Module):
    """TCLR's projection head: Linear(C, C) - BN - ReLU - Linear(C, dim, no bias) - BN, then unit length."""

    def __init__(self, in_dim: int, dim: int = 128) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_dim, in_dim)
        self.bn1 = nn.BatchNorm1d(in_dim)
        self.fc2 = nn.Linear(in_dim, dim, bias=False)
        self.bn2 = nn.BatchNorm1d(dim)

    def forward(self, h: Tensor) -> Tensor:  # (N, C) -> (N, dim)
        return F.normalize(self.bn2(self.fc2(F.relu(self.bn1(self.fc1(h))))), dim=1)


class PretrainedActionEncoder(nn.Module):
    """f_E's trunk with TCLR's projection head, for self-supervised pretraining (`fgar pretrain
    --encoder action`). Its trunk's weights are named as ActionEncoder's (`backbone.*`), so its
    checkpoint E0.pt starts f_E through `fit-labeled --init-e` and the head (`head.*`) is left behind.

    forward(x (B, T, 3, H, W), steps K) -> (clip (B, D), time steps (B, K, D)): unit vectors of the
    clip (the feature map averaged over time and space) and of K equal parts of its time axis (each
    averaged over its part and space), all through the same head, as TCLR's `mlp` does.
    """

    kind = EncoderKind.ACTION_PRETRAINED

    def __init__(self, config: ActionEncoderConfig, projection_dim: int = 128) -> None:
        super().__init__()
        if config.width is None and config.arch in DEFAULT_WIDTH:  # see ActionEncoder
            config = config.model_copy(update={"width": DEFAULT_WIDTH[config.arch]})
        self.config = config
        self.backbone, pooled_dim = _video_trunk(config)
        self.backbone.to(memory_format=torch.channels_last_3d)
        # torchvision's trunks pool their last map to one vector, so its size is the map's channels
        channels = self.backbone.channels if isinstance(self.backbone, Small3D | SequenceTCN) else pooled_dim
        self.head = ProjectionHead(channels, projection_dim)

    def forward(self, x: Tensor, steps: int) -> tuple[Tensor, Tensor]:
        _check_clip(x, "action encoder", self.config.input_dim)
        time_map = _trunk_time_map(self.backbone, _trunk_input(self.config, x))  # (B, C, T')
        if time_map.shape[-1] < steps:
            raise FgarError(
                f"action encoder: {x.shape[1]} frames leave {time_map.shape[-1]} time steps in the trunk's "
                f"last map, fewer than the {steps} local clips (use more frames or fewer local clips"
                + (
                    ", or --dilated-layer4)"
                    if self.config.arch in (ActionArch.R3D_18, ActionArch.R2PLUS1D_18)
                    and not self.config.dilated_layer4
                    else ")"
                )
            )
        parts = F.adaptive_avg_pool1d(time_map, steps)  # (B, C, K)
        B, C = time_map.shape[:2]
        clip = self.head(time_map.mean(-1))
        per_step = self.head(parts.transpose(1, 2).reshape(B * steps, C)).reshape(B, steps, -1)
        return clip, per_step


def build_pretrained_action_encoder(config: ActionEncoderConfig) -> PretrainedActionEncoder:
    _check_action_config(config)
    return PretrainedActionEncoder(config)


@dataclass
class InitReport:
    """What `load_init_weights` did: how many tensors were loaded, and which names did not match."""

    path: str
    loaded: int
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    head_skipped: bool = False

    def summary(self) -> str:
        head = "; classifier head skipped (shape differs)" if self.head_skipped else ""
        return (
            f"{self.path}: loaded {self.loaded} tensors, {len(self.missing)} missing, "
            f"{len(self.unexpected)} unexpected{head}"
        )


def _training_state_globals() -> list[object]:
    """The classes that TCLR's training files pickle beside their weights (a GradScaler, by its
    current and its 2020 module path), allowed to `torch.load(weights_only=True)` so such a file loads
    without unpickling anything else: a GradScaler is plain state, built without running its code."""
    import collections

    from torch.amp import grad_scaler

    return [
        grad_scaler.GradScaler,
        collections.defaultdict,
        grad_scaler._refresh_per_optimizer_state,
        (torch.cuda.amp.GradScaler, "torch.cuda.amp.grad_scaler.GradScaler"),
        (grad_scaler._refresh_per_optimizer_state, "torch.cuda.amp.grad_scaler._refresh_per_optimizer_state"),
    ]


def read_weights_file(path: Path) -> Mapping[str, Tensor]:
    """A state dict saved with torch.save (bare, or under 'state_dict', 'model' or 'bb_state_dict'),
    loaded with weights_only=True: never unpickles code."""
    if not path.is_file():
        raise FgarError(f"{path}: weights file not found")
    try:
        with torch.serialization.safe_globals(_training_state_globals()):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as exc:
        text = str(exc)
        if "Unsupported global" in text:  # weights_only refused to build a Python object
            name = text.split("Unsupported global:", 1)[1].split()[1] if "GLOBAL" in text else "an object"
            raise FgarError(
                f"{path}: holds a Python object fgar will not unpickle ({name}); save its state_dict alone"
            ) from None
        first = (text.strip().splitlines() or [type(exc).__name__])[0]
        raise FgarError(f"{path}: cannot load weights ({first[:160]})") from None
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model", "bb_state_dict"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, Tensor) for v in obj.values()):
        raise FgarError(f"{path}: not a state_dict (expected a mapping of parameter names to tensors)")
    return obj


def _strip_prefixes(name: str) -> str:
    changed = True
    while changed:
        changed = False
        for prefix in _STRIP_PREFIXES:
            if name.startswith(prefix):
                name, changed = name[len(prefix) :], True
    return name


def _tclr_layout(names: list[str]) -> bool:
    """TCLR's released files hold nn.Sequential(trunk, projection head): '0.<torchvision name>', '1.fc1.*'."""
    return any(n.startswith("0.stem.") for n in names)


def load_init_weights(model: ActionEncoder, path: str | Path) -> InitReport:
    """Load trunk (and, when its shape fits, head) weights from a local file into f_E.

    Names are compared after stripping 'module.'/'backbone.' prefixes, so raw torchvision weights,
    DataParallel checkpoints and fgar's own checkpoints (E0.pt from `pretrain --encoder action`, E.pt)
    all load; so do TCLR's released weights ('module.0.<torchvision name>', their projection head
    '1.*' left out), which need the model built as TCLR's (`bgr`, `raw_input`, `dilated_layer4`).
    A head ('fc.*') of another shape is skipped (other number of classes). Every trunk parameter must
    be found: a missing one, a shape mismatch, or a file that matches nothing is an error that names
    what did not match (it is the wrong architecture).
    """
    p = Path(path)
    source = {_strip_prefixes(k): v for k, v in read_weights_file(p).items()}
    arch = model.config.arch.value
    if _tclr_layout(list(source)):
        needed = [
            f"--{f.replace('_', '-')}" for f in ("bgr", "raw_input", "dilated_layer4") if not getattr(model.config, f)
        ]
        if model.config.arch == ActionArch.SMALL3D:
            raise FgarError(f"{p}: TCLR weights are for r3d_18 or r2plus1d_18, not small3d")
        if needed:
            raise FgarError(
                f"{p}: TCLR weights expect its input and layer4 (BGR frames in [0, 1], a dilated layer4): "
                f"pass {' '.join(needed)}"
            )
        source = {k[2:]: v for k, v in source.items() if k.startswith("0.")} | {
            k: v for k, v in source.items() if not k.startswith("0.")
        }
    target = {f"fc.{k}": v for k, v in model.fc.state_dict().items()}
    target.update(model.backbone.state_dict())
    head_keys = {k for k in target if k.startswith("fc.")}

    loadable: dict[str, Tensor] = {}
    head_skipped = False
    for name, tensor in source.items():
        if name not in target:
            continue
        if tensor.shape != target[name].shape:
            if name in head_keys:
                head_skipped = True
                continue
            raise FgarError(
                f"{p}: weights do not fit arch '{arch}': '{name}' has shape {tuple(tensor.shape)}, "
                f"the model has {tuple(target[name].shape)}"
            )
        loadable[name] = tensor
    if not any(k not in head_keys for k in loadable):
        raise FgarError(f"{p}: no parameter name matches arch '{arch}' (is this the right weights file?)")
    missing = sorted(k for k in target if k not in loadable and k not in head_keys)
    if missing:
        unexpected = sorted(k for k in source if k not in target)
        hint = ""
        if (
            "layer4.0.conv1.0.weight" in source
            and source["layer4.0.conv1.0.weight"].dim() == 5
            and "layer4.0.conv1.0.0.weight" in missing
        ):
            hint = " (a full 3D first convolution in layer4, as in TCLR's R(2+1)D-18: pass --dilated-layer4)"
        raise FgarError(
            f"{p}: weights do not fit arch '{arch}'{hint}: {len(missing)} of its tensors missing "
            f"({', '.join(missing[:4])}{', ...' if len(missing) > 4 else ''}), {len(unexpected)} in the file unused "
            f"({', '.join(unexpected[:4])}{', ...' if len(unexpected) > 4 else ''})"
        )

    model.backbone.load_state_dict({k: v for k, v in loadable.items() if k not in head_keys}, strict=False)
    head = {k[len("fc.") :]: v for k, v in loadable.items() if k in head_keys}
    if head:
        model.fc.load_state_dict(head, strict=False)
    return InitReport(
        path=str(p),
        loaded=len(loadable),
        missing=sorted(k for k in target if k not in loadable),
        unexpected=sorted(k for k in source if k not in target),
        head_skipped=head_skipped,
    )


# --------------------------------------------------------------------------- f_S: score head


class ScoreHead(nn.Module):
    """f_S (paper Eq. 3): S(u, v) = sigmoid(a * D + b) with a = -(softplus(a_raw) + MIN_SLOPE) < 0.

    a < 0 for every value of the parameters (MIN_SLOPE keeps it so where softplus underflows to 0), so
    the score always falls as the alignment distance D grows. The initial line gives S = 0.5 at
    `init_distance`. Because the scale of D depends on the clip length and gamma, and Adam moves b only
    about lr per step, `calibrate_` can set a and b from a first batch of distances; the `calibrated`
    buffer is saved, so a resumed run does not redo it.
    """

    MIN_SLOPE = 1e-6

    def __init__(self, init_distance: float = 8.0, init_slope: float = 1.0) -> None:
        super().__init__()
        if init_slope <= self.MIN_SLOPE:
            raise FgarError(f"score head: init_slope must be > 0, got {init_slope}")
        self.a_raw = nn.Parameter(torch.tensor(_inverse_softplus(init_slope - self.MIN_SLOPE)))
        self.b = nn.Parameter(torch.tensor(float(init_slope * init_distance)))
        self.register_buffer("calibrated", torch.tensor(False))

    @property
    def slope(self) -> Tensor:
        """a: the (negative) slope of the logit in D."""
        return -(F.softplus(self.a_raw) + self.MIN_SLOPE)

    def logit(self, distance: Tensor) -> Tensor:
        return self.slope * distance + self.b

    def forward(self, distance: Tensor) -> Tensor:
        return torch.sigmoid(self.logit(distance))

    @torch.no_grad()
    def calibrate_(self, distances: Tensor, labels: Tensor | None = None, logit_range: float = 4.0) -> None:
        """Centre the line between the mean same-class and other-class distances of a batch (B, B).

        Without labels (or without both kinds of pair) it centres on the median off-diagonal distance.
        The slope maps the standard deviation of the off-diagonal distances to `logit_range` logits.
        """
        B = distances.shape[0]
        off = ~torch.eye(B, dtype=torch.bool, device=distances.device)
        values = distances[off].float()
        center = values.median()
        # The slope comes from the spread of all distances, not from the gap between the class means:
        # at the start that gap is tiny (the features do not separate classes yet), and a slope fitted
        # to it sends every logit to +-10 and the score loss into the tens.
        spread = values.std() if values.numel() > 1 else values.new_tensor(1.0)
        if labels is not None:
            same = (labels[:, None] == labels[None, :])[off]
            if same.any() and (~same).any():
                center = (values[same].mean() + values[~same].mean()) / 2
        spread = float(spread) if math.isfinite(float(spread)) and float(spread) > 1e-6 else 1.0
        slope = logit_range / spread
        self.a_raw.fill_(_inverse_softplus(max(slope - self.MIN_SLOPE, self.MIN_SLOPE)))
        self.b.fill_(slope * float(center))
        self.calibrated.fill_(True)


def _inverse_softplus(y: float) -> float:
    # softplus(x) = log(1 + e^x), so x = log(e^y - 1); for large y that is y itself.
    return y if y > 20 else math.log(math.expm1(y))


# --------------------------------------------------------------------------- f_A: alignability encoder


def _conv2d_block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel_size=3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


def _frame_backbone(name: FrameBackbone, width: int | None, input_dim: int = 0) -> tuple[nn.Module, int]:
    """A per-frame 2D CNN without classifier (or, for sequences, a per-step MLP), and its feature
    size; `width` sizes small2d and mlp."""
    if name == FrameBackbone.MLP:
        # Two layers, so that a step's vector is mixed across channels before the transformer sees
        # time: keypoints and sensor axes mean little one by one.
        hidden = width or MLP_WIDTH
        mlp = nn.Sequential(
            InputNorm(input_dim), nn.Linear(input_dim, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU()
        )
        return mlp, hidden
    if name == FrameBackbone.RESNET18:
        import torchvision.models  # imported when needed: see _video_trunk

        net = torchvision.models.resnet18(weights=None)
        dim = net.fc.in_features
        net.fc = nn.Identity()
        return net, dim
    # small2d keeps a coarse 4 x 4 map instead of pooling space away: a frame's phase is the body's
    # pose, its spatial layout, which a global average of local features barely sees (the embedded
    # benchmark is built so that such "bag of appearance" features stay near chance).
    w = width or SMALL2D_WIDTH
    net = nn.Sequential(
        _conv2d_block(3, w),
        _conv2d_block(w, 2 * w),
        _conv2d_block(2 * w, 4 * w),
        nn.Conv2d(4 * w, 32, kernel_size=1),
        nn.AdaptiveAvgPool2d(4),
        nn.Flatten(),
    )
    return net, 32 * 16


class AlignabilityEncoder(nn.Module):
    """f_A (VTN style): 2D CNN per frame -> linear -> + learned time embedding -> transformer -> MLP.

    forward(x (B, T, 3, H, W)) -> (B, T, feature_dim), one unit vector per frame. The score head f_S
    is a submodule (`score_head`), so one state_dict holds f_A and f_S.
    """

    kind = EncoderKind.ALIGNABILITY

    def __init__(self, config: AlignabilityEncoderConfig) -> None:
        super().__init__()
        if config.width is None and config.backbone in DEFAULT_WIDTH:  # see ActionEncoder
            config = config.model_copy(update={"width": DEFAULT_WIDTH[config.backbone]})
        self.config = config
        hidden_dim = config.hidden_dim
        self.max_frames = config.max_frames
        self.backbone, backbone_dim = _frame_backbone(config.backbone, config.width, config.input_dim)
        self.backbone.to(memory_format=torch.channels_last)
        self.input_proj = nn.Linear(backbone_dim, hidden_dim)
        self.time_embed = nn.Parameter(torch.zeros(1, config.max_frames, hidden_dim))
        nn.init.trunc_normal_(self.time_embed, std=0.02)
        self.embed_dropout = nn.Dropout(config.dropout)
        layer = nn.TransformerEncoderLayer(
            d_model=hidden_dim,
            nhead=config.heads,
            dim_feedforward=4 * hidden_dim,
            dropout=config.dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        # Pre-norm layers leave the residual stream unnormalised: the final LayerNorm closes it.
        self.temporal = nn.TransformerEncoder(
            layer, num_layers=config.depth, norm=nn.LayerNorm(hidden_dim), enable_nested_tensor=False
        )
        self.head = nn.Sequential(
            nn.Linear(hidden_dim, hidden_dim), nn.ReLU(inplace=True), nn.Linear(hidden_dim, config.feature_dim)
        )
        self.score_head = ScoreHead(config.score_init_distance, config.score_init_slope)

    def forward(self, x: Tensor) -> Tensor:
        _check_clip(x, "alignability encoder", self.config.input_dim)
        B, T = x.shape[:2]
        if T > self.max_frames:
            raise FgarError(
                f"alignability encoder: clips have {T} frames but the model was built for at most "
                f"{self.max_frames} (max_frames); use fewer frames or a model with a larger max_frames"
            )
        frames = x.reshape(B * T, *x.shape[2:])
        if frames.dim() == 4:  # video frames: channels-last, see ActionEncoder
            frames = frames.contiguous(memory_format=torch.channels_last)
        frames = self.backbone(frames).reshape(B, T, -1)
        h = self.embed_dropout(self.input_proj(frames) + self.time_embed[:, :T])
        h = self.temporal(h)
        return F.normalize(self.head(h), dim=-1)


def alignability_config_for(
    config: AlignabilityEncoderConfig, num_frames: int, input_dim: int = 0, index_path: str = "the index"
) -> AlignabilityEncoderConfig:
    """`config` with a time embedding long enough for clips of `num_frames` frames, for the data of
    `index_path` (`input_dim` its step size D, 0 for video: see `action_config_for`)."""
    backbone = config.backbone
    _check_input_kind(backbone.value, backbone.for_sequences, config.input_dim, input_dim, index_path, "f_A", "mlp")
    return config.model_copy(update={"max_frames": max(config.max_frames, num_frames), "input_dim": input_dim})


def build_alignability_encoder(config: AlignabilityEncoderConfig) -> AlignabilityEncoder:
    """Build f_A with its score head f_S."""
    if config.width is not None and config.backbone not in (FrameBackbone.SMALL2D, FrameBackbone.MLP):
        raise FgarError(f"alignability encoder: width sizes small2d and mlp only, not {config.backbone.value}")
    if config.backbone.for_sequences != (config.input_dim > 0):
        raise FgarError(
            "alignability encoder: mlp needs input_dim > 0 (the index's step size)"
            if config.backbone.for_sequences
            else f"alignability encoder: {config.backbone.value} reads video, not sequences of "
            f"{config.input_dim} values"
        )
    if config.hidden_dim % config.heads:
        raise FgarError(
            f"alignability encoder: hidden_dim {config.hidden_dim} is not divisible by heads {config.heads}"
        )
    return AlignabilityEncoder(config)
