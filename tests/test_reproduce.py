"""The paper-table reproductions (fgar_cli/reproduce): their statistics against hand computations,
the new pseudo-label rules and controls they compare (UPS, the compute-matched and oracle arms, the
Table 5 ablation options), and every `make` target in its QUICK form, resumed."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from fgar_cli.checkpoints import load_checkpoint
from fgar_cli.config import EvaluateConfig, PseudoLabeling, RunConfig, SelfTrainConfig, Source
from fgar_cli.data.index import NO_TRUTH, load_index
from fgar_cli.errors import FgarError
from fgar_cli.inference import _mc_dropout, dropout_masks
from fgar_cli.losses import alignability_loss
from fgar_cli.method.pseudolabels import select_pseudo_labels, with_true_labels
from fgar_cli.models import ScoreHead
from fgar_cli.reproduce import resolve_names
from fgar_cli.reproduce.plan import QUICK, Scale
from fgar_cli.reproduce.render import header, strict_json
from fgar_cli.reproduce.stats import average_precision, paired_bootstrap, t_interval, t_quantile_975
from fgar_cli.reproduce.tables import TableResult, verdict
from fgar_cli.reproduce.workspace import Workspace

from helpers import encoders, fgar

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the environment running these tests: make and fgar use it too

# --------------------------------------------------------------------------- statistics


def test_t_interval_matches_a_hand_computation() -> None:
    # differences 0.01, 0.03, 0.05: mean 0.03, sd 0.02, se 0.02 / sqrt(3), t_{0.975, 2} = 4.303
    interval = t_interval([0.01, 0.03, 0.05])
    half = 4.303 * 0.02 / math.sqrt(3)
    assert interval.mean == pytest.approx(0.03)
    assert (interval.low, interval.high) == pytest.approx((0.03 - half, 0.03 + half))
    assert not interval.excludes_zero  # 0.03 - 0.0497 < 0
    assert t_quantile_975(1) == 12.706 and t_quantile_975(200) == 1.96
    single = t_interval([0.2])
    assert single.mean == 0.2 and math.isnan(single.low) and math.isnan(single.high)


def test_paired_bootstrap_interval_brackets_the_difference_and_shrinks_with_agreement() -> None:
    rng = np.random.default_rng(0)
    baseline = rng.random(1000) < 0.3
    better = baseline | (rng.random(1000) < 0.1)  # the baseline's right answers and about 7% more
    interval = paired_bootstrap(better, baseline, reps=500, seed=1)
    assert interval.mean == pytest.approx(better.mean() - baseline.mean())
    assert interval.low < interval.mean < interval.high and interval.low > 0
    same = paired_bootstrap(baseline, baseline, reps=200)
    assert (same.mean, same.low, same.high) == (0.0, 0.0, 0.0)  # paired: identical arms never differ
    with pytest.raises(ValueError):
        paired_bootstrap(baseline, baseline[:10])


def test_average_precision_by_hand() -> None:
    # ranked: +, -, +, -: precision at the two positives 1/1 and 2/3
    assert average_precision(np.array([0.9, 0.8, 0.7, 0.6]), np.array([1, 0, 1, 0])) == pytest.approx((1 + 2 / 3) / 2)
    assert average_precision(np.array([3.0, 2.0, 1.0]), np.array([1, 1, 0])) == pytest.approx(1.0)
    # a tie between a positive and a negative counts as one threshold: precision 1/2 there
    assert average_precision(np.array([1.0, 1.0]), np.array([1, 0])) == pytest.approx(0.5)
    assert math.isnan(average_precision(np.array([1.0]), np.array([0])))


def test_verdict_reads_the_interval_and_the_claimed_size() -> None:
    assert verdict(0.05, 0.01, 0.09) == "holds"
    assert verdict(0.02, 0.01, 0.03, claimed=0.045).startswith("holds in sign, smaller")
    assert verdict(-0.05, -0.09, -0.01) == "reversed"
    assert verdict(0.01, -0.02, 0.04).startswith("not shown")
    assert verdict(0.01, math.nan, math.nan).startswith("undecided")


# --------------------------------------------------------------------------- the new rules


def test_uncertainty_rule_takes_the_mc_mean_and_rejects_spread() -> None:
    # clip 0: passes agree (class 1, 0.8); clip 1: mean 0.8 for class 0 but the passes disagree
    samples = torch.tensor(
        [
            [[0.2, 0.8], [0.2, 0.8], [0.2, 0.8]],
            [[0.5, 0.5], [1.0, 0.0], [0.9, 0.1]],
        ]
    )
    p_E = torch.tensor([[0.5, 0.5], [0.5, 0.5]])  # without dropout; UPS decides on the passes
    rule = PseudoLabeling(source=Source.UNCERTAINTY, theta=0.7, uncertainty_threshold=0.05)
    selection = select_pseudo_labels(p_E, None, None, rule, p_E_samples=samples)
    assert selection.label.tolist() == [1, 0]
    assert selection.confidence.tolist() == pytest.approx([0.8, 0.8])
    assert selection.uncertainty.tolist() == pytest.approx([0.0, float(torch.tensor([0.5, 1.0, 0.9]).std())])
    assert selection.accepted.tolist() == [True, False]
    with pytest.raises(FgarError, match="MC-dropout"):
        select_pseudo_labels(p_E, None, None, rule)


def test_mc_dropout_passes_are_seeded_and_average_to_the_deterministic_head() -> None:
    torch.manual_seed(0)
    head = torch.nn.Module()
    head.fc = torch.nn.Linear(6, 3)
    head.dropout = torch.nn.Dropout(0.5)
    features = torch.randn(4, 6)
    head.features = lambda x: x  # the trunk: identity on these "clips"
    device = torch.device("cpu")
    clips = [10, 11, 12, 13]  # the clips' places in their dataset
    probs, samples = _mc_dropout(head, features, device, dropout_masks(clips, 5, 1, 6, seed=3))
    again = _mc_dropout(head, features, device, dropout_masks(clips, 5, 1, 6, seed=3))[1]
    assert samples.shape == (4, 5, 3) and torch.equal(samples, again)
    assert torch.allclose(probs, head.fc(features).softmax(-1))
    assert not torch.allclose(samples[:, 0], samples[:, 1])  # the masks differ between passes
    # the draws are uniform on [0, 1): a mask keeps each feature with probability keep = 0.5
    many = dropout_masks(clips, 4000, 1, 6, seed=3)
    assert 0 <= float(many.min()) and float(many.max()) < 1
    assert abs(float((many < 0.5).float().mean()) - 0.5) < 0.01  # 96,000 draws: std 0.0016
    head.dropout = torch.nn.Dropout(0.0)
    _, still = _mc_dropout(head, features, device, dropout_masks(clips, 3, 1, 6, seed=3))
    assert torch.allclose(still, probs[:, None].expand(4, 3, 3))


def test_none_accepts_nothing_and_the_oracle_takes_true_labels() -> None:
    p = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.95, 0.05]])
    none = select_pseudo_labels(p, None, None, PseudoLabeling(source=Source.NONE, theta=0.5))
    assert not none.accepted.any()
    selection = select_pseudo_labels(p, None, None, PseudoLabeling(source=Source.ACTION, theta=0.5))
    truth = np.array([1, 1, -1])  # clip 0 mislabeled, clip 2 of an unknown class
    oracle = with_true_labels(selection, truth, "split.json")
    assert oracle.label.tolist()[:2] == [1, 1]
    assert oracle.accepted.tolist() == [True, True, False]
    with pytest.raises(FgarError, match="split.json: pseudo_labeling.oracle needs"):
        with_true_labels(selection, np.array([0, NO_TRUTH, 1]), "split.json")


def test_triplet_weight_drops_the_triplet_term() -> None:
    torch.manual_seed(0)
    e = torch.randn(8, 5, 6)
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    head = ScoreHead()
    head.calibrated.fill_(True)  # the same line for both losses
    with torch.no_grad():
        full = alignability_loss(e, labels, head, gamma=0.1, margin=0.5, omega=0.3)
        no_triplet = alignability_loss(e, labels, head, gamma=0.1, margin=0.5, omega=0.3, triplet_weight=0.0)
    assert float(full["triplet"]) > 0
    assert float(no_triplet["loss"]) == pytest.approx(0.3 * float(no_triplet["score"]))
    assert float(full["loss"]) == pytest.approx(float(full["triplet"]) + 0.3 * float(full["score"]))


# --------------------------------------------------------------------------- the controls as stages


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["state_dict"]


def test_compute_matched_control_trains_both_encoders_without_pseudo_labels(tiny_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "matched"
    args = ["selftrain", *encoders(tiny_run), "--source", "none", "--rounds", "2", "--epochs", "1", "--out-dir", out]
    assert fgar(*args) == 0
    summary = json.loads((out / "selftrain.json").read_text())
    assert summary["cumulative_pl_count"] == 0 and [r["round_pl_count"] for r in summary["rounds"]] == [0, 0]
    assert not (out / "round_1" / "pseudo.h5").exists()  # nothing is scored
    before, after = _weights(tiny_run / "fit" / "A.pt"), _weights(out / "A.pt")
    assert any(not torch.equal(before[k], after[k]) for k in before)  # f_A trained too, on D_l alone
    assert (out / "round_2" / "E.pt").exists()


def test_alignability_epochs_zero_keeps_f_A_and_uncertainty_runs(tiny_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "no_metric"
    options = ["--rounds", "1", "--epochs", "1", "--theta", "0.0", "--set", "alignability_epochs=0"]
    assert fgar("selftrain", *encoders(tiny_run), *options, "--out-dir", out) == 0
    before, after = _weights(tiny_run / "fit" / "A.pt"), _weights(out / "A.pt")
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not (out / "round_1" / "A.pt").exists()

    ups = tmp_path / "ups"
    rule = ["--source", "uncertainty", "--set", "pseudo_labeling.uncertainty_threshold=1.0"]
    assert fgar("selftrain", "--ckpt-e", tiny_run / "fit" / "E.pt", *rule, *options, "--out-dir", ups) == 0
    with h5py.File(ups / "round_1" / "pseudo.h5") as f:
        spread, accepted = f["uncertainty"][:], f["accepted"][:]
        assert f.attrs["source"] == "uncertainty"
    assert np.isfinite(spread).all() and (spread >= 0).all()
    assert accepted.all()  # theta 0 and a threshold above any std: every readable clip


def test_fraction_zero_split_labels_nothing_and_fit_labeled_refuses_it(tiny_run: Path, tmp_path: Path, cli) -> None:
    split = tmp_path / "pretrain_split.json"
    result = cli(["data", "split", "--index", tiny_run / "index.json", "--fraction", "0", "--out", split])
    assert result.code == 0
    data = json.loads(split.read_text())
    train = json.loads((tiny_run / "split.json").read_text())
    assert data["labeled"] == [] and sorted(data["unlabeled"]) == sorted(train["labeled"] + train["unlabeled"])
    result = cli(["fit-labeled", "--index", tiny_run / "index.json", "--split", split, "--out-dir", tmp_path / "fit"])
    assert result.code == 1
    result.error_line("labeled split is empty", "--fraction 0")


# --------------------------------------------------------------------------- the tables


def test_header_marks_development_seeds_and_quick_runs() -> None:
    result = TableResult("table1", "Table 1", [])
    assert "not a result" in "\n".join(header(result, Scale(synth_seeds=[1, 11])))
    assert "not a result" not in "\n".join(header(result, Scale()))
    assert "QUICK form" in "\n".join(header(result, QUICK))
    assert resolve_names(["tables"]) == ["table1", "table2", "table6", "table5", "table4", "fig1c"]
    with pytest.raises(FgarError, match="unknown table 'table9'"):
        resolve_names(["table9"])


def test_bad_seed_list_is_one_error_line(cli) -> None:
    cli(["reproduce", "table1", "--quick", "--synth-seeds", "1,x"]).error_line("--synth-seeds", "whole numbers")


@pytest.fixture(scope="module")
def quick_tables(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`make tables QUICK=1 OUT=...`: every target's QUICK form, through the Makefile."""
    out = tmp_path_factory.mktemp("reproductions")
    installed = out / "installed"  # newer than pyproject.toml: make's setup step has nothing to do
    installed.touch()
    done = subprocess.run(
        ["make", "-s", "tables", "QUICK=1", f"OUT={out}", f"BIN={BIN}", f"STAMP={installed}"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (out / "make.log").write_text(done.stdout)
    return out


def test_the_frame_cache_holds_every_dataset_of_a_reproduction(tmp_path: Path) -> None:
    """Steps cycle over the datasets; a cache smaller than all of them would evict each in turn."""
    scale = Scale(config=str(REPO / "examples" / "demo.yaml"))
    workspace = Workspace(tmp_path / "work", scale)
    for model, section in ((EvaluateConfig, "evaluate"), (SelfTrainConfig, "selftrain")):
        cfg = workspace._config(model, section, {})
        assert cfg.run.frame_cache_gb * 2**30 >= scale.decoded_bytes(64) > RunConfig().frame_cache_gb * 2**30
    small = Scale(config=str(REPO / "examples" / "demo.yaml"), synth_seeds=[11], classes=4)
    assert Workspace(tmp_path / "w2", small)._config(EvaluateConfig, "evaluate", {}).run == RunConfig()


def _reject_constant(name: str) -> None:
    raise ValueError(f"table.json holds {name}, which strict JSON readers reject")


def test_strict_json_turns_non_finite_numbers_into_null() -> None:
    rows = [{"pl_accuracy": float("nan"), "top1": 0.5, "spread": [float("inf"), 1.0]}]
    text = json.dumps(strict_json(rows))
    assert json.loads(text, parse_constant=_reject_constant) == [
        {"pl_accuracy": None, "top1": 0.5, "spread": [None, 1.0]}
    ]


ROW_FIELDS = {"method", "fraction", "labeled_per_class", "top1", "top1_std", "runs"}


@pytest.mark.parametrize("name", ["table1", "table2", "table4", "table5", "table6", "fig1c"])
def test_each_target_writes_its_table(quick_tables: Path, name: str) -> None:
    folder = quick_tables / name
    for file in ("table.md", "table.json", "table.png"):
        assert (folder / file).stat().st_size > 0
    table = json.loads((folder / "table.json").read_text(), parse_constant=_reject_constant)
    assert table["scale"]["quick"] is True and table["rows"]
    assert table["scale"]["config"].startswith("reproductions/"), "the repository's files, not this machine's paths"
    text = (folder / "table.md").read_text()
    assert "QUICK form" in text
    if name == "fig1c":
        measures = {r["key"] for r in table["rows"]}
        assert {"cosine_pretrained", "dtw_pretrained", "alignability_score"} <= measures
        assert all(0 <= r["average_precision"] <= 1 for r in table["rows"])
        return
    for row in table["rows"]:
        assert ROW_FIELDS <= set(row), row
        if row["key"] not in ("supervised",):
            assert "pl_count" in row and "pl_accuracy" in row
    assert "## The paper's claims, checked" in text


def test_table_rows_are_the_stages_own_figures(quick_tables: Path) -> None:
    """Rows are read back from what the stages wrote, and the paper's figures from paper.json."""
    table = json.loads((quick_tables / "table1" / "table.json").read_text())
    rows = {r["key"]: r for r in table["rows"]}
    cell = quick_tables / "work" / "synth11" / "f0.5_split0"
    supervised = json.loads((cell / "eval_supervised" / "metrics.json").read_text())
    finepseudo = json.loads((cell / "eval_finepseudo" / "metrics.json").read_text())
    summary = json.loads((cell / "st_finepseudo" / "selftrain.json").read_text())
    assert rows["supervised"]["top1"] == pytest.approx(supervised["top1"])
    assert rows["finepseudo"]["top1"] == pytest.approx(finepseudo["top1"])
    assert rows["finepseudo"]["diff_vs_supervised"]["mean"] == pytest.approx(finepseudo["top1"] - supervised["top1"])
    assert rows["finepseudo"]["pl_count"] == summary["cumulative_pl_count"]
    assert rows["matched"]["pl_count"] == 0
    for peer in ("fixmatch", "sefar", "acl_mtl"):  # the peer methods' rows, from their own runs
        peer_run = json.loads((cell / f"st_{peer}" / "selftrain.json").read_text())
        assert peer_run["method"] == peer.replace("_", "-")
        assert rows[peer]["pl_count"] == peer_run["cumulative_pl_count"] and "diff_vs_supervised" in rows[peer]
    assert rows["oracle"]["pl_accuracy"] in (1.0, None) or math.isnan(rows["oracle"]["pl_accuracy"])
    six = {r["key"]: r for r in json.loads((quick_tables / "table6" / "table.json").read_text())["rows"]}
    paper = json.loads((REPO / "reproductions" / "paper.json").read_text())["table6"]["rows"]
    assert six["finepseudo"]["paper_pl_count"] == paper["Non-Parametric Classif."][0]
    assert set(six) == {"pl", "ups", "verify", "finepseudo"}
    # the ablations ran from their own fit-labeled variants
    for variant in ("no_metric_learning", "no_score_loss", "no_triplet_loss", "no_gitdl"):
        assert (cell / f"fit_{variant}" / "A.pt").exists()
    four = json.loads((quick_tables / "table4" / "table.json").read_text())["rows"]
    assert all(r["open_world"] for r in four) and "novel_auroc" in four[-1]
    # Table 5's (b') reads f_E from (b)'s run: no second self-training, the f_E figure of its metrics
    five = {r["key"]: r for r in json.loads((quick_tables / "table5" / "table.json").read_text())["rows"]}
    fa_alone = json.loads((cell / "eval_fa_alone" / "metrics.json").read_text())
    assert five["fe_on_fa_labels"]["top1"] == pytest.approx(fa_alone["action"]["top1"])
    assert five["fa_alone"]["top1"] == pytest.approx(fa_alone["alignability"]["top1"])
    assert five["fe_on_fa_labels"]["pl_count"] == five["fa_alone"]["pl_count"]
    assert not (cell / "st_fe_on_fa_labels").exists() and not (cell / "eval_fe_on_fa_labels").exists()


def test_table2_trains_on_frozen_features_of_the_same_split(quick_tables: Path) -> None:
    """Table 2's feature rows read GITDL's frozen frame features with the video cell's split; its
    end-to-end rows are Table 1's own runs (make tables ran Table 1 first), not new ones."""
    work = quick_tables / "work" / "synth11"
    store = load_index(work / "features" / "index.json")
    videos = load_index(work / "index.json")
    assert store.is_sequence and [e.id for e in store.entries] == [e.id for e in videos.entries]
    fitted = json.loads((work / "f0.5_split0_features" / "fit_full" / "run.json").read_text())["config"]
    assert fitted["data"] == {
        "index": str(work / "features" / "index.json"),
        "split": str(work / "f0.5_split0" / "split.json"),
    }
    assert fitted["action"]["arch"] == "tcn" and fitted["alignability"]["backbone"] == "mlp"
    assert fitted["init_e"] is None and fitted["init_a"] is None  # the frozen backbone is the only start
    two = json.loads((quick_tables / "table2" / "table.json").read_text())["rows"]
    one = {r["key"]: r for r in json.loads((quick_tables / "table1" / "table.json").read_text())["rows"]}
    frozen = [r for r in two if r["inputs"] != "video"]
    end_to_end = {r["key"]: r for r in two if r["inputs"] == "video"}
    assert [r["key"] for r in frozen] == ["supervised", "pl", "ups", "finepseudo"]
    assert set(end_to_end) == {"supervised", "pl", "ups", "finepseudo"}
    for key, row in end_to_end.items():
        assert row["top1"] == pytest.approx(one[key]["top1"])
    evaluated = json.loads((work / "f0.5_split0_features" / "eval_finepseudo" / "metrics.json").read_text())
    assert frozen[-1]["top1"] == pytest.approx(evaluated["top1"])


def test_a_rerun_continues_where_it_stopped(quick_tables: Path) -> None:
    """Everything is done, so a rerun runs no step; a removed evaluation is the only one redone."""
    (quick_tables / "work" / "synth11" / "f0.5_split0" / "eval_pl" / "metrics.json").unlink()
    done = subprocess.run(
        [BIN / "fgar", "reproduce", "table1", "--quick", "--out-dir", quick_tables],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    printed = done.stdout + done.stderr
    assert "1 steps to run" in printed and "evaluate: evaluate pl in f0.5_split0" in printed
