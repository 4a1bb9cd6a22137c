"""Reading frames from video files and frame folders, and counting the frames that decode.

Frame indices are absolute and count decoded frames in presentation order from 0, the same
numbering decord uses. A "frame folder" is a directory of images named by number
(FineDiving: `<dir>/00000.jpg`, `<dir>/00001.jpg`, ...): frame i is the i-th file in numeric order.

Backends (`read_frames(..., backend=...)`; the environment variable FGAR_VIDEO_BACKEND sets the
default):
* "pyav" (default): PyAV. Requests whose frames all lie below SEQUENTIAL_LIMIT decode
  sequentially from frame 0; longer spans first list every frame's timestamp and keyframe flag
  (a demux pass, no decoding) and seek only when a keyframe lies between the frame decoded last
  and the next wanted one, so whole GOPs between wanted frames are skipped. Only the wanted
  frames are converted to RGB, with one reused swscale context. On the 2-core benchmark
  machine (benchmarks/decode.py, 16 frames per clip, CPU time) this read 1.0-1.4x as many
  clips/s as decord with num_threads=1 on every file tried (64x64 clips 1.1x, 600-frame videos
  1.1x) and 1.0-1.7x a plain PyAV loop, so decord is not the default.
* "decord": decord first, PyAV when decord cannot (not installed, a codec outside DECORD_CODECS,
  an open or decode error, or its frame count disagrees with the count that decodes).
`last_backend` names the backend that served the latest `read_frames` call in this process.

decord rules (docs/DATA.md, "Video reading"): torch is imported before decord (segfaults otherwise); a
reader is created per call, inside the DataLoader worker, with num_threads=1, and released
before returning (memory grows across get_batch calls otherwise). decord is used only for
codecs in DECORD_CODECS: the project's issue reports decord 0.6 failing on VP9-in-MP4. (The
decord 0.6.0 wheel on the build machine decoded PyAV-encoded VP9-in-MP4 correctly, so VP9 goes
to PyAV by this rule, not by an observed failure.)

Hang protection: decord can loop forever inside get_batch on a broken file while holding the
GIL (decord #373), where no in-process watchdog can run. The default backend never calls
decord. With "decord", broken files are kept away from it: `count_frames`, which indexing uses,
decodes every frame with PyAV and rejects files that fail part-way, so a broken file never
reaches training; decord only sees requests for frames below that decoded count (the #373 file
said 431 frames and decoded 300); when the caller passes `total_frames` and decord's
header-based length disagrees, PyAV serves the read. What remains is a file corrupted after
indexing: with DataLoader workers, set the DataLoader's `timeout` so a stuck worker becomes an
error.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import av
import numpy as np
import torch  # noqa: F401  (must be imported before decord: decord #293/#324 segfault otherwise)
from av.video.reformatter import VideoReformatter
from PIL import Image

from fgar_cli.errors import FgarError

Backend = Literal["pyav", "decord"]

# PyAV decodes requests whose last frame is below this sequentially from frame 0. Measured with
# 16 frames per clip: sequential won up to 200 frames even with a keyframe every 12-30 frames
# (by 5-20%: the keyframe-skipping path pays a demux pass and seeks); at 300 frames with a
# keyframe every 12, skipping won by 1.4x.
SEQUENTIAL_LIMIT = 250
# decord is trusted with these codecs only (FFmpeg codec names).
DECORD_CODECS = frozenset({"h264", "hevc", "mpeg4"})
FRAME_SUFFIXES = (".jpg", ".jpeg", ".png")

last_backend: str = ""

_TRAILING_NUMBER = re.compile(r"(\d+)$")


class VideoDecodeError(FgarError):
    """A video file or frame folder that is missing, empty, truncated or does not decode."""


@dataclass(frozen=True)
class VideoInfo:
    num_frames: int  # frames that decode (not the header's claim)
    header_frames: int  # what the container says; 0 when it does not say
    width: int
    height: int
    fps: float
    codec: str  # FFmpeg codec name, or "frames" for a frame folder


def count_frames(path: str | Path) -> int:
    """Number of frames that decode in a video file or frame folder.

    Raises VideoDecodeError (one line) for a missing, empty, truncated or undecodable source.
    Decodes the whole file with PyAV (see the module notes on why).
    """
    return probe_video(path).num_frames


def probe_video(path: str | Path) -> VideoInfo:
    """Decode a whole video file (or check a frame folder) and describe what decodes."""
    path = Path(path)
    if path.is_dir():
        return _probe_frame_folder(path)
    _check_file(path)
    with _open_container(path) as container:
        stream = _video_stream(container, path)
        num_frames = 0
        width = height = 0
        try:
            for frame in container.decode(stream):
                if num_frames == 0:
                    width, height = frame.width, frame.height
                num_frames += 1
        except av.FFmpegError as exc:
            raise VideoDecodeError(
                f"{path}: truncated or corrupt: decoding failed after {num_frames} frames ({_reason(exc)})"
            ) from None
        header_frames = int(stream.frames or 0)
        fps = float(stream.average_rate or stream.guessed_rate or 0.0)
        codec = stream.codec_context.name
    if num_frames == 0:
        raise VideoDecodeError(f"{path}: no frame decodes")
    return VideoInfo(num_frames, header_frames, width, height, fps, codec)


def read_frames(
    path: str | Path,
    indices: Sequence[int] | np.ndarray,
    total_frames: int | None = None,
    backend: Backend | None = None,
) -> np.ndarray:
    """Frames at absolute `indices` (any order, repeats allowed) as (N, H, W, 3) uint8 RGB.

    `backend`: "pyav" or "decord" (see the module notes); None reads FGAR_VIDEO_BACKEND, else
    "pyav". `total_frames`, when known, is the file's decodable frame count (from the index);
    decord is skipped when its own count disagrees. Raises VideoDecodeError naming the file.
    """
    global last_backend
    path = Path(path)
    wanted = np.asarray(indices, dtype=np.int64)
    if wanted.ndim != 1 or wanted.size == 0:
        raise ValueError("read_frames needs a non-empty 1-D sequence of frame indices")
    if wanted.min() < 0:
        raise VideoDecodeError(f"{path}: negative frame index {int(wanted.min())} requested")
    unique = np.unique(wanted)
    chosen = backend or os.environ.get("FGAR_VIDEO_BACKEND") or "pyav"
    if chosen not in ("pyav", "decord"):
        raise FgarError(f"FGAR_VIDEO_BACKEND: unknown video backend '{chosen}' (use pyav or decord)")

    if path.is_dir():
        frames = _read_frame_folder(path, unique)
        last_backend = "frames"
    else:
        _check_file(path)
        frames = None
        if chosen == "decord":
            frames = _read_decord(path, unique, total_frames)
            last_backend = "decord"
        if frames is None:
            frames = _read_pyav(path, unique)
            last_backend = "pyav"
    if np.array_equal(unique, wanted):
        return frames  # the usual case; spares a copy, which for 720p clips is tens of MB
    return frames[np.searchsorted(unique, wanted)]


# ---------------------------------------------------------------------------------------------
# PyAV


def _check_file(path: Path) -> None:
    if not path.exists():
        raise VideoDecodeError(f"{path}: file not found")
    if not path.is_file():
        raise VideoDecodeError(f"{path}: not a file")
    if path.stat().st_size == 0:
        raise VideoDecodeError(f"{path}: empty file (0 bytes)")


def _reason(exc: BaseException) -> str:
    """FFmpeg's short reason without PyAV's errno and call-site decoration."""
    return str(getattr(exc, "strerror", None) or exc).splitlines()[0]


def _open_container(path: Path) -> av.container.InputContainer:
    try:
        return av.open(str(path), mode="r")
    except av.FFmpegError as exc:
        reason = _reason(exc)
        raise VideoDecodeError(f"{path}: cannot open as a video, truncated or not a video file ({reason})") from None


def _video_stream(container: av.container.InputContainer, path: Path) -> av.video.stream.VideoStream:
    if not container.streams.video:
        raise VideoDecodeError(f"{path}: no video stream")
    stream = container.streams.video[0]
    # One thread: DataLoader workers already use every core, and threads slowed tiny clips down.
    stream.thread_count = 1
    return stream


def _read_pyav(path: Path, unique: np.ndarray) -> np.ndarray:
    """Decode the sorted, unique frame indices with PyAV."""
    with _open_container(path) as container:
        stream = _video_stream(container, path)
        try:
            if unique[-1] < SEQUENTIAL_LIMIT:
                got = _decode_sequential(container, stream, unique)
            else:
                got = _decode_seeking(container, stream, unique)
        except av.FFmpegError as exc:
            raise VideoDecodeError(f"{path}: truncated or corrupt: decoding failed ({_reason(exc)})") from None
    if len(got) < len(unique):
        missing = next(int(i) for i in unique if int(i) not in got)
        raise VideoDecodeError(f"{path}: frame {missing} requested but the video has fewer decodable frames")
    return _stack(path, [got[int(i)] for i in unique])


def _stack(path: Path, frames: list[np.ndarray]) -> np.ndarray:
    if any(f.shape != frames[0].shape for f in frames):
        raise VideoDecodeError(f"{path}: frame size changes within the video")
    return np.stack(frames)


def _decode_sequential(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream, unique: np.ndarray
) -> dict[int, np.ndarray]:
    """Decode from the first frame, converting only the wanted frames to RGB."""
    wanted = set(unique.tolist())
    last = int(unique[-1])
    # One swscale context for every frame: frame.to_ndarray(format="rgb24") builds a new one per
    # frame, which cost 3x the conversion itself on 64x64 frames.
    rgb = VideoReformatter()
    got: dict[int, np.ndarray] = {}
    for position, frame in enumerate(container.decode(stream)):
        if position in wanted:
            got[position] = rgb.reformat(frame, format="rgb24").to_ndarray()
        if position >= last:
            break
    return got


def _decode_seeking(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream, unique: np.ndarray
) -> dict[int, np.ndarray]:
    """Decode far-apart frames by seeking to the keyframe before each one, as decord does.

    A demux pass (no decoding) lists every frame's timestamp, which maps decoded frames to
    positions exactly, also for variable frame rate. Falls back to sequential decoding when the
    timestamps are missing or do not match the decoded frames.
    """
    packets = [(p.pts, p.is_keyframe) for p in container.demux(stream) if _is_frame_packet(p)]
    packets.sort()
    pts = [p for p, _ in packets]
    position_of = {p: k for k, p in enumerate(pts)}
    keyframes = np.array([k for k, (_, key) in enumerate(packets) if key], dtype=np.int64)
    if len(position_of) != len(pts) or keyframes.size == 0 or keyframes[0] != 0:
        container.seek(0)
        return _decode_sequential(container, stream, unique)

    rgb = VideoReformatter()
    got: dict[int, np.ndarray] = {}
    decoded_up_to = -1  # position of the last frame the running decoder produced
    frames: Iterator[av.VideoFrame] = iter(())
    for target in unique.tolist():
        if target >= len(pts):
            break
        keyframe = int(keyframes[np.searchsorted(keyframes, target, side="right") - 1])
        if keyframe > decoded_up_to or target <= decoded_up_to:
            container.seek(pts[keyframe], stream=stream, backward=True)
            frames = container.decode(stream)
        for frame in frames:
            decoded_up_to = position_of.get(frame.pts, -1)
            if decoded_up_to == -1:
                container.seek(0)  # timestamps do not match the demuxed ones: play it safe
                return _decode_sequential(container, stream, unique)
            if decoded_up_to == target:
                got[target] = rgb.reformat(frame, format="rgb24").to_ndarray()
            if decoded_up_to >= target:
                break
    return got


def _is_frame_packet(packet: av.Packet) -> bool:
    # Discarded packets (MP4 edit lists cut them) give no frame when decoding in order either.
    return packet.pts is not None and packet.size > 0 and not packet.is_discard


# ---------------------------------------------------------------------------------------------
# decord


def _read_decord(path: Path, unique: np.ndarray, total_frames: int | None) -> np.ndarray | None:
    """Frames from decord, or None where PyAV should serve the read instead."""
    try:
        import decord
    except ImportError:
        return None
    if not _decord_trusts_codec(path):
        return None
    try:
        reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
    except (decord.DECORDError, RuntimeError):
        return None
    try:
        length = len(reader)
        if (total_frames is not None and length != total_frames) or unique[-1] >= length:
            return None  # the header disagrees with what decodes: decord may loop (decord #373)
        return reader.get_batch(unique.tolist()).asnumpy()
    except (decord.DECORDError, RuntimeError, IndexError):
        return None
    finally:
        del reader  # release the decoder now; readers kept alive grow memory (decord #197)


def _decord_trusts_codec(path: Path) -> bool:
    try:
        with av.open(str(path), mode="r") as container:
            return bool(container.streams.video) and container.streams.video[0].codec_context.name in DECORD_CODECS
    except av.FFmpegError:
        return False  # PyAV reports the problem with its own message


# ---------------------------------------------------------------------------------------------
# frame folders


def _frame_files(folder: Path) -> list[Path]:
    """Image files of a frame folder, ordered by the number that ends their name."""
    numbered = []
    for entry in os.scandir(folder):
        name, suffix = os.path.splitext(entry.name)
        match = _TRAILING_NUMBER.search(name)
        if match and suffix.lower() in FRAME_SUFFIXES and entry.is_file():
            numbered.append((int(match.group(1)), Path(entry.path)))
    numbered.sort()
    return [p for _, p in numbered]


def _decode_image(path: Path) -> np.ndarray:
    # PIL rather than torchvision.io, whose image decoding is deprecated since torchvision 0.29.
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise VideoDecodeError(f"{path}: frame image does not decode ({str(exc).splitlines()[0]})") from None


def _probe_frame_folder(folder: Path) -> VideoInfo:
    """Count a frame folder's images; checks every file is non-empty and the first and last decode.

    Decoding every image would make indexing FineDiving slow; a corrupt image in the middle is
    caught when the clip is read (the dataset then skips and counts that video).
    """
    files = _frame_files(folder)
    if not files:
        raise VideoDecodeError(f"{folder}: frame folder has no numbered {'/'.join(FRAME_SUFFIXES)} images")
    for f in files:
        if f.stat().st_size == 0:
            raise VideoDecodeError(f"{f}: empty frame image (0 bytes)")
    first = _decode_image(files[0])
    _decode_image(files[-1])
    return VideoInfo(len(files), len(files), first.shape[1], first.shape[0], 0.0, "frames")


def _read_frame_folder(folder: Path, unique: np.ndarray) -> np.ndarray:
    files = _frame_files(folder)
    if unique[-1] >= len(files):
        raise VideoDecodeError(f"{folder}: frame {int(unique[-1])} requested but the folder has {len(files)} frames")
    return _stack(folder, [_decode_image(files[int(i)]) for i in unique])
