"""Table III's results accumulate, as Table I's: a run merges its rows into ``table3.json``.

A row is one (dataset, model, protocol), the model's name carrying its solver and sampling
knobs; a run's rows replace the stored rows of the same key and keep the others, each row
naming the run (command, date, machine) that measured it. The merge is
:func:`benchmarks.reproduce.table1_merge.merge_results`.
"""

import json
import re
from pathlib import Path
from typing import Any

from benchmarks.reproduce.common import run_entry, update_summary, write_results
from benchmarks.reproduce.table1_merge import merge_results, run_lines

__all__ = ["CLASS_NAMES", "grid_file", "merge_runs", "per_class_lines", "write_table3"]

# Fashion-MNIST's labels (Xiao et al., 2017); MNIST's classes are their digits.
CLASS_NAMES = {
    "fashion-mnist": ("T-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt",
                      "sneaker", "bag", "boot"),
}  # fmt: skip


def grid_file(dataset: str, model: str, protocol: str, solver: str | None) -> str:
    """Return the file name of a row's sample grid, e.g. ``fashion-mnist_E_recipes.png``.

    A row's ablation labels (``E [shared layers]``) go into the name, so that rows of one
    preset and protocol that now share a table do not overwrite each other's grid. A judge's
    label (``E [paper judge]``) is left out: the judge does not change the samples.
    """
    em = "_em" if solver == "em" else ""
    labels = [label for label in re.findall(r"\[([^]]*)\]", model) if " judge" not in label]
    slug = "".join("_" + re.sub(r"[^a-z0-9.]+", "-", label.lower()).strip("-") for label in labels)
    return f"{dataset}_{model.split()[0]}_{protocol}{em}{slug}.png"


def per_class_lines(rows: list[dict[str, Any]]) -> list[str]:
    """Return the per-class section: each row's accuracy per intended class, beside the
    judges' own accuracy on real test images of that class (rows measured before runs kept
    per-class numbers are left out)."""
    lines: list[str] = []
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        measured = [r for r in rows if r["dataset"] == dataset and r.get("per_class_accuracy")]
        if not measured:
            continue
        names = CLASS_NAMES.get(dataset, tuple(str(c) for c in range(10)))
        lines += [
            "",
            f"Per intended class, {dataset} (% of samples the judges give their class, mean over "
            "seeds x judges; the last rows: the same judges on real test images):",
            "",
            "| model | protocol | " + " | ".join(names) + " |",
            "|---|---|" + "---:|" * len(names),
        ]
        judged_real = {}
        for r in measured:
            cells = " | ".join(f"{a:.1f}" for a in r["per_class_accuracy"])
            lines.append(f"| {r['model']} | {r['protocol']} | {cells} |")
            judge = r["metric"].split("(")[-1].rstrip(")")
            judged_real[judge] = r["judges_real_per_class_accuracy"]
        for judge, accuracies in judged_real.items():
            cells = " | ".join(f"{a:.1f}" for a in accuracies)
            lines.append(f"| real test images | ({judge}) | {cells} |")
    return lines


def merge_runs(
    previous: dict[str, Any] | None, new: dict[str, Any], command: dict[str, Any]
) -> dict[str, Any]:
    """Return ``previous`` (a ``table3.json``, or None) with the rows and runs of ``new``.

    Table III has no outlier maps; a per-seed record written before records named their
    model is read as its preset's.
    """
    if previous is not None:
        for record in previous["runs"]:
            record.setdefault("model", record.get("preset"))
        previous = {**previous, "maps": {}}
    merged = merge_results(previous, {**new, "maps": {}}, command)
    del merged["maps"]
    return merged


def write_table3(result: dict[str, Any], out: Path, command: str, wall: float) -> None:
    """Merge ``result`` into ``out/table3.json`` and write table3.md from the merged rows."""
    path = out / "table3.json"
    previous = json.loads(path.read_text()) if path.exists() else None
    entry = run_entry(command, wall)
    merged = merge_runs(previous, result, entry)
    lines = [
        "# Table III: sample quality of class-conditional generation",
        "",
        *run_lines(merged),
        "- protocol: one DCGMM per class, trained on that class's training images for the same "
        "number of steps (a budget in steps, or until annealed, never epochs: a class has a "
        "tenth of the images); samples drawn top-down (knobs in the row); every judge (a CNN "
        "trained on the real training set) classifies them. Accuracy: mean +- sd over seeds x "
        "judges. Fréchet distance: real test images vs samples in the judge's feature space "
        "(**not comparable to published FIDs**).",
        "- judges: the paper's Table VII CNN (`--judge paper`) is trained with Adam 1e-3, not "
        "the paper's 0.01, which left it at chance (10.0% test accuracy after 2 epochs on "
        "5,000 digits; 91.6% at 1e-3).",
        "- protocols: **paper** = Table V as printed (shared layers); **recipes** = the "
        "`sampling-E` script for E (independent lower layers, top K 25, delays 0/0.1/0.15, "
        "noise divisor 20), the outlier scripts' layer modes for the others.",
        "- training s: wall seconds of training, summed over the row's class models and seeds "
        "(one thread each, beside other jobs: not benchmarks).",
        "",
        "| dataset | preset | protocol | steps | annealed | accuracy (mean +- sd; seeds x judges) |"
        " paper | Fréchet distance | judges' test accuracy | training s | run |",
        "|---|---|---|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    for r in merged["rows"]:
        paper = f"{r['paper_mean']:.1f}" if r["paper_mean"] is not None else "-"
        if r["paper_sd"] is not None:
            paper += f" +- {r['paper_sd']:.1f}"
        judges = ", ".join(f"{100 * a:.1f}" for a in r["judge_test_accuracy"])
        lines.append(
            f"| {r['dataset']} | {r['model']} | {r['protocol']} | {r['steps']}"
            + (f" ({r['extended_models']} extended)" if r.get("extended_models") else "")
            + " | "
            f"{r['annealed_models']}/{r['n_models']} | **{r['mean']:.1f} +- {r['sd']:.1f}** "
            f"({r['n_seeds']} x {r['n_judges']}) | {paper} | {r['frechet_distance']:.2f} | "
            f"{judges} | {r['train_seconds']:.0f} | {r['run']} |"
        )
    lines += per_class_lines(merged["rows"])
    lines += ["", "First samples of every class (a row per class, the first seed):", ""]
    shown = set()  # rows that differ only by their judge share one grid: show it once
    for r in merged["rows"]:
        name = grid_file(r["dataset"], r["model"], r["protocol"], r.get("solver"))
        if name not in shown:
            shown.add(name)
            lines.append(f"![{r['dataset']} {r['model']} {r['protocol']}](table3/{name})")
    write_results(out, "table3", lines, merged)
    update_summary(out, "III", result["rows"])
