"""Which frames of a video make a clip.

All functions take a frame range [start, end) of decodable frames and return absolute frame
indices (int64), ready for `read_frames`.

Short videos: when the range holds fewer frames than the clip needs, segments become shorter
than one frame and frames repeat (each segment takes the frame its position falls on), so every
video yields a full clip. Datasets that would rather drop such videos set `min_frames`
(ClipDataset), which marks them too short before sampling.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def segment_indices(
    start: int,
    end: int,
    num_segments: int,
    train: bool,
    rng: np.random.Generator | None,
    view: int = 0,
    num_views: int = 1,
) -> np.ndarray:
    """One frame from each of `num_segments` equal segments of [start, end) (TSN-style).

    Training: a uniformly random frame per segment (needs `rng`). Testing: view `view` of
    `num_views` takes the frame at fraction (view + 0.5) / num_views of every segment, so one
    view is the centre frames and several views tile each segment evenly and deterministically.
    """
    length = end - start
    if length <= 0:
        raise ValueError(f"empty frame range [{start}, {end})")
    if num_segments < 1:
        raise ValueError(f"num_segments must be at least 1, got {num_segments}")
    if not 0 <= view < num_views:
        raise ValueError(f"view {view} outside 0..{num_views - 1}")
    segment = length / num_segments
    if train:
        if rng is None:
            raise ValueError("training sampling needs a random generator")
        offsets = rng.random(num_segments) * segment
    else:
        offsets = np.full(num_segments, (view + 0.5) / num_views * segment)
    positions = np.floor(np.arange(num_segments) * segment + offsets).astype(np.int64)
    # floor(x) < length holds mathematically; the clip guards the float rounding edge.
    return start + np.clip(positions, 0, length - 1)


def gitdl_indices(
    start: int, end: int, num_frames_clip: int, rng: np.random.Generator | None
) -> tuple[np.ndarray, np.ndarray]:
    """Global and local clips for GITDL pretraining (our interpretation; docs/METHOD.md, L_GITDL).

    Global: `num_frames_clip` frames at stride 2, covering 2T frames at a random place.
    Local: T consecutive frames at a random place inside the global clip's span. Both are
    absolute frame indices, which are the frame times the Gaussian targets use.
    Videos shorter than 2T: the global clip covers the whole range with a stride scaled down to
    range / T (frames repeat below T frames); the local clip keeps stride 1 while the range
    holds T frames, else it covers the range like the global clip does.
    `rng=None` centres both clips (deterministic, for tests and evaluation).
    """
    length = end - start
    clip = num_frames_clip
    if length <= 0:
        raise ValueError(f"empty frame range [{start}, {end})")
    if clip < 1:
        raise ValueError(f"num_frames_clip must be at least 1, got {clip}")
    global_span = min(2 * clip, length)
    local_span = min(clip, global_span)
    global_start = start + _place(length - global_span, rng)
    local_start = global_start + _place(global_span - local_span, rng)
    steps = np.arange(clip)
    global_idx = global_start + np.floor(steps * (global_span / clip)).astype(np.int64)
    local_idx = local_start + np.floor(steps * (local_span / clip)).astype(np.int64)
    return global_idx, local_idx


def _place(slack: int, rng: np.random.Generator | None) -> int:
    """Offset in [0, slack]: random with a generator, the middle without."""
    return int(rng.integers(0, slack + 1)) if rng is not None else slack // 2


def temporal_crop(start: int, end: int, min_fraction: float, rng: np.random.Generator) -> tuple[int, int]:
    """A random window [s, e) of [start, end) holding a fraction U[min_fraction, 1] of its frames
    (at least one): a training clip then sees part of the action, at a random place."""
    length = end - start
    window = max(1, round(length * rng.uniform(min_fraction, 1.0)))
    offset = int(rng.integers(0, length - window + 1))
    return start + offset, start + offset + window


def tclr_indices(
    start: int,
    end: int,
    num_frames_clip: int,
    local_clips: int,
    local_frames: int,
    rng: np.random.Generator | None,
) -> tuple[np.ndarray, np.ndarray]:
    """The global clip and the K local clips of TCLR (Dave et al. 2022; docs/METHOD.md).

    The global clip takes T frames evenly over a span of min(K T, range) frames at a random place;
    local clip q takes L = `local_frames` frames evenly over the q-th of K equal, non-overlapping
    parts of that span. With L = T and a span of K T frames (TCLR: 64 frames, T = 16, K = 4) the global
    clip has stride K and each local clip is T consecutive frames, exactly as in TCLR's code; on
    shorter videos local clips repeat frames. Returns (T,) and (K, L) absolute frame indices;
    `rng=None` centres the span.
    """
    length = end - start
    clip, parts = num_frames_clip, local_clips
    if length <= 0:
        raise ValueError(f"empty frame range [{start}, {end})")
    if min(clip, parts, local_frames) < 1:
        raise ValueError(f"need at least one frame and one local clip, got {clip}, {parts}, {local_frames}")
    span = min(parts * clip, length)
    span_start = start + _place(length - span, rng)
    global_idx = span_start + np.floor(np.arange(clip) * (span / clip)).astype(np.int64)
    part = span / parts
    steps = np.arange(local_frames) * (part / local_frames)
    local_idx = span_start + np.floor(np.arange(parts)[:, None] * part + steps[None, :]).astype(np.int64)
    return global_idx, np.minimum(local_idx, span_start + span - 1)


# ACL+MTL (docs/PEERS_ACL_MTL.md): a short clip and long clips that contain its span


def _clip_offsets(num_frames: int, clip_frames: int, interval: int) -> np.ndarray:
    """Offsets of a clip of `clip_frames` frames every `interval` frames; a clip whose span does not
    fit in the video covers the whole video instead, at the largest (fractional) step that fits
    (frames repeat when the video has fewer frames than the clip, as in fgar_cli.data.sampling)."""
    steps = np.arange(clip_frames)
    if interval * (clip_frames - 1) + 1 <= num_frames:
        return steps * interval
    if clip_frames == 1:
        return steps
    return np.minimum(np.floor(steps * ((num_frames - 1) / (clip_frames - 1))).astype(np.int64), num_frames - 1)


def _place_in(low: int, high: int, rng: np.random.Generator | None, centre: int) -> int:
    """A start in [low, high]: uniform with a generator, the one nearest `centre` without."""
    if rng is not None:
        return int(rng.integers(low, high + 1))
    return int(min(max(centre, low), high))


def long_term_indices(
    num_frames: int,
    clip_frames: int,
    intervals: Sequence[int],
    rng: np.random.Generator | None,
    *,
    short_interval: int = 8,
) -> list[np.ndarray]:
    """Frame indices in [0, num_frames) of the short-term clip x^S (every `short_interval` frames)
    and of the long-term clips x^{L_n} (every intervals[n] frames), T = clip_frames each.

    Returns [short, long_1, ..., long_N], each (T,) int64. The short clip is placed uniformly at
    random; each long clip is placed uniformly at random among the windows that contain the short
    clip's span (ours: Eq. 13 looks for the short clip's content in the long clip, and Eq. 19
    averages the clips' predictions into one pseudo-label, so they must show the same moment).
    A clip whose span exceeds the video covers the whole video (`_clip_offsets`). rng=None centres.
    """
    if num_frames < 1 or clip_frames < 1 or short_interval < 1:
        raise ValueError(
            f"need num_frames, clip_frames, short_interval >= 1, got {num_frames}, {clip_frames}, {short_interval}"
        )
    if not intervals or any(s < short_interval for s in intervals):
        raise ValueError(
            f"long-term intervals {list(intervals)} must be given and >= the short interval {short_interval}"
        )
    short = _clip_offsets(num_frames, clip_frames, short_interval)
    short_span = int(short[-1]) + 1
    short_start = _place_in(0, num_frames - short_span, rng, (num_frames - short_span) // 2)
    clips = [short_start + short]
    for interval in intervals:
        offsets = _clip_offsets(num_frames, clip_frames, interval)
        span = int(offsets[-1]) + 1
        low = max(0, short_start + short_span - span)
        high = min(short_start, num_frames - span)
        clips.append(_place_in(low, high, rng, short_start + (short_span - span) // 2) + offsets)
    return [clip.astype(np.int64) for clip in clips]
