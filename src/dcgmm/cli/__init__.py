"""The ``dcgmm`` command: argparse shells that parse, call one library function and print.

:mod:`~dcgmm.cli.main` is the entry point (``dcgmm``, ``python -m dcgmm``). No library module
imports this package.
"""

__all__: list[str] = []
