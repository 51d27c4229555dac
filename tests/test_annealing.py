import pytest

from dcgmm.training.annealing import AnnealingConfig, SingleExpSchedule


def test_single_exp_against_hand_computed_trace():
    cfg = AnnealingConfig(lr_start=0.011, lr_floor=0.01, window=100, delta=0.05, gamma=0.9)
    sched = SingleExpSchedule.start(cfg, sigma_start=2.0)
    # window means and what the spec's rule makes of them, worked out by hand:
    # w1 = 10 -> baseline; w2 = 20 -> last = 20 (progress last - l0 = 10)
    # w3 = 30: r = (30 - 20) / 10 = 1.0 -> no reduction; last = 30 (progress 20)
    # w4 = 30.5: r = 0.5 / 20 = 0.025 < 0.05 -> reduce: lr 0.0099 -> floor 0.01, sigma 1.8
    # w5 = 29: r = (29 - 30.5) / (30.5 - 10) = -0.0732 > -2 * 0.05 -> reduce; last = 29
    # w6 = 25: r = (25 - 29) / (29 - 10) = -0.2105 -> no reduction; last = 25
    # w7 = 25: r = 0 -> reduce
    trace = [sched.end_window(v) for v in (10.0, 20.0, 30.0, 30.5, 29.0, 25.0, 25.0)]
    assert trace == [False, False, False, True, True, False, True]
    assert sched.lr == 0.01
    assert sched.sigma == pytest.approx(2.0 * 0.9**3)
    assert sched.n_reductions == 3
    assert sched.baseline == 10
    assert sched.last == 25


def test_single_exp_on_an_objective_that_falls_from_the_start():
    # Progress last - l0 is negative here, so the sign of r = change / progress flips:
    # w1 = 10 -> baseline; w2 = 5 -> last (progress -5)
    # w3 = 4.6: r = -0.4 / -5 = 0.08 >= delta -> no reduction; last = 4.6 (progress -5.4)
    # w4 = 4.4: r = -0.2 / -5.4 = 0.037 -> reduce; last = 4.4 (progress -5.6)
    # w5 = 5.0: r = 0.6 / -5.6 = -0.107 <= -2 delta -> no reduction; last = 5.0 (progress -5)
    # w6 = 5.4: r = 0.4 / -5 = -0.08 -> reduce
    cfg = AnnealingConfig(lr_start=0.02, lr_floor=0.01, window=10, delta=0.05, gamma=0.9)
    sched = SingleExpSchedule.start(cfg, sigma_start=1.0)
    trace = [sched.end_window(v) for v in (10.0, 5.0, 4.6, 4.4, 5.0, 5.4)]
    assert trace == [False, False, False, True, False, True]
    assert sched.lr == pytest.approx(0.02 * 0.9**2)
    assert sched.sigma == pytest.approx(0.9**2)
    assert sched.n_windows == 6


def test_sigma_is_floored():
    sched = SingleExpSchedule.start(AnnealingConfig(sigma_floor=0.5), sigma_start=0.6)
    for _ in range(10):
        sched.end_window(1.0)  # constant objective: stationary every window
    assert sched.sigma == 0.5


def test_state_round_trip():
    sched = SingleExpSchedule.start(AnnealingConfig(), sigma_start=1.0)
    for v in (1.0, 2.0, 2.01):
        sched.end_window(v)
    clone = SingleExpSchedule.start(AnnealingConfig(), sigma_start=1.0)
    clone.load_state_dict(sched.state_dict())
    assert clone == sched


def test_bad_config_is_rejected():
    with pytest.raises(ValueError, match="gamma"):
        AnnealingConfig(gamma=1.5)
