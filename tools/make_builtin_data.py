"""Build the small real subsets shipped in src/dcgmm/_builtin from the canonical IDX files.

Run once from the repository root (the output is committed):

    .venv/bin/python tools/make_builtin_data.py ../shared/data

Each subset keeps the first 1000 training and 200 test images of every class, in file order.
"""

import sys
from pathlib import Path

import numpy as np

from dcgmm.io.data import read_arrays, select

TRAIN_PER_CLASS, TEST_PER_CLASS = 1000, 200


def main(shared: Path) -> None:
    """Write the two .npz subsets from the IDX folders under ``shared``."""
    out = Path(__file__).resolve().parents[1] / "src" / "dcgmm" / "_builtin"
    for name, folder in (("mnist", "mnist"), ("fashion-mnist", "fashion-mnist")):
        arrays = {}
        for split, limit in (("train", TRAIN_PER_CLASS), ("test", TEST_PER_CLASS)):
            images, labels, _ = read_arrays(shared / folder, split)  # type: ignore[arg-type]
            images, labels = select(images, labels, classes=None, limit_per_class=limit, name=name)
            arrays[f"x_{split}"], arrays[f"y_{split}"] = images, labels
        np.savez_compressed(out / f"{name}.npz", **arrays)
        print(name, {k: v.shape for k, v in arrays.items()})


if __name__ == "__main__":
    main(Path(sys.argv[1]))
