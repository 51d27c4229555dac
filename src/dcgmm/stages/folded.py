r"""A folding layer and the shared GMM layer above it, run as one convolution.

With :math:`P = s^2`,

.. math::
    \ell_k(\mathrm{window}) = \mathrm{conv}([h^2, h], [-\tfrac12 P_k, \mu_k P_k]) + b_k,
    \qquad b_k = \textstyle\sum \log s_k - \tfrac12 \sum \mu_k^2 P_k - \tfrac{D}{2}\log 2\pi
    + \log \pi_k,

and the sufficient statistics of the closed-form gradient (:mod:`dcgmm.layers.gmm_gradients`)
are that convolution's weight gradient: the folded tensor is never built (on the CPU oneDNN
reads the small (N, H, W, 2C) map directly, in channels-last layout).
"""

import torch
import torch.nn.functional as F
from torch import Tensor

from dcgmm._numerics import LOG_2PI, full_float32_convolutions
from dcgmm.layers import GMM, Folding, GMMScores
from dcgmm.layers import gmm_gradients as grads
from dcgmm.stages import window_sums
from dcgmm.stages.gmm import GMMStage

__all__ = ["FoldedGMMStage"]

# An input of at most this many channels ([h^2, h] of a grey image) takes its input gradient
# by shifted products (:meth:`FoldedGMMStage._input_gradient_by_offsets`); with 3 colour
# channels (6) oneDNN's transposed convolution was faster again (14 against 17 ms, F(3,1)).
_OFFSETS_MAX_CHANNELS = 2


class FoldedGMMStage(GMMStage):
    """A folding layer and the shared GMM layer above it, run as one convolution."""

    def __init__(self, folding: Folding, gmm: GMM, index: int) -> None:
        if gmm.independent:
            raise ValueError("only a shared GMM layer is a convolution over the folding")
        super().__init__(gmm, index)
        self.folding = folding

    def _features(self, h: Tensor) -> Tensor:
        # [h^2, h] along channels, written straight into one buffer (no torch.cat), returned
        # as the NCHW view of that channels-last storage that the convolution wants.
        c = h.shape[-1]
        features = h.new_empty(*h.shape[:-1], 2 * c)
        torch.mul(h, h, out=features[..., :c])
        features[..., c:] = h
        return features.permute(0, 3, 1, 2)

    def _filters(self, *parts: Tensor) -> Tensor:
        """Lay (K, D) filter parts side by side on the channel axis: the convolution weight.

        Folded channel (dy * fx + dx) * C + c -> filter (K, fy, fx, C); the parts follow each
        other along C, and the result is the NCHW view of that channels-last weight.
        """
        fy, fx = self.folding.patch_size
        c = self.folding.input_shape[2]
        k = self.layer.n_components
        return torch.cat([p.reshape(k, fy, fx, c) for p in parts], dim=-1).permute(0, 3, 1, 2)

    def _weight_and_bias(self) -> tuple[Tensor, Tensor]:
        gmm = self.layer
        means, sqrt_prec = gmm.means.detach(), gmm.sqrt_precisions.detach()
        precisions = sqrt_prec * sqrt_prec
        weight = self._filters(-0.5 * precisions, means * precisions)
        dim = means.shape[-1]
        bias = (
            sqrt_prec.log().sum(-1)
            - 0.5 * (means * means * precisions).sum(-1)
            - 0.5 * dim * LOG_2PI
            + torch.log_softmax(gmm.logits.detach(), dim=-1)
        )
        return weight, bias

    def log_joint_observed(self, h: Tensor, observed: Tensor) -> Tensor:
        r"""Return the log-joints (N, Ho, Wo, K) with the unobserved entries marginalised.

        Integrating an entry out removes its terms
        (:func:`~dcgmm.layers.gaussian.observed_log_density`), so with the mask :math:`o`
        (1 observed, 0 not, shaped as ``h``; ``h`` must be 0 where :math:`o` is) this is one
        convolution of :math:`[o h^2, o h, o]` with :math:`[-\tfrac12 P, \mu P,
        \log s - \tfrac12 \mu^2 P - \tfrac12 \log 2\pi]`, plus :math:`\log \pi`. A window
        with nothing observed gets the prior. What in-painting climbs with (its upward pass
        through the folded layer took 7.8x an evaluation before).
        """
        with torch.no_grad():
            c = h.shape[-1]
            features = h.new_empty(*h.shape[:-1], 3 * c)
            seen = torch.mul(observed, h, out=features[..., c : 2 * c])
            torch.mul(seen, h, out=features[..., :c])
            features[..., 2 * c :] = observed
            weight, bias = self._observed_filters()
            parts = weight.chunk(3, dim=-1)
            return self._log_joint(features.permute(0, 3, 1, 2), self._filters(*parts), bias)

    def _log_joint(self, features: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
        with full_float32_convolutions(features.device):
            out = F.conv2d(features, weight, bias, stride=self.folding.stride)
        return out.permute(0, 2, 3, 1)  # (N, Ho, Wo, K); contiguous when oneDNN kept NHWC

    def _objective(
        self, h: Tensor, *, responsibilities: bool
    ) -> tuple[Tensor, Tensor, Tensor | None, grads.ObjectiveGradient]:
        """Return the features, conv weight, responsibilities and the closed-form objective.

        The responsibilities only if asked for: training needs them, sharpening does not.
        """
        gmm = self.layer
        features = self._features(h)
        weight, bias = self._weight_and_bias()
        log_joint = self._log_joint(features, weight, bias)
        resp = torch.softmax(log_joint, dim=-1) if responsibilities else None
        kernel = gmm.annealing_kernel(log_joint.dtype, log_joint.device)
        return (
            features,
            weight,
            resp,
            grads.objective_gradient(log_joint, gmm.objective, kernel, resp),
        )

    def _convolution_backward(
        self, d_out: Tensor, features: Tensor, weight: Tensor, *, want_input: bool
    ) -> Tensor:
        """Return the convolution's input gradient (``want_input``) or its weight gradient."""
        with full_float32_convolutions(features.device):
            d_input, d_weight, _ = torch.ops.aten.convolution_backward(
                d_out, features, weight, None, list(self.folding.stride), [0, 0], [1, 1],
                False, [0, 0], 1, [want_input, not want_input, False],
            )  # fmt: skip
        return d_input if want_input else d_weight

    def log_joint(self, h: Tensor) -> Tensor:
        """Return the GMM layer's log-joints for the un-folded input ``h``."""
        with torch.no_grad():
            return self._log_joint(self._features(h), *self._weight_and_bias())

    def forward(self, h: Tensor) -> Tensor:
        """Return the responsibilities (the GMM layer's output)."""
        return torch.softmax(self.log_joint(h), dim=-1)

    def scores(self, h: Tensor) -> tuple[Tensor, GMMScores]:
        """Return the responsibilities and the GMM layer's density scores (one pass)."""
        log_joint = self.log_joint(h)
        return self.layer.responsibilities_and_scores(log_joint)

    def objective_and_statistics(self, h: Tensor) -> tuple[Tensor, Tensor, grads.Statistics]:
        """Return (responsibilities, mean objective, the batch's sufficient statistics).

        The statistics are the convolution's weight gradient, sum_m R_mk [x^2, x]_m: as sums
        of the windows each component wins where R's rows are rows of a table and those sums
        are compiled (:mod:`dcgmm.stages.window_sums`; R is then never built), else oneDNN's.
        """
        with torch.no_grad():
            gmm = self.layer
            k = gmm.n_components
            features = self._features(h)
            weight, bias = self._weight_and_bias()
            log_joint = self._log_joint(features, weight, bias)
            resp = torch.softmax(log_joint, dim=-1)
            kernel = gmm.annealing_kernel(log_joint.dtype, log_joint.device)
            by_channel = features.permute(0, 2, 3, 1)  # the (N, H, W, 2C) storage
            patch, stride = self.folding.patch_size, self.folding.stride
            if gmm.objective == "loglik":
                objective = grads.objective_gradient(log_joint, gmm.objective, kernel, resp)
            else:
                hard = grads.hard_objective_gradient(log_joint, gmm.objective, kernel)
                best = hard.winner_rows.best
                if window_sums.pays(by_channel, best, k, patch, stride):
                    sums = window_sums.weight_gradient(
                        by_channel, hard.winner_rows, k, patch, stride
                    )
                    return resp, hard.values.mean(), self._statistics(hard.weight, sums)
                objective = grads.with_dense_rows(hard, log_joint)
            d_weight = self._convolution_backward(
                objective.d_log_joint.permute(0, 3, 1, 2), features, weight, want_input=False
            )  # (K, 2C, fy, fx)
            return resp, objective.values.mean(), self._statistics(objective.weight, d_weight)

    def _statistics(self, weight: Tensor, d_weight: Tensor) -> grads.Statistics:
        """Return the statistics from the (K, 2C, fy, fx) weight gradient of the convolution."""
        k, dim = self.layer.means.shape
        halves = d_weight.permute(0, 2, 3, 1)  # (K, fy, fx, 2C), the folded order
        c = halves.shape[-1] // 2
        second = halves[..., :c].reshape(k, dim)
        first = halves[..., c:].reshape(k, dim)
        return grads.Statistics(weight, first, second)

    def objective_and_input_gradient(self, h: Tensor) -> tuple[Tensor, Tensor]:
        r"""Return each sample's mean objective over positions and its gradient w.r.t. ``h``.

        With :math:`R = \partial J / \partial \ell` from the closed form
        (:func:`~dcgmm.layers.gmm_gradients.objective_gradient`), the gradient of
        :math:`\ell = \mathrm{conv}([h^2, h], W)` is the convolution's input gradient
        :math:`[G_1, G_2]` and :math:`\partial J / \partial h = 2 h G_1 + G_2`: one
        convolution and one transposed one, what sharpening needs per step (autograd through
        the folding and the GMM layer took 3x a forward pass).
        """
        with torch.no_grad():
            features, weight, _, objective = self._objective(h, responsibilities=False)
            # objective_gradient differentiates the mean over all rows; each sample's own mean
            # over its positions is n times that.
            n, c = h.shape[0], h.shape[-1]
            if 2 * c <= _OFFSETS_MAX_CHANNELS:
                d_both = self._input_gradient_by_offsets(
                    objective, n, weight, (h.shape[1], h.shape[2])
                )
            else:
                d_features = self._convolution_backward(
                    objective.d_log_joint.mul(n).permute(0, 3, 1, 2),
                    features, weight, want_input=True,
                )  # fmt: skip
                d_both = d_features.permute(0, 2, 3, 1)  # (N, H, W, 2C): [dJ/d(h^2), dJ/dh]
            grad = torch.addcmul(d_both[..., c:], h, d_both[..., :c], value=2.0)
            return objective.values.flatten(1).mean(1), grad

    def _input_gradient_by_offsets(
        self, objective: grads.ObjectiveGradient, scale: float, weight: Tensor,
        size: tuple[int, int],
    ) -> Tensor:  # fmt: skip
        """Return the input gradient (N, H, W, 2C) of ``scale`` R as one product and shifts.

        For an input of few channels (a grey image: [h^2, h]) oneDNN's input gradient runs
        5x slower than its forward convolution (it vectorises over input channels). Here:
        the (fy fx 2C, K) filters times the (K, N Ho Wo) output gradient, then each filter
        offset's (2C, N, Ho, Wo) block added into the input at its shift (measured 2.2x
        faster for preset C's F(8,1)-G(49) on a batch of 100, 1 thread). For the hard
        objectives (the sharpening targets') R's rows are rows of a (K, K) table, so the
        product is the filters times that table, gathered by winner: 3.1 against 17 ms for
        C's (128, 49) x (49, 44,100) product, one thread.
        """
        d_log_joint = objective.d_log_joint
        n, ho, wo, k = d_log_joint.shape
        c2, fy, fx = weight.shape[1:]
        sy, sx = self.folding.stride
        # (dy, dx, c) order, scaled here rather than the larger R or the result
        filters = weight.permute(0, 2, 3, 1).reshape(k, fy * fx * c2).mul(scale)
        if objective.winner_rows is not None:
            winners = objective.winner_rows
            per_winner = winners.table_times(filters).T  # (fy fx 2C, K)
            per_offset = torch.index_select(per_winner, 1, winners.best.reshape(-1))
        else:
            per_offset = torch.mm(filters.T, d_log_joint.reshape(-1, k).T)
        per_offset = per_offset.view(fy, fx, c2, n, ho, wo)
        out = d_log_joint.new_zeros(c2, n, *size)
        for dy in range(fy):
            for dx in range(fx):
                rows = slice(dy, dy + sy * (ho - 1) + 1, sy)
                out[:, :, rows, dx : dx + sx * (wo - 1) + 1 : sx] += per_offset[dy, dx]
        return out.permute(1, 2, 3, 0)
