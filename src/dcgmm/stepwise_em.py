r"""Stepwise (online) EM for one diagonal Gaussian mixture.

Cappé & Moulines (2009) and Liang & Klein (2009): the E-step of each mini-batch gives its
expected sufficient statistics; a running average of them,

.. math::
    s \leftarrow (1 - \eta_t)\, s + \eta_t\, \bar s(\text{batch}), \qquad
    \eta_t = (t + t_0)^{-\alpha}, \quad \alpha \in (0.5, 1],

with :math:`s = (\overline{r_k}, \overline{r_k x}, \overline{r_k x^2})`, is turned into
parameters by the M-step :math:`\pi_k \propto s_{0k}`, :math:`\mu_k = s_{1k} / s_{0k}`,
:math:`\sigma^2_k = s_{2k} / s_{0k} - \mu_k^2`, every variance held at or above the floor
(the precision bound). With :math:`\sum_t \eta_t = \infty` and :math:`\sum_t \eta_t^2 < \infty`
it converges to a stationary point of the likelihood, like batch EM, while reading each sample
once per pass: the data never have to fit in one EM pass.
"""

import math

import torch
from torch import Tensor

__all__ = ["StepwiseEM"]


class StepwiseEM:
    r"""The running sufficient statistics of a diagonal GMM and the parameters they give.

    Parameters
    ----------
    weights, means, variances : Tensor, shapes (K,), (K, D), (K, D)
        The starting parameters; the statistics start as theirs.
    variance_floor : float
        The smallest variance (1 / the precision bound).
    exponent : float, default=0.6
        :math:`\alpha` of the step size; in (0.5, 1].
    offset : float, default=2.0
        :math:`t_0`: the first step is :math:`t_0^{-\alpha}`.
    """

    def __init__(
        self,
        weights: Tensor,
        means: Tensor,
        variances: Tensor,
        *,
        variance_floor: float,
        exponent: float = 0.6,
        offset: float = 2.0,
    ) -> None:
        if not 0.5 < exponent <= 1.0:
            raise ValueError(f"exponent must be in (0.5, 1]; got {exponent}")
        self.variance_floor = float(variance_floor)
        self.exponent, self.offset = float(exponent), float(offset)
        self.steps = 0
        self.weights, self.means = weights.clone(), means.clone()
        self.variances = variances.clamp_min(self.variance_floor)
        self.s0 = self.weights.clone()
        self.s1 = self.weights[:, None] * self.means
        self.s2 = self.weights[:, None] * (self.variances + self.means * self.means)

    def log_joint(self, x: Tensor) -> Tensor:
        r"""Return :math:`\log \pi_k + \log N(x \mid \mu_k, \sigma^2_k)` of every row (N, K)."""
        precision = 1.0 / self.variances
        const = -0.5 * (
            (self.means * self.means * precision).sum(1)
            + torch.log(2 * math.pi * self.variances).sum(1)
        )
        return (
            (x * x) @ (-0.5 * precision).T
            + x @ (self.means * precision).T
            + (const + torch.log(self.weights))
        )

    def step(self, x: Tensor) -> float:
        """Take one stepwise-EM step on the batch ``x`` (B, D); return its mean log-likelihood.

        The log-likelihood is that of the parameters before the step (nats per row).
        """
        log_joint = self.log_joint(x)
        loglik = torch.logsumexp(log_joint, dim=1)
        resp = torch.exp(log_joint - loglik[:, None])
        eta = (self.steps + self.offset) ** (-self.exponent)
        n = x.shape[0]
        keep = 1.0 - eta
        self.s0.mul_(keep).add_(resp.mean(0), alpha=eta)
        self.s1.mul_(keep).add_(resp.T @ x, alpha=eta / n)
        self.s2.mul_(keep).add_(resp.T @ (x * x), alpha=eta / n)
        self.steps += 1
        self._m_step()
        return float(loglik.mean())

    def _m_step(self) -> None:
        # A component no sample has chosen for long keeps a tiny but positive s0: its mean and
        # variance stay those of the few samples it saw (no division by zero).
        s0 = self.s0.clamp_min(torch.finfo(self.s0.dtype).tiny)
        self.weights = s0 / s0.sum()
        self.means = self.s1 / s0[:, None]
        self.variances = (self.s2 / s0[:, None] - self.means * self.means).clamp_min(
            self.variance_floor
        )
