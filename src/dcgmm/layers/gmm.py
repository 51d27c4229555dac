r"""Convolutional GMM layer: K diagonal Gaussians at every position of a feature map.

Densities use the matmul expansion of the squared Mahalanobis distance, so no (N, H, W, K, C)
temporary is ever built (:mod:`dcgmm.layers.gaussian`); the annealed objective smooths over
the components' torus (:mod:`dcgmm.layers.torus`); sampling draws components with
:mod:`dcgmm.layers.draws`. Parameters are shared over positions, shape (K, C), or independent
per position, shape (H, W, K, C).
"""

import warnings
from typing import Literal, NamedTuple

import torch
from jaxtyping import Float
from torch import Tensor, nn

from dcgmm._numerics import (
    MEAN_INIT_RANGE,
    SIGMA_SOM_FLOOR,
    SQRT_PRECISION_LOWER_BOUND,
    SQRT_PRECISION_UPPER_BOUND,
    all_neg_inf_rows,
    sigma_som_start,
)
from dcgmm.exceptions import NumericalWarning
from dcgmm.layers import gmm_gradients as grads
from dcgmm.layers import gmm_head
from dcgmm.layers.base import Shape, TrainableLayer
from dcgmm.layers.draws import draw_best, draw_categorical, expectation_weights, keep_top_s
from dcgmm.layers.gaussian import (
    diag_gaussian_log_density,
    diag_gaussian_log_density_per_position,
    observed_log_density,
)
from dcgmm.layers.torus import torus_grid_side, torus_smoothing_kernel

__all__ = ["GMM", "OBJECTIVES", "GMMScores", "Objective"]

Objective = Literal["annealed", "max_component", "loglik"]
OBJECTIVES: tuple[Objective, ...] = ("annealed", "max_component", "loglik")


def _refresh_sigma_host(module: nn.Module, _keys: object) -> None:
    # After load_state_dict the saved radius is in the buffer; mirror it on the host.
    if isinstance(module, GMM):
        module._sigma_host = float(module.sigma_som)


def _gather_rows(param: Tensor, rows: Tensor) -> Tensor:
    """Return ``param``'s rows (its last axis) at ``rows``: shape ``rows.shape + (C,)``."""
    table = param.reshape(-1, param.shape[-1])
    return table.index_select(0, rows.reshape(-1)).reshape(*rows.shape, -1)


class GMMScores(NamedTuple):
    """Per-position density scores of one GMM layer, each of shape (N, H, W).

    Attributes
    ----------
    annealed : Tensor
        The annealed max-component log-likelihood (the training objective at the current
        annealing radius; at the radius floor it equals ``max_component``).
    max_component : Tensor
        ``max_k log(pi_k N_k(x))``.
    loglik : Tensor
        The exact log-likelihood ``log sum_k pi_k N_k(x)``.
    """

    annealed: Tensor
    max_component: Tensor
    loglik: Tensor


class GMM(TrainableLayer):
    r"""K diagonal Gaussians at every position; passes responsibilities upward.

    Parameters
    ----------
    input_shape : tuple of int
        ``(H, W, C)``; each position's C-vector is one observation.
    n_components : int
        K.
    independent : bool
        One set of K components per position (shape (H, W, K, C)) instead of one shared set.
    objective : {"annealed", "max_component", "loglik"}
        What training maximises: the annealed max-component log-likelihood of SGD-GMM
        (default), its un-annealed form, or the exact log-likelihood.

    Notes
    -----
    Parameters: mixing ``logits`` (weights ``pi = softmax(logits)``), ``means`` and
    ``sqrt_precisions`` ``s`` (the authors' code calls these "sigmas").

    .. math::
        \ell_k(x) = \log\pi_k + \log N_k(x), \qquad
        \text{loss} = \max_k \sum_j g_{kj}\,\ell_j(x)

    with ``g`` the toroidal kernel of radius ``sigma_som`` (Gepperth & Pfuelb 2021, SGD-GMM;
    2022, eq. 8).
    """

    def __init__(
        self,
        input_shape: Shape,
        n_components: int,
        *,
        independent: bool = False,
        objective: Objective = "annealed",
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(input_shape)
        if objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}; got {objective!r}")
        if objective == "annealed":
            torus_grid_side(n_components)
        self.n_components = n_components
        self.independent = independent
        self.objective: Objective = objective
        h, w, c = input_shape
        lead = (h, w) if independent else ()
        self.logits = nn.Parameter(torch.zeros(*lead, n_components))
        self.means = nn.Parameter(torch.empty(*lead, n_components, c))
        self.sqrt_precisions = nn.Parameter(torch.empty(*lead, n_components, c))
        start = sigma_som_start(n_components) if objective == "annealed" else SIGMA_SOM_FLOOR
        self.register_buffer("sigma_som", torch.tensor(start))
        # A host-side copy of the radius, so the hot path never reads a device scalar back.
        self._sigma_host = start
        self._kernel_cache: tuple[tuple[float, torch.dtype, torch.device], Tensor] | None = None
        self.register_load_state_dict_post_hook(_refresh_sigma_host)  # type: ignore[no-untyped-call]
        self.reset_parameters(generator=generator)

    def reset_parameters(self, *, generator: torch.Generator | None = None) -> None:
        """Initialise as the spec: uniform weights, small uniform means, precisions at 20."""
        with torch.no_grad():
            self.logits.zero_()
            self.means.uniform_(-MEAN_INIT_RANGE, MEAN_INIT_RANGE, generator=generator)
            self.sqrt_precisions.fill_(SQRT_PRECISION_UPPER_BOUND)

    sigma_som: Tensor  # registered buffer: the annealing radius, saved with the parameters

    @property
    def sigma_som_value(self) -> float:
        """The annealing radius as a Python float."""
        return self._sigma_host

    def set_sigma_som(self, value: float) -> None:
        """Set the annealing radius (the buffer that is saved, and its host-side copy)."""
        with torch.no_grad():
            self.sigma_som.fill_(value)
            self._sigma_host = float(value)

    def annealing_kernel(self, dtype: torch.dtype, device: torch.device) -> Tensor | None:
        """Return the toroidal kernel the objective uses now, or ``None`` for the identity.

        ``None`` for the max-component and exact objectives, and at the radius floor where
        the kernel is the identity. The kernel is cached until the radius changes.
        """
        if self.objective != "annealed" or self._sigma_host <= SIGMA_SOM_FLOOR:
            return None
        key = (self._sigma_host, dtype, device)
        if self._kernel_cache is None or self._kernel_cache[0] != key:
            kernel = torus_smoothing_kernel(
                self.n_components, self._sigma_host, dtype=dtype, device=device
            )
            self._kernel_cache = (key, kernel)
        return self._kernel_cache[1]

    @property
    def precisions(self) -> Tensor:
        """Diagonal precisions ``s**2``, same shape as ``means``."""
        return self.sqrt_precisions * self.sqrt_precisions

    @property
    def weights(self) -> Tensor:
        """Mixing weights ``pi = softmax(logits)``."""
        return torch.softmax(self.logits, dim=-1)

    def project_(self) -> None:
        """Clip square-root precisions into ``[sqrt(1e-4), sqrt(20)]`` (called after a step)."""
        with torch.no_grad():
            self.sqrt_precisions.clamp_(SQRT_PRECISION_LOWER_BOUND, SQRT_PRECISION_UPPER_BOUND)

    def output_shape(self, input_shape: Shape) -> Shape:
        """Return ``(H, W, K)``."""
        return (input_shape[0], input_shape[1], self.n_components)

    def forward_observed(self, x: Tensor, missing: Tensor | None) -> Tensor:
        """Return the responsibilities with the ``missing`` entries marginalised out."""
        return torch.softmax(self.log_joint(x, missing), dim=-1)

    def propagate_missing(self, missing: Tensor) -> Tensor:
        """Return the positions none of whose entries is observed (for all K outputs)."""
        k = self.n_components
        return missing.all(dim=-1, keepdim=True).expand(*missing.shape[:-1], k)

    def log_joint(
        self, x: Float[Tensor, "N H W C"], missing: Tensor | None = None
    ) -> Float[Tensor, "N H W K"]:
        r"""Return :math:`\log \pi_k + \log N_k(x)` at every position.

        ``missing`` (bool, like ``x``) marks entries to marginalise out: their values are
        ignored (in-painting). A position with every entry missing gets the prior ``log pi``.
        """
        log_weights = torch.log_softmax(self.logits, dim=-1)
        if missing is not None:
            observed = (~missing).to(x.dtype)
            x = x.masked_fill(missing, 0.0)  # NaN * 0 would still be NaN
            log_dens = observed_log_density(
                x, observed, self.means, self.sqrt_precisions, independent=self.independent
            )
        elif self.independent:
            log_dens = diag_gaussian_log_density_per_position(x, self.means, self.sqrt_precisions)
        else:
            log_dens = diag_gaussian_log_density(x, self.means, self.sqrt_precisions)
        return log_dens + log_weights

    def log_prob(self, x: Float[Tensor, "N H W C"]) -> Float[Tensor, "N H W"]:
        """Return the exact log-likelihood ``log sum_k pi_k N_k(x)`` at every position."""
        return torch.logsumexp(self.log_joint(x), dim=-1)

    def _annealed_map(self, log_joint: Tensor) -> Tensor:
        kernel = self.annealing_kernel(log_joint.dtype, log_joint.device)
        if kernel is not None:
            return (log_joint @ kernel.T).amax(dim=-1)  # kernel is symmetric; .T for clarity
        return log_joint.amax(dim=-1)  # at the floor the kernel is the identity

    def objective_map(self, log_joint: Float[Tensor, "N H W K"]) -> Float[Tensor, "N H W"]:
        """Return the training objective at every position (what the layer maximises)."""
        if self.objective == "loglik":
            return torch.logsumexp(log_joint, dim=-1)
        return self._annealed_map(log_joint)

    def forward(self, x: Float[Tensor, "N H W C"]) -> Float[Tensor, "N H W K"]:
        """Return the responsibilities ``softmax_k log_joint`` at every position."""
        return torch.softmax(self._checked(self.log_joint(x)), dim=-1)

    def forward_and_loss(
        self, x: Float[Tensor, "N H W C"], y: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Return (responsibilities, minus the mean objective over batch and positions)."""
        log_joint = self._checked(self.log_joint(x))
        return torch.softmax(log_joint, dim=-1), -self.objective_map(log_joint).mean()

    def forward_and_statistics(
        self, x: Float[Tensor, "N H W C"]
    ) -> tuple[Float[Tensor, "N H W K"], Tensor, grads.Statistics]:
        """Return (responsibilities, mean objective, the objective's sufficient statistics).

        The statistics (:class:`~dcgmm.layers.gmm_gradients.Statistics`) are what both
        solvers need: SGD's closed-form gradient and stepwise EM's M-step.
        """
        with torch.no_grad():
            log_joint = self.log_joint(x)
            resp = torch.softmax(log_joint, dim=-1)
            kernel = self.annealing_kernel(log_joint.dtype, log_joint.device)
            objective = grads.objective_gradient(log_joint, self.objective, kernel, resp)
            stats = grads.statistics(x, objective, independent=self.independent)
        return resp, objective.values.mean(), stats

    def forward_and_grad(
        self, x: Float[Tensor, "N H W C"]
    ) -> tuple[Float[Tensor, "N H W K"], Tensor]:
        """Return (responsibilities, mean objective) and store the loss gradient in ``.grad``.

        The same numbers as ``forward_and_loss`` followed by ``backward``, from closed-form
        gradients (:mod:`dcgmm.layers.gmm_gradients`) and without autograd's passes.
        """
        resp, value, stats = self.forward_and_statistics(x)
        with torch.no_grad():
            grads.set_descent_gradients(self.means, self.sqrt_precisions, self.logits, stats)
        return resp, value

    def objective_and_input_gradient(self, x: Float[Tensor, "N H W C"]) -> tuple[Tensor, Tensor]:
        """Return each sample's mean objective over positions and its gradient w.r.t. ``x``.

        In closed form (:func:`~dcgmm.layers.gmm_gradients.input_gradient`): what sharpening
        climbs with when no folding is fused below the layer.
        """
        with torch.no_grad():
            log_joint = self.log_joint(x)
            kernel = self.annealing_kernel(log_joint.dtype, log_joint.device)
            objective = grads.objective_gradient(log_joint, self.objective, kernel, None)
            # objective_gradient differentiates the mean over all rows; each sample's own
            # mean over its positions is N times that.
            grad = grads.input_gradient(
                x, objective, self.means, self.sqrt_precisions,
                independent=self.independent, scale=x.shape[0],
            )  # fmt: skip
            return objective.values.flatten(1).mean(1), grad

    def scores(self, x: Float[Tensor, "N H W C"]) -> GMMScores:
        """Return the per-position annealed loss, max-component and exact log-likelihoods."""
        return self.scores_from_log_joint(self._checked(self.log_joint(x)))

    def scores_from_log_joint(self, log_joint: Float[Tensor, "*B K"]) -> GMMScores:
        """Return :meth:`scores` given the log-joints, any leading shape (for fused stages)."""
        return self.responsibilities_and_scores(log_joint)[1]

    def responsibilities_and_scores(self, log_joint: Tensor) -> tuple[Tensor, GMMScores]:
        """Return the softmax of (..., K) log-joints and their scores, in one pass (gmm_head)."""
        kernel = self.annealing_kernel(log_joint.dtype, log_joint.device)
        resp, *scores = gmm_head.responsibilities_and_scores(log_joint, kernel)
        return resp, GMMScores(*scores)

    def sample(
        self,
        control: Float[Tensor, "N H W K"],
        *,
        generator: torch.Generator | None = None,
        top_s: int | None = None,
        noise_divisor: float | None = None,
        noise_at_bound: bool = False,
        expected: bool = False,
    ) -> Float[Tensor, "N H W C"]:
        """Draw one component per position from ``control`` and emit its mean (plus noise).

        Parameters
        ----------
        control : Tensor, shape (N, H, W, K)
            Non-negative scores of the components (negative entries count as 0).
        generator : torch.Generator, optional
            Source of randomness.
        top_s : int, optional
            Keep only the ``top_s`` largest entries of ``control`` (ties kept).
        noise_divisor : float, optional
            Add Gaussian noise of standard deviation ``1 / (s * noise_divisor)``; ``None`` emits
            the means.
        noise_at_bound : bool
            Also add noise on dimensions whose precision sits at the upper bound (by default
            they get none: in images those are constant background pixels).
        expected : bool
            Emit the control-weighted average of the component means instead of drawing
            one (no noise): the conditional expectation, which minimises the squared error
            of a completion.
        """
        if expected:
            weights = expectation_weights(control, top_s)
            spec = "nhwk,hwkc->nhwc" if self.independent else "nhwk,kc->nhwc"
            return torch.einsum(spec, weights.to(self.means.dtype), self.means).to(control.dtype)
        rows = self.component_rows(self.draw(control, generator=generator, top_s=top_s))
        means = _gather_rows(self.means, rows)  # (N, H, W, C)
        if noise_divisor is None:
            return means.to(control.dtype)
        sqrt_prec = _gather_rows(self.sqrt_precisions, rows)  # only when there is noise
        noise = torch.randn(
            means.shape, generator=generator, dtype=means.dtype, device=means.device
        )
        noise = noise / (sqrt_prec * noise_divisor)
        if not noise_at_bound:
            at_bound = sqrt_prec >= SQRT_PRECISION_UPPER_BOUND * (1 - 1e-6)
            noise = torch.where(at_bound, torch.zeros_like(noise), noise)
        return (means + noise).to(control.dtype)

    def draw(
        self,
        control: Float[Tensor, "N H W K"],
        *,
        generator: torch.Generator | None = None,
        top_s: int | None = None,
    ) -> Tensor:
        """Return the component drawn at every position, shape (N, H, W) (see :meth:`sample`)."""
        n, h, w, k = control.shape
        if top_s == 1:  # draw_best keeps the maxima itself
            return draw_best(control.reshape(-1, k), generator=generator).reshape(n, h, w)
        kept = keep_top_s(control, top_s).reshape(-1, k)
        return draw_categorical(kept, generator=generator).reshape(n, h, w)

    def component_rows(self, chosen: Tensor) -> Tensor:
        """Return where each chosen component's parameters are among the rows of a parameter.

        ``param.reshape(-1, C)[rows]`` is the chosen component's row at every position, for
        ``param`` the means or the square-root precisions: ``chosen`` itself when the layer
        is shared, offset by ``K`` per position when it is independent.
        """
        if not self.independent:
            return chosen
        _, h, w = chosen.shape
        positions = torch.arange(h * w, device=chosen.device).reshape(h, w)
        return chosen + positions * self.n_components

    def _checked(self, log_joint: Tensor) -> Tensor:
        # A position where every component has -inf (or NaN) log-joint has no responsibilities.
        if not torch.is_grad_enabled() and bool(all_neg_inf_rows(log_joint).any()):
            warnings.warn(
                f"{self.spec}: some positions have no finite log-joint (all components -inf or "
                "NaN); responsibilities there are NaN. Check the input for NaN/Inf pixels.",
                NumericalWarning,
                stacklevel=3,
            )
        return log_joint

    def extra_repr(self) -> str:
        """Return the spec token."""
        return f"G({self.n_components},indep)" if self.independent else f"G({self.n_components})"
