"""The 2021 paper's experiments: clustering per instance, sampling diversity, top-S diversity.

    python -m benchmarks.reproduce paper2021 [--datasets mnist] [--epochs 25] [--seeds 0]

The 2021 code is not public and its configuration table is garbled: the instances below are
the spec's best reading (``../shared/specs/dcgmm.md`` section 10), each guess named. Per
instance: the top layer's Dunn index and Davies-Bouldin score on 2,000 test images (as in
Table I here), and the diversity of its samples.

Diversity, as a number: draw 1,000 samples with top-S = S at **every** GMM layer (S = 1 is the
paper's Figure 4, "top-1 samples"; 2, 5, 10 its Figure 5), no noise; two samples are
**duplicates** when they are equal pixel for pixel (no noise: a sample is a function of the
components drawn); the duplicated fraction is ``1 - distinct / 1000``.
"""

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.reproduce.common import (
    header_lines,
    mean_sd,
    run_record,
    train_run,
    write_results,
)
from dcgmm import load_dataset
from dcgmm.evaluation.clustering import clustering_scores
from dcgmm.generation.sampling import SamplingConfig, sample
from dcgmm.io.images import save_grid
from dcgmm.model import DCGMM

# (name, spec, what kind, the guess made). F(fy,fx,sy,sx) as in the spec's reading.
INSTANCES = [
    ("1L", "F(28,1)-G(25)", "flat", "one GMM on whole images; K 25 as the first layers"),
    ("2L-a", "F(20,20,8,8)-G(25)-F(2,1)-G(36)", "convolutional", "G(36) reads 2x2x25 = 100"),
    ("2L-b", "F(7,7,7,7)-G(25)-F(4,1)-G(36)", "convolutional", "4x4 non-overlapping patches"),
    ("2L-c", "F(7,7,3,3)-G(25)-F(8,1)-G(36)", "convolutional", "8x8 overlapping patches"),
    ("2L-d", "F(28,1)-G(25)-F(1,1)-G(36)", "deep, non-convolutional", "as the text says"),
    ("2L-e", "F(7,7,3,3)-G(25)-P(2,2)-F(4,1)-G(36)", "convolutional, pooled",
     "the table says F(8,8,1,1) or pooling: pooling, so that it differs from 2L-c"),
]  # fmt: skip
TOP_S = (1, 2, 5, 10)
N_SAMPLES = 1000
CLUSTERING_SAMPLES = 2000


def duplicated_fraction(images: torch.Tensor) -> float:
    """Return ``1 - distinct / n`` for images compared pixel for pixel."""
    distinct = torch.unique(images.reshape(images.shape[0], -1), dim=0).shape[0]
    return 1.0 - distinct / images.shape[0]


def diversity(model: DCGMM, n: int, seed: int) -> dict[str, float]:
    """Return the duplicated fraction of ``n`` samples for every top-S of :data:`TOP_S`."""
    out = {}
    for s in TOP_S:
        drawn = sample(model, n, config=SamplingConfig(top_s=s),
                       generator=torch.Generator().manual_seed(seed))  # fmt: skip
        out[str(s)] = duplicated_fraction(drawn)
    return out


def paper2021(args: argparse.Namespace) -> dict[str, Any]:
    """Train (or reuse) every instance and seed; measure clustering and diversity."""
    data_dir, runs, out = Path(args.data_dir), Path(args.runs), Path(args.out)
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = []
    n = 100 if args.tiny else N_SAMPLES
    for dataset in args.datasets.split(","):
        train = load_dataset(data_dir / dataset, limit_per_class=60 if args.tiny else None)
        test = load_dataset(
            data_dir / dataset, split="test", limit_per_class=30 if args.tiny else None
        )
        for name, spec, kind, guess in INSTANCES:
            per_seed = []
            for seed in seeds:
                budget = "tiny" if args.tiny else f"e{args.epochs}"
                run_dir = runs / "paper2021" / dataset / f"{name}-{budget}-s{seed}"
                model, seconds = train_run(
                    spec, train, run_dir, preset=None,
                    epochs=None if args.tiny else args.epochs, steps=20 if args.tiny else None,
                    seed=seed, data_info={"source": str(data_dir / dataset), "classes": None},
                )  # fmt: skip
                record = run_record(run_dir)
                clusters = clustering_scores(model, test.images[:CLUSTERING_SAMPLES])
                per_seed.append({
                    "seed": seed, "steps": record["steps"], "annealed": record["annealed"],
                    "train_seconds": round(seconds, 1), "clustering": clusters,
                    "duplicated": diversity(model, n, seed),
                })  # fmt: skip
                if seed == seeds[0]:
                    grid = sample(model, 40, config=SamplingConfig(top_s=1),
                                  generator=torch.Generator().manual_seed(seed))  # fmt: skip
                    save_grid(out / "paper2021" / f"{dataset}_{name}_top1.png", grid, n_cols=20)
            row = {
                "dataset": dataset, "instance": name, "spec": spec, "kind": kind, "guess": guess,
                "n_seeds": len(seeds), "steps": per_seed[0]["steps"],
                "annealed_seeds": sum(bool(r["annealed"]) for r in per_seed),
                "dunn": mean_sd([r["clustering"]["dunn"] for r in per_seed]),
                "davies_bouldin": mean_sd([r["clustering"]["davies_bouldin"] for r in per_seed]),
                "duplicated": {s: mean_sd([r["duplicated"][s] for r in per_seed])
                               for s in per_seed[0]["duplicated"]},
                "n_samples": n, "runs": per_seed,
            }  # fmt: skip
            print(json.dumps({k: v for k, v in row.items() if k != "runs"}), flush=True)
            rows.append(row)
    return {"rows": rows}


def write_paper2021(result: dict[str, Any], out: Path, command: str, wall: float) -> None:
    """Write docs/results/paper2021.md and paper2021.json."""
    lines = [
        "# The 2021 paper: clustering, sampling diversity and top-S diversity per instance",
        "",
        *header_lines(command, wall),
        "- instances: the spec's reading of the garbled configuration table (section 10), "
        "each guess named below; every model trained on the whole training set.",
        f"- diversity: {result['rows'][0]['n_samples']} samples with top-S = S at every GMM "
        "layer, no noise; duplicates = equal pixel for pixel (without noise a sample is a "
        "function of the components drawn); the number is the duplicated fraction "
        "1 - distinct / n (lower is more diverse). Mean +- sd over seeds (the annealed column "
        "counts them).",
        "- clustering: the top layer's hard assignments of 2,000 test images; Dunn index "
        "(higher is better), Davies-Bouldin (lower is better).",
        "",
        "| dataset | instance | kind | steps | annealed | Dunn | Davies-Bouldin | "
        + " | ".join(f"duplicated, top-{s}" for s in TOP_S)
        + " |",
        "|---|---|---|---:|---:|---:|---:|" + "---:|" * len(TOP_S),
    ]
    for r in result["rows"]:
        dup = " | ".join(  # one seed has no spread to show
            f"{100 * m:.1f}%" + (f" +- {100 * sd:.1f}" if r["n_seeds"] > 1 else "")
            for m, sd in (r["duplicated"][str(s)] for s in TOP_S)
        )
        lines.append(
            f"| {r['dataset']} | {r['instance']} `{r['spec']}` | {r['kind']} | {r['steps']} | "
            f"{r['annealed_seeds']}/{r['n_seeds']} | {r['dunn'][0]:.4f} | "
            f"{r['davies_bouldin'][0]:.2f} | {dup} |"
        )
    lines += ["", "Guesses:", ""]
    lines += [f"- {r['instance']}: {r['guess']}" for r in result["rows"][: len(INSTANCES)]]
    lines += ["", "Top-1 samples (the first 40, first seed):", ""]
    for r in result["rows"]:
        lines.append(
            f"![{r['instance']}](paper2021/{r['dataset']}_{r['instance']}_top1.png) {r['instance']}"
        )
    write_results(out, "paper2021", lines, result)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The 2021 paper's options."""
    parser.add_argument("--epochs", type=int, default=25, help="the 2021 paper's 25")
    parser.add_argument("--seeds", default="0")


def run(args: argparse.Namespace, command: str) -> None:
    """Run the 2021 paper's experiments and write their results."""
    start = time.perf_counter()
    result = paper2021(args)
    write_paper2021(result, Path(args.out), command, time.perf_counter() - start)
