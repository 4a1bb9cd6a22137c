"""Fixtures every test module may use. Helpers that are plain functions live in helpers.py."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import pytest

from helpers import CLIP, fgar, fit_labeled, one_error_line

# No progress bars in test output, and wide tables so that rows are not wrapped.
os.environ["FGAR_NO_PROGRESS"] = "1"
os.environ["COLUMNS"] = "200"
# The frame cache of the tests' own videos goes to a folder of this test session, not the user's cache.
os.environ["FGAR_CACHE_DIR"] = tempfile.mkdtemp(prefix="fgar-test-cache-")
atexit.register(shutil.rmtree, os.environ["FGAR_CACHE_DIR"], ignore_errors=True)  # not left in /tmp


class CliResult(NamedTuple):
    code: int
    out: str
    err: str

    def error_line(self, *fragments: str) -> str:
        """The single `error:` line (no traceback), holding every fragment."""
        return one_error_line(self.out + self.err, *fragments)


Cli = Callable[[Sequence[object]], CliResult]


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A whole tiny pipeline, made once: the embedded benchmark (3 classes x 6 videos, 24 frames of
    32 px), its index and a 50% split, GITDL for one epoch (pre/A0.pt) and fit-labeled for one epoch of
    each encoder (fit/E.pt, fit/A.pt). Tests read it and write into folders of their own."""
    root = tmp_path_factory.mktemp("tiny_run")
    synth = ["--classes", "3", "--videos-per-class", "6", "--frames", "24", "--size", "32", "--seed", "5"]
    assert fgar("synth", "--out-dir", root / "data", *synth) == 0
    assert fgar("data", "index", "--format", "diving48", "--root", root / "data", "--out", root / "index.json") == 0
    split = ["--index", root / "index.json", "--fraction", "0.5", "--seed", "0", "--out", root / "split.json"]
    assert fgar("data", "split", *split) == 0
    data = ["--index", root / "index.json", "--split", root / "split.json"]
    assert fgar("pretrain", *data, "--out-dir", root / "pre", "--epochs", "1", "--batch-size", "4", *CLIP) == 0
    assert fit_labeled(root, root / "split.json", root / "fit", 1, 1, "--init-a", root / "pre" / "A0.pt") == 0
    return root


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Cli:
    """Run `fgar ARGS` in-process through the real entry point; returns (exit code, stdout, stderr)."""

    def run(args: Sequence[object]) -> CliResult:
        capsys.readouterr()  # what came before is not this command's output
        code = fgar(*args)
        out, err = capsys.readouterr()
        return CliResult(code, out, err)

    return run


# --------------------------------------------------------------------------- faults, injected from outside


@pytest.fixture
def interrupt_after_epochs(monkeypatch: pytest.MonkeyPatch) -> Callable[[int | None], None]:
    """`interrupt_after_epochs(n)`: Ctrl-C as the (n+1)-th training epoch from now starts;
    `interrupt_after_epochs(None)`: no more interruptions."""
    import fgar_cli.engine as engine

    real = engine.train_one_epoch

    def arm(epochs: int | None) -> None:
        started = []
        if epochs is None:
            monkeypatch.setattr(engine, "train_one_epoch", real)
            return

        def train_one_epoch(*args: object, **kwargs: object) -> dict[str, float]:
            started.append(1)
            if len(started) > epochs:
                raise KeyboardInterrupt
            return real(*args, **kwargs)

        monkeypatch.setattr(engine, "train_one_epoch", train_one_epoch)

    return arm


@pytest.fixture
def nan_loss_in(monkeypatch: pytest.MonkeyPatch) -> Callable[[str], None]:
    """`nan_loss_in("f_E labeled 2/2")`: the loss turns NaN in the epoch of that description."""
    import fgar_cli.engine as engine

    def arm(description: str) -> None:
        real = engine.train_one_epoch

        def train_one_epoch(model, loader, optimizer, step, device, desc):  # noqa: ANN001, ANN202
            def nan_step(model, batch):  # noqa: ANN001, ANN202
                terms = step(model, batch)
                return {**terms, "loss": terms["loss"] * float("nan")}

            return real(model, loader, optimizer, nan_step if desc == description else step, device, desc)

        monkeypatch.setattr(engine, "train_one_epoch", train_one_epoch)

    return arm
