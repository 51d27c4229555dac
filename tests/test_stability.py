"""The stability run (benchmarks/stability.py) in its tiny mode, and its counting."""

import json
import math

import pytest

from benchmarks import stability
from dcgmm import DCGMM, load_dataset
from dcgmm.io.data import Dataset
from dcgmm.spec import PRESETS


def test_presets_a_to_g_train_20_steps_without_nan(tmp_path):
    result = stability.main(["--tiny", "--datasets", "mnist", "--out", str(tmp_path)])
    assert [r["preset"] for r in result["rows"]] == list(PRESETS)
    for row in result["rows"]:
        assert row["steps_done"] == 20, row["stopped"]
        assert stability.nonfinite_total(row) == 0, row
        n_gmm = row["spec"].count("G(")
        assert len(row["final_objective"]) == n_gmm
        assert all(math.isfinite(v) for v in row["final_objective"].values())
    assert result["runs_with_nonfinite_values"] == 0
    assert json.loads((tmp_path / "stability.json").read_text())["rows"] == result["rows"]
    assert "**runs with any non-finite value: 0 of 7**" in (tmp_path / "stability.md").read_text()


def test_a_nan_is_counted_where_it_appears(monkeypatch):
    # The public entry points refuse NaN/Inf pixels (tests/test_bad_input.py); lift that check
    # here so that the run meets them where the watchdog and the counts must catch them.
    monkeypatch.setattr(DCGMM, "check_input", lambda self, x, name="x": None)
    train = load_dataset("mnist", limit=100)
    heldout = load_dataset("mnist", split="test", limit=20)
    poisoned = train.images.clone()
    poisoned[:, 14, 14, 0] = float("nan")  # every batch
    bad_heldout = heldout.images.clone()
    bad_heldout[:3, 0, 0, 0] = float("inf")
    row = stability.run_one(
        "E",
        Dataset(poisoned, train.labels, "poisoned"),
        Dataset(bad_heldout, heldout.labels, "poisoned"),
        seed=0,
        steps=5,
        batch_size=20,
    )
    assert row["steps_done"] == 0
    assert row["stopped"]["step"] == 1
    assert row["stopped"]["message"].startswith("layer 2 (G(25)): non-finite objective at step 1")
    assert row["nonfinite_objective_events"] == 1
    assert set(row["nonfinite_parameters"].values()) == {0}  # the update was never applied
    # The three images with an infinite pixel have non-finite scores in every GMM layer.
    for layer in row["heldout"]:
        assert layer["nonfinite"]["loglik"] == 3, layer
    assert row["numerical_warnings"]
    assert stability.nonfinite_total(row) > 1


@pytest.mark.slow
def test_stability_on_builtin_data_100_steps_of_batch_100(tmp_path):
    result = stability.main(
        ["--builtin", "--seeds", "1", "--steps", "100", "--n-train", "2000", "--n-heldout", "500",
         "--out", str(tmp_path)]
    )  # fmt: skip
    assert len(result["rows"]) == 2 * len(PRESETS)
    assert result["runs_with_nonfinite_values"] == 0
