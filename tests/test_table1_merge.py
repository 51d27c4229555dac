"""Table I's rows accumulate: a run of some presets keeps the stored rows of the others."""

import json

from benchmarks.reproduce.table1_merge import thin_roc
from benchmarks.reproduce.table1_report import write_table1


def row(model, mean, dataset="mnist", protocol="paper", seed=None):
    """A summary row (or, with ``seed``, a per-seed run) with the fields the table prints."""
    fields = {
        **{"table": "I", "dataset": dataset, "model": model, "protocol": protocol},
        **{"metric": "AUC %", "mean": mean, "sd": 0.5, "n_seeds": 3, "steps": 13500},
        **{"annealed_seeds": 3, "auc_max_component": mean, "auc_per_layer": {"2": mean}},
        **{"paper_mean": None, "paper_sd": None, "dunn": 0.1, "davies_bouldin": 2.0},
        **{"train_seconds": 10.0, "recipe_note": ""},
    }
    return fields if seed is None else {**fields, "seed": seed, "auc": mean / 100}


def result(*rows, maps=None):
    """What one run of ``table1`` returns: rows, per-seed runs, maps, first seeds' ROC."""
    curve = [[0, 0], [0.2, 0.9], [1, 1]]
    keys = [(r["dataset"], r["model"], r["protocol"], r["mean"]) for r in rows]
    return {
        "rows": list(rows),
        "runs": [row(m, mean, d, p, seed) for d, m, p, mean in keys for seed in (0, 1)],
        "maps": maps or {},
        "roc": {
            f"{d}|{m}|{p}": {"seed": 0, "auc": mean / 100, "points": curve}
            for d, m, p, mean in keys
        },
    }


def test_a_run_replaces_its_rows_keeps_the_others_and_their_pictures(tmp_path):
    flagged = {"inliers": 0.03, "outliers": 0.07}
    maps = {"mnist": {"layer": 4, "c": 2.0, "png": "maps_mnist_E.png", "flagged_fraction": flagged}}
    old = result(row("A", 95.0), row("E", 92.0), row("A", 60.0, "fashion-mnist"), maps=maps)
    old["roc"] = {}  # the first run stored no curves: its figure is all there is of them
    write_table1(old, tmp_path, "python -m benchmarks.reproduce table1 --presets A,E", 60.0)
    legacy_png = tmp_path / "table1" / "roc_mnist.png"
    legacy_png.write_bytes(b"run 1's figure")

    new = result(row("B", 93.0), row("A", 96.0), row("B", 70.0, "fashion-mnist"))
    write_table1(new, tmp_path, "python -m benchmarks.reproduce table1 --presets A,B", 120.0)
    merged = json.loads((tmp_path / "table1.json").read_text())
    assert [(r["dataset"], r["model"], r["mean"], r["run"]) for r in merged["rows"]] == [
        ("mnist", "A", 96.0, 2), ("mnist", "B", 93.0, 2), ("mnist", "E", 92.0, 1),
        ("fashion-mnist", "A", 60.0, 1), ("fashion-mnist", "B", 70.0, 2)]  # fmt: skip
    assert len(merged["runs"]) == 10
    assert merged["maps"]["mnist"]["run"] == 1
    assert [c["run"] for c in merged["commands"]] == [1, 2]
    assert merged["commands"][1]["rows"] == ["mnist B paper", "mnist A paper",
                                             "fashion-mnist B paper"]  # fmt: skip
    table = (tmp_path / "table1.md").read_text()
    assert "run 1: " in table
    assert "--presets A,E`" in table
    assert "--presets A,B`" in table
    assert "| mnist | E | paper | 13500 | 3/3 | **92.0 +- 0.5** (3) |" in table
    assert table.index("| mnist | A |") < table.index("| mnist | B |") < table.index(
        "| mnist | E |") < table.index("| fashion-mnist | A |")  # fmt: skip
    assert "maps_mnist_E.png" in table
    # Run 1's ROC figure is kept, the stored curves (A and B of run 2) drawn beside it.
    assert legacy_png.read_bytes() == b"run 1's figure"
    assert (tmp_path / "table1" / "roc_mnist_stored.png").exists()
    points = json.loads((tmp_path / "table1" / "roc_points.json").read_text())
    assert set(points) == {"mnist|A|paper", "mnist|B|paper", "fashion-mnist|B|paper"}
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert [(r["model"], r["mean"]) for r in summary if r["dataset"] == "mnist"] == [
        ("E", 92.0), ("B", 93.0), ("A", 96.0)]  # fmt: skip

    # Once every row of a dataset has its curve, its one figure is drawn from the stored ones.
    write_table1(result(row("E", 93.0)), tmp_path, "python -m benchmarks.reproduce table1", 1.0)
    assert legacy_png.read_bytes().startswith(b"\x89PNG")
    assert not (tmp_path / "table1" / "roc_mnist_stored.png").exists()
    merged = json.loads((tmp_path / "table1.json").read_text())
    assert [c["run"] for c in merged["commands"]] == [1, 2, 3]  # run 1 still has Fashion's A


def test_thin_roc_keeps_the_ends_and_drops_points_closer_than_the_spacing():
    fpr = [i / 1000 for i in range(1001)]
    points = thin_roc(fpr, [f**0.5 for f in fpr], spacing=0.05)
    assert points[0] == [0.0, 0.0]
    assert points[-1] == [1.0, 1.0]
    assert 10 < len(points) < 60


def test_rows_of_an_older_table_without_commands_are_marked_not_recorded(tmp_path):
    old = result(row("A", 95.0))
    del old["roc"]
    (tmp_path / "table1.json").write_text(json.dumps(old))
    write_table1(result(row("B", 93.0)), tmp_path, "python -m benchmarks.reproduce table1", 1.0)
    merged = json.loads((tmp_path / "table1.json").read_text())
    assert [(r["model"], r["run"]) for r in merged["rows"]] == [("A", 0), ("B", 1)]
    assert "run 0: ?; `not recorded" in (tmp_path / "table1.md").read_text()
