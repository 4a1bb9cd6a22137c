"""Decode once: a cache of decoded frames at the resolution training reads them at.

The first time a clip of a video is read, every frame of the entry's range is decoded, resized to
the transform's short side (the first step of `ClipTransform`, so the transform's own resize then
does nothing) and stored as one uint8 `.npy` file; every later read, in this epoch, the next one or
a later stage, maps that file and takes the frames it needs. A clip read through the cache is the
clip decoded from the video, bit for bit (`tests/test_frame_cache.py`).

* Keyed by the source (resolved path, size, modification time; a frame folder's file count too),
  the entry's frame range and the short side, so a changed video or another size never serves
  stale frames: it gets another key. (A process looks a video's key up once, at its first read from
  the cache, and keeps the file mapped; a video changed while a stage runs is seen by the next one.)
* One file per entry, written atomically, so DataLoader workers and concurrent stages can share it.
* Bounded: `limit_bytes` for the whole folder. Past it, the least recently used entries are removed
  (every process touches a file's time when it first maps it), never one this process holds open, so
  entries of videos that no longer exist (regenerated datasets, other runs) cannot fill the folder
  for good. When only this process's own entries are left, clips are decoded as if there were no
  cache. Another process may still have a removed file mapped: Linux keeps it until unmapped.
* `auto` (the default) turns the cache on when the run's videos fit in the limit at this size, and
  says how big they would be when they do not (`--set run.frame_cache=on` then caches up to the limit).
Where: $FGAR_CACHE_DIR, else $XDG_CACHE_HOME/fgar, else ~/.cache/fgar, in `frames/<short side>/`.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fgar_cli.data.transforms import resize_short_side
from fgar_cli.data.video import read_frames
from fgar_cli.files import atomic_path

VERSION = 1


def default_folder() -> Path:
    if os.environ.get("FGAR_CACHE_DIR"):
        return Path(os.environ["FGAR_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "fgar"


def _source_key(path: Path) -> str:
    stat = path.stat()
    if path.is_dir():  # a frame folder: its files, not the folder's own size, say what it holds
        files = sorted(path.iterdir())
        return f"{path.resolve()}|dir|{len(files)}|{max((f.stat().st_mtime_ns for f in files), default=0)}"
    return f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"


def folder_bytes(folder: Path) -> int:
    total = 0
    with contextlib.suppress(OSError):
        for f in folder.rglob("*.npy"):
            with contextlib.suppress(OSError):
                total += f.stat().st_size
    return total


@dataclass
class FrameCache:
    """Decoded frames of one short side, in `folder`."""

    folder: Path
    short_side: int
    limit_bytes: int
    used_bytes: int = -1  # measured on first use
    hits: int = 0
    misses: int = 0
    full: bool = field(default=False)
    # This process's open maps, by source and range: the key (a stat of the video) is taken once per
    # process, and an epoch's reads cost one slice each. Not pickled to DataLoader workers.
    _maps: dict[tuple[str, int, int], np.ndarray] = field(default_factory=dict, repr=False)
    _mine: set[Path] = field(default_factory=set, repr=False)  # files this process read or wrote

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_maps": {}, "_mine": set()}

    def _file(self, path: Path, start: int, end: int) -> Path:
        key = hashlib.sha1(f"v{VERSION}|{_source_key(path)}|{start}|{end}|{self.short_side}".encode()).hexdigest()
        return self.folder / str(self.short_side) / key[:2] / f"{key}.npy"

    def read(self, path: Path, indices: np.ndarray, start: int, end: int, total: int | None) -> np.ndarray:
        """Frames at absolute `indices` (all inside [start, end)) at the cache's short side, (N, H, W, 3)."""
        opened = self._maps.get((str(path), start, end))
        if opened is not None:
            self.hits += 1
            return np.ascontiguousarray(opened[indices - start])
        file = self._file(path, start, end)
        if file.exists():
            try:
                frames = np.load(file, mmap_mode="r")
                with contextlib.suppress(OSError):
                    os.utime(file)  # recently used: the last to be evicted
                self._maps[(str(path), start, end)] = frames
                self._mine.add(file)
                self.hits += 1
                return np.ascontiguousarray(frames[indices - start])
            except (OSError, ValueError):  # damaged (a disk error): decode again below
                pass
        self.misses += 1
        frames = resize_short_side(read_frames(path, np.arange(start, end), total_frames=total), self.short_side)
        self._store(file, frames)
        return frames[indices - start]

    def _store(self, file: Path, frames: np.ndarray) -> None:
        if self.used_bytes < 0:
            self.used_bytes = folder_bytes(self.folder)
        size = frames.nbytes + 128
        if self.full or size > self.limit_bytes:
            self.full = True
            return
        if self.used_bytes + size > self.limit_bytes:
            self._evict(self.used_bytes + size - self.limit_bytes + self.limit_bytes // 10)
            if self.used_bytes + size > self.limit_bytes:
                self.full = True
                return
        try:
            with atomic_path(file, every_rank=True) as tmp, open(tmp, "wb") as f:
                np.save(f, frames)
        except Exception:  # noqa: BLE001 (a cache that cannot be written is only a slower run)
            self.full = True
            return
        self._mine.add(file)
        self.used_bytes += size

    def _evict(self, wanted: int) -> None:
        """Remove least recently used entries, not this process's, until `wanted` bytes are free
        (a tenth of the limit more than the entry needs, so a full folder is not scanned per clip)."""
        entries = []
        for f in self.folder.rglob("*.npy"):
            with contextlib.suppress(OSError):
                if f not in self._mine:
                    stat = f.stat()
                    entries.append((stat.st_mtime_ns, stat.st_size, f))
        freed = 0
        for _, size, f in sorted(entries):
            if freed >= wanted:
                break
            with contextlib.suppress(OSError):  # another process may have removed it first
                f.unlink()
                freed += size
        self.used_bytes = max(self.used_bytes - freed, 0)


def estimated_bytes(paths_and_frames: list[tuple[Path, int]], short_side: int) -> int | None:
    """About how many bytes the frames of these videos take at `short_side` (None: none can be read)."""
    for path, _ in paths_and_frames:
        try:
            first = resize_short_side(read_frames(path, [0]), short_side)
        except Exception:  # noqa: BLE001 (an unreadable video: try the next one)
            continue
        per_frame = first[0].nbytes
        return sum(max(n, 0) for _, n in paths_and_frames) * per_frame
    return None


def open_cache(
    paths_and_frames: list[tuple[Path, int]], short_side: int, mode: str, limit_gb: float
) -> tuple[FrameCache | None, str]:
    """The cache for these videos at `short_side` under `mode` (auto, on, off), and a line that says why."""
    if mode == "off":
        return None, "frame cache: off"
    limit = int(limit_gb * 2**30)
    size = estimated_bytes(paths_and_frames, short_side)
    about = f"about {size / 2**20:,.0f} MB" if size is not None else "size unknown"
    folder = default_folder() / "frames"
    if mode == "auto" and (size is None or size > limit):
        return None, (
            f"frame cache: off ({len(paths_and_frames)} videos at {short_side} px take {about}, more than "
            f"run.frame_cache_gb = {limit_gb:g}; --set run.frame_cache=on caches up to that limit)"
        )
    return FrameCache(folder, short_side, limit), f"frame cache: {folder} ({about} at {short_side} px)"
