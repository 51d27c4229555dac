"""Run a benchmark once per torch thread count, one process each, and collect what each prints.

torch sets its thread pools once per process, so a benchmark that compares thread counts runs
itself as a worker per count: ``python -m MODULE --worker THREADS --repeats R``, which prints
its results as JSON on its last line.
"""

import json
import subprocess
import sys
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
