"""examples/compare.sh, the script the README points newcomers to, on a folder of class folders."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fgar_cli.data.index import load_index
from fgar_cli.data.splits import load_split

REPO = Path(__file__).resolve().parents[1]

TINY_CONFIG = """
pretrain:
  clip: {num_frames: 8, size: 32}
  training: {epochs: 1, batch_size: 4}
fit_labeled:
  clip: {num_frames: 8, size: 32}
  action: {arch: small3d}
  action_training: {epochs: 1, batch_size: 4}
  alignability_training: {epochs: 1}
selftrain:
  pseudo_labeling: {theta: 0.3}
  rounds: 1
  epochs: 1
"""


def class_folders(tiny_run: Path, root: Path, labeled_per_class: int) -> Path:
    """The tiny benchmark's videos as root/<class>/ folders, the rest of each class in root/unlabeled/."""
    source = tiny_run / "data"
    vocab = json.loads((source / "Diving48_vocab.json").read_text())
    records = json.loads((source / "Diving48_V2_train.json").read_text())
    records += json.loads((source / "Diving48_V2_test.json").read_text())
    seen: dict[int, int] = {}
    for record in records:
        seen[record["label"]] = count = seen.get(record["label"], 0) + 1
        folder = root / ("_".join(vocab[record["label"]]) if count <= labeled_per_class else "unlabeled")
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(source / "rgb" / f"{record['vid_name']}.mp4", folder)
    return root


def compare(data: Path, run: Path, config: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "FORMAT": "folder",
        "TEST_FRACTION": "0.2",
        "FRACTION": "0.5",
        "PRETRAIN_E": "0",  # f_E's TCLR pretraining needs longer clips than these tiny videos have
    }
    script = REPO / "examples" / "compare.sh"
    return subprocess.run(["bash", script, data, run, config], env=env, capture_output=True, text=True, timeout=900)


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_compare_sh_runs_the_three_arms_on_class_folders_and_resumes(tiny_run: Path, tmp_path: Path) -> None:
    data = class_folders(tiny_run, tmp_path / "my_videos", labeled_per_class=5)
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY_CONFIG)
    run = tmp_path / "run"
    result = compare(data, run, config)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    index, split = load_index(run / "index.json"), load_split(run / "split.json")
    assert len(index.subset("unlabeled")) == 3 and split.test_fraction == 0.2
    assert len(split.test) == 3  # round(0.2 * 5) of each class's five labeled videos
    summary = json.loads((run / "summary.json").read_text())
    assert set(summary) >= {"supervised", "confidence_pl", "finepseudo"}
    for arm in ("supervised", "confidence_pl", "finepseudo"):
        assert 0 <= summary[arm]["top1"] <= 1
    finished = {p: p.stat().st_mtime_ns for p in run.rglob("*.pt")}

    again = compare(data, run, config)  # every step's result is there: nothing reruns
    assert again.returncode == 0, again.stderr[-3000:]
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*.pt")} == finished
