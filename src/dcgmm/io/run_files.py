"""Files of a run directory, written so that a crash never leaves half of one.

Every write goes to a temporary file in the same folder first and is then renamed over the
old one, so a crash leaves either the previous file or the new one. ``config.json`` says what
was trained; ``model.safetensors`` holds the tensors, with sha256s of them in its metadata
(checked on every read). Nothing here knows a model: the DCGMM's checkpoints are
:mod:`dcgmm.training.checkpoint`, the baselines' :mod:`dcgmm.baselines.runs`.
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

from dcgmm.exceptions import CheckpointError, OutputError

__all__ = [
    "CONFIG_FILE",
    "FORMAT_VERSION",
    "METRICS_FILE",
    "MODEL_FILE",
    "TEMPORARY_SUFFIX",
    "atomic_write_bytes",
    "metadata_digest",
    "read_config",
    "read_verified_safetensors",
    "remove_stale_temporaries",
    "tensors_digest",
    "write_config",
    "write_synced",
    "write_verified_safetensors",
]

FORMAT_VERSION = 1


CONFIG_FILE = "config.json"


MODEL_FILE = "model.safetensors"
METRICS_FILE = "metrics.jsonl"  # a DCGMM run's training curves, one JSON object per line


TEMPORARY_SUFFIX = ".tmp"


def write_synced(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` and flush it to the disk (the step that meets a full disk)."""
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename.

    The file's bytes reach the disk before the rename and the folder's entry after it, so
    neither a killed process nor a power cut leaves a partly written ``path``.

    Raises
    ------
    OutputError
        If the folder is read-only or the disk is full; the temporary file is removed and an
        earlier ``path`` is left as it was.
    """
    tmp: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(
            dir=path.parent, prefix=f".{path.name}.", suffix=TEMPORARY_SUFFIX
        )
        os.close(fd)
        tmp = Path(name)
        write_synced(tmp, data)
        os.replace(tmp, path)
    except BaseException as err:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        if isinstance(err, OSError) and not isinstance(err, OutputError):
            note = "; the previous file is kept" if path.exists() else ""
            raise OutputError.from_os_error(err, path, note=note) from err
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


def format_version_error(path: Path, version: object) -> CheckpointError:
    if version is None:
        return CheckpointError(
            f"{path} has no format version: it was not written by dcgmm (expected version "
            f"{FORMAT_VERSION}). Point to a run directory made by `dcgmm train`"
        )
    return CheckpointError(
        f"{path} has format version {version!r}; this dcgmm reads version {FORMAT_VERSION}. "
        "It was written by another dcgmm release: read it with that release, or retrain"
    )


def read_config(run_dir: Path) -> dict[str, Any]:
    """Read ``config.json`` of a run directory, checking its format version."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.exists():
        raise CheckpointError(
            f"{run_dir} is not a run directory: {CONFIG_FILE} is missing. "
            "Create one with `dcgmm train ... --out RUN_DIR`"
        )
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(
            f"{path} is not valid JSON ({err}); the file is truncated or corrupted"
        ) from None
    except OSError as err:
        raise CheckpointError(f"cannot read {path}: {err.strerror or err}") from None
    if not isinstance(config, dict):
        raise CheckpointError(
            f"{path} holds a JSON {type(config).__name__}; expected an object with spec, "
            "input_shape and format_version. The file is corrupted or not dcgmm's"
        )
    version = config.get("format_version")
    if version != FORMAT_VERSION:
        raise format_version_error(path, version)
    return config


def metadata_digest(metadata: dict[str, str]) -> str:
    """Return a sha256 over the metadata entries other than the digests themselves."""
    body = {k: v for k, v in metadata.items() if k not in ("sha256", "metadata_sha256")}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def write_verified_safetensors(
    path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]
) -> None:
    """Write ``tensors`` atomically, with sha256s of them and of ``metadata`` in the metadata."""
    body = {
        **metadata,
        "sha256": tensors_digest(tensors),
        "metadata_sha256": metadata_digest(metadata),
    }
    atomic_write_bytes(path, save_safetensors(tensors, metadata=body))


def read_verified_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Return ``(tensors, metadata)`` of a file written by :func:`write_verified_safetensors`.

    Raises :class:`CheckpointError` if it is missing, unreadable or fails its checksum. Files
    written before the metadata had its own checksum are verified on their tensors only.
    """
    if not path.exists():
        raise CheckpointError(f"{path} is missing: the run has not saved it yet")
    try:
        tensors = load_safetensors(path.read_bytes())
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        digest = tensors_digest(tensors)
    except (SafetensorError, ValueError, OSError, RuntimeError, TypeError) as err:
        # safetensors' and torch's own errors for a header or a body that does not parse
        raise CheckpointError(
            f"{path} is truncated or corrupted ({str(err).splitlines()[0][:200]}); expected a "
            "safetensors file written by dcgmm. Use an earlier copy or retrain"
        ) from None
    if metadata.get("sha256") != digest or (
        "metadata_sha256" in metadata and metadata["metadata_sha256"] != metadata_digest(metadata)
    ):
        raise CheckpointError(
            f"{path} fails its checksum: the file is corrupted. Use an earlier copy or retrain"
        )
    return tensors, metadata
