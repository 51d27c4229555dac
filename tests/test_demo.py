"""The demo is one library call; `dcgmm demo` is that call with a progress bar."""

from dcgmm.cli.main import main
from dcgmm.interfaces.demo import run_demo
from dcgmm.interfaces.runs import load_run
from dcgmm.io.images import decode_png


def test_run_demo_writes_a_loadable_run_and_its_pictures(tmp_path):
    result = run_demo(tmp_path / "demo", epochs=1)
    assert [p.name for p in result.pictures] == ["centroids.png", "samples.png", "inpainting.png"]
    for path in result.pictures:
        assert decode_png(path.read_bytes()).shape[0] > 20
    assert len(result.scores.layers) == 2
    assert load_run(tmp_path / "demo").trainer_state["step"] == 100  # 1 epoch of 10,000


def test_the_demo_command_refuses_an_existing_run(tmp_path, capsys):
    run_demo(tmp_path / "demo", epochs=1)
    assert main(["demo", "--out", str(tmp_path / "demo"), "--epochs", "1"]) == 2
    assert "already holds a run" in capsys.readouterr().err
