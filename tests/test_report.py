"""`fgar report` and `fgar summary` on a run folder made by hand with the project's own writers."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from fgar_cli.artifacts import atomic_write_json
from fgar_cli.config import PseudoLabeling, Source
from fgar_cli.method.pseudolabels import PseudoLabels, Selection, write_pseudo_labels
from fgar_cli.metrics import classification_metrics, save_confusion_png
from fgar_cli.report import gather, theta_sweep

from conftest import Cli
from helpers import fgar

CLASSES = ["back", "forward", "inward"]
TRUTH = np.array([0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2])  # 12 test clips, 4 per class
# Predicted classes per arm and head, so that each number of the table is countable by hand.
PREDICTIONS = {
    "eval_supervised": {
        "action": [0, 0, 1, 1, 1, 1, 0, 0, 2, 2, 1, 1],  # 6/12 right, 2/4 per class
        "alignability": [0, 0, 0, 1, 1, 1, 0, 0, 2, 2, 1, 1],  # 7/12
        "combined": [0, 0, 0, 1, 1, 1, 1, 0, 2, 2, 1, 1],  # 8/12
    },
    "eval_confidence": {"action": [0, 0, 0, 1, 1, 1, 0, 0, 2, 2, 2, 1]},  # 8/12, per class 3/4 2/4 3/4
    "eval_finepseudo": {
        "action": [0, 0, 0, 1, 1, 1, 1, 0, 2, 2, 2, 2],  # 10/12
        "alignability": [0, 0, 0, 0, 1, 1, 1, 0, 2, 2, 0, 0],  # 9/12
        "combined": [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2],  # 12/12
    },
}
PROTOCOL = "2 clips x 1 centre crop, 8 frames at 32px"

# Round 1 of each self-training run scores 6 unlabeled clips: max p and whether argmax p is right.
ROUND1_P = [
    [0.9, 0.05, 0.05],  # truth 0: right
    [0.1, 0.8, 0.1],  # truth 0: wrong
    [0.2, 0.15, 0.65],  # truth 2: right
    [0.55, 0.25, 0.2],  # truth 0: right
    [0.3, 0.45, 0.25],  # truth 2: wrong
    [0.35, 0.3, 0.35],  # truth 0: right (argmax takes the first of a tie)
]
ROUND1_TRUTH = [0, 0, 2, 0, 2, 0]
# By hand, accept when max p > theta: theta -> (accepted, right)
ROUND1_SWEEP = {0.3: (6, 4), 0.5: (4, 3), 0.6: (3, 2), 0.7: (2, 1), 0.85: (1, 1), 0.9: (0, 0)}


def write_pass(folder: Path, p: list[list[float]], truth: list[int], round_: int, rule: PseudoLabeling) -> int:
    """round_K/pseudo.h5 through method.pseudolabels' writer; returns how many the rule accepted."""
    probs = torch.tensor(p)
    confidence, label = probs.max(1)
    accepted = confidence > rule.theta
    selection = Selection(probs, label, confidence, accepted, torch.zeros_like(accepted))
    ids = [f"u{round_}_{i}" for i in range(len(p))]
    pl = PseudoLabels(ids, probs, None, selection, np.array(truth), CLASSES, rule, round_)
    folder.mkdir(parents=True, exist_ok=True)
    write_pseudo_labels(folder / "pseudo.h5", pl, rule, [])
    return int(accepted.sum())


def write_eval(folder: Path, heads: dict[str, list[int]]) -> None:
    metrics: dict = {"protocol": PROTOCOL, "subset": "test", "videos": len(TRUTH)}
    for head, pred in heads.items():
        probs = np.full((len(TRUTH), len(CLASSES)), 0.1)
        probs[np.arange(len(TRUTH)), pred] = 0.8
        metrics[head] = classification_metrics(probs, TRUTH, CLASSES)
    metrics["top1"] = metrics["action"]["top1"]
    folder.mkdir(parents=True)
    atomic_write_json(folder / "metrics.json", metrics)


def make_run(root: Path) -> Path:
    """A compare.sh run folder: three evaluations, two self-training runs of 2 rounds each, the
    confidence arm's selftrain.json with the new statistic names, FinePseudo's with the old ones."""
    run = root / "run"
    for name, heads in PREDICTIONS.items():
        write_eval(run / name, heads)
    for st, source in (("st_confidence", Source.ACTION), ("st_finepseudo", Source.COLLAB)):
        rule = PseudoLabeling(source=source, theta=0.6)
        first = write_pass(run / st / "round_1", ROUND1_P, ROUND1_TRUTH, 1, rule)  # 3 accepted, 2 right
        second = write_pass(
            run / st / "round_2", [[0.7, 0.2, 0.1], [0.2, 0.5, 0.3], [0.1, 0.1, 0.8]], [0, 1, 1], 2, rule
        )
        assert (first, second) == (3, 2)  # round 2: clips 0 (right) and 2 (wrong)
        if st == "st_confidence":
            rounds = [
                {"round": 1, "round_pl_count": 3, "round_pl_accuracy": 2 / 3, "round_candidates": 6,
                 "cumulative_pl_count": 3, "cumulative_pl_accuracy": 2 / 3, "unlabeled": 6},
                {"round": 2, "round_pl_count": 2, "round_pl_accuracy": 0.5, "round_candidates": 3,
                 "cumulative_pl_count": 5, "cumulative_pl_accuracy": 0.6, "unlabeled": 6},
            ]  # fmt: skip
            summary = {"rounds": rounds, "cumulative_pl_count": 5, "cumulative_pl_accuracy": 0.6}
        else:  # before the rename: cumulative figures only, under the old names
            rounds = [
                {"round": 1, "pl_count": 3, "pl_accuracy": 2 / 3, "unlabeled": 6},
                {"round": 2, "pl_count": 5, "pl_accuracy": 0.6, "unlabeled": 6},
            ]
            summary = {"rounds": rounds, "pl_count": 5, "pl_accuracy": 0.6}
        atomic_write_json(run / st / "selftrain.json", {**summary, "source": source.value})
    return run


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_run(tmp_path_factory.mktemp("report"))


@pytest.fixture(scope="module")
def rendered(run: Path) -> Path:
    """`fgar report RUN`, once for the module (matplotlib is the slow part)."""
    assert fgar("report", run) == 0
    return run / "report"


def md_rows(text: str) -> dict[str, list[str]]:
    """The Markdown table rows of a report, by their first cell."""
    rows = {}
    for line in text.splitlines():
        if line.startswith("| ") and not line.startswith("| ---"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows.setdefault(cells[0], cells[1:])
    return rows


def test_report_holds_the_results_table(rendered: Path) -> None:
    rows = md_rows((rendered / "report.md").read_text())
    # top-1, top-5, mean class accuracy of f_E; f_A and combined top-1; pseudo-labels and their accuracy
    assert rows["supervised"] == ["0.500", "1.000", "0.500", "0.583", "0.667", "-", "-"]
    assert rows["confidence_pl"] == ["0.667", "1.000", "0.667", "-", "-", "5", "0.600"]
    assert rows["finepseudo"] == ["0.833", "1.000", "0.833", "0.750", "1.000", "5", "0.600"]
    assert PROTOCOL in (rendered / "report.md").read_text()


def test_report_rounds_read_old_and_new_statistic_names(run: Path) -> None:
    arms = {a.name: a for a in gather(run).arms}
    for name in ("confidence_pl", "finepseudo"):  # finepseudo's selftrain.json has the old names only
        rounds = arms[name].rounds
        assert [r["cumulative_pl_count"] for r in rounds] == [3, 5]
        assert [r["round_pl_count"] for r in rounds] == [3, 2]  # old: from each round's pseudo.h5
        assert rounds[0]["round_pl_accuracy"] == pytest.approx(2 / 3)
        assert rounds[1]["round_pl_accuracy"] == pytest.approx(0.5)
        assert [r["round_candidates"] for r in rounds] == [6, 3]


def test_theta_sweep_matches_a_count_by_hand(run: Path) -> None:
    points = theta_sweep(np.array(ROUND1_P), np.array(ROUND1_TRUTH), ROUND1_SWEEP)
    for point, (theta, (accepted, right)) in zip(points, ROUND1_SWEEP.items(), strict=True):
        assert point["theta"] == theta and point["accepted_count"] == accepted
        if accepted:
            assert point["accepted_accuracy"] == pytest.approx(right / accepted)
        else:
            assert math.isnan(point["accepted_accuracy"])
    # The sweep of the report, read back from round_1/pseudo.h5, agrees; at the run's theta it is what the run accepted.
    sweep = next(s for a in gather(run).arms if a.name == "finepseudo" for s in a.sweeps if s.round == 1)
    by_theta = {p["theta"]: p for p in sweep.points}
    for theta, (accepted, right) in ROUND1_SWEEP.items():
        assert by_theta[theta]["accepted_count"] == accepted
        assert accepted == 0 or by_theta[theta]["accepted_accuracy"] == pytest.approx(right / accepted)
    assert by_theta[0.6]["accepted_count"] == sweep.attrs["accepted_count"] == 3


def test_theta_sweep_leaves_ineligible_clips_out() -> None:
    eligible = np.array([False, True, True, True, True, True])  # clip 0 set aside as novel
    (point,) = theta_sweep(np.array(ROUND1_P), np.array(ROUND1_TRUTH), [0.5], eligible)
    assert point["accepted_count"] == 3 and point["accepted_accuracy"] == pytest.approx(2 / 3)


def test_report_tables_the_theta_sweep(rendered: Path) -> None:
    rows = md_rows((rendered / "report.md").read_text())
    # round 1 at theta 0.5: 4 accepted, 3 right; round 2 at 0.6 (the run's theta): 2 accepted, 1 right
    assert rows["0.5"] == ["4 / 0.750", "2 / 0.500"]
    assert rows["0.6 (run)"] == ["3 / 0.667", "2 / 0.500"]
    assert rows["0.95"] == ["0 / -", "0 / -"]


def test_report_per_class_accuracy(rendered: Path) -> None:
    rows = md_rows((rendered / "report.md").read_text())
    # test clips, then supervised f_E, f_A, f_E + f_A, confidence_pl f_E, finepseudo f_E, f_A, f_E + f_A
    assert rows["forward"] == ["4", "0.500", "0.500", "0.750", "0.500", "0.750", "0.750", "1.000"]


def test_report_plots_are_valid_pngs(rendered: Path) -> None:
    from matplotlib.image import imread

    expected = ["rounds.png", "theta_sweep.png", "per_class.png"]
    expected += [
        f"confusion_{arm}_{head}.png"
        for arm in ("supervised", "finepseudo")
        for head in ("action", "alignability", "combined")
    ]
    expected.append("confusion_confidence_pl_action.png")
    markdown = (rendered / "report.md").read_text()
    for name in expected:
        path = rendered / name
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        height, width = imread(path).shape[:2]
        assert 300 <= width <= 4000 and 300 <= height <= 4000, (name, width, height)
        assert f"]({name})" in markdown  # the Markdown shows it beside the report
    html = (rendered / "report.html").read_text()
    assert html.count("data:image/png;base64,") == len(expected)  # one file: every image embedded
    assert "finepseudo" in html and "<table>" in html


def test_summary_json_is_the_report_table(run: Path, rendered: Path, cli: Cli) -> None:
    result = cli(["summary", run])
    assert result.code == 0, result.err
    assert "finepseudo" in result.out and "0.833" in result.out
    summary = json.loads((run / "summary.json").read_text())
    assert summary == json.loads((rendered / "report.json").read_text())["results"]
    assert list(summary) == ["supervised", "confidence_pl", "finepseudo"]
    assert summary["finepseudo"]["top1_combined"] == 1.0
    assert summary["finepseudo"]["rounds"][1]["cumulative_pl_count"] == 5


def test_missing_arms_are_reported_not_crashed(run: Path, tmp_path: Path, cli: Cli) -> None:
    partial = tmp_path / "partial"
    shutil.copytree(run, partial, ignore=shutil.ignore_patterns("report", "summary.json"))
    shutil.rmtree(partial / "eval_finepseudo")
    shutil.rmtree(partial / "st_finepseudo")
    (partial / "eval_confidence" / "metrics.json").unlink()  # an evaluation that did not finish
    result = cli(["report", partial, "--out-dir", tmp_path / "out"])
    assert result.code == 0, result.err
    assert "finepseudo: not run" in result.out
    text = (tmp_path / "out" / "report.md").read_text()
    assert "finepseudo: not run (eval_finepseudo/ and st_finepseudo/ absent)" in text
    assert "eval_confidence/metrics.json absent" in text
    rows = md_rows(text)
    assert rows["supervised"][0] == "0.500"
    assert rows["confidence_pl"] == ["-", "-", "-", "-", "-", "5", "0.600"]  # self-trained, not evaluated
    assert (tmp_path / "out" / "rounds.png").is_file()
    assert cli(["summary", partial]).code == 0


def test_report_of_one_eval_folder(run: Path, tmp_path: Path, cli: Cli) -> None:
    result = cli(["report", run / "eval_finepseudo", "--out-dir", tmp_path])
    assert result.code == 0, result.err
    rows = md_rows((tmp_path / "report.md").read_text())
    assert rows["eval_finepseudo"][:3] == ["0.833", "1.000", "0.833"]
    assert (tmp_path / "confusion_eval_finepseudo_combined.png").is_file()


def test_report_of_a_folder_without_results_is_one_error_line(tmp_path: Path, cli: Cli) -> None:
    result = cli(["report", tmp_path])
    assert result.code == 1
    result.error_line(str(tmp_path), "no results")


@pytest.mark.parametrize("classes", [2, 48, 150])
def test_confusion_png_stays_legible(classes: int, tmp_path: Path) -> None:
    from matplotlib.image import imread

    rng = np.random.default_rng(0)
    confusion = rng.integers(0, 20, (classes, classes)) + np.eye(classes, dtype=np.int64) * 30
    names = [f"Back+{i:02d}som+05Twis+FREE" for i in range(classes)]
    path = tmp_path / "confusion.png"
    save_confusion_png(confusion, names, path, "eval_finepseudo, combined: top-1 0.512\n" + PROTOCOL)
    height, width = imread(path).shape[:2]
    # 8-pt labels at 120 dpi need about 15 px a class, up to the 30-inch cap
    assert min(width, height) >= min(classes * 15, 3000) * 0.9 and max(width, height) <= 4500
