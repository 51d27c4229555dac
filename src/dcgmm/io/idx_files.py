"""IDX files (MNIST's format): the four files of a split, read and checked."""

import gzip
import math
import struct
import zlib
from pathlib import Path

import numpy as np

from dcgmm.exceptions import DataError

__all__ = ["IDX_DTYPES", "IDX_STEMS", "find_idx", "read_idx"]

IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.int16, 0x0C: np.int32, 0x0D: np.float32}
IDX_STEMS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


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
    except (OSError, EOFError, zlib.error) as err:  # gzip.BadGzipFile is an OSError
        raise DataError(
            f"cannot read IDX file {path}: {err}; expected an IDX file, gzip-compressed if its "
            "name ends in .gz. Download it again if it was cut short"
        ) from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_DTYPES:
        raise DataError(
            f"{path} is not an IDX file: bad magic number {raw[:4].hex()!r}; expected 0000 "
            "then a type code (08 for uint8) and the number of dimensions, as in MNIST's "
            "train-images-idx3-ubyte"
        )
    dtype, ndim = np.dtype(IDX_DTYPES[raw[2]]).newbyteorder(">"), raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path} is truncated: header of {header} bytes, file has {len(raw)}")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    expected = header + math.prod(dims) * dtype.itemsize  # Python ints: no overflow
    if len(raw) != expected:
        raise DataError(
            f"{path} has {len(raw)} bytes but its header {dims} needs {expected}; "
            "the file is truncated or corrupted. Download it again"
        )
    return (
        np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))
    )


def find_idx(folder: Path, stem: str) -> Path:
    """Return the IDX file ``stem`` of ``folder`` (gzipped or not), or raise a DataError."""
    for candidate in (folder / f"{stem}.gz", folder / stem, folder / stem.replace("-idx", ".idx")):
        if candidate.exists():
            return candidate
    raise DataError(
        f"folder {folder} has no {stem}[.gz]; expected the four standard IDX files "
        "(train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-...)"
    )
