"""Our best row of every column of Tables I, III and IV beside the paper's best.

    python -m benchmarks.reproduce.best [--summary docs/results/summary.json]
        [--out docs/results/best.md]

Reads the rows that the reproduction scripts wrote to ``summary.json`` (nothing is trained) and
picks, per table and dataset, the row with the highest mean over seeds, whatever its preset
and protocol; rows with fewer than ``--min-seeds`` seeds are listed but not chosen.
"""

import argparse
import datetime
import json
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


def best_rows(rows: list[dict[str, Any]], min_seeds: int) -> dict[tuple[str, str], Any]:
    """Return, per (table, dataset), the row of highest mean with at least ``min_seeds``."""
    best: dict[tuple[str, str], Any] = {}
    for row in rows:
        key = (row["table"], row["dataset"])
        if key not in PAPER_BEST or row.get("n_seeds", 0) < min_seeds:
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
            f"| {table} | {COLUMNS[table]} | {dataset} | {row['model']}, {row['protocol']} "
            f"| **{row['mean']:.2f} +- {row['sd']:.2f}** ({row['n_seeds']}) | {row['steps']} "
            f"| {preset} {paper} | {peer_text} | {goal or '-'} | {met} |"
        )
    lines += [
        "",
        "'met?' compares our mean with the highest of the paper's best, the published peer and "
        "the goal. Every row of `summary.json`, with its metric, is in the tables' own pages.",
    ]
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
