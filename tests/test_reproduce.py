"""The reproduction and check scripts run end to end in a tiny mode, so they cannot rot."""

import json
from pathlib import Path

import pytest

from benchmarks import reproduce

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.mark.skipif(not (DATA / "mnist").exists(), reason="needs ../shared/data/mnist")
def test_table3_tiny_run_writes_the_table(tmp_path):
    reproduce.main(
        ["table3", "--tiny", "--datasets", "mnist", "--presets", "A,E",
         "--data-dir", str(DATA), "--runs", str(tmp_path / "runs"), "--out", str(tmp_path)]
    )  # fmt: skip
    result = json.loads((tmp_path / "table3.json").read_text())
    assert [(r["dataset"], r["preset"]) for r in result["rows"]] == [("mnist", "A"), ("mnist", "E")]
    for row in result["rows"]:
        assert 0.0 <= row["accuracy"] <= 1.0
        assert row["frechet_distance"] > 0.0
    table = (tmp_path / "table3.md").read_text()
    assert "| mnist | E |" in table
    assert "98.2" in table  # the paper's number sits beside ours
