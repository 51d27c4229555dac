"""The numerical watchdog of training: find the first non-finite value and say where it is.

The trainer checks the per-layer objectives of every step (one ``isfinite`` over a vector of
a few numbers) and all parameters before every checkpoint. When something is not finite it
asks :func:`diagnose` for the culprit: the lowest layer whose parameters are not finite, else
the training images of the batch, else the layer whose objective overflowed. What happens next
(stop, or roll back to the last checkpoint) is the trainer's business (``on_nonfinite``).
"""

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

__all__ = [
    "MAX_LISTED",
    "Cause",
    "NonFinite",
    "NumericalError",
    "diagnose",
    "nonfinite_parameters",
    "nonfinite_samples",
]

Cause = Literal["parameters", "data", "overflow"]
MAX_LISTED = 5  # sample indices shown in a message


@dataclass(frozen=True, kw_only=True)
class NonFinite:
    """Where a non-finite value appeared.

    Attributes
    ----------
    step : int
        The SGD step (counted from 1, as ``step`` in ``metrics.jsonl``) whose objective or
        update was not finite.
    layer : int
        The layer's number in the spec (counted from 1).
    spec : str
        The layer's spec token, e.g. ``G(25)``.
    what : {"objective", "parameters"}
        What the trainer found not finite.
    cause : {"parameters", "data", "overflow"}
        The diagnosis: non-finite parameters of ``layer``, non-finite pixels in the batch, or
        neither (the objective overflowed although pixels and parameters are finite).
    detail : str
        What lies behind ``cause``: parameter names, training-image indices, or (overflow)
        the batch's largest pixel magnitude.
    """

    step: int
    layer: int
    spec: str
    what: Literal["objective", "parameters"]
    cause: Cause
    detail: str = ""

    @property
    def offending_step(self) -> int:
        """The step whose batch led here (a rollback skips it).

        Parameters that the objective check of step s finds non-finite went bad in the update
        of step s - 1 (whose own check passed); anything else is step s's doing.
        """
        if self.cause == "parameters" and self.what == "objective":
            return self.step - 1
        return self.step

    def message(self) -> str:
        """Return the explanation: layer, step, culprit and a hint."""
        where = f"layer {self.layer} ({self.spec})"
        if self.cause == "parameters":
            return (
                f"{where}: parameters {self.detail} are not finite at step {self.step} (found "
                f"by the {self.what} check). Lower the learning rate"
            )
        if self.cause == "data":
            return (
                f"{where}: non-finite {self.what} at step {self.step}, from non-finite pixels in "
                f"training images {self.detail}. Check the data for NaN/Inf"
            )
        return (
            f"{where}: non-finite {self.what} at step {self.step} although the batch's pixels "
            f"and all parameters are finite, so a value overflowed{self.detail}. Lower the "
            "learning rate"
        )

    def to_dict(self) -> dict[str, Any]:
        """Return the fields as a JSON-ready dict."""
        return asdict(self)


class NumericalError(FloatingPointError):
    """Training produced a non-finite objective or parameter.

    ``event`` says where (``None`` for errors raised elsewhere).
    """

    def __init__(self, message: str, event: NonFinite | None = None) -> None:
        super().__init__(message)
        self.event = event


def nonfinite_parameters(module: nn.Module) -> list[str]:
    """Return the names of ``module``'s parameters that hold a NaN or an infinity."""
    return [
        name for name, param in module.named_parameters() if not bool(torch.isfinite(param).all())
    ]


def nonfinite_samples(images: Tensor) -> Tensor:
    """Return the row numbers of the (N, H, W, C) ``images`` that hold a NaN or an infinity."""
    return (~torch.isfinite(images.reshape(images.shape[0], -1))).any(1).nonzero().flatten()


def _listed(indices: Sequence[int]) -> str:
    shown = ", ".join(str(i) for i in indices[:MAX_LISTED])
    more = f", ... ({len(indices)} in all)" if len(indices) > MAX_LISTED else ""
    return f"[{shown}{more}]"


def diagnose(
    layers: Sequence[nn.Module],
    *,
    step: int,
    bad_layer: int,
    what: Literal["objective", "parameters"],
    images: Tensor | None = None,
    sample_index: Tensor | None = None,
) -> NonFinite:
    """Name the culprit of a non-finite value found at ``step``.

    Parameters
    ----------
    layers : sequence of Module
        The model's layers, bottom first.
    step : int
        The step (from 1) that produced the value.
    bad_layer : int
        Index (from 0) of the lowest layer found non-finite.
    what : {"objective", "parameters"}
        What was found non-finite.
    images : Tensor, shape (N, H, W, C), optional
        The step's batch, when the objective was checked.
    sample_index : Tensor, shape (N,), optional
        The batch's row numbers in the training set.

    Returns
    -------
    NonFinite
        The lowest layer with non-finite parameters, if any (a NaN there spoils every layer
        above); else the batch's non-finite images; else ``bad_layer``'s overflow.
    """
    for index, layer in enumerate(layers):
        names = nonfinite_parameters(layer)
        if names:
            return NonFinite(step=step, layer=index + 1, spec=_spec(layer), what=what,
                             cause="parameters", detail=", ".join(names))  # fmt: skip
    spec = _spec(layers[bad_layer])
    detail = ""
    if images is not None:
        rows = nonfinite_samples(images)
        if rows.numel():
            ids = sample_index[rows] if sample_index is not None else rows
            return NonFinite(step=step, layer=bad_layer + 1, spec=spec, what=what,
                             cause="data", detail=_listed(ids.tolist()))  # fmt: skip
        detail = f" (largest |pixel| of the batch: {float(images.abs().max()):.3g})"
    return NonFinite(
        step=step, layer=bad_layer + 1, spec=spec, what=what, cause="overflow", detail=detail
    )


def _spec(layer: nn.Module) -> str:
    return str(getattr(layer, "spec", type(layer).__name__))
