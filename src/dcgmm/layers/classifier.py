"""Linear classifier on top of a DCGMM, trained on labels with its own cross-entropy."""

import math

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn

from dcgmm.layers.base import Shape, TrainableLayer

# Soft one-hot used to invert the classifier top-down (spec §7): the wanted class gets 0.95.
TARGET_CLASS_PROBABILITY = 0.95


class LinearClassifier(TrainableLayer):
    r"""Softmax regression on the flattened input: ``softmax(flatten(x) @ W + b)``.

    Parameters
    ----------
    input_shape : tuple of int
        ``(H, W, C)`` of the input (usually a GMM layer's responsibilities).
    n_classes : int
        S.
    generator : torch.Generator, optional
        Source of randomness for the weight initialisation.

    Notes
    -----
    ``W`` starts from a normal truncated at two standard deviations, std ``1/sqrt(D_in)``;
    ``b = 0``. Top-down, a soft one-hot ``t`` maps to ``(log t - b) @ W^T`` minus its
    per-sample minimum, so every entry of the control signal is >= 0 (spec §7).
    """

    def __init__(
        self, input_shape: Shape, n_classes: int, *, generator: torch.Generator | None = None
    ) -> None:
        super().__init__(input_shape)
        self.n_classes = n_classes
        n_in = math.prod(input_shape)
        self.weight = nn.Parameter(torch.empty(n_in, n_classes))
        self.bias = nn.Parameter(torch.zeros(n_classes))
        self.reset_parameters(generator=generator)

    @torch.no_grad()
    def reset_parameters(self, *, generator: torch.Generator | None = None) -> None:
        """Draw ``W`` from a truncated normal of std ``1/sqrt(D_in)``; zero ``b``."""
        std = 1.0 / math.sqrt(self.weight.shape[0])
        nn.init.trunc_normal_(self.weight, std=std, a=-2 * std, b=2 * std, generator=generator)
        self.bias.zero_()

    def output_shape(self, input_shape: Shape) -> Shape:
        """Return ``(1, 1, S)``."""
        return (1, 1, self.n_classes)

    def logits(self, x: Float[Tensor, "N H W C"]) -> Float[Tensor, "N S"]:
        """Return the class logits."""
        return x.reshape(x.shape[0], -1) @ self.weight + self.bias

    def forward(self, x: Float[Tensor, "N H W C"]) -> Float[Tensor, "N 1 1 S"]:
        """Return the class probabilities as a (N, 1, 1, S) map."""
        return torch.softmax(self.logits(x), dim=-1)[:, None, None, :]

    def forward_and_loss(
        self, x: Float[Tensor, "N H W C"], y: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Return (class probabilities, mean cross-entropy against the labels ``y``)."""
        if y is None:
            raise ValueError(
                f"{self.spec} needs labels to train; got y=None. Pass labels with the data, "
                "or drop the classifier layer from the spec."
            )
        logits = self.logits(x)
        loss = F.cross_entropy(logits, y)
        return torch.softmax(logits, dim=-1)[:, None, None, :], loss

    def sample(
        self, control: Float[Tensor, "N 1 1 S"], *, generator: torch.Generator | None = None
    ) -> Float[Tensor, "N H W C"]:
        """Invert approximately: ``(log t - b) @ W^T`` minus its per-sample minimum."""
        t = control.reshape(control.shape[0], -1)
        tiny = torch.finfo(t.dtype).tiny
        signal = (t.clamp_min(tiny).log() - self.bias) @ self.weight.T
        signal = signal - signal.amin(dim=1, keepdim=True)
        return signal.reshape(control.shape[0], *self.input_shape)

    @staticmethod
    def soft_one_hot(labels: Tensor, n_classes: int, *, dtype: torch.dtype) -> Tensor:
        """Return (N, 1, 1, S) targets: 0.95 on the label, the rest spread evenly."""
        rest = (1.0 - TARGET_CLASS_PROBABILITY) / max(n_classes - 1, 1)
        t = torch.full((labels.shape[0], n_classes), rest, dtype=dtype, device=labels.device)
        t.scatter_(1, labels[:, None], TARGET_CLASS_PROBABILITY)
        return t[:, None, None, :]

    def extra_repr(self) -> str:
        """Return the spec token."""
        return f"C({self.n_classes})"
