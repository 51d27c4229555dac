"""Folders of PNG/JPEG images, .npy arrays and torch datasets as data sources."""

import json

import numpy as np
import pytest
import torch

from dcgmm import load_dataset
from dcgmm.cli.main import main
from dcgmm.exceptions import DataError
from dcgmm.io.data import from_torch_dataset
from dcgmm.io.images import encode_png


@pytest.fixture(scope="module")
def digits():
    """60 real MNIST digits of classes 0, 1, 2 (the built-in subset), as uint8 (N, 28, 28)."""
    data = load_dataset("mnist", classes=[0, 1, 2], limit_per_class=20)
    pixels = (data.images[..., 0].numpy() * 255).round().astype(np.uint8)
    return pixels, data.labels.numpy()


def write_pngs(folder, pixels, labels=None):
    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(pixels):
        where = folder if labels is None else folder / str(labels[i])
        where.mkdir(exist_ok=True)
        (where / f"{i:04d}.png").write_bytes(encode_png(image))


def test_a_folder_with_class_subfolders_loads_the_digits_and_their_labels(tmp_path, digits):
    pixels, labels = digits
    write_pngs(tmp_path / "digits", pixels, labels)
    data = load_dataset(tmp_path / "digits")
    order = np.argsort(labels, kind="stable")  # subfolder by subfolder, files sorted
    np.testing.assert_array_equal(data.labels.numpy(), labels[order])
    np.testing.assert_array_equal((data.images[..., 0].numpy() * 255).round(), pixels[order])
    assert data.image_shape == (28, 28, 1)
    assert load_dataset(tmp_path / "digits", classes=[1]).labels.tolist() == [1] * 20


def test_a_flat_folder_is_unlabelled_and_a_test_split_needs_its_own_folder(tmp_path, digits):
    write_pngs(tmp_path / "flat", digits[0][:10])
    data = load_dataset(tmp_path / "flat")
    assert data.labels.tolist() == [0] * 10
    with pytest.raises(DataError, match="no test split"):
        load_dataset(tmp_path / "flat", split="test")
    write_pngs(tmp_path / "split" / "train", digits[0][:8], digits[1][:8])
    write_pngs(tmp_path / "split" / "test", digits[0][8:12], digits[1][8:12])
    assert len(load_dataset(tmp_path / "split", split="test")) == 4


def test_rgb_jpeg_images_load_with_three_channels(tmp_path):
    from PIL import Image

    (tmp_path / "rgb").mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (8, 6, 3), dtype=np.uint8)).save(
            tmp_path / "rgb" / f"{i}.jpg"
        )
    assert load_dataset(tmp_path / "rgb").image_shape == (8, 6, 3)


def test_a_npy_array_loads_memory_mapped(tmp_path, digits):
    np.save(tmp_path / "x.npy", digits[0])
    data = load_dataset(tmp_path / "x.npy")
    np.testing.assert_array_equal((data.images[..., 0].numpy() * 255).round(), digits[0])


@pytest.mark.parametrize(
    ("make", "message"),
    [
        ("empty", "holds neither the four IDX files .* nor PNG or JPEG images"),
        ("sizes", r"images of different sizes: 28x28 \(2\), 14x14 \(1\)"),
        ("channels", "grey and RGB images mixed"),
        ("broken", "is not a readable image"),
    ],
)
def test_bad_folders_are_refused_with_what_was_found(tmp_path, digits, make, message):
    from PIL import Image

    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "cls").mkdir()
    if make != "empty":
        write_pngs(folder / "flat", digits[0][:2])
        folder = folder / "flat"
    if make == "sizes":
        (folder / "small.png").write_bytes(encode_png(digits[0][0][::2, ::2].copy()))
    elif make == "channels":
        Image.fromarray(np.zeros((28, 28, 3), dtype=np.uint8)).save(folder / "rgb.png")
    elif make == "broken":
        (folder / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=message):
        load_dataset(folder)


def test_dcgmm_train_reads_a_folder_of_pngs(tmp_path, digits, capsys):
    write_pngs(tmp_path / "digits", *digits)
    args = ["train", "--model", "F(28,1)-G(4)", "--data", str(tmp_path / "digits"), "--steps", "3"]
    assert main([*args, "--batch-size", "20", "--out", str(tmp_path / "run")]) == 0
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["data"]["n_samples"] == 60


def test_a_torch_dataset_becomes_a_dataset(digits):
    pixels, labels = digits

    class Digits(torch.utils.data.Dataset):
        def __len__(self):
            return len(pixels)

        def __getitem__(self, i):  # as torchvision's ToTensor: float CHW in [0, 1]
            return torch.from_numpy(pixels[i]).float().div(255).unsqueeze(0), int(labels[i])

    data = from_torch_dataset(Digits(), limit=10)
    assert data.image_shape == (28, 28, 1)
    np.testing.assert_array_equal(data.labels.numpy(), labels[:10])
    np.testing.assert_allclose(data.images[..., 0].numpy(), pixels[:10] / 255, atol=1e-6)


def test_resize_averages_when_shrinking_and_keeps_the_dtype():
    # A 2x2 checkerboard of 0/255 blocks shrunk to 1x1 is their mean (antialiased), not a
    # sampled corner; uint8 stays uint8, float stays float.
    from dcgmm.io.image_files import resize_images

    blocks = np.kron(np.array([[0, 255], [255, 0]], dtype=np.uint8), np.ones((4, 4), np.uint8))
    small = resize_images(blocks[None], (1, 1))
    assert small.dtype == np.uint8
    assert small.shape == (1, 1, 1)
    assert abs(int(small[0, 0, 0]) - 128) <= 1
    rgb = np.random.default_rng(0).random((3, 10, 12, 3)).astype(np.float32)
    out = resize_images(rgb, (5, 6))
    assert out.shape == (3, 5, 6, 3)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out.mean(), rgb.mean(), atol=0.02)
    assert resize_images(rgb, (10, 12)) is rgb  # the size it has: untouched


def test_resize_brings_a_mixed_folder_to_one_size_and_the_run_remembers_it(
    tmp_path, digits, capsys
):
    folder = tmp_path / "mixed"
    write_pngs(folder, digits[0][:6], digits[1][:6])
    (folder / str(digits[1][0]) / "big.png").write_bytes(
        encode_png(np.kron(digits[0][0], np.ones((2, 2), np.uint8)))  # 56x56
    )
    with pytest.raises(DataError, match="pass --resize H,W"):
        load_dataset(folder)
    data = load_dataset(folder, resize=(14, 14))
    assert data.image_shape == (14, 14, 1)
    assert len(data) == 7
    with pytest.raises(ValueError, match="two positive whole numbers"):
        load_dataset(folder, resize=(14, 0))
    np.save(tmp_path / "x.npy", digits[0])  # the other sources resize too
    assert load_dataset(tmp_path / "x.npy", resize=(7, 7)).image_shape == (7, 7, 1)
    run = tmp_path / "run"
    argv = ["train", "--model", "F(14,1)-G(4)", "--data", str(folder), "--steps", "2",
            "--batch-size", "7", "--out", str(run)]  # fmt: skip
    assert main(argv) == 2  # mixed sizes without --resize: refused, nothing written
    assert "--resize" in capsys.readouterr().err
    assert main([*argv, "--resize", "14,14"]) == 0
    assert json.loads((run / "config.json").read_text())["data"]["resize"] == [14, 14]
    assert main(["eval", str(run), "--split", "train"]) == 0  # at the recorded size
    assert "(train, 7 samples)" in capsys.readouterr().out
    with pytest.raises(SystemExit):  # argparse's own exit for a value it cannot parse
        main([*argv[:-1], str(tmp_path / "r2"), "--resize", "14x14"])
    assert "expected the height and width as H,W" in capsys.readouterr().err
