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


@pytest.fixture(scope="session")
def mnist_small():
    from dcgmm.data import load_dataset

    train = load_dataset("mnist", limit_per_class=100)
    test = load_dataset("mnist", split="test", limit_per_class=50)
    return train, test
