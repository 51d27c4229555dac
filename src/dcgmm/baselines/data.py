"""Binarised MNIST made reproducibly from the canonical IDX files.

The paper's likelihoods use the Larochelle-Murray binarisation, one fixed stochastic draw that
has no labels. We make the same kind of data from the canonical (labelled) MNIST files:

* ``mode="stochastic"`` (default): pixel ~ Bernoulli(value / 255), one draw with
  ``torch.Generator().manual_seed(seed)`` over the 70,000 images in file order (training file
  first), so the same seed gives the same bits on every machine;
* ``mode="threshold"``: pixel = value / 255 > 0.5 (easier data: likelihoods much higher, not
  comparable with the paper's).

Splits: the first 50,000 training images (train), the last 10,000 (validation), the test file
(test); labels kept for kNN.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor

from dcgmm.io.data import load_dataset

__all__ = ["BinarySplit", "binarize", "binarized_mnist"]


@dataclass(frozen=True)
class BinarySplit:
    """Flattened binary images (N, 784) as float32 0/1, and their labels (N,)."""

    images: Tensor
    labels: Tensor

    def __len__(self) -> int:
        return self.images.shape[0]


def binarized_mnist(
    source: str | Path,
    *,
    mode: Literal["stochastic", "threshold"] = "stochastic",
    seed: int = 0,
    n_validation: int = 10_000,
) -> dict[str, BinarySplit]:
    """Return ``{"train", "valid", "test"}`` splits of binarised MNIST (see the module doc)."""
    train = load_dataset(source, split="train")
    test = load_dataset(source, split="test")
    images = torch.cat([train.images, test.images]).reshape(len(train) + len(test), -1)
    if mode == "stochastic":
        generator = torch.Generator().manual_seed(seed)
        bits = torch.bernoulli(images.double(), generator=generator).float()
    elif mode == "threshold":
        bits = (images > 0.5).float()
    else:
        raise ValueError(f"mode must be 'stochastic' or 'threshold'; got {mode!r}")
    labels = torch.cat([train.labels, test.labels])
    n_train = len(train) - n_validation
    if n_train <= 0:
        raise ValueError(f"n_validation={n_validation} leaves no training images of {len(train)}")
    return {
        "train": BinarySplit(bits[:n_train], labels[:n_train]),
        "valid": BinarySplit(bits[n_train : len(train)], labels[n_train : len(train)]),
        "test": BinarySplit(bits[len(train) :], labels[len(train) :]),
    }


def binarize(images: Tensor, mode: str, seed: int) -> Tensor:
    """Return flat 0/1 images (N, D): a Bernoulli draw per pixel (seeded), or a threshold.

    ``mode`` is ``"stochastic"`` (pixel ~ Bernoulli(value), one draw with
    ``torch.Generator().manual_seed(seed)``) or ``"threshold"`` (value > 0.5). The VAE
    baselines are trained on such images, and score and complete such images.
    """
    flat = images.reshape(images.shape[0], -1)
    if mode == "threshold":
        return (flat > 0.5).float()
    if mode == "stochastic":
        return torch.bernoulli(flat.double(), generator=torch.Generator().manual_seed(seed)).float()
    raise ValueError(f"binarisation mode must be 'stochastic' or 'threshold'; got {mode!r}")
