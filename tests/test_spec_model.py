import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dcgmm import DCGMM, PRESETS, SpecError, format_spec, parse_spec
from dcgmm.spec import ClassifierSpec, FoldingSpec, GMMSpec, PoolingSpec

positive = st.integers(1, 30)
layer_specs = st.one_of(
    st.builds(
        FoldingSpec, patch_size=st.tuples(positive, positive), stride=st.tuples(positive, positive)
    ),
    st.builds(PoolingSpec, kernel=positive, stride=positive, ceil_mode=st.booleans()),
    st.builds(GMMSpec, n_components=positive, independent=st.booleans()),
    st.builds(ClassifierSpec, n_classes=positive),
)


@settings(deadline=None)
@given(st.lists(layer_specs, min_size=1, max_size=6).map(tuple))
def test_spec_round_trip(layers):
    text = format_spec(layers)
    assert parse_spec(text) == layers
    assert format_spec(parse_spec(text)) == text


def test_parse_forms():
    assert parse_spec("F(3,1)-G(25,indep)-P(2,2,ceil)-F(2,3,1,2)-G(4)-C(10)") == (
        FoldingSpec(patch_size=(3, 3), stride=(1, 1)),
        GMMSpec(n_components=25, independent=True),
        PoolingSpec(kernel=2, stride=2, ceil_mode=True),
        FoldingSpec(patch_size=(2, 3), stride=(1, 2)),
        GMMSpec(n_components=4),
        ClassifierSpec(n_classes=10),
    )
    assert format_spec(parse_spec("E")) == PRESETS["E"]


@pytest.mark.parametrize(
    ("spec", "message", "caret_col"),
    [
        ("F(3,1)-X(25)", "unknown layer type 'X'", 7),
        ("F(3,1)-G(2a)", "positive integers", 7),
        ("F(3,1)G(25)", "expected '-'", 6),
        ("F(3)-G(25)", "F takes", 0),
        ("F(3,1)-", "expected a layer", 7),
    ],
)
def test_parse_errors_show_a_caret(spec, message, caret_col):
    with pytest.raises(SpecError, match=message) as info:
        parse_spec(spec)
    lines = str(info.value).splitlines()
    assert lines[-2].strip() == spec
    assert lines[-1].index("^") - 2 == caret_col


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_output_shape_matches_real_shapes(name):
    model = DCGMM.from_spec(name, (28, 28, 1))
    x = torch.rand(2, 28, 28, 1)
    for layer in model.layers:
        y = layer(x)
        assert tuple(y.shape[1:]) == layer.output_shape(tuple(x.shape[1:]))
        x = y
    assert model.output_shape == (1, 1, 49)


def test_paper_parameter_count_of_preset_a():
    model = DCGMM.from_spec("A", (28, 28, 1))
    assert model.n_centroid_entries() == 49 * 784 == 38_416
    assert model.n_parameters() == 2 * 38_416 + 49


def test_str_shows_the_shape_chain():
    text = str(DCGMM.from_spec("E", (28, 28, 1)))
    assert (
        "(28,28,1) -F(3,1)-> (26,26,9) -G(25)-> (26,26,25) -F(4,2)-> (12,12,400) -G(25)-> "
        "(12,12,25) -F(12,1)-> (1,1,3600) -G(49)-> (1,1,49)"
    ) in text
    assert "186,625 centroid entries" in text


def test_patch_that_does_not_fit_points_at_the_layer():
    with pytest.raises(
        SpecError,
        match=r"layer 5 F\(12,1\): patch 12x12 does not fit a 10x10 "
        r"input \(from layer 4 G\(25\)\)",
    ):
        DCGMM.from_spec("F(3,1)-G(25)-F(4,2)-G(25)-F(12,1)-G(49)", (24, 24, 1))


def test_non_square_k_fails_at_build_time():
    with pytest.raises(SpecError, match=r"layer 2 G\(20\).*perfect square"):
        DCGMM.from_spec("F(28,1)-G(20)", (28, 28, 1))


def test_classifier_must_be_last():
    with pytest.raises(SpecError, match="must be the last layer"):
        DCGMM.from_spec("F(28,1)-C(10)-G(4)", (28, 28, 1))


def test_non_square_images_and_kernels():
    model = DCGMM.from_spec("F(3,5,1,2)-G(9)-P(2,2)-F(2,1)-G(4)", (20, 30, 3))
    assert model.layers[0].out_shape == (18, 13, 45)
    assert model(torch.rand(2, 20, 30, 3)).shape == (2, 8, 5, 4)


def test_nchw_input_gets_a_hint():
    model = DCGMM.from_spec("A", (28, 28, 1))
    with pytest.raises(ValueError, match="looks like NCHW"):
        model(torch.rand(2, 1, 28, 28))


def test_no_gradient_crosses_layers():
    model = DCGMM.from_spec("F(3,1)-G(4)-F(2,2)-G(4)-C(3)", (6, 6, 1))
    x = torch.rand(5, 6, 6, 1)
    losses = model.layer_losses(x, torch.tensor([0, 1, 2, 0, 1]))
    losses[1].backward()  # the second GMM layer's loss
    gmm1, gmm2, clf = model.layers[1], model.layers[3], model.layers[4]
    assert all(p.grad is None for p in gmm1.parameters())
    assert all(p.grad is None for p in clf.parameters())
    assert all(p.grad is not None for p in gmm2.parameters())
    losses[2].backward()
    assert all(p.grad is None for p in gmm1.parameters())
