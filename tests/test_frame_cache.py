"""The frame cache: what it serves equals what decoding gives, bit for bit; it never serves stale
frames; it stays within its bound; `auto` decides by the estimated size."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from fgar_cli.config import CacheMode, ClipConfig
from fgar_cli.data import frame_cache as fc
from fgar_cli.data.dataset import ClipDataset, ClipMode
from fgar_cli.data.frame_cache import FrameCache, open_cache
from fgar_cli.data.index import DatasetIndex, VideoEntry
from fgar_cli.data.video import count_frames

from helpers import write_frame_folder, write_video

CLIP = ClipConfig(num_frames=8, size=16)  # short side 18: the 32 px videos are resized, so is the cache


@pytest.fixture
def index(tmp_path: Path) -> DatasetIndex:
    write_video(tmp_path / "a.mp4", 30, size=32)
    write_video(tmp_path / "b.mp4", 12, size=32)
    write_frame_folder(tmp_path / "frames", 10, size=24)
    entries = [
        VideoEntry("a", "a.mp4", 0, num_frames=count_frames(tmp_path / "a.mp4")),
        VideoEntry("a_trimmed", "a.mp4", 1, start_frame=5, end_frame=25, num_frames=20),
        VideoEntry("b", "b.mp4", 1, num_frames=12),
        VideoEntry("folder", "frames", 0, num_frames=10),
    ]
    return DatasetIndex("list", str(tmp_path), ["x", "y"], entries)


def cache(tmp_path: Path, limit: int = 1 << 30) -> FrameCache:
    return FrameCache(tmp_path / "cache", 18, limit)


@pytest.mark.parametrize("mode", ["train", "test", "gitdl"])
def test_cached_clips_equal_decoded_clips_bit_for_bit(index: DatasetIndex, tmp_path: Path, mode: str) -> None:
    plain = ClipDataset(index, index.entries, CLIP, ClipMode(mode), seed=3)
    cached = ClipDataset(index, index.entries, CLIP, ClipMode(mode), seed=3, cache=cache(tmp_path))
    for epoch in (0, 1):  # the first epoch fills the cache, the second reads it
        plain.set_epoch(epoch)
        cached.set_epoch(epoch)
        for i in range(len(index.entries)):
            a, b = plain[i], cached[i]
            for key in a:
                if torch.is_tensor(a[key]):
                    torch.testing.assert_close(b[key], a[key], rtol=0, atol=0, msg=f"{mode} {i} {key}")
    assert cached.cache.misses == len(index.entries) and cached.cache.hits > 0


def test_several_views_equal_decoding_too(index: DatasetIndex, tmp_path: Path) -> None:
    plain = ClipDataset(index, index.entries, CLIP, ClipMode.TEST, num_views=3)
    cached = ClipDataset(index, index.entries, CLIP, ClipMode.TEST, num_views=3, cache=cache(tmp_path))
    for _ in range(2):
        for i in range(len(index.entries)):
            torch.testing.assert_close(cached[i]["video"], plain[i]["video"], rtol=0, atol=0)


def test_a_hit_decodes_nothing(index: DatasetIndex, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    frames = cache(tmp_path)
    path = index.resolve(index.entries[0])
    first = frames.read(path, np.array([2, 7, 7, 29]), 0, 30, 30)

    def no_decoding(*args: object, **kwargs: object) -> None:
        raise AssertionError("decoded although the frames are cached")

    monkeypatch.setattr(fc, "read_frames", no_decoding)
    again = cache(tmp_path).read(path, np.array([2, 7, 7, 29]), 0, 30, 30)  # a new process would do the same
    np.testing.assert_array_equal(again, first)
    assert first.shape == (4, 18, 18, 3)


def test_a_changed_video_is_never_served_stale(index: DatasetIndex, tmp_path: Path) -> None:
    frames = cache(tmp_path)
    path = index.resolve(index.entries[2])
    before = frames.read(path, np.arange(12), 0, 12, 12)
    write_video(path, 12, size=32, codec="libx264", gop=3)  # other bytes, same name
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    frames.read(path, np.arange(12), 0, 12, 12)
    assert frames.misses == 2  # another key: decoded again
    other_size = FrameCache(tmp_path / "cache", 24, 1 << 30)
    assert other_size.read(path, np.arange(12), 0, 12, 12).shape[1:3] == (24, 24)
    assert before.shape[1:3] == (18, 18)


def test_the_bound_is_kept_and_reads_stay_right(index: DatasetIndex, tmp_path: Path) -> None:
    small = cache(tmp_path, limit=30 * 18 * 18 * 3 + 500)  # room for entry "a", not for more
    plain = ClipDataset(index, index.entries, CLIP, ClipMode.TEST)
    cached = ClipDataset(index, index.entries, CLIP, ClipMode.TEST, cache=small)
    for i in range(len(index.entries)):
        torch.testing.assert_close(cached[i]["video"], plain[i]["video"], rtol=0, atol=0)
    assert small.full and fc.folder_bytes(tmp_path / "cache") <= small.limit_bytes


def test_a_damaged_cache_file_is_decoded_again(index: DatasetIndex, tmp_path: Path) -> None:
    frames = cache(tmp_path)
    path = index.resolve(index.entries[0])
    good = frames.read(path, np.arange(30), 0, 30, 30)
    (file,) = (tmp_path / "cache").rglob("*.npy")
    file.write_bytes(b"not numpy")
    np.testing.assert_array_equal(frames.read(path, np.arange(30), 0, 30, 30), good)


def test_auto_turns_on_when_the_videos_fit(index: DatasetIndex, monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("FGAR_CACHE_DIR", str(tmp_path / "c"))
    videos = [(index.resolve(e), e.num_frames) for e in index.entries]
    on, line = open_cache(videos, 18, CacheMode.AUTO, limit_gb=1.0)
    assert on is not None and on.folder == tmp_path / "c" / "frames" and "MB" in line
    expected = (30 + 20 + 12 + 10) * 18 * 18 * 3
    assert fc.estimated_bytes(videos, 18) == expected
    off, line = open_cache(videos, 18, CacheMode.AUTO, limit_gb=expected / 2**30 / 2)
    assert off is None and "frame cache: off" in line and "run.frame_cache=on" in line
    forced, _ = open_cache(videos, 18, CacheMode.ON, limit_gb=expected / 2**30 / 2)
    assert forced is not None
    assert open_cache(videos, 18, CacheMode.OFF, 1.0)[0] is None


def _entry_bytes(frames: int, side: int = 18) -> int:
    return frames * side * side * 3 + 128  # as FrameCache counts an entry


def test_a_full_folder_evicts_the_least_recently_used(index: DatasetIndex, tmp_path: Path) -> None:
    """Entries left by earlier runs (their videos may be gone) make room, oldest first."""
    earlier = cache(tmp_path)
    a, b, folder = (index.resolve(index.entries[i]) for i in (0, 2, 3))
    earlier.read(a, np.arange(30), 0, 30, 30)
    earlier.read(b, np.arange(12), 0, 12, 12)
    file_a, file_b = earlier._file(a, 0, 30), earlier._file(b, 0, 12)
    os.utime(file_a, ns=(1, 10**18))  # a used long ago, b since
    os.utime(file_b, ns=(1, 2 * 10**18))
    later = cache(tmp_path, limit=_entry_bytes(30) + _entry_bytes(12) + 500)
    decoded = later.read(folder, np.arange(10), 0, 10, 10)
    assert not file_a.exists() and file_b.exists() and later._file(folder, 0, 10).exists()
    assert not later.full and fc.folder_bytes(tmp_path / "cache") <= later.limit_bytes
    np.testing.assert_array_equal(cache(tmp_path).read(folder, np.arange(10), 0, 10, 10), decoded)


def test_a_read_marks_an_entry_recently_used(index: DatasetIndex, tmp_path: Path) -> None:
    path = index.resolve(index.entries[0])
    cache(tmp_path).read(path, np.arange(30), 0, 30, 30)
    file = cache(tmp_path)._file(path, 0, 30)
    os.utime(file, ns=(1, 10**18))
    cache(tmp_path).read(path, np.arange(30), 0, 30, 30)  # another process maps it
    assert file.stat().st_mtime_ns > 10**18


def test_entries_this_process_holds_are_never_evicted(index: DatasetIndex, tmp_path: Path) -> None:
    """A stage's own frames stay: past the bound it decodes the rest instead of thrashing."""
    a, b = index.resolve(index.entries[0]), index.resolve(index.entries[2])
    own = cache(tmp_path, limit=_entry_bytes(30) + 500)
    own.read(a, np.arange(30), 0, 30, 30)
    again = own.read(b, np.arange(12), 0, 12, 12)
    assert own.full and own._file(a, 0, 30).exists() and not own._file(b, 0, 12).exists()
    np.testing.assert_array_equal(again, cache(tmp_path / "other").read(b, np.arange(12), 0, 12, 12))
