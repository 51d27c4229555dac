"""The layer-contrast score against the float64 brute force of ``test_scores_oracles``."""

import pytest
import torch

from dcgmm import DCGMM
from dcgmm.evaluation.contrast import fit_layer_contrast

from .test_scores_oracles import brute_force_scores, mid_annealing_model


@pytest.fixture(scope="module")
def model():
    return mid_annealing_model()


def images(seed: int, n: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 28, 28, 1, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("kind", ["loglik", "max_component"])
def test_the_contrast_is_the_upper_z_score_minus_the_lower_one(model, kind):
    train, test = images(1, 9), images(2, 4)
    contrast = fit_layer_contrast(model, train, kind=kind, batch_size=4)
    assert (contrast.upper, contrast.lower, contrast.n_samples) == (4, 2, 9)
    per_image = {
        role: {n: s[kind].flatten(1).mean(1) for n, s in brute_force_scores(model, x).items()}
        for role, x in (("train", train), ("test", test))
    }
    z = {
        n: (per_image["test"][n] - per_image["train"][n].mean()) / per_image["train"][n].std()
        for n in (2, 4)
    }
    got = contrast.scores(model, test, batch_size=3)
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, z[4] - z[2], rtol=1e-9, atol=1e-9)
    # The two layers' z-scores differ here, so a swapped or dropped term would show.
    assert float((z[4] - z[2]).abs().min()) > 1e-3
    assert float(z[2].abs().min()) > 1e-3


def test_layers_are_named_as_everywhere_and_wrong_choices_are_refused(model):
    train = images(3, 5)
    assert fit_layer_contrast(model, train, upper="top", lower=2).lower == 2
    with pytest.raises(ValueError, match="lower layer must lie below the upper one; got lower 4"):
        fit_layer_contrast(model, train, upper=4, lower=4)
    with pytest.raises(ValueError, match="needs a GMM layer below layer 2"):
        fit_layer_contrast(model, train, upper=2)
    with pytest.raises(ValueError, match="layer 3 is not a GMM layer"):
        fit_layer_contrast(model, train, lower=3)
    with pytest.raises(ValueError, match="need at least 2 images"):
        fit_layer_contrast(model, train[:1])
    with pytest.raises(ValueError, match="do not vary"):
        fit_layer_contrast(model, train[:1].expand(3, -1, -1, -1))


def test_a_model_with_one_gmm_layer_has_nothing_to_contrast():
    flat = DCGMM.from_spec("F(28,1)-G(4)", (28, 28, 1))
    with pytest.raises(ValueError, match="nothing to contrast"):
        fit_layer_contrast(flat, images(4, 3).float())


def test_detect_outliers_refuses_a_contrast_of_another_score_kind(model):
    from dcgmm.evaluation.outlier_detection import detect_outliers

    contrast = fit_layer_contrast(model, images(5, 4), kind="max_component")
    with pytest.raises(ValueError, match="fitted on 'max_component' scores; kind is 'loglik'"):
        detect_outliers(model, images(6, 2), images(7, 2), {}, kind="loglik", contrast=contrast)
