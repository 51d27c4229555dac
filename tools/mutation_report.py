"""Summarise a mutmut run: mutants per module and verdict, the score, and every survivor.

    python tools/mutation_report.py mutants --out docs/mutation_results.json [--label after]

Reads the ``*.meta`` files mutmut writes beside each mutated module (``exit_code_by_key``)
and prints a markdown table; ``--out`` also writes the numbers and the survivors' names as
JSON (with the date, machine and versions). Score = killed / (killed + survived + no tests +
timeout): a mutant that no selected test runs counts against the suite.
"""

import argparse
import json
import platform
import sys
from collections import Counter
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

# mutmut's exit codes (mutmut.stats.status_by_exit_code), folded into four verdicts.
VERDICT = {1: "killed", 3: "killed", 0: "survived", 5: "no tests", 33: "no tests", 36: "timeout",
           -24: "timeout", 24: "timeout", 152: "timeout", 255: "timeout", 37: "killed"}  # fmt: skip


def verdict(code: int | None) -> str:
    """Return the verdict of one exit code."""
    if code is None:
        return "not checked"
    return VERDICT.get(code, "suspicious")


def collect(mutants: Path) -> dict[str, dict[str, str]]:
    """Return {module path: {mutant name: verdict}}."""
    out = {}
    for meta in sorted(mutants.glob("src/**/*.py.meta")):
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        module = str(meta.relative_to(mutants)).removesuffix(".meta")
        out[module] = {name: verdict(code) for name, code in sorted(codes.items())}
    return out


def score(counts: Counter) -> float | None:
    """Return the fraction of judged mutants that were killed."""
    judged = counts["killed"] + counts["survived"] + counts["no tests"] + counts["timeout"]
    return counts["killed"] / judged if judged else None


def table(results: dict[str, dict[str, str]]) -> str:
    """Return the markdown table of verdicts per module."""
    kinds = ["killed", "survived", "no tests", "timeout", "suspicious", "not checked"]
    lines = ["| module | mutants | " + " | ".join(kinds) + " | score |",
             "|---|---:|" + "---:|" * len(kinds) + "---:|"]  # fmt: skip
    total: Counter = Counter()
    for module, verdicts in results.items():
        counts = Counter(verdicts.values())
        total += counts
        s = score(counts)
        cells = " | ".join(str(counts[k]) for k in kinds)
        lines.append(f"| `{module}` | {len(verdicts)} | {cells} | "
                     f"{'' if s is None else f'{100 * s:.1f}%'} |")  # fmt: skip
    s = score(total)
    cells = " | ".join(str(total[k]) for k in kinds)
    lines.append(f"| **all** | {sum(total.values())} | {cells} | "
                 f"**{'' if s is None else f'{100 * s:.1f}%'}** |")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Print the table and the survivors; write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("mutants", type=Path, help="the mutants/ folder of a finished run")
    parser.add_argument("--out", type=Path, help="also write the numbers as JSON here")
    parser.add_argument("--label", default="", help="a name for this run in the JSON")
    parser.add_argument("--wall-minutes", type=float, help="the run's wall time, to record")
    args = parser.parse_args(argv)
    results = collect(args.mutants)
    if not results:
        print(f"no mutmut results under {args.mutants}; run `make mutants` first", file=sys.stderr)
        return 1
    print(table(results))
    survivors = [name for v in results.values() for name, x in v.items() if x != "killed"]
    print(f"\n{len(survivors)} not killed:")
    for name in survivors:
        print(f"- {name}")
    if args.out:
        total = Counter(x for v in results.values() for x in v.values())
        record = {
            "label": args.label,
            "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": f"{platform.machine()}, {platform.processor() or 'unknown CPU'}",
            "python": platform.python_version(),
            "torch": version("torch"),
            "mutmut": version("mutmut"),
            "wall_minutes": args.wall_minutes,
            "counts": dict(total),
            "score": score(total),
            "modules": {m: dict(Counter(v.values())) for m, v in results.items()},
            "not_killed": {n: x for v in results.values() for n, x in v.items() if x != "killed"},
        }
        args.out.write_text(json.dumps(record, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
