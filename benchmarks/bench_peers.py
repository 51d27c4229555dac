"""Peer libraries on this machine: sklearn's diagonal GMM, our preset A and SPFlow's RAT-SPN.

    .venv/bin/python -m benchmarks.bench_peers [--quick] [--data-dir ../shared/data]
                                               [--out docs/peers.json] [--epochs 10]

Every model sees full MNIST (60000 train, 10000 test images, pixels in [0, 1]); ``--quick``
takes the first 2000/500 images and tiny iteration counts, so that a test can run it in under a
minute (it writes to the temporary directory unless ``--out`` is given). Log-likelihoods are
mean nats per test image of the continuous pixel density, higher is better. Timings are wall
seconds of ``time.perf_counter``; torch runs on 2 threads, sklearn on its default thread pools.

Needs the ``bench`` extra: scikit-learn and spflow 1.1.0 (a failure of the latter is recorded
in the JSON as its error message instead of a number).
"""

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import shlex
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import sklearn
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture
from torch import Tensor

import dcgmm
from dcgmm import DCGMM, TrainConfig, Trainer, load_dataset
from dcgmm.evaluation.scores import evaluate
from dcgmm.training.config import PRESET_TRAIN_OVERRIDES

REPO = Path(__file__).resolve().parents[1]
TORCH_THREADS = 2  # the machine's cores; set explicitly so every torch timing is comparable
N_COMPONENTS = 49  # preset A is F(28,1)-G(49): one diagonal GMM over the whole image
# Our GMM layers bound every precision at 20, i.e. every variance at >= 1/20. sklearn adds
# reg_covar to each variance, so 0.05 gives the same floor; with sklearn's default 1e-6 the
# constant border pixels get variances near 1e-6 and log-likelihoods in the thousands.
REG_COVAR = 0.05
BATCH_SIZE = 100  # ours and the RAT-SPN loop alike
CurvePoint = dict[str, float]  # {"step", "train_s", "test_loglik"}

# RAT-SPN structure (Peharz et al., 2019): spflow's ``depth`` counts partition layers, so the
# 784 pixels are split into 2**3 = 8 random leaf regions per repetition.
RATSPN_STRUCTURE = {
    "depth": 3,
    "num_repetitions": 10,
    "n_region_nodes": 10,  # sum nodes per region (S)
    "n_leaf_nodes": 10,  # Normal leaves per leaf region (I)
    "n_root_nodes": 10,  # one per class in the paper; mixed by a root sum here (density)
    "num_splits": 2,
}
RATSPN_LR = 1e-3  # Adam's default, as spflow's own train_gradient_descent uses


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Sizes of one benchmark run: the full measurement or the quick smoke run."""

    train_limit: int | None
    test_limit: int | None
    sklearn_max_iter: int
    epochs: int
    eval_every: int
    spn_warmup_batches: int
    spn_budget_s: float


FULL = Settings(
    train_limit=None,
    test_limit=None,
    sklearn_max_iter=200,
    epochs=10,
    eval_every=100,
    spn_warmup_batches=2,
    spn_budget_s=180.0,
)
QUICK = Settings(
    train_limit=2000,
    test_limit=500,
    sklearn_max_iter=5,
    epochs=1,
    eval_every=10,
    spn_warmup_batches=1,
    spn_budget_s=3.0,
)


def measurement(value: float | int | None, unit: str, method: str) -> dict[str, Any]:
    """Return one JSON entry: a number with its unit and how it was obtained."""
    return {"value": value, "unit": unit, "method": method}


def package_version(name: str) -> str | None:
    """Return an installed distribution's version, or None if it is not installed."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def describe_machine() -> dict[str, Any]:
    """Return the platform, processor, core count, torch threads and the load right now."""
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_num_threads": torch.get_num_threads(),
        # Other jobs on a shared 2-core machine slow every timing; the load average says so.
        "loadavg_1_5_15_at_start": list(os.getloadavg()),
    }


def describe_versions() -> dict[str, str | None]:
    """Return the versions of python and every library measured."""
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "sklearn": sklearn.__version__,
        "spflow": package_version("spflow"),
        "numpy": np.__version__,
        "dcgmm": dcgmm.__version__,
    }


def describe_threadpools() -> list[dict[str, Any]] | None:
    """Return the BLAS/OpenMP pools sklearn runs on (threadpoolctl), or None without it."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    keys = ("user_api", "internal_api", "num_threads", "version")
    return [{key: pool.get(key) for key in keys} for pool in threadpool_info()]


def flatten(images: Tensor) -> np.ndarray:
    """Return (N, H, W, C) images as an (N, H*W*C) float64 array for sklearn."""
    return images.reshape(images.shape[0], -1).double().numpy()


def fit_sklearn_gmm(
    x: np.ndarray,
    max_iter: int,
    *,
    n_components: int = N_COMPONENTS,
    reg_covar: float = REG_COVAR,
) -> tuple[GaussianMixture, float]:
    """Fit sklearn's diagonal GMM (k-means init, seed 0) and return it with the wall time."""
    gmm = GaussianMixture(
        n_components=n_components,
        covariance_type="diag",
        reg_covar=reg_covar,
        max_iter=max_iter,
        random_state=0,
    )
    start = time.perf_counter()
    with warnings.catch_warnings():
        # A capped run (--quick) stops before tol is met; converged_ records that instead.
        warnings.simplefilter("ignore", ConvergenceWarning)
        gmm.fit(x)
    return gmm, time.perf_counter() - start


def bench_sklearn(x_train: np.ndarray, x_test: np.ndarray, settings: Settings) -> dict[str, Any]:
    """Time sklearn's EM on the flattened images and score the converged model on the test set.

    Seconds per iteration come from two fits with the same seed, hence the same k-means
    initialisation: one with ``max_iter=0`` (initialisation only) and one run to convergence.
    Both also pay input validation and sklearn's closing E-step, so their difference divided
    by ``n_iter_`` is the mean cost of one EM iteration (E-step, M-step, lower bound).
    """
    _, init_s = fit_sklearn_gmm(x_train, max_iter=0)
    gmm, fit_s = fit_sklearn_gmm(x_train, max_iter=settings.sklearn_max_iter)
    test_loglik = float(gmm.score_samples(x_test).mean())
    return {
        "config": {
            "n_components": N_COMPONENTS,
            "covariance_type": "diag",
            "reg_covar": REG_COVAR,
            "init_params": "kmeans",
            "n_init": 1,
            "tol": gmm.tol,
            "max_iter": settings.sklearn_max_iter,
            "random_state": 0,
            "dtype": "float64",
        },
        "init_s": measurement(
            init_s, "s", "fit with max_iter=0: validation + k-means init + closing E-step"
        ),
        "fit_s": measurement(fit_s, "s", "wall time of fit() until tol=1e-3 or max_iter"),
        "s_per_iter": measurement(
            (fit_s - init_s) / max(gmm.n_iter_, 1),
            "s/iteration",
            "(fit_s - init_s) / n_iter: same seed, so both fits share the init",
        ),
        "n_iter": gmm.n_iter_,
        "converged": bool(gmm.converged_),
        "train_loglik": measurement(
            float(gmm.lower_bound_), "nats/image", "lower_bound_ (mean train log-likelihood)"
        ),
        "test_loglik": measurement(test_loglik, "nats/image", "score_samples(X_test).mean()"),
    }


def exact_loglik(model: DCGMM, images: Tensor) -> float:
    """Return the exact mean log-likelihood of preset A's only GMM layer, in nats per image."""
    return evaluate(model, images).layers[0].loglik


@dataclass(frozen=True)
class TrainingLog:
    """What one run of our trainer recorded.

    Attributes
    ----------
    curve : list of dict
        ``{"step", "train_s", "test_loglik"}`` from step 0 on; ``train_s`` counts training
        steps and annealing bookkeeping only, never the evaluations.
    step_times : list of float
        Seconds of every single step.
    steps_per_epoch : int
    """

    curve: list[CurvePoint]
    step_times: list[float]
    steps_per_epoch: int


def train_dcgmm(train: Tensor, test: Tensor, settings: Settings) -> TrainingLog:
    """Train preset A with our SGD, evaluating on the test set every ``eval_every`` steps."""
    model = DCGMM.from_spec("A", (28, 28, 1), generator=torch.Generator().manual_seed(0))
    config = TrainConfig(epochs=settings.epochs, seed=0, **PRESET_TRAIN_OVERRIDES["A"])
    trainer = Trainer(model, config, train)
    step_times: list[float] = []
    curve = [{"step": 0, "train_s": 0.0, "test_loglik": exact_loglik(model, test)}]
    while trainer.step < trainer.n_steps:
        for _ in range(min(settings.eval_every, trainer.n_steps - trainer.step)):
            start = time.perf_counter()
            trainer.train_step()
            trainer._end_windows()  # the annealing bookkeeping that Trainer.run does per step
            step_times.append(time.perf_counter() - start)
        point = {"step": trainer.step, "train_s": sum(step_times)}
        curve.append({**point, "test_loglik": exact_loglik(model, test)})
    return TrainingLog(curve, step_times, trainer.steps_per_epoch)


def first_reaching(curve: list[CurvePoint], target: float) -> CurvePoint | None:
    """Return the first curve point whose test log-likelihood is at least ``target``."""
    return next((point for point in curve if point["test_loglik"] >= target), None)


def bench_dcgmm(
    train: Tensor, test: Tensor, target_loglik: float, settings: Settings
) -> dict[str, Any]:
    """Time our preset A and find when it first matches sklearn's converged test score."""
    log = train_dcgmm(train, test, settings)
    curve, steps_per_epoch = log.curve, log.steps_per_epoch
    s_per_step = curve[-1]["train_s"] / curve[-1]["step"]
    reached = first_reaching(curve, target_loglik)
    best = max(curve, key=lambda point: point["test_loglik"])
    resolution = f"first evaluation (every {settings.eval_every} steps) at or above it"
    return {
        "config": {
            "spec": dcgmm.PRESETS["A"],
            "epochs": settings.epochs,
            "batch_size": BATCH_SIZE,
            "seed": 0,
            "overrides": PRESET_TRAIN_OVERRIDES["A"],
            "dtype": "float32",
        },
        "s_per_step": measurement(s_per_step, "s/step", "training clock / steps (batch 100)"),
        # Other jobs on the machine show up as spikes in single steps; the median ignores them.
        "s_per_step_median": measurement(
            float(np.median(log.step_times)), "s/step", "median of single timed steps"
        ),
        "s_per_epoch": measurement(
            s_per_step * steps_per_epoch, "s/epoch", f"s_per_step * {steps_per_epoch} steps"
        ),
        "target_test_loglik": measurement(target_loglik, "nats/image", "sklearn's test_loglik"),
        "time_to_target": measurement(
            reached["train_s"] if reached else None, "s", f"training clock at the {resolution}"
        ),
        "step_to_target": reached["step"] if reached else None,
        "best_test_loglik": measurement(best["test_loglik"], "nats/image", "max over the curve"),
        "best_step": best["step"],
        "curve": curve,
    }


def build_ratspn(n_features: int) -> torch.nn.Module:
    """Return SPFlow's RAT-SPN with ``RATSPN_STRUCTURE`` over Normal leaves."""
    from spflow.meta.data.scope import Scope
    from spflow.modules.leaves import Normal
    from spflow.zoo.rat import RatSPN

    structure = RATSPN_STRUCTURE
    leaves = Normal(
        scope=Scope(list(range(n_features))),
        out_channels=structure["n_leaf_nodes"],
        num_repetitions=structure["num_repetitions"],
    )
    return RatSPN(
        [leaves],
        n_root_nodes=structure["n_root_nodes"],
        n_region_nodes=structure["n_region_nodes"],
        num_repetitions=structure["num_repetitions"],
        depth=structure["depth"],
        num_splits=structure["num_splits"],
    )


def time_ratspn_batches(
    model: torch.nn.Module, x: Tensor, settings: Settings
) -> tuple[list[float], list[float]]:
    """Run Adam on -log p(x) over one shuffled epoch, stopping early after the time budget.

    Returns
    -------
    times : list of float
        Seconds of every timed batch (after the warm-up batches).
    losses : list of float
        Mean negative log-likelihood of every batch, warm-up included (a sanity check).
    """
    optimizer = torch.optim.Adam(model.parameters(), lr=RATSPN_LR)
    order = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(0))
    times: list[float] = []
    losses: list[float] = []
    for batch, start_index in enumerate(range(0, x.shape[0] - BATCH_SIZE + 1, BATCH_SIZE)):
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss = -model.log_likelihood(x[order[start_index : start_index + BATCH_SIZE]]).mean()
        loss.backward()
        optimizer.step()
        elapsed = time.perf_counter() - start
        losses.append(loss.item())
        if batch >= settings.spn_warmup_batches:
            times.append(elapsed)
        if sum(times) > settings.spn_budget_s:
            break
    return times, losses


def bench_ratspn(train: Tensor, settings: Settings) -> dict[str, Any]:
    """Time SPFlow's RAT-SPN per epoch, extrapolating from the batches run within the budget."""
    x = train.reshape(train.shape[0], -1)  # (N, 784) float32, spflow's (batch, features)
    batches_per_epoch = x.shape[0] // BATCH_SIZE
    config = {
        **RATSPN_STRUCTURE,
        "leaf": "Normal",
        "objective": "max mean log p(x), unsupervised",
        "optimizer": "Adam",
        "lr": RATSPN_LR,
        "batch_size": BATCH_SIZE,
    }
    try:
        # spflow draws the random region split from numpy's legacy global RNG and the leaf
        # initialisation from torch's; seed both so the structure is the same every run.
        np.random.seed(0)  # noqa: NPY002
        torch.manual_seed(0)
        model = build_ratspn(x.shape[1])
        times, losses = time_ratspn_batches(model, x, settings)
    except Exception as err:  # a peer library failing is a result, not a crash of the script
        return {"config": config, "error": f"{type(err).__name__}: {err}"}
    n_timed = len(times)
    mean_s = sum(times) / n_timed
    extrapolated = n_timed + settings.spn_warmup_batches < batches_per_epoch
    method = f"mean of {n_timed} timed batches (after {settings.spn_warmup_batches} warm-up)"
    if extrapolated:
        method += f", extrapolated to {batches_per_epoch} batches: the epoch ran over budget"
    return {
        "config": config,
        "n_parameters": sum(p.numel() for p in model.parameters()),
        "s_per_batch": measurement(mean_s, "s/batch", f"mean of {n_timed} timed batches"),
        "s_per_batch_median": measurement(
            float(np.median(times)), "s/batch", "median of the same batches"
        ),
        "s_per_epoch": measurement(mean_s * batches_per_epoch, "s/epoch", method),
        "extrapolated": extrapolated,
        "n_batches_timed": n_timed,
        "train_nll_first_last": [losses[0], losses[-1]],
    }


def summarize(report: dict[str, Any]) -> str:
    """Return a few human-readable lines of the report's headline numbers."""
    sk, ours, spn = report["sklearn_gmm"], report["dcgmm_A"], report["ratspn"]
    reached = ours["time_to_target"]["value"]
    reach_text = (
        f"reaches it after {reached:.1f} s (step {ours['step_to_target']})"
        if reached is not None
        else f"never reaches it; best {ours['best_test_loglik']['value']:.1f} at step "
        f"{ours['best_step']}"
    )
    spn_text = (
        f"{spn['s_per_epoch']['value']:.1f} s/epoch"
        + (" (extrapolated)" if spn["extrapolated"] else "")
        if "error" not in spn
        else f"failed: {spn['error']}"
    )
    return "\n".join(
        [
            f"sklearn GMM(49, diag): {sk['s_per_iter']['value']:.3f} s/iter, "
            f"{sk['fit_s']['value']:.1f} s to fit ({sk['n_iter']} iterations, "
            f"converged={sk['converged']}), test {sk['test_loglik']['value']:.2f} nats/image",
            f"dcgmm A: {ours['s_per_step']['value'] * 1000:.2f} ms/step, "
            f"{ours['s_per_epoch']['value']:.1f} s/epoch; {reach_text}",
            f"spflow RAT-SPN: {spn_text}",
        ]
    )


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2000/500 images, tiny counts")
    parser.add_argument(
        "--data-dir", type=Path, default=REPO.parent / "shared" / "data", help="holds mnist/"
    )
    parser.add_argument(
        "--out", type=Path, help="JSON path (docs/peers.json; --quick: the temp directory)"
    )
    parser.add_argument("--epochs", type=int, help="our training budget in epochs (default 10)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Run every measurement and write the JSON report."""
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    settings = QUICK if args.quick else FULL
    if args.epochs is not None:
        settings = replace(settings, epochs=args.epochs)
    default_out = Path(tempfile.gettempdir()) / "peers-quick.json"
    out = args.out or (default_out if args.quick else REPO / "docs" / "peers.json")
    torch.set_num_threads(TORCH_THREADS)

    mnist = args.data_dir / "mnist"
    train = load_dataset(mnist, limit=settings.train_limit)
    test = load_dataset(mnist, split="test", limit=settings.test_limit)
    report: dict[str, Any] = {
        "benchmark": "peers",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": shlex.join([sys.executable, "-m", "benchmarks.bench_peers", *argv]),
        "mode": "quick" if args.quick else "full",
        "machine": describe_machine(),
        "versions": describe_versions(),
        "threadpools": describe_threadpools(),
        "data": {"source": str(mnist), "n_train": len(train), "n_test": len(test)},
    }
    report["sklearn_gmm"] = bench_sklearn(flatten(train.images), flatten(test.images), settings)
    print(f"sklearn done: {report['sklearn_gmm']['fit_s']['value']:.1f} s", flush=True)
    target = report["sklearn_gmm"]["test_loglik"]["value"]
    report["dcgmm_A"] = bench_dcgmm(train.images, test.images, target, settings)
    print("dcgmm done", flush=True)
    report["ratspn"] = bench_ratspn(train.images, settings)
    report["machine"]["loadavg_1_5_15_at_end"] = list(os.getloadavg())

    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(summarize(report))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
