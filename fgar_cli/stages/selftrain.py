"""Stage 4, `fgar selftrain`: collaborative self-training (Algorithm 1, lines 18-31).

    for round in 1..max_iter:
        pseudo-label the unlabeled clips not yet accepted, with the current f_E and f_A  (lines 19-22)
        add the accepted clips, with their labels, to D_l                                (line 23)
        train f_E (CE), then f_A (L_AV), for max_epoch_st epochs on D_l                  (lines 24-30)

Choices where the paper is silent (docs/METHOD.md): the gallery is the truly labeled set only, so
pseudo-labels never vouch for themselves; training continues from the previous round's weights
with a fresh optimizer. With `--source action` (confidence-only pseudo-labeling) or `uncertainty`
(UPS) f_A takes no part and is not trained. `--source none` is the compute-matched control: no
pseudo-label, the same rounds of epochs on D_l alone (f_A too when it is given).
`alignability_epochs` 0 keeps f_A as it was given (Table 5 row c: no metric learning).

Each round lives in its folder round_K/: pseudo.h5, E.pt, A.pt, and the `_last` checkpoints of the
epoch in progress. Resuming is a matter of that folder: with `--resume` a step whose file is there
is read instead of redone, so a resumed run reaches the same weights as an uninterrupted one (and
`fgar_cli.runs` makes sure that the folder holds this run, with these options, and no other).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from fgar_cli.artifacts import atomic_copy, atomic_write_json
from fgar_cli.checkpoints import CheckpointRecord, Encoders, load_encoders
from fgar_cli.config import (
    ActionRecipe,
    AlignabilityRecipe,
    OpenWorldConfig,
    SelfTrainConfig,
    Source,
    with_absolute_paths,
)
from fgar_cli.data.dataset import ClipMode
from fgar_cli.data.run_data import RunData, load_run_data
from fgar_cli.errors import FgarError
from fgar_cli.method.gallery import require_fittable_tau
from fgar_cli.method.pseudolabels import accepted_in_file, pseudo_label_stats
from fgar_cli.progress import console
from fgar_cli.runlog import records_run
from fgar_cli.runs import RunFolder
from fgar_cli.runtime import resolve_device, seed_everything
from fgar_cli.stages.pseudolabel import pseudo_label, write_pass
from fgar_cli.training import EncoderTrainer


@records_run
def selftrain(cfg: SelfTrainConfig, novel_threshold: float | None = None) -> dict[str, Any]:
    """Algorithm 1, lines 18-31. Open world (`fgar openworld`): clips whose best class alignability is
    below `novel_threshold` are never pseudo-labeled. `--method` other than finepseudo: a peer method
    (fgar_cli.stages.peers)."""
    if cfg.method.teacher_student:
        from fgar_cli.stages.peers import teacher_student_selftrain

        return teacher_student_selftrain(cfg)
    seed_everything(cfg.run.seed)
    source = cfg.pseudo_labeling.source
    need_a = source.needs_alignability or novel_threshold is not None
    encoders = load_encoders(cfg.ckpt_e, cfg.ckpt_a, need_alignability=need_a)
    # f_A is retrained when the rule reads it, and in the compute-matched control when it is given
    train_a = encoders.alignability is not None and not source.uses_action_only and cfg.alignability_epochs != 0
    data = load_run_data(encoders.data_paths(cfg.data), cfg.run)
    encoders.check_data(data)
    if not data.split.unlabeled:
        raise FgarError(f"{data.paths.split}: the unlabeled split is empty: there is nothing to self-train on")
    if encoders.alignability is not None:
        require_fittable_tau(data, cfg.classifier)
    device = resolve_device(cfg.run.device)
    encoders.to(device)
    recipe_e, recipe_a = round_recipes(cfg, encoders, data)
    config = with_absolute_paths(cfg, data.paths)
    stage = "openworld" if isinstance(cfg, OpenWorldConfig) else "selftrain"
    run = RunFolder(Path(cfg.out_dir), stage).open(config, cfg.resume, cfg.force)
    out = run.path
    pseudo_labeled: dict[str, int] = {}  # line 23: accepted clips join D_l for good
    rounds: list[dict[str, Any]] = []

    for r in range(1, cfg.rounds + 1):
        folder = out / f"round_{r}"
        remaining = [i for i in data.split.unlabeled if i not in pseudo_labeled]
        new = round_pseudo_labels(cfg, encoders, data, remaining, r, folder, novel_threshold)
        pseudo_labeled |= new
        stats = round_stats(r, new, len(remaining), pseudo_labeled, data)
        console.print(
            f"round {r}: {len(new)} of {len(remaining)} clips newly accepted (accuracy "
            f"{stats['round_pl_accuracy']:.3f}); {stats['cumulative_pl_count']} of {stats['unlabeled']} "
            f"unlabeled clips pseudo-labeled so far, accuracy {stats['cumulative_pl_accuracy']:.3f}"
        )
        labels = data.labels(data.split.labeled) | pseudo_labeled
        run.log.line(f"round {r}: {json.dumps(stats)}")
        log = run.log.in_round(r)
        trainer = EncoderTrainer(device, cfg.run.seed + 1000 * r, cfg.resume, cfg.run.num_workers, log=log)
        dataset = data.clips(list(labels), recipe_e.clip, ClipMode.TRAIN, labels, seed=trainer.seed)
        extra = {"round": r, "pseudo_labels": stats}
        trainer.action(
            encoders.action.model,
            dataset,
            recipe_e.training,
            folder / "E.pt",
            CheckpointRecord(data.class_names, recipe_e, config, extra),
            f"round {r} f_E",
        )
        if train_a:
            assert encoders.alignability is not None and recipe_a is not None
            trainer.alignability(
                encoders.alignability.model,
                dataset,
                recipe_a.training,
                recipe_a.loss,
                folder / "A.pt",
                CheckpointRecord(data.class_names, recipe_a, config, extra),
                f"round {r} f_A",
            )
        rounds.append(stats)
    return finish(cfg, out, encoders, train_a, rounds, novel_threshold)


def round_recipes(
    cfg: SelfTrainConfig, encoders: Encoders, data: RunData
) -> tuple[ActionRecipe, AlignabilityRecipe | None]:
    """How each round trains the encoders: as they were trained, for `epochs` epochs, at `lr_e`/`lr_a` if given."""
    stored_e = encoders.action.recipe
    training_e = stored_e.training.model_copy(update={"epochs": cfg.epochs, "lr": cfg.lr_e or stored_e.training.lr})
    recipe_e = stored_e.model_copy(update={"data": data.paths, "training": training_e})
    if encoders.alignability is None:
        return recipe_e, None
    stored_a = encoders.alignability.recipe
    epochs_a = cfg.epochs if cfg.alignability_epochs is None else cfg.alignability_epochs
    training_a = stored_a.training.model_copy(update={"epochs": epochs_a, "lr": cfg.lr_a or stored_a.training.lr})
    return recipe_e, stored_a.model_copy(update={"data": data.paths, "training": training_a})


def round_pseudo_labels(
    cfg: SelfTrainConfig,
    encoders: Encoders,
    data: RunData,
    remaining: list[str],
    round_: int,
    folder: Path,
    novel_threshold: float | None,
) -> dict[str, int]:
    """Lines 19-22 for one round: the newly accepted clips and their labels (round_K/pseudo.h5)."""
    if not remaining:
        console.print(f"round {round_}: every unlabeled clip is pseudo-labeled already")
        return {}
    if cfg.pseudo_labeling.source == Source.NONE:
        return {}  # the compute-matched control: nothing to score
    path = folder / "pseudo.h5"
    if cfg.resume and path.exists():
        console.print(f"round {round_}: reusing {path}")
        return accepted_in_file(path, remaining, data.num_classes)
    pl, gallery = pseudo_label(
        encoders, data, remaining, cfg.classifier, cfg.pseudo_labeling, cfg.run, round_, novel_threshold=novel_threshold
    )
    write_pass(folder, pl, gallery, with_absolute_paths(cfg, data.paths), encoders.paths)
    return pl.accepted_labels()


def round_stats(
    round_: int, new: dict[str, int], candidates: int, pseudo_labeled: dict[str, int], data: RunData
) -> dict[str, Any]:
    """A round's pseudo-labels in two counts: those it accepted (of the `candidates` clips still
    unlabeled when it began) and all accepted so far (of the whole unlabeled set), each with its
    accuracy against the split's ground truth where that is known."""
    this_round = accepted_stats(new, data)
    so_far = accepted_stats(pseudo_labeled, data)
    return {
        "round": round_,
        "round_pl_count": this_round["accepted_count"],
        "round_pl_accuracy": this_round["accepted_accuracy"],
        "round_candidates": candidates,
        "cumulative_pl_count": so_far["accepted_count"],
        "cumulative_pl_accuracy": so_far["accepted_accuracy"],
        "unlabeled": len(data.split.unlabeled),
    }


def accepted_stats(labels: dict[str, int], data: RunData) -> dict[str, Any]:
    ids = list(labels)
    label = np.array([labels[i] for i in ids], dtype=np.int64)
    return pseudo_label_stats(label, np.ones(len(ids), dtype=bool), data.truth(ids))


def finish(
    cfg: SelfTrainConfig,
    out: Path,
    encoders: Encoders,
    train_a: bool,
    rounds: list[dict[str, Any]],
    novel_threshold: float | None,
) -> dict[str, Any]:
    """The last round's encoders become the run's E.pt and A.pt; selftrain.json sums the run up."""
    last = out / f"round_{cfg.rounds}"
    atomic_copy(last / "E.pt", out / "E.pt")
    if train_a:
        atomic_copy(last / "A.pt", out / "A.pt")
    elif cfg.ckpt_a:
        atomic_copy(cfg.ckpt_a, out / "A.pt")
    summary = {
        "rounds": rounds,
        "cumulative_pl_count": rounds[-1]["cumulative_pl_count"],
        "cumulative_pl_accuracy": rounds[-1]["cumulative_pl_accuracy"],
        "ckpt_e": str(out / "E.pt"),
        "ckpt_a": str(out / "A.pt") if (out / "A.pt").exists() else None,
        "source": cfg.pseudo_labeling.source.value,
        "novel_threshold": novel_threshold,
    }
    atomic_write_json(out / "selftrain.json", summary)
    return summary
