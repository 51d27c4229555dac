"""What the fused GMM stages of :mod:`dcgmm.stages` share: a GMM layer trained from statistics."""

from torch import Tensor

from dcgmm.layers import GMM
from dcgmm.layers import gmm_gradients as grads

__all__ = ["GMMStage"]


class GMMStage:
    """A GMM layer (with a folding of its own, in subclasses) run as one fused stage.

    Each computes its batch's statistics (:meth:`objective_and_statistics`): gradients for
    SGD, new parameters for stepwise EM (:mod:`dcgmm.layers.gmm_em`).
    """

    def __init__(self, gmm: GMM, index: int) -> None:
        self.layer = gmm
        self.index = index

    @property
    def gmm(self) -> GMM:
        """The stage's GMM layer."""
        return self.layer

    @property
    def trainable(self) -> GMM:
        """The stage's trainable layer."""
        return self.layer

    def objective_and_statistics(self, h: Tensor) -> tuple[Tensor, Tensor, grads.Statistics]:
        """Return (responsibilities, mean objective, the batch's sufficient statistics)."""
        raise NotImplementedError

    def train_step(self, h: Tensor, y: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Return (responsibilities, mean objective) and set the GMM parameters' grads."""
        out, value, stats = self.objective_and_statistics(h)
        gmm = self.layer
        grads.set_descent_gradients(gmm.means, gmm.sqrt_precisions, gmm.logits, stats)
        return out, value
