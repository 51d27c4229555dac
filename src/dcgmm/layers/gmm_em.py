r"""Stepwise (online) EM for a GMM layer: the alternative to SGD on its objective.

A mini-batch gives the layer's responsibility-weighted sums
(:class:`~dcgmm.layers.gmm_gradients.Statistics`: :math:`r_k, A_k, B_k`, the same sums the
closed-form gradient needs), normalised to one unit of mass per mixture,
:math:`\hat s = (r, A, B) / \sum_k r_k`. Stepwise EM (Cappé & Moulines 2009; Liang & Klein
2009) moves the running statistics towards them and reads the parameters off (M-step):

.. math::
    s \leftarrow (1 - \eta_t)\, s + \eta_t\, \hat s, \qquad \eta_t = (t + 2)^{-\alpha},
    \qquad \pi = s_0, \quad \mu = s_1 / s_0, \quad \sigma^2 = s_2 / s_0 - \mu^2 ,

with t the layer's own steps (a delayed layer starts at t = 0). The running statistics are
those of the current parameters, :math:`s = (\pi, \pi\mu, \pi(\sigma^2 + \mu^2))`, so the
layer carries no state besides its parameters: checkpoints, resuming and data-parallel runs
need nothing new. It is exact stepwise EM except where a variance is clipped into the
precision bounds (the clipped value is what the next step starts from).

Which responsibilities: those of the layer's objective. Under ``"loglik"`` they are the
posteriors (exact stepwise EM); under ``"annealed"`` each row gives its weight to the winner
smoothed by the torus kernel, so EM is the batch form of the SOM the SGD objective anneals (the
kernel shrinks on the same SingleExp schedule), and at the radius floor it is hard
(classification) EM on the max-component objective.
"""

import torch

from dcgmm._numerics import SQRT_PRECISION_LOWER_BOUND, SQRT_PRECISION_UPPER_BOUND
from dcgmm.layers.gmm import GMM
from dcgmm.layers.gmm_gradients import Statistics

__all__ = ["em_step_size", "stepwise_em_step_"]


def em_step_size(layer_step: int, exponent: float) -> float:
    r"""Return :math:`\eta_t = (t + 2)^{-\alpha}` for the layer's ``t``-th step (from 0)."""
    if not 0.5 < exponent <= 1.0:
        raise ValueError(f"the step exponent must be in (0.5, 1]; got {exponent}")
    return float((layer_step + 2.0) ** (-exponent))


def stepwise_em_step_(
    gmm: GMM,
    stats: Statistics,
    step_size: float,
    *,
    learn_weights: bool = True,
    variance_floor: float | None = None,
) -> None:
    r"""Move ``gmm``'s parameters one stepwise-EM step towards the batch ``stats``, in place.

    Parameters
    ----------
    gmm : GMM
        The layer (shared or independent).
    stats : Statistics
        The batch's sums ``r = sum R``, ``A = sum R x``, ``B = sum R x^2`` (any common scale:
        each mixture's are normalised to unit mass here).
    step_size : float
        :math:`\eta` in (0, 1].
    learn_weights : bool
        False keeps the mixing weights as they are (the recipes' lambda_pi = 0); the means
        and variances are then updated as if each component's mass were its weight.
    variance_floor : float, optional
        The smallest variance; default the layers' precision bound, 1 / 20 (the
        scikit-learn estimator passes its own ``1 / precision_upper_bound``).
    """
    if not 0.0 < step_size <= 1.0:
        raise ValueError(f"the EM step size must be in (0, 1]; got {step_size}")
    with torch.no_grad():
        dtype = gmm.means.dtype
        mass = stats.weight.sum(-1, keepdim=True).clamp_min(torch.finfo(dtype).tiny)
        batch0 = (stats.weight / mass).to(dtype)  # (..., K)
        batch1 = (stats.first / mass.unsqueeze(-1)).to(dtype)  # (..., K, C)
        batch2 = (stats.second / mass.unsqueeze(-1)).to(dtype)
        pi = torch.softmax(gmm.logits, dim=-1)
        mu = gmm.means
        variance = gmm.sqrt_precisions.square().reciprocal()
        keep = 1.0 - step_size
        s0 = keep * pi + step_size * batch0
        w = pi.unsqueeze(-1)
        s1 = keep * w * mu + step_size * batch1
        s2 = keep * w * (variance + mu * mu) + step_size * batch2
        # A component no row has chosen for long keeps a tiny positive mass: its mean and
        # variance stay those of the rows it last saw.
        safe = s0.clamp_min(torch.finfo(dtype).tiny).unsqueeze(-1)
        new_mu = s1 / safe
        new_variance = s2 / safe - new_mu * new_mu
        highest = 1.0 / SQRT_PRECISION_LOWER_BOUND**2
        lowest = 1.0 / SQRT_PRECISION_UPPER_BOUND**2 if variance_floor is None else variance_floor
        new_variance = new_variance.clamp(lowest, highest)
        gmm.means.copy_(new_mu)
        gmm.sqrt_precisions.copy_(new_variance.rsqrt())
        if learn_weights:
            gmm.logits.copy_(s0.clamp_min(torch.finfo(dtype).tiny).log())
