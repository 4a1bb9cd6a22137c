"""ClipDataset and clip transforms: the right frames, reproducibly, and bad videos skipped and counted."""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, default_collate

from fgar_cli.config import ClipConfig
from fgar_cli.data.dataset import ClipDataset, collate_skip_none
from fgar_cli.data.index import DatasetIndex, VideoEntry
from fgar_cli.data.sampling import gitdl_indices, segment_indices
from fgar_cli.data.transforms import ClipTransform
from fgar_cli.data.video import count_frames
from fgar_cli.errors import FgarError

from helpers import frame_ids, write_frame_folder, write_video

T, S = 8, 16
IDENTITY = {"mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0)}  # outputs stay level / 255


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> DatasetIndex:
    root = tmp_path_factory.mktemp("videos")
    write_video(root / "long.mp4", 40, size=24)
    write_video(root / "short.mp4", 3, size=24)
    write_frame_folder(root / "frames" / "7", 12, size=24)
    (root / "empty.mp4").write_bytes(b"")
    entries = [
        VideoEntry("long", "long.mp4", 0, num_frames=count_frames(root / "long.mp4")),
        VideoEntry("trimmed", "long.mp4", 1, start_frame=10, end_frame=30, num_frames=20),
        VideoEntry("uncounted", str(root / "long.mp4"), 1),  # absolute path, num_frames -1
        VideoEntry("folder", "frames/7", 0, num_frames=12),
        VideoEntry("missing", "missing.mp4", 0),
        VideoEntry("empty", "empty.mp4", 1),
        VideoEntry("no_range", "long.mp4", 0, start_frame=10, end_frame=10, num_frames=0),
    ]
    return DatasetIndex("list", str(root), ["a", "b"], entries)


GOOD = {"long": (0, 40), "trimmed": (10, 30), "uncounted": (0, 40), "folder": (0, 12)}
BAD = {"missing": "file not found", "empty": "empty file", "no_range": "no frame in the range"}


def dataset(index: DatasetIndex, mode: str, **kwargs: object) -> ClipDataset:
    ds = ClipDataset(index, index.entries, ClipConfig(num_frames=T, size=S), mode, **kwargs)  # type: ignore[arg-type]
    ds.transform = dataclasses.replace(ds.transform, **IDENTITY)  # frames keep their grey level / 255
    return ds


def clip_ids(clip: torch.Tensor) -> list[int]:
    """Frame numbers of a (T, 3, S, S) clip of grey-level frames (transform without normalising)."""
    return frame_ids(clip.permute(0, 2, 3, 1).numpy() * 255)


def test_train_items_hold_the_sampled_frames(index: DatasetIndex) -> None:
    ds = dataset(index, "train", seed=3)
    ds.set_epoch(2)
    for i, entry in enumerate(index.entries):
        if entry.id not in GOOD:
            continue
        item = ds[i]
        assert item is not None
        assert item["video"].shape == (T, 3, S, S) and item["video"].dtype == torch.float32
        assert (item["label"], item["index"], item["id"]) == (entry.label, i, entry.id)
        start, end = GOOD[entry.id]
        expected = segment_indices(start, end, T, True, np.random.default_rng([3, 2, i]))
        assert clip_ids(item["video"]) == expected.tolist()


def test_test_mode_uses_centre_frames_and_views(index: DatasetIndex) -> None:
    single = dataset(index, "test")[1]
    assert single is not None
    assert clip_ids(single["video"]) == segment_indices(10, 30, T, False, None).tolist()

    multi = dataset(index, "test", num_views=3)[0]
    assert multi is not None and multi["video"].shape == (3, T, 3, S, S)
    for v in range(3):
        assert clip_ids(multi["video"][v]) == segment_indices(0, 40, T, False, None, v, 3).tolist()


def test_gitdl_items(index: DatasetIndex) -> None:
    ds = dataset(index, "gitdl", seed=1)
    item = ds[0]
    assert item is not None
    assert item["global"].shape == item["local"].shape == (T, 3, S, S)
    assert item["global_t"].dtype == item["local_t"].dtype == torch.float32
    expected_global, expected_local = gitdl_indices(0, 40, T, np.random.default_rng([1, 0, 0]))
    assert item["global_t"].tolist() == expected_global.tolist()
    assert item["local_t"].tolist() == expected_local.tolist()
    assert clip_ids(item["global"]) == expected_global.tolist()  # the times are the frames shown
    assert clip_ids(item["local"]) == expected_local.tolist()


def test_samples_repeat_for_the_same_seed_and_epoch(index: DatasetIndex) -> None:
    first, second = dataset(index, "train", seed=5), dataset(index, "train", seed=5)
    for ds in (first, second):
        ds.set_epoch(4)
    for i in range(4):
        torch.testing.assert_close(first[i]["video"], second[i]["video"], rtol=0, atol=0)
    epoch4 = [first[i]["video"] for i in range(4)]
    first.set_epoch(5)
    assert any(not torch.equal(a, first[i]["video"]) for i, a in enumerate(epoch4))
    first.set_epoch(4)  # a resumed run at epoch 4 draws the same samples again
    assert all(torch.equal(a, first[i]["video"]) for i, a in enumerate(epoch4))


def test_persistent_workers_follow_set_epoch(index: DatasetIndex) -> None:
    ds = dataset(index, "train", seed=2)
    good = [i for i, e in enumerate(index.entries) if e.id in GOOD]
    loader = DataLoader(torch.utils.data.Subset(ds, good), batch_size=None, num_workers=1, persistent_workers=True)
    for epoch in (0, 1):
        ds.set_epoch(epoch)
        by_worker = [item["video"] for item in loader]
        in_process = [ds[i]["video"] for i in good]
        assert all(torch.equal(a, b) for a, b in zip(by_worker, in_process, strict=True))


def test_labels_override_by_id(index: DatasetIndex) -> None:
    ds = dataset(index, "test", labels={"long": 1, "folder": 1})
    assert [ds[i]["label"] for i in range(4)] == [1, 1, 1, 1]
    assert [dataset(index, "test")[i]["label"] for i in range(4)] == [0, 1, 1, 0]


def test_bad_videos_are_skipped_warned_once_and_counted(index: DatasetIndex, caplog: pytest.LogCaptureFixture) -> None:
    ds = dataset(index, "train")
    with caplog.at_level(logging.WARNING, logger="fgar_cli.data.dataset"):
        for _ in range(2):
            results = {e.id: ds[i] for i, e in enumerate(index.entries)}
    assert {k for k, v in results.items() if v is None} == set(BAD)
    assert ds.num_skipped == 3 and sorted(ds.skipped_ids()) == sorted(BAD)
    assert len(caplog.records) == 3  # one per bad video, not one per read
    for vid, reason in BAD.items():
        assert reason in ds.skip_reasons[vid]
        assert "\n" not in ds.skip_reasons[vid]


def test_collate_drops_skipped_items(index: DatasetIndex) -> None:
    ds = dataset(index, "train")
    batches = list(DataLoader(ds, batch_size=4, collate_fn=collate_skip_none))
    assert [b["video"].shape[0] if b is not None else 0 for b in batches] == [4, 0]
    assert batches[1] is None  # missing, empty and an empty range: nothing left
    assert batches[0]["id"] == ["long", "trimmed", "uncounted", "folder"]
    assert batches[0]["label"].tolist() == [0, 1, 1, 0]
    expected = default_collate([ds[i] for i in range(4)])
    assert batches[0].keys() == expected.keys()
    torch.testing.assert_close(batches[0]["video"], expected["video"], rtol=0, atol=0)
    assert torch.equal(batches[0]["index"], expected["index"])


def test_skips_in_worker_processes_reach_the_parent(index: DatasetIndex) -> None:
    ds = dataset(index, "test")
    loader = DataLoader(ds, batch_size=2, num_workers=2, collate_fn=collate_skip_none)
    kept = sum(b["video"].shape[0] for b in loader if b is not None)
    assert kept == len(GOOD)
    assert ds.num_skipped == 3 and sorted(ds.skipped_ids()) == sorted(BAD)


def test_a_video_shorter_than_the_clip_repeats_its_frames(index: DatasetIndex) -> None:
    short = DatasetIndex("list", index.root, ["a"], [VideoEntry("short", "short.mp4", 0, num_frames=3)])
    item = ClipDataset(short, short.entries, ClipConfig(num_frames=T, size=S), "test")[0]
    assert item is not None and item["video"].shape == (T, 3, S, S)
    ds = dataset(short, "test")
    assert clip_ids(ds[0]["video"]) == segment_indices(0, 3, T, False, None).tolist()  # each frame, repeated


def test_bad_arguments_are_user_errors(index: DatasetIndex) -> None:
    clip = ClipConfig(num_frames=T, size=S)
    with pytest.raises(FgarError):
        ClipDataset(index, index.entries, clip, "validate")  # type: ignore[arg-type]
    with pytest.raises(FgarError):
        ClipDataset(index, index.entries, clip, "train", num_views=3)  # type: ignore[arg-type]


# --- transforms -------------------------------------------------------------------------------


def random_frames(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def test_centre_crop_and_normalise() -> None:
    frames = random_frames((2, 10, 14, 3))
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
    out = ClipTransform(size=8, train=False, resize=10, mean=mean, std=std)(frames)
    centre = torch.from_numpy(frames[:, 1:9, 3:11]).permute(0, 3, 1, 2).float() / 255
    expected = (centre - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    torch.testing.assert_close(out, expected)


def test_resize_keeps_the_aspect_ratio() -> None:
    frames = random_frames((3, 20, 40, 3))
    transform = ClipTransform(size=8, train=False, resize=10, **IDENTITY)
    assert transform(frames).shape == (3, 3, 8, 8)
    # a horizontal gradient survives: the short side went 20 -> 10, the long side 40 -> 20
    ramp = np.broadcast_to(np.linspace(0, 255, 40, dtype=np.float32)[None, None, :, None], (1, 20, 40, 3))
    out = transform(ramp.astype(np.uint8))
    step = float(out[0, 0, 0, 1] - out[0, 0, 0, 0]) * 255
    assert step == pytest.approx(255 / 39 * 2, rel=0.1)


def test_training_crops_and_flips_reproducibly() -> None:
    frames = random_frames((2, 12, 16, 3))
    transform = ClipTransform(size=8, train=True, resize=12, **IDENTITY)
    source = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255
    crops = {}
    for top in range(5):
        for left in range(9):
            crop = source[..., top : top + 8, left : left + 8]
            crops[(top, left, False)], crops[(top, left, True)] = crop, crop.flip(-1)
    seen = set()
    for seed in range(40):
        out = transform(frames, np.random.default_rng(seed))
        match = [key for key, crop in crops.items() if torch.allclose(out, crop)]
        assert len(match) == 1  # the output is exactly one crop of the input, maybe flipped
        seen.add(match[0])
        torch.testing.assert_close(out, transform(frames, np.random.default_rng(seed)))
    assert {flip for _, _, flip in seen} == {False, True}
    assert len({(top, left) for top, left, _ in seen}) > 10
