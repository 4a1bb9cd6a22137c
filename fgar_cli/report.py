"""`fgar report` and `fgar summary`: what a run folder of examples/compare.sh holds, as one page.

The run folder has an evaluation per arm (eval_supervised/, eval_confidence/, eval_finepseudo/:
metrics.json) and a self-training run per self-training arm (st_confidence/, st_finepseudo/:
selftrain.json, round_K/pseudo.h5). From them:

* the results table (top-1, top-5, mean class accuracy, f_A and combined top-1, pseudo-label count
  and accuracy per arm): `results_table`, the one source of both `fgar summary` and the report;
* the pseudo-labels of each round (count and accuracy, this round's and cumulative);
* the theta sweep: how many clips each pass would accept at each threshold theta, and how many of
  those are right (`theta_sweep`, from the scores and truth that pseudo.h5 keeps);
* per-class accuracy and the confusion matrices of every arm and head.

A partial run folder (an arm not run yet, an interrupted evaluation) is reported as such: each file
that is absent or unreadable becomes one line of `RunReport.missing`, never an exception. A single
stage's output folder (an eval, selftrain, openworld or pseudolabel folder) is a run of one arm.
Everything is read tolerantly across the rename of the pseudo-label statistics (`pl_count` ->
`accepted_count` / `cumulative_pl_count`, ...), so reports of older runs still work.
"""

from __future__ import annotations

import base64
import html
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fgar_cli.artifacts import atomic_write_json, atomic_write_text, read_h5
from fgar_cli.data.index import read_json
from fgar_cli.errors import FgarError
from fgar_cli.files import atomic_path, check_writable_folder
from fgar_cli.method.pseudolabels import PSEUDO_SCHEMA, PSEUDO_VERSION, pseudo_label_stats
from fgar_cli.metrics import pyplot, save_confusion_png, short_label

# The arms of examples/compare.sh: name -> (evaluation folder, self-training folder).
ARMS: dict[str, tuple[str, str | None]] = {
    "supervised": ("eval_supervised", None),
    "confidence_pl": ("eval_confidence", "st_confidence"),
    "finepseudo": ("eval_finepseudo", "st_finepseudo"),
}
HEADS = {"action": "f_E", "alignability": "f_A non-parametric", "combined": "f_E + f_A"}

# The results table: (column header, key of a `results_table` row). `fgar summary` prints the same.
# Short headers (E: f_E, A: f_A's non-parametric classifier) so that the table fits 80 columns.
TABLE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("E top-1", "top1"),
    ("E top-5", "top5"),
    ("E class acc", "mean_class_accuracy"),
    ("A top-1", "top1_alignability"),
    ("E+A top-1", "top1_combined"),
    ("PLs", "cumulative_pl_count"),
    ("PL acc", "cumulative_pl_accuracy"),
)

# Thresholds of the sweep: a fine grid for the plot, the usual values (and the run's own) in the table.
SWEEP_THETAS = tuple(round(0.01 * i, 2) for i in range(100))
TABLE_THETAS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)


# --------------------------------------------------------------------------- the theta sweep


def theta_sweep(
    probs: np.ndarray,
    truth: np.ndarray | None,
    thetas: Iterable[float] = SWEEP_THETAS,
    eligible: np.ndarray | None = None,
) -> list[dict[str, Any]]:
    """For each theta: how many clips the confidence rule `max p > theta` accepts (label argmax p),
    and the accuracy of those labels, counted as `method.pseudolabels.pseudo_label_stats` counts
    them (so the sweep at the run's theta is what the run reported). `eligible` leaves clips out
    that no theta could accept (set aside as novel, or unreadable)."""
    confidence, label = probs.max(1), probs.argmax(1)
    ok = np.ones(len(label), dtype=bool) if eligible is None else eligible
    points = []
    for theta in thetas:
        stats = pseudo_label_stats(label, ok & (confidence > theta), truth)
        points.append(
            {
                "theta": float(theta),
                "accepted_count": int(stats["accepted_count"]),
                "accepted_accuracy": float(stats["accepted_accuracy"]),
            }
        )
    return points


@dataclass
class PassSweep:
    """The theta sweep of one pseudo-labeling pass (one pseudo.h5)."""

    path: Path
    round: int
    source: str
    theta: float | None  # the threshold the run used
    key: str  # the distribution swept: p (the rule's), p_A or p_E
    attrs: dict[str, Any]
    points: list[dict[str, Any]]


def pseudo_file_sweeps(
    path: Path, thetas: Iterable[float] = SWEEP_THETAS, keys: Sequence[str] = ("p",)
) -> list[PassSweep]:
    """The theta sweep of each distribution in `keys` that pseudo.h5 holds (p_A is NaN without f_A:
    skipped). Raises FgarError for a file that is not a readable pseudo.h5."""
    data, attrs = read_h5(path, PSEUDO_SCHEMA, PSEUDO_VERSION, {"p": (2, "f"), "truth": (1, "i")})
    eligible = np.ones(len(data["truth"]), dtype=bool)
    if "novel" in data:
        eligible &= ~data["novel"].astype(bool)
    if "p_E" in data and data["p_E"].ndim == 2:
        eligible &= ~np.isnan(data["p_E"]).any(1)  # a clip that did not decode is never accepted
    theta = attrs.get("theta")
    grid = sorted({*map(float, thetas), *([float(theta)] if theta is not None else [])})
    sweeps = []
    for key in keys:
        probs = data.get(key)
        if probs is None or probs.ndim != 2 or np.isnan(probs).all():
            continue
        sweeps.append(
            PassSweep(
                path,
                int(attrs.get("round", 0)),
                str(attrs.get("source", "?")),
                None if theta is None else float(theta),
                key,
                attrs,
                theta_sweep(np.nan_to_num(probs, nan=0.0), data["truth"], grid, eligible),
            )
        )
    return sweeps


# --------------------------------------------------------------------------- what a run folder holds


@dataclass
class Arm:
    """Where one arm's files are; None: the arm has no such folder (supervised has no self-training)."""

    name: str
    eval_dir: Path | None
    st_dir: Path | None
    pseudo_files: list[Path] = field(default_factory=list)


@dataclass
class ArmData:
    arm: Arm
    metrics: dict[str, Any] | None  # eval metrics.json
    selftrain: dict[str, Any] | None  # selftrain.json
    rounds: list[dict[str, Any]]  # per round, with the new statistic names
    sweeps: list[PassSweep]

    @property
    def name(self) -> str:
        return self.arm.name


@dataclass
class RunReport:
    run: Path
    arms: list[ArmData]
    missing: list[str]  # one line per absent or unreadable file

    def table(self) -> dict[str, dict[str, Any]]:
        return results_table(self.arms)


def find_arms(run: Path) -> tuple[list[Arm], list[str]]:
    """The arms in `run` and a line for each expected file that is absent."""
    if not run.is_dir():
        raise FgarError(f"{run}: {'is a file, not a folder' if run.exists() else 'folder not found'}")
    single = _single_stage_arm(run)
    if single is not None:
        return [single], []
    arms, missing = [], []
    for name, (eval_name, st_name) in ARMS.items():
        eval_dir, st_dir = run / eval_name, run / st_name if st_name else None
        if not eval_dir.is_dir() and (st_dir is None or not st_dir.is_dir()):
            missing.append(f"{name}: not run ({eval_name}/{f' and {st_name}/' if st_name else ''} absent)")
            continue
        arms.append(Arm(name, eval_dir if eval_dir.is_dir() else None, st_dir if st_dir and st_dir.is_dir() else None))
        if not eval_dir.is_dir():
            missing.append(f"{name}: not evaluated yet ({eval_name}/ absent)")
    known = {folder for pair in ARMS.values() for folder in pair if folder}
    for eval_dir in sorted(run.glob("eval_*")):  # an arm of one's own (eval_verify/ + st_verify/)
        if eval_dir.is_dir() and eval_dir.name not in known:
            st_dir = run / f"st_{eval_dir.name.removeprefix('eval_')}"
            arms.append(Arm(eval_dir.name.removeprefix("eval_"), eval_dir, st_dir if st_dir.is_dir() else None))
    return arms, missing


def _single_stage_arm(folder: Path) -> Arm | None:
    """One stage's output folder as an arm named after it; None for a run folder."""
    if (folder / "selftrain.json").is_file():  # selftrain, or openworld (its evaluation in eval/)
        return Arm(folder.name, folder / "eval" if (folder / "eval").is_dir() else None, folder)
    if (folder / "metrics.json").is_file() or (folder / "predictions.h5").is_file():
        return Arm(folder.name, folder, None)
    if (folder / "pseudo.h5").is_file():
        return Arm(folder.name, None, None, [folder / "pseudo.h5"])
    return None


def gather(run: Path, thetas: Iterable[float] = SWEEP_THETAS) -> RunReport:
    """Everything the report shows, read from `run`. Raises FgarError only when nothing is there."""
    arms, missing = find_arms(run)
    gathered = [_gather_arm(arm, tuple(thetas), missing) for arm in arms]
    if not any(a.metrics or a.selftrain or a.sweeps for a in gathered):
        raise FgarError(
            f"{run}: no results: expected a run folder of examples/compare.sh (eval_*/, st_*/) or one "
            "stage's output folder (metrics.json, selftrain.json or pseudo.h5)"
        )
    return RunReport(run, gathered, missing)


def _gather_arm(arm: Arm, thetas: tuple[float, ...], missing: list[str]) -> ArmData:
    metrics = _read_optional(arm.eval_dir, "metrics.json", arm.name, missing) if arm.eval_dir else None
    if metrics is not None and "action" not in metrics:
        missing.append(f"{arm.name}: {arm.eval_dir / 'metrics.json'} holds no f_E results")
        metrics = None
    selftrain = _read_optional(arm.st_dir, "selftrain.json", arm.name, missing) if arm.st_dir else None
    files = arm.pseudo_files or (_round_files(arm.st_dir) if arm.st_dir else [])
    sweeps: list[PassSweep] = []
    for path in files:
        try:
            sweeps += pseudo_file_sweeps(path, thetas)
        except FgarError as exc:
            missing.append(f"{arm.name}: {exc}")
    attrs = {s.round: s.attrs for s in sweeps}
    return ArmData(arm, metrics, selftrain, normalise_rounds(selftrain, attrs) if selftrain else [], sweeps)


def _read_optional(folder: Path, name: str, arm: str, missing: list[str]) -> dict[str, Any] | None:
    path = folder / name
    if not path.is_file():
        missing.append(f"{arm}: {path} absent (the stage did not finish)")
        return None
    try:
        return read_json(path)
    except FgarError as exc:
        missing.append(f"{arm}: {exc}")
        return None


def _round_files(st_dir: Path) -> list[Path]:
    """round_K/pseudo.h5 in round order (round_10 after round_9)."""
    found = [
        (int(m.group(1)), p) for p in st_dir.glob("round_*/pseudo.h5") if (m := re.search(r"(\d+)$", p.parent.name))
    ]
    return [p for _, p in sorted(found)]


def _first(mapping: dict[str, Any], *keys: str) -> Any:
    """The value of the first key present: new statistic names first, then the old ones."""
    for key in keys:
        if key in mapping and mapping[key] is not None:
            return mapping[key]
    return None


def normalise_rounds(selftrain: dict[str, Any], pass_attrs: dict[int, dict[str, Any]]) -> list[dict[str, Any]]:
    """selftrain.json's rounds with the new names. An older file has only cumulative figures: a
    round's own come from its pseudo.h5, else from the growth of the cumulative count."""
    rounds, previous = [], 0
    for entry in selftrain.get("rounds", []):
        r = int(entry.get("round", len(rounds) + 1))
        attrs = pass_attrs.get(r, {})
        cumulative = _first(entry, "cumulative_pl_count", "pl_count")
        count = _first(entry, "round_pl_count")
        if count is None:
            count = _first(attrs, "accepted_count", "pl_count")
        if count is None and cumulative is not None:
            count = cumulative - previous
        accuracy = _first(entry, "round_pl_accuracy")
        if accuracy is None:
            accuracy = _first(attrs, "accepted_accuracy", "pl_accuracy")
        candidates = _first(entry, "round_candidates")
        if candidates is None:
            candidates = _first(attrs, "scored_count")
        rounds.append(
            {
                "round": r,
                "round_pl_count": _int_or_none(count),
                "round_pl_accuracy": _float_or_none(accuracy),
                "round_candidates": _int_or_none(candidates),
                "cumulative_pl_count": _int_or_none(cumulative),
                "cumulative_pl_accuracy": _float_or_none(_first(entry, "cumulative_pl_accuracy", "pl_accuracy")),
                "unlabeled": _int_or_none(entry.get("unlabeled")),
            }
        )
        previous = cumulative if cumulative is not None else previous
    return rounds


def _int_or_none(x: Any) -> int | None:
    return None if x is None else int(x)


def _float_or_none(x: Any) -> float | None:
    return None if x is None else float(x)


# --------------------------------------------------------------------------- the results table


def results_row(metrics: dict[str, Any] | None, selftrain: dict[str, Any] | None, rounds: list[dict[str, Any]]) -> dict:
    """One arm's row: what its evaluation and its self-training report (keys absent where not run)."""
    row: dict[str, Any] = {}
    if metrics is not None:
        row |= {
            "top1": metrics["action"]["top1"],
            "top5": metrics["action"]["top5"],
            "mean_class_accuracy": metrics["action"]["mean_class_accuracy"],
            "protocol": metrics.get("protocol"),
        }
        if "combined" in metrics:
            row["top1_alignability"] = metrics["alignability"]["top1"]
            row["top1_combined"] = metrics["combined"]["top1"]
    if selftrain is not None:
        row["cumulative_pl_count"] = _first(selftrain, "cumulative_pl_count", "pl_count")
        row["cumulative_pl_accuracy"] = _first(selftrain, "cumulative_pl_accuracy", "pl_accuracy")
        row["rounds"] = rounds
    return row


def results_table(arms: Sequence[ArmData]) -> dict[str, dict[str, Any]]:
    """arm -> row, for the arms that have results: summary.json and the report's first table."""
    return {a.name: results_row(a.metrics, a.selftrain, a.rounds) for a in arms if a.metrics or a.selftrain}


def fmt(x: Any) -> str:
    """A table cell: floats to 3 decimals; '-' for absent, and for NaN (nothing was accepted)."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if isinstance(x, float):
        return f"{x:.3f}"
    return str(x)


def table_cells(row: dict[str, Any]) -> list[str]:
    return [fmt(row.get(key)) for _, key in TABLE_COLUMNS]


def protocols(table: dict[str, dict[str, Any]]) -> str:
    """The test protocol, once when every arm shares it (as compare.sh's arms do)."""
    found = {row["protocol"] for row in table.values() if row.get("protocol")}
    if len(found) <= 1:
        return next(iter(found), "")
    return "; ".join(f"{arm}: {row['protocol']}" for arm, row in table.items() if row.get("protocol"))


# --------------------------------------------------------------------------- plots


def _save(fig: Any, path: Path) -> None:
    plt = pyplot()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png", bbox_inches="tight")
    plt.close(fig)


def plot_rounds(arms: Sequence[ArmData], path: Path) -> bool:
    """Pseudo-label count and accuracy per round (this round's dashed, cumulative solid) of each
    self-training arm. False when no arm self-trained."""
    st = [a for a in arms if a.rounds]
    if not st:
        return False
    plt = pyplot()
    fig, (ax_n, ax_acc) = plt.subplots(1, 2, figsize=(11, 4.2))
    for i, a in enumerate(st):
        r = [e["round"] for e in a.rounds]

        def series(key: str, rounds: list[dict[str, Any]] = a.rounds) -> list[float]:
            return [np.nan if e[key] is None else e[key] for e in rounds]

        colour = f"C{i}"
        ax_n.plot(r, series("cumulative_pl_count"), "-o", color=colour, label=f"{a.name}, cumulative")
        ax_n.plot(r, series("round_pl_count"), "--s", color=colour, alpha=0.8, label=f"{a.name}, this round")
        ax_acc.plot(r, series("cumulative_pl_accuracy"), "-o", color=colour, label=f"{a.name}, cumulative")
        ax_acc.plot(r, series("round_pl_accuracy"), "--s", color=colour, alpha=0.8, label=f"{a.name}, this round")
    unlabeled = next((e["unlabeled"] for a in st for e in a.rounds if e["unlabeled"]), None)
    if unlabeled:  # the ceiling: every unlabeled clip pseudo-labeled
        ax_n.axhline(unlabeled, color="grey", linestyle=":", label=f"unlabeled clips ({unlabeled})")
    rounds = sorted({e["round"] for a in st for e in a.rounds})
    for ax, ylabel, title in (
        (ax_n, "pseudo-labels", "pseudo-labels accepted"),
        (ax_acc, "accuracy (where truth is known)", "accuracy of the pseudo-labels"),
    ):
        ax.set_xticks(rounds)
        ax.set_xlabel("self-training round")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    ax_n.set_ylim(bottom=0)
    ax_acc.set_ylim(0, 1.02)
    _save(fig, path)
    return True


def plot_sweeps(arms: Sequence[ArmData], path: Path) -> bool:
    """Accepted count and accuracy against theta: a row per arm, a line per round, the run's theta
    dashed. False when no pseudo.h5 was found."""
    with_sweeps = [a for a in arms if a.sweeps]
    if not with_sweeps:
        return False
    plt = pyplot()
    fig, axes = plt.subplots(len(with_sweeps), 2, figsize=(11, 3.6 * len(with_sweeps)), squeeze=False)
    for (ax_n, ax_acc), a in zip(axes, with_sweeps, strict=True):
        for s in a.sweeps:
            theta = [p["theta"] for p in s.points]
            # steps: the count is constant between two clips' confidences, and drops at each
            ax_n.step(theta, [p["accepted_count"] for p in s.points], where="post", label=f"round {s.round}")
            ax_acc.step(theta, [p["accepted_accuracy"] for p in s.points], where="post", label=f"round {s.round}")
        run_theta = a.sweeps[0].theta
        for ax, ylabel in ((ax_n, "clips accepted"), (ax_acc, "accuracy of the accepted")):
            if run_theta is not None:
                ax.axvline(run_theta, color="grey", linestyle="--", label=f"run's theta {run_theta:g}")
            ax.set_xlim(0, 1)
            ax.set_xlabel("theta (accept when max p > theta)")
            ax.set_ylabel(ylabel)
            ax.set_title(f"{a.name} (source {a.sweeps[0].source}): {ylabel}")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        ax_n.set_ylim(bottom=0)
        ax_acc.set_ylim(0, 1.02)
    fig.tight_layout()
    _save(fig, path)
    return True


def plot_per_class(arms: Sequence[ArmData], class_names: list[str], path: Path, head: str = "action") -> bool:
    """Per-class top-1 of `head` as horizontal grouped bars (a bar per arm), tall enough for one
    8-pt label per class. False when no arm was evaluated."""
    evaluated = [a for a in arms if a.metrics and head in a.metrics]
    if not evaluated or not class_names:
        return False
    plt = pyplot()
    C, k = len(class_names), len(evaluated)
    bar = 0.8 / k
    fig, ax = plt.subplots(figsize=(8, max(2.5, C * (0.13 * k + 0.07) + 0.8)))
    y = np.arange(C)
    for i, a in enumerate(evaluated):
        per_class = a.metrics[head]["per_class_accuracy"]
        values = [np.nan if per_class.get(c) is None else per_class[c] for c in class_names]
        ax.barh(y - 0.4 + bar * (i + 0.5), values, height=bar, color=f"C{i}", label=a.name)
    ax.set_yticks(y, [short_label(c) for c in class_names], fontsize=8)
    ax.set_ylim(C - 0.5, -0.5)  # first class on top, as in the table
    ax.tick_params(axis="x", top=True, labeltop=C > 20)  # a tall figure reads its scale at both ends
    ax.set_xlim(0, 1)
    ax.set_xlabel(f"top-1 of {HEADS.get(head, head)} on the test clips of the class")
    ax.set_title(f"per-class accuracy, {HEADS.get(head, head)}")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside: never over a bar
    _save(fig, path)
    return True


# --------------------------------------------------------------------------- the document


@dataclass
class Heading:
    level: int
    text: str


@dataclass
class Para:
    text: str


@dataclass
class Bullets:
    items: list[str]


@dataclass
class TableBlock:
    header: list[str]
    rows: list[list[str]]


@dataclass
class Image:
    file: str  # beside the report
    alt: str


Block = Heading | Para | Bullets | TableBlock | Image


def build_blocks(report: RunReport, out: Path) -> list[Block]:
    """The report as blocks, writing its plots into `out` on the way (Markdown and HTML render the
    same blocks, so the two never disagree)."""
    table = report.table()
    blocks: list[Block] = [Heading(1, f"fgar report: {report.run}")]
    if report.missing:
        blocks += [Para("Not in this run folder (the report shows the rest):"), Bullets(report.missing)]
    blocks += _results_blocks(table)
    blocks += _rounds_blocks(report.arms, out)
    blocks += _sweep_blocks(report.arms, out)
    blocks += _per_class_blocks(report.arms, out)
    blocks += _confusion_blocks(report.arms, out)
    return blocks


def _results_blocks(table: dict[str, dict[str, Any]]) -> list[Block]:
    if not table:
        return []
    blocks: list[Block] = [
        Heading(2, "Results"),
        TableBlock(["arm", *(h for h, _ in TABLE_COLUMNS)], [[arm, *table_cells(row)] for arm, row in table.items()]),
    ]
    if protocol := protocols(table):
        blocks.append(
            Para(
                f"Test protocol: {protocol}. E: f_E; A: f_A's non-parametric classifier; E+A: the two "
                "averaged. PLs: pseudo-labels accepted over all rounds; PL acc: their accuracy against the "
                "ground truth of the unlabeled split. '-': not run, or none accepted."
            )
        )
    return blocks


def _rounds_blocks(arms: Sequence[ArmData], out: Path) -> list[Block]:
    st = [a for a in arms if a.rounds]
    if not st:
        return []
    blocks: list[Block] = [Heading(2, "Pseudo-labels per round")]
    if plot_rounds(st, out / "rounds.png"):
        blocks.append(Image("rounds.png", "pseudo-label count and accuracy per round"))
    header = ["arm", "round", "scored", "accepted", "accuracy", "cumulative", "cumulative accuracy", "unlabeled"]
    keys = (
        "round_candidates",
        "round_pl_count",
        "round_pl_accuracy",
        "cumulative_pl_count",
        "cumulative_pl_accuracy",
        "unlabeled",
    )
    rows = [[a.name, str(e["round"]), *(fmt(e[k]) for k in keys)] for a in st for e in a.rounds]
    return [*blocks, TableBlock(header, rows)]


def _sweep_blocks(arms: Sequence[ArmData], out: Path) -> list[Block]:
    with_sweeps = [a for a in arms if a.sweeps]
    if not with_sweeps:
        return []
    blocks: list[Block] = [
        Heading(2, "Theta sweep"),
        Para(
            "What each pass would accept at a threshold theta (max p > theta, p the distribution of the "
            "pass's rule), and the accuracy of those labels; each round scores only the clips not yet "
            "accepted. Computed from the scores and truth in round_K/pseudo.h5."
        ),
    ]
    if plot_sweeps(with_sweeps, out / "theta_sweep.png"):
        blocks.append(Image("theta_sweep.png", "accepted count and accuracy against theta"))
    for a in with_sweeps:
        run_theta = a.sweeps[0].theta
        thetas = sorted({*TABLE_THETAS, *([run_theta] if run_theta is not None else [])})
        header = ["theta", *(f"round {s.round}: accepted / accuracy" for s in a.sweeps)]
        rows = []
        for theta in thetas:
            label = f"{theta:g}" + (" (run)" if run_theta is not None and math.isclose(theta, run_theta) else "")
            cells = []
            for s in a.sweeps:
                point = next((p for p in s.points if math.isclose(p["theta"], theta)), None)
                cells.append("-" if point is None else f"{point['accepted_count']} / {fmt(point['accepted_accuracy'])}")
            rows.append([label, *cells])
        blocks += [Heading(3, f"{a.name} (source {a.sweeps[0].source})"), TableBlock(header, rows)]
    return blocks


def _class_names(arms: Sequence[ArmData]) -> list[str]:
    for a in arms:
        if a.metrics:
            return list(a.metrics["action"]["per_class_accuracy"])
    return []


def _per_class_blocks(arms: Sequence[ArmData], out: Path) -> list[Block]:
    names = _class_names(arms)
    evaluated = [a for a in arms if a.metrics]
    if not names:
        return []
    blocks: list[Block] = [Heading(2, "Per-class accuracy")]
    if plot_per_class(evaluated, names, out / "per_class.png"):
        blocks.append(Image("per_class.png", "per-class accuracy of f_E per arm"))
    columns = [(a, head) for a in evaluated for head in HEADS if head in a.metrics]
    support = np.array(evaluated[0].metrics["action"]["confusion"]).sum(1)
    header = ["class", "test clips", *(f"{a.name} {HEADS[h]}" for a, h in columns)]
    rows = [
        [name, str(int(n)), *(fmt(a.metrics[h]["per_class_accuracy"].get(name)) for a, h in columns)]
        for name, n in zip(names, support, strict=True)
    ]
    return [*blocks, TableBlock(header, rows)]


def _confusion_blocks(arms: Sequence[ArmData], out: Path) -> list[Block]:
    blocks: list[Block] = []
    for a in arms:
        for head in HEADS:
            if not a.metrics or head not in a.metrics:
                continue
            m = a.metrics[head]
            names = list(m["per_class_accuracy"])
            file = f"confusion_{_slug(a.name)}_{head}.png"
            title = f"{a.name}, {head} ({HEADS[head]}): top-1 {fmt(m['top1'])}"
            if a.metrics.get("protocol"):
                title += f"\n{a.metrics['protocol']}"
            save_confusion_png(np.array(m["confusion"]), names, out / file, title)
            blocks.append(Image(file, f"confusion matrix of {a.name}, {head}"))
    return [Heading(2, "Confusion matrices"), *blocks] if blocks else []


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def render_markdown(blocks: Sequence[Block]) -> str:
    lines: list[str] = []
    for b in blocks:
        if isinstance(b, Heading):
            lines += [f"{'#' * b.level} {b.text}", ""]
        elif isinstance(b, Para):
            lines += [b.text, ""]
        elif isinstance(b, Bullets):
            lines += [*(f"* {item}" for item in b.items), ""]
        elif isinstance(b, TableBlock):
            lines += [_md_row(b.header), _md_row(["---"] * len(b.header)), *map(_md_row, b.rows), ""]
        else:
            lines += [f"![{b.alt}]({b.file})", ""]
    return "\n".join(lines)


def _md_row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


_CSS = (
    "body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}"
    "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
    "td:first-child,th:first-child{text-align:left}th{background:#f2f2f2}img{max-width:100%;display:block;margin:1em 0}"
)


def render_html(blocks: Sequence[Block], folder: Path) -> str:
    """One self-contained page: the images of `folder` embedded as base64 PNGs."""
    e = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html><head><meta charset="utf-8">',
        f"<title>{e(_title(blocks))}</title>",
        f"<style>{_CSS}</style></head><body>",
    ]
    for b in blocks:
        if isinstance(b, Heading):
            parts.append(f"<h{b.level}>{e(b.text)}</h{b.level}>")
        elif isinstance(b, Para):
            parts.append(f"<p>{e(b.text)}</p>")
        elif isinstance(b, Bullets):
            parts.append("<ul>" + "".join(f"<li>{e(i)}</li>" for i in b.items) + "</ul>")
        elif isinstance(b, TableBlock):
            head = "".join(f"<th>{e(c)}</th>" for c in b.header)
            body = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in b.rows)
            parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        else:
            data = base64.b64encode((folder / b.file).read_bytes()).decode("ascii")
            parts.append(f'<img alt="{e(b.alt)}" src="data:image/png;base64,{data}">')
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _title(blocks: Sequence[Block]) -> str:
    return next((b.text for b in blocks if isinstance(b, Heading)), "fgar report")


@dataclass
class ReportFiles:
    markdown: Path
    html: Path
    data: Path  # report.json: the table, the rounds and the sweeps, for scripts
    images: list[Path]
    missing: list[str]


def write_report(run: Path, out: Path | None = None) -> ReportFiles:
    """report.md (images beside it), report.html (one file) and report.json into `out` (default RUN/report)."""
    report = gather(run)
    folder = check_writable_folder(out if out is not None else run / "report")
    blocks = build_blocks(report, folder)
    atomic_write_text(folder / "report.md", render_markdown(blocks))
    atomic_write_text(folder / "report.html", render_html(blocks, folder))
    atomic_write_json(folder / "report.json", report_data(report))
    images = [folder / b.file for b in blocks if isinstance(b, Image)]
    return ReportFiles(folder / "report.md", folder / "report.html", folder / "report.json", images, report.missing)


def report_data(report: RunReport) -> dict[str, Any]:
    return {
        "run": str(report.run),
        "results": report.table(),
        "missing": report.missing,
        "theta_sweeps": {
            a.name: [
                {
                    "file": str(s.path),
                    "round": s.round,
                    "source": s.source,
                    "theta": s.theta,
                    "key": s.key,
                    "points": s.points,
                }
                for s in a.sweeps
            ]
            for a in report.arms
            if a.sweeps
        },
    }
