"""How much does f_E's trunk know before any label? A linear probe and 1-NN on frozen features.

    python benchmarks/probe_action.py --index I --split S [--init NAME=E0.pt ...] [--num-frames 16 --size 56]

For each trunk (a fresh small3d, then each `--init` checkpoint: E0.pt from `fgar pretrain --encoder
action`, or any f_E weights), embeds the labeled, unlabeled and test clips (test mode, centre clip)
with f_E's pooled features, standardises them on the training clips, and reports the test top-1 of
(a) an L2-regularised logistic regression (L-BFGS) and (b) cosine 1-NN, trained on the labeled split
alone and on labeled + unlabeled with their true labels (what the features could give if every
training label were known). Nothing is fine-tuned, so this measures the representation only.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from fgar_cli.config import ActionEncoderConfig, ClipConfig, DataPaths, RunConfig
from fgar_cli.data.batches import inference_loader
from fgar_cli.data.dataset import ClipMode
from fgar_cli.data.run_data import RunData, load_run_data
from fgar_cli.models import ActionEncoder, build_action_encoder


def features(
    model: ActionEncoder, data: RunData, ids: list[str], clip: ClipConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    out, labels = [], []
    model.eval()
    with torch.no_grad():
        for batch in inference_loader(data.clips(ids, clip, ClipMode.TEST), 32):
            out.append(model.features(batch["video"]))
            labels.append(batch["label"])
    return torch.cat(out), torch.cat(labels)


def probe(
    train: torch.Tensor, train_y: torch.Tensor, test: torch.Tensor, test_y: torch.Tensor, classes: int
) -> tuple[float, float]:
    mean, std = train.mean(0), train.std(0) + 1e-6
    a, b = (train - mean) / std, (test - mean) / std
    weight = torch.zeros(a.shape[1], classes, requires_grad=True)
    bias = torch.zeros(classes, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], max_iter=200)

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(a @ weight + bias, train_y) + 1e-2 * weight.square().sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    linear = ((b @ weight + bias).argmax(1) == test_y).float().mean().item()
    nearest = train_y[(F.normalize(b, dim=1) @ F.normalize(a, dim=1).T).argmax(1)]
    return linear, (nearest == test_y).float().mean().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", required=True)
    parser.add_argument("--split", required=True)
    parser.add_argument("--init", action="append", default=[], help="NAME=weights file")
    parser.add_argument("--num-frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=56)
    args = parser.parse_args()
    data = load_run_data(DataPaths(index=args.index, split=args.split), RunConfig())
    clip = ClipConfig(num_frames=args.num_frames, size=args.size, hflip=False)
    trunks = [("fresh small3d", None)] + [tuple(item.split("=", 1)) for item in args.init]
    for name, init in trunks:
        torch.manual_seed(0)
        model = build_action_encoder(ActionEncoderConfig(arch="small3d"), data.num_classes, init=init)
        labeled, labeled_y = features(model, data, data.split.labeled, clip)
        unlabeled, unlabeled_y = features(model, data, data.split.unlabeled, clip)
        test, test_y = features(model, data, data.split.test, clip)
        few = probe(labeled, labeled_y, test, test_y, data.num_classes)
        every = probe(
            torch.cat([labeled, unlabeled]), torch.cat([labeled_y, unlabeled_y]), test, test_y, data.num_classes
        )
        print(
            f"{name}: labeled split: linear {few[0]:.3f}, 1-NN {few[1]:.3f}; "
            f"every training label: linear {every[0]:.3f}, 1-NN {every[1]:.3f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
