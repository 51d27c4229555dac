"""One preset timed with two versions of dcgmm in the same run: a speed-up as a ratio.

    python -m benchmarks.versions --old-src ../old/src --label-old a269621
        [--presets E,E-indep,C,NSN] [--rounds 3] [--out docs/speed_versions.md]

``--old-src`` is the ``src`` folder of another checkout (``git worktree add ../old COMMIT``).
Each round runs :mod:`benchmarks.bench_preset` once per preset and version, alternating the two,
each in a fresh process with this checkout's benchmark code and the chosen version's package
first on ``PYTHONPATH``; the table gives medians over rounds and the ratio old / new. Use it on
an idle machine: both versions see the same load only if nothing else runs.
"""

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from dcgmm.spec import INDEPENDENT_PRESETS

ROOT = Path(__file__).resolve().parents[1]
# (label, bench_preset key): seconds per batch of 100 images, shown in ms.
FIGURES = [
    ("training step", "train_s"),
    ("evaluation", "eval_batch_s"),
    ("sampling (top-S 1)", "sample_batch_s"),
    ("in-painting (centre hidden)", "inpaint_batch_s"),
    ("sharpened sampling", "sharpen_batch_s"),
    ("NSN fit, 2,000 MNIST digits (ms of the whole fit)", "nsn_fit_s"),  # benchmarks.bench_nsn
]
NSN = "NSN"  # the pseudo-preset that times benchmarks.bench_nsn


def run_preset(src: Path, preset: str, sharpen: int | None, threads: int) -> dict[str, Any]:
    """Run bench_preset for one version in a fresh process and return its JSON row."""
    env = dict(os.environ, PYTHONPATH=f"{src}{os.pathsep}{ROOT}", OMP_NUM_THREADS=str(threads))
    # An older version may not know the -indep names: pass their spec strings.
    cmd = [sys.executable, "-m", "benchmarks.bench_preset", INDEPENDENT_PRESETS.get(preset, preset)]
    if preset == NSN:
        cmd = [sys.executable, "-m", "benchmarks.bench_nsn"]
    elif sharpen:
        cmd += ["--sharpen", str(sharpen)]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def table(rows: dict[tuple[str, str], list[dict[str, Any]]], presets: list[str], old: str) -> str:
    """Return the markdown table: medians per version and the ratio old / new."""
    lines = [f"| preset | figure | {old} ms | now ms | {old} / now |", "|---|---|---:|---:|---:|"]
    for preset in presets:
        for label, key in FIGURES:
            before = [r[key] for r in rows[(preset, "old")] if key in r]
            after = [r[key] for r in rows[(preset, "new")] if key in r]
            if not before or not after:
                continue
            b, a = statistics.median(before) * 1e3, statistics.median(after) * 1e3
            lines.append(f"| {preset} | {label} | {b:.1f} | {a:.1f} | {b / a:.2f}x |")
    return "\n".join(lines)


def nsn_fits(rows: dict[tuple[str, str], list[dict[str, Any]]], old: str) -> list[str]:
    """Lines saying what each version's NSN fits found (the same filters print the same hash)."""
    lines = []
    for version, label in (("old", old), ("new", "now")):
        for row in rows.get((NSN, version), []):
            lines.append(
                f"- NSN fit, {label}: filters {row['filters']} after {row['iterations']}"
                f" iterations, filter hash `{row['filters_sha256']}`"
            )
    return [*lines, ""] if lines else []


def main(argv: list[str]) -> None:
    """Time both versions and write the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--old-src", type=Path, required=True, help="the other version's src/")
    parser.add_argument("--label-old", default="old", help="its name in the table (a commit)")
    parser.add_argument("--presets", default="E,E-indep,C", help="and NSN: the NSN fit")
    parser.add_argument("--sharpen", type=int, default=20, help="sharpening iterations (C)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "speed_versions.md")
    args = parser.parse_args(argv)
    if not (args.old_src / "dcgmm" / "__init__.py").exists():
        parser.error(f"--old-src {args.old_src} has no dcgmm package; pass a checkout's src/")
    presets = [p.strip() for p in args.presets.split(",") if p.strip()]
    sources = {"old": args.old_src.resolve(), "new": (ROOT / "src").resolve()}
    rows: dict[tuple[str, str], list[dict[str, Any]]] = {}
    started = datetime.datetime.now(datetime.UTC)
    for round_ in range(args.rounds):
        for preset in presets:
            sharpen = args.sharpen if preset == "C" else None
            for version in ("old", "new") if round_ % 2 == 0 else ("new", "old"):
                row = run_preset(sources[version], preset, sharpen, args.threads)
                rows.setdefault((preset, version), []).append(row)
                print(f"round {round_ + 1} {preset} {version}: {json.dumps(row)}", flush=True)
    text = "\n".join(
        [
            "# Speed of two versions, same run",
            "",
            f"- date: {started.isoformat(timespec='seconds')}",
            f"- machine: {platform.machine()}, {platform.platform()}, {args.threads} threads",
            f"- torch {torch.__version__}, python {platform.python_version()}",
            f"- command: `python -m benchmarks.versions {' '.join(argv)}`",
            f"- {args.label_old} = `{args.old_src}`; now = this checkout. Median of "
            f"{args.rounds} rounds, the versions alternating, each in a fresh process; batch 100;"
            f" sharpening: preset C, {args.sharpen} iterations.",
            "",
            table(rows, presets, args.label_old),
            "",
            *nsn_fits(rows, args.label_old),
        ]
    )
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main(sys.argv[1:])
