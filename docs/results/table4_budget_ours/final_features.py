"""Table IV, protocol 'ours': a linear classifier trained by SGD on the final, frozen features.

    PYTHONPATH=. .venv/bin/python docs/results/table4_budget_ours/final_features.py DATASET SEED

The network of ours trains its classifier layer from step 0 while the GMM layer below anneals;
the GMM layer reaches its sigma floor only about 600 steps before the end of the 15-epoch run
(step 7,400-7,500 of 8,100). This script freezes the cached 15-epoch model
(``runs/reproduce/table4/DATASET/ours/pooled-G121-lr1.0-e15-sSEED``), computes the classifier
layer's inputs (the pooled responsibilities, 4,356 per image) once, and trains a linear
classifier on them with what the classifier layer uses (plain SGD on the mean cross-entropy,
batch 100, reshuffled every epoch) for 15 epochs: from a fresh initialisation (the layer's) at
rates 1.0 and 0.3, and from the model's own trained classifier weights at rate 1.0, printing
validation (the last 10% of the training set) and test accuracy and the weight norm after every
epoch. Writes ``DATASET-sSEED.json`` beside this script.
"""

import json
import math
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from benchmarks.reproduce.table4 import classifier_inputs
from dcgmm import load_dataset, load_model

HERE = Path(__file__).parent
# (name, rate, start from the model's classifier weights?)
RUNS = (("fresh, rate 1.0", 1.0, False), ("fresh, rate 0.3", 0.3, False),
        ("the model's weights, rate 1.0", 1.0, True))  # fmt: skip
EPOCHS = 15
BATCH = 100


def train_linear(
    parts: dict[str, tuple[torch.Tensor, torch.Tensor]],
    lr: float,
    start: tuple[torch.Tensor, torch.Tensor] | None,
) -> list[dict]:
    """SGD on fixed inputs from ``start`` (weight, bias) or a fresh initialisation; return
    validation and test accuracy % and the weight norm after every epoch."""
    x, y = parts["fit"]
    generator = torch.Generator().manual_seed(0)
    std = 1.0 / math.sqrt(x.shape[1])  # LinearClassifier.reset_parameters
    weight = torch.nn.init.trunc_normal_(
        torch.empty(x.shape[1], 10), std=std, a=-2 * std, b=2 * std, generator=generator
    )
    bias = torch.zeros(10)
    if start is not None:
        weight, bias = (t.detach().clone() for t in start)
    weight.requires_grad_()
    bias.requires_grad_()
    optimizer = torch.optim.SGD([weight, bias], lr=lr)
    curve = []
    for epoch in range(EPOCHS):
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x) - BATCH + 1, BATCH):
            rows = order[start : start + BATCH]
            loss = F.cross_entropy(x[rows] @ weight + bias, y[rows])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            accuracy = {
                name: round(100 * float(((xs @ weight + bias).argmax(1) == ys).float().mean()), 2)
                for name, (xs, ys) in parts.items() if name != "fit"
            }  # fmt: skip
        curve.append(
            {"epoch": epoch + 1, **accuracy, "weight_norm": round(float(weight.detach().norm()), 2)}
        )
    return curve


def main(dataset: str, seed: int) -> None:
    torch.set_num_threads(1)
    model = load_model(f"runs/reproduce/table4/{dataset}/ours/pooled-G121-lr1.0-e15-s{seed}")
    full = load_dataset(f"../shared/data/{dataset}")
    test = load_dataset(f"../shared/data/{dataset}", split="test")
    cut = len(full) * 9 // 10  # as table4: the last tenth validates
    parts = {
        name: (torch.from_numpy(classifier_inputs(model, images)), labels.long())
        for name, images, labels in (
            ("fit", full.images[:cut], full.labels[:cut]),
            ("valid", full.images[cut:], full.labels[cut:]),
            ("test", test.images, test.labels),
        )
    }
    result = {"dataset": dataset, "seed": seed, "curves": {}}
    classifier = model.layers[-1]
    for name, lr, from_model in RUNS:
        start = (classifier.weight, classifier.bias) if from_model else None
        curve = train_linear(parts, lr, start)
        result["curves"][name] = curve
        print(f"{dataset} seed {seed}, {name}:", flush=True)
        for point in curve:
            print(f"  epoch {point['epoch']:2d}: validation {point['valid']:.2f}, "
                  f"test {point['test']:.2f}, weight norm {point['weight_norm']:.1f}",
                  flush=True)  # fmt: skip
    (HERE / f"{dataset}-s{seed}.json").write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
