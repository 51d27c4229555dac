"""Table I/II: outlier detection, train on classes 1-9, class 0 of the test set as outliers.

    python -m benchmarks.reproduce table1 [--presets A,B,C,D,E,F,G] [--protocols paper,recipes]
        [--seeds 0,1,2] [--epochs 25] [--max-epochs N] [--until-annealed] [--solvers sgd,em]
        [--tiny]

Per preset, protocol (:mod:`benchmarks.reproduce.protocols`), dataset and seed: one DCGMM
trained on the training images of classes 1-9, its GMM layers by SGD (the papers') or by
stepwise EM (``--solvers em``, :mod:`dcgmm.layers.gmm_em`; an "EM" after the preset names
the row); rows are mean +- sd over the seeds;
the per-sample score is the top GMM layer's log-likelihood (exact, and max-component as in the
training loss at the annealing floor); AUC of the test set's classes 1-9 (inliers) against its
class 0 (outliers). Beside it: the AUC of every lower GMM layer, the top layer's Dunn index and
Davies-Bouldin score on the first 2000 test images, the paper's Table I and the peers'
published numbers of Table II (RAT-SPN and PD-SPN re-run by ``peers``). Pictures: ROC curves
of all presets per dataset, and per-position outlier maps of preset E's second GMM layer.
A run's rows merge into the stored ``table1.json`` (:mod:`.table1_merge`): rows of the same
dataset, preset and protocol are replaced, the others kept (delete the file to start afresh).
"""

import argparse
import itertools
import json
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.reproduce.common import (
    mean_sd,
    run_record,
    train_run,
)
from benchmarks.reproduce.protocols import model_name, outlier_recipe, protocol_solver_pairs
from benchmarks.reproduce.table1_merge import roc_key, thin_roc
from benchmarks.reproduce.table1_report import CONTRAST_SAMPLES, MAP_PRESET, write_table1
from dcgmm import load_dataset, load_model
from dcgmm.evaluation.clustering import clustering_scores
from dcgmm.evaluation.contrast import fit_layer_contrast
from dcgmm.evaluation.outliers import (
    fit_position_statistics,
    position_scores,
    roc_auc,
    roc_curve,
    to_pixels,
)
from dcgmm.evaluation.plots import save_outlier_maps
from dcgmm.io.data import Dataset
from dcgmm.model import DCGMM
from dcgmm.training.config import options_for_solver

PAPER_TABLE1 = {
    "mnist": {"A": 95.4, "B": 93.3, "C": 94.2, "D": 92.5, "E": 92.8, "F": 84.1, "G": 77.4},
    "fashion-mnist": {"A": 62.2, "B": 72.2, "C": 74.3, "D": 68.1, "E": 74.9, "F": 68.1, "G": 62.7},
}
PAPER_TABLE1_SD = {("mnist", "E"): 0.4}  # the sds the issues quote; the rest not at hand
INLIERS = tuple(range(1, 10))
CLUSTERING_SAMPLES = 2000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Table I's options."""
    parser.add_argument("--presets", default="A,B,C,D,E,F,G")
    parser.add_argument(
        "--protocols",
        default="paper,recipes",
        help="paper (Table V as printed), recipes, or both; PROTOCOL:em or :sgd picks that row's "
        "solver, e.g. paper,recipes,paper:em",
    )
    parser.add_argument("--epochs", type=int, default=25, help="the paper protocol's epochs")
    parser.add_argument(
        "--max-epochs", type=int, help="cap every model's epochs (the recipes train 25-80)"
    )
    parser.add_argument("--seeds", default="0", help="e.g. 0,1,2: rows are mean +- sd")
    parser.add_argument(
        "--until-annealed",
        nargs="?",
        const="paper,recipes",
        default="",
        metavar="PROTOCOLS",
        help="stop each model once it is annealed (its epochs the cap); only the models of "
        "these protocols (or PROTOCOL:PRESET) if given, e.g. --until-annealed recipes:E",
    )
    parser.add_argument(
        "--solvers",
        default="sgd",
        help="sgd (the papers'), em (stepwise EM), or sgd,em: for every protocol without :solver",
    )


def until_annealed(args: Any, protocol: str, preset: str) -> bool:
    """Whether a model trains until annealed: ``--until-annealed`` names its protocol, or
    ``PROTOCOL:PRESET`` names it alone (e.g. ``recipes:E``: the recipes' 80 epochs of E are
    hours on this CPU, those of A seconds)."""
    entries = (args.until_annealed or "").split(",")
    return protocol in entries or f"{protocol}:{preset}" in entries


def split_test(data_dir: Path, dataset: str, tiny: bool) -> tuple[Dataset, Dataset]:
    """Return (inliers, outliers) of the test split: classes 1-9 and class 0."""
    limit = 30 if tiny else None
    inliers = load_dataset(data_dir / dataset, split="test", classes=INLIERS, limit_per_class=limit)
    outliers = load_dataset(data_dir / dataset, split="test", classes=(0,), limit_per_class=limit)
    return inliers, outliers


def score_model(
    model: DCGMM, inliers: Dataset, outliers: Dataset, train: Dataset | None = None
) -> dict[str, Any]:
    """Return AUCs (exact and max-component, every GMM layer) and the top layer's ROC.

    With ``train`` and at least two GMM layers, also the layer contrast's AUC
    (:mod:`dcgmm.evaluation.contrast`: the top layer against the GMM layer below it, each
    standardised on ``CONTRAST_SAMPLES`` training images); else ``None``.
    """
    result: dict[str, Any] = {"contrast": None}
    per_image: dict[str, dict[int, Any]] = {}  # the exact scores' means, for the contrast
    for kind in ("loglik", "max_component"):
        maps_in = position_scores(model, inliers.images, kind=kind)
        maps_out = position_scores(model, outliers.images, kind=kind)
        result[kind] = {
            str(n): roc_auc(maps_in[n].flatten(1).mean(1), maps_out[n].flatten(1).mean(1))
            for n in maps_in
        }
        if kind == "loglik":
            top = max(maps_in)
            fpr, tpr, _ = roc_curve(
                maps_in[top].flatten(1).mean(1), maps_out[top].flatten(1).mean(1)
            )
            result["roc"] = (fpr, tpr)
            result["top_layer"] = top
            per_image = {role: {n: m.flatten(1).double().mean(1) for n, m in maps.items()}
                         for role, maps in (("in", maps_in), ("out", maps_out))}  # fmt: skip
    if train is not None and len(model.gmm_layer_numbers()) > 1:
        draw = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))
        c = fit_layer_contrast(model, train.images[draw[:CONTRAST_SAMPLES]])
        contrast = {role: c.combine(per_image[role][c.upper], per_image[role][c.lower])
                    for role in ("in", "out")}  # fmt: skip
        result["contrast"] = roc_auc(contrast["in"], contrast["out"])
    return result


def outlier_maps(
    model: DCGMM, train: Dataset, inliers: Dataset, outliers: Dataset, path: Path
) -> dict[str, Any]:
    """Draw the 2021 paper's per-position maps of the highest GMM layer with >1 position."""
    stats = fit_position_statistics(model, train.images)
    wide = [n for n, s in stats.items() if s.mean.numel() > 1]
    layer = wide[-1]
    rows, flagged = [], {}
    for role, data in (("inliers", inliers), ("outliers", outliers)):
        # Every 90th inlier: a few of each class, not only the file's first digits.
        step = max(len(data) // 10, 1) if role == "inliers" else 1
        chosen = data.images[::step][:10]
        scores = position_scores(model, data.images, kind="loglik")[layer]
        flags = stats[layer].outlier_map(scores).double()
        flagged[role] = float(flags.mean())
        pick = flags[::step][:10]
        rows.append((chosen, to_pixels(model, layer, pick)))
    save_outlier_maps(path, rows, n_cols=rows[0][0].shape[0])
    return {"layer": layer, "c": 2.0, "flagged_fraction": flagged, "png": path.name}


def table1(args: argparse.Namespace) -> dict[str, Any]:
    """Train (or reuse) every model and seed, score it; return per-seed and summary rows."""
    data_dir, runs, out = Path(args.data_dir), Path(args.runs), Path(args.out)
    seeds = [int(s) for s in args.seeds.split(",")]
    pairs = protocol_solver_pairs(args.protocols, args.solvers)
    runs_rows, summary, maps, roc = [], [], {}, {}
    for dataset in args.datasets.split(","):
        limit = 60 if args.tiny else None
        train = load_dataset(data_dir / dataset, classes=INLIERS, limit_per_class=limit)
        inliers, outliers = split_test(data_dir, dataset, args.tiny)
        for preset, (protocol, solver) in itertools.product(args.presets.split(","), pairs):
            recipe = outlier_recipe(preset, protocol, args.epochs)
            epochs = min(recipe.epochs, args.max_epochs or recipe.epochs)
            per_seed = []
            for seed in seeds:
                row = score_seed(args, dataset, (preset, protocol, solver), recipe, epochs,
                                 seed, (train, inliers, outliers))  # fmt: skip
                per_seed.append(row)
                runs_rows.append(row)
            summary.append(summarise(per_seed))
            first = per_seed[0]
            roc[roc_key(first)] = {"seed": first["seed"], "auc": first["auc"],
                                   "points": thin_roc(*first["roc"])}  # fmt: skip
            for row in per_seed:
                row.pop("roc")
            if preset == MAP_PRESET and (protocol, solver) == pairs[0]:
                png = out / "table1" / f"maps_{dataset}_{preset}.png"
                model = load_model(
                    model_dir(runs, dataset, (preset, protocol, solver), epochs, seeds[0], args)
                )
                maps[dataset] = outlier_maps(model, train, inliers, outliers, png)
    return {"runs": runs_rows, "rows": summary, "maps": maps, "roc": roc}


def model_dir(
    runs: Path, dataset: str, model: tuple[str, str, str], epochs: int, seed: int, args: Any
) -> Path:
    """Where the model of one (dataset, (preset, protocol, solver), budget, seed) is cached."""
    preset, protocol, solver = model
    annealed = "-annealed" if until_annealed(args, protocol, preset) else ""
    budget = "tiny" if args.tiny else f"e{epochs}{annealed}"
    budget += "-em" if solver == "em" else ""
    return runs / "table1" / dataset / protocol / f"{preset}-{budget}-s{seed}"


def score_seed(
    args: Any,
    dataset: str,
    model_key: tuple[str, str, str],
    recipe: Any,
    epochs: int,
    seed: int,
    data: tuple[Dataset, Dataset, Dataset],
) -> dict[str, Any]:
    """Train (or reuse) one model and return its row: AUCs, clustering, annealing, budget."""
    train, inliers, outliers = data
    preset, protocol, solver = model_key
    run_dir = model_dir(Path(args.runs), dataset, model_key, epochs, seed, args)
    options = {**options_for_solver(recipe.train, solver), "solver": solver}
    if until_annealed(args, protocol, preset):
        options["until_annealed"] = True
    model, seconds = train_run(
        recipe.spec,
        train,
        run_dir,
        preset=None,  # the recipe carries its factors
        epochs=None if args.tiny else epochs,
        steps=20 if args.tiny else None,
        seed=seed,
        data_info={"source": str(Path(args.data_dir) / dataset), "classes": "1-9"},
        **options,
    )
    record = run_record(run_dir)
    start = time.perf_counter()
    scores = score_model(model, inliers, outliers, train)
    clusters = clustering_scores(model, inliers.images[:CLUSTERING_SAMPLES])
    top = str(scores["top_layer"])
    row = {
        "dataset": dataset,
        "preset": preset,
        "model": model_name(preset, solver),
        "solver": solver,
        "protocol": protocol,
        "spec": model.spec,
        "recipe_note": recipe.note,
        "epochs": 0 if args.tiny else epochs,
        "steps": record.get("steps"),
        "stopped_by": record.get("stopped_by"),
        "annealed": record.get("annealed"),
        "sigma_som": record.get("sigma_som"),
        "seed": seed,
        "train_seconds": round(seconds, 1),
        "eval_seconds": round(time.perf_counter() - start, 1),
        "auc": scores["loglik"][top],
        "auc_max_component": scores["max_component"][top],
        "auc_contrast": scores["contrast"],
        "auc_per_layer": scores["loglik"],
        "paper_auc": PAPER_TABLE1.get(dataset, {}).get(preset),
        "clustering": clusters,
        "n_inliers": len(inliers),
        "n_outliers": len(outliers),
        "roc": scores["roc"],
    }
    print(json.dumps({k: v for k, v in row.items() if k != "roc"}), flush=True)
    return row


def summarise(per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    """Return one table row: mean and sd over the seeds of one (dataset, preset, protocol)."""
    first = per_seed[0]
    mean, sd = mean_sd([100 * r["auc"] for r in per_seed])
    lower = {
        k: mean_sd([100 * r["auc_per_layer"][k] for r in per_seed])[0]
        for k in first["auc_per_layer"]
    }
    return {
        "table": "I",
        "dataset": first["dataset"],
        "model": first["model"],
        "solver": first["solver"],
        "spec": first["spec"],
        "protocol": first["protocol"],
        "recipe_note": first["recipe_note"],
        "metric": "outlier AUC % (top layer, exact log-likelihood)",
        "mean": mean,
        "sd": sd,
        "n_seeds": len(per_seed),
        "epochs": first["epochs"],
        "steps": max(r["steps"] or 0 for r in per_seed),
        "annealed_seeds": sum(bool(r["annealed"]) for r in per_seed),
        "auc_max_component": mean_sd([100 * r["auc_max_component"] for r in per_seed])[0],
        "contrast": contrast_summary(per_seed),
        "auc_per_layer": lower,
        "dunn": mean_sd([r["clustering"]["dunn"] for r in per_seed])[0],
        "davies_bouldin": mean_sd([r["clustering"]["davies_bouldin"] for r in per_seed])[0],
        "train_seconds": sum(r["train_seconds"] for r in per_seed),
        "paper_mean": first["paper_auc"],
        "paper_sd": PAPER_TABLE1_SD.get((first["dataset"], first["preset"])),
    }


def contrast_summary(per_seed: list[dict[str, Any]]) -> dict[str, float] | None:
    """Return the layer contrast's AUC %, mean and sd over the seeds (None where not scored)."""
    values = [r.get("auc_contrast") for r in per_seed]
    if any(v is None for v in values):
        return None
    mean, sd = mean_sd([100 * v for v in values])
    return {"mean": mean, "sd": sd}


def run(args: argparse.Namespace, command: str) -> None:
    """Run Table I/II and merge its rows into the stored results."""
    torch.manual_seed(0)
    start = time.perf_counter()
    result = table1(args)
    write_table1(result, Path(args.out), command, time.perf_counter() - start)
