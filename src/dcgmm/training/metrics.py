"""A trainer's records, typed: what ``Trainer.metrics()`` returns and ``metrics.jsonl`` holds.

Each line of a run's ``metrics.jsonl`` is :meth:`TrainingMetrics.to_dict` of one record; the
``callback`` of :meth:`dcgmm.training.trainer.Trainer.run` receives the record itself.
"""

from dataclasses import dataclass
from typing import Any

__all__ = ["LayerMetrics", "TrainingMetrics"]


@dataclass(frozen=True)
class LayerMetrics:
    """One trainable layer's means over the steps since the last record.

    A GMM layer has an ``objective`` (maximised; None while the layer waits for its delay),
    ``sigma_som``, ``n_reductions`` and SGD's ``lr`` or stepwise EM's ``em_step_size``; the
    classifier has a ``cross_entropy`` (minimised).
    """

    index: int  # 1-based position in the model, as `dcgmm info` numbers layers
    spec: str
    is_gmm: bool
    objective: float | None = None
    cross_entropy: float | None = None
    lr: float | None = None
    em_step_size: float | None = None
    sigma_som: float | None = None
    n_reductions: int | None = None

    @property
    def value(self) -> float | None:
        """The layer's own measure: a GMM's objective or the classifier's cross-entropy."""
        return self.objective if self.is_gmm else self.cross_entropy

    def to_dict(self) -> dict[str, Any]:
        """Return the layer's entry of a ``metrics.jsonl`` record."""
        if not self.is_gmm:
            return {"index": self.index, "spec": self.spec, "cross_entropy": self.cross_entropy}
        rate = {"em_step_size": self.em_step_size} if self.em_step_size is not None else {
            "lr": self.lr}  # fmt: skip
        return {"index": self.index, "spec": self.spec, "objective": self.objective, **rate,
                "sigma_som": self.sigma_som, "n_reductions": self.n_reductions}  # fmt: skip


@dataclass(frozen=True)
class TrainingMetrics:
    """A trainer's record at one step: every trainable layer's means, the classifier accuracy.

    ``classifier_accuracy`` is a fraction of the training batches since the last record, or
    None without a classifier.
    """

    step: int
    epoch: float
    layers: tuple[LayerMetrics, ...]
    classifier_accuracy: float | None

    def to_dict(self) -> dict[str, Any]:
        """Return the record as a line of ``metrics.jsonl`` holds it."""
        return {"step": self.step, "epoch": self.epoch,
                "layers": [layer.to_dict() for layer in self.layers],
                "classifier_accuracy": self.classifier_accuracy}  # fmt: skip
