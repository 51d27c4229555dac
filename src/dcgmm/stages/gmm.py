"""What the fused GMM stages of :mod:`dcgmm.stages` share: a GMM layer trained from statistics."""

import torch
import torch.nn.functional as F
from torch import Tensor

from dcgmm.layers import GMM, Layer
from dcgmm.layers import gmm_gradients as grads
from dcgmm.stages import position_parameters

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

    @property
    def layers(self) -> list[Layer]:
        """The layers the stage runs, bottom first (its folding, if any, then the GMM)."""
        folding = getattr(self, "folding", None)
        return [self.layer] if folding is None else [folding, self.layer]

    def propagate_missing(self, missing: Tensor) -> Tensor:
        """Return the GMM layer's missing outputs: the positions whose window is all missing.

        What the folding's and the GMM layer's ``propagate_missing`` give one after the
        other, as a max-pool of "anything observed here" instead of a folded mask (E's
        F(4,2) folded a (N, 12, 12, 400) mask and reduced it again: 4 ms a batch of 100).
        """
        folding = getattr(self, "folding", None)
        if folding is None:
            return self.layer.propagate_missing(missing)
        # A mask expanded along its channels (a GMM layer's below) is read once per position.
        hidden = missing[..., 0] if missing.stride(-1) == 0 else missing.all(-1)
        seen = (~hidden).to(torch.float32)[:, None]  # (N, 1, H, W): anything observed here
        seen = F.max_pool2d(seen, folding.patch_size, folding.stride)[:, 0]  # (N, Ho, Wo)
        return (seen == 0)[..., None].expand(*seen.shape, self.layer.n_components)

    def log_joint_observed(self, h: Tensor, observed: Tensor) -> Tensor:
        """Return the log-joints with only the ``observed`` entries (1.0) of ``h`` counted."""
        raise NotImplementedError  # each fused stage computes it in one kernel

    def forward_observed(self, h: Tensor, missing: Tensor) -> Tensor:
        """Return the responsibilities with the ``missing`` entries marginalised, in one pass.

        The missing entries are zeroed and left out of every log-density term
        (:meth:`log_joint_observed`), so the folded tensor is never built.
        """
        observed = (~missing).to(h.dtype)
        return torch.softmax(self.log_joint_observed(h.masked_fill(missing, 0.0), observed), -1)

    def _observed_filters(self) -> tuple[Tensor, Tensor]:
        r"""Return the weight (..., K, 3D) and bias of the log-joints with entries marginalised.

        Per entry :math:`[-\tfrac12 P, \mu P, \log s - \tfrac12 \mu^2 P - \tfrac12 \log 2\pi]`
        side by side (the weights of :math:`[o x^2, o x, o]`) and :math:`\log \pi`
        (:func:`dcgmm.stages.position_parameters.observed_filters`): what both fused stages'
        ``log_joint_observed`` lay out as their product's weight.
        """
        gmm = self.layer
        weight, bias = position_parameters.observed_filters(
            gmm.means.detach(), gmm.sqrt_precisions.detach(), gmm.logits.detach()
        )
        return weight, bias

    def objective_and_statistics(self, h: Tensor) -> tuple[Tensor, Tensor, grads.Statistics]:
        """Return (responsibilities, mean objective, the batch's sufficient statistics)."""
        raise NotImplementedError

    def train_step(self, h: Tensor, y: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Return (responsibilities, mean objective) and set the GMM parameters' grads."""
        out, value, stats = self.objective_and_statistics(h)
        gmm = self.layer
        grads.set_descent_gradients(gmm.means, gmm.sqrt_precisions, gmm.logits, stats)
        return out, value
