"""Stability run: do presets A-G train without NaN/Inf on real data, over several seeds?

    python -m benchmarks.stability [--presets A,...,G] [--datasets mnist,fashion-mnist]
                                   [--seeds 3] [--steps 300] [--n-train 10000] [--tiny]

Per preset x dataset x seed: a fresh model (the preset's recipe learning-rate factors, batch
100, every other option at its default) trains ``--steps`` steps on the first ``--n-train``
training images, under the numerical watchdog (``on_nonfinite="stop"``). Counted:

- non-finite objectives: the watchdog checks every layer's objective at every step; a run stops
  at the first one, so this is 0 or 1 per run (its step, layer and message are kept);
- non-finite parameter entries after training, per layer;
- non-finite held-out scores: per-sample log-likelihood, max-component score and training
  objective of every GMM layer on the first ``--n-heldout`` test images;
- NumericalWarnings raised anywhere (a position whose log-joints are all -inf).

Writes ``docs/results/stability.md`` (table) and ``stability.json`` (every number). One torch
thread by default: the machine is shared.
"""

import argparse
import datetime
import json
import platform
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch

import dcgmm
from dcgmm import DCGMM, TrainConfig, Trainer, load_dataset
from dcgmm.exceptions import NumericalWarning
from dcgmm.io.data import Dataset
from dcgmm.spec import PRESETS
from dcgmm.training.config import PRESET_TRAIN_OVERRIDES
from dcgmm.training.watchdog import NumericalError

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data"
DEFAULT_OUT = ROOT / "docs" / "results"
SCORES = ("loglik", "max_component", "annealed")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.stability", description=__doc__)
    parser.add_argument("--presets", default=",".join(PRESETS))
    parser.add_argument("--datasets", default="mnist,fashion-mnist")
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--n-train", type=int, default=10000, help="first N training images")
    parser.add_argument("--n-heldout", type=int, default=1000, help="first N test images")
    parser.add_argument("--data-dir", default=str(DEFAULT_DATA))
    parser.add_argument("--out", default=str(DEFAULT_OUT))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--builtin",
        action="store_true",
        help="the package's built-in subsets (10k/2k images) instead of --data-dir",
    )
    parser.add_argument(
        "--tiny",
        action="store_true",
        help="--builtin, 1 seed, 20 steps, batch 20, 400 images (a smoke test)",
    )
    args = parser.parse_args(argv)
    if args.tiny:
        args.builtin = True
        args.seeds, args.steps, args.batch_size, args.n_train, args.n_heldout = 1, 20, 20, 400, 100
    return args


def load(args: argparse.Namespace, dataset: str) -> tuple[Dataset, Dataset]:
    """Return (training subset, held-out batch)."""
    source: str | Path = dataset if args.builtin else Path(args.data_dir) / dataset
    train = load_dataset(source, split="train", limit=args.n_train)
    heldout = load_dataset(source, split="test", limit=args.n_heldout)
    return train, heldout


def count_nonfinite(values: torch.Tensor) -> int:
    return int((~torch.isfinite(values)).sum())


def run_one(
    preset: str,
    train: Dataset,
    heldout: Dataset,
    *,
    seed: int,
    steps: int,
    batch_size: int,
) -> dict[str, Any]:
    """Train one model under the watchdog; return its non-finite counts and final scores."""
    generator = torch.Generator().manual_seed(seed)
    model = DCGMM.from_spec(preset, train.image_shape, generator=generator)
    config = TrainConfig(
        steps=steps,
        seed=seed,
        batch_size=batch_size,
        log_every=max(steps // 6, 1),
        checkpoint_every=steps,
        **PRESET_TRAIN_OVERRIDES.get(preset, {}),
    )
    records: list[dict[str, Any]] = []
    stopped = None
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", NumericalWarning)
        trainer = Trainer(model, config, train.images)
        try:
            trainer.run(callback=lambda s, n, record: records.append(record) if record else None)
        except NumericalError as err:
            stopped = {"step": err.event.step if err.event else trainer.step, "message": str(err)}
        train_seconds = time.perf_counter() - start
        scores = model.scores(heldout.images)
    gmm_numbers = [index + 1 for index, _ in model.gmm_layers()]
    heldout_rows = []
    for number, layer_scores in zip(gmm_numbers, scores, strict=True):
        per_sample = {k: getattr(layer_scores, k).flatten(1).mean(1) for k in SCORES}
        heldout_rows.append(
            {
                "layer": number,
                "nonfinite": {k: count_nonfinite(v) for k, v in per_sample.items()},
                "mean_loglik": float(per_sample["loglik"].mean()),
            }
        )
    final = records[-1] if records else None
    return {
        "preset": preset,
        "spec": model.spec,
        "seed": seed,
        "steps_done": trainer.step,
        "stopped": stopped,
        "nonfinite_objective_events": int(stopped is not None),
        "nonfinite_parameters": {
            str(i + 1): sum(count_nonfinite(p) for p in layer.parameters())
            for i, layer in enumerate(model.layers)
            if list(layer.parameters())  # the trainable layers
        },
        "heldout": heldout_rows,
        "numerical_warnings": [str(w.message) for w in caught if w.category is NumericalWarning],
        "final_objective": {
            str(layer.index): layer.value for layer in (final.layers if final else ())
        },
        "final_step_logged": final.step if final else None,
        "train_seconds": round(train_seconds, 2),
    }


def nonfinite_total(row: dict[str, Any]) -> int:
    """Return every non-finite count of a run, added up."""
    return (
        row["nonfinite_objective_events"]
        + sum(row["nonfinite_parameters"].values())
        + sum(sum(h["nonfinite"].values()) for h in row["heldout"])
        + len(row["numerical_warnings"])
    )


def table(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| dataset | preset | seed | steps | non-finite objective | non-finite parameters "
        "| non-finite held-out scores | warnings | final objective per GMM layer (nats) "
        "| held-out log-lik of the top layer | train s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    for r in rows:
        objective = ", ".join(
            f"{k}: {v:.1f}" if v is not None else f"{k}: -" for k, v in r["final_objective"].items()
        )
        top = r["heldout"][-1]
        lines.append(
            f"| {r['dataset']} | {r['preset']} | {r['seed']} | {r['steps_done']} "
            f"| {r['nonfinite_objective_events']} | {sum(r['nonfinite_parameters'].values())} "
            f"| {sum(sum(h['nonfinite'].values()) for h in r['heldout'])} "
            f"| {len(r['numerical_warnings'])} | {objective} | {top['mean_loglik']:.1f} "
            f"| {r['train_seconds']:.1f} |"
        )
    return lines


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    rows = []
    for dataset in args.datasets.split(","):
        train, heldout = load(args, dataset)
        for preset in args.presets.split(","):
            for seed in range(args.seeds):
                row = {"dataset": dataset, **run_one(
                    preset, train, heldout, seed=seed, steps=args.steps,
                    batch_size=args.batch_size,
                )}  # fmt: skip
                print(json.dumps(row), flush=True)
                rows.append(row)
    wall = time.perf_counter() - start
    command = "python -m benchmarks.stability " + " ".join(
        argv if argv is not None else sys.argv[1:]
    )
    n_bad = sum(nonfinite_total(r) > 0 for r in rows)
    result = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.platform()}, {platform.processor() or platform.machine()}",
        "threads": torch.get_num_threads(),
        "versions": {
            "dcgmm": dcgmm.__version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
        "command": command.strip(),
        "wall_seconds": round(wall, 1),
        "settings": {
            k: getattr(args, k)
            for k in ("steps", "seeds", "batch_size", "n_train", "n_heldout", "builtin", "tiny")
        },
        "runs_with_nonfinite_values": n_bad,
        "rows": rows,
    }
    lines = [
        "# Stability: presets A-G under the numerical watchdog",
        "",
        f"- date: {result['date']}; machine: {result['machine']}, {result['threads']} torch "
        f"thread(s); dcgmm {dcgmm.__version__}, torch {torch.__version__}",
        f"- command: `{result['command']}` ({wall / 60:.1f} min wall)",
        f"- {len(rows)} runs: presets {args.presets} x datasets {args.datasets} x "
        f"{args.seeds} seed(s) x {args.steps} steps of batch {args.batch_size} on the first "
        f"{args.n_train} training images; held-out scores on the first {args.n_heldout} test "
        "images",
        f"- **runs with any non-finite value: {n_bad} of {len(rows)}**",
        "",
        "Counts: non-finite objective = runs the watchdog stopped (it checks every layer's "
        "objective at every step, and stops at the first NaN/Inf); parameters = non-finite "
        "entries after training; held-out = non-finite per-sample scores (log-likelihood, "
        "max-component, training objective) of every GMM layer; warnings = NumericalWarnings. "
        "The final objective is each GMM layer's mean over the last logging interval (the "
        "annealed max-component log-likelihood per position, in nats; layers that start late "
        "have trained for fewer steps). Recipes' learning-rate factors from "
        "`PRESET_TRAIN_OVERRIDES`; everything else at the `TrainConfig` defaults.",
        "",
        *table(rows),
    ]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "stability.md").write_text("\n".join(lines) + "\n")
    (out / "stability.json").write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out / 'stability.md'}; {n_bad} of {len(rows)} runs with non-finite values")
    return result


if __name__ == "__main__":
    main()
