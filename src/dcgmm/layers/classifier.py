"""Linear classifier on top of a DCGMM, trained on labels with its own cross-entropy."""

import math

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn

from dcgmm.layers.base import Shape, TrainableLayer
from dcgmm.layers.gmm import GMM

__all__ = ["TARGET_CLASS_PROBABILITY", "ClassifierFeed", "LinearClassifier"]

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
    lower_shape : tuple of int, optional
        ``(H, W, K)`` of a second GMM layer's output read beside the input (``C(S,2)``: the
        two highest GMM layers, as in the 2022 paper). Its flattened values follow the
        input's in ``flatten(x)``; :class:`ClassifierFeed` assembles them.
    generator : torch.Generator, optional
        Source of randomness for the weight initialisation.

    Notes
    -----
    ``W`` starts from a normal truncated at two standard deviations, std ``1/sqrt(D_in)``;
    ``b = 0``. Top-down, a soft one-hot ``t`` maps to ``(log t - b) @ W^T`` minus its
    per-sample minimum, so every entry of the control signal is >= 0 (spec §7).
    """

    def __init__(
        self,
        input_shape: Shape,
        n_classes: int,
        *,
        lower_shape: Shape | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(input_shape)
        self.n_classes = n_classes
        self.lower_shape = lower_shape
        n_in = math.prod(input_shape) + (math.prod(lower_shape) if lower_shape else 0)
        self.weight = nn.Parameter(torch.empty(n_in, n_classes))
        self.bias = nn.Parameter(torch.zeros(n_classes))
        self.reset_parameters(generator=generator)

    def reset_parameters(self, *, generator: torch.Generator | None = None) -> None:
        """Draw ``W`` from a truncated normal of std ``1/sqrt(D_in)``; zero ``b``."""
        with torch.no_grad():
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
        """Invert approximately: ``(log t - b) @ W^T`` minus its per-sample minimum.

        With a second (lower) input only the rows of the top layer's input are used: sampling
        walks down from the top GMM layer.
        """
        t = control.reshape(control.shape[0], -1)
        tiny = torch.finfo(t.dtype).tiny
        top_rows = self.weight[: math.prod(self.input_shape)]
        signal = (t.clamp_min(tiny).log() - self.bias) @ top_rows.T
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
        return f"C({self.n_classes}{',2' if self.lower_shape else ''})"


class ClassifierFeed:
    """Carries the second-highest GMM layer's output up to a ``C(S,2)`` classifier.

    The layer chain passes one tensor from layer to layer; a two-input classifier also needs
    an earlier output. Loops over layers (or fused stages) call :meth:`keep` after every
    layer and :meth:`input_for` before it; for a one-input classifier both are no-ops.

    Parameters
    ----------
    layers : sequence of Layer
        The model's chain.
    """

    def __init__(self, layers: list[nn.Module]) -> None:
        self.lower_index: int | None = None
        self.classifier_index: int | None = None
        last = layers[-1] if layers else None
        if isinstance(last, LinearClassifier) and last.lower_shape is not None:
            gmm = [i for i, layer in enumerate(layers) if isinstance(layer, GMM)]
            self.lower_index, self.classifier_index = gmm[-2], len(layers) - 1
        self._lower: Tensor | None = None

    def keep(self, index: int, output: Tensor) -> None:
        """Remember ``output`` if layer ``index`` is the lower input of the classifier."""
        if index == self.lower_index:
            self._lower = output

    def input_for(self, index: int, h: Tensor) -> Tensor:
        """Return the input of layer ``index``: ``h``, or ``[h, lower]`` for the classifier."""
        if index != self.classifier_index:
            return h
        if self._lower is None:
            raise RuntimeError("the classifier's lower GMM layer has not run yet")
        both = torch.cat([h.reshape(h.shape[0], -1), self._lower.reshape(h.shape[0], -1)], 1)
        return both[:, None, None, :]
