"""The max and softmax over batch-last components: compiled loops vs PyTorch's own kernels.

    python -m benchmarks.bench_batch_last [--out docs/speed_batch_last.md] [--repeats 20]

An independent GMM layer reduces its (L, K, N) log-joints over K (:mod:`dcgmm.layers.batch_last`).
Timed here, at 1 and 2 threads (one process each): the two reductions alone on the log-joints of
preset E-indep's first layer (676 positions, K = 25, 100 digits, after 30 training steps:
synthetic values would differ in how many exponentials underflow), and the whole training step of
every independent preset (batch 100, the built-in digits) with the compiled loops and with
PyTorch's kernels (``COMPILE_MIN_VALUES`` raised past every size), interleaved in one process,
medians of 5 rounds of ``--repeats`` calls or steps.
"""

import datetime
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

import dcgmm
from benchmarks import per_thread
from benchmarks.bench import cpu_model
from dcgmm import DCGMM, TrainConfig, Trainer, load_dataset
from dcgmm.layers import batch_last
from dcgmm.spec import INDEPENDENT_PRESETS
from dcgmm.stages import IndependentGMMStage
from dcgmm.stages.grouped_products import grouped_products_batch_last

ROOT = Path(__file__).resolve().parents[1]
THREADS = [1, 2]
ROUNDS = 5
NEVER = 2**62  # a COMPILE_MIN_VALUES no tensor reaches: PyTorch's own kernels


def interleaved_ms(variants: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median wall milliseconds per call of each variant, rounds interleaved."""
    for fn in variants.values():
        fn()  # warm-up (and compilation)
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(ROUNDS):
        for name, fn in variants.items():
            start = time.perf_counter()
            for _ in range(repeats):
                fn()
            times[name].append(1e3 * (time.perf_counter() - start) / repeats)
    return {name: statistics.median(values) for name, values in times.items()}


def with_threshold(value: int, fn: Callable[[], object]) -> Callable[[], object]:
    """Return ``fn`` run with ``batch_last.COMPILE_MIN_VALUES = value``."""

    def run() -> object:
        saved = batch_last.COMPILE_MIN_VALUES
        batch_last.COMPILE_MIN_VALUES = value
        try:
            return fn()
        finally:
            batch_last.COMPILE_MIN_VALUES = saved

    return run


def first_log_joints() -> torch.Tensor:
    """E-indep's first layer's log-joints (676, 25, 100) of 100 digits, after 30 steps."""
    images = load_dataset("mnist").images
    model = DCGMM.from_spec("E-indep", (28, 28, 1), generator=torch.Generator().manual_seed(0))
    trainer = Trainer(model, TrainConfig(steps=10**9, layer_delay=0.0), images)
    for _ in range(30):
        trainer.train_step()
    stage = model.stages[0]
    assert isinstance(stage, IndependentGMMStage)
    features = stage._features(images[:100].float())
    return grouped_products_batch_last(*stage._weight_and_bias(), features)


def reductions(repeats: int) -> dict[str, object]:
    """The two reductions alone on E-indep's first layer's log-joints, and their differences."""
    log_joint = first_log_joints()
    compiled, own = batch_last.COMPILE_MIN_VALUES, NEVER
    row: dict[str, object] = {}
    for name, fn in (("max", batch_last.max_over_components),
                     ("softmax", batch_last.softmax_over_components)):  # fmt: skip
        times = interleaved_ms(
            {"torch": with_threshold(own, lambda fn=fn: fn(log_joint)),
             "compiled": with_threshold(compiled, lambda fn=fn: fn(log_joint))},
            repeats,
        )  # fmt: skip
        row[name] = times
    _best_values, best = batch_last.max_over_components(log_joint)
    row["indices differing"] = int((best != log_joint.max(dim=-2).indices).sum())
    row["winners"] = best.numel()
    resp = batch_last.softmax_over_components(log_joint)
    row["softmax max difference"] = float((resp - torch.softmax(log_joint, dim=-2)).abs().max())
    return row


def training_steps(repeats: int) -> dict[str, dict[str, float]]:
    """Each independent preset's training step, compiled reductions vs PyTorch's."""
    images = load_dataset("mnist").images
    rows = {}
    for preset in INDEPENDENT_PRESETS:
        model = DCGMM.from_spec(preset, (28, 28, 1), generator=torch.Generator().manual_seed(0))
        trainer = Trainer(model, TrainConfig(steps=10**9, layer_delay=0.0), images)
        for _ in range(3):
            trainer.train_step()
        rows[preset] = interleaved_ms(
            {"torch": with_threshold(NEVER, trainer.train_step),
             "compiled": with_threshold(batch_last.COMPILE_MIN_VALUES, trainer.train_step)},
            repeats,
        )  # fmt: skip
    return rows


def measure(threads: int, repeats: int) -> dict[str, object]:
    torch.set_num_threads(threads)
    return {"reductions": reductions(repeats), "steps": training_steps(repeats)}


def report(results: dict[int, dict[str, object]], seconds: float, repeats: int) -> str:
    """Return the markdown page."""
    lines = [
        "# The max and softmax over batch-last components: compiled loops vs PyTorch",
        "",
        f"- date: {datetime.datetime.now(datetime.UTC).isoformat(timespec='seconds')}",
        f"- machine: {cpu_model()}, {platform.platform()}",
        f"- versions: dcgmm {dcgmm.__version__}, torch {torch.__version__}, "
        f"python {platform.python_version()}",
        f"- command: `python -m benchmarks.bench_batch_last --repeats {repeats}` "
        f"({seconds:.0f} s wall)",
        f"- what: wall-clock ms, medians of {ROUNDS} interleaved rounds of {repeats} calls "
        "or training steps (batch 100), one process per thread count; 'torch' = "
        "`Tensor.max` / `torch.softmax` over axis -2, 'compiled' = "
        "`dcgmm.layers.batch_last`'s loops through `torch.compile`",
        "",
        "| what | threads | torch ms | compiled ms | speed-up |",
        "|---|---:|---:|---:|---:|",
    ]
    for threads, result in results.items():
        parts = result["reductions"]
        assert isinstance(parts, dict)
        for name in ("max", "softmax"):
            own, compiled = parts[name]["torch"], parts[name]["compiled"]
            lines.append(
                f"| {name} of (676, 25, 100) over K | {threads} | {own:.3f} | {compiled:.3f} "
                f"| {own / compiled:.2f}x |"
            )
    for preset in INDEPENDENT_PRESETS:
        for threads, result in results.items():
            step = result["steps"]
            assert isinstance(step, dict)
            own, compiled = step[preset]["torch"], step[preset]["compiled"]
            lines.append(
                f"| {preset} training step | {threads} | {own:.2f} | {compiled:.2f} "
                f"| {own / compiled:.2f}x |"
            )
    parts = results[THREADS[0]]["reductions"]
    assert isinstance(parts, dict)
    lines += [
        "",
        f"Same values: {parts['indices differing']} of {parts['winners']:,} winners differ from "
        "`Tensor.max`'s; the softmax differs from `torch.softmax`'s by at most "
        f"{parts['softmax max difference']:.1e}.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    per_thread.main(
        __doc__, "benchmarks.bench_batch_last", out=ROOT / "docs" / "speed_batch_last.md",
        repeats=20, measure=measure, report=report, threads=THREADS,
    )  # fmt: skip


if __name__ == "__main__":
    main()
