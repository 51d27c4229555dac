"""`dcgmm train` accepts no flag it would ignore: each one acts on the model kind or is refused."""

import argparse
import json

import pytest
import torch

from dcgmm import DCGMM, TrainConfig, Trainer
from dcgmm.cli.main import build_parser, main
from dcgmm.cli.train_flags import DATA_FLAGS, FLAGS_BY_KIND

KINDS = {"DCGMM": "F(28,1)-G(4)", "VAE": "gauss-vae", "NSN": "nsn"}


def train_options() -> dict[str, list[str]]:
    """Every option of `dcgmm train` with a value that parses, by destination."""
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    train = sub.choices["train"]
    options = {}
    for action in train._actions:
        if not action.option_strings or action.dest in ("help",):
            continue
        flag = action.option_strings[0]
        if action.nargs == 0:
            options[action.dest] = [flag]
        elif action.choices:
            options[action.dest] = [flag, str(next(iter(action.choices)))]
        elif action.type in (int, float):
            options[action.dest] = [flag, "3"]
        elif action.dest == "layer_delays":
            options[action.dest] = [flag, "0,0.5"]
        else:
            options[action.dest] = [flag, "x"]
    return options


OPTIONS = train_options()
REFUSED = [
    (kind, dest)
    for kind in KINDS
    for dest in sorted(OPTIONS)
    if dest not in DATA_FLAGS | FLAGS_BY_KIND[kind]
]


def test_every_option_belongs_somewhere():
    used = set().union(*FLAGS_BY_KIND.values()) | DATA_FLAGS
    assert set(OPTIONS) <= used, set(OPTIONS) - used  # a new flag must be given a home


@pytest.mark.parametrize(("kind", "dest"), REFUSED, ids=[f"{k}-{d}" for k, d in REFUSED])
def test_a_flag_the_model_does_not_use_is_refused_in_one_line(kind, dest, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "--model", KINDS[kind], "--data", "mnist", "--limit", "200",
            "--out", str(out), *OPTIONS[dest]]  # fmt: skip
    if kind == "DCGMM" and dest != "steps":
        argv += ["--steps", "2"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert f"{OPTIONS[dest][0]} does not apply to" in err[0]
    assert "it takes" in err[0]
    assert not out.exists()  # refused before anything is written


def test_nsn_steps_bound_the_hard_em_iterations_per_layer(tmp_path):
    run = tmp_path / "nsn"
    assert main(["train", "--model", "nsn", "--data", "mnist", "--limit", "200",
                 "--nsn-images", "60", "--steps", "2", "--out", str(run)]) == 0  # fmt: skip
    fit = json.loads((run / "config.json").read_text())["fit"]
    assert fit["max_iters"] == 2
    assert fit["iterations"] == [2, 2, 2]  # none converges in 2 iterations on real digits


def test_max_minutes_stops_a_dcgmm_with_a_checkpoint_that_resumes(mnist_small, tmp_path):
    train, _ = mnist_small
    model = DCGMM.from_spec("F(28,1)-G(4)", (28, 28, 1))
    trainer = Trainer(model, TrainConfig(steps=50), train.images, run_dir=tmp_path)
    trainer.run(max_seconds=0.0)  # the budget is spent after the first step
    assert (trainer.step, trainer.stopped_by) == (1, "time")
    from dcgmm.training.checkpoint import load_trainer_state

    assert load_trainer_state(tmp_path)["step"] == 1
    trainer.run()
    assert (trainer.step, trainer.stopped_by) == (50, "end")
    assert torch.isfinite(model.layers[1].means).all()


def test_threads_default_to_the_usable_cpus_and_can_be_set(monkeypatch, tmp_path, capsys):
    from dcgmm._threads import CGROUP_CPU_MAX, apply_threads, usable_cpus

    before = torch.get_num_threads()
    try:
        assert apply_threads(1) == 1
        with pytest.raises(ValueError, match="--threads must be a positive number of threads"):
            apply_threads(0)
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        torch.set_num_threads(64)  # as torch starts on a big host inside a small container
        assert apply_threads(None) == min(64, usable_cpus())
        quota = tmp_path / "cpu.max"
        quota.write_text("150000 100000\n")  # one and a half CPUs: two threads at most
        monkeypatch.setattr("dcgmm._threads.CGROUP_CPU_MAX", quota)
        assert usable_cpus() == min(2, len(__import__("os").sched_getaffinity(0)))
        quota.write_text("max 100000\n")
        assert usable_cpus() == len(__import__("os").sched_getaffinity(0))
        assert CGROUP_CPU_MAX.name == "cpu.max"
        assert main(["--threads", "0", "info", "A"]) == 2
        assert "--threads must be a positive number" in capsys.readouterr().err
    finally:
        torch.set_num_threads(before)


def test_cli_warns_about_unfinished_annealing_and_stops_once_annealed(tmp_path, caplog):
    from dcgmm.exceptions import AnnealingWarning

    short = ["train", "--model", "A", "--data", "mnist", "--limit", "1000", "--steps", "50"]
    with pytest.warns(AnnealingWarning, match=r"did not finish in 50 steps: sigma_som of layer 2"):
        assert main([*short, "--out", str(tmp_path / "short")]) == 0
    fast = ["--annealing-window", "20", "--annealing-gamma", "0.6"]
    with caplog.at_level("INFO", logger="dcgmm"):
        argv = ["train", "--model", "A", "--data", "mnist", "--limit", "1000", "--steps", "5000"]
        assert main([*argv, "--until-annealed", *fast, "--out", str(tmp_path / "a")]) == 0
    assert "every GMM layer is annealed (sigma_som at its floor" in caplog.text
    record = json.loads((tmp_path / "a" / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["layers"][0]["sigma_som"] == pytest.approx(0.01)
    assert json.loads((tmp_path / "a" / "config.json").read_text())["train"]["until_annealed"]


def test_layer_delays_on_the_command_line_act_and_survive_a_resume(tmp_path, capsys):
    run = tmp_path / "run"
    argv = ["train", "--model", "F(7,7)-G(4)-F(4,1)-G(9)", "--data", "mnist", "--limit", "300",
            "--steps", "20", "--layer-delays", "0,0.5", "--log-every", "5"]  # fmt: skip
    assert main([*argv, "--out", str(run), "--stop-at", "10"]) == 0
    assert json.loads((run / "config.json").read_text())["train"]["layer_delays"] == [0.0, 0.5]
    assert main(["train", "--resume", str(run)]) == 0
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    waiting = [r["step"] for r in records if r["layers"][1]["objective"] is None]
    assert waiting == [5, 10]  # layer 4 starts at half the run, after step 10
    with pytest.raises(SystemExit) as bad:  # argparse's own exit for a value it cannot read
        main([*argv[:-4], "--layer-delays", "0,x", "--out", str(tmp_path / "bad")])
    assert bad.value.code == 2
    assert (
        "expected comma-separated numbers such as 0,0.1,0.2; got '0,x'" in capsys.readouterr().err
    )
