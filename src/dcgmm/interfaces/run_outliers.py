"""The outlier protocol for any run directory, in one call: what ``dcgmm outliers`` runs.

A model with positions (a DCGMM) gets the full protocol of
:func:`dcgmm.evaluation.outlier_detection.detect_outliers`: an AUC per GMM layer and per-position
outlier maps against the training data's statistics (collected once and stored in the run).
A model with one score per image (the baselines) gets its adapter's ``outlier_score``, the
AUC and the ROC curve. Which one a run gets follows what its model takes
(``run.accepts("outliers")``), not its kind, and both results save and summarise alike.
"""

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from torch import Tensor

from dcgmm.evaluation.outlier_detection import (
    OutlierReport,
    detect_outliers,
    run_contrast,
    run_statistics,
    run_training_images,
)
from dcgmm.evaluation.outliers import roc_auc, roc_curve
from dcgmm.evaluation.plots import save_roc
from dcgmm.interfaces.runs import Run
from dcgmm.io.run_files import atomic_write_bytes
from dcgmm.model import DCGMM

__all__ = [
    "MapOutliers", "OutlierResult", "ScoreOutliers", "check_outlier_options", "run_outliers",
]  # fmt: skip


class OutlierResult(Protocol):
    """What :func:`run_outliers` returns, whatever the model."""

    @property
    def auc(self) -> float:
        """ROC AUC of inliers (positives) against outliers, by the headline score."""
        ...

    def save(
        self, out: Path, images: dict[str, Tensor], *, title: str, n_maps: int,
        context: dict[str, Any],
    ) -> list[Path]:  # fmt: skip
        """Write ``auc.json``, ``roc.png`` (and ``maps.png`` where there are maps)."""
        ...

    def summary(self) -> list[str]:
        """Return the lines that tell the result."""
        ...


@dataclass(frozen=True)
class MapOutliers:
    """A DCGMM's outlier report, with the model its maps are drawn through."""

    report: OutlierReport
    model: DCGMM

    @property
    def auc(self) -> float:
        """The headline layer's AUC."""
        return self.report.auc

    def save(
        self, out: Path, images: dict[str, Tensor], *, title: str, n_maps: int,
        context: dict[str, Any],
    ) -> list[Path]:  # fmt: skip
        """Write ``auc.json``, ``roc.png`` and ``maps.png``."""
        return self.report.save(out, self.model, images, title=title, n_maps=n_maps,
                                context=context)  # fmt: skip

    def summary(self) -> list[str]:
        """Return the headline and per-layer AUCs, and how many positions the maps flag."""
        r = self.report
        per_layer = ", ".join(f"{k}: {100 * v:.1f}" for k, v in r.auc_per_layer.items())
        contrast = []
        if r.contrast is not None and r.contrast_auc is not None:
            contrast = [f"AUC {100 * r.contrast_auc:.1f} by the layer contrast (layer "
                        f"{r.contrast.upper} vs {r.contrast.lower}, z-scores on "
                        f"{r.contrast.n_samples} training images)"]  # fmt: skip
        return [
            f"AUC {100 * r.auc:.1f} (layer {r.layer}, {r.kind}); per layer: {per_layer}",
            *contrast,
            f"maps of layer {r.map_layer}: {100 * r.flagged_fraction('inliers'):.1f}% of "
            f"inlier positions and {100 * r.flagged_fraction('outliers'):.1f}% of "
            f"outlier positions flagged (c = {r.c})",
        ]


@dataclass(frozen=True)
class ScoreOutliers:
    """The outlier protocol of a model with one score per image: AUC and ROC curve."""

    name: str
    score_name: str
    auc: float
    curve: tuple[np.ndarray, np.ndarray]

    def save(
        self, out: Path, images: dict[str, Tensor], *, title: str, n_maps: int,
        context: dict[str, Any],
    ) -> list[Path]:  # fmt: skip
        """Write ``auc.json`` and ``roc.png`` (no per-position maps: the model has none)."""
        result = {**context, "model": self.name, "score": self.score_name, "auc": self.auc}
        atomic_write_bytes(out / "auc.json", (json.dumps(result, indent=2) + "\n").encode())
        fpr, tpr = self.curve
        save_roc(out / "roc.png", {self.name: (fpr, tpr, self.auc)}, title=f"{self.name}\n{title}")
        return [out / "auc.json", out / "roc.png"]

    def summary(self) -> list[str]:
        """Return the AUC and its score."""
        return [
            f"AUC {100 * self.auc:.1f} ({self.name}, {self.score_name}); no per-position maps "
            f"for {self.name}"
        ]


def check_outlier_options(run: Run, **options: Any) -> None:
    """Fail before any data is read: an option the model does not take, or a bad GMM layer."""
    run.check_options("outliers", options)
    for name in ("layer", "map_layer"):
        if options.get(name) is not None:
            run.native.gmm_layer_number(options[name])  # ValueError naming the GMM layers


def run_outliers(
    run: Run, inliers: Tensor, outliers: Tensor, *, stats_limit: int | None = None,
    stats_data: str | None = None, **options: Any,
) -> OutlierResult:  # fmt: skip
    """Run the outlier protocol of ``run``'s model on two image sets (prepared by the run).

    For a DCGMM, ``options`` are :func:`~dcgmm.evaluation.outlier_detection.detect_outliers`'s
    (``kind``, ``layer``, ``map_layer``, ``c``, ``all_layers``); the per-position statistics
    are collected once on the run's training data (``stats_data``, a data source, for a run
    trained from Python on images in memory; ``stats_limit`` images at most) and stored in the
    run. ``contrast=True`` adds the layer contrast's AUC (:mod:`dcgmm.evaluation.contrast`),
    fitted on the same training images at every call. A model without positions takes none
    of these.

    Raises
    ------
    TypeError
        For an option that the run's model does not take.
    """
    stats = {"stats_limit": stats_limit, "stats_data": stats_data}
    check_outlier_options(run, **options, **{k: v for k, v in stats.items() if v is not None})
    if "kind" not in run.accepts("outliers"):  # one score per image: no layers, no maps
        scores = {"in": run.model.outlier_score(inliers), "out": run.model.outlier_score(outliers)}
        fpr, tpr, _ = roc_curve(scores["in"], scores["out"])
        auc = roc_auc(scores["in"], scores["out"])
        return ScoreOutliers(run.name, run.model.score_name, auc, (fpr, tpr))
    model: DCGMM = run.native
    kind = options.get("kind", "loglik")
    training = None  # the run's training images, loaded once for both fits below
    if options.pop("contrast", False):
        training = run_training_images(run.path, limit=stats_limit, data=stats_data)
        options["contrast"] = run_contrast(run.path, model, kind, training=training)
    statistics, source = run_statistics(
        run.path, model, kind, limit=stats_limit, data=stats_data, training=training
    )
    report = detect_outliers(model, inliers, outliers, statistics, statistics_source=source,
                             **options)  # fmt: skip
    return MapOutliers(report, model)
