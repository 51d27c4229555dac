"""ZCA whitening: exact inverse, whitened covariance, and ZCA's defining symmetry (float64)."""

import pytest
import torch

from dcgmm.preprocessing import Identity, Preprocessor, ZCAWhitening


def correlated_images(n: int = 500, seed: int = 0) -> torch.Tensor:
    """(n, 3, 3, 2) float64 images with strongly correlated, unequal-variance pixels."""
    g = torch.Generator().manual_seed(seed)
    mixing = torch.randn(2, 9, 9, generator=g, dtype=torch.float64)
    z = torch.randn(2, n, 9, generator=g, dtype=torch.float64)
    x = z @ mixing + torch.tensor([0.3, -1.0], dtype=torch.float64)[:, None, None]
    return x.reshape(2, n, 3, 3).permute(1, 2, 3, 0)


def test_zca_inverse_is_exact_and_whitened_covariance_is_shrunk_identity():
    x = correlated_images()
    zca = ZCAWhitening(epsilon_ratio=1e-2).fit(x)
    y = zca.transform(x)
    torch.testing.assert_close(zca.inverse(y), x, rtol=0, atol=1e-10)
    for c in range(2):
        flat = x[..., c].reshape(len(x), -1)
        centred = flat - flat.mean(0)
        cov = centred.T @ centred / len(x)
        values, u = torch.linalg.eigh(cov)
        eps = 1e-2 * values.mean()
        expected = u @ torch.diag(values / (values + eps)) @ u.T
        white = y[..., c].reshape(len(x), -1)
        got = (white - white.mean(0)).T @ (white - white.mean(0)) / len(x)
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-10)
        # ZCA, not PCA: the whitening matrix is symmetric, so a pixel stays at its place.
        torch.testing.assert_close(zca.whiten[c], zca.whiten[c].T, rtol=0, atol=1e-12)


def test_zca_with_tiny_epsilon_whitens_to_identity_and_round_trips_its_state():
    x = correlated_images(n=4000, seed=1)
    zca = ZCAWhitening(epsilon_ratio=1e-9).fit(x)
    white = zca.transform(x)[..., 1].reshape(len(x), -1)
    cov = (white - white.mean(0)).T @ (white - white.mean(0)) / len(x)
    torch.testing.assert_close(cov, torch.eye(9, dtype=torch.float64), rtol=0, atol=1e-6)
    other = ZCAWhitening()
    other.load_state_dict(zca.state_dict(), (3, 3, 2))
    torch.testing.assert_close(other.transform(x), zca.transform(x), rtol=0, atol=0)


def test_preprocessors_share_the_protocol_and_refuse_misuse():
    assert isinstance(ZCAWhitening(), Preprocessor)
    assert isinstance(Identity(), Preprocessor)
    x = torch.rand(4, 3, 3, 1)
    assert Identity().fit(x).transform(x) is x
    with pytest.raises(RuntimeError, match="not fitted"):
        ZCAWhitening().transform(x)
    with pytest.raises(ValueError, match="fitted on images of shape"):
        ZCAWhitening().fit(x).transform(torch.rand(4, 2, 2, 1))
    with pytest.raises(ValueError, match="epsilon_ratio"):
        ZCAWhitening(epsilon_ratio=0)


def test_fewer_images_than_pixels_takes_the_gram_route_to_the_same_whitening():
    g = torch.Generator().manual_seed(2)
    x = torch.rand(12, 5, 5, 2, generator=g, dtype=torch.float64)  # N = 12 < D = 25
    fast = ZCAWhitening(epsilon_ratio=1e-2).fit(x)
    for c in range(2):  # the D x D route, written out
        flat = x[..., c].reshape(12, -1)
        centred = flat - flat.mean(0)
        values, u = torch.linalg.eigh(centred.T @ centred / 12)
        values = values.clamp_min(0)
        eps = 1e-2 * values.mean()
        expected = u @ torch.diag((values + eps).rsqrt()) @ u.T
        torch.testing.assert_close(fast.whiten[c], expected, rtol=0, atol=1e-9)
        torch.testing.assert_close(fast.unwhiten[c], torch.linalg.inv(expected), rtol=0, atol=1e-9)
    torch.testing.assert_close(fast.inverse(fast.transform(x)), x, rtol=0, atol=1e-10)
