"""Save -> load gives the same model: identical scores, samples (same generator), completions
and training continuation, for a trained model of every kind (DCGMM deep and flat, NSN, the
three VAEs, the scikit-learn estimator).

Every model here is trained first, and mid-annealing where it anneals, so that a parameter or
buffer the checkpoint forgot (a radius, a weight, a filter count) changes a number.
"""

import pickle

import numpy as np
import pytest
import torch

from dcgmm import DCGMM, TrainConfig, Trainer
from dcgmm.baselines.nsn import NSN
from dcgmm.baselines.runs import load_baseline, save_baseline
from dcgmm.baselines.vae import dldpmm, dlgmm, gauss_vae
from dcgmm.evaluation.outliers import SCORE_KINDS, position_scores
from dcgmm.generation.inpainting import inpaint, make_mask
from dcgmm.generation.sampling import SamplingConfig, sample
from dcgmm.generation.sharpening import Sharpening
from dcgmm.interfaces.image_model import as_image_model
from dcgmm.io.run_files import write_config
from dcgmm.training.checkpoint import load_model

DEEP = "F(7,7)-G(4,indep)-F(4,1)-G(9)-C(10)"
FLAT = "F(28,1)-G(9)"


def trainer(spec, train, run_dir, steps=120):
    model = DCGMM.from_spec(spec, (28, 28, 1), generator=torch.Generator().manual_seed(0))
    config = TrainConfig(steps=steps, annealing_window=10, classifier_lr=0.2, layer_delay=0.1,
                         checkpoint_every=40, log_every=20, seed=3)  # fmt: skip
    labels = train.labels if spec.endswith("C(10)") else None
    write_config(run_dir, {"spec": spec, "input_shape": [28, 28, 1], "objective": "annealed"})
    return Trainer(model, config, train.images, labels, run_dir=run_dir)


def assert_same_dcgmm_outputs(a: DCGMM, b: DCGMM, images: torch.Tensor) -> None:
    for kind in SCORE_KINDS:
        got, want = position_scores(b, images, kind=kind), position_scores(a, images, kind=kind)
        for layer in want:
            assert torch.equal(got[layer], want[layer]), (kind, layer)
    config = SamplingConfig(top_s=2, noise_divisor=5.0, sharpening=Sharpening(iterations=3))
    drawn = [
        sample(m, 6, config=config, generator=torch.Generator().manual_seed(9)) for m in (a, b)
    ]
    assert torch.equal(drawn[0], drawn[1])
    missing = make_mask("center", tuple(images.shape))
    filled = [inpaint(m, images, missing, config=config, generator=torch.Generator().manual_seed(9))
              for m in (a, b)]  # fmt: skip
    assert torch.equal(filled[0], filled[1])
    if a.classifier is not None:
        assert torch.equal(a.predict_proba(images), b.predict_proba(images))
        classes = torch.arange(6) % 10
        drawn = [sample(m, 6, classes=classes, generator=torch.Generator().manual_seed(2))
                 for m in (a, b)]  # fmt: skip
        assert torch.equal(drawn[0], drawn[1])


@pytest.mark.parametrize("spec", [DEEP, FLAT])
def test_a_dcgmm_run_loads_as_the_model_that_was_saved_and_continues_bit_for_bit(
    spec, mnist_small, tmp_path
):
    train, test = mnist_small
    whole = trainer(spec, train, tmp_path / "whole")
    whole.run()
    halves = trainer(spec, train, tmp_path / "halves")
    halves.run(stop_at=50)  # between logs and windows: partial sums must be saved too
    saved = halves.model
    radii = [g.sigma_som_value for _, g in saved.gmm_layers()]
    assert all(r > 0.02 for r in radii), radii  # mid-annealing: the radius matters
    loaded = load_model(tmp_path / "halves")
    assert_same_dcgmm_outputs(saved, loaded, test.images[:20])

    # The checkpoint's model in a new trainer, as `dcgmm train --resume` builds it.
    labels = train.labels if loaded.classifier is not None else None
    resumed = Trainer(loaded, whole.config, train.images, labels, run_dir=tmp_path / "halves")
    resumed.resume()
    assert resumed.step == 50
    resumed.run()
    for (name, p), (_, q) in zip(
        whole.model.state_dict().items(), resumed.model.state_dict().items(), strict=True
    ):
        assert torch.equal(p, q), name
    assert resumed.state_dict() == whole.state_dict()
    logged = [(tmp_path / run / "metrics.jsonl").read_text() for run in ("whole", "halves")]
    assert logged[0] == logged[1]  # objectives, radii, classifier accuracy: all continued
    assert_same_dcgmm_outputs(whole.model, load_model(tmp_path / "halves"), test.images[:20])


@pytest.fixture(scope="module")
def fitted_nsn(mnist_small):
    train, _ = mnist_small
    model = NSN((28, 28, 1), "28x28")
    model.fit(train.images[:150], taus=[-1.0, 0.5, 0.5], max_filters=[8, 6, 5], max_iters=4,
              generator=torch.Generator().manual_seed(0))  # fmt: skip
    return model


def test_an_nsn_run_loads_with_the_same_scores_samples_and_fillings(
    fitted_nsn, mnist_small, tmp_path
):
    _, test = mnist_small
    save_baseline(tmp_path, "nsn", fitted_nsn, data={"source": "mnist"}, extra={})
    name, loaded, _ = load_baseline(tmp_path)
    assert name == "nsn"
    assert loaded.filter_counts() == fitted_nsn.filter_counts()
    a, b = as_image_model(fitted_nsn), as_image_model(loaded)
    x = test.images[:12]
    assert torch.equal(a.outlier_score(x), b.outlier_score(x))
    assert torch.equal(a.embed(x), b.embed(x))
    g = (torch.Generator().manual_seed(4), torch.Generator().manual_seed(4))
    assert torch.equal(a.sample(5, generator=g[0]), b.sample(5, generator=g[1]))
    missing = make_mask("right-half", tuple(x.shape))
    g = (torch.Generator().manual_seed(5), torch.Generator().manual_seed(5))
    assert torch.equal(a.inpaint(x, missing, generator=g[0]), b.inpaint(x, missing, generator=g[1]))
    # An NSN is fitted in one greedy pass that starts over (``NSN.fit`` clears the layers):
    # there is no training state to continue, so none is saved.


@pytest.mark.parametrize("build", [dlgmm, dldpmm, gauss_vae], ids=["dlgmm", "dldpmm", "gauss-vae"])
def test_a_vae_run_loads_with_the_same_outputs_and_trains_on_identically(
    build, mnist_small, tmp_path
):
    train, test = mnist_small
    flat = train.images[:400].reshape(400, -1)
    model = build(latent_dim=4, hidden=24, generator=torch.Generator().manual_seed(0))
    model.fit(flat, max_epochs=2, seed=0)
    save_baseline(tmp_path, build.__name__.replace("_", "-"), model, data={"source": "mnist"},
                  extra={})  # fmt: skip
    _, loaded, _ = load_baseline(tmp_path)
    a, b = as_image_model(model), as_image_model(loaded)
    x = test.images[:10]
    assert torch.equal(a.outlier_score(x), b.outlier_score(x))  # importance sampled, seeded
    assert torch.equal(a.embed(x), b.embed(x))
    g = (torch.Generator().manual_seed(4), torch.Generator().manual_seed(4))
    assert torch.equal(a.sample(5, generator=g[0]), b.sample(5, generator=g[1]))
    missing = make_mask("bottom-half", tuple(x.shape))
    g = (torch.Generator().manual_seed(5), torch.Generator().manual_seed(5))
    assert torch.equal(a.inpaint(x, missing, generator=g[0]), b.inpaint(x, missing, generator=g[1]))
    model.fit(flat, max_epochs=1, seed=1)  # continuing: a fresh Adam, as every fit starts
    loaded.fit(flat, max_epochs=1, seed=1)
    for (name, p), (_, q) in zip(
        model.state_dict().items(), loaded.state_dict().items(), strict=True
    ):
        assert torch.equal(p, q), name


@pytest.mark.parametrize("solver", [{"solver": "em"}, {"solver": "sgd", "annealing_window": 10}])
def test_the_estimator_pickles_with_the_same_scores_samples_and_continuation(solver):
    from dcgmm.interfaces.sklearn_api import SGDGaussianMixture

    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 0.3, (300, 3)), rng.normal(2, 0.5, (300, 3))])
    est = SGDGaussianMixture(n_components=4, max_epochs=3, random_state=0, **solver)
    est.fit(x)
    copy = pickle.loads(pickle.dumps(est))
    np.testing.assert_array_equal(copy.score_samples(x), est.score_samples(x))
    np.testing.assert_array_equal(copy.predict_proba(x), est.predict_proba(x))
    for got, want in zip(copy.sample(20), est.sample(20), strict=True):
        np.testing.assert_array_equal(got, want)
    est.partial_fit(x[:200])
    copy.partial_fit(x[:200])
    np.testing.assert_array_equal(copy.means_, est.means_)
    np.testing.assert_array_equal(copy.precisions_, est.precisions_)
    np.testing.assert_array_equal(copy.weights_, est.weights_)
