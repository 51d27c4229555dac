r"""The fast execution plan of a DCGMM: its layers grouped into stages that run as one kernel.

A folding layer followed by a shared GMM layer is one convolution,
:class:`~dcgmm.stages.folded.FoldedGMMStage`, which never builds the folded tensor (the biggest
tensor of a training step, e.g. 100x12x12x400 in preset E's second layer). An independent GMM
layer (and the folding below it) is a grouped matrix product over positions,
:class:`~dcgmm.stages.independent.IndependentGMMStage`. Every other layer runs as its own
:class:`LayerStage`.

The layers' own ``forward`` / ``forward_and_loss`` stay the readable reference; the tests
check that both paths agree (float64) for every preset.
"""

import itertools

import torch
from torch import Tensor

from dcgmm.layers import GMM, Folding, GMMScores, Layer, LinearClassifier
from dcgmm.layers import gmm_gradients as grads
from dcgmm.layers.base import TrainableLayer
from dcgmm.stages.folded import FoldedGMMStage
from dcgmm.stages.independent import IndependentGMMStage

__all__ = [
    "FoldedGMMStage", "IndependentGMMStage", "LayerStage", "Stage", "build_stages", "fuses",
]  # fmt: skip


class LayerStage:
    """One layer run on its own (pooling, classifier, lone folding, unfused shared GMM)."""

    def __init__(self, layer: Layer, index: int) -> None:
        self.layer = layer
        self.index = index  # position of the (last) layer in the model

    @property
    def gmm(self) -> GMM | None:
        """The stage's GMM layer, if it has one."""
        return self.layer if isinstance(self.layer, GMM) else None

    @property
    def trainable(self) -> TrainableLayer | None:
        """The stage's trainable layer, if it has one."""
        return self.layer if isinstance(self.layer, TrainableLayer) else None

    @property
    def layers(self) -> list[Layer]:
        """The layers the stage runs, bottom first."""
        return [self.layer]

    def forward(self, h: Tensor) -> Tensor:
        """Return the output for the next stage."""
        return self.layer(h)

    def forward_observed(self, h: Tensor, missing: Tensor) -> Tensor:
        """Return the output when the entries where ``missing`` is True are not observed."""
        return self.layer.forward_observed(h, missing)

    def propagate_missing(self, missing: Tensor) -> Tensor:
        """Return which of the layer's outputs have no observed input."""
        return self.layer.propagate_missing(missing)

    def scores(self, h: Tensor) -> tuple[Tensor, GMMScores | None]:
        """Return the output and, for a GMM layer, its density scores (one pass)."""
        if isinstance(self.layer, GMM):
            log_joint = self.layer.log_joint(h)
            return self.layer.responsibilities_and_scores(log_joint)
        return self.layer(h), None

    def objective_and_statistics(self, h: Tensor) -> tuple[Tensor, Tensor, grads.Statistics]:
        """Return a GMM layer's (responsibilities, mean objective, sufficient statistics)."""
        if not isinstance(self.layer, GMM):
            raise TypeError(f"{self.layer.spec} is not a GMM layer")
        return self.layer.forward_and_statistics(h)

    def train_step(self, h: Tensor, y: Tensor | None) -> tuple[Tensor, Tensor]:
        """Return (output, the layer's own objective or loss) and set its parameters' grads."""
        if isinstance(self.layer, GMM):
            return self.layer.forward_and_grad(h)
        if isinstance(self.layer, LinearClassifier):
            for param in self.layer.parameters():
                param.grad = None
            with torch.enable_grad():
                out, loss = self.layer.forward_and_loss(h, y)
                loss.backward()  # type: ignore[no-untyped-call]
            return out.detach(), loss.detach()
        raise TypeError(f"{self.layer.spec} does not train")


Stage = LayerStage | FoldedGMMStage | IndependentGMMStage


def fuses(folding: Folding, gmm: GMM) -> bool:
    """Return whether a folding and the GMM layer above it run as one stage.

    A folding fuses with a shared GMM layer above it (a :class:`FoldedGMMStage`), unless it
    cuts a single window (e.g. preset A's ``F(28,1)``): then folding is a reshape and one
    matrix product beats a convolution whose kernel covers the whole image. It always fuses
    with an independent GMM layer (an :class:`IndependentGMMStage`).
    """
    out_h, out_w, _ = folding.out_shape
    return gmm.independent or out_h * out_w > 1


def build_stages(layers: list[Layer]) -> list[Stage]:
    """Group a layer chain into stages (see :func:`fuses`); other layers run alone.

    An independent stage below another hands its training output over batch last
    (:attr:`IndependentGMMStage.hands_over_batch_last`).
    """
    stages: list[Stage] = []
    i = 0
    while i < len(layers):
        layer = layers[i]
        above = layers[i + 1] if i + 1 < len(layers) else None
        if isinstance(layer, Folding) and isinstance(above, GMM) and fuses(layer, above):
            stage: Stage = (
                IndependentGMMStage(layer, above, i + 1)
                if above.independent
                else FoldedGMMStage(layer, above, i + 1)
            )
            stages.append(stage)
            i += 2
        elif isinstance(layer, GMM) and layer.independent:
            stages.append(IndependentGMMStage(None, layer, i))
            i += 1
        else:
            stages.append(LayerStage(layer, i))
            i += 1
    for below, above_stage in itertools.pairwise(stages):
        if isinstance(below, IndependentGMMStage) and isinstance(above_stage, IndependentGMMStage):
            below.hands_over_batch_last = True  # the windows above are cut batch last
    return stages
