"""Every option of `dcgmm sample`, `inpaint`, `eval` and `outliers`, on a DCGMM run and on a
baseline run, either changes what the command writes or prints, or is refused with exit status
2: none is accepted and then ignored. (`dcgmm train`'s options are walked in
tests/test_train_flags.py.)"""

import argparse
import hashlib
from pathlib import Path

import pytest

from dcgmm.cli.main import build_parser, main

# A value for every option that differs from its default (and is valid where the option acts).
SAMPLING = {  # add_sampling_flags: both commands
    "top_s": ["--top-s", "1"],
    "noise_divisor": ["--noise-divisor", "5"],
    "noise_at_bound": ["--noise-at-bound"],
    "sharpen": ["--sharpen", "3"],
    "sharpen_rate": ["--sharpen-rate", "0.5"],
    "sharpen_weight": ["--sharpen-weight", "0.5"],
    "sharpen_target": ["--sharpen-target", "top"],
    "seed": ["--seed", "5"],
}
VALUES = {
    "sample": {
        "n": ["-n", "3"],
        "cls": ["--class", "1"],
        "per_class": ["--per-class", "2"],
        "npy": ["--npy", "out.npy"],
        "start": ["--start", "weights"],
        **SAMPLING,
    },
    "inpaint": {
        "split": ["--split", "train"],
        "classes": ["--classes", "1"],
        "limit": ["--limit", "3"],
        "mask": ["--mask", "random:0.5"],
        "layer": ["--layer", "2"],
        **SAMPLING,
    },
}
VALUES["eval"] = {
    "split": ["--split", "train"],
    "classes": ["--classes", "1"],
    "limit_per_class": ["--limit-per-class", "2"],
    "limit": ["--limit", "20"],
    "json": ["--json"],
    "clustering": ["--clustering", "20"],
    "is_samples": ["--is-samples", "3"],
}
VALUES["outliers"] = {
    "inliers": ["--inliers", "mnist:1-5"],
    "outliers": ["--outliers", "mnist:6"],
    "split": ["--split", "train"],
    "limit": ["--limit", "20"],
    "layer": ["--layer", "2"],  # GMM layers are 2 and 4 (as `dcgmm info` numbers them)
    "kind": ["--kind", "max_component"],
    "map_layer": ["--map-layer", "4"],
    "c": ["--c", "0.5"],
    "stats_limit": ["--stats-limit", "50"],
    "n_maps": ["--n-maps", "3"],
    "all_layers": ["--all-layers"],
    "contrast": ["--contrast"],
}
VALUES["sample-quality"] = {  # compared on --json: the table rounds what a tiny judge sees
    "per_class": ["--per-class", "3"],
    "batch_size": ["--batch-size", "7"],
    "start": ["--start", "weights"],
    **SAMPLING,
}
REQUIRED = {
    "sample": ["-n", "4"],
    "inpaint": ["--data", "mnist", "--limit", "4"],
    "eval": ["--limit", "30"],
    "outliers": ["--inliers", "mnist:1-9", "--outliers", "mnist:0", "--limit", "30"],
    "sample-quality": ["--evaluator", "{runs}/evaluator", "--per-class", "2", "--json"],
}
OUT = {"sample": "out.png", "inpaint": "out.png", "outliers": "report", "eval": None,
       "sample-quality": None}  # fmt: skip
# Options with no other value to try on this machine (cpu is the only device in CI), or none
# to try at all (the judge sample-quality needs).
UNWALKED = {"help", "run_dir", "out", "data", "device", "evaluator"}


def command_options(command: str) -> set[str]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    given = {"json"} if "--json" in REQUIRED[command] else set()  # always on: not walked
    return {a.dest for a in sub.choices[command]._actions} - UNWALKED - given


@pytest.mark.parametrize("command", sorted(VALUES))
def test_the_walk_covers_every_option(command):
    assert command_options(command) == set(VALUES[command])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("walk")
    data = ["--data", "mnist", "--limit", "200"]
    dcgmm = ["--model", "F(7,7)-G(4)-F(4,1)-G(4)", "--steps", "30", "--batch-size", "50"]
    dcgmm += ["--lr-factor-weights", "20"]  # mixing weights far from uniform: --start acts
    assert main(["train", *dcgmm, *data, "--out", str(root / "dcgmm")]) == 0
    vae = ["--model", "gauss-vae", "--epochs", "1"]
    assert main(["train", *vae, *data, "--out", str(root / "vae")]) == 0
    judge = ["--data", "mnist", "--limit", "200", "--epochs", "1", "--out", str(root / "evaluator")]
    assert main(["train-evaluator", *judge]) == 0
    return root


def written(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def run_in(folder: Path, argv: list[str], capsys) -> tuple[int, dict[str, str], str]:
    """Run a command writing under ``folder``: its status, files and print, and its stderr."""
    folder.mkdir()
    out = OUT[argv[0]]
    status = main([*argv, "--out", str(folder / out)] if out else argv)
    captured = capsys.readouterr()
    printed = captured.out.replace(str(folder), "<folder>")  # the folders' names differ
    return status, written(folder) | {"<stdout>": printed}, captured.err


@pytest.mark.parametrize("kind", ["dcgmm", "vae"])
@pytest.mark.parametrize(
    ("command", "dest"), [(c, d) for c in sorted(VALUES) for d in sorted(VALUES[c])]
)
def test_an_option_changes_the_output_or_is_refused(runs, tmp_path, monkeypatch, capsys, kind,
                                                    command, dest):  # fmt: skip
    monkeypatch.chdir(tmp_path)  # --npy writes here
    base = [command, str(runs / kind), *(a.format(runs=runs) for a in REQUIRED[command])]
    status, plain, _ = run_in(tmp_path / "plain", base, capsys)
    assert status == 0
    status, changed, err = run_in(tmp_path / "changed", [*base, *VALUES[command][dest]], capsys)
    if status == 2:
        assert "error:" in err
        assert len(err.strip().splitlines()) == 1, err
        return
    assert status == 0
    extra = {p.name for p in tmp_path.iterdir() if p.is_file()}
    assert changed != plain or extra, f"{' '.join(VALUES[command][dest])} changed nothing"
