"""What a trained deep latent GMM does: its likelihood, samples, embeddings, in-paintings.

:class:`TrainedVAE` is the half of :class:`~dcgmm.baselines.vae.DeepLatentGMM` that uses the
trained encoder and decoder: ``log p(x)`` by importance sampling, ancestral samples, the
posterior embedding and iterated in-painting. The model and its training are in
:mod:`dcgmm.baselines.vae`.
"""

import math
from typing import Literal

import torch
from torch import Tensor, nn

from dcgmm.baselines.distributions import (
    beta_log_prob,
    diagonal_normal_log_prob,
    kumaraswamy_log_prob,
    kumaraswamy_rsample_log,
    stick_breaking_log,
)

__all__ = ["TrainedVAE"]


class TrainedVAE:
    """The inference half of :class:`~dcgmm.baselines.vae.DeepLatentGMM` (a base class of it).

    The attributes and methods below are the model's.
    """

    n_components: int
    latent_dim: int
    decoder: nn.Module
    prior_means: Tensor
    prior_stds: Tensor
    stick_alpha: Tensor
    stick_beta: Tensor

    def _check(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def encode(self, x: Tensor) -> dict[str, Tensor]:
        """Return the posterior's parameters (the model's)."""
        raise NotImplementedError

    def decode_log_likelihood(self, x: Tensor, z: Tensor) -> Tensor:
        """Return ``log p(x | z)`` (the model's)."""
        raise NotImplementedError

    def mean_weights_log(self, q: dict[str, Tensor]) -> Tensor:
        """Return the log posterior-mean mixing weights (the model's)."""
        raise NotImplementedError

    # ----------------------------------------------------------------------------- likelihood
    @torch.no_grad()
    def log_prob(
        self,
        x: Tensor,
        *,
        n_samples: int = 5000,
        chunk: int = 500,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Return the importance-sampled ``log p(x)`` per example (B,), in nats.

        The proposal draws sticks, then a component ``c ~ Cat(SB(v))``, then ``z ~ q_c``; the
        weight ``p(x|z) N(z; m_c, s_c) Beta(v) / (Kuma(v) q_c(z))`` (the factor pi_c(v) cancels).
        ``log mean_s w_s`` is a stochastic lower bound of ``log p(x)`` that tightens as
        ``n_samples`` grows. Raises if any weight is not finite (nothing is dropped).
        """
        x = self._check(x)
        q = self.encode(x)
        log_w_parts = []
        for start in range(0, n_samples, chunk):
            s = min(chunk, n_samples - start)
            log_w_parts.append(self._log_weights(x, q, s, generator))
        log_w = torch.cat(log_w_parts, dim=1)  # (B, S)
        if not bool(torch.isfinite(log_w).all()):
            bad = int((~torch.isfinite(log_w)).sum())
            raise FloatingPointError(
                f"{bad} of {log_w.numel()} importance weights are not finite; the model or the "
                "data is broken (weights are never dropped silently)"
            )
        return torch.logsumexp(log_w, dim=1) - math.log(n_samples)

    def _log_weights(
        self, x: Tensor, q: dict[str, Tensor], s: int, generator: torch.Generator | None
    ) -> Tensor:
        b, k, _d = q["mean"].shape
        rows = torch.arange(b, device=x.device)[:, None].expand(b, s)
        log_w = torch.zeros(b, s, dtype=q["mean"].dtype, device=x.device)
        if k > 1:
            a, bb = q["a"][:, None, :].expand(b, s, k - 1), q["b"][:, None, :].expand(b, s, k - 1)
            log_v, log_1mv = kumaraswamy_rsample_log(a, bb, generator=generator)
            log_w += (
                beta_log_prob(log_v, log_1mv, self.stick_alpha, self.stick_beta)
                - kumaraswamy_log_prob(log_v, log_1mv, a, bb)
            ).sum(-1)
            cdf = stick_breaking_log(log_v, log_1mv).exp().cumsum(-1)
            u = torch.rand(b, s, 1, generator=generator, dtype=cdf.dtype, device=x.device)
            c = torch.searchsorted(cdf, u * cdf[..., -1:]).squeeze(-1).clamp_max(k - 1)
        else:
            c = torch.zeros(b, s, dtype=torch.long, device=x.device)
        mean, std = q["mean"][rows, c], q["std"][rows, c]  # (B, S, d)
        eps = torch.randn(mean.shape, generator=generator, dtype=mean.dtype, device=x.device)
        z = mean + std * eps
        log_w += self.decode_log_likelihood(x, z)
        log_w += diagonal_normal_log_prob(z, self.prior_means[c], self.prior_stds[c])
        log_w -= diagonal_normal_log_prob(z, mean, std)
        return log_w

    # ----------------------------------------------------------------------------- generation
    @torch.no_grad()
    def sample(
        self,
        n: int,
        *,
        component: int | None = None,
        binary: bool = False,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Draw ``n`` images from the prior: pixel probabilities (N, D), or Bernoulli draws."""
        device = self.prior_means.device
        k = self.n_components
        if component is not None:
            if not 0 <= component < k:
                raise ValueError(f"component must lie in [0, {k - 1}]; got {component}")
            c = torch.full((n,), component, dtype=torch.long, device=device)
        elif k == 1:
            c = torch.zeros(n, dtype=torch.long, device=device)
        else:
            beta = torch.distributions.Beta(self.stick_alpha, self.stick_beta)
            v = _beta_draw(beta, n, generator)
            pi = stick_breaking_log(torch.log(v), torch.log1p(-v)).exp()
            u = torch.rand(n, 1, generator=generator, device=device)
            c = torch.searchsorted(pi.cumsum(-1), u * pi.sum(-1, keepdim=True)).squeeze(-1)
            c = c.clamp_max(k - 1)
        eps = torch.randn(n, self.latent_dim, generator=generator, device=device)
        z = self.prior_means[c] + self.prior_stds[c] * eps
        probs = torch.sigmoid(self.decoder(z))
        if binary:
            return torch.bernoulli(probs, generator=generator)
        return probs

    @torch.no_grad()
    def embed(
        self,
        x: Tensor,
        *,
        mode: Literal["argmax_component_sample", "argmax_component_mean"] = (
            "argmax_component_sample"
        ),
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Return one latent code per image (B, d) from the component with the largest pi_bar.

        ``argmax_component_sample`` (the authors' kNN embedding) draws one z from it;
        ``argmax_component_mean`` takes its mean.
        """
        x = self._check(x)
        q = self.encode(x)
        best = self.mean_weights_log(q).argmax(-1)
        rows = torch.arange(x.shape[0], device=x.device)
        mean, std = q["mean"][rows, best], q["std"][rows, best]
        if mode == "argmax_component_mean":
            return mean
        if mode != "argmax_component_sample":
            raise ValueError(f"unknown embedding mode {mode!r}")
        return mean + std * torch.randn(mean.shape, generator=generator, device=mean.device)

    @torch.no_grad()
    def inpaint(
        self,
        x: Tensor,
        missing: Tensor,
        *,
        n_iters: int = 20,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Complete ``missing`` pixels by pseudo-Gibbs iterations (Rezende et al. 2014).

        An extension, not in the paper: start hidden pixels at 0.5, then repeat encode -> draw
        z from the best component -> decode, clamping the known pixels. Returns probabilities
        for the hidden pixels and the known pixels unchanged.
        """
        x = self._check(x)
        if missing.shape != x.shape:
            raise ValueError(
                f"missing must have shape {tuple(x.shape)}; got {tuple(missing.shape)}"
            )
        current = torch.where(missing, torch.full_like(x, 0.5), x)
        for _ in range(n_iters):
            z = self.embed(current, generator=generator)
            current = torch.where(missing, torch.sigmoid(self.decoder(z)), x)
        return current


def _beta_draw(beta: torch.distributions.Beta, n: int, generator: torch.Generator | None) -> Tensor:
    # torch's Beta sampler takes no generator: seed a forked global RNG from ours instead, so
    # a seeded generator still gives reproducible draws and the caller's RNG state is untouched.
    seed = int(torch.randint(0, 2**62, (1,), generator=generator)) if generator else None
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        return beta.sample((n,))
