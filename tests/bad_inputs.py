"""Bad inputs at the public boundaries and what each one meets: the rows of docs/errors.md.

Each :class:`Case` provokes one error; ``tests/test_bad_input.py`` runs every case and checks
the exception type (or the CLI's exit status), fragments of the message, any postcondition,
and that docs/errors.md quotes the message verbatim. Regenerate the doc after changing a
message, from the repository root:

    PYTHONPATH=src python -m tests.bad_inputs

Cases run with the current directory set to an empty folder and use relative paths, so the
messages do not depend on where they ran.
"""

import contextlib
import errno
import html
import io
import json
import logging
import os
import shlex
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import numpy as np
import torch

import dcgmm.io.run_files
from dcgmm import DCGMM, TrainConfig, Trainer, evaluate, load_dataset, load_model, sample
from dcgmm.cli.main import main
from dcgmm.exceptions import AnnealingWarning, CheckpointError, DataError, SpecError
from dcgmm.io.run_files import CONFIG_FILE, MODEL_FILE, write_config
from dcgmm.training.checkpoint import save_checkpoint

DOC = Path(__file__).resolve().parents[1] / "docs" / "errors.md"
TEST_FILE = "tests/test_bad_input.py"

Trigger = Callable[[Path], object]  # provokes the error; CLI cases return the argv instead


@dataclass(frozen=True)
class Case:
    """One bad input: how to provoke it, where it is caught, what the message must say."""

    id: str
    number: int  # the case number of issue 7's list
    bad_input: str
    where: str
    trigger: Trigger
    expected: type[BaseException] | int  # an exception type, or the CLI's exit status
    fragments: tuple[str, ...]
    check: Callable[[Path], None] | None = None  # a postcondition on the folder

    @property
    def is_cli(self) -> bool:
        return isinstance(self.expected, int)


def images(shape: Sequence[int]) -> torch.Tensor:
    """Return deterministic pixels in [0, 1] of ``shape``."""
    n = int(np.prod(shape))
    return torch.linspace(0.0, 1.0, n).reshape(*shape)


def small_model(channels: int = 1) -> DCGMM:
    return DCGMM.from_spec(
        "F(4,2)-G(4)", (8, 8, channels), generator=torch.Generator().manual_seed(0)
    )


def make_run(root: Path, name: str = "run") -> Path:
    """Write a run directory of ``F(4,2)-G(4)`` on 8x8x1 images, as `dcgmm train` would."""
    run = root / name
    model = small_model()
    write_config(
        run,
        {
            "spec": model.spec,
            "input_shape": [8, 8, 1],
            "objective": "annealed",
            "train": TrainConfig(steps=10, batch_size=10).to_dict(),
            "data": {"source": "mnist", "classes": None, "limit_per_class": None, "limit": None},
        },
    )
    save_checkpoint(run, model, {"step": 10, "n_steps": 10})
    return run


def write_npz(path: Path, x_train: np.ndarray, y_train: np.ndarray) -> Path:
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_train, y_test=y_train)
    return path


# ---------------------------------------------------------------- triggers


def nchw(root: Path) -> object:
    return small_model(channels=3).scores(images((2, 8, 8, 3)).permute(0, 3, 1, 2))


def nchw_npz(root: Path) -> object:
    x = np.zeros((4, 3, 8, 8), np.uint8)
    return load_dataset(write_npz(root / "cifar.npz", x, np.arange(4)))


def wrong_size(root: Path) -> object:
    return small_model().scores(images((2, 28, 28, 1)))


def single_image(root: Path) -> object:
    return small_model()(images((8, 8, 1)))


def wrong_size_cli(root: Path) -> object:
    make_run(root)
    return ["eval", "run", "--limit", "10"]  # the run's data: the built-in 28x28 MNIST


def nan_pixels(root: Path) -> object:
    x = images((2, 8, 8, 1))
    x[1, 3, 4, 0] = float("nan")
    return small_model().scores(x)


def inf_pixels_trainer(root: Path) -> object:
    x = images((20, 8, 8, 1))
    x[5, 0, 0, 0] = float("inf")
    return Trainer(small_model(), TrainConfig(steps=1, batch_size=10), x)


def nan_pixels_npz(root: Path) -> object:
    x = np.full((4, 8, 8), 0.5, np.float32)
    x[2, 1, 1] = np.nan
    return load_dataset(write_npz(root / "d.npz", x, np.arange(4)))


def uint8_pixels(root: Path) -> object:
    return small_model().scores((images((2, 8, 8, 1)) * 255).to(torch.uint8))


def float_255_pixels(root: Path) -> object:
    x = (images((20, 8, 8, 1)) * 255).round()
    return Trainer(small_model(), TrainConfig(steps=1, batch_size=10), x)


def out_of_range(root: Path) -> object:
    x = images((2, 8, 8, 1))
    return small_model().scores((x - 0.5) / 0.25)  # a mean/std normalisation


def out_of_range_npz(root: Path) -> object:
    x = np.linspace(0, 2, 4 * 8 * 8, dtype=np.float32).reshape(4, 8, 8)
    return load_dataset(write_npz(root / "d.npz", x, np.arange(4)))


def too_small_cli(root: Path) -> object:
    return shlex.split("train --model F(28,1)-G(4) --data mnist --limit 5 --steps 1 --out run")


def nothing_was_written(root: Path) -> None:
    assert not (root / "run" / CONFIG_FILE).exists(), "config.json written for a refused run"


def empty_npz(root: Path) -> object:
    x = np.zeros((0, 8, 8), np.uint8)
    return load_dataset(write_npz(root / "empty.npz", x, np.zeros(0, np.int64)))


def zero_per_class(root: Path) -> object:
    return load_dataset("mnist", limit_per_class=0)


def empty_evaluate(root: Path) -> object:
    return evaluate(small_model(), images((0, 8, 8, 1)))


def unknown_class_cli(root: Path) -> object:
    return shlex.split("train --model A --data mnist --classes 12 --steps 1 --out run")


def bad_class_list_cli(root: Path) -> object:
    return ["eval", str(make_run(root)), "--classes", "1..3"]


def reversed_class_range_cli(root: Path) -> object:
    return ["eval", str(make_run(root)), "--classes", "9-1"]


def outliers_class_range_cli(root: Path) -> object:
    make_run(root)
    return shlex.split("outliers run --inliers mnist:9-1 --outliers mnist:0 --out o")


def class_out_of_range_sample(root: Path) -> object:
    model = DCGMM.from_spec("F(8,1)-G(4)-C(10)", (8, 8, 1))
    return sample(model, 2, classes=[3, 12])


SPEC_TYPO = "F(3,1)-G(25)-F(4,2)-X(25)"


def spec_typo(root: Path) -> object:
    return DCGMM.from_spec(SPEC_TYPO, (28, 28, 1))


def spec_caret_under_x(root: Path) -> None:
    """The caret sits under the X of the typo."""
    try:
        spec_typo(root)
    except SpecError as err:
        spec_line, caret_line = str(err).splitlines()[-2:]
        assert spec_line == f"  {SPEC_TYPO}"
        assert caret_line.index("^") == spec_line.index("X")
    else:
        raise AssertionError("no SpecError")


def spec_typo_cli(root: Path) -> object:
    return ["info", "F(3,1)-G(2S)"]


def patch_does_not_fit(root: Path) -> object:
    return DCGMM.from_spec("F(5,1)-G(4)", (4, 4, 1))


def patch_does_not_fit_cli(root: Path) -> object:
    return shlex.split("train --model F(29,1)-G(4) --data mnist --steps 1 --out run")


def k_not_square(root: Path) -> object:
    return DCGMM.from_spec("F(28,1)-G(20)", (28, 28, 1))


def k_not_square_sklearn(root: Path) -> object:
    from dcgmm.interfaces.sklearn_api import SGDGaussianMixture

    x = np.linspace(0, 1, 100).reshape(50, 2)
    return SGDGaussianMixture(n_components=5, solver="sgd").fit(x)


def truncated_checkpoint(root: Path) -> object:
    run = make_run(root)
    raw = (run / MODEL_FILE).read_bytes()
    (run / MODEL_FILE).write_bytes(raw[: len(raw) // 2])
    return load_model(run)


def flipped_tensor_byte(root: Path) -> object:
    run = make_run(root)
    raw = bytearray((run / MODEL_FILE).read_bytes())
    raw[-3] ^= 0xFF  # inside the tensor data
    (run / MODEL_FILE).write_bytes(bytes(raw))
    return load_model(run)


def edited_metadata(root: Path) -> object:
    run = make_run(root)
    raw = (run / MODEL_FILE).read_bytes()
    edited = raw.replace(b'\\"step\\": 10', b'\\"step\\": 99')  # same length: still parses
    assert edited != raw
    (run / MODEL_FILE).write_bytes(edited)
    return dcgmm.training.checkpoint.load_trainer_state(run)


def truncated_config(root: Path) -> object:
    run = make_run(root)
    text = (run / CONFIG_FILE).read_text()
    # Cut inside the first lines (the format version and spec), so that the quoted parser
    # message does not change whenever the config grows a field.
    (run / CONFIG_FILE).write_text(text[:40])
    return load_model(run)


def truncated_checkpoint_cli(root: Path) -> object:
    run = make_run(root)
    raw = (run / MODEL_FILE).read_bytes()
    (run / MODEL_FILE).write_bytes(raw[:100])
    return ["eval", "run"]


def newer_checkpoint(root: Path) -> object:
    run = make_run(root)
    model = small_model()
    tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
    metadata = {"format_version": "2", "spec": model.spec, "input_shape": "[8, 8, 1]"}
    dcgmm.training.checkpoint.write_verified_safetensors(run / MODEL_FILE, tensors, metadata)
    return load_model(run)


def newer_config(root: Path) -> object:
    run = make_run(root)
    config = json.loads((run / CONFIG_FILE).read_text())
    (run / CONFIG_FILE).write_text(json.dumps({**config, "format_version": 2}))
    return load_model(run)


def resume_other_spec(root: Path) -> object:
    run = make_run(root)
    other = DCGMM.from_spec("F(4,2)-G(9)", (8, 8, 1))
    config = TrainConfig(steps=10, batch_size=10)
    return Trainer(other, config, images((20, 8, 8, 1)), run_dir=run).resume()


def mixed_runs(root: Path) -> object:
    run = make_run(root)
    config = json.loads((run / CONFIG_FILE).read_text())
    (run / CONFIG_FILE).write_text(json.dumps({**config, "spec": "F(4,2)-G(9)"}))
    return load_model(run)


def unknown_flag_cli(root: Path) -> object:
    return ["train", "--model", "A", "--epocs", "3"]


def unknown_command_cli(root: Path) -> object:
    return ["trian", "--model", "A"]


@contextlib.contextmanager
def failing(target: str, err: OSError) -> Iterator[None]:
    """Make the function at ``target`` raise ``err``."""

    def fail(*args: object, **kwargs: object) -> None:
        raise err

    with mock.patch(target, fail):
        yield


def read_only_out_cli(root: Path) -> object:
    denied = PermissionError(errno.EACCES, "Permission denied")
    return (["train", "--model", "A", "--data", "mnist", "--steps", "1", "--out", "run"],
            failing("dcgmm.cli.common.tempfile.mkstemp", denied))  # fmt: skip


def file_in_the_way_cli(root: Path) -> object:
    (root / "taken").write_text("a file, not a folder\n")
    return ["train", "--model", "A", "--data", "mnist", "--steps", "1", "--out", "taken"]


def disk_full_cli(root: Path) -> object:
    """Let the checkpoints of steps 0 and 1 through, then fill the disk half-way into step 2's."""
    real = dcgmm.io.run_files.write_synced
    saved: list[Path] = []

    def write(path: Path, data: bytes) -> None:
        if path.name.startswith(f".{MODEL_FILE}."):
            if len(saved) == 2:
                path.write_bytes(data[: len(data) // 2])  # what fits before the disk is full
                raise OSError(errno.ENOSPC, "No space left on device")
            saved.append(path)
        real(path, data)

    argv = "train --model F(28,1)-G(4) --data mnist --limit 200 --batch-size 100 --steps 2"
    argv += " --checkpoint-every 1 --out run"
    return argv.split(), mock.patch("dcgmm.io.run_files.write_synced", write)


def previous_checkpoint_kept(root: Path) -> None:
    run = root / "run"
    leftovers = [p.name for p in run.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == [], f"half-written files left behind: {leftovers}"
    state = dcgmm.training.checkpoint.load_trainer_state(run)
    assert state["step"] == 1, state["step"]  # the first checkpoint, intact
    load_model(run)  # verifies its checksums


def _png_folder(root: Path) -> Path:
    from dcgmm.io.images import encode_png

    folder = root / "pngs"
    folder.mkdir()
    for i in range(2):
        (folder / f"{i}.png").write_bytes(encode_png(np.full((8, 8), 40 * i, np.uint8)))
    return folder


def folder_of_two_sizes(root: Path) -> object:
    from dcgmm.io.images import encode_png

    folder = _png_folder(root)
    (folder / "small.png").write_bytes(encode_png(np.zeros((4, 4), np.uint8)))
    return load_dataset(folder)


def folder_grey_and_rgb(root: Path) -> object:
    from dcgmm.io.images import encode_png

    folder = _png_folder(root)
    (folder / "rgb.png").write_bytes(encode_png(np.zeros((8, 8, 3), np.uint8)))
    return load_dataset(folder)


def folder_with_a_broken_png(root: Path) -> object:
    folder = _png_folder(root)
    (folder / "broken.png").write_bytes(b"not a png")
    return load_dataset(folder)


def bad_resize(root: Path) -> object:
    return load_dataset(_png_folder(root), resize=(8, 0))


def bad_resize_cli(root: Path) -> object:
    _png_folder(root)
    return ["train", "--model", "F(8,1)-G(4)", "--data", "pngs", "--resize", "8x8", "--steps",
            "1", "--out", "run"]  # fmt: skip


def em_with_a_learning_rate(root: Path) -> object:
    return TrainConfig(steps=10, solver="em", lr_start=0.05)


def empty_folder_cli(root: Path) -> object:
    (root / "nothing").mkdir()
    return ["train", "--model", "A", "--data", "nothing", "--steps", "1", "--out", "run"]


CASES: tuple[Case, ...] = (
    Case("nchw", 1, "NCHW images `(N, C, H, W)` given to a model of NHWC `(N, H, W, C)`",
         "`DCGMM.scores` (every image entry point: `DCGMM.check_input`)", nchw, ValueError,
         ("NHWC with shape (N, 8, 8, 3)", "got (2, 3, 8, 8)", "looks like NCHW",
          "x.permute(0, 2, 3, 1)")),
    Case("nchw-npz", 1, "an `.npz` file with NCHW images", "`load_dataset` (`check_arrays`)",
         nchw_npz, DataError, ("(4, 3, 8, 8) look like NCHW", "np.transpose(x, (0, 2, 3, 1))")),
    Case("wrong-size", 2, "28x28 images given to a model built for 8x8",
         "`DCGMM.scores` (`DCGMM.check_input`)", wrong_size, ValueError,
         ("shape (N, 8, 8, 1)", "got (2, 28, 28, 1)", "input_shape=(28, 28, 1)")),
    Case("single-image", 2, "one image `(H, W, C)` without the batch axis", "`DCGMM.forward`",
         single_image, ValueError, ("got (8, 8, 1)", "x.unsqueeze(0)")),
    Case("wrong-size-cli", 2, "`dcgmm eval` of a model for 8x8 images on 28x28 data",
         "`evaluate` (`DCGMM.check_input`), reported by `cli.main`", wrong_size_cli, 2,
         ("dcgmm eval: error: images must be NHWC", "got (10, 28, 28, 1)")),
    Case("nan", 3, "a NaN pixel", "`DCGMM.scores` (`check_pixels`)", nan_pixels, ValueError,
         ("1 NaN and 0 infinite", "expected finite pixels in [0, 1]", "dcgmm.inpaint")),
    Case("inf-trainer", 3, "an infinite pixel in the training images",
         "`Trainer(...)` (`DCGMM.check_input`)", inf_pixels_trainer, ValueError,
         ("found 0 NaN and 1 infinite values in images",)),
    Case("nan-npz", 3, "a NaN pixel in a float `.npz` file", "`load_dataset` (`to_nhwc_float`)",
         nan_pixels_npz, DataError, ("NaN or Inf", "expected finite pixels")),
    Case("uint8", 4, "a uint8 tensor of 0-255 pixels", "`DCGMM.scores` (`check_nhwc`)",
         uint8_pixels, TypeError, ("floating tensor with pixels in [0, 1]", "torch.uint8",
                                   "x.float() / 255")),
    Case("float-255", 4, "float pixels 0-255 (uint8 values converted without scaling)",
         "`Trainer(...)` (`check_pixels`)", float_255_pixels, ValueError,
         ("pixels in [0, 1]", "got values in [0, 255]", "divide by 255")),
    Case("out-of-range", 5, "pixels normalised with a mean and std (values outside [0, 1])",
         "`DCGMM.scores` (`check_pixels`)", out_of_range, ValueError,
         ("pixels in [0, 1]", "got values in [-2, 2]", "undo a mean/std normalisation",
          "x.clamp(0, 1)")),
    Case("out-of-range-npz", 5, "float pixels in [0, 2] in an `.npz` file",
         "`load_dataset` (`to_nhwc_float`)", out_of_range_npz, DataError,
         ("must lie in [0, 1]", "got [0.0, 2.0]", "rescale to [0, 1]")),
    Case("too-small-cli", 6, "`dcgmm train --limit 5` with the default batch of 100",
         "`Trainer(...)` (`TrainConfig.steps_per_epoch`), before `config.json` is written",
         too_small_cli, 2, ("dcgmm train: error: the dataset has 5 samples, fewer than one "
                            "batch of 100", "lower --batch-size"), nothing_was_written),
    Case("empty-npz", 6, "an `.npz` file with zero images", "`load_dataset`", empty_npz,
         DataError, ("holds no train images", "expected at least one")),
    Case("zero-per-class", 6, "`load_dataset(..., limit_per_class=0)`",
         "`load_dataset` (`select`)", zero_per_class, DataError,
         ("limit_per_class must be a positive number", "got 0")),
    Case("empty-evaluate", 6, "`evaluate` on zero images", "`evaluate`", empty_evaluate,
         ValueError, ("images is empty", "at least one image")),
    Case("unknown-class-cli", 7, "`dcgmm train --classes 12` on MNIST",
         "`load_dataset` (`select`), reported by `cli.main`", unknown_class_cli, 2,
         ("dcgmm train: error:", "classes [12] do not occur",
          "present: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]")),
    Case("bad-class-list-cli", 7, "`--classes 1..3`", "`parse_classes`", bad_class_list_cli, 2,
         ("dcgmm eval: error: classes must look like '1,2,3' or '1-9'", "got '1..3'")),
    Case("reversed-range-cli", 7, "`--classes 9-1`", "`parse_classes`",
         reversed_class_range_cli, 2, ("class range '9-1' is empty", "e.g. 1-9")),
    Case("outliers-class-range-cli", 7, "`dcgmm outliers --inliers mnist:9-1`",
         "`split_data_arg` (`parse_classes`)", outliers_class_range_cli, 2,
         ("dcgmm outliers: error: class range '9-1' is empty",)),
    Case("class-out-of-range", 7, "`sample(model, 2, classes=[3, 12])` with a 10-class head",
         "`sample` (`class_control`)", class_out_of_range_sample, ValueError,
         ("classes must lie in [0, 9]", "has 10 classes", "got [12]")),
    Case("spec-typo", 8, f"a spec with a typo: `{SPEC_TYPO}`",
         "`DCGMM.from_spec` (`parse_spec`)", spec_typo, SpecError,
         ("unknown layer type 'X'", "expected F (folding), P (pooling), G (GMM) or C",
          f"  {SPEC_TYPO}\n                      ^"), spec_caret_under_x),
    Case("spec-typo-cli", 8, '`dcgmm info "F(3,1)-G(2S)"`', "`parse_spec`, reported by "
         "`cli.main`", spec_typo_cli, 2, ("dcgmm info: error: G takes positive integers",
                                          "got '2S'", "  F(3,1)-G(2S)\n         ^")),
    Case("patch", 9, "`F(5,1)` on a 4x4 input", "`DCGMM.from_spec` (`Folding.output_shape`)",
         patch_does_not_fit, SpecError,
         ("layer 1 F(5,1): patch 5x5 does not fit a 4x4 input", "from the 4x4x1 input")),
    Case("patch-cli", 9, "`dcgmm train --model F(29,1)-G(4)` on 28x28 MNIST",
         "`DCGMM.from_spec`, reported by `cli.main`", patch_does_not_fit_cli, 2,
         ("dcgmm train: error: layer 1 F(29,1): patch 29x29 does not fit a 28x28 input",)),
    Case("k-square", 10, "`G(20)` with the annealed loss (K not a square)",
         "`DCGMM.from_spec` (`GMM` / `torus_grid_side`)", k_not_square, SpecError,
         ("layer 2 G(20)", "K must be a perfect square", "Use K=16 or K=25",
          "objective 'max_component' or 'loglik'")),
    Case("k-square-sklearn", 10, "`SGDGaussianMixture(5, solver='sgd').fit(X)` (annealed)",
         "`SGDGaussianMixture.fit` (`_validate_params`)", k_not_square_sklearn, ValueError,
         ("K must be a perfect square; got K=5", "Use K=4 or K=9")),
    Case("truncated", 11, "a `model.safetensors` cut in half", "`load_model` "
         "(`read_verified_safetensors`)", truncated_checkpoint, CheckpointError,
         ("model.safetensors is truncated or corrupted", "Use an earlier copy or retrain")),
    Case("bit-flip", 11, "a flipped byte in the checkpoint's tensors",
         "`load_model` (sha256 of the tensors)", flipped_tensor_byte, CheckpointError,
         ("fails its checksum: the file is corrupted",)),
    Case("edited-metadata", 11, "a checkpoint whose stored training step was changed",
         "`load_trainer_state` (sha256 of the metadata)", edited_metadata, CheckpointError,
         ("fails its checksum",)),
    Case("truncated-config", 11, "a truncated `config.json`", "`load_model` (`read_config`)",
         truncated_config, CheckpointError, ("config.json is not valid JSON",
                                             "truncated or corrupted")),
    Case("truncated-cli", 11, "`dcgmm eval` of a run whose checkpoint is cut short",
         "`load_model`, reported by `cli.main`", truncated_checkpoint_cli, 2,
         ("dcgmm eval: error: run/model.safetensors is truncated or corrupted",)),
    Case("version-checkpoint", 12, "a `model.safetensors` of format version 2",
         "`load_model` (`read_checkpoint`)", newer_checkpoint, CheckpointError,
         ("has format version '2'; this dcgmm reads version 1", "another dcgmm release")),
    Case("version-config", 12, "a `config.json` of format version 2", "`load_model` "
         "(`read_config`)", newer_config, CheckpointError,
         ("config.json has format version 2; this dcgmm reads version 1",)),
    Case("resume-other-spec", 13, "`Trainer(model_of_another_spec, ..., run_dir=run)`",
         "`Trainer(...)` (`check_fits`)", resume_other_spec,
         CheckpointError, ("holds a model of spec 'F(4,2)-G(4)'",
                           "this model is 'F(4,2)-G(9)'", "dcgmm.load_model(run_dir)")),
    Case("mixed-runs", 13, "a run directory whose `config.json` names another spec",
         "`load_model`", mixed_runs, CheckpointError,
         ("checkpoint spec 'F(4,2)-G(4)'", "config.json's 'F(4,2)-G(9)'", "different runs")),
    Case("unknown-flag", 14, "`dcgmm train --epocs 3` (a misspelt flag)",
         "`Parser.reject_unknown` in `cli.main` (exit status 2)", unknown_flag_cli, 2,
         ("dcgmm train: error: unrecognized arguments: --epocs 3;",
          "did you mean --epochs for --epocs?",
          "see `dcgmm train --help`")),
    Case("unknown-command", 14, "`dcgmm trian`", "argparse, via `Parser.error`",
         unknown_command_cli, 2, ("dcgmm: error: argument command: invalid choice: 'trian'",
                                  "see `dcgmm --help`")),
    Case("read-only-out", 15, "`dcgmm train --out DIR` where DIR is read-only (simulated: "
         "creating a file raises EACCES)", "`check_writable`, before any data is read",
         read_only_out_cli, 2, ("dcgmm train: error: cannot write run (Permission denied)",
                                "read-only", "Choose a writable output folder (--out)")),
    Case("file-in-the-way", 15, "`dcgmm train --out FILE` where FILE is a file",
         "`check_writable`", file_in_the_way_cli, 2,
         ("cannot write taken (File exists)", "Choose another output folder (--out)")),
    Case("disk-full", 15, "the disk fills up while a checkpoint is written (simulated: "
         "ENOSPC half-way through the second checkpoint)", "`atomic_write_bytes`",
         disk_full_cli, 2, ("dcgmm train: error: cannot write run/model.safetensors",
                            "the disk is full", "the previous file is kept"),
         previous_checkpoint_kept),
    Case("folder-sizes", 16, "a folder of PNG images of two sizes",
         "`load_dataset` (`image_files._stack`)", folder_of_two_sizes, DataError,
         ("images of different sizes: 8x8 (2), 4x4 (1)", "never resizes silently")),
    Case("folder-channels", 16, "a folder of grey and RGB PNG images",
         "`load_dataset` (`image_files._stack`)", folder_grey_and_rgb, DataError,
         ("grey and RGB images mixed (2 grey", "Convert them all")),
    Case("folder-unreadable", 16, "a folder with a `.png` file that is not an image",
         "`load_dataset` (`image_files._read_image`)", folder_with_a_broken_png, DataError,
         ("broken.png is not a readable image", "fix or remove it")),
    Case("folder-empty", 16, "`--data` naming a folder with neither IDX files nor images",
         "`dcgmm train` (`read_arrays`)", empty_folder_cli, 2,
         ("holds neither the four IDX files", "nor PNG or JPEG images")),
    Case("resize-bad", 16, "`load_dataset(folder, resize=(8, 0))`",
         "`load_dataset` (`image_files.check_size`)", bad_resize, ValueError,
         ("resize must be two positive whole numbers (H, W); got (8, 0)",)),
    Case("resize-bad-cli", 16, "`dcgmm train --resize 8x8`", "argparse (`parse_size`)",
         bad_resize_cli, 2, ("argument --resize: expected the height and width as H,W",)),
    Case("em-learning-rate", 17, "`TrainConfig(solver='em', lr_start=0.05)`",
         "`TrainConfig.__post_init__`", em_with_a_learning_rate, ValueError,
         ("solver 'em' has no learning rates, so lr_start would do nothing",)),
)  # fmt: skip


# ---------------------------------------------------------------- running a case


def run_case(case: Case, root: Path) -> tuple[str, str]:
    """Run ``case`` in the folder ``root`` (made the current directory).

    Returns ``(outcome, message)``: the exception's type name and message, or for a CLI case
    ``"exit N"`` and what it printed on stderr.
    """
    previous = Path.cwd()
    os.chdir(root)
    try:
        return _run(case, Path("."))
    finally:
        os.chdir(previous)


def _run(case: Case, root: Path) -> tuple[str, str]:
    if not case.is_cli:
        try:
            case.trigger(root)
        except Exception as err:
            return type(err).__name__, str(err)
        raise AssertionError(f"{case.id}: no error")
    argv = case.trigger(root)
    patch: contextlib.AbstractContextManager[object] = contextlib.nullcontext()
    if isinstance(argv, tuple):
        argv, patch = argv
    assert isinstance(argv, list)
    stderr = io.StringIO()
    with patch, contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
        try:
            status = main(argv)
        except SystemExit as exit_:
            status = exit_.code
    return f"exit {status}", stderr.getvalue().rstrip("\n")


# ---------------------------------------------------------------- docs/errors.md


def cell(text: str) -> str:
    """Return ``text`` as one Markdown table cell that shows it verbatim."""
    escaped = html.escape(text, quote=False).replace("|", "&#124;").replace("`", "&#96;")
    escaped = escaped.replace("  ", "&nbsp;&nbsp;").replace("\n", "<br>")
    return f"<code>{escaped}</code>"


HEADER = """# Errors: what a bad input meets

Every row below was produced by running the bad input (`PYTHONPATH=src python -m
tests.bad_inputs` writes this file; `tests/test_bad_input.py` checks that each message still
reads as quoted here). Messages say what was wrong, what was expected, and give a hint.

Policies:

- **Pixels** are float in [0, 1], NHWC. Tensors given to the Python API are refused, not
  converted: uint8 tensors with a `TypeError` (hint: `x.float() / 255`), NaN, Inf and values
  outside [0, 1] with a `ValueError` (float values that are whole numbers up to 255 get the
  hint to divide by 255). The checks run at the entry points (`DCGMM.forward`, `scores`,
  `predict_proba`, `Trainer`, `evaluate`, `inpaint`, `variants`, the outlier and clustering
  functions) and cost one pass over the images. Files are different: the loaders divide uint8
  pixels by 255 (the standard storage of image files), read bool pixels as 0/1, accept float
  pixels in [0, 1] and refuse every other dtype. `SGDGaussianMixture` takes any numeric
  features (it standardises them) and refuses NaN/Inf through scikit-learn's own check.
- **Exceptions**: `ValueError` for values and shapes, `TypeError` for types, and the
  `ValueError` subclasses `SpecError`, `DataError` and `CheckpointError` of `dcgmm.exceptions`;
  a failed write is an `OutputError` (an `OSError`, with the errno of the cause).
- **Command line**: an error prints one line `dcgmm COMMAND: error: ...` on stderr (a spec
  error adds the spec and a caret under the bad position) and exits with status 2, without a
  traceback; `dcgmm -v ...` logs the traceback too. Unknown flags and commands also exit with
  status 2, with a hint and, for a misspelt flag, the closest known one.

Messages quote relative paths because the cases ran in a scratch folder.

| # | bad input | where it is caught | exception type | the message (verbatim) | test |
|---|---|---|---|---|---|
"""


def write_doc(path: Path = DOC) -> None:
    """Run every case and write the table of docs/errors.md."""
    logging.basicConfig(level=logging.WARNING)  # the CLI's INFO lines are not messages
    # As under pytest (pyproject.toml): the budgets here are tiny on purpose.
    warnings.filterwarnings("ignore", category=AnnealingWarning)
    rows = []
    for case in CASES:
        with tempfile.TemporaryDirectory() as folder:
            outcome, message = run_case(case, Path(folder))
        test = f"`{TEST_FILE}::test_bad_input[{case.id}]`"
        rows.append(
            f"| {case.number} | {case.bad_input} | {case.where} | {outcome} | {cell(message)} "
            f"| {test} |"
        )
    path.write_text(HEADER + "\n".join(rows) + "\n")
    print(f"wrote {path} ({len(rows)} rows)", file=sys.stderr)


if __name__ == "__main__":
    write_doc()
