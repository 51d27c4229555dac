import gzip
import json
import struct

import numpy as np
import pytest
import torch

from dcgmm import DCGMM, CheckpointError, DataError, load_dataset
from dcgmm.cli.main import main
from dcgmm.io.data import parse_classes
from dcgmm.io.idx_files import read_idx
from dcgmm.io.images import encode_png
from dcgmm.io.run_files import MODEL_FILE, write_config, write_verified_safetensors
from dcgmm.training.checkpoint import load_model, read_checkpoint, save_checkpoint


def write_idx(path, array, gz=True):
    code = {np.uint8: 0x08}[array.dtype.type]
    raw = (
        struct.pack(">BBBB", 0, 0, code, array.ndim)
        + struct.pack(f">{array.ndim}I", *array.shape)
        + array.tobytes()
    )
    path.write_bytes(gzip.compress(raw) if gz else raw)


@pytest.fixture
def idx_folder(tmp_path):
    rng = np.random.default_rng(0)
    for split, n in (("train", 30), ("t10k", 12)):
        write_idx(
            tmp_path / f"{split}-images-idx3-ubyte.gz",
            rng.integers(0, 256, (n, 6, 5), dtype=np.uint8),
        )
        write_idx(tmp_path / f"{split}-labels-idx1-ubyte.gz", (np.arange(n) % 3).astype(np.uint8))
    return tmp_path


def test_idx_folder_loads_as_nhwc_float(idx_folder):
    ds = load_dataset(idx_folder)
    assert ds.images.shape == (30, 6, 5, 1)
    assert ds.images.dtype == torch.float32
    assert ds.images.min() >= 0
    assert ds.images.max() <= 1
    assert load_dataset(idx_folder, split="test").images.shape == (12, 6, 5, 1)


def test_builtin_subsets_are_real_and_balanced():
    ds = load_dataset("mnist")
    assert ds.images.shape == (10000, 28, 28, 1)
    assert torch.bincount(ds.labels).tolist() == [1000] * 10
    assert load_dataset("fashion-mnist", split="test").images.shape == (2000, 28, 28, 1)


def test_npz_and_class_selection(tmp_path):
    rng = np.random.default_rng(1)
    path = tmp_path / "d.npz"
    np.savez(
        path,
        x_train=rng.integers(0, 256, (20, 4, 4, 3), dtype=np.uint8),
        y_train=np.arange(20) % 4,
        x_test=np.zeros((2, 4, 4, 3), np.uint8),
        y_test=np.zeros(2),
    )
    ds = load_dataset(path, classes=(1, 3), limit_per_class=2)
    assert ds.images.shape == (4, 4, 4, 3)
    assert sorted(ds.labels.tolist()) == [1, 1, 3, 3]
    # limit: the first N of the selection in file order (labels 1, 3, 1 here).
    first = load_dataset(path, classes=(1, 3), limit=3)
    assert first.labels.tolist() == [1, 3, 1]
    assert torch.equal(first.images, load_dataset(path, classes=(1, 3)).images[:3])
    with pytest.raises(DataError, match="limit must be a positive"):
        load_dataset(path, limit=0)


def test_parse_classes():
    assert parse_classes("1-3,7") == (1, 2, 3, 7)
    assert parse_classes(None) is None
    with pytest.raises(DataError, match="classes must look like"):
        parse_classes("one")


@pytest.mark.parametrize(
    ("corrupt", "message"),
    [
        (lambda raw: raw[:-5], "truncated"),
        (lambda raw: b"\x01\x02" + raw[2:], "not an IDX file"),
        (lambda raw: raw[:6], "truncated"),
    ],
)
def test_bad_idx_files_raise_data_error(tmp_path, corrupt, message):
    good = struct.pack(">BBBB", 0, 0, 8, 2) + struct.pack(">2I", 3, 4) + bytes(12)
    path = tmp_path / "x-idx"
    path.write_bytes(corrupt(good))
    with pytest.raises(DataError, match=message):
        read_idx(path)


def test_data_errors(tmp_path, idx_folder):
    with pytest.raises(DataError, match="unknown data source"):
        load_dataset("mnistt")
    with pytest.raises(DataError, match=r"classes \[7\] do not occur"):
        load_dataset(idx_folder, classes=(7,))
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="cannot read"):
        load_dataset(tmp_path / "bad.npz")


def _saved_model(tmp_path):
    model = DCGMM.from_spec("F(4,2)-G(4)", (6, 6, 1))
    write_config(tmp_path, {"spec": model.spec, "input_shape": [6, 6, 1]})
    save_checkpoint(tmp_path, model, {"step": 0})
    return model


def test_checkpoint_round_trip(tmp_path):
    model = _saved_model(tmp_path)
    loaded = load_model(tmp_path)
    for (k, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), k


def test_corrupted_checkpoint_fails_its_checksum(tmp_path):
    _saved_model(tmp_path)
    raw = bytearray((tmp_path / MODEL_FILE).read_bytes())
    raw[-3] ^= 0xFF  # flip bits inside the tensor data
    (tmp_path / MODEL_FILE).write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="checksum"):
        load_model(tmp_path)


def test_truncated_checkpoint_and_wrong_spec(tmp_path):
    _saved_model(tmp_path)
    raw = (tmp_path / MODEL_FILE).read_bytes()
    (tmp_path / MODEL_FILE).write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupted"):
        load_model(tmp_path)
    _saved_model(tmp_path)
    write_config(tmp_path, {"spec": "F(4,2)-G(9)", "input_shape": [6, 6, 1]})
    with pytest.raises(CheckpointError, match="different runs"):
        load_model(tmp_path)


@pytest.mark.parametrize("objective", ["loglik", "max_component", "annealed"])
def test_a_checkpoint_loads_with_the_objective_it_was_trained_on(tmp_path, objective):
    model = DCGMM.from_spec("F(4,2)-G(4)", (6, 6, 1), objective=objective)
    write_config(tmp_path, {"spec": model.spec, "input_shape": [6, 6, 1], "objective": objective})
    save_checkpoint(tmp_path, model, {"step": 0})
    assert load_model(tmp_path).layers[1].objective == objective


def test_a_checkpoint_with_missing_or_foreign_tensors_is_refused_naming_them(tmp_path):
    _saved_model(tmp_path)
    tensors, metadata = read_checkpoint(tmp_path)
    body = {k: v for k, v in metadata.items() if k not in ("sha256", "metadata_sha256")}
    tensors.pop("layers.1.means")
    tensors["layers.1.extra"] = torch.zeros(2)
    write_verified_safetensors(tmp_path / MODEL_FILE, tensors, body)
    with pytest.raises(CheckpointError) as caught:
        load_model(tmp_path)
    message = str(caught.value)
    assert "layers.1.means is missing" in message
    assert "layers.1.extra is not part of the spec" in message


def test_png_encoder_writes_a_valid_header():
    png = encode_png(np.zeros((3, 5), np.uint8))
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", png[16:24]) == (5, 3)


def test_cli_train_eval_info_resume(tmp_path, capsys):
    run = tmp_path / "run"
    args = [
        "train",
        "--model",
        "F(7,7)-G(4)-F(4,1)-G(4)",
        "--data",
        "mnist",
        "--classes",
        "1,2",
        "--limit-per-class",
        "100",
        "--steps",
        "30",
        "--checkpoint-every",
        "20",
        "--annealing-window",
        "10",
        "--out",
        str(run),
    ]
    assert main(args) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["train"]["steps"] == 30
    assert config["data"]["classes"] == "1,2"
    assert main(["eval", str(run), "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [layer["index"] for layer in result["layers"]] == [2, 4]
    assert set(result["layers"][0]) == {"index", "spec", "annealed", "max_component", "loglik"}
    assert result["n_samples"] == 400
    assert result["classifier_accuracy"] is None
    assert main(["info", str(run)]) == 0
    assert "step 30 of 30" in capsys.readouterr().out
    assert main(["train", "--resume", str(run)]) == 0  # already finished: a no-op


def test_cli_user_errors_are_one_line(tmp_path, capsys):
    assert (
        main(
            [
                "train",
                "--model",
                "F(3,1)-Q(2)",
                "--data",
                "mnist",
                "--steps",
                "1",
                "--out",
                str(tmp_path / "r"),
            ]
        )
        == 2
    )
    assert "unknown layer type 'Q'" in capsys.readouterr().err
    assert main(["train", "--model", "A", "--data", "mnist", "--out", str(tmp_path / "r")]) == 2
    assert "give --epochs E or --steps S" in capsys.readouterr().err
    assert main(["eval", str(tmp_path / "nothing")]) == 2
    assert "is not a run directory" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "--no-such-flag"])


def test_cli_info_of_a_preset(capsys):
    assert main(["info", "C"]) == 0
    assert "-P(2,2,ceil)-> (11,11,49)" in capsys.readouterr().out
