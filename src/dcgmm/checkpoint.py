"""Run directories: ``config.json`` and ``model.safetensors``.

``config.json`` says what was trained; ``model.safetensors`` holds parameters, buffers and the
trainer's state in the file's metadata, so one atomic rename saves both.

Every write goes to a temporary file in the same folder first and is then renamed over the
old one, so a crash leaves either the previous checkpoint or the new one, never half of one.
"""

import glob
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from dcgmm.exceptions import CheckpointError
from dcgmm.model import DCGMM

FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
MODEL_FILE = "model.safetensors"


TEMPORARY_SUFFIX = ".tmp"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename.

    The file's bytes reach the disk before the rename and the folder's entry after it, so
    neither a killed process nor a power cut leaves a partly written ``path``.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMPORARY_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)


def _fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (POSIX; Windows cannot open a folder)."""
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_stale_temporaries(run_dir: Path, names: tuple[str, ...]) -> list[Path]:
    """Delete the temporary files of ``names`` that a crash left in ``run_dir`` mid-write.

    Call it only while no other process writes there (e.g. when resuming).
    """
    stale = sorted(
        path
        for name in names
        for path in Path(run_dir).glob(f".{glob.escape(name)}.*{TEMPORARY_SUFFIX}")
    )
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def tensors_digest(tensors: dict[str, torch.Tensor]) -> str:
    """Return a sha256 over names, dtypes, shapes and bytes of ``tensors`` (sorted by name)."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def write_config(run_dir: Path, config: dict[str, Any]) -> None:
    """Write ``config.json`` atomically (with the format version)."""
    body = {"format_version": FORMAT_VERSION, **config}
    atomic_write_bytes(run_dir / CONFIG_FILE, (json.dumps(body, indent=2) + "\n").encode())


def read_config(run_dir: Path) -> dict[str, Any]:
    """Read ``config.json`` of a run directory, checking its format version."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.exists():
        raise CheckpointError(
            f"{run_dir} is not a run directory: {CONFIG_FILE} is missing. "
            "Create one with `dcgmm train ... --out RUN_DIR`"
        )
    try:
        config: dict[str, Any] = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path} is not valid JSON: {err}") from None
    version = config.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has format version {version!r}; this dcgmm reads version {FORMAT_VERSION}"
        )
    return config


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


def write_verified_safetensors(
    path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]
) -> None:
    """Write ``tensors`` atomically, with their sha256 added to ``metadata``."""
    body = {**metadata, "sha256": tensors_digest(tensors)}
    atomic_write_bytes(path, save_safetensors(tensors, metadata=body))


def read_verified_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Return ``(tensors, metadata)`` of a file written by :func:`write_verified_safetensors`.

    Raises :class:`CheckpointError` if it is missing, unreadable or fails its checksum.
    """
    if not path.exists():
        raise CheckpointError(f"{path} is missing: the run has not saved it yet")
    try:
        tensors = load_safetensors(path.read_bytes())
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except (SafetensorError, ValueError, OSError) as err:
        raise CheckpointError(f"{path} is truncated or corrupted: {err}") from None
    if metadata.get("sha256") != tensors_digest(tensors):
        raise CheckpointError(f"{path} fails its checksum: the file is corrupted")
    return tensors, metadata


def read_checkpoint(run_dir: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Return ``(tensors, metadata)`` of ``run_dir/model.safetensors``, verified."""
    path = Path(run_dir) / MODEL_FILE
    tensors, metadata = read_verified_safetensors(path)
    if metadata.get("format_version") != str(FORMAT_VERSION):
        raise CheckpointError(
            f"{path} has format version {metadata.get('format_version')!r}; "
            f"this dcgmm reads version {FORMAT_VERSION}"
        )
    return tensors, metadata


def load_model(run_dir: str | Path, *, map_location: str | torch.device = "cpu") -> DCGMM:
    """Rebuild the model of a run directory and load its latest checkpoint."""
    run_dir = Path(run_dir)
    config = read_config(run_dir)
    tensors, metadata = read_checkpoint(run_dir)
    if metadata.get("spec") != config["spec"]:
        raise CheckpointError(
            f"{run_dir}: checkpoint spec {metadata.get('spec')!r} differs from config.json's "
            f"{config['spec']!r}; the files come from different runs"
        )
    model = DCGMM.from_spec(
        config["spec"], config["input_shape"], objective=config.get("objective", "annealed")
    )
    try:
        model.load_state_dict(tensors)
    except RuntimeError as err:
        raise CheckpointError(f"{run_dir}: checkpoint does not fit the spec: {err}") from None
    return model.to(map_location)


def load_trainer_state(run_dir: str | Path) -> dict[str, Any]:
    """Return the trainer state stored with the latest checkpoint of ``run_dir``."""
    _, metadata = read_checkpoint(Path(run_dir))
    state: dict[str, Any] = json.loads(metadata["trainer_state"])
    return state
