"""Contract suite over every layer class, plus the folding and pooling laws."""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from dcgmm.layers import GMM, Folding, LinearClassifier, MaxPooling
from dcgmm.layers.pooling import pooled_size

from .reference import naive_fold


def make_layers():
    return [
        Folding((7, 6, 2), (3, 2), (2, 1)),
        MaxPooling((7, 6, 2), 2, 2),
        MaxPooling((7, 6, 2), 3, 2, ceil_mode=True),
        GMM((7, 6, 2), 4),
        GMM((7, 6, 2), 4, independent=True),
        LinearClassifier((7, 6, 2), 3),
    ]


LAYER_IDS = ["folding", "pool", "pool-ceil", "gmm", "gmm-indep", "classifier"]


@pytest.mark.parametrize("layer", make_layers(), ids=LAYER_IDS)
def test_forward_shape_dtype_and_no_mutation(layer):
    x = torch.rand(3, 7, 6, 2)
    before = x.clone()
    out = layer(x)
    assert out.shape == (3, *layer.output_shape((7, 6, 2)))
    assert out.dtype == x.dtype
    assert torch.equal(x, before)


@pytest.mark.parametrize("layer", make_layers(), ids=LAYER_IDS)
def test_batch_equals_rows_one_at_a_time(layer):
    x = torch.rand(4, 7, 6, 2)
    rows = torch.cat([layer(x[i : i + 1]) for i in range(4)])
    torch.testing.assert_close(layer(x), rows)


@pytest.mark.parametrize("layer", make_layers(), ids=LAYER_IDS)
def test_sample_has_input_shape_and_is_deterministic(layer):
    control = torch.rand(3, *layer.out_shape)
    a = layer.sample(control, generator=torch.Generator().manual_seed(5))
    b = layer.sample(control, generator=torch.Generator().manual_seed(5))
    assert a.shape == (3, 7, 6, 2)
    assert torch.equal(a, b)


@pytest.mark.parametrize("layer", make_layers(), ids=LAYER_IDS)
def test_float64_is_preserved(layer):
    layer = layer.double()
    assert layer(torch.rand(2, 7, 6, 2, dtype=torch.float64)).dtype == torch.float64


@pytest.mark.parametrize(
    ("patch", "stride"),
    [((3, 2), (2, 3)), ((9, 7), (1, 1)), ((6, 5), (4, 3))],  # many windows, one (all), one
)
def test_folding_matches_naive_loops(patch, stride):
    x = torch.rand(2, 9, 7, 3, dtype=torch.float64)
    layer = Folding((9, 7, 3), patch, stride)
    torch.testing.assert_close(layer(x), naive_fold(x, *patch, *stride))


@settings(deadline=None, max_examples=60)
@given(
    h=st.integers(1, 9),
    w=st.integers(1, 9),
    c=st.integers(1, 3),
    fy=st.integers(1, 4),
    fx=st.integers(1, 4),
    sy=st.integers(1, 4),
    sx=st.integers(1, 4),
)
def test_folding_sample_inverts_forward_on_covered_positions(h, w, c, fy, fx, sy, sx):
    assume(fy <= h and fx <= w)  # a patch that does not fit is refused: tested elsewhere
    layer = Folding((h, w, c), (fy, fx), (sy, sx))
    x = torch.rand(2, h, w, c, dtype=torch.float64)
    back = layer.sample(layer(x))
    covered = layer._coverage > 0
    torch.testing.assert_close(back[:, covered], x[:, covered])
    assert (back[:, ~covered] == 0).all()


def test_folding_sample_averages_overlaps():
    layer = Folding((3, 1, 1), (2, 1), (1, 1))  # windows rows {0,1} and {1,2}
    control = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).reshape(1, 2, 1, 2)
    out = layer.sample(control).flatten()
    torch.testing.assert_close(out, torch.tensor([1.0, (2.0 + 3.0) / 2, 4.0]))


@pytest.mark.parametrize(
    ("size", "kernel", "stride", "floor", "ceil"),
    [(21, 2, 2, 10, 11), (26, 2, 2, 13, 13), (5, 2, 2, 2, 3), (7, 3, 2, 3, 3), (8, 3, 3, 2, 3)],
)
def test_pooling_sizes_both_modes(size, kernel, stride, floor, ceil):
    assert pooled_size(size, kernel, stride, False) == floor
    assert pooled_size(size, kernel, stride, True) == ceil
    for ceil_mode, expected in ((False, floor), (True, ceil)):
        layer = MaxPooling((size, size, 1), kernel, stride, ceil_mode=ceil_mode)
        assert layer(torch.rand(1, size, size, 1)).shape[1] == expected


def test_pooling_forward_is_the_window_maximum():
    x = torch.arange(25.0).reshape(1, 5, 5, 1)
    out = MaxPooling((5, 5, 1), 2, 2, ceil_mode=True)(x)[0, :, :, 0]
    assert out.tolist() == [[6, 8, 9], [16, 18, 19], [21, 23, 24]]


@pytest.mark.parametrize(
    ("kernel", "stride", "ceil"),
    [(2, 2, False), (2, 2, True), (3, 2, False), (2, 3, False), (3, 1, True)],
)
def test_pooling_sample_is_nearest_neighbour(kernel, stride, ceil):
    size = 7
    layer = MaxPooling((size, size, 1), kernel, stride, ceil_mode=ceil)
    ho = layer.out_shape[0]
    control = torch.rand(1, ho, ho, 1, dtype=torch.float64)
    up = layer.sample(control.float()).double()[0, :, :, 0]
    for y in range(size):
        for x in range(size):
            rows = [o for o in range(ho) if o * stride <= y < o * stride + kernel]
            cols = [p for p in range(ho) if p * stride <= x < p * stride + kernel]
            rows = rows or [min(y // stride, ho - 1)]
            cols = cols or [min(x // stride, ho - 1)]
            expected = control[0, rows][:, cols].mean()
            assert abs(float(up[y, x]) - float(expected)) < 1e-6


def test_pooling_sample_is_laid_out_as_every_layer_reads_it():
    # NHWC contiguous: einsum's own layout (channels strided) made the pooling and folding
    # above it several times slower in every sharpening step
    layer = MaxPooling((21, 21, 49), 2, 2, ceil_mode=True)
    assert layer.sample(torch.rand(3, 11, 11, 49)).is_contiguous()


def test_pooling_sample_then_forward_recovers_control_without_overlap():
    layer = MaxPooling((6, 6, 2), 2, 2)
    control = torch.rand(3, 3, 3, 2)
    torch.testing.assert_close(layer(layer.sample(control)), control)


def test_classifier_inversion_has_the_input_shape(generator):
    # Its values (the exact inversion): tests/test_sampling_oracles.py.
    layer = LinearClassifier((3, 3, 4), 5, generator=generator)
    t = LinearClassifier.soft_one_hot(torch.tensor([0, 3]), 5, dtype=torch.float32)
    assert t[0, 0, 0].tolist() == pytest.approx([0.95, 0.0125, 0.0125, 0.0125, 0.0125])
    assert t[1, 0, 0].tolist() == pytest.approx([0.0125, 0.0125, 0.0125, 0.95, 0.0125])
    assert layer.sample(t).shape == (2, 3, 3, 4)


def test_classifier_needs_labels():
    layer = LinearClassifier((1, 1, 4), 3)
    with pytest.raises(ValueError, match="needs labels"):
        layer.forward_and_loss(torch.rand(2, 1, 1, 4))


@pytest.mark.parametrize("ceil", [False, True])
def test_pooled_sizes_are_torchs_for_every_small_geometry(ceil):
    for size in range(1, 13):
        for kernel in range(1, min(size, 4) + 1):
            for stride in range(1, 5):
                x = torch.zeros(1, 1, size, size)
                expected = F.max_pool2d(x, kernel, stride, ceil_mode=ceil).shape[-1]
                assert pooled_size(size, kernel, stride, ceil) == expected, (size, kernel, stride)


@pytest.mark.parametrize("ceil", [False, True])
def test_pooling_sample_float64_matches_a_loop_over_windows(ceil):
    layer = MaxPooling((7, 5, 2), 3, 2, ceil_mode=ceil)
    ho, wo, _ = layer.out_shape
    control = torch.rand(2, ho, wo, 2, dtype=torch.float64, generator=torch.Generator())
    expected = torch.zeros(2, 7, 5, 2, dtype=torch.float64)
    for y in range(7):
        for x in range(5):
            rows = [o for o in range(ho) if o * 2 <= y < o * 2 + 3] or [min(y // 2, ho - 1)]
            cols = [p for p in range(wo) if p * 2 <= x < p * 2 + 3] or [min(x // 2, wo - 1)]
            expected[:, y, x] = sum(control[:, o, p] for o in rows for p in cols) / (
                len(rows) * len(cols)
            )
    out = layer.sample(control)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
    # Shape-derived helpers are not saved with the model: checkpoints hold parameters only.
    assert list(layer.state_dict()) == []


def test_layer_spec_tokens():
    assert MaxPooling((8, 8, 1), 2, 2).spec == "P(2,2)"
    assert MaxPooling((8, 8, 1), 2, 2, ceil_mode=True).spec == "P(2,2,ceil)"
    assert Folding((9, 9, 1), (3, 3), (1, 1)).spec == "F(3,1)"
    assert Folding((9, 9, 1), (3, 3), (1, 2)).spec == "F(3,3,1,2)"
    assert Folding((9, 9, 1), (3, 2), (2, 2)).spec == "F(3,2,2,2)"
    with pytest.raises(ValueError, match="kernel 4 does not fit a 3x8 input"):
        MaxPooling((3, 8, 1), 4, 1)
    with pytest.raises(ValueError, match="kernel 4 does not fit a 8x3 input"):
        MaxPooling((8, 3, 1), 4, 1)


def test_classifier_weights_start_as_a_normal_truncated_at_two_standard_deviations():
    # std 1/sqrt(D_in), cut at +-2 std: the truncated normal's std is 0.8796 of it (a uniform
    # on the same interval would be 1.1547 of it, an untruncated normal 1).
    layer = LinearClassifier((28, 28, 1), 10, generator=torch.Generator().manual_seed(0))
    w = layer.weight.detach().double().flatten()
    std = 1 / 784**0.5
    assert float(w.abs().max()) <= 2 * std
    assert float(w.std()) == pytest.approx(0.8796 * std, rel=0.03)  # 7,840 draws: 4 sd
    assert float(w.mean()) == pytest.approx(0.0, abs=4 * 0.88 * std / 7840**0.5)
    assert torch.equal(layer.bias, torch.zeros_like(layer.bias))
