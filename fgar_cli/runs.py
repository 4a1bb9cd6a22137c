"""Run folders: one stage's run per folder, recorded in run.json, never lost and never mixed.

* A run folder records the stage and the resolved options that produced it (run.json).
* `--resume` continues the run in the folder only with the same options; with others it refuses and
  lists the differences (`--force` resumes anyway).
* A fresh run into a folder that already holds a run refuses (`--resume` continues that run,
  `--force` replaces it, or give another folder). With `--force` nothing of the old run is removed
  until the new run's first file is complete; then all of the old run's files go at once, so the
  folder never holds results of two runs side by side.
* Before long work starts the folder is created and proven writable, and the temporary files of
  killed processes are swept away.
* Beside run.json, config.yaml holds the same resolved options as the stage's table of a config
  file (`--config OUT/config.yaml` makes the same run again), and the run keeps its own log
  (`fgar_cli.runlog`: log.txt, metrics.csv, tensorboard/).
Settings that cannot change a result (the folder's own path, device, worker processes, inference
batch size, the frame cache, resume, force) are not compared.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fgar_cli import __version__
from fgar_cli.artifacts import atomic_write_json, atomic_write_text
from fgar_cli.config import Config
from fgar_cli.distributed import barrier
from fgar_cli.errors import FgarError
from fgar_cli.files import check_writable_folder, claim_on_first_write, read_text, remove_keeping_temporaries
from fgar_cli.runlog import FILES as LOG_FILES
from fgar_cli.runlog import RunLog

RUN_FILE = "run.json"
CONFIG_FILE = "config.yaml"
NOT_RERUN = ("resume", "force")  # how this process went about the run, not options of the run: not in config.yaml
NOT_COMPARED = (
    "out_dir",  # the folder itself: a run folder that was moved or copied resumes where it is now
    "resume",
    "force",
    "run.device",
    "run.num_workers",
    "run.inference_batch_size",
    "run.frame_cache",
    "run.frame_cache_gb",
)
# The files each stage writes into its run folder (globs), removed when a forced fresh run replaces it.
RECORD = (CONFIG_FILE, *LOG_FILES)
RESULTS = {
    "pretrain": ("A0.pt", "A0_last.pt", "E0.pt", "E0_last.pt", *RECORD),
    "fit_labeled": ("E.pt", "E_last.pt", "E_best.pt", "A.pt", "A_last.pt", "fit_labeled.json", *RECORD),
    "selftrain": ("round_*", "E.pt", "A.pt", "selftrain.json", *RECORD),
    "openworld": ("round_*", "E.pt", "A.pt", "selftrain.json", "metrics.json", "eval", *RECORD),
}


def flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def differences(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """`key: old -> new` for every compared option that differs."""
    old, new = flatten(before), flatten(after)
    keys = sorted((set(old) | set(new)) - set(NOT_COMPARED))
    return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys if old.get(k) != new.get(k)]


@dataclass
class RunFolder:
    path: Path
    stage: str
    # True while a forced fresh run has not yet replaced the old run (its first file is not complete)
    replacing: bool = field(default=False, init=False)
    _log: RunLog | None = field(default=None, init=False)

    @property
    def log(self) -> RunLog:
        """The run's log (log.txt, metrics.csv, TensorBoard), from `open` on."""
        if self._log is None:
            raise RuntimeError(f"{self.path}: the run folder is not open")
        return self._log

    @property
    def record_path(self) -> Path:
        return self.path / RUN_FILE

    def previous(self) -> dict[str, Any] | None:
        if not self.record_path.exists():
            return None
        try:
            record = json.loads(read_text(self.record_path))
        except json.JSONDecodeError:
            raise FgarError(f"{self.record_path}: malformed run record; remove it or use another folder") from None
        if not isinstance(record, dict) or not isinstance(record.get("config"), dict):
            raise FgarError(f"{self.record_path}: not an fgar run record; remove it or use another folder")
        return record

    def leftovers(self) -> list[Path]:
        return sorted(p for pattern in RESULTS.get(self.stage, ()) for p in self.path.glob(pattern))

    def open(self, config: Config, resume: bool, force: bool) -> RunFolder:
        """Check the folder against this run before any work starts (see the module notes)."""
        check_writable_folder(self.path)
        previous = self.previous()
        old = self.leftovers()
        barrier(f"opening {self.path}")  # under torchrun: every rank has looked before rank 0 writes
        current = config.model_dump(mode="json")
        if previous is not None and previous.get("stage") != self.stage:
            raise FgarError(
                f"{self.path}: holds a {previous.get('stage')} run; give {self.stage.replace('_', '-')} "
                "a folder of its own (--out-dir)"
            )
        if resume:
            changed = differences(previous["config"], current) if previous else []
            if changed and not force:
                raise FgarError(
                    f"{self.record_path}: --resume with other options than this run's: {'; '.join(changed)} "
                    "(rerun with the same options, use another --out-dir, or --force to resume anyway)"
                )
            self._write(current)
            return self._opened(resume)
        if (previous is not None or old) and not force:
            raise FgarError(
                f"{self.path}: already holds a {self.stage.replace('_', '-')} run; pass --resume to continue it, "
                "--force to replace it, or choose another --out-dir"
            )
        if previous is None and not old:
            self._write(current)
            return self._opened(resume)

        def replace_previous_run() -> None:
            for path in self.leftovers():
                remove_keeping_temporaries(path)
            self._write(current)
            self.replacing = False

        self.replacing = True
        claim_on_first_write(self.path, replace_previous_run)
        return self._opened(resume)

    def _opened(self, resume: bool) -> RunFolder:
        self._log = RunLog.open(self.path, self.stage, resume, waiting=lambda: self.replacing)
        return self

    def _write(self, config: dict[str, Any]) -> None:
        atomic_write_json(self.record_path, {"stage": self.stage, "fgar": __version__, "config": config})
        rerun = {k: v for k, v in config.items() if k not in NOT_RERUN}
        header = f"# fgar {__version__}: the options of this {self.stage.replace('_', '-')} run; rerun with --config\n"
        atomic_write_text(self.path / CONFIG_FILE, header + yaml.safe_dump({self.stage: rerun}, sort_keys=False))
