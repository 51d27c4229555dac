"""Per-class judge accuracy of the ablation's samples, under both judges.

    cd ROOT && OMP_NUM_THREADS=1 PYTHONPATH=. .venv/bin/python \
        docs/results/table3_paper_judge_fashion/per_class.py

Redraws the samples exactly as benchmarks/reproduce/table3.py does (the cached class models,
generator seed 1000 + class, 1000 per class) and writes per_class.json beside this file.
"""

import json
from pathlib import Path

import torch

from benchmarks.reproduce.table3 import sampling_for
from dcgmm import load_model
from dcgmm.evaluation.judge import load_evaluator
from dcgmm.generation.sampling import sample

torch.set_num_threads(1)
RUNS = Path("runs/reproduce/fashion-mnist")
JUDGES = {"small (5 epochs)": "judge-small-0", "paper (5 epochs)": "judge-paper-e5-0"}
judges = {name: load_evaluator(RUNS / folder)[0].eval() for name, folder in JUDGES.items()}
result = {}
for preset in ("A", "E"):
    folder = RUNS / "paper" / preset / "s6000-annealed-seed0"
    per_judge = {name: {} for name in judges}
    confusion = {name: torch.zeros(10, 10, dtype=torch.long) for name in judges}
    for cls in range(10):
        model = load_model(folder / f"class{cls}")
        drawn = sample(model, 1000, config=sampling_for(model, "paper"),
                       generator=torch.Generator().manual_seed(1000 + cls))  # fmt: skip
        for name, judge in judges.items():
            with torch.no_grad():
                predicted = judge(drawn).argmax(1)
            per_judge[name][cls] = round(100 * float((predicted == cls).double().mean()), 1)
            confusion[name][cls] += torch.bincount(predicted, minlength=10)
    result[preset] = {
        name: {"per_class": per_judge[name],
               "mean": round(sum(per_judge[name].values()) / 10, 2),
               "confusion_rows_true_cols_predicted": confusion[name].tolist()}
        for name in judges
    }  # fmt: skip
    print(preset, {name: per_judge[name] for name in judges})
out = Path(__file__).with_name("per_class.json")
out.write_text(json.dumps(result, indent=1) + "\n")
print(f"wrote {out}")
