"""The common image-model interface: every adapter does the same things on real digits."""

import math

import pytest
import torch

from dcgmm import DCGMM
from dcgmm.baselines.adapters import NSNModel, VAEModel
from dcgmm.baselines.nsn import NSN
from dcgmm.baselines.vae import dlgmm
from dcgmm.evaluation.outliers import sample_scores
from dcgmm.generation.inpainting import inpaint, make_mask
from dcgmm.generation.sampling import sample
from dcgmm.interfaces.image_model import (
    DCGMMModel,
    DensityModel,
    FlatGMMModel,
    ImageModel,
    as_image_model,
)


def fitted_models(train: torch.Tensor) -> dict[str, ImageModel]:
    g = torch.Generator().manual_seed(0)
    deep = as_image_model(DCGMM.from_spec("F(3,1)-G(9)-P(2,2)-F(13,1)-G(9)", (28, 28, 1)))
    flat = as_image_model(DCGMM.from_spec("F(28,1)-G(9)", (28, 28, 1)))
    nsn = as_image_model(NSN((28, 28, 1), "28x28"))
    vae = as_image_model(dlgmm(n_components=2, latent_dim=4, hidden=32, generator=g))
    deep.fit(train, batch_size=50, epochs=1)
    flat.fit(train, batch_size=50, epochs=1)
    nsn.fit(train[:60], taus=[-1.0, 0.5, 0.5], max_filters=6, max_iters=2, generator=g)
    vae.fit(train, max_epochs=1, seed=0)
    return {"deep": deep, "flat": flat, "nsn": nsn, "vae": vae}


@pytest.fixture(scope="module")
def models(mnist_small):
    train, _ = mnist_small
    return fitted_models(train.images[:300])


def test_adapters_are_chosen_by_model_kind_and_only_densities_claim_log_prob(models):
    assert type(models["deep"]) is DCGMMModel
    assert type(models["flat"]) is FlatGMMModel
    assert type(models["nsn"]) is NSNModel
    assert type(models["vae"]) is VAEModel
    for model in models.values():
        assert isinstance(model, ImageModel)
        assert model.image_shape == (28, 28, 1)
    assert {name for name, m in models.items() if isinstance(m, DensityModel)} == {"flat", "vae"}
    with pytest.raises(TypeError, match="no image-model adapter"):
        as_image_model(object())
    with pytest.raises(ValueError, match="not a flat GMM"):
        FlatGMMModel(models["deep"].model)


def seeded() -> torch.Generator:
    return torch.Generator().manual_seed(1)


def library_calls(model: ImageModel, x: torch.Tensor, missing: torch.Tensor) -> dict:
    """What each adapter method must return: the model's own library call, made by hand."""
    inner = model.model
    if isinstance(model, DCGMMModel):
        top = [i + 1 for i, _ in inner.gmm_layers()][-1]
        h = x
        for layer in list(inner.layers)[:top]:
            h = layer(h)
        return {
            "score": sample_scores(inner, x, layer=top, kind="loglik"),
            "sample": sample(inner, 5, config=model.sampling, generator=seeded()),
            "inpaint": inpaint(inner, x, missing, config=model.inpainting, generator=seeded()),
            "embed": h.reshape(len(x), -1),
        }
    if isinstance(model, NSNModel):
        maps = inner.maps(x)
        return {
            "score": inner.nsn_layers[-1].max_component_log_likelihood(maps[-2]).flatten(1).mean(1),
            "sample": inner.sample(5, settings=model.settings, generator=seeded()),
            "inpaint": inner.inpaint(x, missing, model.inpaint_settings, generator=seeded()),
            "embed": maps[-1].reshape(len(x), -1),
        }
    flat = x.reshape(len(x), -1)
    return {
        "score": inner.log_prob(flat, n_samples=model.n_samples,
                                generator=torch.Generator().manual_seed(model.seed)),
        "sample": inner.sample(5, generator=seeded()).reshape(5, 28, 28, 1),
        "inpaint": inner.inpaint(flat, missing.reshape(len(x), -1), n_iters=model.inpaint_iters,
                                 generator=seeded()).reshape(x.shape),
        "embed": inner.embed(flat, mode="argmax_component_mean"),
    }  # fmt: skip


@pytest.mark.parametrize("name", ["deep", "flat", "nsn", "vae"])
def test_every_adapter_scores_samples_inpaints_and_embeds(models, mnist_small, name):
    model = models[name]
    _, test = mnist_small
    x = test.images[:8]
    missing = make_mask("right-half", (8, 28, 28, 1))
    expected = library_calls(model, x, missing)
    scores = model.outlier_score(x)
    assert scores.shape == (8,)
    torch.testing.assert_close(scores, expected["score"])
    drawn = model.sample(5, generator=seeded())
    assert drawn.shape == (5, 28, 28, 1)
    torch.testing.assert_close(drawn, expected["sample"])
    filled = model.inpaint(x, missing, generator=seeded())
    assert torch.equal(filled[~missing], x[~missing])
    torch.testing.assert_close(filled, expected["inpaint"])
    features = model.embed(x)
    assert features.ndim == 2
    torch.testing.assert_close(features, expected["embed"])


def test_nchw_input_is_refused_with_a_hint(models, mnist_small):
    _, test = mnist_small
    nchw = test.images[:4].permute(0, 3, 1, 2)
    for model in models.values():
        with pytest.raises(ValueError, match="NCHW"):
            model.outlier_score(nchw)


def test_flat_gmm_log_prob_is_the_mixture_density_float64(models, mnist_small):
    flat = models["flat"]
    assert isinstance(flat, FlatGMMModel)
    gmm = flat.model.layers[1]
    x = mnist_small[1].images[:6].reshape(6, -1).double()
    means = gmm.means.detach().double()  # (K, D)
    precisions = gmm.precisions.detach().double()
    log_pi = torch.log_softmax(gmm.logits.detach().double(), -1)
    log_n = 0.5 * (
        precisions.log() - math.log(2 * math.pi) - precisions * (x[:, None] - means) ** 2
    ).sum(-1)
    expected = torch.logsumexp(log_pi + log_n, -1)
    got = flat.log_prob(mnist_small[1].images[:6]).double()
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-2)


def test_vae_log_prob_is_seeded_and_scores_digits_above_noise(models, mnist_small):
    vae = models["vae"]
    x = mnist_small[1].images[:16]
    # Reseeded on every call (the value itself: test_every_adapter_scores_...).
    assert torch.equal(vae.outlier_score(x), vae.outlier_score(x))
    noise = torch.rand(16, 28, 28, 1, generator=torch.Generator().manual_seed(0))
    assert float(vae.outlier_score(x).mean()) > float(vae.outlier_score(noise).mean())


def test_bad_pixels_are_refused_by_every_adapter_but_hidden_ones_may_be_nan(models, mnist_small):
    x = mnist_small[1].images[:4].clone()
    missing = make_mask("right-half", (4, 28, 28, 1))
    for model in models.values():
        with pytest.raises(ValueError, match="NaN"):
            model.outlier_score(x.masked_fill(missing, float("nan")))
        with pytest.raises(ValueError, match=r"\[0, 1\]"):
            model.embed(x * 3)
        filled = model.inpaint(x.masked_fill(missing, float("nan")), missing)
        assert bool(torch.isfinite(filled).all())
