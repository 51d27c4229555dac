"""Files: data sources and the files of a run directory; nothing here knows a model.

- :mod:`~dcgmm.io.data`: datasets (IDX, ``.npz``, the built-in subsets), ``load_dataset``;
- :mod:`~dcgmm.io.idx_files`, :mod:`~dcgmm.io.image_files`: IDX files; folders of PNG/JPEG
  images, ``.npy`` arrays, ``torch.utils.data.Dataset``;
- :mod:`~dcgmm.io.images`: PNG encoding and image grids;
- :mod:`~dcgmm.io.run_files`: a run directory's files, written atomically and read with
  checks.

It imports nothing of dcgmm but :mod:`dcgmm.exceptions` and the private helpers: every other
part may import it.
"""

__all__: list[str] = []
