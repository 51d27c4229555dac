"""Time one preset in a fresh process: training step, evaluation, sampling and in-painting.

    python -m benchmarks.bench_preset E [--quick] [--sharpen 300]   # or E-indep, or a spec

Prints one JSON object. A fresh process per preset keeps the peak-memory figure (maximum
resident set size while training) about this preset alone.
"""

import argparse
import json
import resource
import sys
import time

import torch
from torch.utils.benchmark import Timer

from dcgmm import DCGMM, TrainConfig, Trainer, load_dataset
from dcgmm.generation.inpainting import inpaint, make_mask
from dcgmm.generation.sampling import SamplingConfig, sample

try:
    from dcgmm.generation.sharpening import Sharpening
except ImportError:  # an older version under benchmarks.versions (before 2026-12-06)
    from dcgmm.generation.sampling import Sharpening  # type: ignore[attr-defined,no-redef]

BATCH = 100


def median_seconds(fn: object, min_run_time: float) -> tuple[float, float, int]:
    """Return (median, IQR, number of blocks) of ``fn()`` from ``blocked_autorange``."""
    timer = Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
    m = timer.blocked_autorange(min_run_time=min_run_time)
    return m.median, m.iqr, len(m.times)


def max_rss_mb() -> float:
    """Peak resident set size of this process so far, in MB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def time_training(model: DCGMM, images: torch.Tensor, min_run_time: float) -> dict[str, float]:
    """Median time of one training step with every layer active, annealing included."""
    trainer = Trainer(model, TrainConfig(steps=10**9, layer_delay=0.0), images)
    for _ in range(3):  # warm-up (oneDNN primitive creation, allocator)
        trainer.train_step()

    def step() -> None:
        trainer.train_step()
        trainer._end_windows()

    median, iqr, n = median_seconds(step, min_run_time)
    return {"train_s": median, "train_iqr_s": iqr, "train_blocks": n}


def time_evaluation(model: DCGMM, images: torch.Tensor, min_run_time: float) -> dict[str, float]:
    """Images per second of ``model.scores`` (all three scores of every GMM layer)."""
    batch = images[:BATCH]
    median, iqr, _ = median_seconds(lambda: model.scores(batch), min_run_time)
    return {"eval_batch_s": median, "eval_iqr_s": iqr, "eval_images_per_s": BATCH / median}


def time_sampling(model: DCGMM, config: SamplingConfig, repeats: int) -> dict[str, float]:
    """Images per second of top-down sampling of a batch (median of ``repeats`` batches)."""
    gen = torch.Generator().manual_seed(0)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        sample(model, BATCH, config=config, generator=gen)
        times.append(time.perf_counter() - start)
    median = sorted(times)[len(times) // 2]
    return {"sample_batch_s": median, "sample_images_per_s": BATCH / median}


def time_inpainting(model: DCGMM, images: torch.Tensor, repeats: int) -> dict[str, float]:
    """Images per second of in-painting the centre (top layer, conditional expectation)."""
    batch = images[:BATCH]
    missing = make_mask("center", tuple(batch.shape))
    config = SamplingConfig(mode="mean")
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        inpaint(model, batch, missing, config=config)
        times.append(time.perf_counter() - start)
    median = sorted(times)[len(times) // 2]
    return {"inpaint_batch_s": median, "inpaint_images_per_s": BATCH / median}


def measure(preset: str, *, quick: bool, sharpen: int) -> dict[str, object]:
    """Return every measurement of one preset (see the module docstring)."""
    images = load_dataset("mnist").images
    model = DCGMM.from_spec(preset, (28, 28, 1), generator=torch.Generator().manual_seed(0))
    min_run_time = 0.2 if quick else 3.0
    rss_before = max_rss_mb()
    row: dict[str, object] = {"preset": preset, "spec": model.spec, "batch": BATCH}
    row |= time_training(model, images, min_run_time)
    row["train_peak_rss_mb"] = max_rss_mb()
    row["train_rss_growth_mb"] = max_rss_mb() - rss_before
    row |= time_evaluation(model, images, min_run_time)
    row |= time_sampling(model, SamplingConfig(top_s=1), 3 if quick else 10)
    row |= time_inpainting(model, images, 3 if quick else 10)
    if sharpen:
        config = SamplingConfig(top_s=1, sharpening=Sharpening(iterations=sharpen))
        sharpened = time_sampling(model, config, 1)
        row["sharpen_iterations"] = sharpen
        row["sharpen_batch_s"] = sharpened["sample_batch_s"]
        row["sharpen_images_per_s"] = sharpened["sample_images_per_s"]
    return row


def main(argv: list[str]) -> None:
    """Parse the command line and print the measurements as one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("preset")
    parser.add_argument("--quick", action="store_true", help="short timings, for smoke tests")
    parser.add_argument("--sharpen", type=int, default=0, help="also time sharpened sampling")
    args = parser.parse_args(argv)
    print(json.dumps(measure(args.preset, quick=args.quick, sharpen=args.sharpen)))


if __name__ == "__main__":
    main(sys.argv[1:])
