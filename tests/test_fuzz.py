"""Fuzzing the parsers that read user text and files: only dcgmm's own errors may come out.

The spec parser gets random and near-miss text, the loaders random, truncated and oddly typed
IDX/npz files, the checkpoint reader random, truncated and bit-flipped files. Any exception
other than SpecError / DataError / CheckpointError is a bug in dcgmm.
"""

import contextlib
import gzip
import io
import json
import struct

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from dcgmm import DCGMM, CheckpointError, DataError, SpecError, format_spec, load_dataset
from dcgmm.io.data import parse_classes
from dcgmm.io.idx_files import read_idx
from dcgmm.io.run_files import CONFIG_FILE, MODEL_FILE, write_config
from dcgmm.spec import parse_spec
from dcgmm.training.checkpoint import load_model, load_trainer_state, save_checkpoint

FUZZ = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# ---------------------------------------------------------------- spec strings

SPEC_ALPHABET = "FPGCfpgcX()-,0123456789 indepcl\t"


def check_spec_text(text: str) -> None:
    """Parse ``text``: a SpecError with an in-range caret, or layers that round-trip."""
    try:
        layers = parse_spec(text)
    except SpecError as err:
        message = str(err)
    else:
        assert parse_spec(format_spec(layers)) == layers
        return
    lines = message.splitlines()
    if "\n" not in text and "\r" not in text and len(lines) >= 3:
        caret = lines[-1].index("^") - 2
        assert 0 <= caret <= len(text), (text, message)


@FUZZ
@given(st.text(max_size=40))
@example("G(\u00b2)")  # a superscript two: str.isdigit() says yes, int() says no
def test_spec_parser_on_random_text(text):
    check_spec_text(text)


@FUZZ
@given(st.text(alphabet=SPEC_ALPHABET, max_size=40))
def test_spec_parser_on_spec_like_text(text):
    check_spec_text(text)


number = st.integers(1, 12).map(str)
token = st.one_of(
    st.builds("F({},{})".format, number, number),
    st.builds("F({},{},{},{})".format, number, number, number, number),
    st.builds("P({},{})".format, number, number),
    st.builds("P({},{},ceil)".format, number, number),
    st.builds("G({})".format, st.sampled_from(["1", "4", "9", "16", "25"])),
    st.builds("G({},indep)".format, st.sampled_from(["1", "4", "9"])),
    st.builds("C({})".format, number),
)


@st.composite
def near_miss_specs(draw):
    """A valid-looking spec with one character deleted, inserted or replaced (or none)."""
    spec = "-".join(draw(st.lists(token, min_size=1, max_size=5)))
    pos = draw(st.integers(0, len(spec)))
    char = draw(st.sampled_from(SPEC_ALPHABET + "x;.+"))
    edit = draw(st.sampled_from(["none", "delete", "insert", "replace"]))
    if edit == "delete" and pos < len(spec):
        return spec[:pos] + spec[pos + 1 :]
    if edit == "insert":
        return spec[:pos] + char + spec[pos:]
    if edit == "replace" and pos < len(spec):
        return spec[:pos] + char + spec[pos + 1 :]
    return spec


@FUZZ
@given(near_miss_specs(), st.sampled_from(["annealed", "loglik"]))
def test_near_miss_specs_build_or_raise_spec_error(spec, objective):
    check_spec_text(spec)
    try:
        model = DCGMM.from_spec(spec, (8, 8, 1), objective=objective)
    except SpecError:
        return
    assert model.output_shape == model.layers[-1].out_shape


# ---------------------------------------------------------------- loaders


def idx_bytes(array: np.ndarray, code: int = 0x08) -> bytes:
    header = struct.pack(">BBBB", 0, 0, code, array.ndim) + struct.pack(
        f">{array.ndim}I", *array.shape
    )
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def real_idx_files(n=6):
    rng = np.random.default_rng(0)
    images = idx_bytes(rng.integers(0, 256, (n, 5, 4), dtype=np.uint8))
    labels = idx_bytes((np.arange(n) % 3).astype(np.uint8))
    return images, labels


def check_dataset(ds) -> None:
    """A loaded dataset obeys the loader's contract."""
    assert ds.images.dtype == torch.float32
    assert ds.images.ndim == 4
    assert len(ds) > 0
    assert bool(((ds.images >= 0) & (ds.images <= 1)).all())
    assert ds.labels.dtype == torch.int64
    assert ds.labels.shape == (len(ds),)


def load_or_data_error(source, **kwargs) -> None:
    try:
        ds = load_dataset(source, **kwargs)
    except DataError:
        return
    check_dataset(ds)


@FUZZ
@given(st.binary(max_size=200), st.sampled_from(["plain", "gzip", "named .gz"]))
def test_random_bytes_as_idx(tmp_path, raw, kind):
    path = tmp_path / ("x-idx" if kind == "plain" else "x-idx.gz")
    path.write_bytes(gzip.compress(raw) if kind == "gzip" else raw)
    with contextlib.suppress(DataError):
        read_idx(path)


@FUZZ
@given(
    code=st.sampled_from([0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E]),
    dims=st.lists(st.integers(0, 5), max_size=5),
    body=st.binary(max_size=300),
    labels_ok=st.booleans(),
)
def test_structured_idx_folders_load_or_raise_data_error(tmp_path, code, dims, body, labels_ok):
    header = struct.pack(">BBBB", 0, 0, code, len(dims)) + struct.pack(f">{len(dims)}I", *dims)
    _, labels = real_idx_files()
    (tmp_path / "train-images-idx3-ubyte").write_bytes(header + body)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(labels if labels_ok else header + body)
    load_or_data_error(tmp_path)


@FUZZ
@given(st.data(), st.booleans())
def test_truncated_real_idx_files(tmp_path, data, compressed):
    images, labels = real_idx_files()
    if compressed:
        images = gzip.compress(images)
    cut = data.draw(st.integers(0, len(images)))
    name = "train-images-idx3-ubyte" + (".gz" if compressed else "")
    for old in tmp_path.glob("train-images-idx3-ubyte*"):
        old.unlink()
    (tmp_path / name).write_bytes(images[:cut])
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(labels)
    try:
        ds = load_dataset(tmp_path)
    except DataError:
        assert cut < len(images)
        return
    assert cut == len(images)
    check_dataset(ds)


def npz_bytes(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def good_npz() -> bytes:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (6, 4, 4), dtype=np.uint8)
    return npz_bytes(x_train=x, y_train=np.arange(6) % 3, x_test=x, y_test=np.arange(6) % 3)


@FUZZ
@given(st.binary(max_size=300))
def test_random_bytes_as_npz(tmp_path, raw):
    path = tmp_path / "d.npz"
    path.write_bytes(raw)
    load_or_data_error(path)


@FUZZ
@given(st.data())
def test_truncated_and_corrupted_real_npz(tmp_path, data):
    raw = bytearray(good_npz())
    cut = data.draw(st.integers(0, len(raw)))
    flip = data.draw(st.none() | st.tuples(st.integers(0, len(raw) - 1), st.integers(1, 255)))
    if flip is not None:
        raw[flip[0]] ^= flip[1]
    path = tmp_path / "d.npz"
    path.write_bytes(bytes(raw[:cut]))
    load_or_data_error(path, classes=data.draw(st.none() | st.just([1, 2])))


odd_dtypes = st.sampled_from(
    ["u1", "i1", "i8", "f2", "f4", "f8", "?", "c8", "U2", "S2", "M8[s]", "u2"]
)
odd_arrays = odd_dtypes.flatmap(
    lambda dtype: hnp.arrays(
        np.dtype(dtype), hnp.array_shapes(min_dims=0, max_dims=5, min_side=0, max_side=4)
    )
)


@FUZZ
@given(images=odd_arrays, labels=odd_arrays)
# Found by this test: a float64 pixel beyond float32's range overflowed in the cast (a
# RuntimeWarning) before the range check could refuse it.
@example(images=np.array([[[3.40282357e38]]]), labels=np.array([0], dtype=np.uint8))
def test_npz_with_arrays_of_any_dtype_and_shape(tmp_path, images, labels):
    path = tmp_path / "d.npz"
    path.write_bytes(npz_bytes(x_train=images, y_train=labels, x_test=images, y_test=labels))
    load_or_data_error(path)


@FUZZ
@given(st.text(alphabet="0123456789-, +x", max_size=20) | st.text(max_size=12))
def test_parse_classes(text):
    try:
        classes = parse_classes(text)
    except DataError:
        return
    assert classes is None or all(isinstance(c, int) for c in classes)


# ---------------------------------------------------------------- checkpoints


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory):
    """A real run directory's two files, as bytes, and the model and state they hold."""
    run = tmp_path_factory.mktemp("run")
    model = DCGMM.from_spec("F(4,2)-G(4)", (8, 8, 1), generator=torch.Generator().manual_seed(0))
    state = {"step": 3, "n_steps": 10, "schedules": {"1": {"lr": 0.011}}}
    write_config(run, {"spec": model.spec, "input_shape": [8, 8, 1], "objective": "annealed"})
    save_checkpoint(run, model, state)
    return (run / CONFIG_FILE).read_bytes(), (run / MODEL_FILE).read_bytes(), model, state


def write_run(folder, config: bytes, checkpoint: bytes):
    (folder / CONFIG_FILE).write_bytes(config)
    (folder / MODEL_FILE).write_bytes(checkpoint)
    return folder


def load_or_checkpoint_error(folder, model, state) -> None:
    """Load the run: a CheckpointError, or exactly the model and state that were saved."""
    try:
        loaded = load_model(folder)
        loaded_state = load_trainer_state(folder, model=loaded)
    except CheckpointError:
        return
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    assert loaded_state == state


@FUZZ
@given(st.binary(max_size=300))
def test_random_bytes_as_checkpoint(tmp_path, saved_run, raw):
    config, _, model, state = saved_run
    load_or_checkpoint_error(write_run(tmp_path, config, raw), model, state)


@FUZZ
@given(st.data())
def test_truncated_and_bit_flipped_checkpoints(tmp_path, saved_run, data):
    config, checkpoint, model, state = saved_run
    raw = bytearray(checkpoint)
    cut = data.draw(st.integers(0, len(raw)))
    flips = data.draw(
        st.lists(st.tuples(st.integers(0, len(raw) - 1), st.integers(1, 255)), max_size=2)
    )
    for pos, mask in flips:
        raw[pos] ^= mask
    load_or_checkpoint_error(write_run(tmp_path, config, bytes(raw[:cut])), model, state)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=8,
)


@FUZZ
@given(
    st.fixed_dictionaries(
        {},
        optional={
            "format_version": st.just(1) | json_values,
            "spec": st.just("F(4,2)-G(4)") | st.text(alphabet=SPEC_ALPHABET, max_size=12),
            "input_shape": st.just([8, 8, 1]) | json_values,
            "objective": st.sampled_from(["annealed", "loglik"]) | json_values,
        },
    )
    | json_values
)
def test_odd_config_json(tmp_path, saved_run, config):
    _, checkpoint, model, state = saved_run
    text = json.dumps(config).encode()
    load_or_checkpoint_error(write_run(tmp_path, text, checkpoint), model, state)


@FUZZ
@given(st.binary(max_size=100))
def test_random_bytes_as_config_json(tmp_path, saved_run, raw):
    _, checkpoint, model, state = saved_run
    load_or_checkpoint_error(write_run(tmp_path, raw, checkpoint), model, state)
