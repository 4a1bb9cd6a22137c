"""Clip sampling: segment frames for training/testing/multi-view, and GITDL global/local pairs."""

from __future__ import annotations

import numpy as np
import pytest

from fgar_cli.data.sampling import gitdl_indices, segment_indices

RANGES = [(0, 100), (7, 40), (30, 46), (5, 9), (0, 1), (3, 19)]  # long, medium, = T, < T, 1 frame


def segment_bounds(start: int, end: int, num_segments: int) -> tuple[np.ndarray, np.ndarray]:
    """[lo, hi] frame bounds of each segment (hi inclusive; equal to lo when segments < 1 frame)."""
    edges = start + np.arange(num_segments + 1) * (end - start) / num_segments
    lo = np.floor(edges[:-1]).astype(int)
    hi = np.maximum(lo, np.ceil(edges[1:]).astype(int) - 1)
    return lo, hi


@pytest.mark.parametrize(("start", "end"), RANGES)
def test_training_frames_fall_in_their_segments(start: int, end: int) -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        idx = segment_indices(start, end, 16, True, rng)
        lo, hi = segment_bounds(start, end, 16)
        assert idx.shape == (16,) and idx.dtype == np.int64
        assert np.all((lo <= idx) & (idx <= hi))
        assert np.all(np.diff(idx) >= 0)


def test_training_covers_each_segment_and_is_seeded() -> None:
    draws = np.stack([segment_indices(0, 64, 8, True, np.random.default_rng(s)) for s in range(200)])
    # each 8-frame segment gets every one of its frames over 200 draws
    for k in range(8):
        assert set(draws[:, k].tolist()) == set(range(8 * k, 8 * k + 8))
    again = segment_indices(0, 64, 8, True, np.random.default_rng(3))
    np.testing.assert_array_equal(again, draws[3])
    with pytest.raises(ValueError):
        segment_indices(0, 64, 8, True, None)


def test_testing_takes_centre_frames() -> None:
    np.testing.assert_array_equal(segment_indices(10, 50, 4, False, None), [15, 25, 35, 45])
    np.testing.assert_array_equal(segment_indices(0, 8, 4, False, None), [1, 3, 5, 7])


@pytest.mark.parametrize(("start", "end"), RANGES)
def test_views_tile_segments_deterministically(start: int, end: int) -> None:
    views = np.stack([segment_indices(start, end, 8, False, None, v, 3) for v in range(3)])
    lo, hi = segment_bounds(start, end, 8)
    assert np.all((lo <= views) & (views <= hi))
    assert np.all(np.diff(views, axis=0) >= 0)  # later views sit later in every segment
    if (end - start) >= 3 * 8:  # segments of >= 3 frames: the 3 views are distinct frames
        assert np.all(np.diff(views, axis=0) > 0)
    np.testing.assert_array_equal(views[1], segment_indices(start, end, 8, False, None, 1, 3))
    with pytest.raises(ValueError):
        segment_indices(start, end, 8, False, None, 3, 3)


def test_short_video_repeats_frames_evenly() -> None:
    idx = segment_indices(100, 105, 16, False, None)
    assert idx.shape == (16,)
    assert set(idx.tolist()) == set(range(100, 105))  # every frame used
    counts = np.bincount(idx - 100)
    assert counts.max() - counts.min() <= 1  # and repeated about equally often


def test_empty_range_is_an_error() -> None:
    with pytest.raises(ValueError):
        segment_indices(5, 5, 8, False, None)
    with pytest.raises(ValueError):
        gitdl_indices(5, 4, 8, np.random.default_rng(0))


def check_gitdl_pair(start: int, end: int, clip: int, glob: np.ndarray, local: np.ndarray) -> None:
    length = end - start
    assert glob.shape == local.shape == (clip,)
    assert np.all((start <= glob) & (glob < end)) and np.all((start <= local) & (local < end))
    assert np.all(np.diff(glob) >= 0) and np.all(np.diff(local) >= 0)
    if length >= 2 * clip:
        assert np.all(np.diff(glob) == 2)  # stride 2 over 2T frames
    if length >= clip:
        assert np.all(np.diff(local) == 1)  # T consecutive frames
    global_span_end = glob[0] + min(2 * clip, length)
    assert glob[0] <= local[0] and local[-1] < global_span_end  # local inside the global span


@pytest.mark.parametrize(("start", "end"), [(0, 200), (10, 42), (0, 24), (4, 20), (0, 10), (3, 4)])
def test_gitdl_pairs(start: int, end: int) -> None:
    rng = np.random.default_rng(1)
    for _ in range(50):
        glob, local = gitdl_indices(start, end, 16, rng)
        check_gitdl_pair(start, end, 16, glob, local)
    glob, local = gitdl_indices(start, end, 16, None)
    check_gitdl_pair(start, end, 16, glob, local)


def test_gitdl_short_video_scales_the_stride() -> None:
    glob, local = gitdl_indices(0, 24, 16, None)  # 24 frames: between T and 2T
    assert glob[0] == 0 and glob[-1] >= 21  # covers the whole range
    assert set(np.diff(glob).tolist()) <= {1, 2}
    glob, local = gitdl_indices(0, 10, 16, None)  # fewer than T frames: repeats
    assert set(glob.tolist()) == set(range(10)) and set(local.tolist()) == set(range(10))


def test_gitdl_places_clips_randomly_but_reproducibly() -> None:
    pairs = [gitdl_indices(0, 200, 8, np.random.default_rng(s)) for s in range(100)]
    starts = {int(g[0]) for g, _ in pairs}
    offsets = {int(loc[0] - g[0]) for g, loc in pairs}
    assert len(starts) > 30 and min(starts) >= 0 and max(starts) <= 200 - 16
    assert offsets == set(range(0, 9))  # local start anywhere in [g0, g0 + T]
    again = gitdl_indices(0, 200, 8, np.random.default_rng(5))
    np.testing.assert_array_equal(again[0], pairs[5][0])
    np.testing.assert_array_equal(again[1], pairs[5][1])
