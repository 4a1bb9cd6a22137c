"""Stage 3, `fgar pseudolabel`: collaborative pseudo-labels from f_E and f_A (paper Sec. 3.2).

1. Embed the labeled set D_l with f_A into a gallery A (gallery.h5).
2. Score every unlabeled clip against it with the non-parametric classifier: Eq. 7 on f_S logits
   (class alignability S_c), Eq. 8 for p_A with tau fitted on the gallery (`method.gallery`).
3. p_E is f_E's softmax; the rule of `--source` turns p_E and p_A into accepted pseudo-labels
   (`method.pseudolabels`: FinePseudo's average, or one of the Table 6 variants).
The result is pseudo.h5, with the count and accuracy of the accepted labels where ground truth is
known (the columns of the paper's Table 6).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fgar_cli.checkpoints import Encoders, load_encoders
from fgar_cli.config import ClassifierConfig, Config, PseudoLabelConfig, PseudoLabeling, RunConfig, Source
from fgar_cli.data.batches import inference_loader
from fgar_cli.data.dataset import ClipMode
from fgar_cli.data.run_data import RunData, load_run_data
from fgar_cli.errors import FgarError
from fgar_cli.files import check_writable_folder
from fgar_cli.inference import run_encoders
from fgar_cli.method.gallery import (
    Gallery,
    embed_gallery,
    load_gallery,
    require_fittable_tau,
    save_gallery,
    score_queries,
)
from fgar_cli.method.pseudolabels import PseudoLabels, select_pseudo_labels, with_true_labels, write_pseudo_labels
from fgar_cli.runtime import resolve_device, seed_everything


def pseudo_label(
    encoders: Encoders,
    data: RunData,
    ids: list[str],
    classifier: ClassifierConfig,
    rule: PseudoLabeling,
    run: RunConfig,
    round_: int = 0,
    gallery: Gallery | None = None,
    novel_threshold: float | None = None,
) -> tuple[PseudoLabels, Gallery | None]:
    """Algorithm 1, lines 19-22: p_E and p_A for the clips `ids`, and which of them the rule accepts.

    Returns the pass and the gallery it scored against (embedded here unless given).
    """
    if not ids:
        raise FgarError(f"{data.paths.split}: the unlabeled split is empty: there is nothing to pseudo-label")
    clip, device = encoders.action.recipe.clip, encoders.device
    model_a = encoders.alignability.model if encoders.alignability is not None else None
    loader = inference_loader(data.clips(ids, clip, ClipMode.TEST), run.inference_batch_size)
    mc_passes = rule.mc_passes if rule.source == Source.UNCERTAINTY else 0
    out = run_encoders(loader, device, "unlabeled clips", encoders.action.model, model_a, mc_passes, run.seed + round_)
    assert out.probs is not None
    p_E, valid = out.probs[:, 0], out.valid
    scores = None
    if encoders.alignability is not None and out.embeddings is not None:
        gamma = encoders.alignability.recipe.loss.gamma
        gallery = gallery or embed_gallery(encoders.alignability.model, data, clip, device, run.inference_batch_size)
        scores = score_queries(
            encoders.alignability.model, out.embeddings[:, 0], gallery, classifier, gamma, device, run.seed + round_
        )
    selection = select_pseudo_labels(
        p_E.nan_to_num(1.0 / data.num_classes),
        scores.probs if scores is not None else None,
        scores.class_alignability if scores is not None else None,
        rule,
        novel_threshold,
        out.mc_probs[:, 0].nan_to_num(1.0 / data.num_classes) if out.mc_probs is not None else None,
    )
    selection.accepted &= valid  # a clip that could not be read is never pseudo-labeled
    truth = data.truth(ids)
    if rule.oracle:
        selection = with_true_labels(selection, truth, str(data.paths.split))
    pl = PseudoLabels(ids, p_E, scores, selection, truth, data.class_names, rule, round_, novel_threshold)
    return pl, gallery


def write_pass(folder: Path, pl: PseudoLabels, gallery: Gallery | None, config: Config, inputs: list[str]) -> None:
    """pseudo.h5, and gallery.h5 when the pass embedded its own gallery, into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    if gallery is not None:
        save_gallery(folder / "gallery.h5", gallery, config, inputs)
    write_pseudo_labels(folder / "pseudo.h5", pl, config, inputs)


def run_pseudolabel(cfg: PseudoLabelConfig) -> dict[str, Any]:
    """`fgar pseudolabel`: data and split default to those stored in the f_E checkpoint."""
    seed_everything(cfg.run.seed)
    encoders = load_encoders(cfg.ckpt_e, cfg.ckpt_a, need_alignability=cfg.pseudo_labeling.source.needs_alignability)
    data = load_run_data(encoders.data_paths(cfg.data), cfg.run)
    encoders.check_data(data)
    if encoders.alignability is not None:
        require_fittable_tau(data, cfg.classifier)
    encoders.to(resolve_device(cfg.run.device))
    given = None
    if cfg.gallery and encoders.alignability is not None:
        arch, clip = encoders.alignability.model.config, encoders.action.recipe.clip
        given = load_gallery(cfg.gallery, data.class_names, arch.feature_dim, clip.num_frames)
    out = check_writable_folder(cfg.out_dir or Path(encoders.action.path).parent)
    pl, gallery = pseudo_label(
        encoders, data, data.split.unlabeled, cfg.classifier, cfg.pseudo_labeling, cfg.run, gallery=given
    )
    inputs = encoders.paths + ([cfg.gallery] if cfg.gallery else [])
    write_pass(out, pl, gallery if given is None else None, cfg.model_copy(update={"data": data.paths}), inputs)
    return {
        **pl.stats(),
        "novel": int(pl.selection.novel.sum()),
        "tau": pl.scores.tau if pl.scores is not None else None,
        "pseudo": str(out / "pseudo.h5"),
        "gallery": (cfg.gallery or str(out / "gallery.h5")) if gallery is not None else None,
    }
