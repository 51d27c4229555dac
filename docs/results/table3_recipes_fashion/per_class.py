"""Per-class judge accuracy of the sampling-E recipe's samples (Fashion-MNIST, E, seed 0).

    cd ROOT && OMP_NUM_THREADS=1 PYTHONPATH=src:. .venv/bin/python \
        docs/results/table3_recipes_fashion/per_class.py

Redraws the samples exactly as benchmarks/reproduce/table3.py does (the cached class models,
generator seed 1000 + class, 1000 per class, the recipe's knobs), judges them with the cached
small judge, and writes per_class.json beside this file; "real" is the same judge on the real
test images of the class.
"""

import json
from pathlib import Path

import torch

from benchmarks.reproduce.table3 import sampling_for
from dcgmm import load_dataset, load_model
from dcgmm.evaluation.judge import load_evaluator
from dcgmm.generation.sampling import sample

torch.set_num_threads(1)
RUNS = Path("runs/reproduce/fashion-mnist")
judge = load_evaluator(RUNS / "judge-small-0")[0].eval()
test = load_dataset(Path("../shared/data/fashion-mnist"), split="test")
with torch.no_grad():
    real_predicted = judge(test.images).argmax(1)
folder = RUNS / "recipes" / "E" / "s3000-seed0"
per_class, real, confusion = {}, {}, torch.zeros(10, 10, dtype=torch.long)
for cls in range(10):
    model = load_model(folder / f"class{cls}")
    drawn = sample(model, 1000, config=sampling_for(model, "recipes"),
                   generator=torch.Generator().manual_seed(1000 + cls))  # fmt: skip
    with torch.no_grad():
        predicted = judge(drawn).argmax(1)
    per_class[cls] = round(100 * float((predicted == cls).double().mean()), 1)
    real[cls] = round(100 * float((real_predicted[test.labels == cls] == cls).double().mean()), 1)
    confusion[cls] += torch.bincount(predicted, minlength=10)
result = {"per_class": per_class, "mean": round(sum(per_class.values()) / 10, 2),
          "real_test_per_class": real,
          "confusion_rows_true_cols_predicted": confusion.tolist()}  # fmt: skip
print(per_class, result["mean"])
out = Path(__file__).with_name("per_class.json")
out.write_text(json.dumps(result, indent=1) + "\n")
print(f"wrote {out}")
