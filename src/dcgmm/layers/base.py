"""The layer protocol: every stage of a DCGMM maps NHWC to NHWC, up (density) and down (sampling).

Legend used in shape strings throughout the package: N batch, H W space, C channels,
K components, P patch entries, S classes.
"""

import abc

import torch
from jaxtyping import Float
from torch import Tensor, nn

__all__ = ["Layer", "Shape", "TrainableLayer"]

Shape = tuple[int, int, int]  # (H, W, C); the batch dimension is never part of a Shape


class Layer(nn.Module, abc.ABC):
    """One stage of a DCGMM stack; all tensors are NHWC.

    Parameters
    ----------
    input_shape : tuple of int
        ``(H, W, C)`` of the tensors this layer receives.
    """

    def __init__(self, input_shape: Shape) -> None:
        super().__init__()
        self.input_shape: Shape = input_shape

    @abc.abstractmethod
    def output_shape(self, input_shape: Shape) -> Shape:
        """Return the ``(H, W, C)`` this layer produces from an input of ``input_shape``."""

    @abc.abstractmethod
    def forward(self, x: Float[Tensor, "N H W C"]) -> Float[Tensor, "N Ho Wo Co"]:
        """Map bottom-up: return what the next layer sees (posteriors, for a GMM)."""

    @abc.abstractmethod
    def sample(
        self, control: Float[Tensor, "N Ho Wo Co"], *, generator: torch.Generator | None = None
    ) -> Float[Tensor, "N H W C"]:
        """Map top-down: turn a control signal from above into this layer's input space."""

    def forward_observed(self, x: Tensor, missing: Tensor | None) -> Tensor:
        """Map bottom-up when the entries where ``missing`` is True carry no observation.

        A GMM marginalises them; every other layer moves its input as it is (the default).
        """
        return self(x)

    def propagate_missing(self, missing: Tensor) -> Tensor:
        """Return which outputs have no observed input, from the input's ``missing`` (bool).

        The default moves the mask like data (a folding copies entries); max-pooling and GMM
        layers override it.
        """
        return self(missing.to(torch.float32)) > 0.5

    @property
    def out_shape(self) -> Shape:
        """The ``(H, W, C)`` this layer produces from its own ``input_shape``."""
        return self.output_shape(self.input_shape)

    @property
    def spec(self) -> str:
        """The spec-string token of this layer, e.g. ``F(3,1)``."""
        return self.extra_repr()


class TrainableLayer(Layer):
    """A layer that learns from a loss of its own (no gradient crosses layers)."""

    @abc.abstractmethod
    def forward_and_loss(
        self, x: Float[Tensor, "N H W C"], y: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Return (output for the next layer, scalar loss to minimise) from one computation."""
