"""A training process killed with SIGKILL loses nothing but the steps since its last checkpoint:
``dcgmm train --resume`` then ends bit for bit where an uninterrupted run ends.

The killed run is a real ``dcgmm train`` in a child process. To kill it at a known point, and
never after it has finished, the child freezes itself there (a test-only wrapper around
``Trainer.train_step`` or ``os.replace``, installed by the script below, not by dcgmm) and
writes a marker file; the test polls for the marker, then sends SIGKILL. No sleeps, no timing.
"""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import dcgmm
from dcgmm.cli.main import main
from dcgmm.io.run_files import METRICS_FILE, MODEL_FILE, read_verified_safetensors
from dcgmm.training.checkpoint import load_model, load_trainer_state

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals")

# 600 images in batches of 20: 30 steps per epoch; checkpoints at steps 0, 20, 40 and 60.
# A 15-step annealing window and the classifier's running accuracy make the saved state more
# than parameters; the second GMM layer starts at step 6 (layer delay 0.1).
TRAIN = ["train", "--model", "F(7,7)-G(4)-F(4,1)-G(9)-C(10)", "--data", "mnist",
         "--limit", "600", "--batch-size", "20", "--steps", "60", "--seed", "5",
         "--checkpoint-every", "20", "--log-every", "5", "--annealing-window", "15"]  # fmt: skip

CHILD = r"""
import os, sys, time
from pathlib import Path
from dcgmm.training import state as trainer_state, trainer as training
from dcgmm.cli.main import main

where, at, marker = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])

def freeze(*_):
    marker.write_text(where)
    time.sleep(600)  # until SIGKILL

if where == "mid-epoch":  # after the SGD update of step `at`, before anything is saved
    train_step = training.Trainer.train_step
    def train_step_then_freeze(self):
        train_step(self)
        if self.step == at:
            freeze()
    training.Trainer.train_step = train_step_then_freeze
else:  # "before-rename": the new checkpoint of step `at` is written but not yet in place
    save_checkpoint = trainer_state.save_checkpoint
    def save_and_freeze_before_rename(run_dir, model, state):
        if state["step"] == at:
            os.replace = freeze
        save_checkpoint(run_dir, model, state)
    trainer_state.save_checkpoint = save_and_freeze_before_rename

sys.exit(main(sys.argv[4:]))
"""


@contextlib.contextmanager
def one_thread():
    """Run like the child (OMP_NUM_THREADS=1): float sums then round the same way."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted") / "run"
    with one_thread():
        assert main([*TRAIN, "--out", str(out)]) == 0
    return out


def start_and_kill(run: Path, where: str, at: int, tmp_path: Path) -> None:
    marker = tmp_path / "frozen"
    src = str(Path(dcgmm.__file__).resolve().parents[1])  # the dcgmm under test
    path = os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-c", CHILD, where, str(at), str(marker), *TRAIN, "--out", str(run)]
    child = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            if child.poll() is not None:
                pytest.fail(f"the run ended before freezing: {child.communicate()[1][-3000:]!r}")
            if time.monotonic() > deadline:
                pytest.fail("the run did not reach the freezing point within 120 s")
            time.sleep(0.02)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stdout.close()
        child.stderr.close()
    assert child.returncode == -signal.SIGKILL


def logged_steps(run: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run / METRICS_FILE).read_text().splitlines()]


@pytest.mark.parametrize(
    ("where", "at", "saved_step"),
    [
        ("mid-epoch", 47, 40),  # epoch 1, batch 17; its checkpoint was at batch 10
        ("before-rename", 40, 20),  # epoch 1, batch 10; the checkpoint on disk: epoch 0, 20
    ],
)
def test_sigkill_then_resume_equals_an_uninterrupted_run(
    tmp_path, uninterrupted, where, at, saved_step
):
    run = tmp_path / "run"
    start_and_kill(run, where, at, tmp_path)

    # On disk: a valid checkpoint older than the work that was done.
    assert load_trainer_state(run)["step"] == saved_step
    assert max(logged_steps(run)) == 5 * (at // 5) > saved_step
    leftovers = list(run.glob(f".{MODEL_FILE}.*.tmp"))
    if where == "before-rename":  # the complete new checkpoint that never got its name
        (tmp,) = leftovers
        assert json.loads(read_verified_safetensors(tmp)[1]["trainer_state"])["step"] == at
    else:
        assert leftovers == []

    with one_thread():
        assert main(["train", "--resume", str(run)]) == 0

    assert list(run.glob(".*.tmp")) == []
    assert load_trainer_state(run) == load_trainer_state(uninterrupted)
    resumed, reference = load_model(run).state_dict(), load_model(uninterrupted).state_dict()
    assert resumed.keys() == reference.keys()
    for name in reference:
        assert torch.equal(resumed[name], reference[name]), name
    assert (run / METRICS_FILE).read_text() == (uninterrupted / METRICS_FILE).read_text()


def test_resume_drops_a_metrics_line_torn_by_a_crash(tmp_path, uninterrupted):
    # A kill while appending a record leaves a line without its end; resuming drops it with
    # the other records after the checkpoint, and redoes them.
    run = tmp_path / "run"
    with one_thread():
        assert main([*TRAIN, "--out", str(run), "--stop-at", "25"]) == 0
        with open(run / METRICS_FILE, "a") as handle:
            handle.write('{"step": 30, "epoch": 1.0, "lay')
        assert main(["train", "--resume", str(run)]) == 0
    assert (run / METRICS_FILE).read_text() == (uninterrupted / METRICS_FILE).read_text()
