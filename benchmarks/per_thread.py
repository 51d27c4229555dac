"""Run a benchmark once per torch thread count, one process each, and collect what each prints.

torch sets its thread pools once per process, so a benchmark that compares thread counts runs
itself as a worker per count: ``python -m MODULE --worker THREADS --repeats R``, which prints
its results as JSON on its last line.
"""

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def results_per_thread_count(module: str, threads: list[int], repeats: int) -> dict[int, Any]:
    """Return each worker's JSON results, by thread count, printing progress."""
    results = {}
    for count in threads:
        command = [sys.executable, "-m", module, "--worker", str(count), "--repeats", str(repeats)]
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True)
        results[count] = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"{count} thread(s) measured", flush=True)
    return results


def main(
    doc: str,
    module: str,
    *,
    out: Path,
    repeats: int,
    measure: Callable[[int, int], Any],
    report: Callable[[dict[int, Any], float, int], str],
    threads: list[int],
) -> None:
    """The command line of such a benchmark: ``[--out PAGE] [--repeats R]``.

    As a worker (``--worker T``), print ``measure(T, repeats)`` as JSON; else run a worker per
    thread count and write ``report(results by thread count, wall seconds, repeats)`` to PAGE.
    """
    parser = argparse.ArgumentParser(description=doc.split("\n")[0])
    parser.add_argument("--out", default=str(out))
    parser.add_argument("--repeats", type=int, default=repeats)
    parser.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:  # one process per thread count: torch's pools are set once
        print(json.dumps(measure(args.worker, args.repeats)))
        return
    start = time.perf_counter()
    results = results_per_thread_count(module, threads, args.repeats)
    page = report(results, time.perf_counter() - start, args.repeats)
    Path(args.out).write_text(page)
    print(page)
