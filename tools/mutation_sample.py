"""Draw a seeded uniform sample of mutant names from a mutmut run's ``mutants/`` folder.

    python tools/mutation_sample.py mutants --n 200 --seed 20261201 > mutants/sample.txt

The names come from the ``*.meta`` files mutmut writes when it generates the mutants (a
``mutmut run`` with a name that matches nothing generates them and tests none). Running only
the sample (``mutmut run $(cat mutants/sample.txt)``) and scoring it with
``tools/mutation_report.py --sample`` estimates the suite's mutation score in a fraction of a
full run's time: with n = 200 and a score near 90%, the standard error is about 2 points.
"""

import argparse
import json
import random
import sys
from pathlib import Path


def mutant_names(mutants: Path) -> list[str]:
    """Return every mutant's name, sorted (the order does not depend on the file system)."""
    names = []
    for meta in mutants.glob("src/**/*.py.meta"):
        names.extend(json.loads(meta.read_text())["exit_code_by_key"])
    return sorted(names)


def main(argv: list[str] | None = None) -> int:
    """Print the sample, one name per line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("mutants", type=Path, help="the mutants/ folder mutmut generated")
    parser.add_argument("--n", type=int, default=200, help="sample size (default 200)")
    parser.add_argument("--seed", type=int, default=20261201, help="random seed")
    args = parser.parse_args(argv)
    names = mutant_names(args.mutants)
    if not names:
        print(f"no mutants under {args.mutants}; generate them with mutmut first", file=sys.stderr)
        return 1
    if not 0 < args.n <= len(names):
        print(f"--n must lie in 1..{len(names)} (the mutants there); got {args.n}", file=sys.stderr)
        return 2
    print("\n".join(sorted(random.Random(args.seed).sample(names, args.n))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
