"""Command-line generation: ``sample``, ``inpaint``, ``train-evaluator``, ``sample-quality``."""

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from dcgmm.cli.common import CLIError, Parser, check_writable, load_data, refuse_untaken, run_data
from dcgmm.evaluation.judge import (
    accuracy,
    load_evaluator,
    sample_quality,
    save_evaluator,
    train_evaluator,
)
from dcgmm.generation.inpainting import MASK_KINDS, make_mask
from dcgmm.generation.sampling import SamplingConfig
from dcgmm.generation.sharpening import Sharpening
from dcgmm.interfaces.runs import Run, load_run
from dcgmm.io.images import check_png_path, save_grid, save_inpainting_grid
from dcgmm.model import DCGMM

__all__ = [
    "SHARPENING_DEFAULTS",
    "add_generation_commands",
    "add_sampling_flags",
    "cmd_inpaint",
    "cmd_sample",
    "cmd_sample_quality",
    "cmd_train_evaluator",
    "conditional_classes",
    "parse_per_layer",
    "sampling_config",
]


def parse_per_layer(text: str | None, kind: type) -> object:
    """Parse ``"2"`` (every GMM layer) or ``"2:3,4:1"`` (layer:value pairs, 1-based)."""
    if text is None:
        return None
    try:
        if ":" not in text:
            return kind(text)
        pairs = (part.split(":") for part in text.split(","))
        return {int(layer): kind(value) for layer, value in pairs}
    except ValueError:
        raise CLIError(
            f"expected a value or LAYER:VALUE pairs like 2:3,4:1; got {text!r}"
        ) from None


# The sharpening flags' defaults; they act only with --sharpen ITER.
SHARPENING_DEFAULTS: dict[str, object] = {"rate": 0.01, "weight": 0.0, "target": "next"}


def add_sampling_flags(parser: argparse.ArgumentParser, *, start: bool = True) -> None:
    """Add the sampling knobs of :class:`SamplingConfig` and :class:`Sharpening`.

    ``start=False`` for commands that walk down from an image's own responsibilities
    (in-painting), where the top layer's starting control does not exist.
    """
    group = parser.add_argument_group("sampling")
    group.add_argument("--top-s", help="keep the S strongest components: S, or L:S,L:S per layer")
    group.add_argument(
        "--noise-divisor", help="noise std = 1/(s*D): D, or L:D per layer (default: means only)"
    )
    group.add_argument(
        "--noise-at-bound", action="store_true", help="also noise where precision is at 20"
    )
    if start:
        group.add_argument("--start", default="uniform", choices=("uniform", "weights"))
    group.add_argument("--sharpen", type=int, default=0, metavar="ITER", help="sharpening steps")
    defaults = SHARPENING_DEFAULTS
    group.add_argument(
        "--sharpen-rate", type=float, default=defaults["rate"], help="per-sample step size"
    )
    group.add_argument(
        "--sharpen-weight", type=float, default=defaults["weight"], help="pull towards X0"
    )
    group.add_argument("--sharpen-target", default=defaults["target"], choices=("next", "top"))
    group.add_argument("--seed", type=int, default=0)
    group.add_argument("--device", default="cpu")


def sampling_config(args: argparse.Namespace) -> SamplingConfig:
    """Build the sampling configuration from the flags of :func:`add_sampling_flags`."""
    sharpening = None
    knobs = [
        f"--sharpen-{name}"
        for name, default in SHARPENING_DEFAULTS.items()
        if getattr(args, f"sharpen_{name}") != default
    ]
    if knobs and not args.sharpen:
        raise CLIError(f"{', '.join(knobs)} set how sharpening runs; add --sharpen ITER to run it")
    if args.sharpen:
        sharpening = Sharpening(
            iterations=args.sharpen,
            rate=args.sharpen_rate,
            weight=args.sharpen_weight,
            target=args.sharpen_target,
        )
    try:
        return SamplingConfig(
            top_s=parse_per_layer(args.top_s, int),  # type: ignore[arg-type]
            noise_divisor=parse_per_layer(args.noise_divisor, float),  # type: ignore[arg-type]
            noise_at_bound=args.noise_at_bound,
            start=getattr(args, "start", "uniform"),
            sharpening=sharpening,
        )
    except ValueError as err:
        raise CLIError(str(err)) from None


def _generator(args: argparse.Namespace, run: Run) -> torch.Generator:
    """Return the seeded generator of the run's device (a baseline runs on the CPU)."""
    device = args.device if "device" in run.accepts("to") else "cpu"
    return torch.Generator(device=device).manual_seed(args.seed)


def conditional_classes(model: DCGMM, per_class: int) -> Tensor:
    """Return ``per_class`` copies of every class label, class-major (a grid row per class)."""
    assert model.classifier is not None
    return torch.arange(model.classifier.n_classes).repeat_interleave(per_class)


# The sampling knobs (add_sampling_flags), and which option of the run's model each flag feeds:
# a flag whose option the model does not take is refused (refuse_untaken).
SAMPLING_FLAGS = ("top_s", "noise_divisor", "noise_at_bound", "start", "sharpen",
                  "sharpen_rate", "sharpen_weight", "sharpen_target")  # fmt: skip
SAMPLE_FLAGS = {**{f: ("sample", "config") for f in SAMPLING_FLAGS},
                "cls": ("sample", "classes"), "per_class": ("sample", "classes"),
                "device": ("to", "device")}  # fmt: skip
INPAINT_FLAGS = {**{f: ("inpaint", "config") for f in SAMPLING_FLAGS},
                 "layer": ("inpaint", "layer"), "device": ("to", "device")}  # fmt: skip


def _sample_options(args: argparse.Namespace, run: Run) -> tuple[dict[str, Any], int, int | None]:
    """Return the sample options the run's model takes, the count and the grid's columns."""
    options: dict[str, Any] = {}
    n, n_cols = args.n, None
    if "config" in run.accepts("sample"):
        options["config"] = sampling_config(args)
    if args.per_class is not None:
        if run.native.classifier is None:
            raise CLIError(f"--per-class needs a classifier layer; {run.name} has none")
        options["classes"] = conditional_classes(run.native, args.per_class)
        n, n_cols = options["classes"].shape[0], args.per_class
    elif args.cls is not None:
        options["classes"] = torch.full((args.n,), args.cls)
    return options, n, n_cols


def cmd_sample(args: argparse.Namespace) -> int:
    """Draw samples from a trained model and write them as a PNG grid (and optionally .npy)."""
    check_png_path(args.out)  # before any work
    run = load_run(args.run_dir, map_location=args.device)
    refuse_untaken(args, run, SAMPLE_FLAGS, {"run_dir", "n", "out", "seed", "npy"})
    options, n, n_cols = _sample_options(args, run)
    generator = _generator(args, run)
    try:
        images = run.sample(n, generator=generator, **options)
    except ValueError as err:
        raise CLIError(str(err)) from None
    path = save_grid(args.out, images, n_cols=n_cols, scale=2)
    print(f"wrote {path} ({n} samples of {run.name}{', a row per class' if n_cols else ''})")
    if args.npy:
        np.save(args.npy, images.cpu().numpy())
        print(f"wrote {args.npy}")
    return 0


def cmd_inpaint(args: argparse.Namespace) -> int:
    """Complete masked test images; write original | masked | completed, a row per image."""
    check_png_path(args.out)  # before any work
    run = load_run(args.run_dir, map_location=args.device)
    accepted = {"run_dir", "data", "split", "classes", "limit", "mask", "out", "seed"}
    refuse_untaken(args, run, INPAINT_FLAGS, accepted)
    data = load_data(
        args.data, args.split, args.classes, None, args.limit, resize=run.data.get("resize")
    )
    images = run.prepare(data.images)
    options: dict[str, Any] = {"layer": args.layer} if args.layer is not None else {}
    if "config" in run.accepts("inpaint"):
        options["config"] = sampling_config(args)
    try:
        mask_generator = torch.Generator().manual_seed(args.seed + 1)  # masks are drawn on the CPU
        missing = make_mask(args.mask, tuple(images.shape), generator=mask_generator)
        missing = missing.to(images.device)
        generator = _generator(args, run)
        completed = run.inpaint(images, missing, generator=generator, **options)
    except ValueError as err:
        raise CLIError(str(err)) from None
    path = save_inpainting_grid(args.out, images, missing, completed)
    mse = float(((completed - images) ** 2)[missing].mean()) if missing.any() else 0.0
    print(
        f"wrote {path}: {images.shape[0]} rows of original | masked | completed "
        f"({run.name}, mask {args.mask}; mean squared error on the missing pixels {mse:.4f})"
    )
    return 0


def cmd_train_evaluator(args: argparse.Namespace) -> int:
    """Train the sample-quality CNN on a training split; report its test accuracy."""
    out = Path(args.out)
    check_writable(out)
    train = load_data(args.data, "train", None, None, args.limit)
    test = load_data(args.data, "test", None, None, None)
    n_classes = int(max(train.labels.max(), test.labels.max())) + 1
    start = time.perf_counter()
    model = train_evaluator(
        train.images,
        train.labels,
        n_classes=n_classes,
        epochs=args.epochs,
        seed=args.seed,
        device=args.device,
        progress=True,
    )
    seconds = time.perf_counter() - start
    model = model.cpu()
    acc = accuracy(model, test.images, test.labels)
    info = {
        "data": args.data,
        "n_train": len(train),
        "epochs": args.epochs,
        "seed": args.seed,
        "train_seconds": round(seconds, 1),
        "test_accuracy": acc,
        "n_test": len(test),
        "note": "Frechet distances in this network's feature space are not comparable to FID",
    }
    save_evaluator(out, model, info)
    print(f"test accuracy {100 * acc:.2f}% on {len(test)} images; trained in {seconds:.0f} s")
    print(f"wrote {out}")
    return 0


def cmd_sample_quality(args: argparse.Namespace) -> int:
    """Judge a model's samples with a trained evaluator (accuracy and Fréchet distance)."""
    run = load_run(args.run_dir, map_location=args.device)
    always = {"run_dir", "evaluator", "data", "per_class", "batch_size", "json", "seed"}
    refuse_untaken(args, run, SAMPLE_FLAGS, always)
    evaluator, info = load_evaluator(args.evaluator)
    record = run_data(run.path, run.config, args.data)
    real = load_data(record["source"], "test", None, None, None, resize=record.get("resize"))
    config = sampling_config(args)
    options: dict[str, Any] = {"config": config} if "config" in run.accepts("sample") else {}
    generator = _generator(args, run)
    conditional = "classes" in run.accepts("sample") and run.native.classifier is not None
    intended = conditional_classes(run.native, args.per_class) if conditional else None
    n = intended.shape[0] if intended is not None else args.per_class * evaluator.n_classes
    batches = []
    for start in range(0, n, args.batch_size):
        count = min(args.batch_size, n - start)
        if intended is not None:
            options["classes"] = intended[start : start + count]
        batches.append(run.sample(count, generator=generator, **options))
    samples = torch.cat(batches).cpu()
    result = sample_quality(evaluator, samples, real.images, intended)
    result |= {
        "run_dir": str(args.run_dir),
        "evaluator": str(args.evaluator),
        "evaluator_test_accuracy": info.get("test_accuracy"),
        "conditional": intended is not None,
        "sampling": {k: str(v) for k, v in vars(config).items()},
    }
    if args.json:
        print(json.dumps(result))
    else:
        if result["accuracy"] is not None:
            share = 100 * result["accuracy"]
            print(f"evaluator accuracy on {n} class-conditional samples: {share:.2f}%")
            per_class = ", ".join(
                f"{c}: {100 * a:.1f}" for c, a in enumerate(result["per_class_accuracy"])
                if a is not None
            )  # fmt: skip
            print(f"per intended class (%): {per_class}")
        print(f"Frechet distance to {len(real)} real test images: {result['frechet_distance']:.3f}")
        print(f"predicted classes of the samples: {result['predicted_histogram']}")
        print("(in the evaluator's feature space: not comparable to published FIDs)")
    return 0


def add_generation_commands(sub: "argparse._SubParsersAction[Parser]") -> None:
    """Register the four generation subcommands."""
    smp = sub.add_parser("sample", help="draw samples into a PNG grid")
    smp.add_argument("run_dir")
    smp.add_argument("-n", type=int, default=100, help="number of samples")
    smp.add_argument("--class", dest="cls", type=int, help="class-conditional (needs C(S))")
    smp.add_argument("--per-class", type=int, help="N samples of every class, a row per class")
    smp.add_argument("--out", required=True, help="PNG file")
    smp.add_argument("--npy", help="also save the samples as an .npy array")
    add_sampling_flags(smp)
    smp.set_defaults(func=cmd_sample)

    inp = sub.add_parser("inpaint", help="complete masked images: original | masked | completed")
    inp.add_argument("run_dir")
    inp.add_argument("--data", required=True, help="mnist, fashion-mnist, IDX folder or .npz")
    inp.add_argument("--split", default="test", choices=("train", "test"))
    inp.add_argument("--classes")
    inp.add_argument("--limit", type=int, default=10, help="how many images (first N)")
    inp.add_argument("--mask", default="right-half", help=" | ".join(MASK_KINDS))
    inp.add_argument("--layer", type=int, help="GMM layer (1-based) to read; default the top")
    inp.add_argument("--out", required=True, help="PNG file")
    add_sampling_flags(inp, start=False)
    inp.set_defaults(func=cmd_inpaint)

    tev = sub.add_parser("train-evaluator", help="train the sample-quality CNN")
    tev.add_argument("--data", required=True)
    tev.add_argument("--out", required=True, help="directory for the weights and evaluator.json")
    tev.add_argument("--epochs", type=int, default=5)
    tev.add_argument("--limit", type=int, help="first N training images")
    tev.add_argument("--seed", type=int, default=0)
    tev.add_argument("--device", default="cpu")
    tev.set_defaults(func=cmd_train_evaluator)

    sq = sub.add_parser("sample-quality", help="evaluator accuracy and Frechet distance")
    sq.add_argument("run_dir")
    sq.add_argument("--evaluator", required=True, help="directory from train-evaluator")
    sq.add_argument("--data", help="real images (test split); default the run's data")
    sq.add_argument("--per-class", type=int, default=1000, help="samples per class")
    sq.add_argument("--batch-size", type=int, default=500)
    sq.add_argument("--json", action="store_true")
    add_sampling_flags(sq)
    sq.set_defaults(func=cmd_sample_quality)
