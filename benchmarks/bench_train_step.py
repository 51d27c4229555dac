"""Median time of one training step (batch 100) per preset, written to docs/benchmarks.md.

    make bench            # or: .venv/bin/python -m benchmarks.bench_train_step [PRESETS...]

A step is what `Trainer.train_step` does: the forward pass of every layer, each layer's own
loss, one backward, the SGD update and the precision projection, plus the annealing
bookkeeping (`_end_windows`). All layers are active (no start delay). Data: the built-in
MNIST subset.
"""

import datetime
import json
import platform
import sys
from pathlib import Path

import torch
from torch.utils.benchmark import Timer

import dcgmm
from dcgmm import DCGMM, TrainConfig, Trainer, load_dataset

DOCS = Path(__file__).resolve().parents[1] / "docs"
# Reference points measured on this 2-core machine by the author (not by this script).
AUTHORS_TF2 = {"A": 0.016, "E": 1.87}


def time_step(preset: str, images: torch.Tensor) -> dict[str, float | str]:
    model = DCGMM.from_spec(preset, (28, 28, 1), generator=torch.Generator().manual_seed(0))
    trainer = Trainer(model, TrainConfig(steps=10**9, layer_delay=0.0), images)
    for _ in range(5):  # warm-up
        trainer.train_step()

    def step() -> None:
        trainer.train_step()
        trainer._end_windows()

    timer = Timer(stmt="step()", globals={"step": step}, num_threads=torch.get_num_threads())
    measurement = timer.blocked_autorange(min_run_time=3.0)
    return {
        "preset": preset,
        "spec": model.spec,
        "median_s": measurement.median,
        "iqr_s": measurement.iqr,
        "n_runs": len(measurement.times),
    }


def main(presets: list[str]) -> None:
    images = load_dataset("mnist").images
    rows = []
    for preset in presets:
        row = time_step(preset, images)
        print(json.dumps(row), flush=True)
        rows.append(row)
    machine = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    lines = [
        "# Benchmarks",
        "",
        "## Training step (batch 100, float32, CPU)",
        "",
        f"- date: {datetime.date.today().isoformat()}",
        f"- machine: {platform.platform()}, {machine}",
        f"- versions: dcgmm {dcgmm.__version__}, torch {torch.__version__}, "
        f"python {platform.python_version()}",
        "- command: `make bench` (`python -m benchmarks.bench_train_step`)",
        "- method: `torch.utils.benchmark.Timer.blocked_autorange(min_run_time=3)`, median of "
        "blocks; every layer active; annealing bookkeeping included",
        "",
        "| preset | spec | median ms/step | IQR ms | authors' TF2 code, s/step |",
        "|---|---|---:|---:|---:|",
    ]
    for row in rows:
        ref = AUTHORS_TF2.get(str(row["preset"]))
        ref_text = f"{ref}" if ref is not None else "-"
        lines.append(
            f"| {row['preset']} | `{row['spec']}` | {1000 * float(row['median_s']):.2f} | "
            f"{1000 * float(row['iqr_s']):.2f} | {ref_text} |"
        )
    lines += [
        "",
        "The authors' TF2 timings are the figures quoted in issue #2 for this machine type; they",
        "were not re-measured by this script.",
        "",
    ]
    DOCS.mkdir(exist_ok=True)
    (DOCS / "benchmarks.md").write_text("\n".join(lines))
    print(f"wrote {DOCS / 'benchmarks.md'}")


if __name__ == "__main__":
    main(sys.argv[1:] or list(dcgmm.PRESETS))
