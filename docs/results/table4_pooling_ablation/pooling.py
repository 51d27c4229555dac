"""Table IV, protocol 'ours': does the pooling of the trained patch-mixture layer limit it?

    PYTHONPATH=. .venv/bin/python docs/results/table4_pooling_ablation/pooling.py DATASET SEED

Reads the cached model ``runs/reproduce/table4/DATASET/ours/pooled-G121-lr1.0-e15-sSEED``
(trained by ``python -m benchmarks.reproduce table4 --protocols ours``), computes its GMM
layer's responsibilities (N, 24, 24, 121) for 20,000 images drawn (seed 0) from the table's
training part (the first 90%) and for the validation part (the last 10%), pools them in
several ways and fits scikit-learn's logistic regression (L2, C = 1, L-BFGS, 300 iterations)
to each. Scored on validation only: the test set is not read. Writes ``DATASET-sSEED.json``
beside this script and prints one line per pooling.
"""

import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

from dcgmm import load_dataset, load_model

POOLINGS = [("max", 4, 4), ("avg", 4, 4), ("max", 2, 2), ("max", 3, 3), ("max", 6, 6),
            ("max", 4, 2), ("avg", 2, 2)]  # fmt: skip
FIT_IMAGES = 20_000


def responsibilities(model, images: torch.Tensor) -> torch.Tensor:
    """The GMM layer's output (N, H, W, K): the model's first two layers, F and G."""
    out = []
    with torch.no_grad():
        for start in range(0, images.shape[0], 1000):
            h = images[start : start + 1000]
            for layer in list(model.layers)[:2]:
                h = layer(h)
            out.append(h)
    return torch.cat(out)


def pooled(resp: torch.Tensor, kind: str, size: int, stride: int) -> np.ndarray:
    x = resp.permute(0, 3, 1, 2)
    pool = F.max_pool2d if kind == "max" else F.avg_pool2d
    x = pool(x, size, stride)
    return x.reshape(x.shape[0], -1).numpy()


def main(dataset: str, seed: int) -> None:
    torch.set_num_threads(1)
    model = load_model(f"runs/reproduce/table4/{dataset}/ours/pooled-G121-lr1.0-e15-s{seed}")
    full = load_dataset(f"../shared/data/{dataset}")
    cut = len(full) * 9 // 10
    picked = np.sort(np.random.default_rng(0).choice(cut, FIT_IMAGES, replace=False))
    fit, valid = responsibilities(model, full.images[picked]), responsibilities(
        model, full.images[cut:]
    )
    y_fit, y_valid = full.labels[picked].numpy(), full.labels[cut:].numpy()
    rows = []
    for kind, size, stride in POOLINGS:
        start = time.perf_counter()
        probe = LogisticRegression(max_iter=300)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            probe.fit(pooled(fit, kind, size, stride), y_fit)
        accuracy = 100 * probe.score(pooled(valid, kind, size, stride), y_valid)
        row = {"pooling": kind, "size": size, "stride": stride,
               "features": pooled(valid[:1], kind, size, stride).shape[1],
               "valid_accuracy": round(accuracy, 2),
               "seconds": round(time.perf_counter() - start, 1)}  # fmt: skip
        print(json.dumps(row), flush=True)
        rows.append(row)
    out = Path(__file__).with_name(f"{dataset}-s{seed}.json")
    out.write_text(json.dumps({"dataset": dataset, "seed": seed, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
