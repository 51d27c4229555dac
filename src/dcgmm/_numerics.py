"""Named numerical constants and small log-space helpers shared by the layers.

Every bound that shapes the model lives here, with the reason it has its value.
"""

import contextlib
import math
from collections.abc import Iterator

import torch
from torch import Tensor

__all__ = [
    "LOG_2PI",
    "MEAN_INIT_RANGE",
    "PRECISION_LOWER_BOUND",
    "PRECISION_UPPER_BOUND",
    "SIGMA_SOM_FLOOR",
    "SQRT_PRECISION_LOWER_BOUND",
    "SQRT_PRECISION_UPPER_BOUND",
    "all_neg_inf_rows",
    "full_float32_convolutions",
    "sigma_som_start",
    "smallest_normal",
]

LOG_2PI = math.log(2.0 * math.pi)

# Upper bound on a component's diagonal precision (1 / variance). The authors' recipes call it
# ``sigmaUpperBound = 20``: with pixels in [0, 1] a standard deviation below ~0.22 lets a
# component collapse onto constant background pixels. We store square roots of precisions, so
# the bound on the stored value is sqrt(20).
PRECISION_UPPER_BOUND = 20.0
SQRT_PRECISION_UPPER_BOUND = math.sqrt(PRECISION_UPPER_BOUND)

# Lower bound on the precision: the reference allows negative square roots (a defect, spec §2).
# 1e-4 (std 100) is far below anything data in [0, 1] asks for, so it only keeps log(s) finite.
PRECISION_LOWER_BOUND = 1e-4
SQRT_PRECISION_LOWER_BOUND = math.sqrt(PRECISION_LOWER_BOUND)

# Initial means are drawn from U[-MEAN_INIT_RANGE, MEAN_INIT_RANGE] (2022 paper; 2021: 0.01).
MEAN_INIT_RANGE = 0.1

# Floor of the annealing radius sigma_som: at 0.01 the toroidal kernel is the identity in float32
# (exp(-1 / (2 * 0.01**2)) underflows to 0), so the loss is exactly the max-component one.
SIGMA_SOM_FLOOR = 0.01


def sigma_som_start(n_components: int) -> float:
    """Return the initial annealing radius 0.25 * sqrt(2K) of the SGD-GMM recipes."""
    return 0.25 * math.sqrt(2.0 * n_components)


def smallest_normal(dtype: torch.dtype) -> float:
    """Return the smallest positive normal number of a floating dtype."""
    return float(torch.finfo(dtype).tiny)


def all_neg_inf_rows(log_values: Tensor) -> Tensor:
    """Return a boolean mask of rows (last dim) that are entirely -inf or NaN."""
    return ~torch.isfinite(log_values).any(dim=-1)


@contextlib.contextmanager
def full_float32_convolutions(device: torch.device) -> Iterator[None]:
    """Keep cuDNN from running float32 convolutions in TF32 (its default on Ampere and later).

    TF32 keeps 10 mantissa bits: log-joints of hundreds of nats would lose about 0.1 nat.
    Float32 is our default precision; anything lower must be opted into.
    """
    if device.type != "cuda":
        yield
        return
    with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
        yield
