"""Outlier scores, ROC/AUC, per-position maps, clustering indices, two-input classifier."""

import json

import numpy as np
import pytest
import torch
from sklearn.metrics import davies_bouldin_score, roc_auc_score

from dcgmm import DCGMM, TrainConfig, Trainer, evaluate, load_dataset
from dcgmm.cli.main import main
from dcgmm.evaluation import outlier_detection
from dcgmm.evaluation.clustering import clustering_scores, davies_bouldin, dunn_index
from dcgmm.evaluation.contrast import fit_layer_contrast
from dcgmm.evaluation.outlier_detection import detect_outliers
from dcgmm.evaluation.outliers import (
    DEFAULT_C,
    STATISTICS_FILE,
    fit_position_statistics,
    load_position_statistics,
    position_scores,
    roc_auc,
    roc_curve,
    sample_scores,
    save_position_statistics,
    to_pixels,
)
from dcgmm.exceptions import CheckpointError, SpecError
from dcgmm.generation.sampling import sample
from dcgmm.io.images import decode_png
from dcgmm.io.run_files import write_config
from dcgmm.spec import format_spec, parse_spec
from dcgmm.training.checkpoint import save_checkpoint

TINY = "F(7,7)-G(4)-F(4,1)-G(9)"
TINY_TWO_INPUT = "F(7,7)-G(4)-F(4,1)-G(9)-C(10,2)"


@pytest.fixture(scope="module")
def tiny_model(mnist_small):
    train, _ = mnist_small
    model = DCGMM.from_spec(TINY, (28, 28, 1), generator=torch.Generator().manual_seed(0))
    config = TrainConfig(steps=300, annealing_window=20, layer_delay=0.0)
    Trainer(model, config, train.images).run()
    return model


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auc_matches_sklearn_on_random_scores_with_ties(seed):
    rng = np.random.default_rng(seed)
    inliers = np.round(rng.normal(0.5, 1.0, 300), 1)  # rounding makes many ties
    outliers = np.round(rng.normal(0.0, 1.0, 70), 1)
    y = np.r_[np.ones(300), np.zeros(70)]
    expected = roc_auc_score(y, np.r_[inliers, outliers])
    assert roc_auc(inliers, outliers) == pytest.approx(expected, abs=1e-12)
    fpr, tpr, thresholds = roc_curve(torch.from_numpy(inliers), torch.from_numpy(outliers))
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0.0, 0.0, 1.0, 1.0)
    assert np.all(np.diff(fpr) >= 0)
    assert np.all(np.diff(tpr) >= 0)
    assert np.all(np.diff(thresholds) < 0)
    trapezoid = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))
    assert trapezoid == pytest.approx(expected, abs=1e-12)


def test_auc_extremes_and_bad_input():
    assert roc_auc([2.0, 3.0], [0.0, 1.0]) == 1.0
    assert roc_auc([0.0, 1.0], [2.0, 3.0]) == 0.0
    assert roc_auc([1.0, 1.0], [1.0]) == 0.5
    with pytest.raises(ValueError, match="empty"):
        roc_auc([], [1.0])
    with pytest.raises(ValueError, match="NaN"):
        roc_auc([float("nan")], [1.0])


def test_sample_scores_are_position_means_of_the_chosen_layer(tiny_model, mnist_small):
    _, test = mnist_small
    maps = position_scores(tiny_model, test.images[:50])
    assert set(maps) == {2, 4}
    assert maps[2].shape == (50, 4, 4)
    assert maps[4].shape == (50, 1, 1)
    # Their values, for every kind and layer: tests/test_scores_oracles.py.
    assert tiny_model.gmm_layer_number("top") == 4
    assert tiny_model.gmm_layer_number(None) == 4
    assert tiny_model.gmm_layer_number("2") == 2
    assert tiny_model.gmm_layer_numbers() == [2, 4]
    with pytest.raises(ValueError, match=r"GMM layers \(1-based, as in `dcgmm info`\): \[2, 4\]"):
        tiny_model.gmm_layer_number(3)
    with pytest.raises(ValueError, match="layer must be 'top' or a GMM layer's number"):
        tiny_model.gmm_layer_number("second")


def test_position_statistics_are_float64_mean_and_std(tiny_model, mnist_small, tmp_path):
    train, _ = mnist_small
    stats = fit_position_statistics(tiny_model, train.images, batch_size=128)
    values = position_scores(tiny_model, train.images)[2].double()
    torch.testing.assert_close(stats[2].mean, values.mean(0), rtol=0, atol=1e-9)
    torch.testing.assert_close(stats[2].std, values.std(0), rtol=0, atol=1e-9)
    flagged = stats[2].outlier_map(values.float(), c=1.0)
    assert flagged.dtype == torch.bool
    assert flagged.shape == values.shape
    assert 0.0 < float(flagged.double().mean()) < 0.5  # below mean - 1 std: a minority
    save_position_statistics(tmp_path, stats, source="unit test")
    loaded, source = load_position_statistics(tmp_path)
    assert source == "unit test"
    assert loaded.keys() == stats.keys()
    for number, saved in stats.items():
        assert (loaded[number].layer, loaded[number].kind) == (number, "loglik")
        assert loaded[number].n_samples == saved.n_samples == train.images.shape[0]
        torch.testing.assert_close(loaded[number].mean, saved.mean, rtol=0, atol=0)
        torch.testing.assert_close(loaded[number].std, saved.std, rtol=0, atol=0)
    path = tmp_path / STATISTICS_FILE
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"checksum|corrupted"):
        load_position_statistics(tmp_path)


def test_a_foreign_block_is_flagged_where_it_sits(tiny_model, mnist_small):
    train, test = mnist_small
    stats = fit_position_statistics(tiny_model, train.images)
    clean = test.images[:40]
    corrupted = clean.clone()
    corrupted[:, 7:14, 14:21] = 1.0  # a white 7x7 block = position (1, 2) of layer 2
    clean_map = stats[2].outlier_map(position_scores(tiny_model, clean)[2])
    bad_map = stats[2].outlier_map(position_scores(tiny_model, corrupted)[2])
    assert bad_map[:, 1, 2].double().mean() > 0.9
    assert clean_map[:, 1, 2].double().mean() < 0.2
    assert clean_map.double().mean() < 0.1


def test_maps_spread_over_receptive_fields():
    # F(3,1) on 4x4 -> 2x2 positions; pixel (1,1) lies in all four windows, (0,0) in one.
    model = DCGMM.from_spec("F(3,1)-G(4)-P(2,2)-F(1,1)-G(4)", (4, 4, 1))
    flags = torch.zeros(1, 2, 2)
    flags[0, 0, 0] = 1.0
    pixels = to_pixels(model, 2, flags)[0]
    assert pixels[0, 0] == 1.0
    assert pixels[1, 1] == 0.25
    assert pixels[3, 3] == 0.0
    assert pixels[0, 1] == 0.5
    # Through pooling: layer 5 has one position covering everything.
    top = to_pixels(model, 5, torch.ones(1, 1, 1))[0]
    torch.testing.assert_close(top, torch.ones(4, 4, dtype=torch.float64))


def test_dunn_and_davies_bouldin_on_a_hand_computed_case():
    x = torch.tensor([[0.0], [1.0], [4.0], [6.0]])
    labels = torch.tensor([3, 3, 7, 7])  # label values need not be 0..k-1
    # Dunn: nearest points of different clusters 1 and 4 (3); widest cluster {4, 6} (2).
    assert dunn_index(x, labels) == pytest.approx(1.5, abs=1e-15)
    # DB: centroids 0.5 and 5 (4.5 apart), spreads 0.5 and 1: (0.5 + 1) / 4.5 for both.
    assert davies_bouldin(x, labels) == pytest.approx(1.0 / 3.0, abs=1e-15)
    with pytest.raises(ValueError, match="two non-empty clusters"):
        dunn_index(x, torch.zeros(4, dtype=torch.long))


def test_davies_bouldin_matches_sklearn():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 5))
    labels = rng.integers(0, 6, 200)
    expected = davies_bouldin_score(x, labels)
    assert davies_bouldin(torch.from_numpy(x), torch.from_numpy(labels)) == pytest.approx(
        expected, rel=1e-12
    )


def test_clustering_scores_of_a_trained_model(tiny_model, mnist_small):
    _, test = mnist_small
    scores = clustering_scores(tiny_model, test.images[:200])
    assert scores["dunn"] > 0.0
    assert scores["davies_bouldin"] > 0.0
    assert 2 <= scores["n_clusters_used"] <= 9
    wide = DCGMM.from_spec("F(7,7)-G(4)", (28, 28, 1))
    with pytest.raises(ValueError, match="one point per image"):
        clustering_scores(wide, test.images[:10])


def test_two_input_classifier_spec_and_forward_float64():
    assert format_spec(parse_spec("F(7,7)-G(4)-F(4,1)-G(9)-C(10,2)")) == TINY_TWO_INPUT
    assert format_spec(parse_spec("F(7,7)-G(4)-F(4,1)-G(9)-C(10,1)")).endswith("C(10)")
    with pytest.raises(SpecError, match="top 2 GMM layers"):
        DCGMM.from_spec("F(28,1)-G(4)-C(10,2)", (28, 28, 1))
    with pytest.raises(SpecError, match="1 or 2"):
        parse_spec("F(28,1)-G(4)-C(10,3)")
    model = DCGMM.from_spec(TINY_TWO_INPUT, (28, 28, 1)).double()
    classifier = model.classifier
    assert classifier is not None
    assert classifier.weight.shape == (9 + 4 * 4 * 4, 10)
    x = torch.rand(5, 28, 28, 1, dtype=torch.float64)
    lower = model.layers[1](model.layers[0](x))
    top = model.layers[3](model.layers[2](lower))
    logits = torch.cat([top.flatten(1), lower.flatten(1)], 1) @ classifier.weight
    expected = torch.softmax(logits + classifier.bias, -1)
    torch.testing.assert_close(model.predict_proba(x), expected, rtol=0, atol=1e-12)


def test_two_input_classifier_trains_and_samples(mnist_small):
    train, test = mnist_small
    model = DCGMM.from_spec(TINY_TWO_INPUT, (28, 28, 1), generator=torch.Generator().manual_seed(0))
    config = TrainConfig(steps=300, annealing_window=20, classifier_lr=0.5, layer_delay=0.0)
    Trainer(model, config, train.images, train.labels).run()
    accuracy = evaluate(model, test.images, test.labels).classifier_accuracy
    assert accuracy > 0.5  # 10 classes: chance is 0.1
    losses = model.layer_losses(test.images[:20], test.labels[:20])
    assert len(losses) == 3
    assert torch.isfinite(torch.stack(losses)).all()
    samples = sample(model, 4, classes=torch.tensor([0, 1, 2, 3]))
    assert samples.shape == (4, 28, 28, 1)


def test_cli_outliers_writes_auc_roc_and_maps(tmp_path, tiny_model, capsys, monkeypatch):
    loads = []  # the run's training images: read once for the statistics and the contrast

    def counted_load(*args, **kwargs):
        loads.append(args)
        return load_dataset(*args, **kwargs)

    monkeypatch.setattr(outlier_detection, "load_dataset", counted_load)
    run = tmp_path / "run"
    write_config(
        run,
        {"spec": TINY, "input_shape": [28, 28, 1], "objective": "annealed", "train": {},
         "data": {"source": "mnist", "classes": "1-9", "limit_per_class": 100}},
    )  # fmt: skip
    save_checkpoint(run, tiny_model, {"step": 300})
    out = tmp_path / "out"
    assert main(["outliers", str(run), "--inliers", "mnist:1-9", "--outliers", "mnist:0",
                 "--limit", "300", "--n-maps", "4", "--all-layers", "--contrast",
                 "--out", str(out)]) == 0  # fmt: skip
    assert len(loads) == 1
    result = json.loads((out / "auc.json").read_text())
    assert result["layer"] == 4
    assert set(result["auc_per_layer"]) == {"2", "4"}
    # The reported AUCs are sklearn's on the scores of the data the flags name.
    inliers = load_dataset("mnist", split="test", classes=list(range(1, 10)), limit=300)
    outliers = load_dataset("mnist", split="test", classes=[0], limit=300)
    for layer in (2, 4):
        scores = [sample_scores(tiny_model, d.images, layer=layer).double().numpy()
                  for d in (inliers, outliers)]  # fmt: skip
        labels = np.r_[np.ones(len(scores[0])), np.zeros(len(scores[1]))]
        expected = roc_auc_score(labels, np.r_[scores[0], scores[1]])
        assert result["auc_per_layer"][str(layer)] == pytest.approx(expected, abs=1e-12)
    assert result["auc"] == result["auc_per_layer"]["4"]
    # The layer contrast: fitted on the run's training images (its config's source), scored
    # on the same test images.
    train = load_dataset("mnist", classes=list(range(1, 10)), limit_per_class=100)
    contrast = fit_layer_contrast(tiny_model, train.images)
    scores = [contrast.scores(tiny_model, d.images).numpy() for d in (inliers, outliers)]
    expected = roc_auc_score(labels, np.r_[scores[0], scores[1]])
    assert result["layer_contrast"]["auc"] == pytest.approx(expected, abs=1e-12)
    assert (result["layer_contrast"]["upper"], result["layer_contrast"]["lower"]) == (4, 2)
    assert result["maps"]["layer"] == 2  # the highest GMM layer with more than one position
    assert (run / STATISTICS_FILE).exists()
    assert decode_png((out / "roc.png").read_bytes()).shape[0] > 100
    maps = decode_png((out / "maps.png").read_bytes())
    assert maps.ndim == 3
    assert maps.shape[2] == 3
    assert "AUC" in capsys.readouterr().out
    assert main(["outliers", str(run), "--inliers", "mnist", "--outliers", "mnist:0",
                 "--layer", "3", "--out", str(out)]) == 2  # fmt: skip
    capsys.readouterr()
    assert main(["eval", str(run), "--limit", "200", "--clustering", "100", "--json"]) == 0
    clustering = json.loads(capsys.readouterr().out)["clustering"]
    assert clustering["n_samples"] == 100
    assert clustering["dunn"] > 0.0


def test_cli_outliers_recollects_the_statistics_for_another_stats_limit(tmp_path, tiny_model):
    run = tmp_path / "run"
    write_config(
        run,
        {"spec": TINY, "input_shape": [28, 28, 1], "objective": "annealed", "train": {},
         "data": {"source": "mnist", "classes": "1-9"}},
    )  # fmt: skip
    save_checkpoint(run, tiny_model, {"step": 300})
    flags = ["--inliers", "mnist:1-9", "--outliers", "mnist:0", "--limit", "50"]
    for limit in (60, 90):
        args = ["outliers", str(run), *flags, "--stats-limit", str(limit)]
        assert main([*args, "--out", str(tmp_path / "out")]) == 0
        stats, _ = load_position_statistics(run)
        assert next(iter(stats.values())).n_samples == limit


def test_cli_plot_draws_curves_and_centroids(tmp_path):
    run = tmp_path / "run"
    assert main(["train", "--model", TINY_TWO_INPUT, "--data", "mnist", "--limit", "500",
                 "--steps", "30", "--log-every", "10", "--out", str(run)]) == 0  # fmt: skip
    assert main(["plot", str(run)]) == 0
    curves = decode_png((run / "plots" / "training.png").read_bytes())
    assert curves.shape[1] > 400  # four panels: objective, lr, sigma_som, accuracy
    first = decode_png((run / "plots" / "centroids_layer2.png").read_bytes())
    assert first.shape[0] >= 2 * 7 * 4  # 4 centroids of 7x7 pixels at scale 4
    assert (run / "plots" / "centroids_layer4.png").exists()


def test_auc_takes_tensors_that_track_gradients_and_any_shape():
    inliers = torch.tensor([[3.0], [2.0], [2.0]], requires_grad=True)  # (N, 1), tracked
    outliers = np.array([[2.0], [0.5]])
    # Pairs: 3>2, 3>0.5, 2=2 (half), 2>0.5, twice for the two 2s: (1 + 1 + 2 * 1.5) / 6.
    assert roc_auc(inliers, outliers) == pytest.approx(5 / 6)
    fpr, tpr, _ = roc_curve(inliers, outliers)
    assert (fpr[-1], tpr[-1]) == (1.0, 1.0)
    with pytest.raises(ValueError, match="inlier_scores is empty"):
        roc_auc([], [1.0])
    with pytest.raises(ValueError, match="outlier_scores holds NaN or infinite scores"):
        roc_curve([1.0], [float("inf")])


def test_the_outlier_protocol_runs_from_python_as_the_cli_runs_it(tiny_model):
    inliers = load_dataset("mnist", split="test", classes=list(range(1, 10)), limit=200)
    outliers = load_dataset("mnist", split="test", classes=[0], limit=200)
    train = load_dataset("mnist", classes=list(range(1, 10)), limit=300)
    stats = fit_position_statistics(tiny_model, train.images)
    report = detect_outliers(tiny_model, inliers.images, outliers.images, stats, all_layers=True)
    for layer in (2, 4):
        scores = [sample_scores(tiny_model, d.images, layer=layer).double().numpy()
                  for d in (inliers, outliers)]  # fmt: skip
        labels = np.r_[np.ones(len(scores[0])), np.zeros(len(scores[1]))]
        expected = roc_auc_score(labels, np.r_[scores[0], scores[1]])
        assert report.auc_per_layer[layer] == pytest.approx(expected, abs=1e-12)
    assert report.layer == 4
    assert report.map_layer == 2
    assert len(report.curves) == 2
    flagged = stats[2].outlier_map(position_scores(tiny_model, outliers.images)[2], DEFAULT_C)
    assert report.flagged_fraction("outliers") == pytest.approx(float(flagged.double().mean()))
