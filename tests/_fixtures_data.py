"""Tiny datasets in the official annotation layouts, written into a test's tmp_path."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np


def write_video(path: Path, frames: int = 6, size: int = 32) -> Path:
    """A real H.264 mp4 with `frames` frames (each a different grey level)."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for i in range(frames):
            image = np.full((size, size, 3), (i * 40) % 256, dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_frames(folder: Path, frames: int = 4, size: int = 16) -> Path:
    """A FineDiving-style frame folder: 00000.jpg, 00001.jpg, ..."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(frames):
        Image.fromarray(np.full((size, size, 3), (i * 50) % 256, dtype=np.uint8)).save(folder / f"{i:05d}.jpg")
    return folder


def diving48_vocab(num_classes: int) -> list[list[str]]:
    return [["Back", f"{i:02d}som", "05Twis", "FREE"] for i in range(num_classes)]


def make_diving48(
    root: Path,
    train: list[tuple[str, int, int, int]],
    test: list[tuple[str, int, int, int]],
    num_classes: int = 3,
    frames: int = 6,
    videos: bool = True,
) -> Path:
    """Diving48 V2 layout; entries are (vid_name, label, start_frame, end_frame)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "Diving48_vocab.json").write_text(json.dumps(diving48_vocab(num_classes)))
    for name, items in (("Diving48_V2_train.json", train), ("Diving48_V2_test.json", test)):
        records = [{"vid_name": v, "label": lab, "start_frame": s, "end_frame": e} for v, lab, s, e in items]
        (root / name).write_text(json.dumps(records))
        if videos:
            for vid, *_ in items:
                write_video(root / "rgb" / f"{vid}.mp4", frames=frames)
    return root


def make_finegym(root: Path, prefix: str, train: list[tuple[str, int]], val: list[tuple[str, int]],
                 num_classes: int, videos: bool = True) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / f"{prefix}_categories.txt").write_text(
        "".join(f"Clabel: {i}; set: {i % 4 + 1}; Glabel: {i + 10}; (VT) element {i}; tucked\n"
                for i in range(num_classes))
    )
    for name, items in ((f"{prefix}_train_element_v1.0.txt", train), (f"{prefix}_val_element.txt", val)):
        (root / name).write_text("".join(f"{eid} {lab}\n" for eid, lab in items))
        if videos:
            for eid, _ in items:
                write_video(root / f"{eid}.mp4", frames=4)
    return root


def make_finediving(root: Path, actions: dict[tuple[str, int], str], train: list[tuple[str, int]],
                    test: list[tuple[str, int]], frames: bool = True) -> Path:
    ann = root / "Annotations"
    ann.mkdir(parents=True, exist_ok=True)
    annotation = {
        key: [action, np.float64(80.5), 3.2, np.array([10, 20]), np.zeros(30, dtype=np.int64)]
        for key, action in actions.items()
    }
    (ann / "fine-grained_annotation_aqa.pkl").write_bytes(pickle.dumps(annotation))
    (ann / "train_split.pkl").write_bytes(pickle.dumps(train))
    (ann / "test_split.pkl").write_bytes(pickle.dumps(test))
    if frames:
        for event, idx in train + test:
            write_frames(root / event / str(idx))
    return root


class RunsShellCommand:
    """Unpickling this calls os.system(command): the attack a restricted unpickler must refuse."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (self.command,)


def evil_pickle(path: Path, marker: Path) -> Path:
    """A pickle that, if loaded with pickle.load, creates `marker`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps({("ev", 1): [RunsShellCommand(f"touch {marker}")]}))
    return path
