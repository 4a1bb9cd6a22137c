"""`fgar predict`: new videos in, each one's top-k classes out, as evaluation would score them."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from fgar_cli.artifacts import read_h5
from fgar_cli.data.index import load_index
from fgar_cli.stages.evaluate import PREDICTIONS_SCHEMA, PREDICTIONS_VERSION

from helpers import encoders, fgar, one_error_line


def split_test_videos(tiny_run: Path) -> list[Path]:
    index = load_index(tiny_run / "index.json")
    split = json.loads((tiny_run / "split.json").read_text())
    by_id = index.by_id()
    return [index.resolve(by_id[i]) for i in split["test"]]


@pytest.mark.parametrize("with_alignability", [False, True])
def test_predict_gives_what_evaluate_gives_on_the_same_videos(tiny_run, tmp_path, cli, with_alignability):
    videos = split_test_videos(tiny_run)
    listing = tmp_path / "videos.txt"
    listing.write_text("# the test videos, one per line\n" + "\n".join(str(v) for v in videos[1:]) + "\n")
    ckpts = encoders(tiny_run) if with_alignability else ["--ckpt-e", tiny_run / "fit" / "E.pt"]
    out = tmp_path / "pred.csv"
    result = cli(["predict", *ckpts, "--input", videos[0], "--input", listing, "--out", out, "--top-k", "3"])
    assert result.code == 0, result.out + result.err
    assert fgar("evaluate", *ckpts, "--out-dir", tmp_path / "eval") == 0

    predictions, _ = read_h5(tmp_path / "eval" / "predictions.h5", PREDICTIONS_SCHEMA, PREDICTIONS_VERSION)
    head = "probs_combined" if with_alignability else "probs_action"
    class_names = [str(c) for c in predictions["class_names"]]
    expected = {
        str(v): np.asarray(predictions[head])[k] for k, v in enumerate(videos)
    }  # evaluate scores the split's test videos in this order
    rows = list(csv.DictReader(out.open()))
    assert [r["path"] for r in rows] == [str(v.resolve()) for v in videos]
    # The index trims each synthetic video's lead-in frames (start_frame), predict reads whole files:
    # the clips differ by a frame or two, so the probabilities agree closely, not exactly (f_A's
    # frame embeddings move more with the frames than f_E's pooled features).
    tolerance = 1e-2 if with_alignability else 3e-3
    for row in rows:
        probs = expected[row["path"]]
        got = np.zeros_like(probs)
        for rank in (1, 2, 3):
            got[class_names.index(row[f"class_{rank}"])] = float(row[f"probability_{rank}"])
        assert np.abs(got - probs).max() < tolerance, (got, probs)
        assert got[class_names.index(row["class_1"])] == got.max() and not row["error"]
    spread = max(float(np.ptp(p)) for p in expected.values())
    assert spread > 2 * tolerance  # so a wrong class order could not pass the comparison above
    listed = json.loads(out.with_suffix(".json").read_text())
    assert [r["top"][0]["class"] for r in listed] == [r["class_1"] for r in rows]


def test_an_unreadable_video_gets_a_row_with_its_error(tiny_run, tmp_path, cli):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video")
    good = split_test_videos(tiny_run)[0]
    out = tmp_path / "p.csv"
    result = cli(["predict", "--ckpt-e", tiny_run / "fit" / "E.pt", "--input", tmp_path, "--input", good, "--out", out])
    assert result.code == 0, result.out + result.err
    rows = {r["path"]: r for r in csv.DictReader(out.open())}
    assert rows[str(broken.resolve())]["error"] and not rows[str(broken.resolve())]["class_1"]
    assert rows[str(good.resolve())]["class_1"] and not rows[str(good.resolve())]["error"]


def test_inputs_that_name_nothing_are_one_line(tiny_run, tmp_path, cli):
    result = cli(["predict", "--ckpt-e", tiny_run / "fit" / "E.pt", "--input", tmp_path / "nowhere.mp4"])
    one_error_line(result.out + result.err, "nowhere.mp4", "not found")
    (tmp_path / "empty").mkdir()
    result = cli(["predict", "--ckpt-e", tiny_run / "fit" / "E.pt", "--input", tmp_path / "empty"])
    one_error_line(result.out + result.err, "no video found")
