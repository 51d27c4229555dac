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

from dcgmm.exceptions import CheckpointError, OutputError, SpecError
from dcgmm.model import DCGMM

FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
MODEL_FILE = "model.safetensors"


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


def _version_error(path: Path, version: object) -> CheckpointError:
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
        raise _version_error(path, version)
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


def read_checkpoint(run_dir: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Return ``(tensors, metadata)`` of ``run_dir/model.safetensors``, verified."""
    path = Path(run_dir) / MODEL_FILE
    tensors, metadata = read_verified_safetensors(path)
    version = metadata.get("format_version")
    if version != str(FORMAT_VERSION):
        raise _version_error(path, version)
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
    return model.to(map_location)


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
