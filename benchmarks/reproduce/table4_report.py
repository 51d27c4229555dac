"""Table IV's results accumulate, as Tables I and III do: a run merges its rows into table4.json.

A row is one (dataset, model, protocol, classifier rate). A run replaces every stored row of
the (dataset, model, protocol) it trained, whatever their rates, since the rate chosen on
validation is chosen among one run's rates, and keeps the others; each row names the run
(command, date, machine) that measured it. What follows the marker line in table4.md was
written by hand (ablations, explanations) and is kept when the table above it is rewritten
(:data:`benchmarks.reproduce.common.HAND_WRITTEN`).
"""

import json
from pathlib import Path
from typing import Any

from benchmarks.reproduce.common import run_entry, update_summary, write_results
from benchmarks.reproduce.table1_merge import merge_results, run_lines

__all__ = ["PEERS_TABLE4", "summary_rows", "write_table4"]

PEERS_TABLE4 = {"RAT-SPN": (98.19, 89.52), "DGCSPN": (98.66, 90.74)}


def write_table4(result: dict[str, Any], out: Path, command: str, wall: float) -> None:
    """Merge ``result`` into ``out/table4.json``; write table4.md from the merged rows."""
    path = out / "table4.json"
    previous = json.loads(path.read_text()) if path.exists() else None
    entry = run_entry(command, wall)
    merged = merge_results(previous, {**result, "maps": {}}, entry)
    del merged["maps"]
    lines = [
        "# Table IV: classification with a classifier layer (preset B)",
        "",
        *run_lines(merged),
        "- protocol: a DCGMM plus a linear classifier layer, trained together on 90% of the "
        "training set (each layer on its own loss, no back-propagation between layers); the "
        "last 10% choose the classifier rate; accuracy on the whole test set, mean +- sd over "
        "seeds. **paper**: preset B as printed with either wiring; **recipes**: the authors' "
        "`classifier-B` network; **ours**: a network of ours, not the paper's (its note says "
        "which). `C(10,2)` reads the two highest GMM layers "
        "(the paper's setup), `C(10)` only the top one (the reference code's). The probe column "
        "(with `--probe`) fits scikit-learn's logistic regression to the classifier layer's "
        "inputs after training: if it is not better, the features, not the online SGD of the "
        "classifier layer, limit the accuracy.",
        "- train s: wall seconds of training, summed over the row's seeds; the machine ran other "
        "reproductions at the same time (one thread each): not benchmarks.",
        "",
        "| dataset | protocol | model | epochs | classifier lr | validation % | test accuracy % "
        "(mean +- sd, seeds) | paper % | logistic-regression probe % | train s | run |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in merged["rows"]:
        paper = f"{r['paper_mean']:.1f}" if r["paper_mean"] is not None else "-"
        probe = f"{100 * r['probe_accuracy']:.2f}" if r.get("probe_accuracy") else "-"
        best = " (best on validation)" if r["best_rate"] else ""
        lines.append(
            f"| {r['dataset']} | {r['protocol']} | `{r['model']}` | {r['epochs']} | "
            f"{r['classifier_lr']}{best} | {r['valid_mean']:.2f} | **{r['mean']:.2f} +- "
            f"{r['sd']:.2f}** ({r['n_seeds']}) | {paper} | {probe} | {r['train_seconds']:.0f} | "
            f"{r['run']} |"
        )
    notes = sorted({(r["model"], r["note"]) for r in merged["rows"]})
    lines += ["", *[f"- `{model}`: {note}" for model, note in notes]]
    lines += [
        "",
        "Published peers (2022 paper, Table IV; not re-run here): "
        + "; ".join(f"{k} {m} / {f}" for k, (m, f) in PEERS_TABLE4.items())
        + " (MNIST / FashionMNIST).",
    ]
    write_results(out, "table4", lines, merged)
    update_summary(out, "IV", summary_rows(result["rows"]), replace_by=_GROUP)


# The summary's rows of one trained (dataset, model, protocol) are replaced together: their
# metrics name the rate, and which rate was chosen on validation may change between runs.
_GROUP = ("table", "dataset", "model", "protocol")


def summary_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Return the rows for ``summary.json``, each metric naming its classifier rate.

    Rows of one model that differ only in the classifier rate would otherwise share the
    summary's key (table, dataset, model, protocol, metric) and be told apart by nothing.
    """
    named = []
    for row in rows:
        chosen = ", chosen on validation" if row.get("best_rate") else ""
        metric = f"{row['metric']} (classifier rate {row['classifier_lr']}{chosen})"
        named.append(row | {"metric": metric})
    return named
