"""Run directories, one library API for every model kind: what a run saves and how it loads.

A run directory holds ``config.json`` (what was trained, on what, with which versions) and
``model.safetensors`` (the tensors, checksummed; for a DCGMM also the trainer state). A DCGMM
run also keeps ``metrics.jsonl``. ``Trainer(..., run_dir=...)`` writes a complete DCGMM run
(:func:`dcgmm.training.checkpoint.run_config` is its ``config.json``); the baselines' runs
are written by :mod:`dcgmm.baselines.runs`. :func:`load_run` reads any of them and returns
the model behind the common :class:`~dcgmm.interfaces.image_model.ImageModel` interface,
with its config and training state.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

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

        name, model, _ = load_baseline(run_dir)
        shape = config.get("data", {}).get("image_shape")
        options = {"image_shape": tuple(shape)} if shape and name != "nsn" else {}
        return Run(run_dir, name, as_image_model(model, **options), config, None)
    dcgmm = load_model(run_dir, map_location=map_location)
    state = load_trainer_state(run_dir, model=dcgmm)
    return Run(run_dir, "dcgmm", as_image_model(dcgmm), config, state)
