import json

import numpy as np
import pytest
import torch

from dcgmm import DCGMM, TrainConfig, Trainer, evaluate
from dcgmm.io.run_files import write_config
from dcgmm.training.batch_order import epoch_permutation
from dcgmm.training.checkpoint import load_model
from dcgmm.training.config import preset_config
from dcgmm.training.watchdog import NumericalError


def test_training_on_builtin_mnist_raises_test_loglik(mnist_small):
    train, test = mnist_small
    model = DCGMM.from_spec(
        "F(7,7)-G(9)-F(4,1)-G(4)", (28, 28, 1), generator=torch.Generator().manual_seed(0)
    )
    before = evaluate(model, test.images).layers
    Trainer(model, TrainConfig(steps=200, annealing_window=20), train.images).run()
    after = evaluate(model, test.images).layers
    for _b, a in zip(before, after, strict=True):
        assert torch.isfinite(torch.tensor([a.loglik, a.annealed, a.max_component])).all()
    # measured: layer 2 -22.8 -> -7.7 nats per position, layer 4 22.3 -> 53.6 per image
    assert after[0].loglik > before[0].loglik + 10
    assert after[1].loglik > before[1].loglik + 20


def test_classifier_trains_on_the_same_batches(mnist_small):
    train, test = mnist_small
    model = DCGMM.from_spec(
        "F(4,4)-G(9)-C(10)", (28, 28, 1), generator=torch.Generator().manual_seed(0)
    )
    cfg = TrainConfig(steps=200, classifier_lr=0.5, annealing_window=20)
    trainer = Trainer(model, cfg, train.images, train.labels)
    trainer.run()
    accuracy = evaluate(model, test.images, test.labels).classifier_accuracy
    assert accuracy > 0.5  # measured 0.75; 10 classes: chance is 0.1


def test_annealing_reduces_sigma_and_reaches_layers(mnist_small):
    train, _ = mnist_small
    model = DCGMM.from_spec("F(28,1)-G(9)", (28, 28, 1))
    trainer = Trainer(model, TrainConfig(steps=400, annealing_window=10), train.images)
    trainer.run()
    gmm = model.layers[1]
    assert trainer.schedules[1].n_reductions > 0
    assert float(gmm.sigma_som) == pytest.approx(trainer.schedules[1].sigma)
    assert float(gmm.sigma_som) < 0.25 * (2 * 9) ** 0.5


def test_training_keeps_every_precision_inside_its_bounds(mnist_small):
    """Real digits push the precisions of the constant background past the upper bound at
    once (those pixels have no variance), so the clip after each step must act."""
    from dcgmm._numerics import SQRT_PRECISION_LOWER_BOUND, SQRT_PRECISION_UPPER_BOUND

    train, _ = mnist_small
    model = DCGMM.from_spec("F(7,7)-G(4)-F(4,1)-G(9,indep)", (28, 28, 1),
                            generator=torch.Generator().manual_seed(0))  # fmt: skip
    Trainer(model, TrainConfig(steps=60, annealing_window=20, layer_delay=0.0), train.images).run()
    for _, gmm in model.gmm_layers():
        s = gmm.sqrt_precisions.detach()
        assert float(s.max()) == pytest.approx(SQRT_PRECISION_UPPER_BOUND, rel=1e-7)
        assert float(s.min()) >= SQRT_PRECISION_LOWER_BOUND
        assert int((s == s.max()).sum()) > 0.1 * s.numel()  # many sit at the bound
        assert float(s.min()) < SQRT_PRECISION_UPPER_BOUND * (1 - 1e-4)  # others moved inside


def test_layer_delay_keeps_upper_layers_still_at_first():
    model = DCGMM.from_spec("F(4,2)-G(4)-F(3,1)-G(4)", (8, 8, 1))
    upper_before = model.layers[3].means.detach().clone()
    trainer = Trainer(
        model, TrainConfig(steps=20, layer_delay=0.5, batch_size=10), torch.rand(40, 8, 8, 1)
    )
    assert trainer.is_active(1, 0)
    assert not trainer.is_active(3, 9)
    assert trainer.is_active(3, 10)
    trainer.run(stop_at=10)
    assert torch.equal(model.layers[3].means, upper_before)
    trainer.run()
    assert not torch.equal(model.layers[3].means, upper_before)


def test_independent_layer_learning_rate_is_scaled_by_positions():
    model = DCGMM.from_spec("F(2,2)-G(4,indep)", (6, 6, 1))
    trainer = Trainer(model, TrainConfig(steps=1, batch_size=5), torch.rand(10, 6, 6, 1))
    lrs = {g["scale"] for g in trainer.optimizer.param_groups}
    assert lrs == {1.0 * 9, 0.1 * 9, 0.2 * 9}


def test_preset_factors_and_explicit_override():
    cfg = preset_config("A", TrainConfig(steps=1), set())
    assert (cfg.lr_factor_weights, cfg.lr_factor_precisions) == (0.5, 0.5)
    cfg = preset_config("A", TrainConfig(steps=1, lr_factor_weights=0.1), {"lr_factor_weights"})
    assert cfg.lr_factor_weights == 0.1
    assert preset_config("F", TrainConfig(steps=1), set()).lr_factor_weights == 0.0


def test_epochs_reshuffle_deterministically():
    a0 = epoch_permutation(50, seed=0, epoch=0, device=torch.device("cpu"))
    assert torch.equal(a0, epoch_permutation(50, seed=0, epoch=0, device=torch.device("cpu")))
    assert not torch.equal(a0, epoch_permutation(50, seed=0, epoch=1, device=torch.device("cpu")))
    assert not torch.equal(a0, epoch_permutation(50, seed=1, epoch=0, device=torch.device("cpu")))


def _run(tmp_path, steps, stop_at=None, resume=False):
    images = torch.rand(230, 10, 10, 1, generator=torch.Generator().manual_seed(3))
    model = DCGMM.from_spec(
        "F(4,2)-G(4)-F(4,1)-G(9)", (10, 10, 1), generator=torch.Generator().manual_seed(0)
    )
    cfg = TrainConfig(
        steps=steps, annealing_window=7, checkpoint_every=13, log_every=5, seed=4, batch_size=20
    )
    if resume:
        model = load_model(tmp_path)
    else:
        write_config(
            tmp_path,
            {
                "spec": model.spec,
                "input_shape": [10, 10, 1],
                "objective": "annealed",
                "train": cfg.to_dict(),
            },
        )
    trainer = Trainer(model, cfg, images, run_dir=tmp_path)
    if resume:
        trainer.resume()
    trainer.run(stop_at=stop_at)
    return model, trainer


def test_resume_reproduces_uninterrupted_run_exactly(tmp_path):
    full, full_trainer = _run(tmp_path / "full", 60)
    # stop at 30: the last checkpoint is at step 26, so steps 27-30 are lost and redone
    _run(tmp_path / "split", 60, stop_at=30)
    resumed, resumed_trainer = _run(tmp_path / "split", 60, resume=True)
    assert resumed_trainer.step == 60
    for (name, a), (_, b) in zip(
        full.state_dict().items(), resumed.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    assert resumed_trainer.schedules == full_trainer.schedules
    full_log = (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()
    split_log = (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x) for x in split_log] == [json.loads(x) for x in full_log]


def test_nan_data_stops_with_a_message_naming_the_layer():
    model = DCGMM.from_spec("F(6,1)-G(4)", (6, 6, 1))
    config = TrainConfig(steps=30, annealing_window=5, batch_size=10)
    trainer = Trainer(model, config, torch.rand(40, 6, 6, 1))
    # The constructor refuses NaN images (tests/test_bad_input.py); poison the data behind its
    # back to reach the training-time watchdog.
    trainer.images[3, 2, 2, 0] = float("nan")
    position = epoch_permutation(40, 0, 0, torch.device("cpu")).tolist().index(3)
    with pytest.raises(
        NumericalError,
        match=rf"layer 2 \(G\(4\)\): non-finite objective at step {position // 10 + 1},",
    ):
        trainer.run()


def test_train_config_validation():
    with pytest.raises(ValueError, match="exactly one of epochs and steps"):
        TrainConfig()
    with pytest.raises(ValueError, match="batch_size must be positive"):
        TrainConfig(steps=1, batch_size=0)
    with pytest.raises(ValueError, match="fewer than one batch"):
        Trainer(
            DCGMM.from_spec("F(6,1)-G(4)", (6, 6, 1)),
            TrainConfig(epochs=1),
            torch.rand(10, 6, 6, 1),
        )


def test_freed_memory_is_retained_once_unless_switched_off():
    import os
    import subprocess
    import sys

    code = "from dcgmm._allocator import retain_freed_memory as r; print(r(), r())"
    on = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    off = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "DCGMM_RETAIN_FREED_MEMORY": "0"})  # fmt: skip
    expected = "True False" if sys.platform.startswith("linux") else "False False"
    assert on.stdout.split() == expected.split()
    assert off.stdout.split() == ["False", "False"]


def test_a_run_that_ends_mid_annealing_warns_naming_each_layer(mnist_small):
    from dcgmm.exceptions import AnnealingWarning

    train, _ = mnist_small
    model = DCGMM.from_spec("F(7,7)-G(4)-F(4,1)-G(9)", (28, 28, 1))
    trainer = Trainer(model, TrainConfig(steps=30, annealing_window=10), train.images)
    with pytest.warns(AnnealingWarning) as caught:
        trainer.run()
    message = str(caught[0].message)
    assert "the annealing did not finish in 30 steps: sigma_som of layer 2 G(4) at" in message
    assert "layer 4 G(9) at" in message
    assert "--until-annealed" in message
    assert [i for i, _, _ in trainer.unannealed_layers()] == [2, 4]


def test_until_annealed_stops_once_every_layer_settled_at_its_floor(mnist_small, tmp_path):
    import warnings

    from dcgmm.exceptions import AnnealingWarning
    from dcgmm.training.checkpoint import load_trainer_state

    train, _ = mnist_small
    model = DCGMM.from_spec("F(28,1)-G(4)", (28, 28, 1))
    config = TrainConfig(steps=5000, annealing_window=10, annealing_gamma=0.6,
                         until_annealed=True, annealed_patience=3, layer_delay=0.0)  # fmt: skip
    trainer = Trainer(model, config, train.images, run_dir=tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error", AnnealingWarning)  # it did finish: no warning
        trainer.run()
    assert trainer.stopped_by == "annealed"
    assert trainer.step < 5000
    assert trainer.schedules[1].sigma == pytest.approx(0.01)
    assert trainer._settled[1] >= 3
    assert load_trainer_state(tmp_path)["step"] == trainer.step  # checkpointed where it stopped
    # Without the switch the same run goes on to its last step.
    model = DCGMM.from_spec("F(28,1)-G(4)", (28, 28, 1))
    config = TrainConfig(
        steps=trainer.step + 50, annealing_window=10, annealing_gamma=0.6, layer_delay=0.0
    )
    full = Trainer(model, config, train.images)
    full.run()
    assert (full.stopped_by, full.step) == ("end", trainer.step + 50)


def test_each_gmm_layer_can_start_at_its_own_fraction_of_the_run():
    model = DCGMM.from_spec("F(4,2)-G(4)-F(2,1)-G(4)-F(2,1)-G(4)", (10, 10, 1))
    images = torch.rand(40, 10, 10, 1, generator=torch.Generator().manual_seed(0))
    config = TrainConfig(steps=20, batch_size=10, layer_delays=[0.0, 0.5, 0.15])  # JSON list
    trainer = Trainer(model, config, images)
    assert config.layer_delays == (0.0, 0.5, 0.15)
    assert [trainer.is_active(i, 5) for i in (1, 3, 5)] == [True, False, True]
    assert trainer._start_step == {1: 0, 3: 10, 5: 3}
    even = Trainer(model, TrainConfig(steps=20, batch_size=10, layer_delay=0.1), images)
    assert even._start_step == {1: 0, 3: 2, 5: 4}
    with pytest.raises(ValueError, match=r"layer_delays has 2 entries; .* has 3 GMM layers"):
        Trainer(model, TrainConfig(steps=20, batch_size=10, layer_delays=(0.0, 0.1)), images)
    with pytest.raises(ValueError, match=r"layer_delays must each be in \[0, 1\)"):
        TrainConfig(steps=20, layer_delays=(0.0, 1.0))


def test_a_trainer_state_from_before_rollbacks_and_until_annealed_loads():
    # Checkpoints written before the watchdog's rollbacks (and before until_annealed) lack
    # four keys; they load with their empty defaults, and the rest of the state is restored.
    def make():
        model = DCGMM.from_spec(
            "F(6,1)-G(4)", (6, 6, 1), generator=torch.Generator().manual_seed(0)
        )
        config = TrainConfig(steps=12, annealing_window=3, batch_size=10)
        return Trainer(
            model, config, torch.rand(40, 6, 6, 1, generator=torch.Generator().manual_seed(1))
        )

    old = make()
    old.run(stop_at=7)
    state = old.state_dict()
    for key in ("rollbacks", "lr_scale", "skipped_steps", "settled_windows"):
        state.pop(key)
    fresh = make()
    fresh.rollbacks = [{"step": 99}]
    fresh._lr_scale = {1: 0.5}
    fresh._skipped = {5}
    fresh.load_state_dict(state)
    assert fresh.step == 7
    assert fresh.rollbacks == []
    assert fresh._lr_scale == {}
    assert fresh._skipped == set()
    assert fresh._settled == dict.fromkeys(fresh.schedules, 0)
    assert fresh.schedules == old.schedules


def test_logged_objectives_are_means_of_the_steps_and_windows_have_the_set_length():
    # The same run logged every step and every 4 steps: each coarse record is the mean of the
    # four fine ones (float64 sums of the same per-step values), and the annealing window of 3
    # steps closes exactly every 3 steps.
    def run(log_every: int) -> tuple[list[dict], Trainer]:
        model = DCGMM.from_spec(
            "F(6,1)-G(4)", (6, 6, 1), generator=torch.Generator().manual_seed(0)
        )
        config = TrainConfig(steps=12, annealing_window=3, batch_size=10, log_every=log_every)
        data = torch.rand(40, 6, 6, 1, generator=torch.Generator().manual_seed(1))
        trainer = Trainer(model, config, data)
        records = []
        trainer.run(callback=lambda step, n, record: records.append(record) if record else None)
        return records, trainer

    fine, fine_trainer = run(1)
    coarse, _ = run(4)
    assert [r.step for r in coarse] == [4, 8, 12]
    for k, record in enumerate(coarse):
        steps = [r.layers[0].objective for r in fine[4 * k : 4 * k + 4]]
        assert record.layers[0].objective == pytest.approx(sum(steps) / 4, rel=1e-12)
    assert fine_trainer.schedules[1].n_windows == 12 // 3


def test_a_budget_too_short_for_the_annealing_is_named_before_training():
    from dcgmm.exceptions import AnnealingWarning

    model = DCGMM.from_spec("F(28,1)-G(49)", (28, 28, 1))
    images = torch.rand(100, 28, 28, 1, generator=torch.Generator().manual_seed(0))
    # sigma_som 2.475 (K = 49) -> 0.01 by factors 0.9: 53 reductions; 5,000 steps of 100-step
    # windows give 48 (none in the first two windows), 5,500 give 53.
    with pytest.warns(
        AnnealingWarning, match="layer 2 G\\(49\\) can shrink its radius 48 times, 53"
    ):
        short = Trainer(model, TrainConfig(steps=5000), images)
    assert short.annealing_shortfall() == [(2, "G(49)", 48, 53)]
    assert Trainer(model, TrainConfig(steps=5400), images).annealing_shortfall() != []
    assert Trainer(model, TrainConfig(steps=5500), images).annealing_shortfall() == []


def test_uint8_images_train_bit_for_bit_as_their_float_pixels():
    from dcgmm import load_dataset

    compact = load_dataset("mnist", limit=300, dtype="uint8")
    assert compact.images.dtype == torch.uint8
    floats = load_dataset("mnist", limit=300)
    torch.testing.assert_close(compact.images.float() / 255, floats.images, rtol=0, atol=0)
    models = []
    for data in (compact, floats):
        model = DCGMM.from_spec("F(7,7)-G(4)-F(4,1)-G(4)", (28, 28, 1),
                                generator=torch.Generator().manual_seed(0))  # fmt: skip
        Trainer(model, TrainConfig(steps=12, batch_size=50), data.images).run()
        models.append(model.state_dict())
    for name, tensor in models[1].items():
        torch.testing.assert_close(models[0][name], tensor, rtol=0, atol=0)


def test_dtype_uint8_refuses_float_pixels_and_auto_converts_them(tmp_path):
    from dcgmm import DataError, load_dataset

    x = np.random.default_rng(0).random((4, 8, 8)).astype(np.float32)
    path = tmp_path / "f.npz"
    np.savez(path, x_train=x, y_train=np.arange(4), x_test=x, y_test=np.arange(4))
    with pytest.raises(DataError, match="stores float32 pixels; dtype='uint8' keeps uint8"):
        load_dataset(path, dtype="uint8")
    assert load_dataset(path, dtype="auto").images.dtype == torch.float32
    assert load_dataset("mnist", limit=3, dtype="auto").images.dtype == torch.uint8


def test_data_shards_batches_take_an_equal_share_of_every_block(mnist_small):
    """A batch of data_shards = 2 takes half its rows from each half of the data, each
    half shuffled on its own; the blocks are what load_dataset(shard=...) gives a rank."""
    from dcgmm.io.data import load_dataset

    train, _ = mnist_small
    images = train.images[:300]
    model = DCGMM.from_spec("F(28,1)-G(4)", train.image_shape)
    config = TrainConfig(steps=3, batch_size=10, data_shards=2)
    trainer = Trainer(model, config, images)
    assert trainer.steps_per_epoch == 30  # blocks of 150, 5 rows of each per batch
    seen = []
    for step in range(30):
        _, _, index = trainer._batch(step)
        assert (index[:5] < 150).all()
        assert (index[5:] >= 150).all()
        seen.append(index)
    assert sorted(torch.cat(seen).tolist()) == list(range(300))  # one epoch: every row once
    full = load_dataset("mnist", limit_per_class=100, limit=300)
    blocks = [load_dataset("mnist", limit_per_class=100, limit=300, shard=(i, 2)) for i in (0, 1)]
    assert torch.equal(torch.cat([b.images for b in blocks]), full.images)
    with pytest.raises(ValueError, match="divisible by data_shards"):
        TrainConfig(steps=3, batch_size=10, data_shards=3)
    with pytest.raises(ValueError, match="0 <= i < S"):
        load_dataset("mnist", shard=(2, 2))


def test_the_callback_gets_typed_records_that_are_the_lines_of_metrics_jsonl(tmp_path):
    model = DCGMM.from_spec("F(3,1)-G(4)-F(4,1)-G(4)-C(3)", (6, 6, 1),
                            generator=torch.Generator().manual_seed(0))  # fmt: skip
    config = TrainConfig(steps=6, batch_size=10, log_every=3, annealing_window=3)
    data = torch.rand(30, 6, 6, 1, generator=torch.Generator().manual_seed(1))
    labels = torch.arange(30) % 3
    records = []
    trainer = Trainer(model, config, data, labels, run_dir=tmp_path / "run")
    trainer.run(callback=lambda step, n, record: records.append(record) if record else None)
    lines = [
        json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    ]
    assert [r.to_dict() for r in records] == lines
    gmm, _, classifier = records[-1].layers
    assert (gmm.is_gmm, gmm.index, gmm.value) == (True, 2, gmm.objective)
    assert set(lines[-1]["layers"][0]) == {"index", "spec", "objective", "lr", "sigma_som",
                                           "n_reductions"}  # fmt: skip
    assert (classifier.is_gmm, classifier.value) == (False, classifier.cross_entropy)
    assert set(lines[-1]["layers"][2]) == {"index", "spec", "cross_entropy"}
    assert records[-1].classifier_accuracy is not None


def test_freeze_gmm_at_stops_the_gmm_layers_and_the_classifier_learns_on(mnist_small):
    train, _ = mnist_small
    model = DCGMM.from_spec(
        "F(4,4)-G(9)-C(10)", (28, 28, 1), generator=torch.Generator().manual_seed(0)
    )
    config = TrainConfig(steps=40, classifier_lr=0.5, annealing_window=5, freeze_gmm_at=0.5)
    trainer = Trainer(model, config, train.images, train.labels)
    assert [trainer.is_active(1, s) for s in (19, 20)] == [True, False]
    assert trainer.is_active(2, 39)  # the classifier trains to the end
    trainer.run(stop_at=20)
    gmm, classifier = model.layers[1], model.layers[2]
    frozen = [p.detach().clone() for p in gmm.parameters()]
    sigma = trainer.schedules[1].sigma
    weight = classifier.weight.detach().clone()
    trainer.run()
    assert all(torch.equal(a, b) for a, b in zip(frozen, gmm.parameters(), strict=True))
    assert trainer.schedules[1].sigma == sigma  # no window of a frozen layer is counted
    assert not torch.equal(weight, classifier.weight)
    two_stage = Trainer(model, TrainConfig(steps=40, classifier_delay=0.5, freeze_gmm_at=0.5),
                        train.images, train.labels)  # fmt: skip
    assert [two_stage.is_active(2, s) for s in (19, 20)] == [False, True]
    assert [two_stage.is_active(1, s) for s in (19, 20)] == [True, False]
    with pytest.raises(ValueError, match=r"classifier_delay must be in \[0, 1\)"):
        TrainConfig(steps=40, classifier_delay=1.0)
    no_classifier = DCGMM.from_spec("F(4,4)-G(9)", (28, 28, 1))
    with pytest.raises(ValueError, match=r"^freeze_gmm_at acts on a classifier layer; .* has none"):
        Trainer(no_classifier, config, train.images)  # nothing to train after the freeze
    with pytest.raises(ValueError, match=r"^classifier_delay acts on a classifier layer"):
        Trainer(no_classifier, TrainConfig(steps=40, classifier_delay=0.5), train.images)
    with pytest.raises(ValueError, match=r"comes before GMM layer\(s\) \[4\] start"):
        Trainer(DCGMM.from_spec("F(4,4)-G(9)-F(7,1)-G(4)-C(10)", (28, 28, 1)),
                TrainConfig(steps=40, layer_delays=(0.0, 0.6), freeze_gmm_at=0.5),
                train.images, train.labels)  # fmt: skip
    with pytest.raises(ValueError, match=r"freeze_gmm_at must be in \(0, 1\)"):
        TrainConfig(steps=40, freeze_gmm_at=1.0)
    with pytest.raises(ValueError, match="give one of them"):
        TrainConfig(steps=40, freeze_gmm_at=0.5, until_annealed=True)


def test_the_annealing_budget_counts_the_steps_before_the_freeze():
    from dcgmm.exceptions import AnnealingWarning

    model = DCGMM.from_spec("F(28,1)-G(49)-C(10)", (28, 28, 1))
    images = torch.rand(100, 28, 28, 1, generator=torch.Generator().manual_seed(0))
    labels = torch.arange(100) % 10
    # 53 reductions are needed (see above): the first 5,500 of 11,000 steps give them, the
    # first 5,390 do not.
    half = Trainer(model, TrainConfig(steps=11000, freeze_gmm_at=0.5), images, labels)
    assert half.annealing_shortfall() == []
    with pytest.warns(AnnealingWarning, match="budget of 5390 steps before the GMM layers"):
        Trainer(model, TrainConfig(steps=11000, freeze_gmm_at=0.49), images, labels)
