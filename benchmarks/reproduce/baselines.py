"""DCGMM beside its baselines in one harness: outlier AUC and in-painting MSE.

    python -m benchmarks.reproduce baselines [--vae-minutes 8] [--nsn-images 2000] [--tiny]

Every model is trained on the training images of classes 1-9 (the outlier protocol of
Table I) and judged through the common interface of ``dcgmm.interfaces.image_model``:

* outlier AUC: inliers are the test images of classes 1-9, outliers those of class 0; each
  model's ``outlier_score`` (DCGMM: the top GMM layer's exact log-likelihood, mean over
  positions; VAEs: log p(x) by importance sampling; NSN: the max-component log-likelihood of
  its top layer, a score, not a density);
* in-painting: the first ``--inpaint-test`` inlier test images with three masks (right half,
  a centred 14x14 square, half of the pixels at random); mean squared error on the hidden
  pixels (grey values in [0, 1]) and a picture per mask.

DCGMM: the Table I runs (``runs/reproduce/table1``; trained there if missing). NSN: the
architecture and thresholds of ``reproduce nsn``, fitted on the first ``--nsn-images`` images.
VAEs: the spec's MLPs trained with Adam on the grey images (a Bernoulli decoder with grey
targets: the expectation over dynamic binarisations), the last 5000 training images held out
for early stopping, at most ``--vae-minutes`` per model.
"""

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.reproduce.common import TIMING_FILE, header_lines, train_run, write_results
from benchmarks.reproduce.nsn import fit_nsn
from benchmarks.reproduce.table1 import INLIERS, split_test
from benchmarks.reproduce.vae import train_or_load
from dcgmm import load_dataset
from dcgmm.baselines.nsn import NSN
from dcgmm.baselines.nsn_layer import GenSettings
from dcgmm.baselines.vae import DeepLatentGMM
from dcgmm.evaluation.outliers import roc_auc, roc_curve
from dcgmm.evaluation.plots import save_roc
from dcgmm.generation.inpainting import make_mask
from dcgmm.interfaces.image_model import ImageModel, as_image_model
from dcgmm.io.data import Dataset
from dcgmm.io.images import save_grid

NSN_TAUS = (-0.93, 0.75, 0.65)  # those of docs/results/baselines_nsn.md
N_VALIDATION = 5000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The comparison's options."""
    parser.add_argument("--presets", default="A,E", help="DCGMM presets (Table I runs)")
    parser.add_argument("--epochs", type=int, default=10, help="DCGMM epochs (Table I runs)")
    parser.add_argument("--models", default="NSN,DLGMM,DLDPMM,Gauss-VAE")
    parser.add_argument("--vae-minutes", type=float, default=8.0, help="VAE budget per model")
    parser.add_argument("--nsn-images", type=int, default=2000)
    parser.add_argument("--is-samples", type=int, default=50, help="IS samples of VAE log p(x)")
    parser.add_argument("--inpaint-test", type=int, default=1000, help="test images in-painted")
    parser.add_argument("--seed", type=int, default=0)


def train_vae(name: str, train: Dataset, folder: Path, args: argparse.Namespace) -> DeepLatentGMM:
    """Fit one VAE on grey images, the last images held out (or load the cached one)."""
    images = train.images.reshape(len(train), -1)
    n_val = 50 if args.tiny else N_VALIDATION
    model, _ = train_or_load(
        name,
        images[:-n_val],
        images[-n_val:],
        folder,
        max_epochs=2 if args.tiny else 500,
        max_minutes=None if args.tiny else args.vae_minutes,
        seed=args.seed,
    )
    return model


def train_nsn(train: Dataset, folder: Path, args: argparse.Namespace) -> NSN:
    """Fit the 28x28 NSN on the first ``--nsn-images`` images (or load the cached one)."""
    n = 60 if args.tiny else args.nsn_images
    nsn_args = argparse.Namespace(tiny=args.tiny, max_filters=400, new_per_iter=8)
    model, _ = fit_nsn("nsn", train.images[:n], "28x28", list(NSN_TAUS), folder, nsn_args)
    return model


def trained_models(args: argparse.Namespace, dataset: str) -> dict[str, Any]:
    """Return ``{name: trained model}`` for one dataset (training what is not cached)."""
    data_dir, runs = Path(args.data_dir), Path(args.runs)
    limit = 60 if args.tiny else None
    train = load_dataset(data_dir / dataset, classes=INLIERS, limit_per_class=limit)
    suffix = "tiny" if args.tiny else f"e{args.epochs}"
    models: dict[str, Any] = {}
    for preset in args.presets.split(","):
        model, _ = train_run(
            preset,
            train,
            runs / "table1" / dataset / f"{preset}-{suffix}",
            preset=preset,
            epochs=None if args.tiny else args.epochs,
            steps=20 if args.tiny else None,
            seed=args.seed,
            data_info={"source": str(data_dir / dataset), "classes": "1-9"},
        )
        models[f"DCGMM {preset}"] = model
    folder = runs / "baselines" / ("tiny" if args.tiny else "full") / dataset
    for name in args.models.split(","):
        if name == "NSN":
            models[name] = train_nsn(train, folder / "nsn", args)
        else:
            models[name] = train_vae(name, train, folder / name, args)
    return models


MASKS = ("right-half", "center", "random:0.5")
PICTURE_IMAGES = 10
NSN_SAMPLING = GenSettings(beta=30.0, n_draws=1, alpha=2.0, gamma=0.0)  # tuned in reproduce nsn


def adapters(models: dict[str, Any], args: argparse.Namespace) -> dict[str, ImageModel]:
    """Wrap every trained model in its common-interface adapter."""
    wrapped = {}
    for name, model in models.items():
        if isinstance(model, NSN):
            wrapped[name] = as_image_model(model, settings=NSN_SAMPLING)
        elif isinstance(model, DeepLatentGMM):
            wrapped[name] = as_image_model(model, n_samples=args.is_samples, seed=args.seed)
        else:
            wrapped[name] = as_image_model(model)
    return wrapped


def outlier_rows(
    models: dict[str, ImageModel], inliers: Dataset, outliers: Dataset
) -> tuple[list[dict[str, Any]], dict[str, tuple[Any, Any, float]]]:
    """Return one AUC row per model and the ROC curves."""
    rows, curves = [], {}
    for name, model in models.items():
        start = time.perf_counter()
        score_in = model.outlier_score(inliers.images)
        score_out = model.outlier_score(outliers.images)
        auc = roc_auc(score_in, score_out)
        fpr, tpr, _ = roc_curve(score_in, score_out)
        curves[name] = (fpr, tpr, auc)
        row = {
            "model": name,
            "score": model.score_name,
            "auc": round(100 * auc, 2),
            "seconds": round(time.perf_counter() - start, 1),
        }
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows, curves


def inpainting_rows(
    models: dict[str, ImageModel], images: torch.Tensor, picture: Path
) -> list[dict[str, Any]]:
    """Return the hidden-pixel MSE of every model and mask; draw one grid per mask."""
    rows = []
    for mask_kind in MASKS:
        g = torch.Generator().manual_seed(0)
        missing = make_mask(mask_kind, tuple(images.shape), generator=g)
        shown = images[:PICTURE_IMAGES]
        grid = [shown, torch.where(missing[:PICTURE_IMAGES], 0.5, shown)]
        for name, model in models.items():
            start = time.perf_counter()
            filled = model.inpaint(images, missing, generator=torch.Generator().manual_seed(0))
            mse = float(((filled - images)[missing] ** 2).mean())
            row = {
                "mask": mask_kind,
                "model": name,
                "mse": round(mse, 4),
                "seconds": round(time.perf_counter() - start, 1),
            }
            print(json.dumps(row), flush=True)
            rows.append(row)
            grid.append(filled[:PICTURE_IMAGES])
        name = mask_kind.replace(":", "")
        save_grid(
            picture.with_name(f"{picture.stem}_{name}.png"),
            torch.cat(grid).reshape(-1, *images.shape[1:]),
            n_cols=PICTURE_IMAGES,
        )
    return rows


def compare(args: argparse.Namespace) -> dict[str, Any]:
    """Train what is missing, then judge every model on both tasks; return the rows."""
    data_dir, out = Path(args.data_dir), Path(args.out)
    result: dict[str, Any] = {"datasets": {}}
    for dataset in args.datasets.split(","):
        models = adapters(trained_models(args, dataset), args)
        inliers, outliers = split_test(data_dir, dataset, args.tiny)
        auc_rows, curves = outlier_rows(models, inliers, outliers)
        save_roc(
            out / "baselines" / f"compare_roc_{dataset}.png",
            curves,
            title=f"{dataset}: train 1-9, outliers 0; each model's outlier score",
        )
        n = 20 if args.tiny else args.inpaint_test
        picture = out / "baselines" / f"compare_inpaint_{dataset}.png"
        result["datasets"][dataset] = {
            "outlier_auc": auc_rows,
            "inpainting": inpainting_rows(models, inliers.images[:n], picture),
            "n_inliers": len(inliers),
            "n_outliers": len(outliers),
            "n_inpainted": n,
            "training": training_records(args, dataset),
        }
    return result


def training_records(args: argparse.Namespace, dataset: str) -> dict[str, Any]:
    """Return how each cached model was trained (from the run folders' records)."""
    runs = Path(args.runs)
    records: dict[str, Any] = {}
    suffix = "tiny" if args.tiny else f"e{args.epochs}"
    for preset in args.presets.split(","):
        timing = runs / "table1" / dataset / f"{preset}-{suffix}" / TIMING_FILE
        if timing.exists():
            records[f"DCGMM {preset}"] = json.loads(timing.read_text())
    folder = runs / "baselines" / ("tiny" if args.tiny else "full") / dataset
    for name in args.models.split(","):
        record = folder / ("nsn" if name == "NSN" else name) / "record.json"
        if record.exists():
            records[name] = json.loads(record.read_text())
    return records


def describe_training(record: dict[str, Any]) -> str:
    """One line of how a model was trained, from its cached record."""
    if "filter_counts" in record:  # NSN
        counts = "/".join(map(str, record["filter_counts"]))
        return (
            f"{record['n_images']} images, filters {counts}, "
            f"{record['fit_seconds'] / 60:.1f} min fit"
        )
    if "epochs" in record:  # VAE
        how = "early stopped" if record["stopped_early"] else "stopped by the time budget"
        return (
            f"{record['epochs']} epochs (best {record['best_epoch']}), {how}, "
            f"{record['train_seconds'] / 60:.1f} min"
        )
    return f"{record['steps']} SGD steps, {record['seconds'] / 60:.1f} min"  # DCGMM


def summary_lines(out: Path) -> list[str]:
    """Summarise the per-model results files found in ``out`` (acceptance points 1 and 2)."""
    lines: list[str] = []
    vae_file, nsn_file = out / "baselines_vae.json", out / "baselines_nsn.json"
    if vae_file.exists():
        lines += [
            "### VAEs on binarised MNIST ([baselines_vae.md](baselines_vae.md))",
            "",
            "| model | training | test -log p(x), IS 50 (all) / 5000 (first 1000) | paper | "
            "kNN error k=3/5/10 (%) | paper |",
            "|---|---|---|---:|---|---|",
        ]
        for r in json.loads(vae_file.read_text())["rows"]:
            knn = "/".join(f"{e:.2f}" for e in r["knn_error_sample"])
            paper_knn = "/".join(map(str, r["paper_knn"])) if r.get("paper_knn") else "-"
            lines.append(
                f"| {r['model']} | {r['epochs']} epochs, {r['train_seconds'] / 60:.0f} min | "
                f"{r['nll_is50_full_test']:.2f} / {r['nll_is5000_subset']:.2f} | "
                f"{r['paper_nll']} | {knn} | {paper_knn} |"
            )
        lines.append("")
    if nsn_file.exists():
        lines += [
            "### NSN ([baselines_nsn.md](baselines_nsn.md))",
            "",
            "| dataset | filters per layer | paper | NSN FD / class. score | "
            "DCGMM FD / class. score |",
            "|---|---|---|---|---|",
        ]
        for r in json.loads(nsn_file.read_text())["rows"]:
            nq, dq = r.get("nsn_quality"), r.get("dcgmm_quality")
            if nq is None or dq is None:
                continue
            lines.append(
                f"| {r['dataset']} | {r['filter_counts']} | {r['paper_filter_counts']} | "
                f"{nq['frechet_distance']:.1f} / {nq['classifier_score']:.2f} | "
                f"{dq['frechet_distance']:.1f} / {dq['classifier_score']:.2f} |"
            )
        lines.append("")
    if (out / "baselines_nsn_faces.md").exists():
        lines += ["Faces: [baselines_nsn_faces.md](baselines_nsn_faces.md).", ""]
    if lines:
        lines = ["## The baselines under their papers' own protocols", "", *lines]
    return lines


def write_comparison(result: dict[str, Any], out: Path, command: str, wall: float) -> None:
    """Write docs/results/baselines.md and baselines.json."""
    datasets = list(result["datasets"])
    lines = [
        "# DCGMM beside its baselines: outlier detection and in-painting",
        "",
        *header_lines(command, wall),
        "",
        "Every model is trained on the training images of classes 1-9 and judged through",
        "`dcgmm.interfaces.image_model` (one adapter per model kind; see the docstring of",
        "`benchmarks/reproduce/baselines.py` for the protocol). The per-model tables with the",
        "papers' own protocols are [baselines_vae.md](baselines_vae.md) (binarised MNIST",
        "likelihoods, kNN) and [baselines_nsn.md](baselines_nsn.md) (filter counts, samples,",
        "evaluator scores).",
        "",
        "## Outlier AUC (%): test images of classes 1-9 against class 0",
        "",
        "| model | score | " + " | ".join(datasets) + " |",
        "|---|---|" + "---:|" * len(datasets),
    ]
    first = result["datasets"][datasets[0]]
    for i, row in enumerate(first["outlier_auc"]):
        values = [result["datasets"][d]["outlier_auc"][i]["auc"] for d in datasets]
        lines.append(f"| {row['model']} | {row['score']} | " + " | ".join(map(str, values)) + " |")
    lines += [
        "",
        "ROC curves: " + ", ".join(f"[{d}](baselines/compare_roc_{d}.png)" for d in datasets),
        "",
    ]
    lines += [
        "## In-painting: mean squared error on the hidden pixels (grey values in [0, 1])",
        "",
        f"The first {first['n_inpainted']} test images of classes 1-9. DCGMM fills with the",
        'conditional expectation (`mode="mean"`), NSN with noise-free NSN-Gen through its',
        "first-layer map, the VAEs with 20 pseudo-Gibbs iterations (pixel probabilities).",
        "",
    ]
    header = "| model | " + " | ".join(f"{d} {m}" for d in datasets for m in MASKS) + " |"
    lines += [header, "|---|" + "---:|" * (len(datasets) * len(MASKS))]
    for row in first["outlier_auc"]:
        name = row["model"]
        values = []
        for d in datasets:
            by_key = {
                (r["model"], r["mask"]): r["mse"] for r in result["datasets"][d]["inpainting"]
            }
            values += [f"{by_key[(name, m)]:.4f}" for m in MASKS]
        lines.append(f"| {name} | " + " | ".join(values) + " |")
    lines += [
        "",
        "Rows of each picture: original, masked (grey), then "
        + ", ".join(r["model"] for r in first["outlier_auc"])
        + ".",
        "",
    ]
    for d in datasets:
        for m in MASKS:
            stem = f"compare_inpaint_{d}_{m.replace(':', '')}"
            lines.append(f"![{d} {m}](baselines/{stem}.png)")
    lines += [
        "",
        "## How each model was trained",
        "",
        "| dataset | model | training |",
        "|---|---|---|",
    ]
    for d in datasets:
        for name, record in result["datasets"][d]["training"].items():
            lines.append(f"| {d} | {name} | {describe_training(record)} |")
    lines += ["", *summary_lines(out)]
    write_results(out, "baselines", lines, result)


def run(args: argparse.Namespace, command: str) -> None:
    """Compare and write docs/results/baselines.md."""
    start = time.perf_counter()
    result = compare(args)
    write_comparison(result, Path(args.out), command, time.perf_counter() - start)
