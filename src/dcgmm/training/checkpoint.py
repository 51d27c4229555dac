"""A DCGMM's run directory: its ``config.json``, checkpoints, and loading the model back.

``model.safetensors`` holds parameters, buffers and the trainer's state in the file's
metadata, so one atomic rename (:mod:`dcgmm.io.run_files`) saves both.
"""

import json
from pathlib import Path
from typing import Any

import torch

from dcgmm._validation import check_device
from dcgmm._version import __version__
from dcgmm.exceptions import CheckpointError, SpecError
from dcgmm.io.run_files import (
    CONFIG_FILE,
    FORMAT_VERSION,
    MODEL_FILE,
    format_version_error,
    read_config,
    read_verified_safetensors,
    write_verified_safetensors,
)
from dcgmm.model import DCGMM
from dcgmm.training.config import TrainConfig

__all__ = [
    "check_fits",
    "load_model",
    "load_trainer_state",
    "read_checkpoint",
    "run_config",
    "save_checkpoint",
]


def run_config(
    model: DCGMM,
    config: TrainConfig,
    *,
    world_size: int = 1,
    info: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Return the ``config.json`` of a DCGMM run: enough to rebuild the model and its training.

    ``info`` adds what only the caller knows (the data's source, a preset name, TensorBoard
    settings); its keys may not shadow the ones computed here.
    """
    objectives = {gmm.objective for _, gmm in model.gmm_layers()}
    computed: dict[str, Any] = {
        "spec": model.spec,
        "input_shape": list(model.input_shape),
        "objective": objectives.pop() if len(objectives) == 1 else "annealed",
        "train": config.to_dict(),
        "versions": {"dcgmm": __version__, "torch": torch.__version__},
        "world_size": world_size,
    }
    clash = sorted(set(info or {}) & set(computed))
    if clash:
        raise ValueError(f"info may not set {clash}: the trainer writes them")
    return {**computed, **(info or {})}


def save_checkpoint(run_dir: Path, model: DCGMM, trainer_state: dict[str, Any]) -> None:
    """Save parameters, buffers and ``trainer_state`` to ``run_dir/model.safetensors``."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    metadata = {
        "format_version": str(FORMAT_VERSION),
        "spec": model.spec,
        "input_shape": json.dumps(list(model.input_shape)),
        "trainer_state": json.dumps(trainer_state),
    }
    write_verified_safetensors(Path(run_dir) / MODEL_FILE, tensors, metadata)


def read_checkpoint(run_dir: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Return ``(tensors, metadata)`` of ``run_dir/model.safetensors``, verified."""
    path = Path(run_dir) / MODEL_FILE
    tensors, metadata = read_verified_safetensors(path)
    version = metadata.get("format_version")
    if version != str(FORMAT_VERSION):
        raise format_version_error(path, version)
    return tensors, metadata


def _checked_config(run_dir: Path, config: dict[str, Any]) -> tuple[str, list[int], str]:
    """Return ``(spec, input_shape, objective)`` of a DCGMM run's config, checked."""
    spec, shape = config.get("spec"), config.get("input_shape")
    objective = config.get("objective", "annealed")
    if (
        not isinstance(spec, str)
        or not isinstance(shape, list)
        or not isinstance(objective, str)
        or len(shape) != 3
        or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in shape)
    ):
        raise CheckpointError(
            f"{run_dir / CONFIG_FILE}: expected spec (a string) and input_shape (three positive "
            f"ints); got spec={spec!r}, input_shape={shape!r}, objective={objective!r}. The "
            "file is corrupted or not a DCGMM run's"
        )
    return spec, shape, objective


def check_fits(model: DCGMM, metadata: dict[str, str], where: object) -> None:
    """Raise a ``CheckpointError`` unless a checkpoint's spec and input shape are ``model``'s."""
    spec, shape = metadata.get("spec"), metadata.get("input_shape")
    if spec != model.spec or shape != json.dumps(list(model.input_shape)):
        raise CheckpointError(
            f"{where} holds a model of spec {spec!r} for input {shape}; this model is "
            f"{model.spec!r} for input {json.dumps(list(model.input_shape))}. Load the run's "
            "own model with dcgmm.load_model(run_dir), or train this spec from scratch"
        )


def load_model(run_dir: str | Path, *, map_location: str | torch.device = "cpu") -> DCGMM:
    """Rebuild the model of a run directory and load its latest checkpoint.

    Raises
    ------
    CheckpointError
        If a file is missing, truncated, corrupted (checksums), of another format version, or
        if ``config.json`` and ``model.safetensors`` disagree (spec, input shape, tensors).
    """
    run_dir = Path(run_dir)
    device = check_device(map_location, "device")  # before reading: one clear line
    config = read_config(run_dir)
    spec, shape, objective = _checked_config(run_dir, config)
    tensors, metadata = read_checkpoint(run_dir)
    stored = (metadata.get("spec"), metadata.get("input_shape"))
    if stored != (spec, json.dumps(shape)):
        raise CheckpointError(
            f"{run_dir}: checkpoint spec {stored[0]!r} for input {stored[1]} differs from "
            f"config.json's {spec!r} for input {json.dumps(shape)}; the files come from "
            "different runs. Copy both from the same run"
        )
    try:
        model = DCGMM.from_spec(spec, shape, objective=objective)  # type: ignore[arg-type]
    except (SpecError, ValueError) as err:
        raise CheckpointError(f"{run_dir / CONFIG_FILE}: cannot rebuild the model: {err}") from None
    expected = model.state_dict()
    problems = [f"{k} is missing" for k in expected if k not in tensors]
    problems += [f"{k} is not part of the spec" for k in tensors if k not in expected]
    problems += [
        f"{k} has shape {tuple(tensors[k].shape)}, the spec needs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in tensors and tensors[k].shape != v.shape
    ]
    if problems:
        raise CheckpointError(
            f"{run_dir}: the checkpoint's tensors do not fit spec {spec!r}: "
            + "; ".join(problems[:3])
            + ". The files come from different runs or versions; retrain"
        )
    model.load_state_dict(tensors)
    return model.to(device)


def load_trainer_state(run_dir: str | Path, *, model: DCGMM | None = None) -> dict[str, Any]:
    """Return the trainer state stored with the latest checkpoint of ``run_dir``.

    With ``model``, first check that the checkpoint was made for that model's spec and input
    shape (a :class:`CheckpointError` otherwise).
    """
    path = Path(run_dir) / MODEL_FILE
    _, metadata = read_checkpoint(Path(run_dir))
    if model is not None:
        check_fits(model, metadata, path)
    try:
        state = json.loads(metadata["trainer_state"])
    except (KeyError, json.JSONDecodeError) as err:
        raise CheckpointError(
            f"{path} has no readable trainer state ({err!r}); the file is corrupted or was not "
            "written by a training run"
        ) from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: the trainer state is not a JSON object; it is corrupted")
    return state
