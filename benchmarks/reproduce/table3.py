"""Table III: sample quality of class-conditional generation.

    python -m benchmarks.reproduce table3 [--presets A,E] [--protocols paper,recipes]
        [--steps 5000] [--until-annealed] [--seeds 0,1,2] [--judge small|paper] [--judges 5]
        [--solvers sgd,em]

Sample quality of class-conditional generation, one DCGMM per class (the paper's
protocol): an independent CNN evaluator (``dcgmm.evaluation.judge``) trained on the real training
set classifies 1000 samples per class; we report its accuracy and the Fréchet distance in its
feature space (not comparable to published FIDs). ``--tiny`` runs everything on a few hundred
images for a few steps, so that a test can run this script end to end.
"""

import argparse
import dataclasses
import itertools
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.reproduce.common import (
    TIMING_FILE,
    extend_run,
    mean_sd,
    run_record,
    train_run,
    two_way_standard_error,
)
from benchmarks.reproduce.protocols import (
    OUTLIER_RECIPES,
    SAMPLING_E,
    SAMPLING_E_KNOBS,
    Recipe,
    model_name,
    paper_recipe,
    protocol_solver_pairs,
)
from benchmarks.reproduce.table3_report import grid_file, write_table3
from dcgmm import DCGMM, load_dataset
from dcgmm.evaluation.judge import (
    Judge,
    accuracy,
    load_evaluator,
    sample_quality,
    save_evaluator,
    train_evaluator,
)
from dcgmm.generation.sampling import SamplingConfig, sample
from dcgmm.generation.sharpening import Sharpening
from dcgmm.io.data import Dataset
from dcgmm.io.images import save_grid
from dcgmm.training.checkpoint import load_model
from dcgmm.training.config import options_for_solver

# 2022 paper, Table III: evaluator accuracy (%) on class-conditional samples.
PAPER_TABLE3 = {
    ("mnist", "A"): 98.2,
    ("mnist", "B"): 98.7,
    ("mnist", "E"): 99.1,
    ("mnist", "F"): 99.9,
    ("fashion-mnist", "A"): 80.3,
    ("fashion-mnist", "B"): 83.6,
    ("fashion-mnist", "E"): 94.5,
    ("fashion-mnist", "F"): 89.0,
}
PAPER_TABLE3_SD = {("fashion-mnist", "E"): 1.7}  # the sds the issues quote
PAPER_JUDGE_EPOCHS = 15  # Table VII's CNN is trained 15 epochs


def sampling_for(
    model: DCGMM, protocol: str = "paper", args: argparse.Namespace | None = None
) -> SamplingConfig:
    """The sampling knobs: top-S 2 below the top layer, all components at the top.

    The recipes' ``sampling-E`` script adds noise divisor 20; the paper protocol uses 10.
    ``args`` may override them for an ablation (``--top-s``, ``--noise-divisor``,
    ``--sharpen``, ``--sharpen-rate``; see :func:`knobs_label`).
    """
    gmm = [index for index, _ in model.gmm_layers()]
    divisor = SAMPLING_E_KNOBS["noise_divisor"] if protocol == "recipes" else 10.0
    top_s = 2
    sharpening = None
    if args is not None:
        top_s = args.top_s or top_s
        divisor = args.noise_divisor if args.noise_divisor is not None else divisor
        if args.sharpen:
            sharpening = Sharpening(iterations=args.sharpen, rate=sharpen_rate(args))
    return SamplingConfig(
        top_s={i + 1: top_s for i in gmm[:-1]},
        noise_divisor=divisor or None,  # 0: no noise
        sharpening=sharpening,
    )


def sharpen_rate(args: argparse.Namespace) -> float:
    """The sharpening rate per sample: ``--sharpen-rate``, else the 2022 paper's 1.0 on the
    mean of a batch of 100 (0.01 per sample, see :class:`Sharpening`)."""
    if args.sharpen_rate is not None and not args.sharpen:
        raise SystemExit("--sharpen-rate needs --sharpen N (the iterations)")
    return 0.01 if args.sharpen_rate is None else args.sharpen_rate


def knobs_label(args: argparse.Namespace) -> str:
    """Name the sampling knobs that differ from the protocol's (for the row's model name)."""
    rate = sharpen_rate(args)  # refuses a rate without iterations
    parts = []
    if args.top_s:
        parts.append(f"top-S {args.top_s}")
    if args.noise_divisor is not None:
        parts.append(f"noise divisor {args.noise_divisor:g}" if args.noise_divisor else "no noise")
    if args.sharpen:
        parts.append(f"sharpened {args.sharpen} x {rate:g}")
    return f" [{', '.join(parts)}]" if parts else ""


def layers_label(args: argparse.Namespace) -> str:
    """Name the layer-mode ablation (``--shared-layers``) for the row's model name."""
    return " [shared layers]" if args.shared_layers else ""


def judge_label(args: argparse.Namespace) -> str:
    """Name a judge other than the default (our small CNN at its epochs) for the row's model.

    The judge is part of a row's key: the same samples judged by the paper's CNN are a row
    of their own beside the small judge's, not a replacement of it.
    """
    epochs, cut = judge_epochs(args)
    if args.judge == "small" and not cut:
        return ""
    return f" [{args.judge} judge" + (f", {epochs} epochs]" if cut else "]")


def judge_epochs(args: argparse.Namespace) -> tuple[int, bool]:
    """Return the judge's epochs and whether they differ from its kind's default."""
    default = PAPER_JUDGE_EPOCHS if args.judge == "paper" else args.evaluator_epochs
    epochs = args.judge_epochs or default
    return epochs, epochs != default


def ablated_recipe(recipe: Recipe, args: argparse.Namespace) -> Recipe:
    """The recipe, with its independent GMM layers made shared under ``--shared-layers``.

    One factor of the recipes protocol at a time: the layer chain, K, delays and sampling
    knobs stay the recipe's. A recipe without an independent layer is refused.
    """
    if not args.shared_layers:
        return recipe
    if ",indep" not in recipe.spec:
        raise SystemExit(f"--shared-layers: {recipe.spec} has no independent GMM layer to share")
    note = f"{recipe.note}; its independent layers shared (ablation)".lstrip("; ")
    return dataclasses.replace(recipe, spec=recipe.spec.replace(",indep", ""), note=note)


def class_recipe(preset: str, protocol: str) -> Recipe:
    """The class models' layer chain and options: Table V, or the sampling-E/outlier recipes."""
    if protocol == "paper":
        return paper_recipe(preset, 0)
    if preset == "E":
        return SAMPLING_E
    return OUTLIER_RECIPES[preset]


def get_judges(
    dataset: str, data_dir: Path, runs: Path, args: argparse.Namespace
) -> list[tuple[Any, dict[str, Any]]]:
    """Train (or reuse) ``args.judges`` judges of ``dataset`` (seeds 0, 1, ...)."""
    judges = []
    full, cut = judge_epochs(args)
    epochs = 1 if args.tiny else full
    # A judge trained for other than its default epochs is cached apart from the default one.
    tag = f"judge-{args.judge}" + (f"-e{full}" if cut else "")
    # The paper's Adam rate 0.01 does not train its CNN here: 10.0% test accuracy after 2
    # epochs on 5,000 built-in digits, against 91.6% at 1e-3 (measured 2026-12-01).
    lr = 1e-3
    for seed in range(args.judges):
        folder = runs / dataset / f"{tag}-{seed}"
        if not (folder / "evaluator.json").exists():
            train = load_dataset(data_dir / dataset, limit=2000 if args.tiny else None)
            test = load_dataset(data_dir / dataset, split="test", limit=500 if args.tiny else None)
            start = time.perf_counter()
            model = train_evaluator(train.images, train.labels, n_classes=10, epochs=epochs,
                                    seed=seed, lr=lr, architecture=args.judge)  # fmt: skip
            info = {
                "data": str(data_dir / dataset),
                "epochs": epochs,
                "lr": lr,
                "seed": seed,
                "train_seconds": round(time.perf_counter() - start, 1),
                "test_accuracy": accuracy(model, test.images, test.labels),
                "n_test": len(test),
            }
            save_evaluator(folder, model, info)
            print(f"{dataset} judge {args.judge} {seed}: {100 * info['test_accuracy']:.2f}%")
        judges.append(load_evaluator(folder))
    return judges


def judges_on_real(
    judges: list[tuple[Judge, dict[str, Any]]], real: Dataset
) -> tuple[list[float], list[torch.Tensor]]:
    """Return each class's accuracy (%) of the judges on real test images (mean over judges)
    and each judge's features of those images (for every Fréchet distance it computes).

    The per-class accuracy is what a class's sample accuracy is to be read against: a judge
    that confuses real shirts with T-shirts confuses sampled ones too.
    """
    labels = real.labels.numpy()
    per_judge, features = [], []
    for judge, _info in judges:
        predicted, judged = judge.predict(real.images)
        per_judge.append([float((predicted.numpy()[labels == c] == c).mean()) for c in range(10)])
        features.append(judged)
    return (100 * np.mean(per_judge, axis=0)).tolist(), features


def train_class_model(
    recipe: Recipe, dataset: str, data_dir: Path, cls: int, out: Path, *, steps: int,
    seed: int, tiny: bool, until_annealed: bool, solver: str = "sgd",
) -> dict[str, Any]:  # fmt: skip
    """Train one DCGMM on one class (reuse a finished run); return its record."""
    if (out / TIMING_FILE).exists():
        return run_record(out)
    data = load_dataset(data_dir / dataset, classes=[cls], limit=300 if tiny else None)
    options = {**options_for_solver(recipe.train, solver), "solver": solver}
    if until_annealed:
        options["until_annealed"] = True
    train_run(
        recipe.spec,
        data,
        out,
        preset=None,
        epochs=None,
        steps=20 if tiny else steps,
        seed=1000 * seed + cls,
        data_info={"source": str(data_dir / dataset), "classes": str(cls)},
        **options,
    )
    return run_record(out)


def save_class_grid(samples: list[torch.Tensor], path: Path, per_row: int = 12) -> None:
    """Write the first ``per_row`` samples of every class, a row per class."""
    rows = torch.cat([s[:per_row] for s in samples])
    path.parent.mkdir(parents=True, exist_ok=True)
    save_grid(path, rows, n_cols=min(per_row, samples[0].shape[0]), scale=2)


def table3(args: argparse.Namespace) -> dict[str, Any]:
    """Train per-class models per seed, sample, judge with every judge; return the rows."""
    data_dir, runs = Path(args.data_dir), Path(args.runs)
    knobs_label(args)  # refuses a knob given without what it acts on
    per_class = 20 if args.tiny else args.per_class
    seeds = [int(s) for s in args.seeds.split(",")]
    rows, runs_rows = [], []
    for dataset in args.datasets.split(","):
        judges = get_judges(dataset, data_dir, runs, args)
        real = load_dataset(data_dir / dataset, split="test", limit=500 if args.tiny else None)
        real_per_class, real_features = judges_on_real(judges, real)
        pairs = protocol_solver_pairs(args.protocols, args.solvers)
        for preset, (protocol, solver) in itertools.product(args.presets.split(","), pairs):
            recipe = ablated_recipe(class_recipe(preset, protocol), args)
            name = model_name(preset, solver) + layers_label(args) + knobs_label(args)
            name += judge_label(args)
            accuracies, frechet, records, class_accuracies = [], [], [], []
            for seed in seeds:
                samples, intended = [], []
                for cls in range(10):
                    budget = "tiny" if args.tiny else f"s{args.steps}" + (
                        "-annealed" if args.until_annealed else "")  # fmt: skip
                    budget += "-em" if solver == "em" else ""
                    budget += "-shared" if args.shared_layers else ""
                    out = (
                        runs / dataset / protocol / preset / f"{budget}-seed{seed}" / f"class{cls}"
                    )
                    record = train_class_model(
                        recipe, dataset, data_dir, cls, out, steps=args.steps, seed=seed,
                        tiny=args.tiny, until_annealed=args.until_annealed,
                        solver=solver)  # fmt: skip
                    if args.extend_to and not record["annealed"]:  # the budget ablation
                        source, out = (
                            out,
                            out.parents[1] / f"{budget}-to{args.extend_to}-seed{seed}" / out.name,
                        )
                        data = load_dataset(data_dir / dataset, classes=[cls],
                                            limit=300 if args.tiny else None)  # fmt: skip
                        record = extend_run(source, out, args.extend_to, data)
                    records.append(record)
                    model = load_model(out)
                    generator = torch.Generator().manual_seed(1000 + cls)
                    config = sampling_for(model, protocol, args)
                    samples.append(sample(model, per_class, config=config, generator=generator))
                    intended.append(torch.full((per_class,), cls))
                if seed == seeds[0]:
                    png = grid_file(dataset, name, protocol, solver)
                    save_class_grid(samples, Path(args.out) / "table3" / png)
                for j, (judge, _info) in enumerate(judges):
                    quality = sample_quality(judge, torch.cat(samples), real.images,
                                             torch.cat(intended),
                                             real_features=real_features[j])  # fmt: skip
                    accuracies.append(100 * quality["accuracy"])
                    class_accuracies.append(quality["per_class_accuracy"])
                    frechet.append(quality["frechet_distance"])
                    runs_rows.append({"dataset": dataset, "preset": preset, "model": name,
                                      "protocol": protocol, "seed": seed, "judge": j,
                                      "accuracy": quality["accuracy"],
                                      "frechet_distance": quality["frechet_distance"]})  # fmt: skip
            mean, sd = mean_sd(accuracies)
            errors = standard_error_fields(accuracies, len(seeds), len(judges))
            row = {
                "table": "III",
                "dataset": dataset,
                "model": name,
                "solver": solver,
                "spec": recipe.spec,
                "protocol": protocol,
                "recipe_note": recipe.note,
                "metric": f"judge accuracy % on class-conditional samples ({args.judge} CNN"
                + (f", {args.judge_epochs} epochs)" if args.judge_epochs else ")"),
                "mean": mean,
                "sd": sd,
                "n_seeds": len(seeds),
                "n_judges": len(judges),
                "steps": max(r["steps"] for r in records),
                "annealed_models": sum(bool(r["annealed"]) for r in records),
                "extended_models": sum("extended_from" in r for r in records),
                "n_models": len(records),
                "train_seconds": round(sum(r["seconds"] for r in records), 1),
                "frechet_distance": mean_sd(frechet)[0],
                "judge_test_accuracy": [info["test_accuracy"] for _, info in judges],
                # % per intended class, mean over seeds x judges; the judges' own on real images
                "per_class_accuracy": (100 * np.mean(class_accuracies, axis=0)).tolist(),
                "judges_real_per_class_accuracy": real_per_class,
                "samples_per_class": per_class,
                "sampling": repr(sampling_for(model, protocol, args)),
                "paper_mean": PAPER_TABLE3.get((dataset, preset)),
                "paper_sd": PAPER_TABLE3_SD.get((dataset, preset)),
                **errors,
            }
            print(json.dumps(row), flush=True)
            rows.append(row)
    return {"rows": rows, "runs": runs_rows}


def standard_error_fields(accuracies: list[float], n_seeds: int, n_judges: int) -> dict[str, float]:
    """Return ``{"se", "se_df"}`` of a seeds x judges row (accuracies seed-major), else {}."""
    if n_seeds < 2 or n_judges < 2:
        return {}
    table = [accuracies[i * n_judges : (i + 1) * n_judges] for i in range(n_seeds)]
    se, df = two_way_standard_error(table)
    return {"se": se, "se_df": df}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Table III's options."""
    parser.add_argument("--presets", default="A,E")
    parser.add_argument("--protocols", default="paper,recipes")
    parser.add_argument("--steps", type=int, default=5000, help="SGD steps of every class model")
    parser.add_argument("--until-annealed", action="store_true",
                        help="stop each class model once annealed (--steps the cap)")  # fmt: skip
    parser.add_argument("--seeds", default="0", help="seeds of the class models, e.g. 0,1,2")
    parser.add_argument("--per-class", type=int, default=1000, help="samples per class")
    parser.add_argument(
        "--extend-to",
        type=int,
        help="the budget ablation: a class model not annealed at --steps is copied and trained "
        "on to this many steps (its layers keep their start steps); write it with another --out",
    )
    parser.add_argument("--judge", default="small", choices=("small", "paper"),
                        help="the judge CNN: ours, or the paper's Table VII")  # fmt: skip
    parser.add_argument("--judges", type=int, default=1, help="judges trained (the paper: 5)")
    parser.add_argument("--evaluator-epochs", type=int, default=5, help="the small judge's")
    parser.add_argument(
        "--judge-epochs",
        type=int,
        help="epochs of the judge, either kind (default: 15 for the paper's, --evaluator-epochs "
        "for ours); a cut paper judge is cached apart and named in the metric",
    )
    parser.add_argument(
        "--solvers", default="sgd", help="the class models' GMM-layer solvers: sgd, em or sgd,em"
    )
    parser.add_argument(
        "--shared-layers",
        action="store_true",
        help="the layer-mode ablation: train the recipe's independent GMM layers as shared ones "
        "(K, delays and sampling knobs kept); the row's model name says so",
    )
    knobs = parser.add_argument_group("sampling ablation (the row's model name lists them)")
    knobs.add_argument("--top-s", type=int, help="top-S below the top layer (default 2)")
    knobs.add_argument("--noise-divisor", type=float,
                       help="default 10 (paper), 20 (recipes); 0 for no noise")  # fmt: skip
    knobs.add_argument("--sharpen", type=int, default=0, help="sharpening iterations (0: none)")
    knobs.add_argument(
        "--sharpen-rate",
        type=float,
        help="per-sample rate; default 0.01, the 2022 paper's 1.0 on the mean of a batch of 100",
    )


def run(args: argparse.Namespace, command: str) -> None:
    """Run Table III and write its results."""
    start = time.perf_counter()
    result = table3(args)
    write_table3(result, Path(args.out), command, time.perf_counter() - start)
