"""``python -m dcgmm`` is the ``dcgmm`` command (``torchrun -m dcgmm`` uses this)."""

import sys

from dcgmm.cli import main

sys.exit(main())
