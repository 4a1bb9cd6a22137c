"""Helpers the tests share: the command line in-process, self-identifying videos, and tiny datasets in
the official annotation layouts (written into a test's tmp_path)."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np

# --------------------------------------------------------------------------- the command line


def fgar(*args: object) -> int:
    """Run `fgar ARGS` in-process through the real entry point; returns the exit code."""
    from fgar_cli.cli import main

    try:
        main([str(a) for a in args])
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1
    return 0


def one_error_line(text: str, *fragments: str) -> str:
    """The single `error:` line of a command's output (no traceback), holding every fragment."""
    assert "Traceback" not in text, text
    lines = [line for line in text.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, text
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


# --------------------------------------------------------------------------- the tiny pipeline (conftest.py: tiny_run)

CLIP = ["--num-frames", "8", "--size", "32"]


def fit_labeled(run: Path, split: Path, out: Path, epochs_e: int = 1, epochs_a: int = 1, *extra: object) -> int:
    """fit-labeled on the tiny run: small3d f_E, one epoch of each encoder unless told otherwise."""
    data = ["--index", run / "index.json", "--split", split, "--out-dir", out, "--arch-e", "small3d"]
    return fgar("fit-labeled", *data, "--epochs-e", epochs_e, "--epochs-a", epochs_a, *CLIP, *extra)


def encoders(run: Path, folder: str = "fit") -> list[object]:
    """--ckpt-a and --ckpt-e of the encoders in run/folder."""
    return ["--ckpt-a", run / folder / "A.pt", "--ckpt-e", run / folder / "E.pt"]


# --------------------------------------------------------------------------- videos and frame folders


def grey_level(i: int) -> int:
    """Frame i of the test videos is a flat grey of this level: frames identify themselves (i < 62)."""
    return 8 + 4 * (i % 62)


def frame_ids(frames: np.ndarray) -> list[int]:
    """Recover the frame numbers of grey-level frames (lossy codecs stay within +-1.5 levels)."""
    return [round((float(f.mean()) - 8) / 4) for f in frames]


def write_video(
    path: Path,
    num_frames: int = 6,
    size: int = 32,
    codec: str = "libx264",
    gop: int | None = None,
    faststart: bool = False,
) -> Path:
    """A real video (H.264 MP4 by default) whose frame i is the flat grey `grey_level(i)`."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    options = {"movflags": "+faststart"} if faststart else {}
    with av.open(str(path), "w", format="mp4", options=options) as container:
        stream = container.add_stream(codec, rate=25)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        if gop:
            stream.codec_context.gop_size = gop
        for i in range(num_frames):
            image = np.full((size, size, 3), grey_level(i), dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_frame_folder(folder: Path, num_frames: int = 4, size: int = 24, zero_pad: bool = True) -> Path:
    """FineDiving layout (00000.jpg, ...); without zero padding ("9.jpg", "10.jpg") the order is numeric."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(num_frames):
        image = np.full((size, size, 3), grey_level(i), dtype=np.uint8)
        Image.fromarray(image).save(folder / (f"{i:05d}.jpg" if zero_pad else f"{i}.jpg"), quality=95)
    return folder


# --------------------------------------------------------------------------- datasets in official layouts


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
                write_video(root / "rgb" / f"{vid}.mp4", frames)
    return root


def make_finegym(
    root: Path,
    prefix: str,
    train: list[tuple[str, int]],
    val: list[tuple[str, int]],
    num_classes: int,
    videos: bool = True,
) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / f"{prefix}_categories.txt").write_text(
        "".join(
            f"Clabel: {i}; set: {i % 4 + 1}; Glabel: {i + 10}; (VT) element {i}; tucked\n" for i in range(num_classes)
        )
    )
    for name, items in ((f"{prefix}_train_element_v1.0.txt", train), (f"{prefix}_val_element.txt", val)):
        (root / name).write_text("".join(f"{eid} {lab}\n" for eid, lab in items))
        if videos:
            for eid, _ in items:
                write_video(root / f"{eid}.mp4", 4)
    return root


def make_finediving(
    root: Path,
    actions: dict[tuple[str, int], str],
    train: list[tuple[str, int]],
    test: list[tuple[str, int]],
    frames: bool = True,
) -> Path:
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
            write_frame_folder(root / event / str(idx), 4, size=16)
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


# --------------------------------------------------------------------------- sequence datasets (ts, npz)


def write_ts(
    path: Path,
    series: list[list[list[float]]],
    labels: list[str],
    class_labels: list[str] | None = None,
    problem: str = "Toy",
    dimensions: bool = True,
    missing: str = "?",
    header: list[str] | None = None,
) -> Path:
    """A UEA/UCR `.ts` file: `series[i]` is case i as a list of dimensions, each a list of values (NaN
    is written as `missing`). The header says univariate/equalLength from the data; `dimensions=False`
    leaves out `@dimensions`; `header` replaces the generated header lines (the `@data` line stays)."""
    dims = {len(case) for case in series}
    lengths = {len(values) for case in series for values in case}
    if header is None:
        header = [
            f"@problemName {problem}",
            "@timeStamps false",
            f"@missing {'true' if any(v != v for case in series for d in case for v in d) else 'false'}",
            f"@univariate {'true' if dims == {1} else 'false'}",
            *([f"@dimensions {next(iter(dims))}"] if dimensions and len(dims) == 1 else []),
            f"@equalLength {'true' if len(lengths) == 1 else 'false'}",
            *([f"@seriesLength {next(iter(lengths))}"] if len(lengths) == 1 else []),
            f"@classLabel true {' '.join(class_labels or sorted(set(labels)))}",
        ]

    def value(v: float) -> str:
        return missing if v != v else repr(float(v))

    rows = [
        ":".join(",".join(value(v) for v in values) for values in case) + f":{label}"
        for case, label in zip(series, labels, strict=True)
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("# written by tests/helpers.py\n" + "\n".join([*header, "@data", *rows]) + "\n")
    return path


def write_npz_folder(
    root: Path,
    arrays: dict[str, object],
    labels: dict[str, object],
    groups: dict[str, str] | None = None,
    splits: dict[str, str] | None = None,
    csv_name: str = "sequences.csv",
) -> Path:
    """Sequence files under `root` and the CSV `path,label[,group][,split]` that lists them; returns the CSV.

    `arrays` maps a file (relative to root) to its content: an array (`.npy`, or the one array `seq` of
    an `.npz`), a {name: array} dict (an `.npz` of several), or raw bytes (a broken file). `labels` maps
    each CSV path (`FILE.npz:NAME` too) to its label, in row order; "" is unlabeled."""
    for name, content in arrays.items():
        target = root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            target.write_bytes(content)
        elif target.suffix == ".npz":
            members = content if isinstance(content, dict) else {"seq": content}
            np.savez(target, **members)
        else:
            np.save(target, np.asarray(content))
    columns = ["path", "label"] + (["group"] if groups is not None else []) + (["split"] if splits is not None else [])
    lines = [",".join(columns)]
    for path_text, label in labels.items():
        row = [path_text, str(label)]
        row += [groups.get(path_text, "")] if groups is not None else []
        row += [splits.get(path_text, "")] if splits is not None else []
        lines.append(",".join(row))
    csv_path = root / csv_name
    csv_path.write_text("\n".join(lines) + "\n")
    return csv_path
