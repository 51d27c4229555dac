"""Run directories, one library API for every model kind: what a run saves and how it loads.

A run directory holds ``config.json`` (what was trained, on what, with which versions) and
``model.safetensors`` (the tensors, checksummed; for a DCGMM also the trainer state). A DCGMM
run also keeps ``metrics.jsonl``. ``Trainer(..., run_dir=...)`` writes a complete DCGMM run
(:func:`dcgmm.training.checkpoint.run_config` is its ``config.json``); the baselines' runs
are written by :mod:`dcgmm.baselines.runs`. :func:`load_run` reads any of them and returns
the model behind the common :class:`~dcgmm.interfaces.image_model.ImageModel` interface,
with its config and training state.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from torch import Tensor

from dcgmm.interfaces.image_model import ImageModel, as_image_model
from dcgmm.io.run_files import read_config
from dcgmm.training.checkpoint import load_model, load_trainer_state

__all__ = ["Run", "load_run"]


@dataclass(frozen=True)
class Run:
    """A loaded run directory.

    Attributes
    ----------
    path : Path
        The run directory.
    kind : str
        ``"dcgmm"``, or the baseline's name (``"nsn"``, ``"dlgmm"``, ``"dldpmm"``,
        ``"gauss-vae"``).
    model : ImageModel
        The trained model behind the common interface; the native model is ``model.model``.
    config : dict
        The run's ``config.json``.
    trainer_state : dict or None
        A DCGMM run's trainer state at its last checkpoint (``step``, annealing, watchdog);
        None for a baseline.
    """

    path: Path
    kind: str
    model: ImageModel
    config: dict[str, Any]
    trainer_state: dict[str, Any] | None

    @property
    def native(self) -> Any:
        """The model itself (a :class:`~dcgmm.model.DCGMM`, an NSN or a VAE)."""
        return self.model.model  # type: ignore[attr-defined]

    @property
    def name(self) -> str:
        """The model in words: a DCGMM's spec string, or the baseline's name."""
        return str(self.native.spec) if self.kind == "dcgmm" else self.kind

    @property
    def data(self) -> dict[str, Any]:
        """The run's data record (``source``, ``classes``, ``resize``, ...), or ``{}``."""
        return dict(self.config.get("data") or {})

    def accepts(self, method: str) -> frozenset[str]:
        """Return the keyword options that the model takes in ``method``, beyond the protocol's.

        ``method`` is ``"sample"``, ``"inpaint"``, ``"evaluate"`` or ``"to"``. A DCGMM takes
        sampling configs, classes, an in-painting layer, clustering and a device; a baseline
        takes fewer (a VAE: importance samples in ``evaluate``). The command line refuses a
        flag whose option the run's model does not take.
        """
        options: Mapping[str, frozenset[str]] = getattr(self.model, "options", {})
        return options.get(method, frozenset())

    def prepare(self, images: Tensor) -> Tensor:
        """Return ``images`` as the model saw its training data (a VAE's: binarised)."""
        return cast(Tensor, self._adapter.prepare(images))

    def evaluate(self, images: Tensor, labels: Tensor | None = None, **options: Any) -> Any:
        """Score ``images`` (prepared) with the model's own measures.

        ``options`` must be in ``accepts("evaluate")``.

        Returns an object with ``to_dict()`` (for JSON) and ``str()`` (a table): a DCGMM's
        :class:`~dcgmm.evaluation.scores.Evaluation`, a VAE's importance-sampled
        ``-log p(x)``, an NSN's per-layer max-component scores.
        """
        self.check_options("evaluate", options)
        return self._adapter.evaluate(images, labels, **options)

    def sample(self, n: int, *, generator: torch.Generator | None = None, **options: Any) -> Tensor:
        """Draw ``n`` images; ``options`` must be in ``accepts("sample")``."""
        self.check_options("sample", options)
        return cast(Tensor, self._adapter.sample(n, generator=generator, **options))

    def inpaint(
        self,
        images: Tensor,
        missing: Tensor,
        *,
        generator: torch.Generator | None = None,
        **options: Any,
    ) -> Tensor:
        """Fill the ``missing`` pixels of ``images`` (prepared).

        ``options`` must be in ``accepts("inpaint")``.
        """
        self.check_options("inpaint", options)
        return cast(Tensor, self._adapter.inpaint(images, missing, generator=generator, **options))

    @property
    def _adapter(self) -> Any:
        # Every adapter that load_run returns has prepare and evaluate beside the protocol.
        return self.model

    def check_options(self, method: str, options: Mapping[str, Any]) -> None:
        """Raise a TypeError naming what ``method`` takes if ``options`` holds anything else."""
        unknown = sorted(set(options) - self.accepts(method))
        if unknown:
            takes = ", ".join(sorted(self.accepts(method))) or "no options"
            raise TypeError(
                f"{method} of a {self.name} run takes {takes}; got {', '.join(unknown)}"
            )


def load_run(run_dir: str | Path, *, map_location: str | torch.device = "cpu") -> Run:
    """Load any run directory (a DCGMM's or a baseline's), checksums verified.

    Raises
    ------
    CheckpointError
        If the directory is not a run, or a file is missing, corrupted or of another format.

    Examples
    --------
    >>> run = load_run("runs/e")  # doctest: +SKIP
    >>> run.model.sample(16)  # doctest: +SKIP
    """
    run_dir = Path(run_dir)
    config = read_config(run_dir)
    if config.get("kind") == "baseline":
        # Imported here: loading a DCGMM run (and `import dcgmm`) loads no baseline.
        from dcgmm.baselines.runs import load_baseline

        if torch.device(map_location).type != "cpu":
            raise ValueError(
                f"{run_dir} is a {config.get('model')} run (a baseline): baselines load and run "
                f"on the CPU only; got map_location={str(map_location)!r}"
            )
        name, model, _ = load_baseline(run_dir)
        data = config.get("data", {})
        options: dict[str, Any] = {}
        if name != "nsn":  # a VAE: flat vectors of a known shape, binarised as recorded
            if data.get("image_shape"):
                options["image_shape"] = tuple(data["image_shape"])
            options["binarization"] = data.get("binarize")
        return Run(run_dir, name, as_image_model(model, **options), config, None)
    dcgmm = load_model(run_dir, map_location=map_location)
    state = load_trainer_state(run_dir, model=dcgmm)
    return Run(run_dir, "dcgmm", as_image_model(dcgmm), config, state)
