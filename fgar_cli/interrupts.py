"""Ctrl-C and SIGTERM: one line saying what was kept and how to go on, and exit code 130.

`install()` makes SIGINT and SIGTERM raise `Interrupted` in the main process. `Interrupted` is a
BaseException, so no `except Exception` swallows it, and not a KeyboardInterrupt, so Typer and
click do not turn it into their silent exit. Code that knows what it keeps (the training engine:
"epoch 3 is saved") raises `Interrupted` again with that message; anywhere else the CLI prints the
general one. DataLoader worker processes keep Python's own behaviour (their parent reports).

A signal that lands while a native package (torch, numba, ...) is being imported is not raised
there: an exception thrown through torch's C++ initialisation aborts the process (SIGABRT, a core
dump instead of one line), and some of those packages catch everything while they import, which
would lose the signal. It is delivered again shortly after, until the import has finished.
"""

from __future__ import annotations

import os
import signal
import threading
from types import FrameType

EXIT_CODE = 130
GENERAL = (
    "interrupted; every file already written is complete (training keeps each finished epoch): "
    "rerun the same command, with --resume for a training stage, to continue"
)


class Interrupted(BaseException):
    """The user stopped the run (Ctrl-C or SIGTERM). Its message says what was kept."""


# Packages with C or C++ initialisation that an exception must not cross. Pure-Python packages
# (typer, rich, pydantic) are safe to interrupt and are not listed.
NATIVE_PACKAGES = frozenset({"torch", "torchvision", "numba", "llvmlite", "numpy", "h5py", "decord", "PIL"})
REDELIVERY_SECONDS = 0.05

_main_pid: int | None = None
_signals: list[int] = []


def importing_native_package(frame: FrameType | None) -> bool:
    """Whether `frame` runs inside the import of a module of NATIVE_PACKAGES (the module-level
    code of one of its modules is on the stack)."""
    while frame is not None:
        package = str(frame.f_globals.get("__name__", "")).partition(".")[0]
        if frame.f_code.co_name == "<module>" and package in NATIVE_PACKAGES:
            return True
        frame = frame.f_back
    return False


def _redeliver(signum: int) -> None:
    timer = threading.Timer(REDELIVERY_SECONDS, os.kill, (os.getpid(), signum))
    timer.daemon = True  # never keeps a finishing process alive
    timer.start()


def _handler(signum: int, frame: FrameType | None) -> None:
    if os.getpid() != _main_pid:  # a forked DataLoader worker: behave as Python would
        raise KeyboardInterrupt
    _signals.append(signum)
    if importing_native_package(frame):
        _redeliver(signum)
        return
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
