"""Normal Similarity Network (Nandy, Hsu & Lee 2018) and its generator NSN-Gen.

Specification: ``../shared/specs/nsn.md``. The paper's formulas were lost; every formula here
is the spec's **reconstruction**, and each choice is a named option:

* score of patch ``x`` under filter ``k`` (``similarity``): ``"logpdf_per_dim"`` (default)
  ``(1/D) log N(x; mu_k, sigma_k^2 I)``; ``"logpdf"`` without the 1/D; ``"rbf"``
  ``exp(-|x - mu_k|^2 / (2 sigma_k^2))``. The layer outputs ``sigmoid(score)`` for every filter.
* training: hard EM per layer with growth. A patch whose best score is below the threshold
  ``tau`` joins no filter; after each M-step new filters (``new_filters_per_iter``, default
  1) are added for those patches. **Our deviation**: the literal reading, one new filter
  fitted to the mean of all unexplained patches, stalls (measured: on 2000 MNIST digits the
  first layer stayed at 1-3 filters for 400 iterations at every tau we tried), because that
  mean is a blur no patch is close to. A new filter is therefore seeded on a real patch (the
  worst explained one, then farthest-point seeds), with sigma capped so that patches within
  one sigma of it clear ``tau``; the M-step then refits it. Empty filters are dropped.
  The E-step skips the patches whose best filter provably cannot have changed since the last
  iteration (bounds carried by the triangle inequality, :mod:`dcgmm.baselines.nsn_estep`);
  ``fit(..., prune=False)`` scores every patch under every filter instead.
* generation (NSN-Gen): at every position ``w = Multinomial(n_draws, softmax(beta * phi)) /
  n_draws`` and ``patch = sum_k w_k (alpha mu_k + gamma sigma_k eps_k)``; overlapping patches are
  averaged (our :class:`~dcgmm.layers.Folding`'s backward mode). The noise is drawn in
  distribution-equal form ``gamma sqrt(sum_k w_k^2 sigma_k^2) eps``, one ``eps ~ N(0, I_D)``
  per position.

Images are NHWC in [0, 1], as everywhere in dcgmm. Patches are cut by our folding layer.
"""

import time
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from dcgmm._allocator import retain_freed_memory
from dcgmm.baselines.nsn_layer import GenSettings, LayerFit, NSNLayer, Similarity
from dcgmm.layers.folding import windows_along

__all__ = ["ARCHITECTURES", "NSN", "PAPER_FILTER_COUNTS"]

# The paper's architectures (spec section 6): (window, stride) per layer, and the filter
# counts it found (MNIST, Fashion-MNIST; LFW for the 64x64 one).
ARCHITECTURES: dict[str, tuple[tuple[int, int], ...]] = {
    "28x28": ((4, 2), (3, 2), (6, 2)),
    "64x64": ((4, 2), (3, 2), (3, 2), (3, 2), (3, 1)),
}
PAPER_FILTER_COUNTS = {
    "mnist": (96, 130, 131),
    "fashion-mnist": (140, 238, 256),
    "lfw": (284, 242, 240, 235, 161),
}


class NSN(nn.Module):
    """A stack of :class:`NSNLayer` fitted greedily, bottom first.

    Parameters
    ----------
    input_shape : tuple of int
        ``(H, W, C)`` of the images.
    architecture : sequence of (window, stride), or a name in :data:`ARCHITECTURES`
        The last window must cover its whole input (one top vector per image).
    similarity, sigma_min
        Passed to every layer.
    """

    def __init__(
        self,
        input_shape: tuple[int, int, int],
        architecture: str | Sequence[tuple[int, int]] = "28x28",
        *,
        similarity: Similarity = "logpdf_per_dim",
        sigma_min: float = 1e-3,
    ) -> None:
        super().__init__()
        arch = ARCHITECTURES[architecture] if isinstance(architecture, str) else architecture
        self.input_shape = input_shape
        self.architecture = tuple(tuple(a) for a in arch)
        self.similarity, self.sigma_min = similarity, sigma_min
        h, w, _ = input_shape
        for i, (f, s) in enumerate(self.architecture):
            if f > min(h, w):
                raise ValueError(f"layer {i + 1}: window {f} does not fit the {h}x{w} map")
            h, w = windows_along(h, f, s), windows_along(w, f, s)
        if (h, w) != (1, 1):
            raise ValueError(
                f"the last layer must cover its whole input (a 1x1 top map); this architecture "
                f"ends at {h}x{w}"
            )
        self.layers = nn.ModuleList()

    def load_filters(self, state: dict[str, Tensor]) -> None:
        """Rebuild the fitted layers from a :meth:`state_dict` (K_l comes from the tensors)."""
        self.layers = nn.ModuleList()
        shape = self.input_shape
        for i, (f, s) in enumerate(self.architecture):
            layer = NSNLayer(shape, f, s, similarity=self.similarity, sigma_min=self.sigma_min)
            layer.set_filters(
                state[f"layers.{i}.means"], state[f"layers.{i}.sigmas"], state[f"layers.{i}.counts"]
            )
            self.layers.append(layer)
            shape = layer.out_shape

    @property
    def nsn_layers(self) -> list[NSNLayer]:
        """The fitted layers, bottom first."""
        return [layer for layer in self.layers if isinstance(layer, NSNLayer)]

    def filter_counts(self) -> list[int]:
        """Return K_l of every fitted layer, bottom first."""
        return [layer.n_filters for layer in self.nsn_layers]

    def _next_input_shape(self) -> tuple[int, int, int]:
        if not self.nsn_layers:
            return self.input_shape
        return self.nsn_layers[-1].out_shape

    @torch.no_grad()
    def fit(
        self,
        images: Tensor,
        *,
        taus: Sequence[float],
        max_filters: int | Sequence[int] = 512,
        max_iters: int = 300,
        new_filters_per_iter: int = 1,
        generator: torch.Generator | None = None,
        progress: Callable[[int, int, int, int], None] | None = None,
        max_seconds: float | None = None,
        prune: bool = True,
    ) -> list[LayerFit]:
        """Fit every layer in turn on the maps of the one below (greedy, layer-wise).

        ``max_seconds`` bounds the whole fit: each layer gets an equal share of the time left
        when it starts, and stops after the iteration that uses it up (keeping its filters).
        ``prune``: see :meth:`NSNLayer.fit`.
        """
        if len(taus) != len(self.architecture):
            raise ValueError(f"need one tau per layer ({len(self.architecture)}); got {len(taus)}")
        retain_freed_memory()  # every iteration allocates (M, K) scores: see dcgmm._allocator
        caps = [max_filters] * len(taus) if isinstance(max_filters, int) else list(max_filters)
        self.layers = nn.ModuleList()
        maps, records = images, []
        end = None if max_seconds is None else time.perf_counter() + max_seconds
        for i, (f, s) in enumerate(self.architecture):
            layer = NSNLayer(
                self._next_input_shape(), f, s, similarity=self.similarity, sigma_min=self.sigma_min
            )
            layers_left = len(self.architecture) - i
            now = time.perf_counter()
            deadline = None if end is None else now + max(end - now, 0.0) / layers_left
            record = layer.fit(
                maps,
                tau=taus[i],
                max_filters=caps[i],
                max_iters=max_iters,
                new_filters_per_iter=new_filters_per_iter,
                generator=generator,
                progress=_layer_progress(progress, i),
                deadline=deadline,
                prune=prune,
            )
            self.layers.append(layer)
            records.append(record)
            maps = torch.cat([layer(maps[j : j + 256]) for j in range(0, maps.shape[0], 256)])
        return records

    def forward(self, x: Tensor) -> Tensor:
        """Return the top score vectors F^(L) as (N, K_L) (the kNN embedding)."""
        for layer in self.nsn_layers:
            x = layer(x)
        return x.reshape(x.shape[0], -1)

    def embed(self, x: Tensor) -> Tensor:
        """Return the top score vector of every image (N, K_L)."""
        return self(x)

    def maps(self, x: Tensor) -> list[Tensor]:
        """Return F^(1), ..., F^(L) of ``x``."""
        out = []
        for layer in self.nsn_layers:
            x = layer(x)
            out.append(x)
        return out

    # ---------------------------------------------------------------------------- generation
    def decode(
        self,
        phi: Tensor,
        from_layer: int,
        settings: GenSettings = GenSettings(),
        *,
        to_layer: int = 0,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Run NSN-Gen from the output map ``phi`` of layer ``from_layer`` (1-based).

        It stops at the output map of layer ``to_layer`` (default 0: the pixels).
        """
        x = phi
        for layer in reversed(self.nsn_layers[to_layer:from_layer]):
            x = layer.generate(x, settings, generator=generator)
        return x

    def sample(
        self,
        n: int,
        *,
        from_layer: int | None = None,
        z: Tensor | None = None,
        settings: GenSettings = GenSettings(),
        generator: torch.Generator | None = None,
        clip: bool = True,
    ) -> Tensor:
        """Draw images (N, H, W, C) from top noise ``z ~ N(0, I)`` (or a given ``z``).

        With ``from_layer`` below the top, ``z`` is a 1x1 map of that layer and the result is
        one patch of its receptive field (intermediate-layer sampling). Pixels are clipped to
        [0, 1] unless ``clip=False`` (a model of whitened images samples whitened values).
        """
        level = len(self.nsn_layers) if from_layer is None else from_layer
        k = self.nsn_layers[level - 1].n_filters
        if z is None:
            z = torch.randn(n, k, generator=generator)
        phi = z.reshape(-1, 1, 1, k).float()
        drawn = self.decode(phi, level, settings, generator=generator)
        return drawn.clamp(0, 1) if clip else drawn

    def inpaint(
        self,
        x: Tensor,
        missing: Tensor,
        settings: GenSettings = GenSettings(gamma=0.0),
        *,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Occlusion filling (spec section 8): rebuild F^(1) where it saw hidden pixels.

        Forward the image (hidden pixels set to 0), run NSN-Gen from the top map F^(L) down to
        a rebuilt first-layer map, put its entries where the first layer's windows touch hidden
        pixels, decode that map to pixels, and paste the known pixels back.
        """
        if missing.shape != x.shape:
            raise ValueError(
                f"missing must have shape {tuple(x.shape)}; got {tuple(missing.shape)}"
            )
        observed = torch.where(missing, torch.zeros_like(x), x)
        maps = self.maps(observed)
        # NSN-Gen from the top map down to a rebuilt first-layer map (the input of layer 2).
        rebuilt_f1 = self.decode(maps[-1], len(maps), settings, to_layer=1, generator=generator)
        first = self.nsn_layers[0]
        touched = first.folding(missing.float()).amax(-1, keepdim=True) > 0
        f1 = torch.where(touched, rebuilt_f1, maps[0])
        pixels = first.generate(f1, settings, generator=generator).clamp(0, 1)
        return torch.where(missing, pixels, x)


def _layer_progress(
    progress: Callable[[int, int, int, int], None] | None, layer: int
) -> Callable[[int, int, int], None] | None:
    """Bind the layer number of a model-level progress callback."""
    if progress is None:
        return None
    report = progress

    def callback(iteration: int, n_filters: int, n_unexplained: int) -> None:
        report(layer, iteration, n_filters, n_unexplained)

    return callback
