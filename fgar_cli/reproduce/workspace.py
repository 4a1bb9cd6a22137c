"""The folder a reproduction works in, and its steps: each step writes one file that says it is done,
and is skipped when that file is there, so a rerun continues where the last one stopped (and the
stages themselves resume an interrupted training from its last epoch).

    OUT/work/synth<G>/data/                       fgar synth --seed G
                     index.json, pretrain_split.json (--fraction 0: every training video unlabeled)
                     pretrain/A0.pt, pretrain_action/E0.pt
                     <cell>/split.json
                     <cell>/fit_<variant>/E.pt, A.pt    fit-labeled
                     <cell>/st_<arm>/                     selftrain or openworld
                     <cell>/eval_<arm>/metrics.json        evaluate (predictions.h5 beside it)
                     features/features.h5, index.json     Table 2: fgar data features --ckpt-a A0.pt
                     <cell>_features/fit_full/, st_<arm>/, eval_<arm>/   the same on the features

The stages run in this process with typed configs built as the command line builds them: the stage
options file's table for the stage, then the keys each step sets.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from fgar_cli.config import (
    C,
    EvaluateConfig,
    FeaturesConfig,
    FitLabeledConfig,
    OpenWorldConfig,
    PretrainConfig,
    SelfTrainConfig,
    build_config,
)
from fgar_cli.data.index import load_index, save_index
from fgar_cli.data.splits import make_split, save_split
from fgar_cli.data.transforms import ClipTransform
from fgar_cli.progress import console
from fgar_cli.reproduce.plan import Arm, Cell, FitVariant, Head, Scale

# Seconds each step takes at the default scale on the 2-core development machine (docs/RESULTS.md):
# the estimate printed before a reproduction starts. Smaller scales are scaled by their video count.
STEP_SECONDS = {  # measured: `make table1` from nothing, 2026-12-03, 108 steps in 38 min (docs/RESULTS.md)
    "synth": 46.0,
    "index": 2.0,
    "pretrain": 20.0,
    "pretrain_action": 200.0,
    "fit": 39.0,
    "selftrain": 24.0,
    "evaluate": 8.0,
    # measured: the peer methods in `make table1`, 2026-12-03 (10 epochs over 384 unlabeled clips)
    "selftrain_fixmatch": 50.0,
    "selftrain_sefar": 100.0,
    "selftrain_acl-mtl": 80.0,
    # measured: `make table2` after table1, 75 steps in 38 min
    "features": 30.0,  # Table 2: the frozen backbone over every frame of a dataset
    "fit_sequences": 61.0,
    "selftrain_sequences": 58.0,
    "evaluate_sequences": 2.0,
}


@dataclass
class Steps:
    """Counts and times the steps of a reproduction, and prints where it stands."""

    total: int = 0
    done: int = 0
    started: float = field(default_factory=time.monotonic)
    estimate_left: float = 0.0

    def run(self, kind: str, what: str, seconds: float, work: Callable[[], object]) -> None:
        self.done += 1
        elapsed = time.monotonic() - self.started
        left = self.estimate_left / 60
        console.rule(
            f"[{self.done}/{self.total}] {kind}: {what}  ({elapsed / 60:.0f} min so far, about {left:.0f} min left)"
        )
        work()
        self.estimate_left = max(0.0, self.estimate_left - seconds)


class Workspace:
    def __init__(self, root: Path, scale: Scale, steps: Steps | None = None) -> None:
        self.root = root
        self.scale = scale
        self.steps = steps or Steps()
        self.dry_run = False
        self.pending: list[str] = []  # the steps a dry run found missing
        self._kinds: list[str] = []  # and their kinds

    # ------------------------------------------------------------------ bookkeeping

    def _step(self, kind: str, what: str, done: Path, work: Callable[[], object]) -> None:
        if done.exists():
            return
        if self.dry_run:
            if what not in self.pending:
                self.pending.append(what)
                self._kinds.append(kind)
            return
        self.steps.run(kind, what, self.seconds(kind), work)

    def plan(self, build: Callable[[], object]) -> tuple[int, float]:
        """Walk `build` without running anything: the steps still to do and their estimated seconds."""
        self.dry_run, self.pending, self._kinds = True, [], []
        try:
            build()
        finally:
            self.dry_run = False
        seconds = sum(self.seconds(kind) for kind in self._kinds)
        self.steps.total, self.steps.done, self.steps.estimate_left = len(self.pending), 0, seconds
        return len(self.pending), seconds

    def seconds(self, kind: str) -> float:
        default = Scale()
        ratio = (self.scale.classes * self.scale.videos_per_class) / (default.classes * default.videos_per_class)
        return STEP_SECONDS[kind] * ratio

    def _config(self, model: type[C], section: str, overrides: Mapping[str, Any], features: bool = False) -> C:
        """The stage's config as its command line builds it: the stage options file's table (the
        sequence one for feature cells), then `overrides`."""
        options_file = self.scale.sequence_config if features else self.scale.config
        cfg = build_config(model, options_file, overrides, section=section)
        run, clip = getattr(cfg, "run", None), getattr(cfg, "clip", None)
        if run is None:
            return cfg
        # The steps cycle over the datasets (seed 11, 12, 13, 11, ...): a frame cache smaller than
        # all of their frames would evict each dataset before its next step, so make it fit them.
        # (Stages that take the clip from a checkpoint decode at its size, the generated one here.)
        short_side = max(self.scale.size, ClipTransform(clip.size, train=False).short_side if clip else 0)
        needed_gb = self.scale.decoded_bytes(short_side) * 1.25 / 2**30
        if run.frame_cache_gb >= needed_gb:
            return cfg
        return cfg.model_copy(update={"run": run.model_copy(update={"frame_cache_gb": round(needed_gb, 2)})})

    # ------------------------------------------------------------------ per generated dataset

    def dataset_dir(self, synth_seed: int) -> Path:
        return self.root / f"synth{synth_seed}"

    def index(self, synth_seed: int) -> Path:
        """The generated dataset's index (`fgar synth` then `fgar data index --format diving48`)."""
        from fgar_cli.data import synth
        from fgar_cli.data.adapters import measure_entries, read_dataset

        folder, s = self.dataset_dir(synth_seed), self.scale
        data = folder / "data"
        self._step(
            "synth",
            f"generate dataset {synth_seed}",
            data / "Diving48_V2_test.json",
            lambda: synth.generate(
                data,
                seed=synth_seed,
                classes=s.classes,
                videos_per_class=s.videos_per_class,
                frames=s.frames,
                size=s.size,
                test_fraction=s.test_fraction,
                overwrite=True,
            ),
        )
        index = folder / "index.json"
        self._step(
            "index",
            f"index dataset {synth_seed}",
            index,
            lambda: save_index(measure_entries(read_dataset("diving48", data)), index),
        )
        return index

    def _split(self, index: Path, path: Path, fraction: float, seed: int, known_classes: int | None) -> None:
        from fgar_cli.artifacts import sha256_file

        loaded = load_index(index)
        save_split(make_split(loaded, fraction, seed, known_classes, str(index), sha256_file(index)), path)

    def pretrained(self, synth_seed: int) -> tuple[Path, Path]:
        """A0.pt (GITDL) and E0.pt (TCLR), pretrained on every training video of the dataset, unlabeled."""
        from fgar_cli.stages.pretrain import pretrain

        index, folder = self.index(synth_seed), self.dataset_dir(synth_seed)
        split = folder / "pretrain_split.json"
        self._step(
            "index",
            f"pretraining split of dataset {synth_seed}",
            split,
            lambda: self._split(index, split, 0.0, 0, None),
        )
        paths = []
        for encoder, name, file in (("alignability", "pretrain", "A0.pt"), ("action", "pretrain_action", "E0.pt")):
            out = folder / name
            options = {"encoder": encoder, "data": {"index": str(index), "split": str(split)}, "out_dir": str(out)}
            self._step(
                name,
                f"{name} on dataset {synth_seed}",
                out / file,
                lambda options=options: pretrain(self._config(PretrainConfig, "pretrain", options | {"resume": True})),
            )
            paths.append(out / file)
        return paths[0], paths[1]

    def features_index(self, synth_seed: int) -> Path:
        """Table 2's inputs: every frame of the dataset through the frozen frame backbone of GITDL's
        A0.pt (`fgar data features --ckpt-a A0.pt`); its index keeps the video ids, so splits apply."""
        from fgar_cli.stages.features import INDEX_FILE, compute_features

        index, (a0, _) = self.index(synth_seed), self.pretrained(synth_seed)
        out = self.dataset_dir(synth_seed) / "features"
        self._step(
            "features",
            f"frozen GITDL features of dataset {synth_seed}",
            out / INDEX_FILE,
            lambda: compute_features(FeaturesConfig(index=str(index), out_dir=str(out), ckpt_a=str(a0))),
        )
        return out / INDEX_FILE

    # ------------------------------------------------------------------ per cell

    def cell_index(self, cell: Cell) -> Path:
        return self.features_index(cell.synth_seed) if cell.features else self.index(cell.synth_seed)

    def cell_dir(self, cell: Cell) -> Path:
        return self.dataset_dir(cell.synth_seed) / cell.name

    def split(self, cell: Cell) -> Path:
        if cell.features:  # the video cell's split: the same labeled clips and test videos, paired
            return self.split(replace(cell, features=False))
        index, path = self.index(cell.synth_seed), self.cell_dir(cell) / "split.json"
        known = self.scale.known_classes if cell.open_world else None
        self._step(
            "index",
            f"split {cell.name} of dataset {cell.synth_seed}",
            path,
            lambda: self._split(index, path, cell.fraction, cell.split_seed, known),
        )
        return path

    def fitted(self, cell: Cell, variant: FitVariant) -> Path:
        """The fit-labeled folder (E.pt, A.pt) of `variant` in `cell`."""
        from fgar_cli.stages.fit_labeled import SUMMARY_FILE, fit_labeled

        index, split = self.cell_index(cell), self.split(cell)
        out = self.cell_dir(cell) / f"fit_{variant.value}"
        if cell.features:
            # f_E (tcn) and f_A (mlp + VTN) from random weights: the self-supervised part is the
            # frozen GITDL backbone the features come from, as AIM trains adapters on a frozen ViT
            assert variant == FitVariant.FULL, "Table 2 fits the full method only"
            options = {"data": {"index": str(index), "split": str(split)}, "out_dir": str(out), "resume": True}
            self._step(
                "fit_sequences",
                f"fit-labeled on features in {cell.name} of dataset {cell.synth_seed}",
                out / SUMMARY_FILE,
                lambda: fit_labeled(self._config(FitLabeledConfig, "fit_labeled", options, features=True)),
            )
            return out
        a0, e0 = self.pretrained(cell.synth_seed)
        options: dict[str, Any] = {
            "data": {"index": str(index), "split": str(split)},
            "init_e": str(e0),
            "init_a": None if variant == FitVariant.NO_GITDL else str(a0),
            "out_dir": str(out),
            "resume": True,
            **variant.fit_options,
        }
        self._step(
            "fit",
            f"fit-labeled ({variant.value}) in {cell.name} of dataset {cell.synth_seed}",
            out / SUMMARY_FILE,
            lambda: fit_labeled(self._config(FitLabeledConfig, "fit_labeled", options)),
        )
        return out

    def has_run(self, cells: list[Cell], arm: Arm) -> bool:
        """Whether `arm` has been evaluated in every one of `cells` (nothing is run to find out)."""
        return all((self.cell_dir(c) / f"eval_{arm.folder}" / "metrics.json").exists() for c in cells)

    def arm(self, cell: Cell, arm: Arm) -> ArmFolders:
        """Run `arm` in `cell` (self-training when it has any, then evaluation); its folders."""
        from fgar_cli.stages.evaluate import evaluate
        from fgar_cli.stages.openworld import openworld
        from fgar_cli.stages.selftrain import selftrain

        fit = self.fitted(cell, arm.fit)
        folder = self.cell_dir(cell)
        on = "_sequences" if cell.features else ""  # the step kinds of feature cells (their cost)
        where = f"{arm.folder} in {cell.name} of dataset {cell.synth_seed}"  # arms sharing runs share steps
        ckpt_e, ckpt_a = fit / "E.pt", fit / "A.pt"
        trained: Path | None = None
        if arm.self_trains and arm.method.teacher_student:
            trained = folder / f"st_{arm.folder}"
            peer = {"method": arm.method.value, "ckpt_e": str(ckpt_e), "out_dir": str(trained), "resume": True}
            self._step(
                f"selftrain_{arm.method.value}{on}",
                f"selftrain --method {arm.method.value} {where}",
                trained / "selftrain.json",
                lambda: selftrain(self._config(SelfTrainConfig, "selftrain", peer, cell.features)),
            )
            ckpt_e = trained / "E.pt"
        elif arm.self_trains:
            assert arm.source is not None
            trained = folder / f"st_{arm.folder}"
            options: dict[str, Any] = {
                "ckpt_e": str(ckpt_e),
                "ckpt_a": None if arm.source.uses_action_only else str(ckpt_a),
                "pseudo_labeling": {"source": arm.source.value, "oracle": arm.oracle},
                "alignability_epochs": None if arm.retrain_alignability else 0,
                "out_dir": str(trained),
                "resume": True,
            }
            if arm.open_world:
                self._step(
                    f"selftrain{on}",
                    f"openworld {where}",
                    trained / "metrics.json",
                    lambda: openworld(self._config(OpenWorldConfig, "selftrain", options, cell.features)),
                )
                return ArmFolders(trained / "eval", trained)
            self._step(
                f"selftrain{on}",
                f"selftrain {where}",
                trained / "selftrain.json",
                lambda: selftrain(self._config(SelfTrainConfig, "selftrain", options, cell.features)),
            )
            ckpt_e, ckpt_a = trained / "E.pt", trained / "A.pt"
        evaluated = folder / f"eval_{arm.folder}"

        def run_evaluate() -> None:
            # f_A's heads cost twice f_E's at 3 views: scored only for the arms that report them
            with_a = arm.head == Head.ALIGNABILITY
            options = {"ckpt_e": str(ckpt_e), "ckpt_a": str(ckpt_a) if with_a else None}
            config = self._config(EvaluateConfig, "evaluate", options | {"out_dir": str(evaluated)}, cell.features)
            evaluate(config)

        self._step(f"evaluate{on}", f"evaluate {where}", evaluated / "metrics.json", run_evaluate)
        return ArmFolders(evaluated, trained)


@dataclass(frozen=True)
class ArmFolders:
    evaluated: Path  # metrics.json and predictions.h5
    trained: Path | None  # the self-training run (selftrain.json, round_K/pseudo.h5), if any
