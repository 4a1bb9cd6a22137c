"""`fgar synth`: the Diving48 layout it writes, its videos, determinism, options, and the property
it exists for (DTW over frame features separates its classes; pooled features do not)."""

from __future__ import annotations

import importlib.util
import itertools
import json
from pathlib import Path

import av
import numpy as np
import pytest

from fgar_cli.data import synth
from fgar_cli.data.adapters import read_dataset
from fgar_cli.data.video import count_frames, read_frames

from conftest import Cli

TINY = {"classes": 3, "videos_per_class": 2, "frames": 24, "size": 32}
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "seed0"
    synth.generate(out, seed=0, **TINY)
    return out


def read_json(path: Path) -> object:
    return json.loads(path.read_text(encoding="utf-8"))


def all_entries(root: Path) -> list[dict]:
    return read_json(root / synth.TRAIN_JSON) + read_json(root / synth.TEST_JSON)  # type: ignore[operator]


def decoded(root: Path) -> dict[str, np.ndarray]:
    """Every video's frames, by name."""
    return {p.stem: read_frames(p, range(count_frames(p))) for p in sorted((root / "rgb").glob("*.mp4"))}


# --------------------------------------------------------------------------- layout and videos


def test_writes_the_diving48_v2_layout(tiny: Path) -> None:
    train, test = read_json(tiny / synth.TRAIN_JSON), read_json(tiny / synth.TEST_JSON)
    vocab = read_json(tiny / synth.VOCAB_JSON)
    assert isinstance(train, list) and isinstance(test, list) and isinstance(vocab, list)
    assert len(vocab) == TINY["classes"]
    entries = train + test
    assert len(entries) == TINY["classes"] * TINY["videos_per_class"]
    for entry in entries:
        assert set(entry) == {"vid_name", "label", "start_frame", "end_frame"}
        assert 0 <= entry["label"] < len(vocab)
        assert 0 <= entry["start_frame"] < entry["end_frame"]
        assert (tiny / "rgb" / f"{entry['vid_name']}.mp4").is_file()
    names = [e["vid_name"] for e in entries]
    assert len(set(names)) == len(names)
    assert {p.stem for p in (tiny / "rgb").iterdir()} == set(names)  # no strays, no temporary files
    # Every class in both subsets (1 of 2 videos per class goes to test at the default fraction).
    assert {e["label"] for e in train} == {e["label"] for e in test} == set(range(TINY["classes"]))
    meta = read_json(tiny / synth.META_JSON)
    assert meta["settings"]["seed"] == 0 and meta["settings"]["classes"] == TINY["classes"]
    assert {v["vid_name"] for v in meta["videos"]} == set(names)


def test_diving48_adapter_reads_it(tiny: Path) -> None:
    index = read_dataset("diving48", tiny, None, None)
    assert len(index.class_names) == TINY["classes"]
    assert len(index.subset("train")) + len(index.subset("test")) == len(all_entries(tiny))
    for entry in index.entries:
        assert index.resolve(entry).is_file()


def test_videos_are_h264_with_the_stated_frames_and_size(tiny: Path) -> None:
    for entry in all_entries(tiny):
        path = tiny / "rgb" / f"{entry['vid_name']}.mp4"
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            assert stream.codec_context.name == "h264"
            assert stream.codec_context.pix_fmt == "yuv420p"
        # end_frame is exclusive and is the whole video: every frame up to it decodes.
        assert count_frames(path) == entry["end_frame"]
        frames = read_frames(path, [entry["start_frame"], entry["end_frame"] - 1])
        assert frames.shape == (2, TINY["size"], TINY["size"], 3) and frames.dtype == np.uint8
        assert frames.std() > 5  # a picture, not a blank frame
    lengths = [e["end_frame"] for e in all_entries(tiny)]
    assert min(lengths) >= round(0.85 * TINY["frames"]) - 1 and max(lengths) <= round(1.15 * TINY["frames"]) + 1


def test_same_seed_same_frames_other_seed_other_videos(tiny: Path, tmp_path: Path) -> None:
    synth.generate(tmp_path / "again", seed=0, **TINY)
    synth.generate(tmp_path / "other", seed=1, **TINY)
    first, again, other = decoded(tiny), decoded(tmp_path / "again"), decoded(tmp_path / "other")
    assert first.keys() == again.keys()
    for name in first:
        assert np.array_equal(first[name], again[name]), name
    assert read_json(tiny / synth.TRAIN_JSON) == read_json(tmp_path / "again" / synth.TRAIN_JSON)
    # Another seed: every video of a class differs from every video of that class under seed 0.
    by_label = {seed_dir: {} for seed_dir in (tiny, tmp_path / "other")}
    for root, frames in ((tiny, first), (tmp_path / "other", other)):
        for entry in all_entries(root):
            by_label[root].setdefault(entry["label"], []).append(frames[entry["vid_name"]])
    for label, videos in by_label[tiny].items():
        for a, b in itertools.product(videos, by_label[tmp_path / "other"][label]):
            assert a.shape != b.shape or not np.array_equal(a, b)


def test_vocabulary_has_four_attributes_and_unique_classes(tiny: Path) -> None:
    vocab = read_json(tiny / synth.VOCAB_JSON)
    assert all(len(v) == 4 and all(isinstance(s, str) and s for s in v) for v in vocab)
    assert len({tuple(v) for v in vocab}) == len(vocab)
    # All 36 labels: distinct combinations covering every one, each attribute from its own list.
    full = synth.vocabulary(synth.MAX_CLASSES)
    assert len({tuple(v) for v in full}) == synth.MAX_CLASSES == np.prod([len(a) for a in synth.ATTRIBUTES])
    for v in full:
        assert all(v[a] in synth.ATTRIBUTES[a] for a in range(4))
    assert full[: len(vocab)] == vocab  # label c means the same class whatever --classes is


def test_default_classes_are_fine_grained() -> None:
    """Each default class has a sibling differing in one attribute, and every attribute varies."""
    vocab = np.array(synth.vocabulary(synth.DEFAULT_CLASSES))
    differences = (vocab[:, None, :] != vocab[None, :, :]).sum(-1)
    assert ((differences == 1).sum(1) >= 1).all()
    for a in range(4):
        assert set(vocab[:, a]) == set(synth.ATTRIBUTES[a])


def test_overwrite_replaces_an_earlier_set(tiny: Path, tmp_path: Path) -> None:
    out = tmp_path / "set"
    synth.generate(out, seed=0, classes=3, videos_per_class=3, frames=16, size=32)
    assert read_json(out / synth.META_JSON)["complete"] is True
    (out / "rgb" / ".synth0_00042.mp4.x1y2.tmp").write_bytes(b"left by a killed run")
    synth.generate(out, seed=2, classes=2, videos_per_class=1, frames=16, size=32, overwrite=True)
    names = {e["vid_name"] for e in all_entries(out)}
    assert len(names) == 2 and {p.name for p in (out / "rgb").iterdir()} == {f"{n}.mp4" for n in names}
    assert read_json(out / synth.META_JSON)["settings"]["seed"] == 2


# --------------------------------------------------------------------------- CLI


def test_cli_writes_a_dataset(tmp_path: Path, cli: Cli) -> None:
    result = cli(
        [
            "synth",
            "--out-dir",
            tmp_path / "d",
            "--classes",
            "2",
            "--videos-per-class",
            "2",
            "--frames",
            "16",
            "--size",
            "32",
            "--seed",
            "3",
        ]
    )
    assert result.code == 0, result
    assert len(all_entries(tmp_path / "d")) == 4
    assert read_json(tmp_path / "d" / synth.META_JSON)["settings"]["seed"] == 3


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--classes", "1"], "--classes"),
        (["--classes", "37"], "--classes"),
        (["--videos-per-class", "0"], "--videos-per-class"),
        (["--frames", "8"], "--frames"),
        (["--size", "33"], "--size"),
        (["--test-fraction", "1.0"], "--test-fraction"),
    ],
)
def test_cli_rejects_bad_options_in_one_line(args: list[str], fragment: str, tmp_path: Path, cli: Cli) -> None:
    result = cli(["synth", "--out-dir", tmp_path / "d", *args])
    assert result.code == 1
    result.error_line(fragment)
    assert not (tmp_path / "d").exists()


def test_cli_refuses_a_non_empty_folder(tmp_path: Path, cli: Cli) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "notes.txt").write_text("mine")
    result = cli(["synth", "--out-dir", tmp_path / "d"])
    assert result.code == 1
    result.error_line("not empty")
    result = cli(["synth", "--out-dir", tmp_path / "d", "--overwrite"])
    assert result.code == 1
    result.error_line("not a synthetic dataset")
    assert (tmp_path / "d" / "notes.txt").read_text() == "mine"


def test_cli_reports_an_output_folder_it_cannot_create(tmp_path: Path, cli: Cli) -> None:
    (tmp_path / "a_file").write_text("")
    result = cli(["synth", "--out-dir", tmp_path / "a_file" / "d"])
    assert result.code == 1
    result.error_line("cannot create")


# --------------------------------------------------------------------------- the property


def load_benchmark():  # benchmarks/ is a folder of scripts, not a package
    spec = importlib.util.spec_from_file_location("synth_separability", REPO / "benchmarks" / "synth_separability.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_dtw_separates_classes_that_pooled_features_do_not(tmp_path: Path) -> None:
    """Paper Fig. 1(c) on the generated videos: 1-NN with DTW over per-frame features is far more
    accurate than 1-NN on the same features averaged over time (near chance)."""
    synth.generate(tmp_path / "d", seed=0, classes=6, videos_per_class=12, frames=32, size=32)
    result = load_benchmark().separability(tmp_path / "d")
    assert result["test"] == 18 and result["chance"] == pytest.approx(1 / 6)
    assert result["dtw_1nn"] >= result["pooled_1nn"] + 0.25, result
    assert result["dtw_1nn"] >= result["middle_frame_1nn"] + 0.15, result
    assert result["pooled_1nn"] < 2 * result["chance"], result
