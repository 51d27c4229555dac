"""Local image datasets as float32 NHWC tensors in [0, 1]. Nothing is ever downloaded.

A data source is one of:

* a built-in name, ``mnist`` or ``fashion-mnist``: small real subsets shipped in the package;
* a folder with the four standard IDX files (``train-images-idx3-ubyte[.gz]``, ...);
* a Keras-style ``.npz`` with ``x_train, y_train, x_test, y_test`` (uint8, (N,H,W[,C])).
"""

import gzip
import importlib.resources
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from dcgmm.exceptions import DataError

Split = Literal["train", "test"]
BUILTIN = ("mnist", "fashion-mnist")
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.int16, 0x0C: np.int32, 0x0D: np.float32}
_IDX_STEMS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


@dataclass(frozen=True)
class Dataset:
    """Images as float32 NHWC in [0, 1] and integer labels.

    Attributes
    ----------
    images : Tensor, shape (N, H, W, C)
    labels : Tensor, shape (N,), int64
    name : str
        Where the data came from, for logs and run directories.
    """

    images: Tensor
    labels: Tensor
    name: str

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(H, W, C)``."""
        h, w, c = self.images.shape[1:]
        return (h, w, c)


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (optionally gzip-compressed) into a numpy array.

    Raises
    ------
    DataError
        If the file is missing, truncated or not IDX.
    """
    path = Path(path)
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"IDX file {path} does not exist") from None
    except (OSError, EOFError, gzip.BadGzipFile) as err:
        raise DataError(f"cannot read IDX file {path}: {err}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DataError(f"{path} is not an IDX file (bad magic number {raw[:4].hex()!r})")
    dtype, ndim = np.dtype(_IDX_DTYPES[raw[2]]).newbyteorder(">"), raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path} is truncated: header of {header} bytes, file has {len(raw)}")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    expected = header + int(np.prod(dims)) * dtype.itemsize
    if len(raw) != expected:
        raise DataError(
            f"{path} has {len(raw)} bytes but its header {dims} needs {expected}; "
            "the file is truncated or corrupted"
        )
    return (
        np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))
    )


def _find_idx(folder: Path, stem: str) -> Path:
    for candidate in (folder / f"{stem}.gz", folder / stem, folder / stem.replace("-idx", ".idx")):
        if candidate.exists():
            return candidate
    raise DataError(
        f"folder {folder} has no {stem}[.gz]; expected the four standard IDX files "
        "(train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-...)"
    )


def _read_npz(path: Path, split: Split) -> tuple[np.ndarray, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            keys = set(archive.files)
            needed = {f"x_{split}", f"y_{split}"}
            if not needed <= keys:
                raise DataError(
                    f"{path} has arrays {sorted(keys)}; expected x_train, y_train, x_test, y_test "
                    "(Keras layout)"
                )
            return archive[f"x_{split}"], archive[f"y_{split}"]
    except DataError:
        raise
    except Exception as err:  # zipfile, pickle and format errors all mean "not a usable npz"
        raise DataError(f"cannot read {path} as .npz: {err}") from None


def builtin_path(name: str) -> Path:
    """Return the path of a built-in subset's .npz file."""
    resource = importlib.resources.files("dcgmm") / "_builtin" / f"{name}.npz"
    return Path(str(resource))


def read_arrays(source: str | Path, split: Split) -> tuple[np.ndarray, np.ndarray, str]:
    """Return raw ``(images, labels, name)`` of a source before any conversion."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test'; got {split!r}")
    text = str(source)
    if text in BUILTIN:
        images, labels = _read_npz(builtin_path(text), split)
        return images, labels, f"builtin:{text}"
    path = Path(source)
    if path.is_dir():
        image_stem, label_stem = _IDX_STEMS[split]
        images = read_idx(_find_idx(path, image_stem))
        labels = read_idx(_find_idx(path, label_stem))
        return images, labels, str(path)
    if path.suffix == ".npz" and path.exists():
        images, labels = _read_npz(path, split)
        return images, labels, str(path)
    raise DataError(
        f"unknown data source {text!r}: expected a built-in name {list(BUILTIN)}, a folder "
        "with the four IDX files, or a Keras-style .npz file"
    )


def to_nhwc_float(images: np.ndarray, name: str) -> Tensor:
    """Convert uint8 (N,H,W) or (N,H,W,C) images to float32 NHWC in [0, 1]."""
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4:
        raise DataError(f"{name}: images must be (N,H,W) or (N,H,W,C); got {images.shape}")
    if images.dtype == np.uint8:
        return torch.from_numpy(images.astype(np.float32) / 255.0)
    values = images.astype(np.float32)
    if not np.isfinite(values).all():
        raise DataError(f"{name}: images contain NaN or Inf")
    if values.min() < 0 or values.max() > 1:
        raise DataError(
            f"{name}: float images must lie in [0, 1]; got [{values.min()}, {values.max()}]. "
            "Store uint8 0-255 pixels, or rescale to [0, 1]"
        )
    return torch.from_numpy(values)


def select(
    images: np.ndarray,
    labels: np.ndarray,
    *,
    classes: Sequence[int] | None,
    limit_per_class: int | None,
    name: str,
    limit: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Keep ``classes``, the first ``limit_per_class`` of each, then the first ``limit``.

    Everything is in file order, so a selection is the same on every machine.
    """
    if len(images) != len(labels):
        raise DataError(f"{name}: {len(images)} images but {len(labels)} labels")
    keep = np.ones(len(labels), dtype=bool)
    if classes is not None:
        present = set(np.unique(labels).tolist())
        unknown = sorted(set(classes) - present)
        if unknown:
            raise DataError(f"{name}: classes {unknown} do not occur; present: {sorted(present)}")
        keep &= np.isin(labels, list(classes))
    if limit_per_class is not None:
        rank = np.zeros(len(labels), dtype=np.int64)
        for value in np.unique(labels[keep]):
            idx = np.nonzero(keep & (labels == value))[0]
            rank[idx] = np.arange(len(idx))
        keep &= rank < limit_per_class
    if limit is not None:
        if limit <= 0:
            raise DataError(f"{name}: limit must be a positive number of samples; got {limit}")
        keep &= np.cumsum(keep) <= limit
    return images[keep], labels[keep]


def load_dataset(
    source: str | Path,
    *,
    split: Split = "train",
    classes: Sequence[int] | None = None,
    limit_per_class: int | None = None,
    limit: int | None = None,
) -> Dataset:
    """Load a split of a local dataset as float32 NHWC in [0, 1].

    Parameters
    ----------
    source : str or Path
        A built-in name (``mnist``, ``fashion-mnist``), an IDX folder or a Keras .npz file.
    split : {"train", "test"}
        Which part.
    classes : sequence of int, optional
        Keep only these labels.
    limit_per_class : int, optional
        Keep the first ``limit_per_class`` samples of every class (in file order).
    limit : int, optional
        Then keep the first ``limit`` samples of the selection (in file order, so with the
        classes in their natural proportions).

    Raises
    ------
    DataError
        On a missing or malformed source, unknown classes or an empty selection.
    """
    images, labels, name = read_arrays(source, split)
    images, labels = select(
        images, labels, classes=classes, limit_per_class=limit_per_class, name=name, limit=limit
    )
    if len(images) == 0:
        raise DataError(f"{name} ({split}): the selection is empty")
    return Dataset(to_nhwc_float(images, name), torch.from_numpy(labels.astype(np.int64)), name)


def parse_classes(text: str | None) -> tuple[int, ...] | None:
    """Parse ``"1,2,3"`` or ``"1-9"`` into a tuple of class labels."""
    if text is None or not text.strip():
        return None
    out: list[int] = []
    try:
        for part in text.split(","):
            if "-" in part.strip()[1:]:
                lo, hi = part.split("-")
                out.extend(range(int(lo), int(hi) + 1))
            else:
                out.append(int(part))
    except ValueError:
        raise DataError(f"classes must look like '1,2,3' or '1-9'; got {text!r}") from None
    return tuple(out)
