"""A folded stage's statistics: sums of the windows each component wins vs the weight gradient.

    python -m benchmarks.bench_window_sums [--out docs/speed_window_sums.md] [--repeats 10]

For the hard objectives :class:`dcgmm.stages.folded.FoldedGMMStage` takes its statistics as
sums of the windows each component wins (:mod:`dcgmm.stages.window_sums`, compiled, on one
thread) where :func:`~dcgmm.stages.window_sums.pays`; before, always as the gathered rows of R
times oneDNN's weight gradient. Both are timed here on every folded stage of the shared
presets B-G, after 30 training steps on the built-in digits (batch 100, so the winners are a
trained layer's), interleaved, wall-clock medians of 3 rounds of ``--repeats`` calls of the
stage's whole ``objective_and_statistics``, at 1 and 2 threads (one process each). The
statistics of both are compared with the float64 stage's (``tests/test_window_sums.py``
checks the sums against autograd in float64).
"""

import copy
import datetime
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

import dcgmm
from benchmarks import per_thread
from benchmarks.bench import cpu_model
from dcgmm import DCGMM, TrainConfig, Trainer, _compiling, load_dataset
from dcgmm.stages import FoldedGMMStage, window_sums

ROOT = Path(__file__).resolve().parents[1]
PRESETS = ["B", "C", "D", "E", "F", "G"]
THREADS = [1, 2]


def wall_ms(fn: Callable[[], object], repeats: int) -> float:
    """Median wall milliseconds of ``fn()`` over ``repeats`` calls (after one warm-up)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def folded_stages(preset: str) -> list[tuple[FoldedGMMStage, torch.Tensor]]:
    """The preset's folded stages and their inputs, after 30 training steps."""
    images = load_dataset("mnist").images
    model = DCGMM.from_spec(preset, (28, 28, 1), generator=torch.Generator().manual_seed(0))
    trainer = Trainer(model, TrainConfig(steps=10**9, layer_delay=0.0), images)
    for _ in range(30):
        trainer.train_step()
    h = images[:100].float()
    pairs = []
    with torch.no_grad():
        for stage in model.stages:
            if isinstance(stage, FoldedGMMStage):
                pairs.append((stage, h))
            h = stage.forward(h)
    return pairs


def relative_error(stage: FoldedGMMStage, h: torch.Tensor) -> float:
    """The statistics' largest difference from the float64 stage's, over its largest value."""
    exact = FoldedGMMStage(stage.folding, copy.deepcopy(stage.layer).double(), 0)
    reference = exact.objective_and_statistics(h.double())[2]
    got = stage.objective_and_statistics(h)[2]
    return max(
        float((a.double() - b).abs().max() / b.abs().max())
        for a, b in zip(got, reference, strict=True)
    )


def output_size(stage: FoldedGMMStage) -> tuple[int, int]:
    """The stage's (Ho, Wo)."""
    height, width, _ = stage.folding.out_shape
    return height, width


def compare(stage: FoldedGMMStage, h: torch.Tensor, repeats: int) -> dict[str, object]:
    """Return the stage's ms with and without the sums at this process's threads, and errors."""
    threads = torch.get_num_threads()
    chooses = window_sums.pays
    # A fresh compilation per stage: past 8 shapes a process would take the one-hot product.
    torch._dynamo.reset()
    _compiling._compiled.clear()
    _compiling._shapes.clear()
    features = stage._features(h).permute(0, 2, 3, 1)
    best = torch.zeros(h.shape[0], *output_size(stage), dtype=torch.int64)
    fold = stage.folding
    pays = chooses(features, best, stage.layer.n_components, fold.patch_size, fold.stride)
    row: dict[str, object] = {f"pays{threads}": pays}
    times: dict[str, list[float]] = {"weight gradient": [], "sums": []}
    for _ in range(3):
        for name in times:
            window_sums.pays = lambda *args, sums=name == "sums": sums  # type: ignore[misc]
            try:
                times[name].append(wall_ms(lambda: stage.objective_and_statistics(h), repeats))
                if name not in row:
                    row[name] = relative_error(stage, h)
            finally:
                window_sums.pays = chooses  # type: ignore[assignment]
    for name, values in times.items():
        row[f"{name} {threads}"] = statistics.median(values)
    return row


def describe(stage: FoldedGMMStage, h: torch.Tensor) -> str:
    """Return e.g. 'F(4,2) on 26x26x25, G(25)'."""
    fy, sy = stage.folding.patch_size[0], stage.folding.stride[0]
    height, width, channels = h.shape[1:]
    return f"F({fy},{sy}) on {height}x{width}x{channels}, G({stage.layer.n_components})"


def report(rows: list[dict[str, object]], seconds: float, repeats: int) -> str:
    """Return the markdown page."""
    lines = [
        "# A folded stage's statistics: window sums against the weight gradient",
        "",
        f"- date: {datetime.datetime.now(datetime.UTC).isoformat(timespec='seconds')}",
        f"- machine: {cpu_model()}, {platform.platform()}",
        f"- versions: dcgmm {dcgmm.__version__}, torch {torch.__version__}, "
        f"python {platform.python_version()}",
        f"- command: `python -m benchmarks.bench_window_sums --repeats {repeats}` "
        f"({seconds:.0f} s wall)",
        "- what: the stage's whole `objective_and_statistics` (batch 100, after 30 training "
        "steps of the preset on the built-in digits), wall-clock ms, medians of 3 interleaved "
        "rounds; 'weight gradient' gathers R's rows and takes oneDNN's weight gradient, "
        "'sums' the compiled window sums (one thread, whatever the process's count); "
        "'chosen' is what `window_sums.pays` picks at that thread count; error: the "
        "statistics' largest difference from the float64 stage's, over its largest value",
        "",
        "| preset | stage | additions | threads | weight gradient ms | sums ms | speed-up | "
        "chosen | error (gradient / sums) |",
        "|---|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for row in rows:
        for threads in THREADS:
            dense, sums = row[f"weight gradient {threads}"], row[f"sums {threads}"]
            assert isinstance(dense, float)
            assert isinstance(sums, float)
            chosen = "sums" if row[f"pays{threads}"] else "weight gradient"
            lines.append(
                f"| {row['preset']} | {row['stage']} | {row['additions']:.1e} | {threads} | "
                f"{dense:.2f} | {sums:.2f} | {dense / sums:.2f}x | {chosen} | "
                f"{row['weight gradient']:.1e} / {row['sums']:.1e} |"
            )
    return "\n".join(lines) + "\n"


def measure(threads: int, repeats: int) -> list[dict[str, object]]:
    """Return the rows of every preset's folded stages, measured at ``threads`` threads."""
    torch.set_num_threads(threads)
    rows = []
    for preset in PRESETS:
        for stage, h in folded_stages(preset):
            height, width = output_size(stage)
            windows = h.shape[0] * height * width
            fy, fx = stage.folding.patch_size
            row = {"preset": preset, "stage": describe(stage, h),
                   "additions": float(windows * fy * fx * 2 * h.shape[-1])}  # fmt: skip
            rows.append(row | compare(stage, h, repeats))
    return rows


def report_by_threads(by_threads: dict[int, Any], seconds: float, repeats: int) -> str:
    """Return :func:`report` of the rows of every thread count, merged row by row."""
    merged: list[dict[str, object]] = []
    for rows in by_threads.values():
        merged = rows if not merged else [a | b for a, b in zip(merged, rows, strict=True)]
    return report(merged, seconds, repeats)


def main() -> None:
    per_thread.main(
        __doc__, "benchmarks.bench_window_sums", out=ROOT / "docs" / "speed_window_sums.md",
        repeats=10, measure=measure, report=report_by_threads, threads=THREADS,
    )  # fmt: skip


if __name__ == "__main__":
    main()
