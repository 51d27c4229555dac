"""The numerical watchdog: NaN/Inf in data or parameters stops a run naming layer and step,
never reaches a checkpoint, and ``on_nonfinite="rollback"`` recovers from the last one."""

import json
import logging

import pytest
import torch

from dcgmm import DCGMM, TrainConfig, Trainer
from dcgmm.cli.main import main
from dcgmm.io.run_files import METRICS_FILE
from dcgmm.training.batch_order import epoch_permutation
from dcgmm.training.checkpoint import load_trainer_state, read_checkpoint
from dcgmm.training.watchdog import NonFinite, NumericalError, diagnose

SPEC = "F(4,2)-G(4)-F(4,1)-G(9)"  # layer 2 G(4) on 4x4 positions, layer 4 G(9) on one
N_IMAGES, BATCH = 100, 10  # 10 steps per epoch


def images():
    return torch.rand(N_IMAGES, 10, 10, 1, generator=torch.Generator().manual_seed(3))


def trainer(run_dir, data=None, **overrides):
    model = DCGMM.from_spec(SPEC, (10, 10, 1), generator=torch.Generator().manual_seed(0))
    cfg = dict(steps=20, batch_size=BATCH, annealing_window=4, checkpoint_every=5, log_every=1)
    cfg.update(overrides)
    run = Trainer(model, TrainConfig(**cfg), images(), run_dir=run_dir)
    if data is not None:
        # The constructor refuses NaN, Inf and out-of-range pixels (tests/test_bad_input.py);
        # slip bad data in behind it (as a changed memory map would) to reach the watchdog.
        run.images.copy_(data)
    return run


def poison(layer, name, value, *, at_steps, once=False):
    """A callback that writes ``value`` into one parameter after the given steps."""
    pending = set(at_steps)

    def callback(step, n_steps, record):
        if step in pending:
            with torch.no_grad():
                getattr(layer, name).view(-1)[0] = value
            if once:
                pending.discard(step)

    return callback


def saved(run_dir):
    """The parameters and buffers of the checkpoint in ``run_dir``, checksum verified."""
    return read_checkpoint(run_dir)[0]


def assert_same_parameters(a, b):
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_nan_pixel_stops_at_its_step_and_the_checkpoint_on_disk_stays_good(tmp_path):
    data = images()
    row = int(epoch_permutation(N_IMAGES, 0, 0, torch.device("cpu"))[63])  # batch 6 of epoch 0
    data[row, 4, 5, 0] = float("nan")
    run = trainer(tmp_path / "bad", data)
    with pytest.raises(NumericalError) as caught:
        run.run()
    assert str(caught.value) == (
        f"layer 2 (G(4)): non-finite objective at step 7, from non-finite pixels in training "
        f"images [{row}]. Check the data for NaN/Inf"
    )
    assert caught.value.event.cause == "data"
    assert run.step == 6  # the update of step 7 was not applied
    for p in run.model.parameters():
        assert torch.isfinite(p).all()
    # The checkpoint of step 5 is on disk, and is what a clean run has at step 5.
    assert load_trainer_state(tmp_path / "bad")["step"] == 5
    clean = trainer(tmp_path / "clean")
    clean.run(stop_at=5)
    assert_same_parameters(saved(tmp_path / "bad"), clean.model.state_dict())


def test_inf_in_parameters_names_the_layer_and_the_step(tmp_path):
    run = trainer(tmp_path)
    callback = poison(run.model.layers[3], "means", float("inf"), at_steps={8})
    with pytest.raises(NumericalError, match=r"^layer 4 \(G\(9\)\): parameters means are not") as e:
        run.run(callback=callback)
    assert "not finite at step 9 (found by the objective check)" in str(e.value)
    assert e.value.event == NonFinite(
        step=9, layer=4, spec="G(9)", what="objective", cause="parameters", detail="means"
    )
    assert e.value.event.offending_step == 8
    assert load_trainer_state(tmp_path)["step"] == 5  # the poisoned state of step 8 never saved
    assert all(torch.isfinite(p).all() for p in saved(tmp_path).values())


def test_checkpoint_check_finds_nan_in_a_layer_that_does_not_train_yet(tmp_path):
    # layer_delay 0.5: layer 4 starts at step 10, so no objective of it is checked before.
    run = trainer(tmp_path, layer_delay=0.5)
    callback = poison(run.model.layers[3], "sqrt_precisions", float("nan"), at_steps={6})
    with pytest.raises(NumericalError) as caught:
        run.run(callback=callback)
    assert str(caught.value) == (
        "layer 4 (G(9)): parameters sqrt_precisions are not finite at step 10 (found by the "
        "parameters check). Lower the learning rate, or let the run roll back "
        "(on_nonfinite='rollback', --on-nan rollback); not writing a broken checkpoint (the "
        "checkpoint of step 5 is kept)"
    )
    assert load_trainer_state(tmp_path)["step"] == 5


def test_a_resumed_run_that_stops_names_the_checkpoint_it_resumed_from(tmp_path):
    # As above: layer 4 starts at step 10, the checkpoint check finds its NaN.
    trainer(tmp_path, layer_delay=0.5).run(stop_at=7)  # checkpoints at steps 5 and 7
    run = trainer(tmp_path, layer_delay=0.5)
    run.resume()
    callback = poison(run.model.layers[3], "sqrt_precisions", float("nan"), at_steps={8})
    with pytest.raises(NumericalError, match=r"\(the checkpoint of step 7 is kept\)$"):
        run.run(callback=callback)
    assert load_trainer_state(tmp_path)["step"] == 7


def test_overflow_with_finite_input_is_named_as_such():
    data = images()
    data[:, 0, 0, 0] = 1e30  # finite, but its square is not in float32
    run = trainer(None, data, layer_delay=0.0)
    with pytest.raises(NumericalError) as caught:
        run.run()
    assert str(caught.value).startswith(
        "layer 2 (G(4)): non-finite objective at step 1 although the batch's pixels and all "
        "parameters are finite, so a value overflowed (largest |pixel| of the batch: 1e+30)."
    )
    assert run.step == 0


def test_rollback_recovers_lowers_the_learning_rate_and_skips_the_batch(tmp_path, caplog):
    run = trainer(tmp_path / "a", on_nonfinite="rollback")
    callback = poison(run.model.layers[1], "means", float("nan"), at_steps={7}, once=True)
    with caplog.at_level(logging.WARNING, logger="dcgmm.training.trainer"):
        run.run(callback=callback)
    assert run.step == 20
    assert all(torch.isfinite(p).all() for p in run.model.parameters())
    assert [(r["step"], r["layer"], r["cause"], r["checkpoint_step"]) for r in run.rollbacks] == [
        (8, 2, "parameters", 5)
    ]
    assert run.state_dict()["skipped_steps"] == [7]
    assert [r.getMessage() for r in caplog.records] == [
        "layer 2 (G(4)): parameters means are not finite at step 8 (found by the objective "
        "check). Lower the learning rate. Rolled back to the checkpoint of step 5 (rollback 1 of "
        "at most 3); layer 2's learning rates are now x0.5, and the batch of step 7 is skipped"
    ]
    gmm_groups = [g for g in run.optimizer.param_groups if g["layer"] == 1]
    for group in gmm_groups:
        assert group["lr"] == run.schedules[1].lr * group["scale"] * 0.5
    # metrics.jsonl holds each step once, in order: the records of steps 6-7 were redone.
    lines = (tmp_path / "a" / METRICS_FILE).read_text().splitlines()
    steps = [json.loads(line)["step"] for line in lines]
    assert steps == list(range(1, 21))
    state = load_trainer_state(tmp_path / "a")
    assert state["rollbacks"] == run.rollbacks
    assert state["lr_scale"] == {"1": 0.5}

    # The rollback's decisions are saved at once: crashed right after it and resumed, the run
    # ends exactly where the uninterrupted one did.
    split = trainer(tmp_path / "b", on_nonfinite="rollback")
    poisoned = poison(split.model.layers[1], "means", float("nan"), at_steps={7}, once=True)
    seen = []

    def crash_in_the_replay(step, n_steps, record):
        poisoned(step, n_steps, record)
        seen.append(step)
        if seen.count(6) == 2:  # step 6 again: the rollback happened
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        split.run(callback=crash_in_the_replay)
    assert load_trainer_state(tmp_path / "b")["step"] == 5
    resumed = trainer(tmp_path / "b", on_nonfinite="rollback")
    resumed.model.load_state_dict(saved(tmp_path / "b"))
    resumed.resume()
    resumed.run()
    assert resumed.rollbacks == run.rollbacks
    assert_same_parameters(resumed.model.state_dict(), run.model.state_dict())


def test_rollback_gives_up_after_max_rollbacks(tmp_path):
    run = trainer(tmp_path, on_nonfinite="rollback", max_rollbacks=2)
    callback = poison(run.model.layers[1], "logits", float("nan"), at_steps=set(range(6, 21)))
    message = r"Gave up after 2 rollbacks \(steps 7, 7\); raise max_rollbacks or lower the lea"
    with pytest.raises(NumericalError, match=message) as e:
        run.run(callback=callback)
    assert "let the run roll back" not in str(e.value)
    assert (e.value.event.layer, e.value.event.cause) == (2, "parameters")  # the event travels
    assert len(run.rollbacks) == 2
    assert run.state_dict()["lr_scale"] == {"1": 0.25}  # each rollback halves it again
    assert load_trainer_state(tmp_path)["step"] == 5
    assert all(torch.isfinite(p).all() for p in saved(tmp_path).values())


def test_rollback_does_not_retry_bad_data(tmp_path):
    data = images()
    data[0, 0, 0, 0] = float("inf")
    run = trainer(tmp_path, data, on_nonfinite="rollback")
    with pytest.raises(NumericalError, match="not rolling back: the same images come back") as e:
        run.run()
    assert e.value.event.cause == "data"
    assert run.rollbacks == []


def test_watchdog_options_are_validated():
    with pytest.raises(ValueError, match="'rollback' reloads the last checkpoint, so it needs"):
        trainer(None, on_nonfinite="rollback")
    config = TrainConfig(steps=1)
    object.__setattr__(config, "on_nonfinite", "skip")  # as from a hand-written --config file
    with pytest.raises(ValueError, match="on_nonfinite must be 'stop' or 'rollback'; got 'skip'"):
        config.__post_init__()  # (the tests' beartype hook rejects it even earlier)
    with pytest.raises(ValueError, match=r"rollback_lr_factor must be in \(0, 1\]; got 0.0"):
        TrainConfig(steps=1, rollback_lr_factor=0.0)
    with pytest.raises(ValueError, match="max_rollbacks must be positive"):
        TrainConfig(steps=1, max_rollbacks=0)


def test_diagnose_lists_at_most_five_images():
    model = DCGMM.from_spec(SPEC, (10, 10, 1))
    batch = torch.full((8, 10, 10, 1), float("nan"))
    event = diagnose(list(model.layers), step=3, bad_layer=1, what="objective", images=batch)
    assert event.detail == "[0, 1, 2, 3, 4, ... (8 in all)]"


CLI_RUN = ["train", "--model", "F(7,7)-G(4)-F(4,1)-G(4)", "--data", "mnist", "--limit", "400",
           "--steps", "30", "--batch-size", "20", "--layer-delay", "0", "--checkpoint-every", "1",
           "--lr-start", "1e12", "--lr-floor", "1e12"]  # fmt: skip  # diverges at step 3


def test_cli_stops_with_status_1_and_keeps_the_last_checkpoint(tmp_path, capsys):
    run = tmp_path / "run"
    assert main([*CLI_RUN, "--out", str(run)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("dcgmm train: stopped: layer 2 (G(4)): non-finite objective at step 3")
    assert load_trainer_state(run)["step"] == 2


def test_cli_rollback_option_and_info(tmp_path, capsys):
    run = tmp_path / "run"
    assert main([*CLI_RUN, "--on-nan", "rollback", "--max-rollbacks", "2", "--out", str(run)]) == 1
    assert "Gave up after 2 rollbacks (steps 3, 4)" in capsys.readouterr().err
    assert json.loads((run / "config.json").read_text())["train"]["on_nonfinite"] == "rollback"
    assert main(["info", str(run)]) == 0
    out = capsys.readouterr().out
    assert "rolled back at step 3 to step 2: non-finite objective in layer 2 (G(4))" in out
    assert "rolled back at step 4 to step 3" in out  # step 3 skipped, then saved
