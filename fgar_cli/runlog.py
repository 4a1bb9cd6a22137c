"""A run folder's record of itself: log.txt, metrics.csv and (when installed) TensorBoard scalars.

* `log.txt`: timestamped lines: the stage's start (fgar's version, the command line), each epoch's
  terms, the checkpoints written, round summaries, and how the stage ended (finished, interrupted,
  or the error line).
* `metrics.csv`: one row per epoch of every training of the stage: stage, round, model (the
  checkpoint's name: E, A, A0, E0), epoch, lr, seconds, then each term of the step (loss, acc, ...)
  and the validation score where there is one. The file has one header; a row with a term the
  header lacks rewrites the file with a wider header. A resumed training first drops its rows past
  the epoch it resumes after, so a row is never there twice.
* `tensorboard/<round_K/>MODEL/`: the same scalars, when the `tensorboard` package is importable
  (`pip install 'fgar[tensorboard]'`); without it log.txt says once that they are skipped.

Writing the record must never cost a result: every write is an append (or, for the rare wider
header or a resume, an atomic rewrite), made after the checkpoint it describes is safe or in a way
a resume corrects, and a failed write prints one warning and is otherwise ignored. While a forced
run has not yet replaced the old run in its folder (`RunFolder.replacing`), writes wait in memory:
the old run's record stays whole until the new run's first file is complete.
"""

from __future__ import annotations

import contextvars
import csv
import functools
import importlib.util
import io
import json
import shlex
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from fgar_cli import __version__
from fgar_cli.artifacts import atomic_write_text
from fgar_cli.distributed import is_main
from fgar_cli.errors import FgarError
from fgar_cli.interrupts import Interrupted, message
from fgar_cli.progress import console

LOG_FILE = "log.txt"
METRICS_FILE = "metrics.csv"
TENSORBOARD_DIR = "tensorboard"
FILES = (LOG_FILE, METRICS_FILE, TENSORBOARD_DIR)  # what a forced fresh run removes with the old run
LEADING = ("stage", "round", "model", "epoch", "lr", "seconds")  # then the step's terms, in order seen

Value = str | int | float | None
# The command line log.txt records: the process's, unless the CLI was called with arguments of its
# own (`cli.main(argv)`, as the tests do), which `record_command_line` names.
_command_line: list[str] | None = None


def record_command_line(argv: list[str]) -> None:
    global _command_line
    _command_line = ["fgar", *argv]


@dataclass
class _Sink:
    """The record files of one run folder, shared by every `RunLog` of it (one per round)."""

    folder: Path
    waiting: Callable[[], bool]  # true while a forced run has not replaced the old one yet
    pending: list[Callable[[], None]] = field(default_factory=list)
    warned: bool = False

    def do(self, write: Callable[[], None]) -> None:
        if not is_main():  # under torchrun the run's record is rank 0's
            return
        if self.waiting():
            self.pending.append(write)
            return
        queued, self.pending = [*self.pending, write], []
        for each in queued:
            try:
                each()
            except Exception as exc:  # noqa: BLE001 (a log write must never end a run)
                if not self.warned:
                    self.warned = True
                    console.print(
                        f"warning: {self.folder}: cannot write the run's log ({exc}); training goes on without it",
                        soft_wrap=True,
                        markup=False,
                    )

    def append(self, name: str, text: str) -> None:
        with open(self.folder / name, "a", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()


def _stamp() -> str:
    return datetime.now().astimezone().isoformat(timespec="seconds")


def _shown(value: Value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return format(value, ".6g")
    return str(value)


@functools.cache
def tensorboard_available() -> bool:
    return importlib.util.find_spec("tensorboard") is not None


@dataclass(frozen=True)
class RunLog:
    """The log of one stage's run folder; `in_round(r)` gives the same log for self-training round r."""

    sink: _Sink
    stage: str
    round: int | None = None

    @classmethod
    def open(cls, folder: Path, stage: str, resume: bool, waiting: Callable[[], bool] = lambda: False) -> RunLog:
        """The log of a run that starts (or, with `resume`, goes on) now; its first line says so."""
        log = cls(_Sink(folder, waiting), stage)
        argv = _command_line or ([Path(sys.argv[0]).name, *sys.argv[1:]] if sys.argv else [])
        command = shlex.join(argv)
        log.line(f"{stage.replace('_', '-')} {'resumed' if resume else 'started'} (fgar {__version__}): {command}")
        if not tensorboard_available():
            log.line("TensorBoard scalars skipped: the tensorboard package is not installed (fgar[tensorboard])")
        _current.set(log)
        return log

    def in_round(self, round_: int) -> RunLog:
        return replace(self, round=round_)

    @property
    def folder(self) -> Path:
        return self.sink.folder

    def line(self, text: str) -> None:
        """One timestamped line of log.txt."""
        stamp = _stamp()
        self.sink.do(lambda: self.sink.append(LOG_FILE, f"{stamp}  {' '.join(text.split())}\n"))

    def wrote(self, path: Path, what: str = "") -> None:
        """A checkpoint (or other file) of the run is complete."""
        shown = path.relative_to(self.folder) if path.is_relative_to(self.folder) else path
        self.line(f"wrote {shown}{f' ({what})' if what else ''}")

    def training(self, model: str, description: str, epochs: int, start: int) -> TrainingLog:
        """The record of one encoder's training into checkpoint `model` (E, A, ...), from epoch `start`;
        `description` names it in log.txt ("f_E labeled")."""
        return TrainingLog(self, model, description, epochs, start)

    def finished(self, summary: Mapping[str, Any]) -> None:
        self.line(f"finished: {json.dumps(summary, default=str)}")

    def stopped(self, exc: BaseException) -> None:
        if isinstance(exc, Interrupted | KeyboardInterrupt):
            self.line(message(exc))
        elif isinstance(exc, FgarError):
            self.line(f"error: {exc}")
        else:
            self.line(f"failed: {type(exc).__name__}: {exc}")


class TrainingLog:
    """Each epoch of one training as a row of metrics.csv, a line of log.txt and TensorBoard scalars."""

    def __init__(self, log: RunLog, model: str, description: str, epochs: int, start: int) -> None:
        self.log, self.model, self.description, self.epochs = log, model, description, epochs
        self.name = f"round_{log.round}/{model}" if log.round is not None else model
        self._writer: Any = None  # torch.utils.tensorboard.SummaryWriter, made at the first epoch
        self._purge_step = start if start > 1 else None
        if start > 1:
            log.line(f"{description}: resuming after epoch {start - 1}")
        key = (log.stage, _shown(log.round), model)
        # A run killed after an epoch's row but before its checkpoint redoes that epoch: drop its row.
        log.sink.do(lambda: drop_rows_after(log.folder / METRICS_FILE, key, start - 1))

    def epoch(self, epoch: int, terms: Mapping[str, float], lr: float, seconds: float) -> None:
        row: dict[str, Value] = {
            "stage": self.log.stage,
            "round": self.log.round,
            "model": self.model,
            "epoch": epoch,
            "lr": lr,
            "seconds": seconds,
            **terms,
        }
        shown = "  ".join(f"{k} {_shown(v)}" for k, v in terms.items())
        self.log.line(f"{self.description} {epoch}/{self.epochs}: {shown}  lr {_shown(lr)}  ({seconds:.1f} s)")
        self.log.sink.do(lambda: append_row(self.log.folder / METRICS_FILE, row))
        self.log.sink.do(lambda: self._scalars(epoch, {"lr": lr, **terms}))

    def close(self) -> None:
        if self._writer is not None:
            writer, self._writer = self._writer, None
            self.log.sink.do(writer.close)

    def _scalars(self, epoch: int, values: Mapping[str, float]) -> None:
        if self._writer is None:
            if not tensorboard_available():
                return
            from torch.utils.tensorboard import SummaryWriter  # slow to import; only when installed

            _quiet_tensorboard_thread()
            log_dir = self.log.folder / TENSORBOARD_DIR / self.name
            self._writer = SummaryWriter(str(log_dir), purge_step=self._purge_step)
        for tag, value in values.items():
            self._writer.add_scalar(tag, value, epoch)
        self._writer.flush()  # a killed run keeps its scalars up to the last epoch


def _quiet_tensorboard_thread() -> None:
    """TensorBoard writes its events from a thread of its own; when a write fails (a full disk) the
    thread stores the error for the next `flush`, where the run log turns it into one warning, and
    then also lets it escape, which Python prints as a traceback. Keep that second report quiet."""
    from tensorboard.summary.writer.event_file_writer import _AsyncWriterThread

    previous = threading.excepthook
    if getattr(previous, "_fgar_quiet_tensorboard", False):
        return

    def hook(args: threading.ExceptHookArgs) -> None:
        if not isinstance(args.thread, _AsyncWriterThread):
            previous(args)

    hook._fgar_quiet_tensorboard = True  # type: ignore[attr-defined]
    threading.excepthook = hook


# --------------------------------------------------------------------------- metrics.csv


def read_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    if not path.exists():
        return [], []
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
        return list(reader.fieldnames or []), rows


def read_header(path: Path) -> list[str]:
    if not path.exists():
        return []
    with open(path, encoding="utf-8", newline="") as f:
        return next(csv.reader(f), [])


def _csv_text(header: list[str], rows: list[Mapping[str, Value]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=header, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: _shown(row.get(k)) for k in header} for row in rows)
    return buffer.getvalue()


def append_row(path: Path, row: Mapping[str, Value]) -> None:
    """Append `row` to metrics.csv; a row with a new column rewrites the file with a wider header."""
    header = read_header(path)  # an epoch's row needs the header alone, not every row before it
    if header and set(row) <= set(header):
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerow([_shown(row.get(k)) for k in header])
        with open(path, "a", encoding="utf-8", newline="") as f:
            f.write(buffer.getvalue())
            f.flush()
        return
    header, rows = read_rows(path)
    wider = [*LEADING, *(k for k in header if k not in LEADING)]
    wider += [k for k in row if k not in wider]
    atomic_write_text(path, _csv_text(wider, [*rows, row]))


def drop_rows_after(path: Path, key: tuple[str, str, str], epoch: int) -> None:
    """Remove the rows of training `key` (stage, round, model) past `epoch`."""
    header, rows = read_rows(path)
    kept = [
        r for r in rows if (r.get("stage"), r.get("round"), r.get("model")) != key or int(r.get("epoch") or 0) <= epoch
    ]
    if len(kept) != len(rows):
        atomic_write_text(path, _csv_text(header, kept))


# --------------------------------------------------------------------------- the stage's ending

_current: contextvars.ContextVar[RunLog | None] = contextvars.ContextVar("fgar_run_log", default=None)
P = ParamSpec("P")
R = TypeVar("R")


def records_run(stage: Callable[P, R]) -> Callable[P, R]:
    """Decorate a stage function: the log its run folder opened (`RunLog.open`) gets the stage's
    ending: `finished` with the summary it returns, or the interruption or error that ended it."""

    @functools.wraps(stage)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        token = _current.set(None)
        try:
            result = stage(*args, **kwargs)
        except BaseException as exc:
            if (log := _current.get()) is not None:
                log.stopped(exc)
            raise
        else:
            if (log := _current.get()) is not None:
                log.finished(result if isinstance(result, Mapping) else {})
            return result
        finally:
            _current.reset(token)

    return run
