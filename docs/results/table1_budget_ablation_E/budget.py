"""Table I, preset E, paper protocol: outlier AUC against the training budget (figure, table).

    PYTHONPATH=. .venv/bin/python docs/results/table1_budget_ablation_E/budget.py

Reads ``e5/``, ``e10/``, ``e25/``, ``e50/table1.json`` beside this script (each written by
``python -m benchmarks.reproduce table1 --presets E --protocols paper --epochs N --seeds
0,1,2 --threads 1 --out docs/results/table1_budget_ablation_E/eN``), prints a markdown table
of AUC per seed and mean +- sd, and draws ``budget.png``.
"""

import json
from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

HERE = Path(__file__).parent
EPOCHS = [5, 10, 25, 50]
DATASETS = ["mnist", "fashion-mnist"]
PAPER = {"mnist": 92.8, "fashion-mnist": 74.9}
SCORES = [("auc", "top layer (the paper's score)"), ("auc_contrast", "layer contrast (ours)")]


def runs() -> list[dict]:
    found = []
    for epochs in EPOCHS:
        path = HERE / f"e{epochs}" / "table1.json"
        if path.exists():
            found += json.loads(path.read_text())["runs"]
    return found


def main() -> None:
    rows = runs()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    print("| dataset | epochs | steps | annealed | AUC % seeds | mean +- sd | layer contrast "
          "mean +- sd | sigma_som at the end (layers 2 / 4 / 6, median of seeds) |")
    print("|---|---:|---:|---:|---|---:|---:|---|")
    for ax, dataset in zip(axes, DATASETS):
        for key, label in SCORES:
            xs, means, sds = [], [], []
            for epochs in EPOCHS:
                sel = sorted((r for r in rows if r["dataset"] == dataset
                              and r["epochs"] == epochs), key=lambda r: r["seed"])  # fmt: skip
                if not sel:
                    continue
                values = np.array([100 * r[key] for r in sel])
                steps = sel[0]["steps"]
                ax.scatter([steps] * len(values), values, s=12, alpha=0.5,
                           color="C0" if key == "auc" else "C1")  # fmt: skip
                xs.append(steps)
                means.append(values.mean())
                sds.append(values.std(ddof=1))
                if key == "auc":
                    contrast = np.array([100 * r["auc_contrast"] for r in sel])
                    sigmas = " / ".join(
                        f"{np.median([r['sigma_som'][layer] for r in sel]):.3f}"
                        for layer in ("2", "4", "6")
                    )
                    annealed = sum(bool(r["annealed"]) for r in sel)
                    per_seed = " / ".join(f"{v:.2f}" for v in values)
                    print(f"| {dataset} | {epochs} | {steps} | {annealed}/{len(sel)} | "
                          f"{per_seed} | **{values.mean():.2f} +- {values.std(ddof=1):.2f}** | "
                          f"{contrast.mean():.2f} +- {contrast.std(ddof=1):.2f} | {sigmas} |")  # fmt: skip
            ax.errorbar(xs, means, yerr=sds, marker="o", capsize=3, label=label,
                        color="C0" if key == "auc" else "C1")  # fmt: skip
        ax.axhline(PAPER[dataset], color="k", ls="--", lw=1, label=f"paper {PAPER[dataset]}")
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xticks(xs, [f"{x:,}\n({e} ep.)" for x, e in zip(xs, EPOCHS)])
        ax.set_xlabel("training steps (batch 100)")
        ax.set_ylabel("outlier AUC % (class 0)")
        ax.set_title(f"{dataset}, preset E, paper protocol")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(HERE / "budget.png", dpi=110)


if __name__ == "__main__":
    main()
