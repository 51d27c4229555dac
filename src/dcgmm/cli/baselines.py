"""The baselines behind the usual commands: ``dcgmm train --model dlgmm|dldpmm|gauss-vae|nsn``.

Training only: every other command loads a baseline's run like any other
(:func:`dcgmm.interfaces.runs.load_run`). The VAEs model binary images: their data are
binarised on the way in (``--binarize``, default one Bernoulli draw per pixel with the run's
seed).
"""

import argparse
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm  # type: ignore[import-untyped]

from dcgmm.baselines.data import binarize
from dcgmm.baselines.nsn import NSN
from dcgmm.baselines.runs import VAE_MODELS, save_baseline
from dcgmm.baselines.vae import DeepLatentGMM, dldpmm, dlgmm, gauss_vae
from dcgmm.cli.common import CLIError, check_writable, load_data
from dcgmm.io.data import Dataset
from dcgmm.io.run_files import CONFIG_FILE

__all__ = [
    "DEFAULT_TAUS",
    "NSN_IMAGES",
    "NSN_MAX_ITERS",
    "NSNProgress",
    "train_baseline",
]

logger = logging.getLogger("dcgmm")
# Our default thresholds (the paper's are lost), from short probes on 1000 MNIST digits. On
# 2000 digits they grew 142 / 318 / 90 filters for the paper's 96 / 130 / 131, on 2000
# Fashion-MNIST images 184 / 400 (the cap) / 193 for 140 / 238 / 256 (baselines_nsn.md).
DEFAULT_TAUS = {"28x28": (-0.93, 0.75, 0.65), "64x64": (-0.93, 0.75, 0.75, 0.75, 0.65)}


NSN_IMAGES = 5000  # images the NSN fits on unless --nsn-images says otherwise
NSN_MAX_ITERS = 300  # hard-EM iterations per layer at most, unless --steps says otherwise


class NSNProgress:
    """A progress bar per NSN layer over its iterations (the bound, --steps), with filters.

    The bar's total is the iteration bound, so its time estimate is an upper bound: a layer
    stops earlier once every patch is explained and the assignments settle.
    """

    def __init__(self, n_layers: int, max_iters: int) -> None:
        self.n_layers, self.max_iters = n_layers, max_iters
        self.bar: Any = None
        self.layer = -1

    def __enter__(self) -> "NSNProgress":
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()

    def __call__(self, layer: int, iteration: int, n_filters: int, n_unexplained: int) -> None:
        """Report one finished iteration of ``layer`` (0-based), as ``NSN.fit`` calls it."""
        if layer != self.layer:
            if self.bar is not None:
                self.bar.close()
            self.layer = layer
            desc = f"NSN layer {layer + 1}/{self.n_layers}"
            self.bar = tqdm(total=self.max_iters, desc=desc, unit="iter", disable=None)
        self.bar.update(iteration + 1 - self.bar.n)
        self.bar.set_postfix_str(f"{n_filters} filters, {n_unexplained} patches unexplained")
        logger.debug("layer %d iteration %d: %d filters, %d unexplained",
                     layer + 1, iteration, n_filters, n_unexplained)  # fmt: skip


def train_baseline(args: argparse.Namespace) -> int:
    """Fit a baseline on ``--data`` and write its run directory."""
    if args.data is None or args.out is None:
        raise CLIError(f"train --model {args.model} needs --data and --out")
    out = Path(args.out)
    if (out / CONFIG_FILE).exists():
        raise CLIError(f"{out} already holds a run; choose another --out")
    check_writable(out)
    data = load_data(
        args.data, "train", args.classes, args.limit_per_class, args.limit, resize=args.resize
    )
    seed = getattr(args, "seed", 0)
    info: dict[str, Any] = {"source": args.data, "classes": args.classes, "n_samples": len(data)}
    if args.resize:
        info["resize"] = list(args.resize)
    start = time.perf_counter()
    fitter = _fit_vae if args.model in VAE_MODELS else _fit_nsn
    model, fit = fitter(args, data, seed, info)
    fit["seconds"] = round(time.perf_counter() - start, 1)
    info["image_shape"] = list(data.image_shape)
    save_baseline(out, args.model, model, data=info, extra={"fit": fit})
    print(f"trained {args.model} in {fit['seconds']:.0f} s; run directory {out}")
    return 0


def _fit_vae(
    args: argparse.Namespace, data: Dataset, seed: int, info: dict[str, Any]
) -> tuple[DeepLatentGMM, dict[str, Any]]:
    """Fit the VAE of ``--model`` on binarised images; note the binarisation in ``info``."""
    mode = getattr(args, "binarize", None) or "stochastic"
    x = binarize(data.images, mode, seed)
    n_val = min(10_000, x.shape[0] // 6)
    builders: dict[str, Callable[..., DeepLatentGMM]] = {
        "dlgmm": dlgmm,
        "dldpmm": dldpmm,
        "gauss-vae": gauss_vae,
    }
    builder = builders[args.model]
    vae = builder(n_inputs=x.shape[1], generator=torch.Generator().manual_seed(seed))
    epochs = getattr(args, "epochs", None) or 500
    history = vae.fit(
        x[:-n_val],
        val=x[-n_val:],
        max_epochs=epochs,
        batch_size=getattr(args, "batch_size", 100),
        seed=seed,
        max_seconds=60 * args.max_minutes if getattr(args, "max_minutes", None) else None,
        callback=lambda e, r: logger.info(
            "epoch %d: train %.2f, validation %.2f", e, r["train_elbo"], r["val_elbo"]
        ),
    )
    info["binarize"] = {"mode": mode, "seed": seed}
    fit: dict[str, Any] = {"epochs": len(history.train_elbo), "best_epoch": history.best_epoch}
    return vae, fit


def _fit_nsn(
    args: argparse.Namespace, data: Dataset, seed: int, info: dict[str, Any]
) -> tuple[NSN, dict[str, Any]]:
    """Fit the NSN layer by layer on the first ``--nsn-images`` images."""
    h, w, _ = data.image_shape
    arch = "28x28" if (h, w) == (28, 28) else "64x64" if (h, w) == (64, 64) else None
    if arch is None:
        raise CLIError(f"NSN has architectures for 28x28 and 64x64 images; got {h}x{w}")
    taus = [float(t) for t in args.taus.split(",")] if args.taus else list(DEFAULT_TAUS[arch])
    n_images = getattr(args, "nsn_images", None) or NSN_IMAGES
    max_iters = getattr(args, "steps", None) or NSN_MAX_ITERS
    max_minutes = getattr(args, "max_minutes", None)
    nsn = NSN(data.image_shape, arch)
    with NSNProgress(len(taus), max_iters) as progress:
        try:
            records = nsn.fit(
                data.images[:n_images],
                taus=taus,
                max_iters=max_iters,
                new_filters_per_iter=8,
                generator=torch.Generator().manual_seed(seed),
                progress=progress,
                max_seconds=None if max_minutes is None else 60 * max_minutes,
            )
        except ValueError as err:
            raise CLIError(str(err)) from None
    info["n_fit_images"] = min(n_images, len(data))
    fit = {
        "taus": taus,
        "max_iters": max_iters,
        "iterations": [len(r.n_filters) for r in records],
        "converged": [r.converged for r in records],
        "out_of_time": [r.out_of_time for r in records],
    }
    return nsn, fit
