"""HDF5 artifacts and checkpoints: round trips, schema checks, atomic writes, safe loading."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from fgar_cli.artifacts import (
    atomic_path,
    read_h5,
    sha256_file,
    write_h5,
)
from fgar_cli.checkpoints import load_checkpoint, save_checkpoint
from fgar_cli.errors import FgarError


def test_h5_round_trip_keeps_values_strings_and_provenance(tmp_path: Path) -> None:
    src = tmp_path / "input.bin"
    src.write_bytes(b"abc")
    emb = np.random.default_rng(0).normal(size=(3, 4, 5)).astype(np.float32)
    write_h5(
        tmp_path / "g.h5",
        "fgar.gallery",
        1,
        {"embeddings": emb, "labels": np.array([0, 1, 1]), "video_ids": ["a", "b", "ç"]},
        attrs={"theta": 0.8},
        config={"gamma": 0.1},
        inputs=[src],
    )
    data, attrs = read_h5(
        tmp_path / "g.h5", "fgar.gallery", 1, {"embeddings": (3, "f"), "labels": (1, "i"), "video_ids": (1, "S")}
    )
    np.testing.assert_array_equal(data["embeddings"], emb)
    assert list(data["video_ids"]) == ["a", "b", "ç"]
    assert attrs["theta"] == 0.8
    assert json.loads(attrs["config"]) == {"gamma": 0.1}
    assert json.loads(attrs["inputs"]) == {str(src): sha256_file(src)}
    assert attrs["created_by"].startswith("fgar ")


@pytest.mark.parametrize(
    ("schema", "version", "required", "message"),
    [
        ("fgar.pseudo", 1, None, "expected an HDF5 artifact of schema 'fgar.pseudo'"),
        ("fgar.gallery", 2, None, "schema_version 1 is not supported"),
        ("fgar.gallery", 1, {"missing": (1, "f")}, "dataset 'missing' is missing"),
        ("fgar.gallery", 1, {"labels": (2, "i")}, "dataset 'labels' has 1 dimensions, expected 2"),
        ("fgar.gallery", 1, {"labels": (1, "f")}, "dataset 'labels' has dtype int64, expected float"),
    ],
)
def test_h5_validation_names_file_and_problem(tmp_path: Path, schema, version, required, message) -> None:
    path = tmp_path / "g.h5"
    write_h5(path, "fgar.gallery", 1, {"labels": np.array([0, 1])})
    with pytest.raises(FgarError) as err:
        read_h5(path, schema, version, required)
    assert str(path) in str(err.value) and message in str(err.value)


def test_h5_read_rejects_non_hdf5_file(tmp_path: Path) -> None:
    path = tmp_path / "x.h5"
    path.write_text("not hdf5")
    with pytest.raises(FgarError, match="not a readable HDF5 file"):
        read_h5(path, "fgar.gallery", 1)


def test_atomic_write_leaves_old_file_when_the_writer_fails(tmp_path: Path) -> None:
    target = tmp_path / "pseudo.h5"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash mid-write")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["pseudo.h5"]  # no temporary file left behind


def test_checkpoint_round_trip_and_kind_check(tmp_path: Path) -> None:
    path = tmp_path / "E.pt"
    save_checkpoint(path, {"kind": "action", "state_dict": {"w": torch.ones(2)}, "class_names": ["a", "b"]})
    ckpt = load_checkpoint(path, kind="action")
    assert torch.equal(ckpt["state_dict"]["w"], torch.ones(2))
    with pytest.raises(FgarError, match="this is a 'action' checkpoint, but a 'alignability' checkpoint is needed"):
        load_checkpoint(path, kind="alignability")


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_checkpoint_load_never_unpickles_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pt"
    torch.save({"format": "fgar.checkpoint", "x": _Evil()}, path)
    with pytest.raises(FgarError, match="evil.pt: not a checkpoint fgar can load safely .*never unpickles code"):
        load_checkpoint(path)
    assert not (tmp_path / "pwned").exists()


def test_checkpoint_load_rejects_foreign_files(tmp_path: Path) -> None:
    plain = tmp_path / "plain.pt"
    torch.save({"weights": torch.zeros(1)}, plain)
    with pytest.raises(FgarError, match="not an fgar checkpoint"):
        load_checkpoint(plain)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(pickle.dumps([1, 2])[:3])
    with pytest.raises(FgarError, match="garbage.pt"):
        load_checkpoint(garbage)
