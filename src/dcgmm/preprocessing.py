"""Invertible image preprocessing shared by every model: ``fit`` / ``transform`` / ``inverse``.

The NSN paper trains its face models on channel-wise ZCA-whitened images (spec ``nsn.md``
section 7, after Coates & Ng: whitening spreads the filters evenly). Whether it whitened whole
images or patches is not stated; :class:`ZCAWhitening` is the spec's reconstruction: one ZCA
per channel over whole images (D = H * W), regularised by ``epsilon = ratio * mean
eigenvalue``. The inverse maps model outputs back to pixels for display.
"""

from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

from dcgmm.layers.base import Shape

__all__ = ["Identity", "Preprocessor", "ZCAWhitening"]


@runtime_checkable
class Preprocessor(Protocol):
    """An invertible map of NHWC images, fitted on training images."""

    def fit(self, images: Tensor) -> "Preprocessor":
        """Estimate the map from ``images`` (N, H, W, C); return self."""
        ...

    def transform(self, images: Tensor) -> Tensor:
        """Map images into the model's space (same shape)."""
        ...

    def inverse(self, values: Tensor) -> Tensor:
        """Map the model's values back to images (same shape)."""
        ...


class Identity:
    """The preprocessor that does nothing (what every model uses by default)."""

    def fit(self, images: Tensor) -> "Identity":
        """Nothing to estimate."""
        return self

    def transform(self, images: Tensor) -> Tensor:
        """Return ``images`` unchanged."""
        return images

    def inverse(self, values: Tensor) -> Tensor:
        """Return ``values`` unchanged."""
        return values


class ZCAWhitening:
    """Per-channel ZCA whitening of whole images.

    For each channel, with the training mean ``m`` and covariance ``S = U diag(l) U^T`` of the
    flattened images (float64), ``transform(x) = (x - m) W`` with ``W = U diag((l + eps)^-1/2)
    U^T`` and ``eps = epsilon_ratio * mean(l)``; ``inverse`` applies ``U diag((l + eps)^1/2)
    U^T`` and adds ``m`` back. ZCA (rather than PCA) whitening keeps the result an image: the
    rotation back by ``U`` leaves every value at its pixel.
    """

    def __init__(self, epsilon_ratio: float = 1e-2) -> None:
        if not epsilon_ratio > 0:
            raise ValueError(f"epsilon_ratio must be positive; got {epsilon_ratio}")
        self.epsilon_ratio = epsilon_ratio
        self.shape: Shape | None = None
        self.mean: Tensor | None = None  # (C, D) float64
        self.whiten: Tensor | None = None  # (C, D, D) float64
        self.unwhiten: Tensor | None = None  # (C, D, D) float64

    def fit(self, images: Tensor) -> "ZCAWhitening":
        """Estimate mean and whitening matrices per channel from ``images`` (N, H, W, C)."""
        if images.ndim != 4 or images.shape[0] < 2:
            raise ValueError(
                f"ZCA needs a batch of at least 2 NHWC images; got shape {tuple(images.shape)}"
            )
        n, h, w, c = images.shape
        d = h * w
        x = images.double().permute(3, 0, 1, 2).reshape(c, n, d)  # (C, N, D)
        mean = x.mean(1)
        centred = x - mean[:, None]
        if n < d:
            # Fewer images than pixels (400 faces of 4096): the covariance has rank < N, so
            # diagonalise the N x N Gram matrix instead of the D x D covariance. Its nonzero
            # eigenvalues are the covariance's, with eigenvectors u = X^T v / sqrt(N lambda);
            # the remaining D - N directions have eigenvalue 0 and are only scaled by eps.
            gram_values, v = torch.linalg.eigh(centred @ centred.transpose(1, 2) / n)
            keep = gram_values > gram_values.amax(-1, keepdim=True) * 1e-12
            values = torch.where(keep, gram_values, 0.0)
            u = centred.transpose(1, 2) @ v / (n * values).clamp_min(1e-300).sqrt()[:, None]
            u = u * keep[:, None]  # (C, D, N): orthonormal columns where kept, zero elsewhere
            eps = self.epsilon_ratio * values.sum(-1, keepdim=True) / d
            rest = eps.rsqrt()[..., None]  # the scale of the zero-eigenvalue directions
            eye = torch.eye(d, dtype=torch.float64)
            projector = u @ u.transpose(1, 2)
            self.whiten = (u / (values + eps).sqrt()[:, None]) @ u.transpose(1, 2) + rest * (
                eye - projector
            )
            self.unwhiten = (u * (values + eps).sqrt()[:, None]) @ u.transpose(1, 2) + (
                eye - projector
            ) / rest
        else:
            values, u = torch.linalg.eigh(centred.transpose(1, 2) @ centred / n)  # (C, D, D)
            values = values.clamp_min(0)
            eps = self.epsilon_ratio * values.mean(-1, keepdim=True)
            scale = (values + eps).sqrt()
            self.whiten = (u / scale[:, None, :]) @ u.transpose(1, 2)
            self.unwhiten = (u * scale[:, None, :]) @ u.transpose(1, 2)
        self.shape = (h, w, c)
        self.mean = mean
        return self

    def _apply(self, images: Tensor, matrix: Tensor | None, *, forward: bool) -> Tensor:
        if self.mean is None or matrix is None or self.shape is None:
            raise RuntimeError("ZCAWhitening is not fitted; call fit(images) first")
        if tuple(images.shape[1:]) != self.shape:
            raise ValueError(
                f"ZCA was fitted on images of shape {self.shape}; got {tuple(images.shape[1:])}"
            )
        n, h, w, c = images.shape
        x = images.double().permute(3, 0, 1, 2).reshape(c, n, h * w)
        y = (x - self.mean[:, None]) @ matrix if forward else x @ matrix + self.mean[:, None]
        return y.reshape(c, n, h, w).permute(1, 2, 3, 0).to(images.dtype)

    def transform(self, images: Tensor) -> Tensor:
        """Whiten ``images`` (N, H, W, C)."""
        return self._apply(images, self.whiten, forward=True)

    def inverse(self, values: Tensor) -> Tensor:
        """Undo :meth:`transform`."""
        return self._apply(values, self.unwhiten, forward=False)

    def state_dict(self) -> dict[str, Tensor]:
        """Return the fitted tensors (for saving beside a model)."""
        if self.mean is None or self.whiten is None or self.unwhiten is None:
            raise RuntimeError("ZCAWhitening is not fitted; nothing to save")
        return {"mean": self.mean, "whiten": self.whiten, "unwhiten": self.unwhiten}

    def load_state_dict(self, state: dict[str, Tensor], shape: Shape) -> None:
        """Restore a fitted whitening for images of ``shape`` (H, W, C)."""
        self.mean, self.whiten, self.unwhiten = state["mean"], state["whiten"], state["unwhiten"]
        self.shape = shape
