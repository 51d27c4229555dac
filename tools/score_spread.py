"""Show how much a test-set mean log-likelihood depends on which images are in it.

    python tools/score_spread.py RUN_DIR [--data ../shared/data/mnist] [--layer -1]

Prints the spread of per-image max-component scores of one GMM layer over a test split: the
standard deviation and the standard error of a 1000-image mean, the means of consecutive
blocks of 1000, per-class means, and balanced (100 per class) random draws. Used for
docs/fidelity.md.
"""

import argparse

import numpy as np
import torch

from dcgmm import load_dataset, load_model
from dcgmm.io.run_files import read_config


def per_image_scores(run_dir: str, source: str, layer: int) -> tuple[np.ndarray, np.ndarray]:
    """Return the per-image max-component scores of one GMM layer and the test labels."""
    model = load_model(run_dir)
    test = load_dataset(source, split="test")
    chunks = []
    with torch.no_grad():
        for start in range(0, len(test), 1000):
            scores = model.scores(test.images[start : start + 1000])[layer]
            chunks.append(scores.max_component.flatten(1).mean(1))
    return torch.cat(chunks).numpy(), test.labels.numpy()


def main() -> None:
    """Print the spread statistics for the run given on the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("--data", help="test data source (default: the run's)")
    parser.add_argument("--layer", type=int, default=-1, help="GMM layer, -1 = top")
    args = parser.parse_args()
    source = args.data or read_config(args.run_dir)["data"]["source"]
    s, y = per_image_scores(args.run_dir, source, args.layer)
    print(f"all {len(s)}: mean {s.mean():.2f}, median {np.median(s):.2f}, sd {s.std():.1f}")
    print(f"standard error of a 1000-image mean: {s.std() / 1000**0.5:.2f}")
    print(f"below -100: {100 * (s < -100).mean():.2f}%, lowest: {np.sort(s)[:3].round(1)}")
    blocks = [s[i : i + 1000].mean() for i in range(0, len(s) - 999, 1000)]
    print("file-order blocks of 1000:", np.round(blocks, 2).tolist())
    classes = np.unique(y)
    print("per-class means:", {int(c): round(float(s[y == c].mean()), 1) for c in classes})
    print(f"class-balanced mean: {np.mean([s[y == c].mean() for c in classes]):.2f}")
    rng = np.random.default_rng(0)
    draws = [
        s[
            np.concatenate([rng.choice(np.nonzero(y == c)[0], 100, replace=False) for c in classes])
        ].mean()
        for _ in range(200)
    ]
    print(f"200 draws of 100 per class: {np.mean(draws):.2f} +- {np.std(draws):.2f}")


if __name__ == "__main__":
    main()
