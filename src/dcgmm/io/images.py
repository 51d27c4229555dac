"""Image grids as PNG files, written with zlib alone (no imaging dependency)."""

import math
import struct
import zlib
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from dcgmm.io.run_files import atomic_write_bytes

__all__ = [
    "MISSING_TINT",
    "check_png_path",
    "decode_png",
    "encode_png",
    "masked_view",
    "read_png",
    "save_grid",
    "save_inpainting_grid",
    "tile",
]


def encode_png(pixels: np.ndarray) -> bytes:
    """Return PNG bytes of a uint8 image of shape (H, W) (gray) or (H, W, 3) (RGB)."""
    if pixels.dtype != np.uint8 or pixels.ndim not in (2, 3):
        raise ValueError(f"need uint8 (H, W) or (H, W, 3); got {pixels.dtype} {pixels.shape}")
    if pixels.ndim == 3 and pixels.shape[2] != 3:
        raise ValueError(f"colour images need 3 channels; got {pixels.shape[2]}")
    height, width = pixels.shape[:2]
    color_type = 0 if pixels.ndim == 2 else 2
    rows = pixels.reshape(height, -1)
    raw = np.concatenate([np.zeros((height, 1), np.uint8), rows], axis=1).tobytes()

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw, 6))
        + chunk(b"IEND", b"")
    )


def tile(
    images: Tensor | np.ndarray,
    *,
    n_cols: int | None = None,
    border: int = 1,
    scale: int = 2,
    normalize: bool = False,
) -> np.ndarray:
    """Arrange (N, H, W, C) images (C = 1 or 3) into one uint8 grid with light-gray borders.

    Values are clipped to [0, 1] unless ``normalize`` rescales each image to its own range
    (for centroids, whose values need not lie in [0, 1]).
    """
    arr = images.detach().cpu().float().numpy() if isinstance(images, Tensor) else images
    arr = np.asarray(arr, dtype=np.float32)
    if arr.ndim != 4 or arr.shape[3] not in (1, 3):
        raise ValueError(f"need (N, H, W, 1 or 3) images; got {arr.shape}")
    if normalize:
        lo = arr.min(axis=(1, 2, 3), keepdims=True)
        hi = arr.max(axis=(1, 2, 3), keepdims=True)
        arr = (arr - lo) / np.maximum(hi - lo, 1e-12)
    arr = np.clip(arr, 0.0, 1.0)
    n, h, w, c = arr.shape
    n_cols = n_cols or math.ceil(math.sqrt(n))
    n_rows = math.ceil(n / n_cols)
    cell_h, cell_w = h * scale + border, w * scale + border
    grid = np.full((n_rows * cell_h + border, n_cols * cell_w + border, c), 0.75, np.float32)
    big = arr.repeat(scale, axis=1).repeat(scale, axis=2)
    for i in range(n):
        r, col = divmod(i, n_cols)
        y, x = border + r * cell_h, border + col * cell_w
        grid[y : y + h * scale, x : x + w * scale] = big[i]
    out = (grid * 255 + 0.5).astype(np.uint8)
    return out[..., 0] if c == 1 else out


def check_png_path(path: str | Path) -> Path:
    """Return ``path`` if it names a ``.png`` file; a ValueError otherwise (we write PNG only)."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(
            f"{path}: dcgmm writes PNG images only, so the name must end in .png (got "
            f"{path.suffix or 'no suffix'}); e.g. {path.with_suffix('.png')}"
        )
    return path


def save_grid(path: str | Path, images: Tensor | np.ndarray, **kwargs: object) -> Path:
    """Write a grid of (N, H, W, C) images to a PNG file and return its path."""
    path = check_png_path(path)
    atomic_write_bytes(path, encode_png(tile(images, **kwargs)))  # type: ignore[arg-type]
    return path


def decode_png(data: bytes) -> np.ndarray:
    """Return the pixels of an 8-bit, non-interlaced PNG: (H, W) gray or (H, W, C) uint8.

    Enough for masks and small images made by common tools (gray, gray+alpha, RGB, RGBA);
    other PNG variants raise a ``ValueError`` that says which.
    """
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG file (bad signature)")
    pos, header, idat = 8, b"", bytearray()
    while pos + 8 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            idat += body
        elif kind == b"IEND":
            break
    if len(header) != 13:
        raise ValueError("PNG without a valid IHDR chunk")
    width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", header)
    channels = {0: 1, 2: 3, 4: 2, 6: 4}.get(color)
    if depth != 8 or channels is None or interlace:
        raise ValueError(
            f"only 8-bit non-interlaced gray/RGB(A) PNGs are supported; got bit depth {depth}, "
            f"colour type {color}, interlace {interlace}"
        )
    raw = np.frombuffer(zlib.decompress(bytes(idat)), np.uint8)
    stride = width * channels
    rows = raw.reshape(height, stride + 1)
    out = np.zeros((height, stride), np.int32)
    for y in range(height):
        _unfilter_row(rows[y, 0], rows[y, 1:].astype(np.int32), out, y, channels)
    pixels = out.astype(np.uint8).reshape(height, width, channels)
    return pixels[..., 0] if channels == 1 else pixels


def _unfilter_row(kind: int, line: np.ndarray, out: np.ndarray, y: int, bpp: int) -> None:
    """Undo one PNG row filter in place (spec: None, Sub, Up, Average, Paeth)."""
    prior = out[y - 1] if y > 0 else np.zeros_like(line)
    if kind == 0:
        out[y] = line
    elif kind == 2:
        out[y] = (line + prior) & 0xFF
    elif kind in (1, 3, 4):
        row = np.zeros_like(line)
        for i in range(line.shape[0]):
            left = row[i - bpp] if i >= bpp else 0
            if kind == 1:
                predict = left
            elif kind == 3:
                predict = (left + prior[i]) // 2
            else:
                up_left = prior[i - bpp] if i >= bpp else 0
                predict = _paeth(int(left), int(prior[i]), int(up_left))
            row[i] = (line[i] + predict) & 0xFF
        out[y] = row
    else:
        raise ValueError(f"corrupt PNG: unknown row filter {kind}")


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


def read_png(path: str | Path) -> np.ndarray:
    """Read an 8-bit PNG file (see :func:`decode_png`)."""
    return decode_png(Path(path).read_bytes())


# The colour of missing pixels in in-painting grids.
MISSING_TINT = (0.25, 0.45, 0.95)  # missing pixels in the "masked" column: blue, not black


def masked_view(images: Tensor, missing: Tensor) -> Tensor:
    """Return RGB images with the missing pixels painted in a tint (for the middle column)."""
    rgb = images.expand(*images.shape[:3], 3).clone() if images.shape[3] == 1 else images.clone()
    tint = torch.tensor(MISSING_TINT, dtype=rgb.dtype, device=rgb.device)
    where = missing.any(dim=3)
    rgb[where] = tint
    return rgb


def save_inpainting_grid(
    path: str | Path, images: Tensor, missing: Tensor, completed: Tensor
) -> Path:
    """Write original | masked (missing pixels tinted) | completed, a row per image."""

    def rgb(x: Tensor) -> Tensor:
        return x.expand(*x.shape[:3], 3) if x.shape[3] == 1 else x

    columns = torch.stack([rgb(images), masked_view(images, missing), rgb(completed)], dim=1)
    return save_grid(path, columns.reshape(-1, *columns.shape[2:]), n_cols=3, scale=2)
