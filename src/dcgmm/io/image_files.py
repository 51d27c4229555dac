"""Data sources beyond IDX and .npz: folders of image files, .npy arrays, PyTorch datasets.

* **A folder of images** (PNG or JPEG, grey or RGB). With one subfolder per class, as
  ``torchvision.datasets.ImageFolder`` lays them out, the labels are the subfolders: their
  names when all are whole numbers (``0/``, ``1/``, ...), else their index in sorted order.
  Without subfolders the images are unlabelled (label 0). A folder with ``train/`` and
  ``test/`` subfolders holds the two splits; any other folder is a training split only.
* **A .npy array** of shape (N, H, W) or (N, H, W, C), memory-mapped, unlabelled, a training
  split only.
* **Any** ``torch.utils.data.Dataset`` yielding ``(image, label)`` or images, through
  :func:`dcgmm.io.data.from_torch_dataset` (Python only).

Images are never resized silently: images of different sizes are refused with the sizes
found, unless a size is asked for (``resize=(H, W)``, ``--resize H,W``): then every image is
brought to it by :func:`resize_images`.
"""

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dcgmm.exceptions import DataError

__all__ = ["IMAGE_SUFFIXES", "check_size", "is_image_folder", "read_image_folder", "read_npy",
           "resize_images", "torch_dataset_arrays"]  # fmt: skip

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


RESIZE_HINT = "pass --resize H,W (Python: resize=(H, W)) to bring them all to one size"


def check_size(size: object) -> tuple[int, int]:
    """Return ``size`` as ``(H, W)``, or raise a ``ValueError`` if it is not two positive ints."""
    if (
        not isinstance(size, tuple | list)
        or len(size) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size)
    ):
        raise ValueError(f"resize must be two positive whole numbers (H, W); got {size!r}")
    return int(size[0]), int(size[1])


def resize_images(images: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Return (N, H, W[, C]) images brought to ``size`` = (h, w), in their own dtype.

    Bilinear interpolation with antialiasing (``torch.nn.functional.interpolate``, which
    averages over the footprint when shrinking, as PIL does); uint8 pixels are rounded back
    to uint8, bool pixels come back as float in [0, 1]. Done in chunks, so a memory-mapped
    array is read a part at a time.
    """
    h, w = check_size(size)
    if images.shape[1:3] == (h, w):
        return images
    chunks = []
    for start in range(0, images.shape[0], 1024):
        part = torch.from_numpy(np.asarray(images[start : start + 1024], dtype=np.float32))
        nchw = part.unsqueeze(1) if part.ndim == 3 else part.permute(0, 3, 1, 2)
        out = torch.nn.functional.interpolate(
            nchw, size=(h, w), mode="bilinear", antialias=True, align_corners=False
        )
        out = out.squeeze(1) if part.ndim == 3 else out.permute(0, 2, 3, 1)
        chunks.append(out.numpy())
    resized = np.concatenate(chunks)
    if images.dtype == np.uint8:
        return np.clip(np.rint(resized), 0, 255).astype(np.uint8)
    if images.dtype == np.bool_:
        return np.clip(resized, 0.0, 1.0)
    return resized.astype(images.dtype, copy=False)


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def is_image_folder(folder: Path) -> bool:
    """Return whether ``folder`` holds image files, class subfolders of them, or splits."""
    if _images_in(folder):
        return True
    subfolders = [p for p in folder.iterdir() if p.is_dir()]
    return any(_images_in(sub) for sub in subfolders) or any(
        (folder / split).is_dir() for split in ("train", "test")
    )


def _read_image(path: Path) -> np.ndarray:
    """Return one image as uint8 (H, W, C), C = 1 (grey) or 3 (RGB)."""
    from PIL import Image, UnidentifiedImageError  # matplotlib's dependency

    try:
        with Image.open(path) as image:
            mode = image.mode
            if mode in ("L", "I;16", "I", "1", "LA"):
                pixels = np.asarray(image.convert("L"))[..., None]
            elif mode in ("RGB", "RGBA", "P", "CMYK", "YCbCr"):
                pixels = np.asarray(image.convert("RGB"))
            else:
                raise DataError(f"{path}: image mode {mode!r}; expected grey or RGB")
    except (UnidentifiedImageError, OSError) as err:
        raise DataError(f"{path} is not a readable image ({err}); fix or remove it") from None
    return pixels


def _stack(paths: list[Path], name: str, resize: tuple[int, int] | None) -> np.ndarray:
    """Read ``paths`` and stack them, refusing mixed sizes (unless resized) and channels."""
    images = [_read_image(p) for p in paths]
    if resize is not None:
        images = [resize_images(im[None], resize)[0] for im in images]
    shapes = Counter(im.shape[:2] for im in images)
    if len(shapes) > 1:
        (common, _), *_ = shapes.most_common()
        odd = next(p for p, im in zip(paths, images, strict=True) if im.shape[:2] != common)
        found = ", ".join(f"{h}x{w} ({n})" for (h, w), n in shapes.most_common())
        raise DataError(
            f"{name}: images of different sizes: {found} (e.g. {odd}); expected one size. "
            f"dcgmm never resizes silently: {RESIZE_HINT}"
        )
    channels = Counter(im.shape[2] for im in images)
    if len(channels) > 1:
        odd = next(p for p, im in zip(paths, images, strict=True) if im.shape[2] == 1)
        raise DataError(
            f"{name}: grey and RGB images mixed ({channels[1]} grey, e.g. {odd}; {channels[3]} "
            "RGB); expected one kind. Convert them all to grey or all to RGB"
        )
    return np.stack(images)


def read_image_folder(
    folder: Path, split: str, resize: tuple[int, int] | None = None
) -> tuple[np.ndarray, np.ndarray, str]:
    """Return ``(images uint8 NHWC, labels, name)`` of a folder of images (module doc)."""
    if (folder / "train").is_dir() or (folder / "test").is_dir():
        if not (folder / split).is_dir():
            raise DataError(f"{folder} has no {split}/ subfolder; expected train/ and test/")
        folder = folder / split
    elif split == "test":
        raise DataError(
            f"{folder} is a folder of images with no test split; put the splits in train/ and "
            "test/ subfolders, or evaluate on another --data"
        )
    name = str(folder)
    flat = _images_in(folder)
    classes = sorted(p for p in folder.iterdir() if p.is_dir() and _images_in(p))
    if flat and classes:
        raise DataError(
            f"{name} holds both images and class subfolders ({classes[0].name}/, ...); "
            "expected one layout: move the loose images into a class subfolder"
        )
    if flat:
        return _stack(flat, name, resize), np.zeros(len(flat), dtype=np.int64), name
    if not classes:
        raise DataError(f"{name} holds no PNG or JPEG images (nor class subfolders of them)")
    numbered = all(c.name.isdigit() for c in classes)
    paths, labels = [], []
    for index, cls in enumerate(classes):
        files = _images_in(cls)
        paths += files
        labels += [int(cls.name) if numbered else index] * len(files)
    return _stack(paths, name, resize), np.asarray(labels, dtype=np.int64), name


def read_npy(path: Path, split: str) -> tuple[np.ndarray, np.ndarray, str]:
    """Return ``(images, labels 0, name)`` of a .npy array, memory-mapped."""
    if split == "test":
        raise DataError(f"{path} is one array with no test split; evaluate on another --data")
    try:
        images = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as err:
        raise DataError(f"{path} is not a plain .npy array ({err})") from None
    return images, np.zeros(images.shape[0], dtype=np.int64), str(path)


def _to_hwc(image: Any, index: int) -> np.ndarray:
    """Return one dataset item's image as (H, W, C): a CHW tensor, a PIL image or an array."""
    if isinstance(image, torch.Tensor):
        array = image.detach().cpu().numpy()
        if array.ndim == 3 and array.shape[0] in (1, 3) and array.shape[2] not in (1, 3):
            array = array.transpose(1, 2, 0)  # torchvision's CHW
    else:
        array = np.asarray(image)
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3:
        raise DataError(f"dataset item {index}: an image of shape {array.shape}; expected 2-D/3-D")
    return array


def torch_dataset_arrays(
    dataset: Any, *, limit: int | None = None, resize: tuple[int, int] | None = None
) -> tuple[np.ndarray, np.ndarray, str]:
    """Return ``(images (N, H, W, C), labels, name)`` of a ``torch.utils.data.Dataset``.

    Items are ``(image, label)`` or images alone (label 0); an image is a tensor (CHW as
    ``ToTensor`` makes it, or HW/HWC), a PIL image or an array, uint8 0-255 or float in [0, 1].
    :func:`dcgmm.io.data.from_torch_dataset` turns them into a Dataset.
    """
    n = len(dataset) if limit is None else min(limit, len(dataset))
    if n == 0:
        raise DataError("the dataset is empty; expected at least one image")
    images, labels = [], []
    for i in range(n):
        item = dataset[i]
        image, label = item if isinstance(item, tuple) and len(item) == 2 else (item, 0)
        hwc = _to_hwc(image, i)
        images.append(hwc if resize is None else resize_images(hwc[None], resize)[0])
        labels.append(int(label))
    shapes = Counter(im.shape for im in images)
    if len(shapes) > 1:
        found = ", ".join(f"{s} ({c})" for s, c in shapes.most_common())
        raise DataError(
            f"the dataset's images have different shapes: {found}; expected one, or "
            + RESIZE_HINT.replace("pass --resize H,W (Python: resize=(H, W))", "pass resize=(H, W)")
        )
    return np.stack(images), np.asarray(labels), f"{type(dataset).__name__} ({n} items)"
