"""Generation from a trained DCGMM: top-down sampling, sharpening, in-painting.

- :mod:`~dcgmm.generation.sampling`: top-down sampling with top-S and noise, gradient
  sharpening, class-conditional sampling;
- :mod:`~dcgmm.generation.inpainting`: masks and in-painting of any mask.

It imports the core (model, stages, layers) and :mod:`dcgmm.io` only.
"""

__all__: list[str] = []
