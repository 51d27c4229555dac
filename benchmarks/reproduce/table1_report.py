"""Table I's report: ``table1.md`` from the rows merged into ``table1.json``.

The rows accumulate (:mod:`benchmarks.reproduce.table1_merge`): the table shows every stored
row with the run that measured it, the header lists those runs' commands, and the pictures
(ROC curves, preset E's outlier maps) name the run that drew them.
"""

from pathlib import Path
from typing import Any

from benchmarks.reproduce.common import run_entry, update_summary, write_results
from benchmarks.reproduce.table1_merge import (
    dataset_order,
    merge_results,
    read_previous,
    run_lines,
    save_roc_figures,
)

__all__ = ["CONTRAST_SAMPLES", "MAP_PRESET", "PAPER_TABLE2", "write_table1"]

PAPER_TABLE2 = {  # published peers (2022 paper, Table II), MNIST / FashionMNIST
    "RAT-SPN": (91.8, 39.2),
    "DGCSPN": (90.6, 57.1),
    "PD-SPN": (91.2, 48.5),
}
MAP_PRESET = "E"  # the preset whose outlier maps are drawn
CONTRAST_SAMPLES = 10000  # training images (a seeded draw) that standardise the layer contrast


def write_table1(result: dict[str, Any], out: Path, command: str, wall: float) -> None:
    """Merge ``result`` into ``out/table1.json`` (:mod:`.table1_merge`) and write table1.md."""
    previous, points = read_previous(out)
    entry = run_entry(command, wall)
    merged = merge_results(previous, result, entry)
    points = {**{k: v for k, v in points.items() if k not in result["roc"]}, **result["roc"]}
    datasets = sorted({r["dataset"] for r in merged["rows"]}, key=dataset_order)
    (out / "table1").mkdir(parents=True, exist_ok=True)
    lines = [
        "# Table I/II: outlier detection (train on 1-9, class 0 as outliers)",
        "",
        *run_lines(merged),
        *PROTOCOL_LINES,
        "",
        "| dataset | preset | protocol | steps | annealed | AUC (mean +- sd, seeds) | max-comp. |"
        " layer contrast | paper | lower layers' AUC | Dunn | Davies-Bouldin | train s | run |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|",
        *[table_line(r) for r in merged["rows"]],
        *note_lines(merged["rows"]),
        *save_roc_figures(out, merged, points, datasets),
        *map_lines(merged["maps"]),
    ]
    write_results(out, "table1", lines, merged)
    update_summary(out, "I", result["rows"] + contrast_rows(result["rows"]))


CONTRAST_METRIC = (
    "outlier AUC % (layer contrast: the top GMM layer's log-likelihood z-score minus the "
    "next lower GMM layer's, standardised on training images; our rule, not the paper's)"
)


def contrast_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Return a summary row for each row scored by the layer contrast as well: the same
    model, protocol and seeds, the model named ``[layer contrast]``."""
    return [
        {**r, "model": f"{r['model']} [layer contrast]", "metric": CONTRAST_METRIC,
         "mean": r["contrast"]["mean"], "sd": r["contrast"]["sd"]}
        for r in rows if r.get("contrast")
    ]  # fmt: skip


PROTOCOL_LINES = [
    "- protocol: one model per preset, protocol, dataset and seed, trained on the training "
    "images of classes 1-9; score = the top GMM layer's log-likelihood "
    "per image; AUC of test classes 1-9 (inliers, positive) vs test class 0 (outliers). "
    "'max-comp.' scores with log max_k pi_k N_k instead (the training loss at the "
    "annealing floor). 'layer contrast' scores with the top layer's z-score minus the next "
    f"lower GMM layer's, both standardised on {CONTRAST_SAMPLES:,} training images "
    "(`dcgmm.evaluation.contrast`; our rule, not the paper's; '-' where the row was measured "
    "before it existed or the model has one GMM layer). AUC in %.",
    "- clustering: the top layer's hard assignments of the first 2000 inlier test images "
    "in the space it models (its input); Dunn index (higher is better), Davies-Bouldin "
    "(lower is better).",
    "- train s: wall seconds of training, summed over the row's seeds, one thread each while "
    "other reproductions shared the machine (not a benchmark; see docs/benchmarks.md for "
    "timings).",
]


def table_line(r: dict[str, Any]) -> str:
    """Return one row of the table."""
    paper = f"{r['paper_mean']:.1f}" if r["paper_mean"] is not None else "-"
    if r["paper_sd"] is not None:
        paper += f" +- {r['paper_sd']:.1f}"
    top = str(max(int(k) for k in r["auc_per_layer"]))
    lower = ", ".join(f"L{k}: {v:.1f}" for k, v in r["auc_per_layer"].items() if k != top)
    return (
        f"| {r['dataset']} | {r['model']} | {r['protocol']} | {r['steps']} | "
        f"{r['annealed_seeds']}/{r['n_seeds']} | **{r['mean']:.1f} +- {r['sd']:.1f}** "
        f"({r['n_seeds']}) | {r['auc_max_component']:.1f} | {contrast_cell(r)} | {paper} | "
        f"{lower or '-'} | "
        f"{r['dunn']:.4f} | {r['davies_bouldin']:.2f} | {r['train_seconds']:.0f} | "
        f"{r.get('run', '?')} |"
    )


def contrast_cell(r: dict[str, Any]) -> str:
    """Return the layer contrast's AUC, mean +- sd, or '-' (one GMM layer, or not scored)."""
    c = r.get("contrast")
    return f"{c['mean']:.1f} +- {c['sd']:.1f}" if c else "-"


def note_lines(rows: list[dict[str, Any]]) -> list[str]:
    """Return the protocols' notes, the recipes' notes, and Table II's published peers."""
    notes = sorted({(r["model"], r["recipe_note"]) for r in rows
                    if r["recipe_note"] and r["protocol"] == "recipes"})  # fmt: skip
    lines = ["", "Protocols: **paper** = Table V as printed (shared layers, delays 0.1 per "
             "layer); **recipes** = the authors' `outliers-*` scripts (spec section 9: "
             "independent lower layers, their K, delays and epochs). Solvers: a preset alone "
             "is trained by the papers' SGD; **EM** after it, its GMM layers by stepwise EM "
             "(`--solver em`, `dcgmm.layers.gmm_em`: the same objective's statistics, the "
             "radius shrinking every window; the preset's SGD learning-rate factors do not "
             "apply)."]  # fmt: skip
    lines += [f"- {model}: {note}" for model, note in notes]
    return [
        *lines,
        "",
        "Table II, the published peers (numbers from the 2022 paper; RAT-SPN and PD-SPN re-run "
        "on this protocol: `python -m benchmarks.reproduce peers`, docs/results/peers.md):",
        "",
        "| model | MNIST | FashionMNIST |",
        "|---|---:|---:|",
        *[f"| {name} | {m:.1f} | {f:.1f} |" for name, (m, f) in PAPER_TABLE2.items()],
        "",
    ]


def map_lines(maps: dict[str, Any]) -> list[str]:
    """Return the outlier maps' captions and pictures (each drawn by the run it names)."""
    lines = []
    for dataset, info in maps.items():
        frac = info["flagged_fraction"]
        lines += [
            "",
            f"Outlier maps, {dataset}, preset {MAP_PRESET}, GMM layer {info['layer']}, drawn by "
            f"run {info.get('run', '?')} (rows: inlier test images, their maps, class-0 test "
            "images, their maps; red = "
            f"positions below mean - {info['c']} std of the training data, spread over their "
            f"receptive fields). Positions flagged: {100 * frac['inliers']:.1f}% of inlier "
            f"positions, {100 * frac['outliers']:.1f}% of outlier positions.",
            "",
            f"![maps {dataset}](table1/{info['png']})",
        ]
    return lines
