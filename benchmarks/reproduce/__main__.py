"""``python -m benchmarks.reproduce TABLE``."""

import sys

from benchmarks.reproduce import main

main(sys.argv[1:])
