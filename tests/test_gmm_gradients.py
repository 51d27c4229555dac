"""Closed-form GMM gradients and the fused convolution stages, against autograd (float64)."""

import copy

import pytest
import torch

from dcgmm import DCGMM
from dcgmm._numerics import SIGMA_SOM_FLOOR
from dcgmm.generation.sharpening import Sharpening, _objective_and_grad, sharpening_chain
from dcgmm.layers import GMM, Folding
from dcgmm.layers import gmm_gradients as grads
from dcgmm.stages import FoldedGMMStage, IndependentGMMStage, build_stages, grouped_products
from dcgmm.stages import independent as independent_stage

from .test_gmm import random_gmm

PARAMS = ("means", "sqrt_precisions", "logits")


def autograd_grads(layer: GMM, x: torch.Tensor) -> dict[str, torch.Tensor]:
    for name in PARAMS:
        getattr(layer, name).grad = None
    _, loss = layer.forward_and_loss(x)
    loss.backward()
    return {name: getattr(layer, name).grad.clone() for name in PARAMS}


def closed_form_grads(layer: GMM, x: torch.Tensor) -> dict[str, torch.Tensor]:
    layer.forward_and_grad(x)
    return {name: getattr(layer, name).grad.clone() for name in PARAMS}


@pytest.mark.parametrize("independent", [False, True])
@pytest.mark.parametrize(
    ("objective", "sigma"),
    [("annealed", 1.3), ("annealed", 0.01), ("max_component", 0.01), ("loglik", 0.01)],
)
def test_closed_form_gradients_match_autograd(generator, independent, objective, sigma):
    layer = random_gmm((3, 2, 5), 9, generator, independent=independent)
    layer.objective = objective
    layer.set_sigma_som(sigma)
    x = torch.rand(7, 3, 2, 5, generator=generator, dtype=torch.float64)
    expected = autograd_grads(layer, x)
    got = closed_form_grads(layer, x)
    for name in PARAMS:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-10, atol=1e-12)
    resp, objective_mean = layer.forward_and_grad(x)
    ref_resp, ref_loss = layer.forward_and_loss(x)
    torch.testing.assert_close(resp, ref_resp.detach())
    torch.testing.assert_close(objective_mean, -ref_loss.detach())


def folded_pair(generator, input_shape, patch, stride, k):
    folding = Folding(input_shape, patch, stride)
    gmm = random_gmm(folding.out_shape, k, generator)
    return folding, gmm


@pytest.mark.parametrize(
    ("input_shape", "patch", "stride"),
    [((9, 9, 1), (3, 3), (1, 1)), ((8, 10, 3), (4, 2), (2, 3)), ((6, 6, 2), (6, 6), (1, 1))],
)
def test_folded_stage_equals_folding_then_gmm(generator, input_shape, patch, stride):
    folding, gmm = folded_pair(generator, input_shape, patch, stride, 4)
    gmm.set_sigma_som(0.9)
    stage = FoldedGMMStage(folding, gmm, 1)
    h = torch.rand(5, *input_shape, generator=generator, dtype=torch.float64)
    x = folding(h)
    torch.testing.assert_close(stage.log_joint(h), gmm.log_joint(x), rtol=1e-10, atol=1e-9)
    expected = autograd_grads(gmm, x)
    resp, objective = stage.train_step(h)
    for name in PARAMS:
        torch.testing.assert_close(getattr(gmm, name).grad, expected[name], rtol=1e-9, atol=1e-10)
    ref_resp, ref_loss = gmm.forward_and_loss(x)
    torch.testing.assert_close(resp, ref_resp.detach())
    torch.testing.assert_close(objective, -ref_loss.detach())


@pytest.mark.parametrize(
    ("objective", "sigma"),
    # annealed at 0.01: the radius floor, where the kernel is the identity (None)
    [("annealed", 0.9), ("annealed", 0.01), ("max_component", 0.9), ("loglik", 0.9)],
)
@pytest.mark.parametrize(
    ("input_shape", "patch", "stride"),
    [((9, 9, 1), (3, 3), (1, 1)), ((8, 10, 3), (4, 2), (2, 3)), ((6, 6, 2), (6, 6), (1, 1)),
     ((4, 5, 3), None, None)],
)  # fmt: skip
@pytest.mark.parametrize("k", [4, 16])
@pytest.mark.parametrize("one_row_chunks", [False, True])
@pytest.mark.parametrize("batch_last", [False, True])
def test_independent_stage_equals_folding_then_gmm(
    generator,
    monkeypatch,
    input_shape,
    patch,
    stride,
    objective,
    sigma,
    k,
    one_row_chunks,
    batch_last,
):
    if one_row_chunks:  # the windows cut and reduced one output row at a time
        monkeypatch.setattr(independent_stage, "WINDOW_CHUNK_BYTES", 1)
    folding = Folding(input_shape, patch, stride) if patch else None
    gmm = random_gmm(folding.out_shape if folding else input_shape, k, generator, independent=True)
    gmm.objective = objective
    gmm.set_sigma_som(sigma)
    kernel = gmm.annealing_kernel(torch.float64, torch.device("cpu"))
    assert (kernel is None) == (objective != "annealed" or sigma < 0.1)
    stage = IndependentGMMStage(folding, gmm, 1)
    stage.hands_over_batch_last = batch_last  # training computes batch last
    h = torch.rand(5, *input_shape, generator=generator, dtype=torch.float64)
    x = folding(h) if folding else h
    torch.testing.assert_close(stage.log_joint(h), gmm.log_joint(x), rtol=1e-10, atol=1e-9)
    for a, b in zip(stage.scores(h)[1], gmm.scores(x), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-9)
    torch.testing.assert_close(stage.forward(h), gmm(x), rtol=1e-10, atol=1e-12)
    expected = autograd_grads(gmm, x)
    resp, value = stage.train_step(h)
    for name in PARAMS:
        torch.testing.assert_close(getattr(gmm, name).grad, expected[name], rtol=1e-9, atol=1e-10)
    ref_resp, ref_loss = gmm.forward_and_loss(x)
    torch.testing.assert_close(resp, ref_resp.detach())
    torch.testing.assert_close(value, -ref_loss.detach())
    assert (resp.permute(1, 2, 3, 0) if batch_last else resp).is_contiguous()


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="the CPU float32 path")
@pytest.mark.parametrize("objective", ["annealed", "max_component", "loglik"])
def test_independent_stage_grouped_convolution_float32_matches_float64(generator, objective):
    """The float32 CPU path (oneDNN's grouped convolution) against the float64 products."""
    folding = Folding((10, 10, 6), (4, 4), (2, 2))  # D = 96 > K, windows overlap like E's
    gmm64 = random_gmm(folding.out_shape, 9, generator, independent=True)
    gmm64.objective = objective
    gmm64.set_sigma_som(0.9)
    gmm32 = copy.deepcopy(gmm64).float()
    stage64, stage32 = (
        IndependentGMMStage(folding, gmm64, 1),
        IndependentGMMStage(folding, gmm32, 1),
    )
    h = torch.rand(6, 10, 10, 6, generator=generator, dtype=torch.float64)
    assert grouped_products.onednn_applies(stage32._features(h.float()))
    expected = stage64.log_joint(h)
    got = stage32.log_joint(h.float()).double()
    assert (got - expected).abs().max() <= 1e-5 * expected.abs().max()
    _, value64, stats64 = stage64.objective_and_statistics(h)
    _, value32, stats32 = stage32.objective_and_statistics(h.float())
    torch.testing.assert_close(value32.double(), value64, rtol=1e-5, atol=0.0)
    for a, b in zip(stats32, stats64, strict=True):
        torch.testing.assert_close(a.double(), b, rtol=1e-4, atol=1e-6)


def test_build_stages_fuses_folding_with_the_gmm_above():
    model = DCGMM.from_spec("F(3,1)-G(4)-P(2,2)-F(2,1)-G(4,indep)-G(4,indep)-C(3)", (10, 10, 1))
    stages = build_stages(list(model.layers))
    kinds = [type(s).__name__ for s in stages]
    assert kinds == ["FoldedGMMStage", "LayerStage", "IndependentGMMStage",
                     "IndependentGMMStage", "LayerStage"]  # fmt: skip
    # only an independent stage below another hands its output over batch last
    assert [getattr(s, "hands_over_batch_last", None) for s in stages] == [
        None,
        None,
        True,
        False,
        None,
    ]
    assert [s.index for s in model.stages] == [1, 2, 4, 5, 6]
    flat = DCGMM.from_spec("F(10,1)-G(4)", (10, 10, 1))  # one window: a reshape, no convolution
    assert [type(s).__name__ for s in flat.stages] == ["LayerStage", "LayerStage"]


INDEPENDENT_E = "F(3,1)-G(25,indep)-F(4,2)-G(25,indep)-F(12,1)-G(49)"  # the recipes' E


@pytest.mark.parametrize("objective", ["annealed", "max_component", "loglik"])
def test_independent_stages_train_through_the_batch_last_hand_over(generator, objective):
    """Two independent stages in a row (the lower one hands over batch last) train as the
    layers do one by one: same outputs, objectives and gradients (float64)."""
    model = DCGMM.from_spec("F(3,1)-G(9,indep)-F(2,2)-G(4,indep)-F(3,1)-G(4)", (8, 8, 2))
    model = model.double()
    for layer in model.layers:
        if isinstance(layer, GMM):
            layer.objective = objective
            layer.set_sigma_som(0.9)
    assert model.stages[0].hands_over_batch_last
    x = torch.rand(6, 8, 8, 2, generator=generator, dtype=torch.float64)
    h_ref, h = x, x
    for stage in model.stages:
        if stage.gmm is None:  # a lone folding
            h, h_ref = stage.forward(h), stage.forward(h_ref)
            continue
        for layer in stage.layers[:-1]:  # the folding below the GMM layer
            h_ref = layer(h_ref)
        gmm = stage.gmm
        expected = autograd_grads(gmm, h_ref)
        ref_resp, ref_loss = gmm.forward_and_loss(h_ref)
        h, value = stage.train_step(h, None)
        for name in PARAMS:
            torch.testing.assert_close(getattr(gmm, name).grad, expected[name], rtol=1e-9,
                                       atol=1e-10)  # fmt: skip
        torch.testing.assert_close(h, ref_resp.detach())
        torch.testing.assert_close(value, -ref_loss.detach())
        h_ref = ref_resp.detach()


@pytest.mark.parametrize("preset", ["A", "C", "E", "G", INDEPENDENT_E])
def test_model_fast_path_matches_layer_by_layer(preset, mnist_small):
    train, _ = mnist_small
    model = DCGMM.from_spec(preset, (28, 28, 1), generator=torch.Generator().manual_seed(0))
    model = model.double()
    x = train.images[:20].double()
    fast = model.scores(x)
    h = x
    for layer in model.layers:
        if isinstance(layer, GMM):
            for a, b in zip(fast.pop(0), layer.scores(h), strict=True):
                torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-8)
        h = layer(h)
    torch.testing.assert_close(model(x), h, rtol=1e-9, atol=1e-10)


def test_folded_stage_float32_log_joint_within_stated_tolerance(mnist_small):
    train, _ = mnist_small
    model = DCGMM.from_spec("E", (28, 28, 1), generator=torch.Generator().manual_seed(0))
    folding, gmm = model.layers[0], model.layers[1]
    x = train.images[:50]
    got = FoldedGMMStage(folding, gmm, 1).log_joint(x)
    expected = gmm.double().log_joint(folding(x.double()))
    # Stated tolerance: 1e-5 of the largest log-joint magnitude (float32 has ~6e-8 ulps; the
    # expansion sums D = 9 terms of that size).
    assert (got.double() - expected).abs().max() <= 1e-5 * expected.abs().max()


@pytest.mark.parametrize(
    ("objective", "sigma"),
    # the hard objectives' gradient rows are looked up by winner: kernel rows (annealed,
    # above the floor) or identity rows (at the floor, max-component); loglik's are dense
    [("annealed", 0.9), ("annealed", SIGMA_SOM_FLOOR), ("max_component", 0.9), ("loglik", 0.9)],
)
@pytest.mark.parametrize(
    ("input_shape", "patch", "stride"),
    # a grey input (2 channels: [h^2, h]) takes the shifted products, a colour one oneDNN's
    [((9, 9, 1), (3, 3), (1, 1)), ((9, 11, 1), (3, 4), (2, 3)), ((8, 10, 3), (4, 2), (2, 3))],
)
def test_folded_stage_input_gradient_matches_autograd(generator, input_shape, patch, stride,
                                                      objective, sigma):  # fmt: skip
    folding, gmm = folded_pair(generator, input_shape, patch, stride, 4)
    gmm.objective = objective
    gmm.set_sigma_som(sigma)
    h = torch.rand(3, *input_shape, generator=generator, dtype=torch.float64)
    value, grad = FoldedGMMStage(folding, gmm, 1).objective_and_input_gradient(h)
    hg = h.clone().requires_grad_(True)
    expected = gmm.objective_map(gmm.log_joint(folding(hg))).flatten(1).mean(1)
    (expected_grad,) = torch.autograd.grad(expected.sum(), hg)
    torch.testing.assert_close(value, expected.detach(), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-9, atol=1e-12)


# 4 samples: 24 rows, more than the 9 components (the hard objectives gather by winner);
# 1 sample: 6 rows, fewer (products with R)
@pytest.mark.parametrize("batch", [4, 1])
@pytest.mark.parametrize("independent", [False, True])
@pytest.mark.parametrize(
    ("objective", "sigma"),
    [("annealed", 1.3), ("annealed", SIGMA_SOM_FLOOR), ("max_component", 1.3), ("loglik", 1.3)],
)
def test_gmm_input_gradient_matches_autograd(generator, independent, objective, sigma, batch):
    layer = random_gmm((3, 2, 5), 9, generator, independent=independent)
    layer.objective = objective
    layer.set_sigma_som(sigma)
    x = torch.rand(batch, 3, 2, 5, generator=generator, dtype=torch.float64)
    value, grad = layer.objective_and_input_gradient(x)
    xg = x.clone().requires_grad_(True)
    expected = layer.objective_map(layer.log_joint(xg)).flatten(1).mean(1)
    (expected_grad,) = torch.autograd.grad(expected.sum(), xg)
    torch.testing.assert_close(value, expected.detach(), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("target", ["next", "top"])
@pytest.mark.parametrize(
    "spec",
    [
        "F(2,2)-G(4)-P(2,2)-F(2,1)-G(9)",  # fused, pooling below a fused pair, one window
        "F(3,1)-G(4,indep)-F(4,2)-G(9)",  # an independent target, folding through autograd
    ],
)
def test_sharpening_gradient_matches_autograd(generator, spec, target):
    model = DCGMM.from_spec(spec, (12, 12, 1), generator=generator).double()
    layers = list(model.layers)
    config = Sharpening(target=target, weight=0.3)
    for _, gmm in model.gmm_layers():
        gmm.set_sigma_som(0.9)
    chains = [sharpening_chain(layers, i, config) for i in range(len(layers))]
    assert sum(bool(chain) for chain in chains) >= 2
    for chain in filter(None, chains):
        x0 = torch.rand(3, *chain[0].input_shape, generator=generator, dtype=torch.float64)
        x = x0 + 0.05 * torch.rand(x0.shape, generator=generator, dtype=torch.float64)
        value, grad = _objective_and_grad(chain, x, x0, config)
        xg = x.clone().requires_grad_(True)
        h = xg
        for layer in chain[:-1]:
            h = layer(h)
        top = chain[-1]
        expected = top.objective_map(top.log_joint(h)).flatten(1).mean(1)
        expected = expected - 0.3 * (xg - x0).square().flatten(1).mean(1)
        (expected_grad,) = torch.autograd.grad(expected.sum(), xg)
        torch.testing.assert_close(value, expected.detach(), rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(grad, expected_grad, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize(
    ("objective", "sigma"), [("annealed", 0.9), ("annealed", 0.01), ("max_component", 0.9),
                             ("loglik", 0.9)],
)  # fmt: skip
def test_objective_gradient_with_components_second_to_last(generator, objective, sigma):
    """The (..., K, N) layout gives the (..., N, K) layout's values and gradient, transposed."""
    gmm = random_gmm((1, 1, 3), 9, generator)
    gmm.set_sigma_som(sigma)
    kernel = gmm.annealing_kernel(torch.float64, torch.device("cpu"))
    rows_last = torch.randn(4, 7, 9, generator=generator, dtype=torch.float64)  # (L, N, K)
    resp = torch.softmax(rows_last, -1)
    ref = grads.objective_gradient(rows_last, objective, kernel, resp, rows=50)
    got = grads.objective_gradient(
        rows_last.transpose(1, 2).contiguous(), objective, kernel,
        resp.transpose(1, 2).contiguous(), rows=50, components_dim=-2,
    )  # fmt: skip
    torch.testing.assert_close(got.values, ref.values)
    torch.testing.assert_close(got.d_log_joint, ref.d_log_joint.transpose(1, 2))
    torch.testing.assert_close(got.weight, ref.weight)
    with pytest.raises(ValueError, match="components_dim must be -1 or -2"):
        grads.objective_gradient(rows_last, objective, kernel, resp, components_dim=0)
