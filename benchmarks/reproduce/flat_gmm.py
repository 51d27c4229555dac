"""Flat GMM: our layer solvers (preset A, and K = 100) against scikit-learn's EM on the full data.

    python -m benchmarks.reproduce flatgmm [--epochs 25] [--components 49,100]
        [--solvers sgd,em] [--tiny]

All fit diagonal Gaussian mixtures to the flattened training images (pixels / 255). Ours:
``F(28,1)-G(K)`` trained by the DCGMM trainer with the paper's annealed max-component
objective and with the exact log-likelihood, by SGD (the papers') and by stepwise EM
(``TrainConfig(solver="em")``), for the same epochs; and the scikit-learn estimator
``SGDGaussianMixture(K)`` with its defaults (stepwise EM from k-means++ seeds, to its
tolerance). Precisions capped at 20 (std >= 0.224). scikit-learn:
``GaussianMixture(covariance_type="diag")``, k-means initialisation, seed 0, run to its
convergence tolerance, with ``reg_covar = 0.05`` (the same variance floor as our cap) and with
its default ``1e-6`` (no cap worth the name).

Scores (test set, nats or bits, higher log-likelihood is better):

* log-likelihood: ``mean log p(x / 255)``, nats per image, a density on [0, 1]^784;
* bits per dimension with uniform dequantisation: ``y = (x + u) / 256``, ``u ~ U[0, 1)^D`` (one
  draw, seed 0), ``bpd = (-mean log p(y) + D log 256) / (D log 2)``, an upper bound on the
  model's discrete code length of the 8-bit images. The models are fitted on x / 255, not
  on dequantised data, which makes their bpd slightly worse than a model fitted on y.
"""

import argparse
import itertools
import json
import math
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning

from benchmarks.bench_peers import fit_sklearn_gmm
from benchmarks.reproduce.common import header_lines, train_run, write_results
from dcgmm import load_dataset
from dcgmm.evaluation.outliers import sample_scores
from dcgmm.generation.sampling import SamplingConfig, sample
from dcgmm.interfaces.sklearn_api import SGDGaussianMixture
from dcgmm.io.images import save_grid
from dcgmm.model import DCGMM

N_SAMPLES_SHOWN = 24
# Exact draws from the mixture: pi at the top, full noise, also on capped dimensions.
EXACT_DRAW = SamplingConfig(noise_divisor=1.0, noise_at_bound=True, start="weights")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flat-GMM comparison's options."""
    parser.add_argument("--components", default="49,100")
    parser.add_argument("--epochs", type=int, default=25, help="our SGD epochs")
    parser.add_argument("--objectives", default="annealed,loglik", help="our training objectives")
    parser.add_argument("--solvers", default="sgd,em", help="our GMM-layer solvers")
    parser.add_argument("--reg-covar", default="0.05,1e-6", help="sklearn variance floors")


def dequantised(images: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Return ``(x + u) / 256`` for images stored as ``x / 255`` (x the 8-bit value)."""
    levels = torch.round(images.double() * 255)
    u = torch.rand(images.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return ((levels + u) / 256).float()


def bits_per_dim(loglik_dequantised: float, n_dims: int) -> float:
    """Return ``(-loglik + D log 256) / (D log 2)`` for a density on [0, 1]^D."""
    return (-loglik_dequantised + n_dims * math.log(256)) / (n_dims * math.log(2))


def score_ours(model: DCGMM, test: torch.Tensor, test_deq: torch.Tensor) -> dict[str, float]:
    """Exact test log-likelihoods of a trained flat DCGMM (float64 means)."""
    d = test[0].numel()
    ll = float(sample_scores(model, test, kind="loglik").double().mean())
    ll_deq = float(sample_scores(model, test_deq, kind="loglik").double().mean())
    return {"loglik": ll, "loglik_dequantised": ll_deq, "bits_per_dim": bits_per_dim(ll_deq, d)}


def fit_estimator(
    x_train: np.ndarray, tests: tuple[np.ndarray, np.ndarray], k: int, tiny: bool
) -> tuple[dict[str, Any], torch.Tensor]:
    """Fit ``SGDGaussianMixture(k)`` with its defaults; return its row and sampled images."""
    x_test, x_test_deq = tests
    estimator = SGDGaussianMixture(k, random_state=0, max_epochs=2 if tiny else 100)
    start = time.perf_counter()
    with warnings.catch_warnings():  # a tiny run stops early on purpose
        warnings.simplefilter("ignore" if tiny else "default", ConvergenceWarning)
        estimator.fit(x_train.astype(np.float32))
    seconds = time.perf_counter() - start
    ll_deq = float(estimator.score_samples(x_test_deq.astype(np.float32)).mean())
    row = {
        "K": k,
        "method": "SGDGaussianMixture, defaults (stepwise EM, k-means++ seeds)",
        "epochs": None,
        "n_iter": int(estimator.n_iter_),
        "converged": bool(estimator.converged_),
        "fit_seconds": round(seconds, 1),
        "loglik": float(estimator.score_samples(x_test.astype(np.float32)).mean()),
        "loglik_dequantised": ll_deq,
        "bits_per_dim": bits_per_dim(ll_deq, x_test.shape[1]),
    }
    drawn, _ = estimator.sample(N_SAMPLES_SHOWN)
    return row, torch.from_numpy(np.asarray(drawn, dtype=np.float32))


def flat_gmm(args: argparse.Namespace) -> dict[str, Any]:
    """Fit every configuration, score it, save sample grids; return the rows."""
    data_dir, runs, out = Path(args.data_dir), Path(args.runs), Path(args.out)
    rows = []
    for dataset in args.datasets.split(","):
        limit = 30 if args.tiny else None
        train = load_dataset(data_dir / dataset, limit_per_class=limit)
        test = load_dataset(data_dir / dataset, split="test", limit_per_class=limit)
        test_deq = dequantised(test.images)
        d = test.images[0].numel()
        x_train = train.images.reshape(len(train), -1).double().numpy()
        x_test = test.images.reshape(len(test), -1).double().numpy()
        x_test_deq = test_deq.reshape(len(test), -1).double().numpy()
        grids: list[tuple[str, torch.Tensor]] = []
        for k in map(int, args.components.split(",")):
            for objective, solver in itertools.product(
                args.objectives.split(","), args.solvers.split(",")
            ):
                suffix = "tiny" if args.tiny else f"e{args.epochs}"
                suffix += "-em" if solver == "em" else ""
                run_dir = runs / "flatgmm" / dataset / f"K{k}-{objective}-{suffix}"
                spec = f"F(28,1)-G({k})"
                model, seconds = train_run(
                    spec,
                    train,
                    run_dir,
                    preset="A",  # the recipe's learning-rate factors for a flat GMM (SGD)
                    epochs=None if args.tiny else args.epochs,
                    steps=20 if args.tiny else None,
                    data_info={"source": str(data_dir / dataset), "classes": None},
                    objective=objective,
                    solver=solver,
                )
                row = {
                    "dataset": dataset,
                    "K": k,
                    "method": f"ours, {solver.upper()}, {objective} objective",
                    "epochs": 0 if args.tiny else args.epochs,
                    "fit_seconds": round(seconds, 1),
                    **score_ours(model, test.images, test_deq),
                }
                print(json.dumps(row), flush=True)
                rows.append(row)
                generator = torch.Generator().manual_seed(0)
                drawn = sample(model, N_SAMPLES_SHOWN, config=EXACT_DRAW, generator=generator)
                grids.append((f"ours K={k} {solver.upper()} {objective}", drawn))
            row, drawn = fit_estimator(x_train, (x_test, x_test_deq), k, args.tiny)
            row = {"dataset": dataset, **row}
            print(json.dumps(row), flush=True)
            rows.append(row)
            grids.append((f"SGDGaussianMixture({k})", drawn.reshape(-1, *test.image_shape)))
            for reg in map(float, args.reg_covar.split(",")):
                gmm, seconds = fit_sklearn_gmm(
                    x_train, 5 if args.tiny else 1000, n_components=k, reg_covar=reg
                )
                ll_deq = float(gmm.score_samples(x_test_deq).mean())
                row = {
                    "dataset": dataset,
                    "K": k,
                    "method": f"sklearn EM, reg_covar={reg:g}",
                    "epochs": None,
                    "n_iter": int(gmm.n_iter_),
                    "converged": bool(gmm.converged_),
                    "fit_seconds": round(seconds, 1),
                    "loglik": float(gmm.score_samples(x_test).mean()),
                    "loglik_dequantised": ll_deq,
                    "bits_per_dim": bits_per_dim(ll_deq, d),
                }
                print(json.dumps(row), flush=True)
                rows.append(row)
                drawn_np, _ = gmm.sample(N_SAMPLES_SHOWN)
                drawn = torch.from_numpy(drawn_np).float().reshape(-1, *test.image_shape)
                grids.append((f"sklearn K={k} reg_covar={reg:g}", drawn))
        names = []
        for i, (name, images) in enumerate(grids):
            png = out / "flat_gmm" / f"{dataset}_{i}.png"
            save_grid(png, images.clamp(0, 1), n_cols=N_SAMPLES_SHOWN // 2, scale=2)
            names.append((name, png.name))
        rows.append({"dataset": dataset, "sample_grids": names})
    return {"rows": rows, "n_train": len(train), "n_test": len(test)}


def write_flat_gmm(result: dict[str, Any], out: Path, command: str, wall: float) -> None:
    """Write docs/results/flat_gmm.md and flat_gmm.json."""
    lines = [
        "# Flat GMM: our SGD and stepwise EM against scikit-learn's EM",
        "",
        *header_lines(command, wall),
        f"- data: full training set ({result['n_train']} images) and test set "
        f"({result['n_test']}), pixels / 255, flattened to 784 dimensions.",
        "- conventions: see the docstring of `benchmarks/reproduce/flat_gmm.py`. "
        "log-likelihood = mean log-density of the test images on [0, 1]^784 (nats/image); "
        "bits/dim = (-mean log p(y) + 784 ln 256) / (784 ln 2) with y = (x + u) / 256 "
        "uniformly dequantised (one draw). Fit time: our training steps (with annealing "
        "bookkeeping, without evaluations); the estimators' `fit()` wall time to convergence "
        "(tol 1e-3). 'EM iterations' of SGDGaussianMixture are passes over the data. All "
        "single-threaded (`OMP_NUM_THREADS=1`) while other reproductions shared the machine: "
        "the times compare with each other only roughly.",
        "",
        "| dataset | K | method | epochs / EM iterations | test log-likelihood (nats/image) |"
        " bits/dim (dequantised) | fit s |",
        "|---|---:|---|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        if "sample_grids" in r:
            continue
        budget = r["epochs"] if r["epochs"] is not None else f"{r['n_iter']} it."
        if r.get("converged") is False:
            budget = f"{budget} (not converged)"
        lines.append(
            f"| {r['dataset']} | {r['K']} | {r['method']} | {budget} | {r['loglik']:.1f} | "
            f"{r['bits_per_dim']:.3f} | {r['fit_seconds']:.0f} |"
        )
    lines += ["", "Samples (exact draws from each mixture: component ~ pi, full noise):", ""]
    for r in result["rows"]:
        for name, png in r.get("sample_grids", []):
            lines += [f"{r['dataset']}, {name}:", "", f"![{name}](flat_gmm/{png})", ""]
    write_results(out, "flat_gmm", lines, result)


def run(args: argparse.Namespace, command: str) -> None:
    """Run the flat-GMM comparison and write its results."""
    start = time.perf_counter()
    result = flat_gmm(args)
    write_flat_gmm(result, Path(args.out), command, time.perf_counter() - start)
