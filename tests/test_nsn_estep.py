"""The NSN fit's pruned E-step: its bounds hold, it decides as brute force, its sums stay exact.

Every sweep of a real fit (built-in MNIST digits) is checked against float64 brute-force
scores of every patch under every filter, for both kinds of bounds (per patch, per filter).
"""

import math

import pytest
import torch

from dcgmm import load_dataset
from dcgmm.baselines import nsn_estep
from dcgmm.baselines.nsn_bounds import FilterBounds, PatchBounds
from dcgmm.baselines.nsn_layer import NSNLayer

ROUNDING = 1e-3  # float32 scores of two filters closer than this may rank either way


@pytest.fixture(scope="module")
def digits() -> torch.Tensor:
    return load_dataset("mnist", split="train", limit=60).images


def exact_distances(layer: NSNLayer, patches: torch.Tensor) -> torch.Tensor:
    """|x - mu_k| (M, K) in float64, from differences (no cancellation)."""
    x, mu = patches.double(), layer.means.double()
    return (x[:, None, :] - mu[None, :, :]).square().sum(-1).sqrt()


def exact_scores(layer: NSNLayer, dist: torch.Tensor) -> torch.Tensor:
    sigmas = layer.sigmas.double()
    d = layer.means.shape[1]
    return -dist.square() / (2 * d * sigmas.square()) - sigmas.log() - 0.5 * math.log(2 * math.pi)


class Audit:
    """Wraps EStep.sweep: after each sweep, every patch is checked against brute force."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.sweeps = 0
        self.decided = 0
        self.kinds: set[str] = set()
        sweep = nsn_estep.EStep.sweep
        audit = self

        def checked(estep: nsn_estep.EStep) -> nsn_estep.Sweep:
            out = sweep(estep)
            audit.check(estep)
            audit.kinds.add(type(estep.bounds).__name__)
            audit.sweeps += 1
            audit.decided += out.decided_by_bounds
            return out

        monkeypatch.setattr(nsn_estep.EStep, "sweep", checked)

    def check(self, estep: nsn_estep.EStep) -> None:
        patches = torch.cat([p for _, p, _, _ in estep.batches])
        dist = exact_distances(estep.layer, patches)
        scores = exact_scores(estep.layer, dist)
        rows = torch.arange(patches.shape[0])
        best = estep.best
        assert bool((best >= 0).all())
        top = scores.max(-1).values
        own = scores[rows, best]
        # The best filter is a maximiser, up to float32 rounding of the full scoring.
        assert bool((own >= top - ROUNDING * (1 + top.abs())).all()), "a patch kept a loser"
        # Explained exactly when the best score clears tau (ties within rounding aside).
        clear = (top - estep.tau).abs() > ROUNDING
        explained = estep.assignment >= 0
        assert torch.equal(explained[clear], (top >= estep.tau)[clear])
        # The distance bound holds: dist >= |x - mu_best|.
        assert bool((estep.dist >= dist[rows, best] * (1 - 1e-6) - 1e-6).all()), "dist too small"
        others = scores.clone()
        others[rows, best] = -math.inf
        bounds = estep.bounds
        if isinstance(bounds, FilterBounds):  # every lower bound below the true distance
            lower = bounds.lower[:, : bounds.k].double()
            lower[rows, best] = 0.0
            assert bool((lower <= dist * (1 + 1e-6) + 1e-6).all()), "a lower bound is too high"
        else:  # the bound on the others above their best score
            assert isinstance(bounds, PatchBounds)
            worst = others.max(-1).values
            assert bool((bounds.others >= worst - ROUNDING * (1 + worst.abs())).all())
        self.check_sums(estep, patches)

    @staticmethod
    def check_sums(estep: nsn_estep.EStep, patches: torch.Tensor) -> None:
        """The incremental sums equal sums over the assignment, made afresh."""
        k = estep.layer.n_filters
        keep = estep.assignment >= 0
        index, x = estep.assignment[keep], patches[keep].double()
        ones = torch.ones(len(index), dtype=torch.float64)
        count = torch.zeros(k, dtype=torch.float64).index_add_(0, index, ones)
        sum_x = torch.zeros(k, x.shape[1], dtype=torch.float64).index_add_(0, index, x)
        sum_sq = torch.zeros(k, dtype=torch.float64).index_add_(0, index, x.square().sum(-1))
        assert torch.equal(estep.count, count)
        torch.testing.assert_close(estep.sum_x, sum_x, rtol=1e-12, atol=1e-9)
        torch.testing.assert_close(estep.sum_sq, sum_sq, rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize("kind", ["per-patch", "per-filter"])
def test_every_sweep_of_a_pruned_fit_agrees_with_brute_force(kind, digits, monkeypatch):
    # Which bounds a layer gets depends on its patch length; force each kind here.
    monkeypatch.setattr(nsn_estep, "FILTER_BOUNDS_MIN_DIM", 0 if kind == "per-filter" else 10**9)
    audit = Audit(monkeypatch)
    layer = NSNLayer((28, 28, 1), 4, 2)
    record = layer.fit(
        digits, tau=-0.93, max_iters=25, new_filters_per_iter=8,
        generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    assert audit.sweeps == len(record.n_filters) >= 10
    assert audit.kinds == {"FilterBounds" if kind == "per-filter" else "PatchBounds"}
    # The bounds did their job: most patches were settled without a full scoring.
    assert audit.decided > 0.5 * audit.sweeps * 60 * 13 * 13


@pytest.mark.parametrize("similarity", ["logpdf_per_dim", "logpdf"])
def test_a_pruned_fit_finds_the_filters_of_brute_force(similarity, digits):
    fits = []
    tau = -0.93 if similarity == "logpdf_per_dim" else -0.93 * 16
    for prune in (True, False):
        layer = NSNLayer((28, 28, 1), 4, 2, similarity=similarity)
        record = layer.fit(
            digits, tau=tau, max_iters=40, new_filters_per_iter=8,
            generator=torch.Generator().manual_seed(0), prune=prune,
        )  # fmt: skip
        fits.append((layer, record))
    (pruned, a), (brute, b) = fits
    assert a.n_filters == b.n_filters
    assert a.n_unexplained == b.n_unexplained
    assert sum(a.decided_fraction) > 0
    assert sum(b.decided_fraction) == 0
    torch.testing.assert_close(pruned.means, brute.means, rtol=0, atol=1e-6)
    torch.testing.assert_close(pruned.sigmas, brute.sigmas, rtol=0, atol=1e-6)
