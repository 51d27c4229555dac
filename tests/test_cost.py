"""The cost model against counts done by hand."""

import pytest

from dcgmm import DCGMM
from dcgmm.cli.main import main
from dcgmm.cost import Cost, MachinePeaks, format_cost, model_cost


def test_preset_e_training_flops_by_hand():
    model = DCGMM.from_spec("E", (28, 28, 1))
    costs = model_cost(model, 100)
    assert [c.name for c in costs] == ["F(3,1)+G(25)", "F(4,2)+G(25)", "F(12,1)", "G(49)"]
    # 8*M*D*K for the forward products and the gradient statistics, 2*M*K*K smoothing.
    by_hand = [
        8 * 67600 * 9 * 25 + 2 * 67600 * 25 * 25,
        8 * 14400 * 400 * 25 + 2 * 14400 * 25 * 25,
        0,
        8 * 100 * 3600 * 49 + 2 * 100 * 49 * 49,
    ]
    assert [c.train.matmul_flops for c in costs] == by_hand
    assert sum(by_hand) / 1e9 == pytest.approx(1.5178, abs=1e-4)
    after_annealing = model_cost(model, 100, annealing=False)
    assert sum(c.train.matmul_flops for c in after_annealing) == pytest.approx(1.41480e9)
    # Evaluation is the forward half without the smoothing.
    assert costs[1].evaluate.matmul_flops == 4 * 14400 * 400 * 25


def test_bytes_count_input_output_and_parameters():
    model = DCGMM.from_spec("F(28,1)-G(4)", (28, 28, 1))
    folding, gmm = model_cost(model, 10)
    assert folding.train.bytes == 4 * (10 * 784 + 10 * 784)  # read the image, write the fold
    n_params = 4 + 4 * 784 * 2
    assert gmm.train.bytes == 4 * (10 * 784 + 10 * 4 + 2 * n_params)
    assert gmm.evaluate.bytes == 4 * (10 * 784 + 10 * 4 + n_params)


def test_floor_is_the_roofline_maximum():
    cost = Cost(matmul_flops=2e9, bytes=1e8)
    assert cost.floor_seconds(1e11, 1e10) == pytest.approx(0.02)  # compute-bound
    assert cost.floor_seconds(1e12, 1e9) == pytest.approx(0.1)  # memory-bound
    peaks = MachinePeaks(matmul_flops=1e11, bandwidth=1e10, threads=2, device="cpu")
    text = format_cost(DCGMM.from_spec("E", (28, 28, 1)), 100, peaks)
    assert "floor ms" in text
    assert "total" in text


def test_cli_info_cost(capsys):
    assert main(["info", "C", "--cost", "--batch-size", "10"]) == 0
    out = capsys.readouterr().out
    assert "P(2,2,ceil)" in out
    assert "evaluate" in out
