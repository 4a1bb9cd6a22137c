"""Every stage under torchrun: two CPU processes (gloo) on the tiny run. Training takes the steps its
configuration says per process; inference writes what one process writes; a killed rank ends the
job with a message naming it, and the run resumes."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from fgar_cli.checkpoints import load_checkpoint
from fgar_cli.distributed import DecodeWatchdog, World, block_of, shard_indices

from conftest import Cli
from helpers import CLIP

FGAR_SCRIPT = Path(sys.executable).parent / "fgar"
pytestmark = pytest.mark.skipif(not FGAR_SCRIPT.exists(), reason="needs the installed fgar script")


def torchrun(*args: object, wait: bool = True) -> subprocess.CompletedProcess[str] | subprocess.Popen[str]:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    command += [str(FGAR_SCRIPT), *[str(a) for a in args]]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "FGAR_DIST_TIMEOUT": "60"}
    if not wait:
        return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)


def _fit(run: Path, out: Path, epochs_e: int, *extra: object) -> list[object]:
    data = ["--index", run / "index.json", "--split", run / "split.json", "--out-dir", out, "--arch-e", "small3d"]
    return ["fit-labeled", *data, "--epochs-e", epochs_e, "--epochs-a", 1, "--batch-size", 2, *CLIP, *extra]


def test_fit_labeled_takes_the_configured_steps_per_process(tiny_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "fit"
    done = torchrun(*_fit(tiny_run, out, 1))
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    labeled = len(json.loads((tiny_run / "split.json").read_text())["labeled"])
    action = load_checkpoint(out / "E.pt", kind="action")  # weights_only, as any checkpoint
    # batch size 2 per process, the labeled clips shared out over 2 processes (padded to an even count)
    assert action["history"][0]["steps"] == math.ceil(math.ceil(labeled / 2) / 2)
    alignability = load_checkpoint(out / "A.pt", kind="alignability")
    assert alignability["history"][0]["steps"] >= 1
    printed = " ".join(done.stderr.split())
    assert "2 processes, batch size 2 per process" in printed
    summary = " ".join(done.stdout.split())
    assert summary.count("processes │ 2 (batch sizes are per process") == 1  # one summary, and it says so too
    log = (out / "log.txt").read_text()
    assert log.count("fit-labeled started") == 1  # one record of the run: rank 0's


def test_selftrain_rounds_run_under_two_processes(tiny_run: Path, tmp_path: Path) -> None:
    """Pseudo-labeling (sharded) and both encoders' training (synchronised) inside one stage."""
    out = tmp_path / "st"
    ckpt = ["--ckpt-e", tiny_run / "fit" / "E.pt", "--ckpt-a", tiny_run / "fit" / "A.pt"]
    done = torchrun("selftrain", *ckpt, "--rounds", 1, "--epochs", 1, "--theta", 0.3, "--out-dir", out)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    summary = json.loads((out / "selftrain.json").read_text())
    unlabeled = len(json.loads((tiny_run / "split.json").read_text())["unlabeled"])
    assert len(summary["rounds"]) == 1 and summary["rounds"][0]["unlabeled"] == unlabeled
    with h5py.File(out / "round_1" / "pseudo.h5") as f:
        assert len(f["video_ids"]) == unlabeled  # every clip scored once, whichever rank ran it
    assert load_checkpoint(out / "E.pt", kind="action")["history"]


def _h5(path: Path) -> dict[str, np.ndarray]:
    with h5py.File(path) as f:
        return {name: f[name][()] for name in f if isinstance(f[name], h5py.Dataset)}


def test_evaluate_and_pseudolabel_write_what_one_process_writes(cli: Cli, tiny_run: Path, tmp_path: Path) -> None:
    ckpt = ["--ckpt-e", tiny_run / "fit" / "E.pt", "--ckpt-a", tiny_run / "fit" / "A.pt"]
    small = ["--set", "run.inference_batch_size=2"]  # several batches, so both ranks score some
    one, two = tmp_path / "one", tmp_path / "two"
    assert cli(["evaluate", *ckpt, "--out-dir", one, "--num-views", 1, *small]).code == 0
    done = torchrun("evaluate", *ckpt, "--out-dir", two, "--num-views", 1, *small)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    a, b = _h5(one / "predictions.h5"), _h5(two / "predictions.h5")
    assert a.keys() == b.keys()
    for name in a:  # bit-equal: each batch holds the clips it holds in one process
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    metrics = [json.loads((d / "metrics.json").read_text()) for d in (one, two)]
    assert metrics[0]["top1"] == metrics[1]["top1"] and metrics[0]["videos"] == metrics[1]["videos"]

    rule = ["--theta", "0.3", "--set", "pseudo_labeling.source=uncertainty", "--set", "pseudo_labeling.mc_passes=3"]
    assert cli(["pseudolabel", *ckpt, "--out-dir", one / "pl", *rule, *small]).code == 0
    done = torchrun("pseudolabel", *ckpt, "--out-dir", two / "pl", *rule, *small)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    a, b = _h5(one / "pl" / "pseudo.h5"), _h5(two / "pl" / "pseudo.h5")
    for name in a:  # MC dropout too: every rank draws the masks of the batches before its own
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def _worker_pids(parent: int) -> dict[int, int]:
    """{rank: pid} of the processes torchrun started below `parent`."""
    found: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
            status = (entry / "status").read_text()
        except OSError:
            continue
        ppid = int(next(line.split()[1] for line in status.splitlines() if line.startswith("PPid:")))
        variables = dict(v.split(b"=", 1) for v in environ if b"=" in v)
        if b"LOCAL_RANK" in variables and ppid != 1 and _descends(ppid, parent):
            found[int(variables[b"RANK"])] = int(entry.name)
    return found


def _descends(pid: int, ancestor: int) -> bool:
    while pid > 1:
        if pid == ancestor:
            return True
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            return False
        pid = int(next(line.split()[1] for line in status.splitlines() if line.startswith("PPid:")))
    return False


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds the workers through /proc")
def test_a_killed_rank_ends_the_job_and_the_run_resumes(tiny_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "fit"
    job = torchrun(*_fit(tiny_run, out, 40), wait=False)
    assert isinstance(job, subprocess.Popen)
    deadline = time.monotonic() + 300
    while not (out / "E_last.pt").exists() and job.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    workers = _worker_pids(job.pid)
    assert 1 in workers, f"no rank 1 among {workers}"
    os.kill(workers[1], signal.SIGKILL)
    _, err = job.communicate(timeout=300)
    assert job.returncode != 0
    assert "rank" in err and ("exitcode" in err or "failed" in err), err[-2000:]
    assert (out / "E_last.pt").exists() and not (out / "E.pt").exists()
    resumed = torchrun(*_fit(tiny_run, out, 40), "--resume")
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-3000:]
    history = load_checkpoint(out / "E.pt", kind="action")["history"]
    assert [h["epoch"] for h in history] == list(range(1, 41))


# --------------------------------------------------------------------------- the pieces, in one process


def test_shards_cover_every_clip_with_equal_step_counts() -> None:
    clips = list(range(7))
    shards = [shard_indices(clips, World(rank, 3)) for rank in range(3)]
    assert [len(s) for s in shards] == [3, 3, 3]  # padded by wrapping: every rank takes as many steps
    assert sorted(set(sum(shards, []))) == clips
    assert shard_indices(clips, World()) == clips
    assert [len(shard_indices([5], World(r, 4))) for r in range(4)] == [1, 1, 1, 1]  # fewer clips than ranks
    blocks = [block_of(10, World(r, 3)) for r in range(3)]
    assert [list(range(10))[b] for b in blocks] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_a_hung_decode_is_reported_with_its_file() -> None:
    reports: list[str] = []
    watchdog = DecodeWatchdog(timeout=0.2, on_hang=reports.append, poll=0.05)
    with watchdog.watch("videos/fine.mp4"):
        time.sleep(0.05)
    time.sleep(0.3)
    assert reports == []  # a decode that finished in time is not reported, however long after
    with watchdog.watch("videos/hung.mp4"):
        time.sleep(0.6)
    assert len(reports) == 1 and "rank 0: decoding videos/hung.mp4 has not finished after 0.2 s" in reports[0]
