"""Our best row of every column of Tables I, III and IV beside the paper's best.

    python -m benchmarks.reproduce.best [--summary docs/results/summary.json]
        [--out docs/results/best.md]

Reads the rows that the reproduction scripts wrote to ``summary.json`` (nothing is trained) and
picks, per table and dataset, the row with the highest mean over seeds, whatever its preset
and protocol; rows with fewer than ``--min-seeds`` seeds are listed but not chosen.

A second table tests every row of the presets that issue 15 asks to reach the paper's mean
(Tables I and III: E; Table IV: B) against that mean: Welch's t-test where the paper gives a
standard deviation (over its 5 runs), else a one-sample t-test of our seeds against the
paper's number. A large p-value says our seeds' spread covers the gap; a small one, that the
gap is real and needs another explanation.
"""

import argparse
import datetime
import json
import re
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]

# The 2022 paper's best DCGMM per column (spec section 8) and, where it is better, the best
# published peer; the goals are issue 15's.
PAPER_BEST = {
    ("I", "mnist"): ("A", 95.4, None),
    ("I", "fashion-mnist"): ("E", 74.9, None),
    ("III", "mnist"): ("F", 99.9, None),
    ("III", "fashion-mnist"): ("E", 94.5, None),
    ("IV", "mnist"): ("B", 98.0, ("DGCSPN", 98.66)),
    ("IV", "fashion-mnist"): ("B", 89.6, ("DGCSPN", 90.74)),
}
GOALS = {
    ("I", "mnist"): 96.0,
    ("I", "fashion-mnist"): 80.0,
    ("III", "mnist"): None,
    ("III", "fashion-mnist"): 95.0,
    ("IV", "mnist"): 98.7,
    ("IV", "fashion-mnist"): 91.0,
}
COLUMNS = {"I": "outlier AUC %", "III": "judge accuracy % on samples", "IV": "test accuracy %"}
# Issue 15, acceptance 2: the preset whose paper mean each table must reach.
TARGET_PRESETS = {"I": "E", "III": "E", "IV": "B"}
PAPER_RUNS = 5  # the paper's mean +- sd are over 5 runs


def gap_test(row: dict[str, Any]) -> tuple[float, float, float]:
    """Return (t, degrees of freedom, two-sided p) of our seeds against the paper's mean.

    Welch's t-test when the paper gives its standard deviation (``PAPER_RUNS`` runs), else
    the one-sample t-test of our seeds against the paper's mean as a fixed number. A row
    judged by several judges brings its own standard error and degrees of freedom (``se``,
    ``se_df``: seeds and judges as crossed random factors,
    :func:`~benchmarks.reproduce.common.two_way_standard_error`); other rows use ``sd`` over
    ``n_seeds``.
    """
    from scipy import stats  # scikit-learn's dependency; the reproductions install it

    if "se" in row:
        ours, ours_df = row["se"] ** 2, row["se_df"]
    else:
        ours, ours_df = row["sd"] ** 2 / row["n_seeds"], row["n_seeds"] - 1.0
    paper_sd = row.get("paper_sd")
    if paper_sd is None:
        se, df = ours**0.5, ours_df
    else:
        theirs = paper_sd**2 / PAPER_RUNS
        se = (ours + theirs) ** 0.5
        df = (ours + theirs) ** 2 / (ours**2 / ours_df + theirs**2 / (PAPER_RUNS - 1))
    mean = row["mean"]
    t = (mean - row["paper_mean"]) / se if se > 0 else float("inf") * (mean - row["paper_mean"])
    return t, df, float(2 * stats.t.sf(abs(t), df))


def target_rows(rows: list[dict[str, Any]], min_seeds: int) -> list[dict[str, Any]]:
    """Return the target presets' rows with ``min_seeds`` or more that name a paper mean."""
    chosen = []
    for row in rows:
        preset = TARGET_PRESETS.get(row["table"])
        family = row["model"].replace("classifier-", "").split()[0]
        if preset is None or family != preset or row.get("paper_mean") is None:
            continue
        if "[layer contrast]" in row["model"] or row.get("protocol") == "ours":
            continue  # a scoring rule or network of ours: it competes for the best row only
        if rate_not_chosen(row):
            continue
        if row.get("n_seeds", 0) >= min_seeds and row.get("sd") is not None:
            chosen.append(row)
    return sorted(chosen, key=lambda r: (r["table"], r["dataset"], -r["mean"]))


def gap_lines(rows: list[dict[str, Any]], min_seeds: int) -> list[str]:
    """Return the section that tests every target row against the paper's mean."""
    lines = [
        "",
        "## Do we reach the paper's mean? Every row of the target presets, tested",
        "",
        "Issue 15 asks Tables I and III to reach the paper's mean for preset E, Table IV for "
        f"preset B. Every such row with at least {min_seeds} seeds: Welch's t-test where the "
        f"paper gives its sd (over its {PAPER_RUNS} runs), else a one-sample t-test of our "
        "seeds against the paper's mean. p >= 0.05: the gap is within our seeds' spread. "
        "Table IV rows use the classifier rate chosen on validation. A row with several "
        "judges (Table III, `[paper judge]`) is tested with the standard error of its mean "
        "over seeds x judges, both counted as random (two-way ANOVA, Satterthwaite's degrees "
        "of freedom), not with its printed sd over n = seeds.",
        "",
        "Caveats: with 3 seeds (2 degrees of freedom) a t-test has little power, so p >= 0.05 "
        "does not show the means equal; where the paper gives no sd, its own run-to-run spread "
        "is left out, which makes a gap look more certain than it is.",
        "",
        "| table | dataset | model, protocol | ours | paper | difference | t (df) | p | reached? |",
        "|---|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for row in target_rows(rows, min_seeds):
        t, df, p = gap_test(row)
        paper = f"{row['paper_mean']}" + (
            f" +- {row['paper_sd']}" if row.get("paper_sd") is not None else ""
        )
        diff = row["mean"] - row["paper_mean"]
        if diff >= 0:
            verdict = "yes"
        elif p >= 0.05:
            verdict = "no; within the seed spread"
        else:
            verdict = "no; a real gap"
        error = f"; se {row['se']:.2f}" if "se" in row else ""
        lines.append(
            f"| {row['table']} | {row['dataset']} | {label(row)} "
            f"| {row['mean']:.2f} +- {row['sd']:.2f} ({row['n_seeds']}{error}) | {paper} "
            f"| {diff:+.2f} | {t:.2f} ({df:.1f}) | {p:.3g} | {verdict} |"
        )
    return lines


def rate_not_chosen(row: dict[str, Any]) -> bool:
    """Whether a Table IV row's classifier rate lost on validation (choosing it would be
    choosing on the test set)."""
    metric = row.get("metric", "")
    return "classifier rate" in metric and "chosen on validation" not in metric


def label(row: dict[str, Any]) -> str:
    """Return the row's model and protocol, with its classifier rate for Table IV."""
    rate = re.search(r"classifier rate ([^,)]+)", row.get("metric", ""))
    suffix = f" (classifier rate {rate.group(1)})" if rate else ""
    return f"{row['model']}, {row['protocol']}{suffix}"


def best_rows(rows: list[dict[str, Any]], min_seeds: int) -> dict[tuple[str, str], Any]:
    """Return, per (table, dataset), the row of highest mean with at least ``min_seeds``.

    A Table IV row whose classifier rate lost on validation is not chosen.
    """
    best: dict[tuple[str, str], Any] = {}
    for row in rows:
        key = (row["table"], row["dataset"])
        if key not in PAPER_BEST or row.get("n_seeds", 0) < min_seeds or rate_not_chosen(row):
            continue
        if key not in best or row["mean"] > best[key]["mean"]:
            best[key] = row
    return best


def shown(path: Path) -> str:
    """Return ``path`` relative to the repository when it lies inside it."""
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def markdown(rows: list[dict[str, Any]], min_seeds: int, summary: Path) -> str:
    """Return the page: a row per column of the paper's tables."""
    best = best_rows(rows, min_seeds)
    lines = [
        "# Our best against the paper's best",
        "",
        f"- date: {datetime.date.today()}; from `{shown(summary)}` (written by the "
        "reproduction scripts); command: `python -m benchmarks.reproduce.best`",
        f"- a row is chosen among those with at least {min_seeds} seeds; mean +- sd over seeds",
        "",
        "| table | column | dataset | our best (model, protocol) | ours | steps | paper's best "
        "| published peer | goal | met? |",
        "|---|---|---|---|---:|---:|---|---|---:|---|",
    ]
    for (table, dataset), (preset, paper, peer) in PAPER_BEST.items():
        goal = GOALS[(table, dataset)]
        row = best.get((table, dataset))
        peer_text = f"{peer[0]} {peer[1]}" if peer else "-"
        if row is None:
            lines.append(
                f"| {table} | {COLUMNS[table]} | {dataset} | not measured with {min_seeds} seeds "
                f"| - | - | {preset} {paper} | {peer_text} | {goal or '-'} | - |"
            )
            continue
        target = max([paper, *(p[1] for p in [peer] if p), *(g for g in [goal] if g)])
        met = "yes" if row["mean"] >= target else "no"
        lines.append(
            f"| {table} | {COLUMNS[table]} | {dataset} | {label(row)} "
            f"| **{row['mean']:.2f} +- {row['sd']:.2f}** ({row['n_seeds']}) | {row['steps']} "
            f"| {preset} {paper} | {peer_text} | {goal or '-'} | {met} |"
        )
    lines += [
        "",
        "'met?' compares our mean with the highest of the paper's best, the published peer and "
        "the goal. Every row of `summary.json`, with its metric, is in the tables' own pages.",
        "",
        "Table III rows are judged by our small CNN unless marked `[paper judge]` (the paper's "
        "Table VII CNN, several judges): the same samples score differently under the two "
        "judges, so the best row is chosen over both, and the gap test below lists each.",
        "",
        "Table I rows marked `[layer contrast]` score with our rule, not the paper's: the top "
        "GMM layer's z-score minus the next lower GMM layer's, standardised on training "
        "images (`dcgmm.evaluation.contrast`); the same models as the unmarked row. They "
        "compete for the best row, which makes the score a choice per dataset made knowing "
        "the outlier class (the contrast loses on MNIST: `table1.md` says by how much), and "
        "are left out of the gap test (a test of the paper's own score).",
        "",
        "Table IV rows of protocol `ours` are a network of ours, not the paper's "
        "(`table4.md` names it and says how it was chosen); they compete for the best row and "
        "are not in the gap test (a test of preset B).",
    ]
    lines += gap_lines(rows, min_seeds)
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    """Write the page and print it."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.reproduce.best")
    parser.add_argument("--summary", default=str(ROOT / "docs" / "results" / "summary.json"))
    parser.add_argument("--out", default=str(ROOT / "docs" / "results" / "best.md"))
    parser.add_argument("--min-seeds", type=int, default=3)
    args = parser.parse_args(argv)
    summary = Path(args.summary).resolve()
    text = markdown(json.loads(summary.read_text()), args.min_seeds, summary)
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
