"""Run directories from Python: a Trainer writes a complete run; load_run reads every kind."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import dcgmm
from dcgmm import (
    DCGMM,
    GMM,
    CheckpointError,
    Folding,
    SamplingConfig,
    TrainConfig,
    Trainer,
    load_dataset,
    load_run,
)
from dcgmm.cli.main import main
from dcgmm.interfaces.run_outliers import run_outliers
from dcgmm.io.run_files import CONFIG_FILE
from dcgmm.training.checkpoint import load_model

ROOT = Path(__file__).resolve().parents[1]


def readme_example() -> str:
    """The README's first Python block, with a budget of seconds instead of 60 epochs."""
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```python\n(.*?)```", text, re.S)
    assert block is not None, "README.md has no python block"
    code = block.group(1)
    assert 'TrainConfig(epochs=60, solver="em")' in code
    assert 'run_dir="runs/first"' in code
    code = code.replace("TrainConfig(epochs=60,", "TrainConfig(steps=20,")
    if not (ROOT.parent / "shared" / "data" / "mnist").exists():
        code = code.replace('"../shared/data/mnist"', '"mnist"')  # CI without ../shared
    return code.replace('"../shared/', f'"{ROOT.parent}/shared/')


def test_the_readme_python_example_leaves_a_run_that_every_command_reads(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    exec(compile(readme_example(), "README.md", "exec"), {})
    run = tmp_path / "runs" / "first"
    config = json.loads((run / CONFIG_FILE).read_text())
    assert config["spec"] == "F(8,2)-G(25)-F(11,1)-G(25)"
    assert config["input_shape"] == [28, 28, 1]
    assert config["train"]["steps"] == 20
    assert config["data"] == {"source": None, "n_samples": 10000}
    loaded = load_run(run)
    assert loaded.kind == "dcgmm"
    assert loaded.trainer_state["step"] == 20
    assert isinstance(loaded.model, dcgmm.ImageModel)
    drawn = loaded.model.sample(2, generator=torch.Generator().manual_seed(0))
    assert drawn.shape == (2, 28, 28, 1)
    assert load_model(run).spec == config["spec"]
    capsys.readouterr()
    assert main(["eval", str(run), "--data", "mnist", "--limit", "100", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["layers"]) == 2
    assert main(["info", str(run)]) == 0
    assert "sigma_som" in capsys.readouterr().out
    assert main(["sample", str(run), "-n", "2", "--out", str(tmp_path / "s.png")]) == 0
    assert (tmp_path / "s.png").stat().st_size > 0
    # Without --data, a command that needs the training data says where it is missing.
    assert main(["eval", str(run)]) == 2
    assert "names no data source" in capsys.readouterr().err


def test_a_model_built_from_layers_saves_a_run_that_rebuilds(tmp_path):
    folding = Folding((8, 8, 1), (4, 4), (2, 2))
    gmm = GMM(folding.out_shape, 4, independent=True, generator=torch.Generator().manual_seed(0))
    model = DCGMM([folding, gmm], (8, 8, 1))
    assert model.spec == "F(4,2)-G(4,indep)"
    images = torch.rand(40, 8, 8, 1, generator=torch.Generator().manual_seed(1))
    Trainer(model, TrainConfig(steps=3, batch_size=10), images, run_dir=tmp_path / "r").run()
    loaded = load_run(tmp_path / "r").native
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name], tensor, rtol=0, atol=0)


def test_a_trainer_refuses_a_run_directory_of_another_model(tmp_path):
    images = torch.rand(40, 8, 8, 1, generator=torch.Generator().manual_seed(1))
    first = DCGMM.from_spec("F(4,2)-G(4)", (8, 8, 1))
    Trainer(first, TrainConfig(steps=2, batch_size=10), images, run_dir=tmp_path).run()
    other = DCGMM.from_spec("F(4,2)-G(9)", (8, 8, 1))
    with pytest.raises(CheckpointError, match=r"holds a model of spec 'F\(4,2\)-G\(4\)'"):
        Trainer(other, TrainConfig(steps=2, batch_size=10), images, run_dir=tmp_path)


def test_run_info_may_not_overwrite_what_the_trainer_records():
    model = DCGMM.from_spec("F(4,2)-G(4)", (8, 8, 1))
    images = torch.rand(20, 8, 8, 1)
    with pytest.raises(ValueError, match=r"info may not set \['spec'\]"):
        Trainer(model, TrainConfig(steps=2, batch_size=10), images, run_info={"spec": "A"})


@pytest.mark.parametrize(
    ("model", "flags", "adapter"),
    [("gauss-vae", ["--epochs", "2"], "VAEModel"),
     ("nsn", ["--steps", "2", "--nsn-images", "100"], "NSNModel")],
)  # fmt: skip
def test_load_run_returns_a_baseline_behind_the_common_interface(tmp_path, model, flags, adapter):
    out = tmp_path / model
    args = ["train", "--model", model, "--data", "mnist", "--limit", "300", "--out", str(out)]
    assert main([*args, *flags]) == 0
    run = load_run(out)
    assert run.kind == model
    assert run.trainer_state is None
    assert type(run.model).__name__ == adapter
    assert run.model.image_shape == (28, 28, 1)
    drawn = run.model.sample(3, generator=torch.Generator().manual_seed(0))
    assert drawn.shape == (3, 28, 28, 1)
    assert run.model.outlier_score(drawn).shape == (3,)
    # What the commands call: the same on every run, options as the model takes them.
    images = load_dataset("mnist", split="test", limit=40).images
    x = run.prepare(images)
    binary = bool(((x == 0) | (x == 1)).all())
    assert binary == (model != "nsn")  # a VAE sees binarised images, as it trained
    report = run.evaluate(x)
    assert report.to_dict()["n_samples"] == 40
    assert str(report)
    assert run.accepts("sample") == frozenset()
    with pytest.raises(TypeError, match=r"sample of a .* run takes no options; got config"):
        run.sample(2, config=SamplingConfig())
    result = run_outliers(run, x[:20], x[20:])
    assert 0.0 <= result.auc <= 1.0
    assert result.summary()
    with pytest.raises(TypeError, match="got kind"):
        run_outliers(run, x[:20], x[20:], kind="max_component")
    with pytest.raises(ValueError, match="on the CPU only"):  # not taken and then ignored
        load_run(out, map_location="cuda")


def test_load_run_of_a_dcgmm_takes_the_dcgmm_options(tmp_path):
    train = load_dataset("mnist", limit=200)
    model = DCGMM.from_spec("F(7,7)-G(4)-F(4,1)-G(4)", (28, 28, 1),
                            generator=torch.Generator().manual_seed(0))  # fmt: skip
    Trainer(model, TrainConfig(steps=20, batch_size=50), train.images, run_dir=tmp_path).run()
    run = load_run(tmp_path)
    assert run.name == model.spec
    assert run.accepts("sample") == {"config", "classes"}
    x = run.prepare(load_dataset("mnist", split="test", limit=40).images)
    assert "clustering" not in run.evaluate(x).to_dict()  # only when asked for
    top1 = SamplingConfig(top_s=1)
    drawn = run.sample(4, config=top1, generator=torch.Generator().manual_seed(0))
    again = run.sample(4, config=top1, generator=torch.Generator().manual_seed(0))
    assert torch.equal(drawn, again)
    result = run_outliers(run, x[:20], x[20:], stats_data="mnist", stats_limit=100, layer=2)
    assert result.report.layer == 2
    assert set(result.report.auc_per_layer) == {2, 4}
    with pytest.raises(ValueError, match="GMM layer"):
        run_outliers(run, x[:20], x[20:], stats_data="mnist", layer=3)  # a folding layer


def test_import_dcgmm_loads_no_baseline():
    code = "import dcgmm, sys; print([m for m in sys.modules if 'baselines' in m])"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_an_extended_run_continues_bit_for_bit_as_one_longer_run(tmp_path, capsys):
    common = ["--model", "F(28,1)-G(4)", "--data", "mnist", "--limit", "200", "--batch-size", "50"]
    assert main(["train", *common, "--steps", "12", "--out", str(tmp_path / "long")]) == 0
    assert main(["train", *common, "--steps", "5", "--out", str(tmp_path / "short")]) == 0
    assert main(["train", "--resume", str(tmp_path / "short"), "--steps", "12"]) == 0
    long, extended = load_model(tmp_path / "long"), load_model(tmp_path / "short")
    for name, tensor in long.state_dict().items():
        torch.testing.assert_close(extended.state_dict()[name], tensor, rtol=0, atol=0)
    assert json.loads((tmp_path / "short" / CONFIG_FILE).read_text())["train"]["steps"] == 12
    # Finished: a resume without --steps trains nothing and says how to extend.
    assert main(["train", "--resume", str(tmp_path / "short")]) == 0
    assert load_run(tmp_path / "short").trainer_state["step"] == 12


def test_extending_a_run_keeps_the_start_steps_of_its_delayed_layers(tmp_path):
    images = torch.rand(40, 8, 8, 1, generator=torch.Generator().manual_seed(1))
    model = DCGMM.from_spec("F(4,2)-G(4)-F(3,1)-G(4)", (8, 8, 1))
    config = TrainConfig(steps=10, batch_size=10, layer_delay=0.5)
    Trainer(model, config, images, run_dir=tmp_path).run()
    longer = Trainer(load_model(tmp_path), TrainConfig(steps=30, batch_size=10, layer_delay=0.5),
                     images, run_dir=tmp_path)  # fmt: skip
    with pytest.raises(ValueError, match="or extend the run to more steps"):
        longer.resume()
    longer.resume(extend=True)
    assert longer.state_dict()["layer_start_steps"] == {"1": 0, "3": 5}  # not 15 of 30


def test_a_run_whose_gmm_layers_freeze_is_not_extended(tmp_path):
    images = torch.rand(40, 8, 8, 1, generator=torch.Generator().manual_seed(1))
    labels = torch.arange(40) % 2
    model = DCGMM.from_spec("F(4,2)-G(4)-C(2)", (8, 8, 1))
    Trainer(model, TrainConfig(steps=10, batch_size=10, freeze_gmm_at=0.5), images, labels,
            run_dir=tmp_path).run()  # fmt: skip
    longer = Trainer(load_model(tmp_path), TrainConfig(steps=30, batch_size=10, freeze_gmm_at=0.5),
                     images, labels, run_dir=tmp_path)  # fmt: skip
    with pytest.raises(ValueError, match=r"GMM layers freeze .* cannot be extended"):
        longer.resume(extend=True)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--lr-start", "0.5"], "--lr-start cannot change when resuming"),
        (["--steps", "3"], "can be extended, not shortened"),
    ],
)
def test_resume_refuses_what_it_would_drop(tmp_path, capsys, flags, message):
    args = ["--model", "F(28,1)-G(4)", "--data", "mnist", "--limit", "100", "--steps", "5"]
    assert main(["train", *args, "--out", str(tmp_path / "r")]) == 0
    capsys.readouterr()
    assert main(["train", "--resume", str(tmp_path / "r"), *flags]) == 2
    assert message in capsys.readouterr().err


def test_a_cuda_device_without_cuda_is_one_line_and_writes_nothing(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    out = tmp_path / "r"
    args = ["train", "--model", "A", "--data", "mnist", "--steps", "5", "--device", "cuda"]
    assert main([*args, "--out", str(out)]) == 2
    assert "this PyTorch" in capsys.readouterr().err
    assert not out.exists()
    with pytest.raises(ValueError, match=r"TrainConfig\.device 'cuda'"):
        Trainer(DCGMM.from_spec("F(4,2)-G(4)", (8, 8, 1)), TrainConfig(steps=2, device="cuda"),
                torch.rand(20, 8, 8, 1))  # fmt: skip


@pytest.mark.parametrize(
    ("flags", "message"),
    [(["--model", "A", "--data", "nowhere"], "unknown data source"),
     (["--model", "F(3,1)-Q(4)", "--data", "mnist"], "unknown layer type 'Q'")],
)  # fmt: skip
def test_a_failed_start_leaves_no_run_folder_but_keeps_the_users(tmp_path, capsys, flags, message):
    out = tmp_path / "r"
    assert main(["train", *flags, "--steps", "5", "--out", str(out)]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()
    (tmp_path / "mine").mkdir()  # a folder that was there before: not ours to remove
    assert main(["train", *flags, "--steps", "5", "--out", str(tmp_path / "mine")]) == 2
    assert (tmp_path / "mine").is_dir()
