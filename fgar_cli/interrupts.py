"""Ctrl-C and SIGTERM: one line saying what was kept and how to go on, and exit code 130.

`install()` makes SIGINT and SIGTERM raise `Interrupted` in the main process. `Interrupted` is a
BaseException, so no `except Exception` swallows it, and not a KeyboardInterrupt, so Typer and
click do not turn it into their silent exit. Code that knows what it keeps (the training engine:
"epoch 3 is saved") raises `Interrupted` again with that message; anywhere else the CLI prints the
general one. DataLoader worker processes keep Python's own behaviour (their parent reports).
"""

from __future__ import annotations

import os
import signal
from types import FrameType

EXIT_CODE = 130
GENERAL = (
    "interrupted; every file already written is complete (training keeps each finished epoch): "
    "rerun the same command, with --resume for a training stage, to continue"
)


class Interrupted(BaseException):
    """The user stopped the run (Ctrl-C or SIGTERM). Its message says what was kept."""


_main_pid: int | None = None
_signals: list[int] = []


def _handler(signum: int, frame: FrameType | None) -> None:
    if os.getpid() != _main_pid:  # a forked DataLoader worker: behave as Python would
        raise KeyboardInterrupt
    _signals.append(signum)
    raise Interrupted(GENERAL)


def received() -> bool:
    """Whether SIGINT or SIGTERM arrived. A library may turn the exception raised in its midst into
    one of its own (a C extension being imported, for example); this still tells it apart."""
    return bool(_signals)


def message(exc: BaseException) -> str:
    """The line to print for an interruption."""
    text = str(exc) if isinstance(exc, Interrupted) and str(exc) else GENERAL
    return text if text.startswith("interrupted") else f"interrupted: {text}"


def install() -> None:
    """SIGINT and SIGTERM raise `Interrupted` in this (main) process from now on."""
    global _main_pid
    _main_pid = os.getpid()
    signal.signal(signal.SIGINT, _handler)
    signal.signal(signal.SIGTERM, _handler)
