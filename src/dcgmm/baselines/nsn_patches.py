"""The patches an NSN layer reads, batch by batch, kept in memory when they fit."""

from collections.abc import Iterator

from torch import Tensor

from dcgmm.layers.folding import Folding

__all__ = ["PATCH_CACHE_FLOATS", "PatchBatches"]

# Patches kept in memory across hard-EM iterations when they take at most this many floats
# (1 GiB); bigger layers cut them again every iteration, batch by batch.
PATCH_CACHE_FLOATS = 1 << 28


class PatchBatches:
    """The patches of a layer's inputs, batch by batch, with their squared norms.

    Yields ``(first row, patches (M, D), |patch|^2 (M,), |patch|^2 in float64 (M,))`` per
    batch of ``batch_size`` images, the rows numbered over all images. Patches are cut once
    and kept when all of them take at most :data:`PATCH_CACHE_FLOATS` floats; the norms (a
    float or two a patch) always are.
    """

    def __init__(self, folding: Folding, inputs: Tensor, batch_size: int) -> None:
        self.folding, self.inputs, self.batch_size = folding, inputs, batch_size
        h, w, d = folding.out_shape
        self.n_pos, self.d = h * w, d
        self.n_patches = inputs.shape[0] * h * w
        self.keep = inputs.shape[0] * h * w * d <= PATCH_CACHE_FLOATS
        self._patches: list[Tensor] = []
        self._norms: list[tuple[Tensor, Tensor]] = []

    def _cut(self, start: int) -> Tensor:
        return self.folding(self.inputs[start : start + self.batch_size]).reshape(-1, self.d)

    def __iter__(self) -> Iterator[tuple[int, Tensor, Tensor, Tensor]]:
        for i, start in enumerate(range(0, self.inputs.shape[0], self.batch_size)):
            if i < len(self._patches):
                patches = self._patches[i]
            else:
                patches = self._cut(start)
                if self.keep:
                    self._patches.append(patches)
            if i == len(self._norms):  # as patch_scores and the float64 statistics had them
                self._norms.append((patches.square().sum(-1), patches.double().square().sum(-1)))
            yield start * self.n_pos, patches, *self._norms[i]
