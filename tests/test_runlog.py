"""A run folder that records itself: log.txt, metrics.csv, TensorBoard scalars, config.yaml, the
held-out labeled clips of fit-labeled (E_best.pt), and X_last.pt gone once X.pt is finished."""

from __future__ import annotations

import csv
import errno
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

import fgar_cli.runlog as runlog
from fgar_cli.checkpoints import load_checkpoint
from fgar_cli.config import FitLabeledConfig, PretrainConfig, ValidationConfig, build_config
from fgar_cli.runlog import RunLog, append_row, drop_rows_after
from fgar_cli.training import EncoderTrainer, hold_out

from conftest import Cli
from helpers import CLIP, fgar, fit_labeled


def rows(folder: Path) -> list[dict[str, str]]:
    with open(folder / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def log_lines(folder: Path) -> list[str]:
    return (folder / "log.txt").read_text().splitlines()


def test_fit_labeled_writes_its_log_and_one_row_per_epoch(tiny_run: Path) -> None:
    fit = tiny_run / "fit"
    lines = log_lines(fit)
    assert "fit-labeled started (fgar " in lines[0]
    text = "\n".join(lines)
    for fragment in ("f_E labeled 1/1: loss", "wrote E_last.pt (epoch 1)", "wrote E.pt (finished, epoch 1)"):
        assert fragment in text, text
    assert "f_A labeled 1/1: loss" in text and "wrote A.pt (finished, epoch 1)" in text
    assert lines[-1].split("  ", 1)[1].startswith("finished: {")
    table = rows(fit)
    assert [(r["stage"], r["round"], r["model"], r["epoch"]) for r in table] == [
        ("fit_labeled", "", "E", "1"),
        ("fit_labeled", "", "A", "1"),
    ]
    assert all(float(r["loss"]) >= 0 and float(r["lr"]) > 0 and float(r["seconds"]) >= 0 for r in table)
    assert table[0]["acc"] != "" and table[1]["acc"] == ""  # one header for the terms of both encoders
    assert (tiny_run / "pre" / "log.txt").exists() and rows(tiny_run / "pre")[0]["model"] == "A0"


def test_finished_training_leaves_no_last_checkpoint(tiny_run: Path) -> None:
    for name in ("pre/A0", "fit/E", "fit/A"):
        assert (tiny_run / f"{name}.pt").exists()
        assert not (tiny_run / f"{name}_last.pt").exists()


def test_small_labeled_sets_hold_nothing_out(tiny_run: Path) -> None:
    summary = json.loads((tiny_run / "fit" / "fit_labeled.json").read_text())
    assert summary["validation"] == {"held_out": 0} and summary["held_out_clips"] == []
    assert not (tiny_run / "fit" / "E_best.pt").exists()


def test_tensorboard_scalars_when_installed(tiny_run: Path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tiny_run / "fit" / "tensorboard" / "E"))
    events.Reload()
    assert {"loss", "acc", "lr"} <= set(events.Tags()["scalars"])
    assert [e.step for e in events.Scalars("loss")] == [1]
    assert not any("TensorBoard scalars skipped" in line for line in log_lines(tiny_run / "fit"))


def test_resume_keeps_one_row_per_epoch(
    tiny_run: Path, tmp_path: Path, interrupt_after_epochs: Callable[[int | None], None], monkeypatch
) -> None:
    monkeypatch.setattr(runlog, "tensorboard_available", lambda: False)  # as without the package
    out = tmp_path / "fit"
    interrupt_after_epochs(1)
    assert fit_labeled(tiny_run, tiny_run / "split.json", out, 2, 1) == 130
    assert [(r["model"], r["epoch"]) for r in rows(out)] == [("E", "1")]
    assert "interrupted in epoch 2 of f_E labeled" in log_lines(out)[-1]
    # as if killed after epoch 2's row was written but before its checkpoint was
    append_row(out / "metrics.csv", {**rows(out)[0], "epoch": 2})
    interrupt_after_epochs(None)
    assert fit_labeled(tiny_run, tiny_run / "split.json", out, 2, 1, "--resume") == 0
    assert [(r["model"], r["epoch"]) for r in rows(out)] == [("E", "1"), ("E", "2"), ("A", "1")]
    text = "\n".join(log_lines(out))
    assert "fit-labeled resumed (fgar " in text and "f_E labeled: resuming after epoch 1" in text
    assert text.count("TensorBoard scalars skipped: the tensorboard package is not installed") == 2  # each start
    assert not (out / "tensorboard").exists()
    assert not (out / "E_last.pt").exists() and not (out / "A_last.pt").exists()
    # --resume of the finished run: nothing trains again, no row is added, and it ends well
    assert fit_labeled(tiny_run, tiny_run / "split.json", out, 2, 1, "--resume") == 0
    assert len(rows(out)) == 3 and "E.pt is complete; not training it again" in "\n".join(log_lines(out))
    assert json.loads((out / "fit_labeled.json").read_text())["f_E"]["epoch"] == 2  # read from E.pt


@pytest.mark.parametrize("stage", ["pre", "fit"])
def test_a_fresh_run_into_a_finished_folder_is_refused(stage: str, tiny_run: Path, tmp_path: Path, cli: Cli) -> None:
    out = tmp_path / stage
    shutil.copytree(tiny_run / stage, out)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    data = ["--index", tiny_run / "index.json", "--split", tiny_run / "split.json", "--out-dir", out, *CLIP]
    if stage == "pre":
        commands = [["pretrain", *data, "--epochs", "1"], ["pretrain", *data, "--encoder", "action"]]
        name = "pretrain"
    else:
        commands = [["fit-labeled", *data, "--arch-e", "small3d", "--epochs-e", "1", "--epochs-a", "1"]]
        name = "fit-labeled"
    for command in commands:
        result = cli(command)
        assert result.code == 1, result.out + result.err
        result.error_line(str(out), f"already holds a {name} run", "--resume", "--force")
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before  # A0.pt, log.txt unchanged


def test_config_yaml_reruns_the_same_run(tiny_run: Path, tmp_path: Path) -> None:
    fit = json.loads((tiny_run / "fit" / "run.json").read_text())["config"]
    again = build_config(FitLabeledConfig, tiny_run / "fit" / "config.yaml", section="fit_labeled")
    assert again == FitLabeledConfig.model_validate(fit)
    # through the command line, into another folder: the same resolved options but for the folder
    out = tmp_path / "pre"
    assert fgar("pretrain", "--config", tiny_run / "pre" / "config.yaml", "--out-dir", out) == 0
    first = json.loads((tiny_run / "pre" / "run.json").read_text())["config"]
    second = json.loads((out / "run.json").read_text())["config"]
    assert {**first, "out_dir": None} == {**second, "out_dir": None} and second["out_dir"] == str(out)
    assert build_config(PretrainConfig, out / "config.yaml", section="pretrain") == PretrainConfig.model_validate(
        second
    )


def test_held_out_clips_pick_the_best_epoch(tiny_run: Path, tmp_path: Path, monkeypatch) -> None:
    trained: dict[str, set[str]] = {}
    real_action, real_alignability = EncoderTrainer.action, EncoderTrainer.alignability

    def action(self, model, dataset, *args, **kwargs):  # noqa: ANN001, ANN202
        trained["f_E"] = {e.id for e in dataset.entries}
        return real_action(self, model, dataset, *args, **kwargs)

    def alignability(self, model, dataset, *args, **kwargs):  # noqa: ANN001, ANN202
        trained["f_A"] = {e.id for e in dataset.entries}
        return real_alignability(self, model, dataset, *args, **kwargs)

    monkeypatch.setattr(EncoderTrainer, "action", action)
    monkeypatch.setattr(EncoderTrainer, "alignability", alignability)
    config = tmp_path / "fit.yaml"
    config.write_text("fit_labeled:\n  validation:\n    min_per_class: 2\n    fraction: 0.3\n")
    out = tmp_path / "fit"
    assert fit_labeled(tiny_run, tiny_run / "split.json", out, 2, 1, "--config", config) == 0

    summary = json.loads((out / "fit_labeled.json").read_text())
    held = set(summary["held_out_clips"])
    split = json.loads((tiny_run / "split.json").read_text())
    assert summary["validation"]["held_out"] == len(held) == 3  # one of the 2 labeled clips of each class
    assert not held & trained["f_E"] and not held & trained["f_A"]
    assert held | trained["f_E"] == set(split["labeled"])
    best = load_checkpoint(out / "E_best.pt", kind="action")
    assert "optimizer" not in best and best["epoch"] == summary["validation"]["best_epoch"]
    scores = [h["val_top1"] for h in load_checkpoint(out / "E.pt")["history"]]
    assert len(scores) == 2 and summary["validation"]["best_top1"] == max(scores)
    assert [r["val_top1"] != "" for r in rows(out)] == [True, True, False]  # f_E's rows, then f_A's
    assert "wrote E_best.pt (epoch " in "\n".join(log_lines(out))


def test_hold_out_is_per_class_and_deterministic() -> None:
    labels = {f"c{c}_{i}": c for c in range(3) for i in range(30)}
    train, held = hold_out(labels, ValidationConfig(), seed=4)
    assert len(held) == 9 and all(sum(labels[h] == c for h in held) == 3 for c in range(3))
    assert set(train).isdisjoint(held) and set(train) | set(held) == set(labels)
    assert hold_out(labels, ValidationConfig(), seed=4) == (train, held)
    assert hold_out(labels, ValidationConfig(), seed=5)[1] != held
    assert hold_out(labels, ValidationConfig(fraction=0), seed=4) == (list(labels), [])
    small = {k: v for k, v in labels.items() if int(k.split("_")[1]) < 8}  # 8 per class: the demo's
    assert hold_out(small, ValidationConfig(), seed=4) == (list(small), [])
    assert len(hold_out(small, ValidationConfig(min_per_class=2, fraction=0.01), seed=4)[1]) == 3  # 1 at least


def test_metrics_csv_widens_its_header_and_drops_rows(tmp_path: Path) -> None:
    path = tmp_path / "metrics.csv"
    append_row(path, {"stage": "s", "round": None, "model": "E", "epoch": 1, "loss": 1.0})
    append_row(path, {"stage": "s", "round": None, "model": "E", "epoch": 2, "loss": 0.5})
    append_row(path, {"stage": "s", "round": None, "model": "A", "epoch": 1, "loss": 2.0, "triplet": 0.25})
    assert path.read_text().splitlines()[0] == "stage,round,model,epoch,lr,seconds,loss,triplet"
    drop_rows_after(path, ("s", "", "E"), 1)
    assert [(r["model"], r["epoch"], r["triplet"]) for r in rows(tmp_path)] == [("E", "1", ""), ("A", "1", "0.25")]


def test_a_failing_log_write_is_one_warning(tmp_path: Path, monkeypatch, capsys) -> None:
    def no_space(self, name: str, text: str) -> None:  # noqa: ANN001
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(runlog._Sink, "append", no_space)
    log = RunLog.open(tmp_path, "fit_labeled", resume=False)
    log.line("one")
    log.line("two")
    err = capsys.readouterr().err
    assert err.count("warning:") == 1 and "cannot write the run's log" in err


def test_a_forced_run_logs_nothing_until_it_replaces_the_old_one(tmp_path: Path) -> None:
    (tmp_path / "log.txt").write_text("the old run\n")
    replacing = [True]
    log = RunLog.open(tmp_path, "fit_labeled", resume=False, waiting=lambda: replacing[0])
    log.line("epoch 1")
    assert (tmp_path / "log.txt").read_text() == "the old run\n"
    (tmp_path / "log.txt").unlink()  # what replacing the old run does
    replacing[0] = False
    log.line("epoch 2")
    text = (tmp_path / "log.txt").read_text()
    assert "fit-labeled started" in text and text.index("epoch 1") < text.index("epoch 2")
