"""The CUDA path against the CPU path; skipped cleanly where there is no GPU."""

import pytest
import torch

from dcgmm import DCGMM, TrainConfig, Trainer, evaluate

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]


@pytest.mark.parametrize("preset", ["A", "C", "E"])
def test_training_on_cuda_follows_cpu(preset, mnist_small):
    train, _ = mnist_small
    params = {}
    for device in ("cpu", "cuda"):
        model = DCGMM.from_spec(preset, (28, 28, 1), generator=torch.Generator().manual_seed(0))
        config = TrainConfig(steps=20, seed=0, layer_delay=0.0, device=device)
        Trainer(model, config, train.images).run()
        params[device] = {k: v.detach().cpu() for k, v in model.named_parameters()}
        assert next(model.parameters()).device.type == device
    for name, value in params["cpu"].items():
        # Stated tolerance: float32 reductions in other orders, 20 SGD steps.
        torch.testing.assert_close(params["cuda"][name], value, rtol=1e-4, atol=1e-4, msg=name)


def test_evaluation_on_cuda_matches_cpu(mnist_small):
    _, test = mnist_small
    model = DCGMM.from_spec("E", (28, 28, 1), generator=torch.Generator().manual_seed(0))
    cpu = evaluate(model, test.images)
    gpu = evaluate(model.to("cuda"), test.images)
    for a, b in zip(cpu.layers, gpu.layers, strict=True):
        for key in ("annealed", "max_component", "loglik"):
            assert getattr(b, key) == pytest.approx(getattr(a, key), rel=1e-5, abs=1e-3)
