"""Arithmetic and memory cost of a DCGMM: training step, evaluation pass, sampling pass.

Counts follow the fast plan (:mod:`dcgmm.stages`). Definitions, per stage:

* ``matmul_flops``: floating-point operations in matrix products and convolutions (a
  multiply-add is 2). A GMM layer over M = N*H*W rows of dimension D with K components costs
  ``4*M*D*K`` forward (``[x^2, x] @ [-P/2, mu*P]``) and the same again for the gradient
  statistics ``R^T [x^2, x]``; the annealed objective adds ``2*M*K*K`` for the smoothing.
* ``bytes``: the compulsory memory traffic in float32: read the stage's input and parameters,
  write its output (and the parameters' gradients when training). Intermediates a perfect
  kernel would keep in cache are not counted, so this is a lower bound. A folding that runs on
  its own (not fused) writes its folded tensor and the GMM layer reads it back: that traffic
  is counted.

The floor of a pass is the sum over stages of ``max(matmul_flops / peak_flops,
bytes / bandwidth)`` (a roofline per stage). :func:`measure_machine` measures the two peaks.
"""

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from dcgmm.layers import GMM, Folding, LinearClassifier, MaxPooling
from dcgmm.model import DCGMM
from dcgmm.stages import FoldedGMMStage, IndependentGMMStage, Stage

__all__ = [
    "FLOAT_BYTES",
    "Cost",
    "MachinePeaks",
    "StageCost",
    "format_cost",
    "measure_machine",
    "model_cost",
    "stage_cost",
]

FLOAT_BYTES = 4


@dataclass(frozen=True)
class Cost:
    """Matrix-product flops and compulsory bytes of one pass of one stage (or a sum)."""

    matmul_flops: float = 0.0
    bytes: float = 0.0

    def __add__(self, other: "Cost") -> "Cost":
        return Cost(self.matmul_flops + other.matmul_flops, self.bytes + other.bytes)

    def floor_seconds(self, peak_flops: float, bandwidth: float) -> float:
        """Return the roofline time of this cost (flops/s and bytes/s)."""
        return max(self.matmul_flops / peak_flops, self.bytes / bandwidth)


@dataclass(frozen=True)
class StageCost:
    """The costs of one stage for the three passes."""

    name: str
    train: Cost
    evaluate: Cost
    sample: Cost


def _numel(shape: tuple[int, ...]) -> int:
    return math.prod(shape)


def _gmm_costs(gmm: GMM, batch: int, in_elems: int, annealing: bool) -> tuple[Cost, Cost, Cost]:
    h, w, d = gmm.input_shape
    k = gmm.n_components
    rows = batch * h * w
    n_params = sum(p.numel() for p in gmm.parameters())
    out_elems = rows * k
    forward = 4.0 * rows * d * k
    smoothing = 2.0 * rows * k * k if annealing and gmm.objective == "annealed" else 0.0
    train = Cost(2 * forward + smoothing, FLOAT_BYTES * (in_elems + out_elems + 2 * n_params))
    evaluate = Cost(forward, FLOAT_BYTES * (in_elems + out_elems + n_params))
    # Top-down: read the control signal, pick a component per row, write its mean plus noise.
    sample = Cost(0.0, FLOAT_BYTES * (out_elems + 2 * rows * d + n_params))
    return train, evaluate, sample


def stage_cost(stage: Stage, batch: int, *, annealing: bool = True) -> StageCost:
    """Return the cost of one stage for a batch of ``batch`` images."""
    if isinstance(stage, FoldedGMMStage | IndependentGMMStage) and stage.folding is not None:
        in_elems = batch * _numel(stage.folding.input_shape)
        train, evaluate, sample = _gmm_costs(stage.gmm, batch, in_elems, annealing)
        # Top-down through the folding: scatter-add the windows back (reads what GMM wrote).
        fold_back = Cost(0.0, FLOAT_BYTES * batch * _numel(stage.folding.input_shape))
        name = f"{stage.folding.spec}+{stage.gmm.spec}"
        return StageCost(name, train, evaluate, sample + fold_back)
    layer = stage.layer
    in_elems = batch * _numel(layer.input_shape)
    out_elems = batch * _numel(layer.out_shape)
    if isinstance(layer, GMM):
        train, evaluate, sample = _gmm_costs(layer, batch, in_elems, annealing)
        return StageCost(layer.spec, train, evaluate, sample)
    if isinstance(layer, LinearClassifier):
        n_params = sum(p.numel() for p in layer.parameters())
        in_elems = batch * layer.weight.shape[0]  # with C(S,2) also the lower GMM's output
        forward = 2.0 * in_elems * layer.n_classes
        io = in_elems + out_elems
        return StageCost(
            layer.spec,
            Cost(2 * forward, FLOAT_BYTES * (io + 2 * n_params)),
            Cost(forward, FLOAT_BYTES * (io + n_params)),
            Cost(forward, FLOAT_BYTES * (io + n_params)),  # the inversion T (log t - b) W^T
        )
    assert isinstance(layer, Folding | MaxPooling)
    move = Cost(0.0, FLOAT_BYTES * (in_elems + out_elems))  # a pure data movement
    return StageCost(layer.spec, move, move, move)


def model_cost(model: DCGMM, batch: int, *, annealing: bool = True) -> list[StageCost]:
    """Return the cost of every stage of ``model``'s fast plan for ``batch`` images.

    ``annealing=False`` leaves out the smoothing product (after the radius reached its floor).
    """
    return [stage_cost(stage, batch, annealing=annealing) for stage in model.stages]


@dataclass(frozen=True)
class MachinePeaks:
    """Measured float32 matrix-product rate (flop/s) and copy bandwidth (bytes/s)."""

    matmul_flops: float
    bandwidth: float
    threads: int
    device: str


def _best_time(fn: Callable[[], object], repeats: int, device: str) -> float:
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - start)
    return best


def measure_machine(device: str = "cpu", *, size: int = 2048, repeats: int = 10) -> MachinePeaks:
    """Measure the matmul peak (one large SGEMM) and the copy bandwidth of ``device``.

    Best of ``repeats``: a peak is what the hardware can do, not a typical value.
    """
    a = torch.rand(size, size, device=device)
    b = torch.rand(size, size, device=device)
    out = torch.empty(size, size, device=device)
    torch.mm(a, b, out=out)  # warm-up
    matmul = 2.0 * size**3 / _best_time(lambda: torch.mm(a, b, out=out), repeats, device)
    src = torch.rand(32 * 2**20 // FLOAT_BYTES, device=device)  # 32 MiB, beyond the caches
    dst = torch.empty_like(src)
    dst.copy_(src)
    copy = 2.0 * src.numel() * FLOAT_BYTES / _best_time(lambda: dst.copy_(src), repeats, device)
    return MachinePeaks(matmul, copy, torch.get_num_threads(), device)


def format_cost(model: DCGMM, batch: int, peaks: MachinePeaks | None = None) -> str:
    """Return a text table of per-stage costs (and floors, given measured peaks)."""
    rows = model_cost(model, batch)
    head = f"{'stage':<16} {'pass':<8} {'GFLOP':>9} {'MB':>9}"
    if peaks is not None:
        head += f" {'floor ms':>9}"
    lines = [f"cost of {model.spec} for a batch of {batch} (matrix products; float32 bytes)", head]
    totals = {"train": Cost(), "evaluate": Cost(), "sample": Cost()}
    floors = dict.fromkeys(totals, 0.0)
    for row in rows:
        for name in totals:
            cost: Cost = getattr(row, name)
            totals[name] = totals[name] + cost
            line = (
                f"{row.name:<16} {name:<8} {cost.matmul_flops / 1e9:>9.4f} {cost.bytes / 1e6:>9.2f}"
            )
            if peaks is not None:
                floor = cost.floor_seconds(peaks.matmul_flops, peaks.bandwidth)
                floors[name] += floor
                line += f" {1e3 * floor:>9.3f}"
            lines.append(line)
    for name, cost in totals.items():
        line = f"{'total':<16} {name:<8} {cost.matmul_flops / 1e9:>9.4f} {cost.bytes / 1e6:>9.2f}"
        if peaks is not None:
            line += f" {1e3 * floors[name]:>9.3f}"
        lines.append(line)
    if peaks is not None:
        lines.append(
            f"peaks measured on {peaks.device} ({peaks.threads} threads): "
            f"{peaks.matmul_flops / 1e9:.1f} GFLOP/s matmul, {peaks.bandwidth / 1e9:.1f} GB/s copy"
        )
    return "\n".join(lines)
