"""The outlier-detection protocol of a trained DCGMM, as one library call.

:func:`detect_outliers` scores inliers and outliers at every GMM layer, reports each layer's
ROC AUC (a score per image: the layer's mean over positions) and flags single positions whose
score lies more than ``c`` training standard deviations below the training mean
(:class:`~dcgmm.evaluation.outliers.PositionStatistics`, the 2021 paper's outlier maps).
:func:`run_statistics` gets those statistics for a run directory: stored, or collected on the
run's training data and stored. ``dcgmm outliers`` is these two calls and
:meth:`OutlierReport.save`.
"""

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

from dcgmm.evaluation.contrast import LayerContrast, fit_layer_contrast
from dcgmm.evaluation.outliers import (
    DEFAULT_C,
    STATISTICS_FILE,
    PositionStatistics,
    ScoreKind,
    fit_position_statistics,
    load_position_statistics,
    position_scores,
    roc_auc,
    roc_curve,
    save_position_statistics,
    to_pixels,
)
from dcgmm.evaluation.plots import save_outlier_maps, save_roc
from dcgmm.io.data import Dataset, load_dataset, parse_classes
from dcgmm.io.run_files import atomic_write_bytes, read_config
from dcgmm.model import DCGMM

__all__ = [
    "OutlierReport", "detect_outliers", "run_contrast", "run_statistics", "run_training_images",
]  # fmt: skip

logger = logging.getLogger(__name__)
ROLES = ("inliers", "outliers")


@dataclass(frozen=True)
class OutlierReport:
    """What :func:`detect_outliers` measured.

    Attributes
    ----------
    spec, kind : str
        The model's spec and the per-position score (``"loglik"``, ...).
    layer : int
        The GMM layer (1-based) whose AUC is the headline.
    auc_per_layer : dict
        ROC AUC of every GMM layer (inliers positive, higher score = more typical).
    curves : dict
        ``{label: (fpr, tpr, auc)}`` of the headline layer (of every layer with
        ``all_layers=True``).
    map_layer, c : int, float
        The layer of the outlier maps and the threshold width.
    flagged : dict
        Per role, the (N, H_l, W_l) maps of flagged positions (1.0 flagged, 0.0 not).
    statistics_source : str
        Where the training statistics came from.
    contrast, contrast_auc : LayerContrast or None, float or None
        The layer contrast (:mod:`dcgmm.evaluation.contrast`) and its AUC, where one was given.
    """

    spec: str
    kind: ScoreKind
    layer: int
    auc_per_layer: dict[int, float]
    curves: dict[str, tuple[np.ndarray, np.ndarray, float]]
    map_layer: int
    c: float
    flagged: dict[str, Tensor]
    statistics_source: str
    n: dict[str, int] = field(default_factory=dict)
    contrast: LayerContrast | None = None
    contrast_auc: float | None = None

    @property
    def auc(self) -> float:
        """ROC AUC of the headline layer."""
        return self.auc_per_layer[self.layer]

    def flagged_fraction(self, role: str) -> float:
        """Return the fraction of ``role``'s positions flagged in the map layer."""
        return float(self.flagged[role].double().mean())

    def to_dict(self, **context: Any) -> dict[str, Any]:
        """Return the report as JSON-ready data (``auc.json``); ``context`` adds fields."""
        return {
            **context,
            "spec": self.spec,
            "score": f"{self.kind}, mean over the layer's positions",
            "layer": self.layer,
            "auc": self.auc,
            "auc_per_layer": {str(n): a for n, a in self.auc_per_layer.items()},
            "maps": {
                "layer": self.map_layer,
                "rule": f"outlier where score < mean - c * std over training data, c = {self.c}",
                "statistics": self.statistics_source,
                "flagged_fraction_inliers": self.flagged_fraction("inliers"),
                "flagged_fraction_outliers": self.flagged_fraction("outliers"),
            },
            **self._contrast_dict(),
        }

    def _contrast_dict(self) -> dict[str, Any]:
        """Return ``{"layer_contrast": ...}`` where a contrast was scored, else nothing."""
        c = self.contrast
        if c is None:
            return {}
        rule = (f"z-score of layer {c.upper} minus z-score of layer {c.lower}, standardised on "
                f"{c.n_samples} training images")  # fmt: skip
        return {"layer_contrast": {"upper": c.upper, "lower": c.lower, "rule": rule,
                                   "auc": self.contrast_auc}}  # fmt: skip

    def save(
        self,
        out: str | Path,
        model: DCGMM,
        images: dict[str, Tensor],
        *,
        title: str,
        n_maps: int = 8,
        context: dict[str, Any] | None = None,
    ) -> list[Path]:
        """Write ``auc.json``, ``roc.png`` and ``maps.png`` (``n_maps`` images per role)."""
        out = Path(out)
        body = json.dumps(self.to_dict(**(context or {})), indent=2) + "\n"
        atomic_write_bytes(out / "auc.json", body.encode())
        save_roc(out / "roc.png", self.curves, title=f"{self.spec}\n{title}")
        n = min(n_maps, *(len(images[role]) for role in ROLES))
        rows = [
            (images[role][:n], to_pixels(model, self.map_layer, self.flagged[role][:n]))
            for role in ROLES
        ]
        save_outlier_maps(out / "maps.png", rows, n_cols=n)
        return [out / "auc.json", out / "roc.png", out / "maps.png"]


def detect_outliers(
    model: DCGMM,
    inliers: Tensor,
    outliers: Tensor,
    statistics: dict[int, PositionStatistics],
    *,
    kind: ScoreKind = "loglik",
    layer: int | str | None = None,
    map_layer: int | str | None = None,
    c: float = DEFAULT_C,
    all_layers: bool = False,
    statistics_source: str = "",
    contrast: LayerContrast | None = None,
) -> OutlierReport:
    """Run the outlier protocol on two image sets (N, H, W, C in [0, 1]).

    ``layer`` picks the headline AUC's GMM layer (default the top); ``map_layer`` the outlier
    maps' (default the highest GMM layer with more than one position, else the top). With
    ``contrast`` (:func:`~dcgmm.evaluation.contrast.fit_layer_contrast`, of the same ``kind``)
    the report adds the layer contrast's AUC and ROC curve.
    """
    if contrast is not None and contrast.kind != kind:
        raise ValueError(f"the contrast was fitted on {contrast.kind!r} scores; kind is {kind!r}")
    top = model.gmm_layer_number(layer)
    chosen_map = model.gmm_layer_number(map_layer) if map_layer is not None else None
    maps = {
        role: position_scores(model, images, kind=kind)
        for role, images in zip(ROLES, (inliers, outliers), strict=True)
    }
    means = {role: {n: m.flatten(1).mean(1) for n, m in maps[role].items()} for role in ROLES}
    per_layer = {n: roc_auc(means["inliers"][n], means["outliers"][n]) for n in maps["inliers"]}
    curves = {}
    for number in maps["inliers"]:
        if number == top or all_layers:
            fpr, tpr, _ = roc_curve(means["inliers"][number], means["outliers"][number])
            label = f"layer {number} {model.layers[number - 1].spec}"
            curves[label] = (fpr, tpr, per_layer[number])
    contrast_auc = None
    if contrast is not None:
        values = [contrast.combine(means[r][contrast.upper], means[r][contrast.lower])
                  for r in ROLES]  # fmt: skip
        contrast_auc = roc_auc(*values)
        fpr, tpr, _ = roc_curve(*values)
        curves[f"layer contrast {contrast.upper} vs {contrast.lower}"] = (fpr, tpr, contrast_auc)
    if chosen_map is None:
        wide = [n for n, m in maps["inliers"].items() if m[0].numel() > 1]
        chosen_map = wide[-1] if wide else top
    if chosen_map not in statistics:
        raise ValueError(
            f"the statistics cover GMM layers {sorted(statistics)}, not the map layer "
            f"{chosen_map}; collect them with fit_position_statistics"
        )
    flagged = {
        role: statistics[chosen_map].outlier_map(maps[role][chosen_map], c).double()
        for role in ROLES
    }
    return OutlierReport(
        model.spec, kind, top, per_layer, curves, chosen_map, c, flagged, statistics_source,
        {"inliers": len(inliers), "outliers": len(outliers)}, contrast, contrast_auc,
    )  # fmt: skip


def run_statistics(
    run_dir: str | Path,
    model: DCGMM,
    kind: ScoreKind,
    *,
    limit: int | None = None,
    data: str | None = None,
    training: tuple[Dataset, str] | None = None,
) -> tuple[dict[int, PositionStatistics], str]:
    """Return a run's per-position training statistics and where they came from.

    Stored ones are used when they are of ``kind`` and (with ``limit``) of that many images;
    otherwise they are collected on the run's training data (``data`` overrides its source)
    and stored beside the model. ``training``: those images and their line, if the caller
    already loaded them (:func:`run_training_images` with the same ``limit`` and ``data``).
    """
    run_dir = Path(run_dir)
    if (run_dir / STATISTICS_FILE).exists():
        stats, source = load_position_statistics(run_dir)
        first = next(iter(stats.values()))
        if first.kind == kind and limit in (None, first.n_samples):
            return stats, source
        logger.info(
            "stored statistics are of %s on %d images; collecting %s%s",
            first.kind, first.n_samples, kind, "" if limit is None else f" on {limit}",
        )  # fmt: skip
    train, where = training or run_training_images(run_dir, limit=limit, data=data)
    logger.info("collecting per-position statistics on %s", where)
    stats = fit_position_statistics(model, train.images, kind=kind)
    try:
        path = save_position_statistics(run_dir, stats, source=where)
        logger.info("stored them in %s", path)
    except OSError as err:
        logger.warning("could not store statistics in %s (%s); using them once", run_dir, err)
    return stats, where


def run_training_images(
    run_dir: str | Path, *, limit: int | None = None, data: str | None = None
) -> tuple[Dataset, str]:
    """Return a run's training images and a line that says where they came from.

    The images come from the data source in the run's ``config.json`` (``data`` overrides it),
    the first ``limit`` at most.
    """
    record = dict(read_config(Path(run_dir)).get("data") or {})
    data_source = data or record.get("source")
    if not data_source:
        raise ValueError(
            f"{run_dir}'s config.json names no training data to collect the statistics on "
            "(it was trained from Python on images in memory); pass data="
        )
    train = load_dataset(
        data_source,
        classes=parse_classes(record.get("classes")),
        limit_per_class=record.get("limit_per_class"),
        limit=record.get("limit"),
    )
    if limit is not None:
        train = Dataset(train.images[:limit], train.labels[:limit], train.name)
    return train, f"{data_source} train classes={record.get('classes')} n={len(train)}"


def run_contrast(
    run_dir: str | Path,
    model: DCGMM,
    kind: ScoreKind,
    *,
    limit: int | None = None,
    data: str | None = None,
    training: tuple[Dataset, str] | None = None,
) -> LayerContrast:
    """Fit the layer contrast of the top GMM layer and the one below on a run's training images.

    The images are :func:`run_training_images`'s; ``limit``, ``data`` and ``training`` as in
    :func:`run_statistics`.
    """
    train, where = training or run_training_images(run_dir, limit=limit, data=data)
    logger.info("fitting the layer contrast on %s", where)
    return fit_layer_contrast(model, train.images, kind=kind)
