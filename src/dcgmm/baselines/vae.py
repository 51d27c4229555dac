"""Deep latent Gaussian mixture VAEs (Nalisnick, Hertel & Smyth 2016): DLGMM, DLDPMM, Gauss-VAE.

Specification: ``../shared/specs/dlgmm.md``. One class, :class:`DeepLatentGMM`, covers the
three models of the paper's likelihood table:

* ``DLGMM``: K Gaussian posterior components mixed by Kumaraswamy stick-breaking weights, a
  symmetric Dirichlet(alpha) prior in stick form (``Beta(alpha, (K - j) alpha)``);
* ``DLDPMM``: the same with a Dirichlet-process prior truncated at T components
  (``Beta(1, alpha0)`` sticks);
* ``Gauss-VAE``: one N(0, I) latent (K = 1, no sticks, analytic KL).

Reconstructions and named options (the spec's section 8; defaults marked):

* ``entropy="paper"``: the paper's surrogate objective with the one-sample heuristic
  ``-log sum_k pi_hat_k q_k(z_hat_k)`` for the mixture entropy (not a bound);
  ``entropy="indicator"`` (default): the component indicator is an explicit latent, which makes
  ``sum_k pi_bar_k (log p(x|z_k) + CE_k + H[q_k]) - KL(sticks)`` an exact ELBO of the model
  the importance sampler scores (pi_bar, the posterior mean of the weights, is exact because
  the sticks are independent under q).
* ``kl_method="quadrature"`` (default, accurate) or ``"series"`` (the authors' 10 terms).
* ``encoder_activation="relu"`` (default) or ``None``: the authors' code had no nonlinearity
  after the 500-unit layer in the runs behind the paper's numbers.
* ``param_transform="softplus"`` (default: softplus, clamped) or ``"exp"`` (the code's).

Data: binary images flattened to 784 values, Bernoulli likelihood.
"""

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dcgmm.baselines.distributions import (
    KLMethod,
    diagonal_normal_log_prob,
    gaussian_cross_entropy,
    gaussian_entropy,
    kl_kumaraswamy_beta,
    kumaraswamy_mean,
    kumaraswamy_rsample_log,
    stick_breaking_log,
)
from dcgmm.baselines.vae_inference import TrainedVAE

__all__ = [
    "AB_RANGE",
    "MIN_STD",
    "DeepLatentGMM",
    "Entropy",
    "FitHistory",
    "Prior",
    "dldpmm",
    "dlgmm",
    "gauss_vae",
]

Prior = Literal["dirichlet", "dp", "gaussian"]
Entropy = Literal["paper", "indicator"]
# softplus^-1(1): the a and b heads start at a = b = 1 (uniform sticks), as in the authors' code.
_SOFTPLUS_INV_ONE = math.log(math.e - 1)
AB_RANGE = (1e-2, 50.0)
MIN_STD = 1e-4


@dataclass
class FitHistory:
    """What :meth:`DeepLatentGMM.fit` recorded, one entry per epoch."""

    train_elbo: list[float] = field(default_factory=list)
    val_elbo: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    best_epoch: int = -1
    stopped_early: bool = False


class DeepLatentGMM(TrainedVAE, nn.Module):
    """A VAE whose posterior (and prior) over z is a Gaussian mixture with stick-breaking weights.

    Parameters
    ----------
    n_components : int
        K (DLGMM), the truncation T (DLDPMM), or 1 (Gauss-VAE).
    latent_dim : int
        Dimension of z (25 in the paper).
    n_inputs : int
        Pixels per image (784).
    hidden : int
        Width of the encoder trunk and of the decoder's hidden layer (500).
    prior : {"dirichlet", "dp", "gaussian"}
        Prior of the mixture weights; "gaussian" is the Gauss-VAE (needs ``n_components=1``).
    alpha : float
        Dirichlet concentration (``prior="dirichlet"``) or DP concentration alpha0 (``"dp"``).
    prior_means : Tensor, optional
        (K, latent_dim) means of the prior components (default 0; the paper's Figure 2 shifts
        them). Prior standard deviations are 1.
    entropy, kl_method, encoder_activation, param_transform
        See the module docstring.
    kl_terms : int
        Terms of the series when ``kl_method="series"``.
    """

    def __init__(
        self,
        n_components: int = 3,
        latent_dim: int = 25,
        *,
        n_inputs: int = 784,
        hidden: int = 500,
        prior: Prior = "dirichlet",
        alpha: float = 1.0,
        prior_means: Tensor | None = None,
        entropy: Entropy = "indicator",
        kl_method: KLMethod = "quadrature",
        kl_terms: int = 10,
        encoder_activation: Literal["relu"] | None = "relu",
        param_transform: Literal["softplus", "exp"] = "softplus",
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if prior not in ("dirichlet", "dp", "gaussian"):
            raise ValueError(f"prior must be 'dirichlet', 'dp' or 'gaussian'; got {prior!r}")
        if (prior == "gaussian") != (n_components == 1):
            raise ValueError(
                "a Gauss-VAE (prior='gaussian') has exactly one component, and a mixture prior "
                f"needs at least two; got prior={prior!r}, n_components={n_components}"
            )
        if entropy not in ("paper", "indicator"):
            raise ValueError(f"entropy must be 'paper' or 'indicator'; got {entropy!r}")
        if param_transform not in ("softplus", "exp"):
            raise ValueError(
                f"param_transform must be 'softplus' or 'exp'; got {param_transform!r}"
            )
        if alpha <= 0:
            raise ValueError(f"alpha must be positive; got {alpha}")
        self.n_components, self.latent_dim, self.n_inputs = n_components, latent_dim, n_inputs
        self.prior, self.alpha, self.entropy = prior, alpha, entropy
        self.kl_method, self.kl_terms = kl_method, kl_terms
        self.encoder_activation, self.param_transform = encoder_activation, param_transform
        k, d = n_components, latent_dim
        self.trunk = nn.Linear(n_inputs, hidden)
        self.mean_head = nn.Linear(hidden, k * d)
        self.std_head = nn.Linear(hidden, k * d)
        self.a_head = nn.Linear(hidden, max(k - 1, 1))
        self.b_head = nn.Linear(hidden, max(k - 1, 1))
        self.decoder = nn.Sequential(nn.Linear(d, hidden), nn.ReLU(), nn.Linear(hidden, n_inputs))
        means = torch.zeros(k, d) if prior_means is None else prior_means.detach().clone().float()
        if means.shape != (k, d):
            raise ValueError(f"prior_means must have shape ({k}, {d}); got {tuple(means.shape)}")
        self.register_buffer("prior_means", means)
        self.register_buffer("prior_stds", torch.ones(k, d))
        j = torch.arange(1, k, dtype=torch.float32)  # stick index 1..K-1
        if prior == "dp":
            alphas, betas = torch.ones(k - 1), torch.full((k - 1,), float(alpha))
        else:
            alphas, betas = torch.full((k - 1,), float(alpha)), (k - j) * alpha
        self.register_buffer("stick_alpha", alphas)
        self.register_buffer("stick_beta", betas)
        self._init_weights(generator)

    prior_means: Tensor
    prior_stds: Tensor
    stick_alpha: Tensor
    stick_beta: Tensor

    @torch.no_grad()
    def _init_weights(self, generator: torch.Generator | None) -> None:
        # The authors' initialisation: weights N(0, 0.01^2), biases 0; the stick heads start
        # at (almost) zero weights so that a = b = 1.
        for module in self.modules():
            if isinstance(module, nn.Linear):
                module.weight.normal_(0.0, 0.01, generator=generator)
                module.bias.zero_()
        for head in (self.a_head, self.b_head):
            head.weight.normal_(0.0, 1e-8, generator=generator)
            if self.param_transform == "softplus":
                head.bias.fill_(_SOFTPLUS_INV_ONE)

    # ----------------------------------------------------------------------------- encoder
    def _positive(self, raw: Tensor, low: float, high: float | None = None) -> Tensor:
        value = F.softplus(raw) if self.param_transform == "softplus" else torch.exp(raw)
        return value.clamp(low, high) if self.param_transform == "softplus" else value

    def encode(self, x: Tensor) -> dict[str, Tensor]:
        """Return the posterior's parameters: ``mean``, ``std`` (B, K, d), ``a``, ``b`` (B, K-1)."""
        h = self.trunk(x)
        if self.encoder_activation == "relu":
            h = F.relu(h)
        k, d = self.n_components, self.latent_dim
        out = {
            "mean": self.mean_head(h).reshape(-1, k, d),
            "std": self._positive(self.std_head(h), MIN_STD).reshape(-1, k, d),
        }
        if k > 1:
            out["a"] = self._positive(self.a_head(h), *AB_RANGE)
            out["b"] = self._positive(self.b_head(h), *AB_RANGE)
        return out

    def mean_weights_log(self, q: dict[str, Tensor]) -> Tensor:
        """Return ``log pi_bar`` (B, K): the stick-breaking map of the Kumaraswamy means."""
        if self.n_components == 1:
            return torch.zeros(
                q["mean"].shape[0], 1, dtype=q["mean"].dtype, device=q["mean"].device
            )
        v_bar = kumaraswamy_mean(q["a"], q["b"]).clamp(1e-12, 1 - 1e-7)
        return stick_breaking_log(torch.log(v_bar), torch.log1p(-v_bar))

    def decode_log_likelihood(self, x: Tensor, z: Tensor) -> Tensor:
        """Return ``log p(x | z)`` (Bernoulli) for x (B, D) and z (B, ..., d)."""
        logits = self.decoder(z)
        target = x.reshape(x.shape[0], *([1] * (z.dim() - 2)), x.shape[-1]).expand_as(logits)
        return -F.binary_cross_entropy_with_logits(logits, target, reduction="none").sum(-1)

    def stick_kl(self, q: dict[str, Tensor]) -> Tensor:
        """Return ``sum_j KL(Kumaraswamy(a_j, b_j) || Beta(alpha_j, beta_j))`` per example."""
        if self.n_components == 1:
            return torch.zeros(q["mean"].shape[0], dtype=q["mean"].dtype, device=q["mean"].device)
        kl = kl_kumaraswamy_beta(
            q["a"],
            q["b"],
            self.stick_alpha,
            self.stick_beta,
            method=self.kl_method,
            n_terms=self.kl_terms,
        )
        return kl.sum(-1)

    # ----------------------------------------------------------------------------- objective
    def elbo(self, x: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        """Return the training objective per example (B,), one sample per component.

        The decoder runs K times per example (once per component's sample), as in the paper.
        """
        x = self._check(x)
        q = self.encode(x)
        mean, std = q["mean"], q["std"]
        eps = torch.randn(mean.shape, generator=generator, dtype=mean.dtype, device=mean.device)
        z = mean + std * eps  # (B, K, d)
        log_px = self.decode_log_likelihood(x, z)  # (B, K)
        ce = gaussian_cross_entropy(mean, std, self.prior_means, self.prior_stds)  # (B, K)
        pi_bar = self.mean_weights_log(q).exp()
        if self.entropy == "indicator" or self.n_components == 1:
            per_component = log_px + ce + gaussian_entropy(std)
            return (pi_bar * per_component).sum(-1) - self.stick_kl(q)
        log_v, log_1mv = kumaraswamy_rsample_log(q["a"], q["b"], generator=generator)
        log_pi_hat = stick_breaking_log(log_v, log_1mv)
        own_density = diagonal_normal_log_prob(z, mean, std)  # log q_k(z_k), (B, K)
        entropy_term = -torch.logsumexp(log_pi_hat + own_density, dim=-1)
        return (pi_bar * (log_px + ce)).sum(-1) - self.stick_kl(q) + entropy_term

    # ----------------------------------------------------------------------------- training
    def fit(
        self,
        train: Tensor,
        *,
        val: Tensor | None = None,
        max_epochs: int = 500,
        lookahead: int = 30,
        lr: float = 3e-4,
        batch_size: int = 100,
        seed: int = 0,
        max_seconds: float | None = None,
        callback: Callable[[int, dict[str, float]], None] | None = None,
    ) -> FitHistory:
        """Train with Adam on the objective; early stopping on the validation objective.

        Reshuffles every epoch (seeded); keeps the parameters of the best validation epoch and
        restores them at the end; stops when ``lookahead`` epochs bring no improvement, after
        ``max_epochs``, or once ``max_seconds`` of training have passed (the budget a CPU run can
        afford; the history says which).
        """
        train = self._check(train)
        if val is not None:
            val = self._check(val)
        optimizer = torch.optim.Adam(self.parameters(), lr=lr)
        generator = torch.Generator(device=train.device).manual_seed(seed)
        history = FitHistory()
        best, best_state, waited, spent = -math.inf, copy.deepcopy(self.state_dict()), 0, 0.0
        for epoch in range(max_epochs):
            start = time.perf_counter()
            history.train_elbo.append(self._train_epoch(train, optimizer, batch_size, generator))
            spent += time.perf_counter() - start
            history.seconds.append(spent)
            score = history.train_elbo[-1]
            if val is not None:
                score = float(self.mean_elbo(val, seed=seed))
                history.val_elbo.append(score)
            if callback is not None:
                callback(epoch, {"train_elbo": history.train_elbo[-1], "val_elbo": score})
            if score > best:
                best, best_state, waited, history.best_epoch = (
                    score,
                    copy.deepcopy(self.state_dict()),
                    0,
                    epoch,
                )
            else:
                waited += 1
                if waited >= lookahead:
                    history.stopped_early = True
                    break
            if max_seconds is not None and spent >= max_seconds:
                break
        self.load_state_dict(best_state)
        return history

    def _train_epoch(
        self,
        train: Tensor,
        optimizer: torch.optim.Optimizer,
        batch_size: int,
        generator: torch.Generator,
    ) -> float:
        """Take one pass of Adam steps over a fresh shuffle; return its mean training ELBO."""
        order = torch.randperm(train.shape[0], generator=generator, device=train.device)
        total = 0.0
        for i in range(0, train.shape[0] - batch_size + 1, batch_size):
            batch = train[order[i : i + batch_size]]
            loss = -self.elbo(batch, generator=generator).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
            total += float(loss.detach()) * batch.shape[0]
        return -total / (train.shape[0] // batch_size * batch_size)

    @torch.no_grad()
    def mean_elbo(self, x: Tensor, *, seed: int = 0, batch_size: int = 1000) -> float:
        """Return the mean objective over ``x`` (fixed noise seed: comparable across epochs)."""
        x = self._check(x)
        generator = torch.Generator(device=x.device).manual_seed(seed)
        total = 0.0
        for i in range(0, x.shape[0], batch_size):
            total += float(self.elbo(x[i : i + batch_size], generator=generator).double().sum())
        return total / x.shape[0]

    def _check(self, x: Tensor) -> Tensor:
        if x.dim() == 4:  # NHWC images -> flat vectors
            x = x.reshape(x.shape[0], -1)
        if x.dim() != 2 or x.shape[1] != self.n_inputs:
            raise ValueError(
                f"expected images of {self.n_inputs} pixels as (N, {self.n_inputs}) or NHWC; "
                f"got shape {tuple(x.shape)}"
            )
        return x

    def describe(self) -> dict[str, Any]:
        """Return the constructor's settings (for run records)."""
        return {
            "n_components": self.n_components,
            "latent_dim": self.latent_dim,
            "prior": self.prior,
            "alpha": self.alpha,
            "entropy": self.entropy,
            "kl_method": self.kl_method,
            "encoder_activation": self.encoder_activation,
            "param_transform": self.param_transform,
        }


def dlgmm(n_components: int = 3, latent_dim: int = 25, **kwargs: Any) -> DeepLatentGMM:
    """Return the paper's DLGMM (500d-3x25s): Dirichlet(1) prior on K = 3 components."""
    return DeepLatentGMM(n_components, latent_dim, prior="dirichlet", **kwargs)


def dldpmm(truncation: int = 17, latent_dim: int = 25, **kwargs: Any) -> DeepLatentGMM:
    """Return the paper's DLDPMM (500d-17tx25s): DP(alpha0 = 1) prior truncated at T = 17."""
    return DeepLatentGMM(truncation, latent_dim, prior="dp", **kwargs)


def gauss_vae(latent_dim: int = 25, **kwargs: Any) -> DeepLatentGMM:
    """Return the Gauss-VAE baseline (500d-25s): one N(0, I) latent."""
    return DeepLatentGMM(1, latent_dim, prior="gaussian", **kwargs)
