"""The two protocols a table can follow: the 2022 paper's text, and the authors' scripts.

``paper``: Table V's layer chains as printed (every GMM layer shared), the preset's recipe
learning-rate factors, delays 0/0.1/0.2/..., and a budget in steps or until annealed.
``recipes``: what the authors' experiment scripts build (``../shared/specs/dcgmm.md`` section
9): independent lower layers, other K and delays, their epochs. Every row of a table names
its protocol; where the scripts say nothing, a field keeps the paper's value and the recipe's
``note`` says so. A row's GMM layers are trained by SGD (the papers') or stepwise EM:
``--protocols paper:em`` (:func:`protocol_solver_pairs`), "E EM" in its model name.
"""

from dataclasses import dataclass, field
from typing import Any, Literal

from dcgmm.spec import PRESETS
from dcgmm.training.config import PRESET_TRAIN_OVERRIDES

Protocol = Literal["paper", "recipes"]
PROTOCOLS: tuple[Protocol, ...] = ("paper", "recipes")


@dataclass(frozen=True)
class Recipe:
    """One model of one table: its layer chain, training options and epochs."""

    spec: str
    epochs: int
    train: dict[str, Any] = field(default_factory=dict)  # TrainConfig fields
    note: str = ""


def paper_recipe(preset: str, epochs: int) -> Recipe:
    """Table V as printed: shared layers, the preset's factors, delays 0.1 per layer."""
    return Recipe(
        PRESETS[preset],
        epochs,
        dict(PRESET_TRAIN_OVERRIDES.get(preset, {})),
        "Table V as printed (shared layers)",
    )


# Table I, the `outliers-*` scripts. K: the scripts' overrides (X->Y in the spec: Y is used).
OUTLIER_RECIPES: dict[str, Recipe] = {
    "A": Recipe("F(28,1)-G(49)", 80, {"lr_factor_weights": 0.5, "lr_factor_precisions": 0.5}),
    "B": Recipe("F(8,2)-G(49,indep)-F(11,1)-G(49)", 80, {"layer_delays": (0.0, 0.1)}),
    "C": Recipe(
        "F(8,1)-G(49,indep)-P(2,2,ceil)-F(11,1)-G(49)",
        80,
        {"layer_delays": (0.0, 0.1)},
        "the scripts give no epochs for C: 80 as for A, B, E, F",
    ),
    "D": Recipe(
        "F(3,1)-G(25,indep)-P(2,2)-F(4,1)-G(25,indep)-P(2,2)-F(5,5)-G(25)",
        80,
        {"layer_delays": (0.0, 0.1, 0.2)},
        "top K 25 (the paper says 49); no epochs in the scripts: 80",
    ),
    "E": Recipe(
        "F(3,1)-G(25,indep)-F(4,2)-G(25,indep)-F(12,1)-G(49)",
        80,
        {"layer_delays": (0.0, 0.1, 0.2)},
    ),
    "F": Recipe(
        "F(3,1)-G(25,indep)-F(4,2)-G(25,indep)-F(4,2)-G(25,indep)-F(5,1)-G(49)",
        80,
        {"lr_factor_weights": 0.0, "layer_delays": (0.0, 0.1, 0.2, 0.0)},
        "top layer not delayed",
    ),
    "G": Recipe(
        "F(3,1)-G(25,indep)-P(2,2,ceil)-F(3,1)-G(25,indep)-P(2,2,ceil)-F(3,1)-G(25,indep)-"
        "P(2,2,ceil)-F(2,1)-G(49)",
        25,
        {"lr_factor_weights": 0.0, "layer_delays": (0.0, 0.1, 0.15, 0.2)},
    ),
}

# Table III, the `sampling-E` script: one model per class; top K 25, delays 0/0.1/0.15,
# sampled with top-S 2/2/all and noise divisor 20. The scripts give no other preset's sampling
# recipe: those keep their Table I layer modes.
SAMPLING_E = Recipe(
    "F(3,1)-G(25,indep)-F(4,2)-G(25,indep)-F(12,1)-G(25)",
    50,
    {"layer_delays": (0.0, 0.1, 0.15)},
    "sampling-E: top-S 2/2/all, noise divisor 20",
)
SAMPLING_E_KNOBS: dict[str, Any] = {"top_s": {2: 2, 4: 2}, "noise_divisor": 20.0}

# Table IV, the `classifier-B` script: the classifier reads the lower GMM layer
# (13 x 13 x 121 = 20,449 inputs); the layers above it do not feed the classifier.
CLASSIFIER_B = Recipe(
    "F(4,2)-G(121,indep)-C(10)",
    15,
    {"classifier_lr": 0.1},
    "classifier-B: F(4,2)-G(121,indep)-F(13,1)-G(16) with the classifier on layer 2; the "
    "upper F(13,1)-G(16) does not reach the classifier and is left out",
)


def outlier_recipe(preset: str, protocol: Protocol, paper_epochs: int) -> Recipe:
    """Return Table I's model of ``preset`` under ``protocol``."""
    if protocol == "paper":
        return paper_recipe(preset, paper_epochs)
    return OUTLIER_RECIPES[preset]


def protocol_solver_pairs(protocols: str, solvers: str) -> list[tuple[str, str]]:
    """Return the (protocol, solver) rows asked for by ``--protocols`` and ``--solvers``.

    ``paper,recipes,paper:em`` with ``--solvers sgd`` is paper and recipes by SGD, and paper
    by EM.
    """
    pairs = []
    for entry in protocols.split(","):
        protocol, _, solver = entry.partition(":")
        for chosen in [solver] if solver else solvers.split(","):
            if protocol not in PROTOCOLS or chosen not in ("sgd", "em"):
                raise SystemExit(
                    f"--protocols/--solvers: {entry!r} with {chosen!r}; expected a protocol of "
                    f"{PROTOCOLS}, optionally :sgd or :em, and solvers sgd, em"
                )
            pairs.append((protocol, chosen))
    return list(dict.fromkeys(pairs))


def model_name(preset: str, solver: str) -> str:
    """Return a row's model: the preset, with " EM" when its GMM layers were trained by EM."""
    return preset + (" EM" if solver == "em" else "")
