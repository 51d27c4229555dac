"""dcgmm train --tensorboard: events read back with TensorBoard's own reader."""

import importlib.metadata
import json
import math
import sys

import pytest
import torch

from dcgmm.cli.main import main
from dcgmm.io.images import decode_png
from dcgmm.io.run_files import METRICS_FILE
from dcgmm.training.checkpoint import load_trainer_state

# 400 digits in batches of 20; a classifier on top; the second GMM layer starts at step 3.
TRAIN = ["train", "--model", "F(7,7)-G(4)-F(4,1)-G(9)-C(10)", "--data", "mnist", "--limit",
         "400", "--steps", "30", "--batch-size", "20", "--log-every", "5", "--annealing-window",
         "5", "--checkpoint-every", "10", "--classifier-lr", "0.5"]  # fmt: skip


def read_events(log_dir):
    accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    events = accumulator.EventAccumulator(
        str(log_dir), size_guidance={"scalars": 0, "images": 0, "tensors": 0}
    )
    events.Reload()
    return events


def scalars(events, tag):
    return [(e.step, e.value) for e in events.Scalars(tag)]


def test_train_with_tensorboard_writes_scalars_and_image_grids(tmp_path):
    pytest.importorskip("tensorboard")
    run = tmp_path / "run"
    assert main([*TRAIN, "--tensorboard", "--out", str(run)]) == 0
    events = read_events(run / "tensorboard")
    tags = events.Tags()
    gmm_scalars = {f"{kind}/layer{n}" for kind in ("objective", "lr", "sigma_som",
                   "annealing_reductions") for n in (2, 4)}  # fmt: skip
    assert set(tags["scalars"]) == gmm_scalars | {
        "train/epoch", "classifier/cross_entropy", "classifier/accuracy"
    }  # fmt: skip
    assert set(tags["images"]) == {"centroids/layer2", "centroids/layer4", "samples"}

    # Scalars are metrics.jsonl's numbers (in float32), at the logged steps.
    records = [json.loads(x) for x in (run / METRICS_FILE).read_text().splitlines()]
    assert [r["step"] for r in records] == [5, 10, 15, 20, 25, 30]
    for n, slot in ((2, 0), (4, 1)):
        objective = scalars(events, f"objective/layer{n}")
        assert objective == [
            (r["step"], pytest.approx(r["layers"][slot]["objective"], rel=1e-6)) for r in records
        ]
        assert all(math.isfinite(v) for _, v in objective)
        sigma = [v for _, v in scalars(events, f"sigma_som/layer{n}")]
        assert sigma == sorted(sigma, reverse=True)  # annealing only shrinks it
        assert sigma[0] <= 0.25 * math.sqrt(2 * (4 if n == 2 else 9)) + 1e-6
        lr = [v for _, v in scalars(events, f"lr/layer{n}")]
        assert lr == sorted(lr, reverse=True)
        assert lr[0] == pytest.approx(0.011)  # lr_start
        assert lr[-1] > 0.01 * (1 - 1e-6)  # lr_floor, in float32
    assert max(v for _, v in scalars(events, "annealing_reductions/layer2")) >= 1
    assert scalars(events, "classifier/accuracy") == [
        (r["step"], pytest.approx(r["classifier_accuracy"], rel=1e-6)) for r in records
    ]
    assert scalars(events, "classifier/cross_entropy") == [
        (r["step"], pytest.approx(r["layers"][2]["cross_entropy"], rel=1e-6)) for r in records
    ]
    assert [s for s, _ in scalars(events, "train/epoch")] == [5, 10, 15, 20, 25, 30]

    # Image grids at every checkpoint (10, 20, 30): real PNGs of the expected grid sizes.
    for tag, (rows, cols) in {
        "centroids/layer2": (2, 2),  # 4 centroids of 7x7 pixels
        "centroids/layer4": (3, 3),  # 9 centroids of 4x4 windows of 4 channels, side by side
        "samples": (4, 4),  # 16 digits of 28x28
    }.items():
        images = events.Images(tag)
        assert [im.step for im in images] == [10, 20, 30]
        pixels = decode_png(images[-1].encoded_image_string)
        assert pixels.shape[:2] == (images[-1].height, images[-1].width)  # RGB in the file
        size = {"centroids/layer2": (7, 7), "centroids/layer4": (4, 16), "samples": (28, 28)}[tag]
        assert pixels.shape[:2] == (rows * (2 * size[0] + 1) + 1, cols * (2 * size[1] + 1) + 1)
        assert pixels.std() > 0  # not a blank picture
    text = events.Tensors("run/model/text_summary")
    assert "F(7,7)-G(4)-F(4,1)-G(9)-C(10)" in text[0].tensor_proto.string_val[0].decode()
    config = json.loads((run / "config.json").read_text())
    assert config["tensorboard"] == {"image_every": 10}


def test_a_crashed_run_resumes_its_tensorboard_log_without_duplicates(tmp_path):
    pytest.importorskip("tensorboard")
    run = tmp_path / "run"
    assert main([*TRAIN, "--tensorboard", "--stop-at", "25", "--out", str(run)]) == 0
    # As if it had been killed at step 25 after the checkpoint of step 20: rewind it.
    state = run / "model.safetensors"
    first = tmp_path / "at20"
    assert main([*TRAIN, "--stop-at", "20", "--out", str(first)]) == 0
    state.write_bytes((first / "model.safetensors").read_bytes())
    assert main(["train", "--resume", str(run)]) == 0  # no flag: the run's config asks for it
    events = read_events(run / "tensorboard")
    assert [s for s, _ in scalars(events, "objective/layer2")] == [5, 10, 15, 20, 25, 30]
    assert [im.step for im in events.Images("samples")] == [10, 20, 30]


def test_monitor_purges_the_steps_a_rollback_redoes(tmp_path):
    pytest.importorskip("tensorboard")
    from dcgmm import DCGMM
    from dcgmm.training.metrics import LayerMetrics, TrainingMetrics
    from dcgmm.training.monitoring import TensorBoardMonitor

    model = DCGMM.from_spec("F(4,2)-G(4)", (6, 6, 1))
    monitor = TensorBoardMonitor(tmp_path, model, image_every=100)

    def record(step, objective):
        layer = LayerMetrics(2, "G(4)", True, objective=objective, lr=0.01, sigma_som=1.0,
                             n_reductions=0)  # fmt: skip
        return TrainingMetrics(step, step / 10, (layer,), None)

    for step in range(1, 9):
        monitor(step, 10, record(step, float(step)))
    for step in range(6, 11):  # rolled back to the checkpoint of step 5
        monitor(step, 10, record(step, -float(step)))
    monitor.close()
    events = read_events(tmp_path / "tensorboard")
    assert scalars(events, "objective/layer2") == [(s, float(s)) for s in range(1, 6)] + [
        (s, -float(s)) for s in range(6, 11)
    ]


def test_tensorboard_missing_gives_the_install_hint(tmp_path, monkeypatch, capsys):
    stopped = tmp_path / "stopped"
    assert main([*TRAIN, "--stop-at", "5", "--out", str(stopped)]) == 0
    config = json.loads((stopped / "config.json").read_text())
    config["tensorboard"] = {"image_every": 10}  # as if started with --tensorboard
    (stopped / "config.json").write_text(json.dumps(config))
    capsys.readouterr()

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    run = tmp_path / "run"
    assert main([*TRAIN, "--tensorboard", "--out", str(run)]) == 2
    err = capsys.readouterr().err
    assert "TensorBoard logging needs the tensorboard package" in err
    assert "pip install 'dcgmm[tensorboard]'" in err
    assert not run.exists()  # nothing was started
    assert main(["train", "--resume", str(stopped)]) == 2
    assert "pip install 'dcgmm[tensorboard]'" in capsys.readouterr().err
    assert load_trainer_state(stopped)["step"] == 5  # it did not go on without its monitor


def test_tensorboard_image_interval_is_checked(tmp_path, capsys):
    pytest.importorskip("tensorboard")
    run = tmp_path / "run"
    assert main([*TRAIN, "--tensorboard", "--tensorboard-image-every", "0", "--out", str(run)]) == 2
    assert "--tensorboard-image-every must be a positive step count; got 0" in (
        capsys.readouterr().err
    )
    assert not run.exists()
    from dcgmm import DCGMM
    from dcgmm.training.monitoring import TensorBoardMonitor

    with pytest.raises(ValueError, match="image_every must be a positive number of steps; got 0"):
        TensorBoardMonitor(tmp_path, DCGMM.from_spec("F(4,2)-G(4)", (6, 6, 1)), image_every=0)


def test_tensorboard_is_refused_for_baselines(tmp_path, capsys):
    args = ["train", "--model", "gauss-vae", "--data", "mnist", "--epochs", "1", "--tensorboard"]
    assert main([*args, "--out", str(tmp_path / "r")]) == 2
    assert "--tensorboard does not apply to gauss-vae; it takes" in capsys.readouterr().err


def test_env_reports_versions_threads_and_tensorboard(capsys, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    assert main(["env"]) == 0
    out = capsys.readouterr().out
    try:
        tensorboard = importlib.metadata.version("tensorboard")
    except importlib.metadata.PackageNotFoundError:
        tensorboard = "not installed"
    assert f"optional: tensorboard {tensorboard}, scikit-learn " in out
    assert f"torch {torch.__version__}, numpy " in out
    assert f"threads: torch {torch.get_num_threads()} intra-op" in out
    assert "OMP_NUM_THREADS=3, MKL_NUM_THREADS=unset" in out
    assert "cuda: " in out
