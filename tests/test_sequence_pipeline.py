"""The six stages on a sequence index: a UEA/UCR `.ts` dataset (multivariate, unequal lengths, missing
values, string labels) through pretrain (GITDL and TCLR), fit-labeled, pseudolabel, selftrain,
evaluate and openworld, with the tcn f_E and the mlp f_A."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from fgar_cli.artifacts import read_h5
from fgar_cli.checkpoints import load_checkpoint
from fgar_cli.data.index import load_index
from fgar_cli.data.sequences import channel_stats, read_sequence
from fgar_cli.data.splits import load_split

from helpers import fgar, one_error_line, write_ts

CLASSES = ["hop", "skip", "jump"]
# Each class visits the same three phases (levels of the two channels) in its own order: the order of
# phases, not which phases occur, tells the classes apart, as in fine-grained action.
PHASES = {"hop": (0, 1, 2), "skip": (2, 1, 0), "jump": (1, 0, 2)}
LEVELS = np.array([[-1.0, 0.5], [0.0, -0.5], [1.0, 1.5]])
STEPS = ["--num-frames", "8"]
ENCODERS = ["--arch-e", "tcn"]


def motion(label: str, length: int, rng: np.random.Generator) -> list[list[float]]:
    """One case: `length` steps of 2 channels, the class's phases in order plus noise, a gap or two."""
    phase = np.minimum(np.arange(length) * 3 // length, 2)
    values = LEVELS[np.array(PHASES[label])[phase]] + rng.normal(0, 0.2, (length, 2))
    values[rng.integers(length), rng.integers(2)] = np.nan
    return [values[:, 0].tolist(), values[:, 1].tolist()]


@pytest.fixture(scope="module")
def seq_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("seq_run")
    rng = np.random.default_rng(0)
    for subset, per_class in (("TRAIN", 8), ("TEST", 4)):
        labels = [c for c in CLASSES for _ in range(per_class)]
        series = [motion(label, int(rng.integers(18, 31)), rng) for label in labels]
        write_ts(root / "data" / f"Hops_{subset}.ts", series, labels, class_labels=CLASSES, problem="Hops")
    assert fgar("data", "index", "--format", "ts", "--root", root / "data", "--out", root / "index.json") == 0
    split = ["--index", root / "index.json", "--fraction", "0.5", "--seed", "0", "--out", root / "split.json"]
    assert fgar("data", "split", *split) == 0
    data = ["--index", root / "index.json", "--split", root / "split.json"]
    gitdl = ["--backbone-a", "mlp", "--epochs", "2", "--batch-size", "4"]
    assert fgar("pretrain", *data, "--out-dir", root / "pre", *gitdl, *STEPS) == 0
    tclr = ["--encoder", "action", *ENCODERS, "--epochs-e", "1", "--batch-size-e", "4"]
    tclr += ["--set", "action_loss.local_frames=2"]
    assert fgar("pretrain", *data, "--out-dir", root / "pre_e", *tclr, *STEPS) == 0
    init = ["--init-a", root / "pre" / "A0.pt", "--init-e", root / "pre_e" / "E0.pt"]
    fit = ["--epochs-e", "3", "--epochs-a", "2", "--set", "clip.sequence_augment.time_warp=0.2"]
    assert fgar("fit-labeled", *data, *init, *fit, *STEPS, "--out-dir", root / "fit") == 0
    return root


def encoders(run: Path, folder: str = "fit") -> list[object]:
    return ["--ckpt-a", run / folder / "A.pt", "--ckpt-e", run / folder / "E.pt"]


def test_checkpoints_read_the_index_step_size_with_training_statistics(seq_run: Path) -> None:
    index = load_index(seq_run / "index.json")
    split = load_split(seq_run / "split.json")
    assert index.input_dim == 2
    a0 = load_checkpoint(seq_run / "pre" / "A0.pt", kind="alignability")
    assert a0["arch"]["backbone"] == "mlp" and a0["arch"]["input_dim"] == 2
    # f_A's normalisation: the per-channel statistics of the training clips (labeled and unlabeled)
    by_id = index.by_id()
    train = [by_id[i] for i in split.labeled + split.unlabeled]
    mean, std = channel_stats(read_sequence(index.resolve(e), e.key) for e in train)
    torch.testing.assert_close(a0["state_dict"]["backbone.0.mean"], torch.tensor(mean, dtype=torch.float32))
    torch.testing.assert_close(a0["state_dict"]["backbone.0.std"], torch.tensor(std, dtype=torch.float32))
    # fit-labeled started from the pretrained encoders, so it kept the statistics they learned with
    e0 = load_checkpoint(seq_run / "pre_e" / "E0.pt")["state_dict"]
    e = load_checkpoint(seq_run / "fit" / "E.pt", kind="action")
    assert e["arch"]["arch"] == "tcn" and e["num_classes"] == 3
    torch.testing.assert_close(e["state_dict"]["backbone.norm.mean"], e0["backbone.norm.mean"])
    a = load_checkpoint(seq_run / "fit" / "A.pt", kind="alignability")["state_dict"]
    torch.testing.assert_close(a["backbone.0.mean"], a0["state_dict"]["backbone.0.mean"])


def test_pseudolabel_selftrain_and_evaluate_on_sequences(seq_run: Path) -> None:
    out = seq_run / "pl"
    assert fgar("pseudolabel", *encoders(seq_run), "--theta", "0.5", "--out-dir", out) == 0
    pl, _ = read_h5(out / "pseudo.h5", "fgar.pseudo", 1)
    split = load_split(seq_run / "split.json")
    assert sorted(v.decode() if isinstance(v, bytes) else v for v in pl["video_ids"]) == sorted(split.unlabeled)
    np.testing.assert_allclose(pl["p_A"].sum(1), 1, rtol=1e-5)
    st = seq_run / "st"
    options = ["--theta", "0.4", "--rounds", "2", "--epochs", "1", "--out-dir", st]
    assert fgar("selftrain", *encoders(seq_run), *options) == 0
    summary = json.loads((st / "selftrain.json").read_text())
    assert [r["round"] for r in summary["rounds"]] == [1, 2]
    assert (st / "round_1" / "pseudo.h5").exists()
    assert fgar("evaluate", *encoders(seq_run, "st"), "--num-views", "2", "--out-dir", seq_run / "eval") == 0
    metrics = json.loads((seq_run / "eval" / "metrics.json").read_text())
    assert metrics["videos"] == 12 and metrics["unreadable"] == 0
    for head in ("action", "alignability", "combined"):
        assert np.array(metrics[head]["confusion"]).sum() == 12
        assert 0 <= metrics[head]["top1"] <= metrics[head]["top5"] <= 1
    # the phases' order is easy to see: f_A's non-parametric classifier learns it in two epochs
    assert metrics["alignability"]["top1"] > 1 / 3


def test_openworld_on_sequences(seq_run: Path) -> None:
    split = ["--index", seq_run / "index.json", "--fraction", "0.5", "--seed", "1", "--out", seq_run / "ow_split.json"]
    assert fgar("data", "split", *split, "--known-classes", "2") == 0
    data = ["--index", seq_run / "index.json", "--split", seq_run / "ow_split.json"]
    fit = [*ENCODERS, "--backbone-a", "mlp", "--epochs-e", "1", "--epochs-a", "1", *STEPS]
    assert fgar("fit-labeled", *data, *fit, "--out-dir", seq_run / "ow_fit") == 0
    options = ["--theta", "0.3", "--rounds", "1", "--epochs", "1", "--novel-threshold", "0.5"]
    assert fgar("openworld", *encoders(seq_run, "ow_fit"), *options, "--out-dir", seq_run / "ow") == 0
    metrics = json.loads((seq_run / "ow" / "metrics.json").read_text())
    assert metrics["known_classes"] == 2
    pl, _ = read_h5(seq_run / "ow" / "round_1" / "pseudo.h5", "fgar.pseudo", 1)
    assert (pl["truth"] == -1).any() and not (pl["accepted"] & pl["novel"]).any()


def test_video_architectures_on_a_sequence_index_fail_clearly(seq_run: Path, capsys) -> None:
    data = ["--index", seq_run / "index.json", "--split", seq_run / "split.json"]
    assert fgar("fit-labeled", *data, "--arch-e", "small3d", *STEPS, "--out-dir", seq_run / "bad") == 1
    one_error_line(capsys.readouterr().err, "index.json", "needs f_E's tcn, not small3d", "--arch-e tcn")


@pytest.mark.parametrize("with_alignability", [False, True])
def test_predict_on_sequence_files_gives_what_evaluate_gives(seq_run: Path, tmp_path: Path, with_alignability) -> None:
    ckpts = encoders(seq_run) if with_alignability else ["--ckpt-e", seq_run / "fit" / "E.pt"]
    assert fgar("evaluate", *ckpts, "--num-views", "2", "--out-dir", tmp_path / "eval") == 0
    predictions, _ = read_h5(tmp_path / "eval" / "predictions.h5", "fgar.predictions", 1)
    head = "probs_combined" if with_alignability else "probs_action"
    class_names = [str(c) for c in predictions["class_names"]]
    by_id = load_index(seq_run / "index.json").by_id()
    ts_file = str((seq_run / "data" / "Hops_TEST.ts").resolve())
    expected = {}  # what evaluate gave each test case, under the name predict gives it (FILE:ROW)
    for k, video_id in enumerate(predictions["video_ids"]):
        entry = by_id[video_id.decode() if isinstance(video_id, bytes) else str(video_id)]
        expected[f"{ts_file}:{entry.key}"] = np.asarray(predictions[head])[k]
    # the same two cases again as a lone .npy and as the two arrays of an .npz; and a broken file
    loose = tmp_path / "loose"
    loose.mkdir()
    first, second = (read_sequence(Path(ts_file), key) for key in ("0", "1"))
    np.save(loose / "first.npy", first)
    np.savez(loose / "pair.npz", a=first, b=second)
    np.save(loose / "wrong_width.npy", np.zeros((20, 3), dtype=np.float32))
    out = tmp_path / "pred.csv"
    inputs = ["--input", ts_file, "--input", loose, "--input", f"{loose / 'pair.npz'}:b"]
    assert fgar("predict", *ckpts, *inputs, "--num-views", "2", "--top-k", "3", "--out", out) == 0
    rows = {r["path"]: r for r in csv.DictReader(out.open())}
    names = list(rows)
    assert names[: len(expected)] == sorted(expected, key=lambda n: int(n.rpartition(":")[2]))  # the file's order
    loose_rows = [f"{loose}/{name}" for name in ("first.npy", "pair.npz:a", "pair.npz:b", "wrong_width.npy")]
    assert names[len(expected) :] == loose_rows  # pair.npz:b named twice (the folder, then itself): one row

    def probabilities(row: dict[str, str]) -> np.ndarray:
        got = np.zeros(len(class_names))
        for rank in (1, 2, 3):
            got[class_names.index(row[f"class_{rank}"])] = float(row[f"probability_{rank}"])
        return got

    for name, probs in expected.items():
        assert not rows[name]["error"]
        np.testing.assert_allclose(probabilities(rows[name]), probs, atol=1e-5)  # the same steps, the same clips
    assert np.ptp(np.stack(list(expected.values())), axis=0).max() > 1e-2  # cases differ: order matters above
    np.testing.assert_allclose(probabilities(rows[f"{loose}/first.npy"]), expected[f"{ts_file}:0"], atol=1e-5)
    np.testing.assert_allclose(probabilities(rows[f"{loose}/pair.npz:b"]), expected[f"{ts_file}:1"], atol=1e-5)
    broken = rows[f"{loose}/wrong_width.npy"]
    assert not broken["class_1"] and "3 values per step, expected 2" in broken["error"]


def test_predict_with_a_sequence_model_names_what_it_reads(seq_run: Path, tmp_path: Path, capsys) -> None:
    (tmp_path / "clips").mkdir()
    (tmp_path / "clips" / "a.mp4").write_bytes(b"")
    assert fgar("predict", "--ckpt-e", seq_run / "fit" / "E.pt", "--input", tmp_path / "clips") == 1
    one_error_line(capsys.readouterr().err, "no sequence file found", "clips")


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_an_exported_sequence_model_gives_the_checkpoints_outputs(seq_run: Path, tmp_path: Path, fmt: str) -> None:
    from fgar_cli.checkpoints import load_action
    from fgar_cli.data.sequences import fill_missing
    from fgar_cli.stages.export import load_exported

    if fmt == "onnx":
        pytest.importorskip("onnxscript")
        ort = pytest.importorskip("onnxruntime")
    ckpt = seq_run / "fit" / "E.pt"
    out = tmp_path / ("E.onnx" if fmt == "onnx" else "E.torchscript.pt")
    assert fgar("export", "--ckpt-e", ckpt, "--format", fmt, "--out", out) == 0
    action = load_action(str(ckpt))
    steps = action.recipe.clip.num_frames
    ts_file = seq_run / "data" / "Hops_TEST.ts"
    # the first `steps` steps of real cases, gaps filled as fgar fills them; batches of 1 and 3
    cases = np.stack([fill_missing(read_sequence(ts_file, str(row)))[:steps] for row in range(3)])
    with torch.no_grad():
        expected = action.model.eval()(torch.from_numpy(cases)).softmax(-1)
    assert float(expected.max(1).values.min()) < 0.999  # not saturated: the comparison below can fail
    for batch in (1, 3):
        if fmt == "onnx":
            session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
            (steps_in,) = session.get_inputs()
            assert (steps_in.name, steps_in.shape) == ("steps", ["batch", steps, 2])
            (got,) = session.run(["probabilities"], {"steps": cases[:batch]})
            got = torch.from_numpy(got)
        else:
            model, class_names = load_exported(out)
            assert class_names == CLASSES
            got = model(torch.from_numpy(cases[:batch]))
        torch.testing.assert_close(got, expected[:batch], rtol=1e-4, atol=1e-5)
