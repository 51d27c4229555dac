"""Table III: sample quality of class-conditional generation.

    python -m benchmarks.reproduce table3 [--data-dir ../shared/data] [--epochs 25] [--tiny]

Sample quality of class-conditional generation, one DCGMM per class (the paper's
protocol): an independent CNN evaluator (``dcgmm.evaluator``) trained on the real training
set classifies 1000 samples per class; we report its accuracy and the Fréchet distance in its
feature space (not comparable to published FIDs). ``--tiny`` runs everything on a few hundred
images for a few steps, so that a test can run this script end to end.
"""

import argparse
import datetime
import json
import platform
import time
from pathlib import Path
from typing import Any

import torch

import dcgmm
from benchmarks.reproduce.common import write_results
from dcgmm import DCGMM, TrainConfig, Trainer, load_dataset
from dcgmm.checkpoint import load_model, save_checkpoint, write_config
from dcgmm.evaluator import (
    accuracy,
    load_evaluator,
    sample_quality,
    save_evaluator,
    train_evaluator,
)
from dcgmm.images import save_grid
from dcgmm.sampling import SamplingConfig, sample
from dcgmm.training import PRESET_TRAIN_OVERRIDES

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


def sampling_for(model: DCGMM) -> SamplingConfig:
    """The recipes' sampling: top-S 2 below the top layer, all components at the top."""
    gmm = [index for index, _ in model.gmm_layers()]
    return SamplingConfig(top_s={i + 1: 2 for i in gmm[:-1]}, noise_divisor=10.0)


def get_evaluator(
    dataset: str, data_dir: Path, runs: Path, *, epochs: int, tiny: bool
) -> tuple[Any, dict[str, Any]]:
    """Train (or reuse) the sample-quality evaluator of ``dataset``."""
    folder = runs / dataset / "evaluator"
    if (folder / "evaluator.json").exists():
        return load_evaluator(folder)
    limit = 2000 if tiny else None
    train = load_dataset(data_dir / dataset, limit=limit)
    test = load_dataset(data_dir / dataset, split="test", limit=500 if tiny else None)
    start = time.perf_counter()
    model = train_evaluator(train.images, train.labels, n_classes=10, epochs=epochs, seed=0)
    seconds = time.perf_counter() - start
    info = {
        "data": str(data_dir / dataset),
        "epochs": epochs,
        "train_seconds": round(seconds, 1),
        "test_accuracy": accuracy(model, test.images, test.labels),
        "n_test": len(test),
    }
    save_evaluator(folder, model, info)
    print(f"{dataset} evaluator: {100 * info['test_accuracy']:.2f}% in {seconds:.0f} s")
    return load_evaluator(folder)


def train_class_model(
    preset: str, dataset: str, data_dir: Path, cls: int, out: Path, *, epochs: int, tiny: bool
) -> float:
    """Train one DCGMM on one class (reuse a finished run); return the training seconds."""
    if (out / "model.safetensors").exists():
        return float(json.loads((out / "timing.json").read_text())["seconds"])
    data = load_dataset(data_dir / dataset, classes=[cls], limit=300 if tiny else None)
    overrides = PRESET_TRAIN_OVERRIDES.get(preset, {})
    config = TrainConfig(
        epochs=None if tiny else epochs,
        steps=20 if tiny else None,
        seed=cls,
        checkpoint_every=10**9,
        **overrides,  # type: ignore[arg-type]
    )
    model = DCGMM.from_spec(preset, data.image_shape, generator=torch.Generator().manual_seed(cls))
    write_config(
        out,
        {
            "spec": model.spec,
            "preset": preset,
            "input_shape": list(data.image_shape),
            "objective": "annealed",
            "train": config.to_dict(),
            "data": {"source": str(data_dir / dataset), "classes": str(cls)},
        },
    )
    start = time.perf_counter()
    trainer = Trainer(model, config, data.images)
    trainer.run()
    seconds = time.perf_counter() - start
    save_checkpoint(out, model, trainer.state_dict())
    (out / "timing.json").write_text(json.dumps({"seconds": seconds, "steps": trainer.n_steps}))
    return seconds


def save_class_grid(samples: list[torch.Tensor], path: Path, per_row: int = 12) -> None:
    """Write the first ``per_row`` samples of every class, a row per class."""
    rows = torch.cat([s[:per_row] for s in samples])
    path.parent.mkdir(parents=True, exist_ok=True)
    save_grid(path, rows, n_cols=min(per_row, samples[0].shape[0]), scale=2)


def table3(args: argparse.Namespace) -> dict[str, Any]:
    """Train per-class models, sample, judge; return the rows of the table."""
    data_dir, runs = Path(args.data_dir), Path(args.runs)
    per_class = 20 if args.tiny else args.per_class
    rows = []
    for dataset in args.datasets.split(","):
        evaluator, info = get_evaluator(
            dataset,
            data_dir,
            runs,
            epochs=1 if args.tiny else args.evaluator_epochs,
            tiny=args.tiny,
        )
        real = load_dataset(data_dir / dataset, split="test", limit=500 if args.tiny else None)
        for preset in args.presets.split(","):
            seconds, samples, intended = 0.0, [], []
            for cls in range(10):
                out = runs / dataset / preset / f"class{cls}"
                seconds += train_class_model(
                    preset, dataset, data_dir, cls, out, epochs=args.epochs, tiny=args.tiny
                )
                model = load_model(out)
                generator = torch.Generator().manual_seed(1000 + cls)
                samples.append(
                    sample(model, per_class, config=sampling_for(model), generator=generator)
                )
                intended.append(torch.full((per_class,), cls))
            save_class_grid(samples, Path(args.out) / "table3" / f"{dataset}_{preset}.png")
            quality = sample_quality(
                evaluator, torch.cat(samples), real.images, torch.cat(intended)
            )
            row = {
                "dataset": dataset,
                "preset": preset,
                "epochs": 0 if args.tiny else args.epochs,
                "train_seconds_10_models": round(seconds, 1),
                "accuracy": quality["accuracy"],
                "frechet_distance": quality["frechet_distance"],
                "paper_accuracy": PAPER_TABLE3.get((dataset, preset)),
                "evaluator_test_accuracy": info["test_accuracy"],
                "samples_per_class": per_class,
                "sampling": repr(sampling_for(model)),
            }
            print(json.dumps(row), flush=True)
            rows.append(row)
    return {"rows": rows}


def write_table3(result: dict[str, Any], out: Path, command: str, wall: float) -> None:
    """Write docs/results/table3.md."""
    lines = [
        "# Table III: sample quality of class-conditional generation",
        "",
        f"- date: {datetime.date.today().isoformat()}; machine: {platform.platform()}, "
        f"{torch.get_num_threads()} threads; dcgmm {dcgmm.__version__}, torch {torch.__version__}",
        f"- command: `{command}` ({wall / 60:.1f} min wall)",
        "- protocol: one DCGMM per class trained on that class's training images; samples per "
        "class drawn top-down (sampling knobs in the table's JSON); an independent CNN "
        "(`dcgmm train-evaluator`) classifies them. Fréchet distance: real test images vs "
        "samples in the evaluator's 128-d feature space (**not comparable to published FIDs**).",
        "",
        "| dataset | preset | epochs | evaluator accuracy on samples | paper | Fréchet distance |"
        " evaluator test accuracy | training s (10 models) |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        paper = f"{r['paper_accuracy']:.1f}" if r["paper_accuracy"] is not None else "-"
        lines.append(
            f"| {r['dataset']} | {r['preset']} | {r['epochs']} | {100 * r['accuracy']:.1f} | "
            f"{paper} | {r['frechet_distance']:.2f} | {100 * r['evaluator_test_accuracy']:.2f} | "
            f"{r['train_seconds_10_models']:.0f} |"
        )
    lines += ["", "First samples of every class (a row per class):", ""]
    for r in result["rows"]:
        lines.append(f"![{r['dataset']} {r['preset']}](table3/{r['dataset']}_{r['preset']}.png)")
    write_results(out, "table3", lines, result)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Table III's options."""
    parser.add_argument("--presets", default="A,E")
    parser.add_argument("--epochs", type=int, default=25, help="per-class training epochs")
    parser.add_argument("--per-class", type=int, default=1000, help="samples per class")
    parser.add_argument("--evaluator-epochs", type=int, default=5)


def run(args: argparse.Namespace, command: str) -> None:
    """Run Table III and write its results."""
    start = time.perf_counter()
    result = table3(args)
    write_table3(result, Path(args.out), command, time.perf_counter() - start)
