"""Table IV, protocol 'ours': do softer or sharper responsibilities separate garments better.

    PYTHONPATH=. .venv/bin/python docs/results/table4_pooling_ablation/temperature.py SEED TEMPS

Reads the cached Fashion-MNIST model
``runs/reproduce/table4/fashion-mnist/ours/pooled-G196-two-stage-lr1.0-e25-sSEED`` (trained by
``python -m benchmarks.reproduce table4 --protocols ours --models pooled-G196-two-stage``),
computes its GMM layer's log-joints (N, 24, 24, 196) for 20,000 images drawn (seed 0) from the
table's training part (the first 90%) and for the validation part (the last 10%), turns them
into responsibilities at each temperature T of TEMPS (``softmax(log_joint / T)``; T = 1 is what
the layer outputs), pools them over 4x4 blocks by mean and by max, and fits scikit-learn's
logistic regression (L2, C = 1, L-BFGS, 300 iterations) to each. Scored on validation only:
the test set is not read. Prints one JSON line per (T, pooling) and writes
``fashion-mnist-temperature-sSEED.json`` beside this script.
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

FIT_IMAGES = 20_000
POOLINGS = {"mean": F.avg_pool2d, "max": F.max_pool2d}


def pooled_features(model, images: torch.Tensor, temperatures: list[float]) -> dict:
    """Return {(T, pooling): (N, 6*6*K) array}, computed 500 images at a time.

    A (N, 24, 24, 196) float32 tensor of 26,000 images would need 12 GB per copy.
    """
    fold, gmm = list(model.layers)[:2]
    out: dict = {(t, p): [] for t in temperatures for p in POOLINGS}
    with torch.no_grad():
        for start in range(0, images.shape[0], 500):
            log_joint = gmm.log_joint(fold(images[start : start + 500]))
            for t, p in out:
                x = torch.softmax(log_joint / t, dim=-1).permute(0, 3, 1, 2)
                x = POOLINGS[p](x, 4, 4)
                out[(t, p)].append(x.reshape(x.shape[0], -1))
    return {key: torch.cat(parts).numpy() for key, parts in out.items()}


def main(seed: int, temperatures: list[float]) -> None:
    """Fit and score one probe per (temperature, pooling); write the JSON."""
    torch.set_num_threads(1)
    run = f"runs/reproduce/table4/fashion-mnist/ours/pooled-G196-two-stage-lr1.0-e25-s{seed}"
    model = load_model(run)
    full = load_dataset("../shared/data/fashion-mnist")
    cut = len(full) * 9 // 10
    picked = np.sort(np.random.default_rng(0).choice(cut, FIT_IMAGES, replace=False))
    fit = pooled_features(model, full.images[picked], temperatures)
    valid = pooled_features(model, full.images[cut:], temperatures)
    y_fit, y_valid = full.labels[picked].numpy(), full.labels[cut:].numpy()
    rows = []
    for t, p in fit:
        start = time.perf_counter()
        probe = LogisticRegression(max_iter=300)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            probe.fit(fit[(t, p)], y_fit)
        row = {"temperature": t, "pooling": p,
               "valid_accuracy": round(100 * probe.score(valid[(t, p)], y_valid), 2),
               "seconds": round(time.perf_counter() - start, 1)}  # fmt: skip
        print(json.dumps(row), flush=True)
        rows.append(row)
    out = Path(__file__).with_name(f"fashion-mnist-temperature-s{seed}.json")
    out.write_text(json.dumps({"seed": seed, "model": run, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main(int(sys.argv[1]), [float(t) for t in sys.argv[2].split(",")])
