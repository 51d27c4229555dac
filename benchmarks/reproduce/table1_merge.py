"""Table I's results accumulate: a run of some presets merges its rows into ``table1.json``.

A row is one (dataset, model, protocol); a run's rows replace the stored rows of the same key
and keep the others, so presets that cost hours need not be re-trained to add one that costs
minutes. Every row carries ``run``, the number of the command that measured it, and
``commands`` lists those commands (date, machine, command line, wall time). ROC curves: each
row's curve (its first seed, thinned) is stored in ``table1/roc_points.json`` and the ROC
figure of a dataset is redrawn from the stored curves; a row measured before curves were
stored keeps the figure its own run drew (``roc_DATASET.png``), and the stored curves go into
``roc_DATASET_stored.png`` beside it until every row of the dataset has one.
"""

import json
from pathlib import Path
from typing import Any

import numpy as np

from dcgmm.evaluation.plots import save_roc

__all__ = [
    "ROC_POINTS_FILE",
    "dataset_order",
    "merge_results",
    "read_previous",
    "recorded_commands",
    "roc_key",
    "row_key",
    "run_lines",
    "save_roc_figures",
    "sort_key",
    "thin_roc",
]

ROC_POINTS_FILE = "roc_points.json"
DATASET_ORDER = ("mnist", "fashion-mnist")
PROTOCOL_ORDER = ("paper", "recipes")


def row_key(row: dict[str, Any]) -> tuple[str, str, str]:
    """Return what a row is a row of: (dataset, model, protocol)."""
    return row["dataset"], row["model"], row["protocol"]


def roc_key(row: dict[str, Any]) -> str:
    """Return a row's key in the stored ROC curves, e.g. ``"mnist|E EM|paper"``."""
    return "|".join(row_key(row))


def dataset_order(dataset: str) -> tuple[int, str]:
    """MNIST, then Fashion-MNIST (the paper's order), then any other by name."""
    known = dataset in DATASET_ORDER
    return (DATASET_ORDER.index(dataset) if known else len(DATASET_ORDER), dataset)


def sort_key(row: dict[str, Any]) -> tuple[Any, ...]:
    """Order rows by dataset (MNIST first), model (preset, then its EM row), protocol, seed."""
    dataset, model, protocol = row_key(row)
    known = protocol in PROTOCOL_ORDER
    return (*dataset_order(dataset), model, PROTOCOL_ORDER.index(protocol) if known else 9,
            protocol, row.get("seed", 0))  # fmt: skip


def thin_roc(fpr: Any, tpr: Any, spacing: float = 0.005) -> list[list[float]]:
    """Return the curve's points ``[[fpr, tpr], ...]``, a point kept once it lies ``spacing``
    (in fpr + tpr) from the last kept one: a few hundred points, the curve's look kept."""
    fpr, tpr = np.asarray(fpr, dtype=float), np.asarray(tpr, dtype=float)
    kept = [0]
    for i in range(1, len(fpr) - 1):
        if abs(fpr[i] - fpr[kept[-1]]) + abs(tpr[i] - tpr[kept[-1]]) >= spacing:
            kept.append(i)
    if len(fpr) > 1:
        kept.append(len(fpr) - 1)
    return [[round(float(fpr[i]), 5), round(float(tpr[i]), 5)] for i in kept]


def read_previous(out: Path) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """Return the stored ``table1.json`` (None if there is none) and the stored ROC curves."""
    path, points = out / "table1.json", out / "table1" / ROC_POINTS_FILE
    previous = json.loads(path.read_text()) if path.exists() else None
    return previous, json.loads(points.read_text()) if points.exists() else {}


def recorded_commands(previous: dict[str, Any]) -> list[dict[str, Any]]:
    """Return the stored commands; rows written before they were kept get run 0, "not
    recorded" (an older ``--out`` folder's table1.json)."""
    for row in [*previous["rows"], *previous["runs"], *previous.get("maps", {}).values()]:
        row.setdefault("run", 0)
    if previous.get("commands") or not previous["rows"]:
        return list(previous.get("commands", []))
    rows = [" ".join(row_key(r)) for r in previous["rows"]]
    unknown = "not recorded (written before table1.json kept its commands)"
    return [{"run": 0, "date": "?", "machine": "?", "command": unknown, "wall_minutes": 0.0,
             "rows": rows}]  # fmt: skip


def merge_results(
    previous: dict[str, Any] | None, new: dict[str, Any], command: dict[str, Any]
) -> dict[str, Any]:
    """Return ``previous`` with the rows, per-seed runs and maps of ``new`` put in.

    ``command`` (date, machine, command, wall_minutes) becomes the next run number; it is
    written on the new rows, and ``commands`` keeps the runs that still measure a row.
    """
    previous = previous or {"runs": [], "rows": [], "maps": {}}
    commands = recorded_commands(previous)
    number = max((c["run"] for c in commands), default=0) + 1
    new_keys = {row_key(r) for r in new["rows"]}
    for row in [*new["rows"], *new["runs"], *new["maps"].values()]:
        row["run"] = number
    names = list(dict.fromkeys(" ".join(row_key(r)) for r in new["rows"]))  # rates share a key
    commands.append({"run": number, **command, "rows": names})

    def merged(part: str) -> list[dict[str, Any]]:
        kept = [r for r in previous[part] if row_key(r) not in new_keys]
        return sorted(kept + new[part], key=sort_key)

    rows, runs = merged("rows"), merged("runs")
    live = {r.get("run") for r in rows}
    return {
        "commands": [c for c in commands if c["run"] in live],
        "rows": rows,
        "runs": runs,
        "maps": {**previous.get("maps", {}), **new["maps"]},
        "seeds": sorted({r["seed"] for r in runs}),
    }


def run_lines(result: dict[str, Any]) -> list[str]:
    """Return the header's lines: which command measured the rows of each run number."""
    lines = [
        "- runs: the table accumulates; each row's 'run' names the command that measured it "
        "(a run replaces the rows of its datasets, presets and protocols and keeps the others):"
    ]
    for c in result["commands"]:
        lines.append(
            f"  - run {c['run']}: {c['machine']}; `{c['command']}` ({c['wall_minutes']:.1f} min "
            f"wall; models found cached were reused, not retrained); rows: {', '.join(c['rows'])}"
        )
    return lines


def save_roc_figures(
    out: Path, result: dict[str, Any], points: dict[str, Any], datasets: list[str]
) -> list[str]:
    """Draw each dataset's ROC figure from the stored curves; return the table's lines.

    A dataset with a row whose curve is not stored keeps ``roc_DATASET.png`` as its run drew
    it; the stored curves are drawn into ``roc_DATASET_stored.png``.
    """
    folder = out / "table1"
    body = ",\n".join(f"{json.dumps(k)}: {json.dumps(v)}" for k, v in points.items())
    (folder / ROC_POINTS_FILE).write_text("{\n" + body + "\n}\n" if points else "{}\n")
    lines = []
    for dataset in datasets:
        rows = [r for r in result["rows"] if r["dataset"] == dataset]
        curves = {
            f"{r['model']} {r['protocol']} s{points[roc_key(r)]['seed']}": (
                *np.array(points[roc_key(r)]["points"]).T, points[roc_key(r)]["auc"])
            for r in rows if roc_key(r) in points
        }  # fmt: skip
        old = sorted({str(r.get("run", "?")) for r in rows if roc_key(r) not in points})
        stored = folder / f"roc_{dataset}_stored.png"
        title = f"{dataset}: train 1-9, outliers 0 (top layer, exact log-likelihood, first seed)"
        if not old:
            stored.unlink(missing_ok=True)
            save_roc(folder / f"roc_{dataset}.png", curves, title=title)
            lines += [f"![ROC {dataset}](table1/roc_{dataset}.png)", ""]
            continue
        if (folder / f"roc_{dataset}.png").exists():
            lines.append(
                f"ROC curves of {dataset} as run {', '.join(old)} drew them (its rows; their "
                f"curves are not stored): ![ROC {dataset}](table1/roc_{dataset}.png)"
            )
            lines.append("")
        if curves:
            save_roc(stored, curves, title=title)
            lines.append(
                f"ROC curves of the other rows of {dataset}: "
                f"![ROC {dataset}, stored curves](table1/{stored.name})"
            )
            lines.append("")
    return lines
