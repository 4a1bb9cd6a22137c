"""Clip transforms: uint8 frames (T, H, W, 3) RGB -> normalised float tensor (T, 3, S, S).

Resize the short side to `resize` (default round(size * 8 / 7), the usual 256 -> 224 ratio), crop
S x S (random in training, centre in testing), flip horizontally with probability 1/2 in
training, scale to [0, 1], then normalise with mean/std. (Weights that expect BGR input are the
model's business: `ActionEncoderConfig.bgr`.) The same
crop and flip apply to every frame of a clip. With an `Augmentation` (config.py), training clips
also get a random resized crop (a square of U[min_scale, 1] of the short side, resized to S) and a
brightness, contrast and tint jitter, each drawn once per clip; without one, or with its defaults,
the transform draws exactly what it drew before augmentation existed. Randomness comes from a numpy Generator passed per
call, so a dataset seeded per (seed, epoch, item) reproduces its samples exactly.

Speed (2-core CPU, 16 frames of 64x64): the resize runs on uint8 (torch's antialiased uint8
resize was 10x faster than float32's) and is skipped when the short side already fits; the
element-wise work runs in numpy. torch's element-wise ops on these small clips were 10-80x
slower with 2 intra-op threads than with 1 on a busy machine (OpenMP waits for a busy core),
and data loading with num_workers=0 runs in the main process, with the model's thread setting.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from fgar_cli.config import Augmentation, SequenceAugmentation

# torchvision's Kinetics-400 video models (r2plus1d_18, r3d_18) were trained with these.
KINETICS_MEAN = (0.43216, 0.394666, 0.37645)
KINETICS_STD = (0.22803, 0.22145, 0.216989)


@dataclass(frozen=True)
class ClipTransform:
    size: int
    train: bool
    resize: int | None = None  # short side before cropping; None: round(size * 8 / 7)
    mean: tuple[float, float, float] = KINETICS_MEAN
    std: tuple[float, float, float] = KINETICS_STD
    flip: bool = True  # random horizontal flip in training
    augment: Augmentation | None = None  # training only

    def __post_init__(self) -> None:
        if self.size < 1 or (self.resize is not None and self.resize < self.size):
            raise ValueError(f"need 1 <= size <= resize, got size {self.size}, resize {self.resize}")

    @property
    def short_side(self) -> int:
        return self.resize or round(self.size * 8 / 7)

    def __call__(self, frames: np.ndarray | torch.Tensor, rng: np.random.Generator | None = None) -> torch.Tensor:
        """(T, H, W, 3) uint8 RGB -> (T, 3, S, S) float32. Training without `rng` is not reproducible."""
        clip = frames.numpy() if isinstance(frames, torch.Tensor) else np.asarray(frames)
        if clip.ndim != 4 or clip.shape[-1] != 3:
            raise ValueError(f"expected frames shaped (T, H, W, 3), got {tuple(clip.shape)}")
        if self.train and rng is None:
            rng = np.random.default_rng()
        augment = self.augment if self.train and self.augment is not None and self.augment.enabled else None
        clip = resize_short_side(clip, self.short_side)
        if augment is not None and augment.min_scale < 1:
            clip = random_resized_crop(clip, self.size, augment.min_scale, rng)
        else:
            top, left = crop_origin(clip.shape[1], clip.shape[2], self.size, rng if self.train else None)
            clip = clip[:, top : top + self.size, left : left + self.size]
        if self.train and self.flip and rng is not None and rng.random() < 0.5:
            clip = clip[:, :, ::-1]
        if augment is not None and rng is not None:
            return normalize(jitter_colour(clip, augment, rng), self.mean, self.std)
        return normalize(clip, self.mean, self.std)


def random_resized_crop(frames: np.ndarray, size: int, min_scale: float, rng: np.random.Generator) -> np.ndarray:
    """A random square of side U[min_scale, 1] x the short side, resized to size x size (uint8)."""
    height, width = frames.shape[1:3]
    side = max(1, round(min(height, width) * rng.uniform(min_scale, 1.0)))
    top, left = int(rng.integers(0, height - side + 1)), int(rng.integers(0, width - side + 1))
    crop = frames[:, top : top + side, left : left + side]
    if side == size:
        return crop
    channels_first = torch.from_numpy(np.ascontiguousarray(crop.transpose(0, 3, 1, 2)))
    resized = F.interpolate(channels_first, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return resized.numpy().transpose(0, 2, 3, 1)


def jitter_colour(frames: np.ndarray, augment: Augmentation, rng: np.random.Generator) -> np.ndarray:
    """Brightness, contrast (around the clip's mean) and per-channel tint, one draw per clip, in
    [0, 255] float32 clipped to the uint8 range. Always draws 5 numbers, so later draws do not depend
    on which jitters are on."""
    brightness = rng.uniform(1 - augment.brightness, 1 + augment.brightness)
    contrast = rng.uniform(1 - augment.contrast, 1 + augment.contrast)
    tint = rng.uniform(1 - augment.tint, 1 + augment.tint, 3).astype(np.float32)
    clip = frames.astype(np.float32) * np.float32(brightness)
    mean = clip.mean()
    clip = (clip - mean) * np.float32(contrast) + mean
    clip *= tint
    return np.clip(clip, 0.0, 255.0, out=clip)


def resize_short_side(frames: np.ndarray, short_side: int) -> np.ndarray:
    """Resize uint8 (T, H, W, C) so that min(H, W) == short_side, keeping the aspect ratio."""
    height, width = frames.shape[1:3]
    scale = short_side / min(height, width)
    new_size = (max(short_side, round(height * scale)), max(short_side, round(width * scale)))
    if new_size == (height, width):
        return frames
    channels_first = torch.from_numpy(np.ascontiguousarray(frames.transpose(0, 3, 1, 2)))
    # antialias: shrinking 720p frames to ~64 pixels without it aliases badly.
    resized = F.interpolate(channels_first, size=new_size, mode="bilinear", align_corners=False, antialias=True)
    return resized.numpy().transpose(0, 2, 3, 1)


def crop_origin(height: int, width: int, size: int, rng: np.random.Generator | None) -> tuple[int, int]:
    """Top-left corner of a size x size crop: uniformly random with a generator, else centred."""
    if size > min(height, width):
        raise ValueError(f"crop {size} larger than the {height}x{width} frames (resize must be >= size)")
    if rng is None:
        return (height - size) // 2, (width - size) // 2
    return int(rng.integers(0, height - size + 1)), int(rng.integers(0, width - size + 1))


def normalize(frames: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """uint8 (or [0, 255] float) (T, H, W, C) -> float32 (T, C, H, W) of (x / 255 - mean) / std per channel."""
    scale = (1.0 / (255.0 * np.asarray(std, dtype=np.float32))).reshape(1, -1, 1, 1)
    shift = (np.asarray(mean, dtype=np.float32) / np.asarray(std, dtype=np.float32)).reshape(1, -1, 1, 1)
    clip = np.ascontiguousarray(frames.transpose(0, 3, 1, 2), dtype=np.float32)
    clip *= scale
    clip -= shift
    return torch.from_numpy(clip)


@dataclass(frozen=True)
class SequenceTransform:
    """Sequence clips: float32 steps (T, D), NaN where missing -> a float32 tensor (T, D).

    Values stay raw: the models normalise them with the training split's statistics (`InputNorm`),
    so a clip means the same in training and inference. In training, a `SequenceAugmentation` warps
    time, scales each channel and adds noise (`augment_sequence`); missing values stay missing.
    """

    train: bool
    augment: SequenceAugmentation | None = None  # training only

    def __call__(self, steps: np.ndarray, rng: np.random.Generator | None = None) -> torch.Tensor:
        clip = np.asarray(steps, dtype=np.float32)
        if clip.ndim != 2:
            raise ValueError(f"expected steps shaped (T, D), got {tuple(clip.shape)}")
        if self.train and self.augment is not None and self.augment.enabled:
            clip = augment_sequence(clip, self.augment, rng if rng is not None else np.random.default_rng())
        return torch.from_numpy(np.ascontiguousarray(clip, dtype=np.float32))


WARP_PIECES = 4  # pieces of the time warp, each at its own speed


def augment_sequence(clip: np.ndarray, augment: SequenceAugmentation, rng: np.random.Generator) -> np.ndarray:
    """Time warp, per-channel scaling and jitter of one clip (T, D), one draw per clip.

    The warp resamples the clip at positions that advance at a speed from U[1 - w, 1 + w] in each of
    `WARP_PIECES` equal pieces, stretched to span the clip, so the clip keeps its first and last step
    and the order of its phases: only their relative durations change (a class is the order of phases,
    not their tempo). Always draws the same numbers whichever parts are on, so later draws do not
    depend on the settings.
    """
    T, D = clip.shape
    speeds = rng.uniform(1 - augment.time_warp, 1 + augment.time_warp, WARP_PIECES)
    gains = rng.uniform(1 - augment.scale, 1 + augment.scale, D).astype(np.float32)
    noise = rng.standard_normal((T, D)).astype(np.float32)
    out = clip
    if augment.time_warp > 0 and T > 1:
        piece = np.minimum((np.arange(T - 1) * WARP_PIECES) // (T - 1), WARP_PIECES - 1)
        positions = np.concatenate([[0.0], np.cumsum(speeds[piece])])
        positions *= (T - 1) / positions[-1]
        steps = np.arange(T)
        out = np.stack([np.interp(positions, steps, out[:, d]) for d in range(D)], axis=1).astype(np.float32)
    if augment.scale > 0:
        out = out * gains
    if augment.jitter > 0:
        with warnings.catch_warnings():  # a channel missing throughout has no spread: it gets no noise
            warnings.simplefilter("ignore", RuntimeWarning)
            spread = np.nan_to_num(np.nanstd(out, axis=0))
        out = out + np.float32(augment.jitter) * spread.astype(np.float32) * noise
    return out
