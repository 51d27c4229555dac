"""Parse and format model specification strings such as ``F(3,1)-G(25)-F(12,1)-G(49)``.

Grammar (the papers' notation, plus two flags)::

    spec   := layer ("-" layer)*
    layer  := "F(" f "," s ")" | "F(" fy "," fx "," sy "," sx ")"     folding
            | "P(" k "," s ["," "ceil"] ")"                           max-pooling
            | "G(" K ["," "indep"] ")"                                 GMM
            | "C(" S ["," n] ")"                                        linear classifier

``C(S,2)`` feeds the classifier the responsibilities of the two highest GMM layers (the 2022
paper's setup); ``C(S)`` = ``C(S,1)`` feeds the top one (the reference code's).
"""

import re
from dataclasses import dataclass

from dcgmm.exceptions import SpecError

__all__ = [
    "INDEPENDENT_PRESETS",
    "PRESETS",
    "ClassifierSpec",
    "FoldingSpec",
    "GMMSpec",
    "LayerSpec",
    "PoolingSpec",
    "format_layer",
    "format_spec",
    "parse_spec",
    "preset_of",
]


@dataclass(frozen=True, kw_only=True)
class FoldingSpec:
    """A folding layer ``F(fy,fx,sy,sx)``."""

    patch_size: tuple[int, int]
    stride: tuple[int, int]


@dataclass(frozen=True, kw_only=True)
class PoolingSpec:
    """A max-pooling layer ``P(k,s[,ceil])``."""

    kernel: int
    stride: int
    ceil_mode: bool = False


@dataclass(frozen=True, kw_only=True)
class GMMSpec:
    """A GMM layer ``G(K[,indep])``."""

    n_components: int
    independent: bool = False


@dataclass(frozen=True, kw_only=True)
class ClassifierSpec:
    """A linear classifier ``C(S[,n])`` reading the top ``n`` GMM layers (1 or 2)."""

    n_classes: int
    n_inputs: int = 1


LayerSpec = FoldingSpec | PoolingSpec | GMMSpec | ClassifierSpec

# The 2022 paper's Table V configurations. C and G pool with the reference's ceil rule: with
# floor sizes their later folding windows would not fit (21 -> 10 < 11, 5 -> 3 -> 1 < 2).
PRESETS: dict[str, str] = {
    "A": "F(28,1)-G(49)",
    "B": "F(8,2)-G(49)-F(11,1)-G(49)",
    "C": "F(8,1)-G(49)-P(2,2,ceil)-F(11,1)-G(49)",
    "D": "F(3,1)-G(25)-P(2,2)-F(4,1)-G(25)-P(2,2)-F(5,5)-G(49)",
    "E": "F(3,1)-G(25)-F(4,2)-G(25)-F(12,1)-G(49)",
    "F": "F(3,1)-G(25)-F(4,2)-G(25)-F(4,2)-G(25)-F(5,1)-G(49)",
    "G": "F(3,1)-G(25)-P(2,2,ceil)-F(3,1)-G(25)-P(2,2,ceil)-F(3,1)-G(25)-P(2,2,ceil)-F(2,1)-G(49)",
}

# The layer modes of the authors' experiment scripts (spec §9): the same chains with the lower
# GMM layers independent (one mixture per position). Their other recipe settings (K, delays,
# epochs) are training options, not spec strings.
INDEPENDENT_PRESETS: dict[str, str] = {
    "B-indep": "F(8,2)-G(49,indep)-F(11,1)-G(49)",
    "C-indep": "F(8,1)-G(49,indep)-P(2,2,ceil)-F(11,1)-G(49)",
    "D-indep": "F(3,1)-G(25,indep)-P(2,2)-F(4,1)-G(25,indep)-P(2,2)-F(5,5)-G(49)",
    "E-indep": "F(3,1)-G(25,indep)-F(4,2)-G(25,indep)-F(12,1)-G(49)",
    "F-indep": "F(3,1)-G(25,indep)-F(4,2)-G(25,indep)-F(4,2)-G(25,indep)-F(5,1)-G(49)",
    "G-indep": "F(3,1)-G(25,indep)-P(2,2,ceil)-F(3,1)-G(25,indep)-P(2,2,ceil)-F(3,1)-"
    "G(25,indep)-P(2,2,ceil)-F(2,1)-G(49)",
}


def preset_of(name: str) -> str | None:
    """Return the Table V preset a model name stands for (``E`` for ``E-indep``), or None."""
    base = name.strip().removesuffix("-indep")
    return base if base in PRESETS and name.strip() in (base, f"{base}-indep") else None


_TOKEN = re.compile(r"\s*([A-Za-z])\s*\(([^()]*)\)\s*")


def _caret(spec: str, pos: int, message: str) -> SpecError:
    return SpecError(f"{message}\n  {spec}\n  {' ' * pos}^")


# Layer sizes are ASCII digits, at most this many: larger numbers are typos, not layers.
_MAX_DIGITS = 9
_NUMBER = re.compile(rf"[0-9]{{1,{_MAX_DIGITS}}}")


def _ints(spec: str, pos: int, args: list[str], name: str) -> list[int]:
    values = []
    for arg in args:
        text = arg.strip()
        if _NUMBER.fullmatch(text) is None or int(text) <= 0:
            raise _caret(
                spec,
                pos,
                f"{name} takes positive integers of at most {_MAX_DIGITS} digits; got {text!r}",
            )
        values.append(int(text))
    return values


def _parse_layer(spec: str, pos: int, letter: str, body: str) -> LayerSpec:
    args = [a.strip() for a in body.split(",")] if body.strip() else []
    kind = letter.upper()
    if kind == "F":
        if len(args) == 2:
            f, s = _ints(spec, pos, args, "F")
            return FoldingSpec(patch_size=(f, f), stride=(s, s))
        if len(args) == 4:
            fy, fx, sy, sx = _ints(spec, pos, args, "F")
            return FoldingSpec(patch_size=(fy, fx), stride=(sy, sx))
        raise _caret(spec, pos, f"F takes (patch,stride) or (fy,fx,sy,sx); got F({body})")
    if kind == "P":
        ceil = len(args) == 3 and args[2].lower() == "ceil"
        if len(args) == 2 or ceil:
            k, s = _ints(spec, pos, args[:2], "P")
            return PoolingSpec(kernel=k, stride=s, ceil_mode=ceil)
        raise _caret(spec, pos, f"P takes (kernel,stride) or (kernel,stride,ceil); got P({body})")
    if kind == "G":
        indep = len(args) == 2 and args[1].lower() in ("indep", "independent")
        if len(args) == 1 or indep:
            (k,) = _ints(spec, pos, args[:1], "G")
            return GMMSpec(n_components=k, independent=indep)
        raise _caret(spec, pos, f"G takes (K) or (K,indep); got G({body})")
    if kind == "C":
        if len(args) in (1, 2):
            values = _ints(spec, pos, args, "C")
            if len(values) == 2 and values[1] not in (1, 2):
                raise _caret(spec, pos, f"C reads the top 1 or 2 GMM layers; got C({body})")
            return ClassifierSpec(
                n_classes=values[0], n_inputs=values[1] if len(values) == 2 else 1
            )
        raise _caret(spec, pos, f"C takes (n_classes) or (n_classes,n_gmm_inputs); got C({body})")
    raise _caret(
        spec,
        pos,
        f"unknown layer type {letter!r}; expected F (folding), P (pooling), G (GMM) or "
        f"C (classifier), or a preset name {sorted(PRESETS)}",
    )


def parse_spec(spec: str) -> tuple[LayerSpec, ...]:
    """Parse a spec string (or a preset name, ``A`` to ``G``) into layer specs.

    Raises
    ------
    SpecError
        With the spec printed and a caret under the position that could not be read.

    Examples
    --------
    >>> parse_spec("F(3,1)-G(25)")
    (FoldingSpec(patch_size=(3, 3), stride=(1, 1)), GMMSpec(n_components=25, independent=False))
    """
    if not isinstance(spec, str):
        raise TypeError(f"spec must be a str such as 'F(3,1)-G(25)'; got {type(spec).__name__}")
    if spec.strip() in PRESETS:
        spec = PRESETS[spec.strip()]
    elif spec.strip() in INDEPENDENT_PRESETS:
        spec = INDEPENDENT_PRESETS[spec.strip()]
    if not spec.strip():
        raise SpecError("spec is empty; expected layers such as 'F(28,1)-G(49)' or a preset A-G")
    layers: list[LayerSpec] = []
    pos = 0
    while True:
        match = _TOKEN.match(spec, pos)
        if match is None:
            bad = pos + len(spec[pos:]) - len(spec[pos:].lstrip())
            raise _caret(
                spec,
                bad,
                "expected a layer such as F(3,1), P(2,2), G(25) or C(10), or a preset A-G",
            )
        layers.append(_parse_layer(spec, match.start(1), match.group(1), match.group(2)))
        pos = match.end()
        if pos == len(spec):
            return tuple(layers)
        if spec[pos] != "-":
            raise _caret(spec, pos, "expected '-' between layers")
        pos += 1


def format_layer(layer: LayerSpec) -> str:
    """Return the canonical token of one layer spec."""
    if isinstance(layer, FoldingSpec):
        (fy, fx), (sy, sx) = layer.patch_size, layer.stride
        return f"F({fy},{sy})" if fy == fx and sy == sx else f"F({fy},{fx},{sy},{sx})"
    if isinstance(layer, PoolingSpec):
        return f"P({layer.kernel},{layer.stride}{',ceil' if layer.ceil_mode else ''})"
    if isinstance(layer, GMMSpec):
        return f"G({layer.n_components}{',indep' if layer.independent else ''})"
    return f"C({layer.n_classes}{',2' if layer.n_inputs == 2 else ''})"


def format_spec(layers: tuple[LayerSpec, ...]) -> str:
    """Return the canonical spec string; ``format_spec(parse_spec(s))`` is canonical."""
    return "-".join(format_layer(layer) for layer in layers)
