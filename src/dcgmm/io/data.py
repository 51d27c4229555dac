"""Local image datasets as float32 NHWC tensors in [0, 1]. Nothing is ever downloaded.

A data source is one of:

* a built-in name, ``mnist`` or ``fashion-mnist``: small real subsets shipped in the package;
* a folder with the four standard IDX files (``train-images-idx3-ubyte[.gz]``, ...);
* a Keras-style ``.npz`` with ``x_train, y_train, x_test, y_test`` (uint8, (N,H,W[,C]));
* a folder of PNG/JPEG images (class subfolders optional) or a ``.npy`` array
  (:mod:`dcgmm.io.image_files`, which also reads any ``torch.utils.data.Dataset``).
"""

import difflib
import importlib.resources
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from dcgmm.exceptions import DataError
from dcgmm.io.idx_files import IDX_STEMS, find_idx, read_idx
from dcgmm.io.image_files import (
    check_size,
    is_image_folder,
    read_image_folder,
    read_npy,
    resize_images,
    torch_dataset_arrays,
)

__all__ = [
    "BUILTIN", "MAX_CLASS_RANGE", "Dataset", "Split", "builtin_path", "check_arrays",
    "from_torch_dataset", "load_dataset", "parse_classes", "read_arrays", "select", "to_nhwc_float",
]  # fmt: skip

Split = Literal["train", "test"]
BUILTIN = ("mnist", "fashion-mnist")


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


def _read_npz(path: Path, split: Split) -> tuple[np.ndarray, np.ndarray]:
    try:
        # Our own handle: np.load leaks its file when the zip directory is broken.
        with open(path, "rb") as handle, np.load(handle, allow_pickle=False) as archive:
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


def read_arrays(
    source: str | Path, split: Split, resize: tuple[int, int] | None = None
) -> tuple[np.ndarray, np.ndarray, str]:
    """Return raw ``(images, labels, name)`` of a source before any conversion.

    ``resize`` reaches only the folder reader, whose images may differ in size; the other
    sources hold one size and :func:`load_dataset` resizes them after the selection.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test'; got {split!r}")
    text = str(source)
    if text in BUILTIN:
        images, labels = _read_npz(builtin_path(text), split)
        return images, labels, f"builtin:{text}"
    path = Path(source)
    idx_files = path.is_dir() and any(path.glob(IDX_STEMS["train"][0] + "*"))
    if path.is_dir() and not idx_files:
        if is_image_folder(path):
            return read_image_folder(path, split, resize)
        raise DataError(
            f"folder {path} holds neither the four IDX files (train-images-idx3-ubyte.gz, ...) "
            "nor PNG or JPEG images (loose, or in one subfolder per class)"
        )
    if path.suffix == ".npy" and path.is_file():
        return read_npy(path, split)
    if path.is_dir():
        image_stem, label_stem = IDX_STEMS[split]
        images = read_idx(find_idx(path, image_stem))
        labels = read_idx(find_idx(path, label_stem))
        return images, labels, str(path)
    if path.suffix == ".npz" and path.exists():
        images, labels = _read_npz(path, split)
        return images, labels, str(path)
    close = difflib.get_close_matches(text, BUILTIN, n=1)
    if path.exists():
        problem, hint = "a file of unknown kind", ""
    elif close:
        problem, hint = "no such file or folder", f" Did you mean {close[0]!r}?"
    else:
        problem, hint = "no such file or folder", " Check the path."
    raise DataError(
        f"unknown data source {text!r} ({problem}): expected a built-in name {list(BUILTIN)}, "
        "a folder with the four IDX files, a folder of PNG/JPEG images, a Keras-style .npz or "
        f"a .npy file.{hint}"
    )


def check_arrays(images: np.ndarray, labels: np.ndarray, name: str) -> np.ndarray:
    """Raise a ``DataError`` unless ``images``/``labels`` are usable; return labels as (N,) int64.

    Images must be (N, H, W) or (N, H, W, C), uint8 or bool or float; labels (N,) or (N, 1)
    whole numbers.
    """
    if images.ndim not in (3, 4) or 0 in images.shape[1:]:
        raise DataError(
            f"{name}: images must be (N, H, W) or (N, H, W, C); got shape {images.shape}"
        )
    if images.ndim == 4 and images.shape[1] in (1, 3) and images.shape[3] not in (1, 3):
        raise DataError(
            f"{name}: images of shape {images.shape} look like NCHW; expected NHWC "
            "(channels last). Store np.transpose(x, (0, 2, 3, 1))"
        )
    if not (images.dtype in (np.uint8, np.bool_) or np.issubdtype(images.dtype, np.floating)):
        raise DataError(
            f"{name}: images have dtype {images.dtype}; expected uint8 pixels 0-255 (or float "
            "pixels in [0, 1]). Store them with x.astype(np.uint8)"
        )
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]  # Keras's CIFAR layout
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise DataError(
            f"{name}: {images.shape[0]} images but labels of shape {labels.shape}; expected one "
            "integer label per image"
        )
    if np.issubdtype(labels.dtype, np.integer):
        return labels.astype(np.int64)
    whole = np.issubdtype(labels.dtype, np.floating) and bool(
        np.all(np.isfinite(labels)) and np.all(labels == np.round(labels))
    )
    if not whole:
        raise DataError(
            f"{name}: labels must be whole numbers; got dtype {labels.dtype}. Store class "
            "indices 0, 1, 2, ..."
        )
    return labels.astype(np.int64)


def to_nhwc_float(images: np.ndarray, name: str) -> Tensor:
    """Convert (N,H,W) or (N,H,W,C) images to float32 NHWC in [0, 1].

    uint8 pixels are divided by 255 and bool ones become 0 or 1; float pixels must already
    lie in [0, 1].
    """
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4:
        raise DataError(f"{name}: images must be (N,H,W) or (N,H,W,C); got {images.shape}")
    if images.dtype == np.uint8:
        pixels = images.astype(np.float32)
        pixels /= 255.0  # in place: no second float copy of the whole set at the peak
        return torch.from_numpy(pixels)
    if images.dtype == np.bool_:
        return torch.from_numpy(images.astype(np.float32))
    # Check in the file's own precision: a float64 value beyond float32's range would turn
    # into Inf (with a warning) in the cast, and the message would blame the wrong value.
    values = images
    if values.size == 0:
        return torch.from_numpy(values.astype(np.float32))
    if not np.isfinite(values).all():
        raise DataError(
            f"{name}: images contain NaN or Inf; expected finite pixels. Fix or drop those images"
        )
    if values.min() < 0 or values.max() > 1:
        raise DataError(
            f"{name}: float images must lie in [0, 1]; got [{values.min()}, {values.max()}]. "
            "Store uint8 0-255 pixels, or rescale to [0, 1]"
        )
    return torch.from_numpy(values.astype(np.float32))


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
        if len(classes) == 0:
            raise DataError(
                f"{name}: classes is empty; expected at least one label. Pass classes=None "
                "to keep every class"
            )
        present = set(np.unique(labels).tolist())
        unknown = sorted(set(classes) - present)
        if unknown:
            raise DataError(
                f"{name}: classes {unknown} do not occur; present: {sorted(present)}. "
                "Choose classes from that list"
            )
        keep &= np.isin(labels, list(classes))
    if limit_per_class is not None:
        if limit_per_class <= 0:
            raise DataError(
                f"{name}: limit_per_class must be a positive number of samples; got "
                f"{limit_per_class}. Leave it out to keep every sample"
            )
        rank = np.zeros(len(labels), dtype=np.int64)
        for value in np.unique(labels[keep]):
            idx = np.nonzero(keep & (labels == value))[0]
            rank[idx] = np.arange(len(idx))
        keep &= rank < limit_per_class
    if limit is not None:
        if limit <= 0:
            raise DataError(
                f"{name}: limit must be a positive number of samples; got {limit}. Leave it "
                "out to keep every sample"
            )
        keep &= np.cumsum(keep) <= limit
    return images[keep], labels[keep]


def load_dataset(
    source: str | Path,
    *,
    split: Split = "train",
    classes: Sequence[int] | None = None,
    limit_per_class: int | None = None,
    limit: int | None = None,
    dtype: Literal["float32", "uint8", "auto"] = "float32",
    resize: tuple[int, int] | None = None,
    shard: tuple[int, int] | None = None,
) -> Dataset:
    """Load a split of a local dataset as float32 NHWC in [0, 1] (or its uint8 pixels).

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
    dtype : {"float32", "uint8", "auto"}
        ``"uint8"`` keeps 0-255 pixels as stored (a quarter of the memory; a ``Trainer``
        converts each batch), only for sources of uint8 pixels;
        ``"auto"`` keeps uint8 pixels and converts other ones to float32.
    resize : (int, int), optional
        Bring every image to (H, W) (:func:`dcgmm.io.image_files.resize_images`: antialiased
        bilinear), after the selection. Without it, images of different sizes are refused.
    shard : (int, int), optional
        ``(i, S)``: keep only block i of S equal contiguous blocks of the selection (each of
        ``N // S`` images; the remainder is dropped), before any conversion: what one of S
        processes holds with ``TrainConfig(data_shards=S)``.

    Raises
    ------
    DataError
        On a missing or malformed source, unknown classes or an empty selection.

    Notes
    -----
    Files store uint8 pixels 0-255 (divided by 255 here), bool pixels, or float pixels that
    already lie in [0, 1]; other dtypes are refused rather than guessed at.
    """
    size = check_size(resize) if resize is not None else None
    images, labels, name = read_arrays(source, split, size)
    labels = check_arrays(images, labels, name)
    if len(images) == 0:
        raise DataError(f"{name} holds no {split} images; expected at least one. Check that "
                        "the file is complete, or use another --data")  # fmt: skip
    images, labels = select(
        images, labels, classes=classes, limit_per_class=limit_per_class, name=name, limit=limit
    )
    if shard is not None:
        images, labels = _block(images, labels, shard, name)
    return _as_dataset(images if size is None else resize_images(images, size), labels, name, dtype)


def _as_dataset(images: np.ndarray, labels: np.ndarray, name: str, dtype: str) -> Dataset:
    """Return the selected arrays as a Dataset of float32 in [0, 1] or of uint8 pixels."""
    if dtype == "auto":
        dtype = "uint8" if images.dtype == np.uint8 else "float32"
    if dtype == "uint8":
        if images.dtype != np.uint8:
            raise DataError(
                f"{name} stores {images.dtype} pixels; dtype='uint8' keeps uint8 pixels only. "
                "Load it as float32"
            )
        pixels = torch.from_numpy(np.ascontiguousarray(images))
        pixels = pixels if pixels.ndim == 4 else pixels[..., None]
        return Dataset(pixels, torch.from_numpy(labels), name)
    if dtype != "float32":
        raise ValueError(f"dtype must be 'float32' or 'uint8'; got {dtype!r}")
    return Dataset(to_nhwc_float(images, name), torch.from_numpy(labels), name)


def _block(
    images: np.ndarray, labels: np.ndarray, shard: tuple[int, int], name: str
) -> tuple[np.ndarray, np.ndarray]:
    """Return block ``i`` of ``S`` equal contiguous blocks of the rows (``shard = (i, S)``)."""
    index, count = shard
    if not (isinstance(count, int) and count >= 1 and isinstance(index, int)
            and 0 <= index < count):  # fmt: skip
        raise ValueError(f"shard must be (i, S) with 0 <= i < S; got {shard!r}")
    size = len(images) // count
    if size == 0:
        raise DataError(f"{name}: {len(images)} images cannot fill {count} blocks of one or more")
    return images[index * size : (index + 1) * size], labels[index * size : (index + 1) * size]


def from_torch_dataset(
    dataset: object, *, limit: int | None = None, resize: tuple[int, int] | None = None
) -> Dataset:
    """Return a :class:`Dataset` of the first ``limit`` items of a ``torch.utils.data.Dataset``.

    Items are ``(image, label)`` or images (label 0); see
    :func:`dcgmm.io.image_files.torch_dataset_arrays` for the image kinds taken. ``resize``
    brings every image to (H, W), as in :func:`load_dataset`.
    """
    size = check_size(resize) if resize is not None else None
    images, labels, name = torch_dataset_arrays(dataset, limit=limit, resize=size)
    checked = check_arrays(images, labels, name)
    return Dataset(to_nhwc_float(images, name), torch.from_numpy(checked), name)


# A class range wider than this is a typo (``0-99999``), not a label set: refuse it before
# building the list.
MAX_CLASS_RANGE = 10_000


def parse_classes(text: str | None) -> tuple[int, ...] | None:
    """Parse ``"1,2,3"``, ``"1-9"`` or a mix (``"0,2-4"``) into a tuple of class labels."""
    if text is None or not text.strip():
        return None
    out: list[int] = []
    for part in (p.strip() for p in text.split(",")):
        low, dash, high = part[1:].partition("-")  # a leading '-' would be a sign
        try:
            lo, hi = (int(part[:1] + low), int(high)) if dash else (int(part), int(part))
        except ValueError:
            raise DataError(
                f"classes must look like '1,2,3' or '1-9' (or a mix: '0,2-4'); got {text!r}"
            ) from None
        if hi < lo or hi - lo >= MAX_CLASS_RANGE:
            raise DataError(
                f"class range {part!r} is empty or wider than {MAX_CLASS_RANGE} labels; "
                "expected low-high with low <= high, e.g. 1-9"
            )
        out.extend(range(lo, hi + 1))
    return tuple(out)
