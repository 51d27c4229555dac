"""Run directories of the baseline models: the same files as a DCGMM run, another ``kind``.

``config.json`` holds ``{"kind": "baseline", "model": "dlgmm" | "dldpmm" | "gauss-vae" |
"nsn", "settings": {...}, "data": {...}}``; ``model.safetensors`` the tensors with a sha256 of
them in its metadata (checked on load), written atomically.
"""

import json
from pathlib import Path
from typing import Any

from dcgmm.baselines.nsn import NSN
from dcgmm.baselines.vae import DeepLatentGMM
from dcgmm.exceptions import CheckpointError
from dcgmm.io.run_files import (
    CONFIG_FILE,
    MODEL_FILE,
    read_config,
    read_verified_safetensors,
    write_config,
    write_verified_safetensors,
)

__all__ = [
    "BASELINES",
    "VAE_MODELS",
    "BaselineModel",
    "describe",
    "is_baseline_run",
    "load_baseline",
    "save_baseline",
    "vae_settings",
]

VAE_MODELS = ("dlgmm", "dldpmm", "gauss-vae")
BASELINES = (*VAE_MODELS, "nsn")
BaselineModel = DeepLatentGMM | NSN


def is_baseline_run(run_dir: str | Path) -> bool:
    """Return whether ``run_dir`` holds a baseline model (not a DCGMM)."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.exists():
        return False
    return bool(read_config(Path(run_dir)).get("kind") == "baseline")


def vae_settings(model: DeepLatentGMM) -> dict[str, Any]:
    """Return everything needed to rebuild ``model``'s architecture."""
    return {
        **model.describe(),
        "n_inputs": model.n_inputs,
        "hidden": model.trunk.out_features,
        "kl_terms": model.kl_terms,
    }


def save_baseline(
    run_dir: str | Path,
    name: str,
    model: BaselineModel,
    *,
    data: dict[str, Any],
    extra: dict[str, Any],
) -> None:
    """Write ``config.json`` and ``model.safetensors`` of a baseline run."""
    run_dir = Path(run_dir)
    if isinstance(model, NSN):
        settings: dict[str, Any] = {
            "input_shape": list(model.input_shape),
            "architecture": [list(a) for a in model.architecture],
            "similarity": model.similarity,
            "sigma_min": model.sigma_min,
            "filter_counts": model.filter_counts(),
        }
    else:
        settings = vae_settings(model)
    write_config(
        run_dir, {"kind": "baseline", "model": name, "settings": settings, "data": data, **extra}
    )
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    write_verified_safetensors(run_dir / MODEL_FILE, tensors, {"model": name})


def load_baseline(run_dir: str | Path) -> tuple[str, BaselineModel, dict[str, Any]]:
    """Return ``(name, model, config)`` of a baseline run directory, checksum verified."""
    run_dir = Path(run_dir)
    config = read_config(run_dir)
    tensors, _ = read_verified_safetensors(run_dir / MODEL_FILE)
    name, settings = config["model"], config["settings"]
    model: BaselineModel
    if name == "nsn":
        model = NSN(
            tuple(settings["input_shape"]),
            [tuple(a) for a in settings["architecture"]],
            similarity=settings["similarity"],
            sigma_min=settings["sigma_min"],
        )
        model.load_filters(tensors)
    elif name in VAE_MODELS:
        model = DeepLatentGMM(**settings)
        try:
            model.load_state_dict(tensors)
        except RuntimeError as err:
            raise CheckpointError(
                f"{run_dir}: the tensors do not fit the settings: {err}"
            ) from None
    else:
        raise CheckpointError(f"{run_dir}: unknown baseline model {name!r}; expected {BASELINES}")
    return name, model, config


def describe(config: dict[str, Any]) -> str:
    """Return a one-line summary of a baseline run's config."""
    return json.dumps({"model": config["model"], **config["settings"]})
