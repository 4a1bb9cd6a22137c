"""What a reproduction runs: its scale, its cells and the arms compared in each.

A *cell* is one generated dataset (generator seed), one label split (split seed) and one labeled
fraction, closed or open world. Every arm of a cell starts from the same fit-labeled encoders (or a
variant of them, for the ablations), so arms differ only in what the table compares. Pretraining
(GITDL for f_A, TCLR for f_E) runs once per generated dataset, on every training video without its
label (the `--fraction 0` split), and is shared by all cells of that dataset.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from pydantic import Field

from fgar_cli.config import Config, SelfTrainMethod, Source
from fgar_cli.data.splits import labeled_count

# Generator seeds used while developing fgar: 0 is the demo's, 1 chose theta and the TCLR settings,
# 5 the model and precision changes (docs/RESULTS.md, docs/PERFORMANCE.md). Never reported.
DEVELOPMENT_SEEDS = (0, 1, 5)


class Scale(Config):
    """How big a reproduction is (`fgar reproduce --help`; the Makefile's SYNTH_SEEDS, SPLITS, QUICK)."""

    synth_seeds: list[int] = Field([11, 12, 13], min_length=1, description="generator seeds of the datasets")
    splits: list[int] = Field([0], min_length=1, description="label split seeds per dataset")
    classes: int = Field(12, ge=2, description="classes of the embedded benchmark")
    train_per_class: int = Field(40, ge=2, description="training videos per class (labeled + unlabeled)")
    test_per_class: int = Field(84, ge=1, description="test videos per class")
    frames: int = Field(48, ge=16, description="typical video length")
    size: int = Field(64, ge=32, description="frame side in pixels")
    fractions: list[float] = Field(
        [0.1, 0.2, 0.4], min_length=1, description="labeled fractions of Table 1 (the paper's 5, 10, 20%)"
    )
    ablation_fraction: float = Field(0.2, gt=0, le=1, description="the fraction of Tables 5, 6 and Fig. 1(c)")
    openworld_fractions: list[float] = Field([0.2, 0.4], min_length=1, description="Table 4's (the paper's 10, 20%)")
    known_classes: int = Field(8, ge=2, description="Table 4: known classes; the rest (a third) are novel")
    config: str = Field("examples/demo.yaml", description="stage options (one table per stage)")
    sequence_config: str = Field(
        "examples/sequences.yaml", description="Table 2: stage options on frozen per-frame features"
    )
    bootstrap: int = Field(1000, ge=100, description="paired bootstrap replicates per run")
    pair_clips: int = Field(240, ge=4, description="Fig. 1(c): test clips whose pairs are verified")
    quick: bool = Field(False, description="the small form: exercises every step, reports nothing")

    @property
    def runs(self) -> int:
        return len(self.synth_seeds) * len(self.splits)

    def labeled_per_class(self, fraction: float) -> int:
        """Labeled clips of each class at `fraction` (as `fgar data split` rounds it)."""
        return labeled_count(fraction, self.train_per_class)

    @property
    def videos_per_class(self) -> int:
        return self.train_per_class + self.test_per_class

    def decoded_bytes(self, short_side: int) -> int:
        """About how many bytes every dataset's frames take decoded at `short_side` (the frame cache)."""
        per_dataset = self.classes * self.videos_per_class * self.frames * short_side * short_side * 3
        return len(self.synth_seeds) * per_dataset

    @property
    def test_fraction(self) -> float:
        """`fgar synth --test-fraction` that gives `test_per_class` test videos of each class."""
        return self.test_per_class / self.videos_per_class


QUICK = Scale(
    synth_seeds=[11],
    splits=[0],
    classes=4,
    train_per_class=8,
    test_per_class=3,
    frames=24,
    size=32,
    fractions=[0.5],
    ablation_fraction=0.5,
    openworld_fractions=[0.5],
    known_classes=3,
    config="reproductions/quick.yaml",
    sequence_config="reproductions/quick_sequences.yaml",
    bootstrap=100,
    pair_clips=12,
    quick=True,
)


@dataclass(frozen=True, order=True)
class Cell:
    synth_seed: int
    split_seed: int
    fraction: float
    open_world: bool = False
    features: bool = False  # Table 2: on the frozen GITDL backbone's per-frame features, not on video

    @property
    def name(self) -> str:
        world = "_open" if self.open_world else ""
        inputs = "_features" if self.features else ""
        return f"f{self.fraction:g}_split{self.split_seed}{world}{inputs}"


class FitVariant(StrEnum):
    """fit-labeled runs of a cell: the full method and the ablations of Table 5 (as options)."""

    FULL = "full"
    NO_METRIC_LEARNING = "no_metric_learning"  # (c) f_A keeps its GITDL weights: alignability_training.epochs 0
    NO_SCORE_LOSS = "no_score_loss"  # (d) alignability_loss.omega 0
    NO_TRIPLET_LOSS = "no_triplet_loss"  # (e) alignability_loss.triplet_weight 0
    NO_GITDL = "no_gitdl"  # (f) f_A from random weights, no --init-a

    @property
    def fit_options(self) -> dict[str, object]:
        """The fit-labeled config keys this variant sets (beside the stage options file)."""
        return {
            FitVariant.FULL: {},
            FitVariant.NO_METRIC_LEARNING: {"alignability_training": {"epochs": 0}},
            FitVariant.NO_SCORE_LOSS: {"alignability_loss": {"omega": 0.0}},
            FitVariant.NO_TRIPLET_LOSS: {"alignability_loss": {"triplet_weight": 0.0}},
            FitVariant.NO_GITDL: {},
        }[self]


class Head(StrEnum):
    """Which of evaluate's classifiers an arm's top-1 is read from."""

    ACTION = "action"  # f_E
    ALIGNABILITY = "alignability"  # f_A's non-parametric classifier


@dataclass(frozen=True)
class Arm:
    """One row of a table in one cell: the encoders it starts from, how it self-trains, what it reports."""

    key: str
    label: str
    source: Source | None = None  # None: no self-training, the fit-labeled encoders as they are
    fit: FitVariant = FitVariant.FULL
    oracle: bool = False
    retrain_alignability: bool = True
    head: Head = Head.ACTION
    open_world: bool = False  # FinePseudo in the open world: `fgar openworld` (novel clips set aside)
    runs_as: str | None = None  # the key of an arm whose runs this one reads with another head
    method: SelfTrainMethod = SelfTrainMethod.FINEPSEUDO  # a peer method: `fgar selftrain --method`

    @property
    def folder(self) -> str:
        return self.runs_as or self.key

    @property
    def self_trains(self) -> bool:
        return self.source is not None or self.method.teacher_student


SUPERVISED = Arm("supervised", "supervised (TCLR start)")
CONFIDENCE = Arm("pl", "PL (confidence)", Source.ACTION)
UNCERTAINTY = Arm("ups", "UPS (uncertainty)", Source.UNCERTAINTY)
VERIFY = Arm("verify", "label verification", Source.VERIFY)
FINEPSEUDO = Arm("finepseudo", "FinePseudo", Source.COLLAB)
COMPUTE_MATCHED = Arm("matched", "control: same epochs, no pseudo-label", Source.NONE)
ORACLE = Arm("oracle", "control: FinePseudo's clips, true labels", Source.COLLAB, oracle=True)
ALIGNABILITY_ALONE = Arm("fa_alone", "(b) f_A alone", Source.ALIGNABILITY, head=Head.ALIGNABILITY)
# The same self-training run as (b), read from f_E: what f_A's own pseudo-labels teach f_E.
ACTION_ON_ALIGNABILITY = Arm(
    "fe_on_fa_labels", "(b') f_E on f_A's pseudo-labels", Source.ALIGNABILITY, runs_as=ALIGNABILITY_ALONE.key
)
NO_METRIC_LEARNING = Arm(
    "no_metric_learning",
    "(c) no metric learning",
    Source.COLLAB,
    FitVariant.NO_METRIC_LEARNING,
    retrain_alignability=False,
)
NO_SCORE_LOSS = Arm("no_score_loss", "(d) no L_Score", Source.COLLAB, FitVariant.NO_SCORE_LOSS)
NO_TRIPLET_LOSS = Arm("no_triplet_loss", "(e) no L_AT", Source.COLLAB, FitVariant.NO_TRIPLET_LOSS)
NO_GITDL = Arm("no_gitdl", "(f) no GITDL", Source.COLLAB, FitVariant.NO_GITDL)
# The peer methods (docs/PEERS.md): f_E alone, from the same fit-labeled E.pt, with their papers' settings.
FIXMATCH = Arm("fixmatch", "FixMatch (EMA teacher)", method=SelfTrainMethod.FIXMATCH)
SEFAR = Arm("sefar", "SeFAR", method=SelfTrainMethod.SEFAR)
ACL_MTL = Arm("acl_mtl", "ACL+MTL", method=SelfTrainMethod.ACL_MTL)
OPEN_FINEPSEUDO = Arm("finepseudo", "FinePseudo", Source.COLLAB, open_world=True)
