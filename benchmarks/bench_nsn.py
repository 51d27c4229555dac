"""Time the NSN fit in a fresh process: the wall seconds of ``NSN.fit`` on MNIST digits.

    python -m benchmarks.bench_nsn [--images 2000] [--max-iters 300] [--seed 0]

The fit of ``dcgmm train --model nsn`` (our default thresholds, 8 new filters per iteration),
on the first ``--images`` training digits of the full MNIST under ``../shared/data``. Prints
one JSON object: seconds, filters per layer, iterations per layer and a hash of the filters
(two versions that fit the same filters print the same hash).
"""

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import torch

from dcgmm import load_dataset
from dcgmm.baselines.nsn import NSN

MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"
TAUS = [-0.93, 0.75, 0.65]  # dcgmm.cli.baselines.DEFAULT_TAUS["28x28"]


def main(argv: list[str]) -> None:
    """Fit and print the JSON row."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--max-iters", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0, help="seeds the new filters' sampling")
    args = parser.parse_args(argv)
    images = load_dataset(MNIST, limit=args.images).images
    nsn = NSN((28, 28, 1), "28x28")
    start = time.perf_counter()
    records = nsn.fit(
        images,
        taus=TAUS,
        max_iters=args.max_iters,
        new_filters_per_iter=8,
        generator=torch.Generator().manual_seed(args.seed),
    )
    seconds = time.perf_counter() - start
    filters = b"".join(layer.means.numpy().tobytes() for layer in nsn.nsn_layers)
    row = {
        "nsn_fit_s": seconds,
        "images": args.images,
        "seed": args.seed,
        "threads": torch.get_num_threads(),
        "filters": [layer.n_filters for layer in nsn.nsn_layers],
        "iterations": [len(r.n_filters) for r in records],
        "filters_sha256": hashlib.sha256(filters).hexdigest()[:16],
    }
    print(json.dumps(row))


if __name__ == "__main__":
    main(sys.argv[1:])
