"""Shared fixtures. dcgmm is imported under jaxtyping's import hook, so every annotated
tensor signature is shape-checked at run time in the tests (and only there)."""

import jaxtyping
import pytest
import torch

with jaxtyping.install_import_hook("dcgmm", "beartype.beartype"):
    import dcgmm  # noqa: F401


@pytest.fixture
def generator() -> torch.Generator:
    return torch.Generator().manual_seed(1234)


@pytest.fixture
def fresh_compiling(monkeypatch):
    """A clean ``dcgmm._compiling`` state (nothing compiled, no failure, compiling enabled)."""
    from dcgmm import _compiling

    monkeypatch.setattr(_compiling, "_compiled", {})
    monkeypatch.setattr(_compiling, "_shapes", {})
    monkeypatch.setattr(_compiling, "_failed", False)
    monkeypatch.delenv("DCGMM_COMPILE", raising=False)


@pytest.fixture(scope="session")
def mnist_small():
    from dcgmm.io.data import load_dataset

    train = load_dataset("mnist", limit_per_class=100)
    test = load_dataset("mnist", split="test", limit_per_class=50)
    return train, test


@pytest.fixture(scope="session")
def annealed_flat_model(mnist_small):
    """``F(28,1)-G(25)-C(10)`` annealed to its floor on 1,000 real digits (1,500 steps, ~3 s).

    The smallest model whose samples, completions and classes are good enough for value
    checks: measured, its class-conditional samples are recognised 100% of the time (chance
    10%) and its completions beat the mean training digit.
    """
    from dcgmm import DCGMM, TrainConfig, Trainer

    train, _ = mnist_small
    model = DCGMM.from_spec(
        "F(28,1)-G(25)-C(10)", (28, 28, 1), generator=torch.Generator().manual_seed(0)
    )
    config = TrainConfig(steps=1500, annealing_window=20, classifier_lr=0.1, layer_delay=0.0)
    Trainer(model, config, train.images, train.labels).run()
    assert model.layers[1].sigma_som_value == pytest.approx(0.01)  # the annealing finished
    return model
