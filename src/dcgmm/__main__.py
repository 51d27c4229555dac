"""``python -m dcgmm`` is the ``dcgmm`` command (``torchrun -m dcgmm`` uses this)."""

import sys

from dcgmm.cli.main import main

sys.exit(main())
