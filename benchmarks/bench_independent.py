"""An independent GMM layer's training statistics: dense batched products vs segment sums.

    python -m benchmarks.bench_independent [--out docs/speed_independent.md]

Under the hard objectives (annealed, max-component) the gradient rows are kernel rows, so the
statistics ``A = R^T x`` and ``B = R^T x^2`` per position are segment sums of the windows by
winner, mixed by the kernel (:func:`dcgmm.layers.gmm_gradients.winner_statistics`), instead of
two (K, N) @ (N, D) products per position. Both forms are timed on the shapes of preset E's
independent variant (batch 100), interleaved, in CPU time of this process (robust to other jobs
on the machine); medians of ``--repeats`` calls. They agree to float32 rounding (checked here;
``tests/test_gmm_gradients.py`` checks the stage against autograd in float64).
"""

import argparse
import datetime
import platform
import statistics
import time
from pathlib import Path

import torch

import dcgmm
from dcgmm.layers import gmm_gradients as grads
from dcgmm.layers.torus import torus_smoothing_kernel

ROOT = Path(__file__).resolve().parents[1]
# (label, positions L, batch N, window entries D, components K): E-indep's layers 2 and 4.
SHAPES = [("layer 2: F(3,1) on 28x28x1, G(25,indep)", 676, 100, 9, 25),
          ("layer 4: F(4,2) on 26x26x25, G(25,indep)", 144, 100, 400, 25)]  # fmt: skip


def cpu_ms(fn: object, repeats: int) -> float:
    """Median CPU milliseconds of ``fn()`` over ``repeats`` calls (after one warm-up)."""
    fn()  # type: ignore[operator]
    times = []
    for _ in range(repeats):
        start = time.process_time()
        fn()  # type: ignore[operator]
        times.append(time.process_time() - start)
    return 1e3 * statistics.median(times)


def compare(positions: int, n: int, dim: int, k: int, repeats: int) -> tuple[float, float, float]:
    """Return (dense ms, segment-sum ms, largest relative difference) for one shape."""
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(positions, n, dim, generator=gen)
    squares = x * x
    best = torch.randint(0, k, (positions, n), generator=gen)
    kernel = torus_smoothing_kernel(k, 0.5, dtype=torch.float32, device=torch.device("cpu"))
    rows = positions * n

    def dense() -> tuple[torch.Tensor, torch.Tensor]:
        r = (kernel / rows).index_select(0, best.reshape(-1)).reshape(positions, n, k)
        rt = r.transpose(1, 2)
        return torch.bmm(rt, x), torch.bmm(rt, squares)

    def segments() -> tuple[torch.Tensor, torch.Tensor]:
        stats = grads.winner_statistics(squares, x, best, k, kernel, rows=rows)
        return stats.first, stats.second

    a, b = dense(), segments()
    diff = max(float((p - q).abs().max() / p.abs().max()) for p, q in zip(a, b, strict=True))
    times = {"dense": [], "segments": []}  # interleaved rounds
    for _ in range(3):
        times["dense"].append(cpu_ms(dense, repeats))
        times["segments"].append(cpu_ms(segments, repeats))
    return statistics.median(times["dense"]), statistics.median(times["segments"]), diff


def main(argv: list[str] | None = None) -> None:
    """Time both forms and write the page."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_independent")
    parser.add_argument("--out", default=str(ROOT / "docs" / "speed_independent.md"))
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    lines = [
        "# Independent GMM layers: statistics by segment sums",
        "",
        f"- date: {datetime.date.today()}; machine: {platform.platform()}, one torch thread; "
        f"dcgmm {dcgmm.__version__}, torch {torch.__version__}",
        f"- command: `python -m benchmarks.bench_independent` (CPU time, medians of 3 "
        f"interleaved rounds of {args.repeats} calls)",
        "",
        "| shape (batch 100) | two batched products ms | segment sums ms | ratio | max rel. diff "
        "| the stage uses |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for label, positions, n, dim, k in SHAPES:
        dense, segments, diff = compare(positions, n, dim, k, args.repeats)
        uses = "segment sums" if dim <= k else "batched products"  # IndependentGMMStage's rule
        lines.append(f"| {label} | {dense:.2f} | {segments:.2f} | {dense / segments:.2f}x | "
                     f"{diff:.1e} | {uses} |")  # fmt: skip
        print(lines[-1], flush=True)
    lines += [
        "",
        "`IndependentGMMStage.train_step` takes segment sums for narrow windows (D <= K) and "
        "the batched products otherwise: on the CPU, `index_add_` of wide rows is no faster "
        "than the products it replaces. The forward pass (the log-joints) is unchanged.",
        "",
    ]
    Path(args.out).write_text("\n".join(lines))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
