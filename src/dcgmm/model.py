"""The DCGMM: a chain of folding, pooling, GMM and classifier layers built from a spec."""

from collections.abc import Callable, Iterator, Sequence

import torch
from jaxtyping import Float
from torch import Tensor, nn

from dcgmm._allocator import retain_freed_memory
from dcgmm._validation import Shape, check_images, check_shape
from dcgmm.exceptions import SpecError
from dcgmm.layers import (
    GMM,
    ClassifierFeed,
    Folding,
    GMMScores,
    Layer,
    LinearClassifier,
    MaxPooling,
)
from dcgmm.layers.base import TrainableLayer
from dcgmm.layers.gmm import Objective
from dcgmm.spec import (
    ClassifierSpec,
    FoldingSpec,
    GMMSpec,
    LayerSpec,
    PoolingSpec,
    format_layer,
    parse_spec,
)
from dcgmm.stages import Stage, build_stages

__all__ = ["DCGMM", "build_layer"]


def build_layer(
    layer_spec: LayerSpec,
    input_shape: Shape,
    *,
    objective: Objective,
    generator: torch.Generator | None,
    lower_shape: Shape | None = None,
) -> Layer:
    """Return the layer for one spec token, given the shape it receives.

    ``lower_shape`` is the second-highest GMM layer's output shape, for ``C(S,2)``.
    """
    if isinstance(layer_spec, FoldingSpec):
        return Folding(input_shape, layer_spec.patch_size, layer_spec.stride)
    if isinstance(layer_spec, PoolingSpec):
        return MaxPooling(
            input_shape, layer_spec.kernel, layer_spec.stride, ceil_mode=layer_spec.ceil_mode
        )
    if isinstance(layer_spec, GMMSpec):
        return GMM(
            input_shape,
            layer_spec.n_components,
            independent=layer_spec.independent,
            objective=objective,
            generator=generator,
        )
    return LinearClassifier(
        input_shape, layer_spec.n_classes, lower_shape=lower_shape, generator=generator
    )


def _out_of_memory(layer: str, shape: tuple[int, int, int], err: BaseException) -> SpecError:
    return SpecError(
        f"{layer} on a {shape[0]}x{shape[1]}x{shape[2]} input needs more memory than there is "
        f"({str(err).splitlines()[0][:200]}); expected sizes that fit. Use fewer components or "
        "smaller patches"
    )


def _classifier_lower_shape(
    spec: ClassifierSpec, index: int, n_layers: int, below: list[Layer]
) -> tuple[int, int, int] | None:
    """Check a classifier's place in the chain; return the lower GMM layer's shape for C(K,2)."""
    token = format_layer(spec)
    if index != n_layers - 1:
        raise SpecError(f"layer {index + 1} {token}: a classifier must be the last layer")
    gmm_shapes = [lay.out_shape for lay in below if isinstance(lay, GMM)]
    if spec.n_inputs > len(gmm_shapes):
        raise SpecError(
            f"layer {index + 1} {token} reads the top {spec.n_inputs} GMM layers; "
            f"the spec has {len(gmm_shapes)}"
        )
    return gmm_shapes[-2] if spec.n_inputs == 2 else None


class DCGMM(nn.Module):
    """A deep convolutional Gaussian mixture model (Gepperth & Pfuelb, 2021/2022).

    Build one with :meth:`from_spec`. Every GMM layer learns from its own objective; inputs to a
    layer are detached, so no gradient crosses layers.

    Parameters
    ----------
    layers : sequence of Layer
        The chain, bottom first; each layer's ``input_shape`` is the previous one's output.
    input_shape : tuple of int
        ``(H, W, C)`` of the images.
    """

    def __init__(self, layers: Sequence[Layer], input_shape: Shape) -> None:
        super().__init__()
        self.input_shape = check_shape(input_shape)
        self.layers = nn.ModuleList(layers)
        shape = self.input_shape
        for i, layer in enumerate(layers):
            if layer.input_shape != shape:
                raise SpecError(
                    f"layer {i + 1} {layer.spec} expects input {layer.input_shape}, "
                    f"but the layer below produces {shape}"
                )
            shape = layer.out_shape
        # The spec string of the chain, however it was built: a checkpoint rebuilds from it.
        self.spec = "-".join(layer.spec for layer in layers)

    @classmethod
    def from_spec(
        cls,
        spec: str,
        input_shape: Sequence[int],
        *,
        objective: Objective = "annealed",
        generator: torch.Generator | None = None,
    ) -> "DCGMM":
        """Build a model from a spec string or a preset name, checking every shape first.

        Parameters
        ----------
        spec : str
            E.g. ``"F(3,1)-G(25)-F(4,2)-G(25)-F(12,1)-G(49)"`` or a preset ``"A"`` to ``"G"``.
        input_shape : sequence of int
            ``(H, W, C)`` of the images.
        objective : {"annealed", "max_component", "loglik"}
            Training objective of every GMM layer.
        generator : torch.Generator, optional
            Randomness for the parameter initialisation (seed it for a reproducible model).

        Raises
        ------
        SpecError
            If the spec cannot be parsed, or a layer does not fit the shape it receives.

        Examples
        --------
        >>> model = DCGMM.from_spec("F(28,1)-G(49)", input_shape=(28, 28, 1))
        >>> model.output_shape
        (1, 1, 49)
        """
        shape = check_shape(tuple(input_shape))
        layer_specs = parse_spec(spec)
        layers: list[Layer] = []
        origin = f"the {shape[0]}x{shape[1]}x{shape[2]} input"
        for i, layer_spec in enumerate(layer_specs):
            token = format_layer(layer_spec)
            lower_shape = None
            if isinstance(layer_spec, ClassifierSpec):
                lower_shape = _classifier_lower_shape(layer_spec, i, len(layer_specs), layers)
            try:
                layer = build_layer(
                    layer_spec,
                    shape,
                    objective=objective,
                    generator=generator,
                    lower_shape=lower_shape,
                )
            except ValueError as err:
                raise SpecError(f"layer {i + 1} {token}: {err} (from {origin})") from None
            except (RuntimeError, MemoryError) as err:  # torch's allocator: sizes beyond memory
                raise _out_of_memory(f"layer {i + 1} {token}", shape, err) from None
            layers.append(layer)
            shape = layer.out_shape
            origin = f"layer {i + 1} {token}"
        model = cls(layers, tuple(input_shape))  # type: ignore[arg-type]
        return model

    spec: str

    @property
    def output_shape(self) -> Shape:
        """``(H, W, C)`` of the top layer's output."""
        if not len(self.layers):
            return self.input_shape
        last = self.layers[-1]
        assert isinstance(last, Layer)
        return last.out_shape

    def gmm_layer_numbers(self) -> list[int]:
        """Return the GMM layers' numbers: 1-based over all layers, as ``dcgmm info`` shows."""
        return [i + 1 for i, _ in self.gmm_layers()]

    def gmm_layer_number(self, layer: int | str | None) -> int:
        """Return the number of GMM layer ``layer`` (1-based; ``"top"`` or None: the top one).

        The one convention of every API that names a layer (in-painting, outlier scores, the
        CLI); the layer's index in :attr:`layers` is the number minus one. Raises a
        ``ValueError`` naming the GMM layers for anything else.
        """
        numbers = self.gmm_layer_numbers()
        if layer is None or layer == "top":
            return numbers[-1]
        if isinstance(layer, str):
            if not layer.isdigit():
                raise ValueError(
                    f"layer must be 'top' or a GMM layer's number {numbers}; got {layer!r}"
                )
            layer = int(layer)
        if layer not in numbers:
            raise ValueError(
                f"layer {layer} is not a GMM layer of {self.spec}; GMM layers (1-based, as in "
                f"`dcgmm info`): {numbers}"
            )
        return layer

    def gmm_layers(self) -> Iterator[tuple[int, GMM]]:
        """Yield ``(index, layer)`` for every GMM layer, bottom first (index 0-based)."""
        for i, layer in enumerate(self.layers):
            if isinstance(layer, GMM):
                yield i, layer

    @property
    def classifier(self) -> LinearClassifier | None:
        """The classifier layer, if the spec has one."""
        last = self.layers[-1] if len(self.layers) else None
        return last if isinstance(last, LinearClassifier) else None

    def n_parameters(self) -> int:
        """Return the number of trainable values."""
        return sum(p.numel() for p in self.parameters())

    def n_centroid_entries(self) -> int:
        """Return the papers' parameter count: K * D per GMM layer (times H*W if independent)."""
        total = 0
        for _, gmm in self.gmm_layers():
            total += gmm.means.numel()
        return total

    def check_input(self, x: Tensor, name: str = "x") -> None:
        """Raise unless ``x`` is an NHWC float batch of this model's images, pixels in [0, 1].

        Raises
        ------
        TypeError
            If ``x`` is not a floating tensor (uint8 images: divide by 255).
        ValueError
            If its shape is not ``(N, H, W, C)`` of this model (NCHW gets a hint to permute),
            or it holds NaN, infinite or out-of-range values.
        """
        check_images(x, self.input_shape, name)

    @property
    def stages(self) -> list[Stage]:
        """The fast execution plan: foldings fused with the shared GMM layers above them."""
        if self._stages is None:
            # Every batch through the plan allocates tens of MB of temporaries: keep freed
            # memory in the process (dcgmm._allocator). Scoring E-indep from Python without it
            # took 80-90 ms a batch of 100 (17,000 page faults), with it 38-50 ms.
            retain_freed_memory()
            self._stages = build_stages(list(self.layers))  # type: ignore[arg-type]
        return self._stages

    _stages: list[Stage] | None = None

    def forward(self, x: Tensor) -> Tensor:
        """Return the top layer's output for a batch of images.

        ``x`` is ``(N, H, W, C)``, float, pixels in [0, 1]; it is checked (:meth:`check_input`),
        so it carries no jaxtyping annotation that would pre-empt the check's message.
        """
        self.check_input(x)
        return self.upward(x, lambda stage, h: stage.forward(h))

    def upward(self, x: Tensor, visit: Callable[[Stage, Tensor], Tensor]) -> Tensor:
        """Climb the fast plan from ``x``: ``visit(stage, h)`` returns each stage's output.

        The one upward pass that :meth:`forward`, :meth:`scores` and a training step share: it
        threads the classifier's feed (``C(S, 2)`` reads the two highest GMM layers) so that
        no procedure does so by hand. Returns the top stage's output; ``x`` is not checked.
        """
        feed = ClassifierFeed(list(self.layers))
        for stage in self.stages:
            x = visit(stage, feed.input_for(stage.index, x))
            feed.keep(stage.index, x)
        return x

    def layer_losses(self, x: Tensor, y: Tensor | None = None) -> list[Tensor]:
        """Return each trainable layer's loss (to minimise), bottom first, from one pass."""
        losses = []
        feed = ClassifierFeed(list(self.layers))
        for i, layer in enumerate(self.layers):
            x = feed.input_for(i, x)
            if isinstance(layer, TrainableLayer):
                x, loss = layer.forward_and_loss(x, y)
                losses.append(loss)
            else:
                x = layer(x)
            x = x.detach()  # layer-local learning: no gradient reaches lower layers
            feed.keep(i, x)
        return losses

    @torch.no_grad()
    def scores(self, x: Tensor) -> list[GMMScores]:
        """Return per-position density scores of every GMM layer, bottom first.

        Each entry holds three (N, H_l, W_l) maps: the annealed objective, the max-component and
        the exact log-likelihood. Average them over positions for per-sample scores.
        ``x`` is ``(N, H, W, C)``, float, pixels in [0, 1] (checked as in :meth:`forward`).
        """
        self.check_input(x)
        out: list[GMMScores] = []

        def visit(stage: Stage, h: Tensor) -> Tensor:
            h, scores = stage.scores(h)
            if scores is not None:
                out.append(scores)
            return h

        self.upward(x, visit)
        return out

    @torch.no_grad()
    def predict_proba(self, x: Tensor) -> Float[Tensor, "N S"]:
        """Return class probabilities from the classifier layer (``x`` as in :meth:`forward`)."""
        if self.classifier is None:
            raise ValueError(
                f"model {self.spec!r} has no classifier layer; add C(n_classes) at the end of "
                "the spec to classify"
            )
        return self(x).reshape(x.shape[0], -1)

    def shape_chain(self) -> str:
        """Return ``(28,28,1) -F(3,1)-> (26,26,9) -G(25)-> ...``."""
        parts = ["({},{},{})".format(*self.input_shape)]
        for layer in self.layers:
            assert isinstance(layer, Layer)
            parts.append("-{}-> ({},{},{})".format(layer.spec, *layer.out_shape))
        return " ".join(parts)

    def __str__(self) -> str:
        return (
            f"DCGMM {self.spec}\n  {self.shape_chain()}\n"
            f"  parameters: {self.n_centroid_entries():,} centroid entries (papers' count), "
            f"{self.n_parameters():,} trainable values"
        )
