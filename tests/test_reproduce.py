"""The reproduction and check scripts run end to end in a tiny mode, so they cannot rot."""

import json
from pathlib import Path

import pytest
import torch

from benchmarks import reproduce
from benchmarks.reproduce.table4 import POOLED_G121

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
needs_data = pytest.mark.skipif(not (DATA / "mnist").exists(), reason="needs ../shared/data")


def tiny(table: str, tmp_path: Path, *extra: str) -> None:
    reproduce.main(
        [table, "--tiny", "--datasets", "mnist", "--data-dir", str(DATA),
         "--runs", str(tmp_path / "runs"), "--out", str(tmp_path), *extra]
    )  # fmt: skip


@needs_data
def test_table1_tiny_run_writes_auc_clustering_and_pictures(tmp_path):
    tiny("table1", tmp_path, "--presets", "A,E", "--seeds", "0,1")
    result = json.loads((tmp_path / "table1.json").read_text())
    assert [(r["model"], r["protocol"]) for r in result["rows"]] == [
        ("A", "paper"), ("A", "recipes"), ("E", "paper"), ("E", "recipes")
    ]  # fmt: skip
    from sklearn.metrics import roc_auc_score

    from benchmarks.reproduce.table1 import split_test
    from dcgmm import load_dataset, load_model
    from dcgmm.evaluation.contrast import fit_layer_contrast
    from dcgmm.evaluation.outliers import sample_scores

    inliers, outliers = split_test(DATA, "mnist", tiny=True)
    train = load_dataset(DATA / "mnist", classes=tuple(range(1, 10)), limit_per_class=60)
    per_seed = {}
    for run in result["runs"]:
        # Every seed's AUC is the one its own cached model gives on its own test split.
        folder = tmp_path / "runs" / "table1" / "mnist" / run["protocol"]
        model = load_model(folder / f"{run['preset']}-tiny-s{run['seed']}")
        scores = [sample_scores(model, d.images).double().numpy() for d in (inliers, outliers)]
        labels = [1] * len(scores[0]) + [0] * len(scores[1])
        expected = roc_auc_score(labels, [*scores[0], *scores[1]])
        assert run["auc"] == pytest.approx(expected, abs=1e-9)
        assert run["clustering"]["davies_bouldin"] > 0.0
        if run["preset"] == "A":  # one GMM layer: nothing to contrast
            assert run["auc_contrast"] is None
        else:  # the layer contrast, standardised on the (tiny) training set
            contrast = fit_layer_contrast(model, train.images)
            expected = roc_auc_score(
                labels, torch.cat([contrast.scores(model, d.images) for d in (inliers, outliers)])
            )
            assert run["auc_contrast"] == pytest.approx(expected, abs=1e-9)
        per_seed.setdefault((run["preset"], run["protocol"]), []).append(100 * run["auc"])
    for row in result["rows"]:  # and each row is their mean and sample sd
        values = per_seed[(row["model"], row["protocol"])]
        assert row["n_seeds"] == 2
        assert row["mean"] == pytest.approx(sum(values) / 2)
        assert row["sd"] == pytest.approx(abs(values[0] - values[1]) / 2**0.5)
    recipe_e = next(r for r in result["rows"] if r["model"] == "E" and r["protocol"] == "recipes")
    assert recipe_e["spec"] == "F(3,1)-G(25,indep)-F(4,2)-G(25,indep)-F(12,1)-G(49)"
    assert set(recipe_e["auc_per_layer"]) == {"2", "4", "6"}
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert [(r["table"], r["model"], r["protocol"]) for r in summary] == [
        ("I", "A", "paper"), ("I", "A", "recipes"), ("I", "E", "paper"), ("I", "E", "recipes"),
        ("I", "E [layer contrast]", "paper"), ("I", "E [layer contrast]", "recipes"),
    ]  # fmt: skip
    contrast_row = summary[-1]
    seeds = [100 * r["auc_contrast"] for r in result["runs"] if r["preset"] == "E"
             and r["protocol"] == "recipes"]  # fmt: skip
    assert contrast_row["mean"] == pytest.approx(sum(seeds) / 2)
    assert "layer contrast" in contrast_row["metric"]
    table = (tmp_path / "table1.md").read_text()
    assert "| mnist | E | recipes |" in table
    assert "92.8 +- 0.4" in table  # the paper's number sits beside ours
    assert "RAT-SPN" in table
    assert (tmp_path / "table1" / "roc_mnist.png").exists()
    assert (tmp_path / "table1" / "maps_mnist_E.png").exists()


@needs_data
def test_table1_em_rows_sit_beside_the_sgd_rows(tmp_path):
    tiny("table1", tmp_path, "--presets", "A", "--protocols", "paper", "--solvers", "sgd,em")
    rows = json.loads((tmp_path / "table1.json").read_text())["rows"]
    assert [(r["model"], r["solver"]) for r in rows] == [("A", "sgd"), ("A EM", "em")]
    config = json.loads((tmp_path / "runs" / "table1" / "mnist" / "paper" / "A-tiny-em-s0" /
                         "config.json").read_text())  # fmt: skip
    # Under EM the preset's SGD factors are dropped, not silently kept.
    assert config["train"]["solver"] == "em"
    assert config["train"]["lr_factor_precisions"] == 0.1
    page = tmp_path / "table1.md"
    assert "| mnist | A EM | paper |" in page.read_text()
    # Any page's hand-written part survives the script rewriting the table above it.
    from benchmarks.reproduce.common import HAND_WRITTEN

    page.write_text(page.read_text() + f"\n{HAND_WRITTEN}\n\nWhy A EM differs, by hand.\n")
    tiny("table1", tmp_path, "--presets", "A", "--protocols", "paper")
    text = page.read_text()
    assert text.count(HAND_WRITTEN) == 1
    assert text.endswith("Why A EM differs, by hand.\n")
    assert text.index("| mnist | A EM | paper |") < text.index(HAND_WRITTEN)


@needs_data
def test_table3_extend_to_trains_unannealed_class_models_on_in_copies(tmp_path):
    args = ("--presets", "A", "--protocols", "paper", "--judges", "1")
    tiny("table3", tmp_path, *args)
    tiny("table3", tmp_path, *args, "--extend-to", "30")
    row = json.loads((tmp_path / "table3.json").read_text())["rows"][0]
    assert (row["steps"], row["extended_models"], row["n_models"]) == (30, 10, 10)
    folder = tmp_path / "runs" / "mnist" / "paper" / "A"
    for cls in range(10):  # the original stays as it was; the copy went on from its step 20
        assert json.loads((folder / "tiny-seed0" / f"class{cls}" / "timing.json").read_text())[
            "steps"] == 20  # fmt: skip
        extended = json.loads((folder / "tiny-to30-seed0" / f"class{cls}" / "timing.json")
                              .read_text())  # fmt: skip
        assert (extended["extended_from"], extended["steps"]) == (20, 30)


@needs_data
def test_table3_tiny_run_writes_the_table(tmp_path):
    tiny("table3", tmp_path, "--presets", "E", "--judges", "2")
    result = json.loads((tmp_path / "table3.json").read_text())
    assert [(r["dataset"], r["model"], r["protocol"]) for r in result["rows"]] == [
        ("mnist", "E", "paper"), ("mnist", "E", "recipes")
    ]  # fmt: skip
    import torch

    from benchmarks.reproduce.table3 import sampling_for
    from dcgmm import load_model
    from dcgmm.evaluation.judge import load_evaluator
    from dcgmm.generation.sampling import sample

    judges = [load_evaluator(tmp_path / "runs" / "mnist" / f"judge-small-{j}") for j in (0, 1)]
    for _, info in judges:
        assert info["test_accuracy"] > 0.5  # each judge reads real digits (chance 0.1)
    for run in result["runs"]:
        # Each accuracy is what that judge says of the cached class models' samples.
        folder = tmp_path / "runs" / "mnist" / run["protocol"] / run["preset"] / "tiny-seed0"
        votes = []
        for cls in range(10):
            model = load_model(folder / f"class{cls}")
            drawn = sample(model, 20, config=sampling_for(model, run["protocol"]),
                           generator=torch.Generator().manual_seed(1000 + cls))  # fmt: skip
            votes.append(judges[run["judge"]][0](drawn).argmax(1) == cls)
        assert run["accuracy"] == pytest.approx(float(torch.cat(votes).double().mean()), abs=1e-12)
    for row in result["rows"]:
        assert (row["n_seeds"], row["n_judges"], row["steps"]) == (1, 2, 20)
        assert row["frechet_distance"] > 0.0
        # Every class has as many samples: the accuracy is the mean of the per-class ones.
        assert sum(row["per_class_accuracy"]) / 10 == pytest.approx(row["mean"], abs=1e-9)
        assert 50 < sum(row["judges_real_per_class_accuracy"]) / 10 <= 100
    e_recipe = result["rows"][1]
    assert e_recipe["spec"] == "F(3,1)-G(25,indep)-F(4,2)-G(25,indep)-F(12,1)-G(25)"
    table = (tmp_path / "table3.md").read_text()
    assert "| mnist | E | recipes |" in table
    assert "99.1" in table  # the paper's number beside ours
    assert "| real test images | (small CNN) |" in table  # the per-class section


@needs_data
def test_table3_judge_epochs_cache_a_cut_judge_apart_and_name_it(tmp_path):
    args = ("--presets", "A", "--protocols", "paper", "--judge", "paper")
    tiny("table3", tmp_path, *args, "--judge-epochs", "3")
    folder = tmp_path / "runs" / "mnist"
    assert (folder / "judge-paper-e3-0" / "evaluator.json").exists()
    assert not (folder / "judge-paper-0").exists()  # the default judge's cache is not taken
    row = json.loads((tmp_path / "table3.json").read_text())["rows"][0]
    assert row["model"] == "A [paper judge, 3 epochs]"
    assert row["metric"].endswith("(paper CNN, 3 epochs)")
    tiny("table3", tmp_path, *args)  # the default epochs: its own judge, its own row
    assert (folder / "judge-paper-0" / "evaluator.json").exists()
    rows = json.loads((tmp_path / "table3.json").read_text())["rows"]
    metrics = {r["model"]: r["metric"] for r in rows}
    assert sorted(metrics) == ["A [paper judge, 3 epochs]", "A [paper judge]"]
    assert metrics["A [paper judge]"].endswith("(paper CNN)")
    # the two rows judge the same samples: their one grid is shown once
    assert (tmp_path / "table3.md").read_text().count("(table3/mnist_A_paper.png)") == 1


@needs_data
def test_table3_em_class_models_are_their_own_rows(tmp_path):
    tiny("table3", tmp_path, "--presets", "A", "--protocols", "paper", "--solvers", "em")
    row = json.loads((tmp_path / "table3.json").read_text())["rows"][0]
    assert (row["model"], row["solver"]) == ("A EM", "em")
    folder = tmp_path / "runs" / "mnist" / "paper" / "A" / "tiny-em-seed0" / "class3"
    assert json.loads((folder / "config.json").read_text())["train"]["solver"] == "em"
    assert (tmp_path / "table3" / "mnist_A_paper_em.png").exists()
    assert "(table3/mnist_A_paper_em.png)" in (tmp_path / "table3.md").read_text()


@needs_data
def test_table4_tiny_run_reports_both_protocols_and_the_rate_search(tmp_path):
    tiny("table4", tmp_path, "--probe", "--classifier-lrs", "0.1,1.0")
    result = json.loads((tmp_path / "table4.json").read_text())
    assert [(r["protocol"], r["model"], r["classifier_lr"]) for r in result["rows"]] == [
        ("paper", "B + C(10)", 0.1), ("paper", "B + C(10)", 1.0),
        ("paper", "B + C(10,2)", 0.1), ("paper", "B + C(10,2)", 1.0),
        ("recipes", "classifier-B", 0.1),
    ]  # fmt: skip
    from dcgmm import load_dataset, load_model

    test = load_dataset(DATA / "mnist", split="test", limit_per_class=50)
    for run in result["runs"]:
        tag = run["model"].replace(" ", "").replace("(", "").replace(")", "")
        folder = tmp_path / "runs" / "table4" / "mnist" / run["protocol"]
        model = load_model(folder / f"{tag}-lr{run['lr']}-tiny-s{run['seed']}")
        predicted = model.predict_proba(test.images).argmax(1)
        assert run["accuracy"] == pytest.approx(
            float((predicted == test.labels).double().mean()), abs=1e-12
        )
    assert result["runs"][-1]["spec"] == "F(4,2)-G(121,indep)-C(10)"
    for group in ("B + C(10,2)", "B + C(10)"):  # one rate per group is marked, the better one
        rows = [r for r in result["rows"] if r["model"] == group]
        best = [r for r in rows if r["best_rate"]]
        assert best == [max(rows, key=lambda r: r["valid_mean"])]
    wired_as_the_paper = next(r for r in result["rows"] if r["model"] == "B + C(10,2)")
    assert wired_as_the_paper["probe_accuracy"] > 0.5  # logistic regression on its features
    assert "98.0" in (tmp_path / "table4.md").read_text()


@needs_data
def test_table4_recipe_rate_search_trains_each_rate_and_is_refused_without_the_recipe(tmp_path):
    tiny("table4", tmp_path, "--protocols", "recipes", "--recipe-classifier-lrs", "0.03,0.3")
    rows = json.loads((tmp_path / "table4.json").read_text())["rows"]
    assert [(r["model"], r["classifier_lr"]) for r in rows] == [
        ("classifier-B", 0.03), ("classifier-B", 0.3)]  # fmt: skip
    assert sum(r["best_rate"] for r in rows) == 1
    for flag, value in (("--recipe-classifier-lrs", "0.3"), ("--recipe-epochs", "30")):
        with pytest.raises(SystemExit, match=f"{flag} act on the recipes network"):
            tiny("table4", tmp_path, "--protocols", "paper", flag, value)


@needs_data
def test_table4_trains_our_network_under_its_own_protocol_and_refuses_unknown_ones(tmp_path):
    tiny("table4", tmp_path, "--protocols", "ours", "--ours-epochs", "30")
    (row,) = json.loads((tmp_path / "table4.json").read_text())["rows"]
    assert (row["protocol"], row["model"], row["spec"]) == ("ours", "pooled-G121", POOLED_G121)
    assert (row["classifier_lr"], row["epochs"]) == (1.0, 30)
    tiny("table4", tmp_path, "--protocols", "ours", "--models",
         "pooled-G121-frozen;pooled-G121-two-stage")  # fmt: skip
    for name, delay in (("pooled-G121-frozen", 0.0), ("pooled-G121-two-stage", 0.6)):
        row = next(r for r in json.loads((tmp_path / "table4.json").read_text())["rows"]
                   if r["model"] == name)  # fmt: skip
        run_dir = tmp_path / f"runs/table4/mnist/ours/{name}-lr1.0-tiny-s0"
        train = json.loads((run_dir / "config.json").read_text())["train"]
        assert row["epochs"] == 25
        assert (train["freeze_gmm_at"], train["classifier_delay"]) == (0.6, delay)
    with pytest.raises(SystemExit, match="--ours-epochs act on the ours network"):
        tiny("table4", tmp_path, "--protocols", "recipes", "--ours-epochs", "30")
    with pytest.raises(SystemExit, match=r"unknown --protocols \['our'\]; expected"):
        tiny("table4", tmp_path, "--protocols", "our")


@needs_data
def test_table4_runs_accumulate_and_keep_the_hand_written_part(tmp_path):
    from benchmarks.reproduce.common import HAND_WRITTEN

    def stored():
        rows = json.loads((tmp_path / "table4.json").read_text())["rows"]
        return [(r["protocol"], r["classifier_lr"], r["run"]) for r in rows]

    page = tmp_path / "table4.md"
    tiny("table4", tmp_path, "--protocols", "recipes", "--recipe-classifier-lrs", "0.03,0.3")
    page.write_text(page.read_text() + f"\n{HAND_WRITTEN}\n\nAn ablation, by hand.\n")
    tiny("table4", tmp_path, "--protocols", "paper", "--models", "B + C(10,2)",
         "--classifier-lrs", "0.1")  # fmt: skip
    assert stored() == [("paper", 0.1, 2), ("recipes", 0.03, 1), ("recipes", 0.3, 1)]
    # A run of the same (dataset, model, protocol) replaces all its rates' rows.
    tiny("table4", tmp_path, "--protocols", "recipes", "--recipe-classifier-lrs", "0.3")
    assert stored() == [("paper", 0.1, 2), ("recipes", 0.3, 3)]
    text = page.read_text()
    assert text.count(HAND_WRITTEN) == 1
    assert text.endswith("An ablation, by hand.\n")
    assert "  - run 1" not in text, "a run that measures no row any more is dropped"
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert sorted((r["protocol"], r["metric"].split("(")[-1]) for r in summary) == [
        ("paper", "classifier rate 0.1, chosen on validation)"),
        ("recipes", "classifier rate 0.3, chosen on validation)"),
    ]


@needs_data
def test_flat_gmm_tiny_run_compares_with_sklearn(tmp_path):
    tiny("flatgmm", tmp_path, "--components", "4", "--reg-covar", "0.05")
    rows = json.loads((tmp_path / "flat_gmm.json").read_text())["rows"]
    methods = [r["method"] for r in rows if "method" in r]
    assert methods == [
        "ours, SGD, annealed objective",
        "ours, EM, annealed objective",
        "ours, SGD, loglik objective",
        "ours, EM, loglik objective",
        "SGDGaussianMixture, defaults (stepwise EM, k-means++ seeds)",
        "sklearn EM, reg_covar=0.05",
    ]
    for row in rows[:6]:
        assert row["bits_per_dim"] > 0.0  # an 8-bit image needs a positive code length
    assert len(rows[6]["sample_grids"]) == 6
    em = json.loads((tmp_path / "runs" / "flatgmm" / "mnist" / "K4-loglik-tiny-em" /
                     "config.json").read_text())  # fmt: skip
    assert em["train"]["solver"] == "em"
    assert "bits/dim" in (tmp_path / "flat_gmm.md").read_text()


@needs_data
def test_vae_tiny_run_writes_likelihoods_and_knn(tmp_path):
    tiny("vae", tmp_path, "--models", "DLGMM,Gauss-VAE", "--is-test", "50")
    rows = json.loads((tmp_path / "baselines_vae.json").read_text())["rows"]
    assert [r["model"] for r in rows] == ["DLGMM", "Gauss-VAE"]
    for row in rows:
        assert row["nll_is5000_subset"] > 0.0  # -log p of binary images is positive
        assert len(row["knn_error_sample"]) == 3
    assert "96.5" in (tmp_path / "baselines_vae.md").read_text()
    # Train the cached DLGMM further: its record grows, Gauss-VAE's stays.
    tiny("vae", tmp_path, "--models", "DLGMM,Gauss-VAE", "--is-test", "50",
         "--continue-minutes", "0.05", "--continue-models", "DLGMM")  # fmt: skip
    again = json.loads((tmp_path / "baselines_vae.json").read_text())["rows"]
    assert again[0]["epochs"] > rows[0]["epochs"]
    assert again[1]["epochs"] == rows[1]["epochs"]


@needs_data
def test_nsn_tiny_run_writes_counts_samples_and_occlusion(tmp_path):
    tiny("nsn", tmp_path)
    row = json.loads((tmp_path / "baselines_nsn.json").read_text())["rows"][0]
    assert len(row["filter_counts"]) == 3
    assert row["paper_filter_counts"] == [96, 130, 131]
    assert 0.0 < row["occlusion_mse_right_half"] < 0.2  # squared error of pixels in [0, 1]
    assert (tmp_path / "baselines" / "nsn_mnist_samples.png").exists()


@needs_data
def test_baselines_comparison_tiny_run_judges_every_model_alike(tmp_path):
    tiny("baselines", tmp_path, "--presets", "A")
    result = json.loads((tmp_path / "baselines.json").read_text())["datasets"]["mnist"]
    models = ["DCGMM A", "NSN", "DLGMM", "DLDPMM", "Gauss-VAE"]
    assert [r["model"] for r in result["outlier_auc"]] == models
    from sklearn.metrics import roc_auc_score

    from benchmarks.reproduce.table1 import split_test
    from dcgmm import load_model
    from dcgmm.interfaces.image_model import as_image_model

    inliers, outliers = split_test(DATA, "mnist", tiny=True)
    model = as_image_model(load_model(tmp_path / "runs" / "table1" / "mnist" / "A-tiny"))
    scores = [model.outlier_score(d.images).double().numpy() for d in (inliers, outliers)]
    labels = [1] * len(scores[0]) + [0] * len(scores[1])
    expected = 100 * roc_auc_score(labels, [*scores[0], *scores[1]])
    auc = {r["model"]: r["auc"] for r in result["outlier_auc"]}
    assert auc["DCGMM A"] == pytest.approx(expected, abs=0.005)  # the table rounds to 0.01
    assert {(r["model"], r["mask"]) for r in result["inpainting"]} == {
        (m, k) for m in models for k in ("right-half", "center", "random:0.5")
    }
    assert all(r["mse"] > 0.0 for r in result["inpainting"])
    table = (tmp_path / "baselines.md").read_text()
    assert "| DLDPMM | log p(x) (nats, importance sampled) |" in table
    assert (tmp_path / "baselines" / "compare_inpaint_mnist_center.png").exists()
    assert (tmp_path / "baselines" / "compare_roc_mnist.png").exists()


@needs_data
def test_nsn_faces_tiny_run_rebuilds_from_every_level_and_samples(tmp_path):
    tiny("nsn-faces", tmp_path, "--zca", "--max-filters", "8")
    row = json.loads((tmp_path / "baselines_nsn_faces.json").read_text())
    assert len(row["filter_counts"]) == 5
    assert len(row["level_mse"]) == 5
    assert all(0.0 < v < 1.0 for v in row["level_mse"])
    assert "ZCA" in (tmp_path / "baselines_nsn_faces.md").read_text()
    assert (tmp_path / "baselines" / "nsn_olivetti-zca-tiny_samples.png").exists()
    assert (tmp_path / "baselines" / "nsn_olivetti-zca-tiny_levels.png").exists()


def test_duplicated_fraction_counts_pixel_equal_images():
    import torch

    from benchmarks.reproduce.paper2021 import duplicated_fraction

    a, b = torch.zeros(1, 2, 2, 1), torch.ones(1, 2, 2, 1)
    assert duplicated_fraction(torch.cat([a, a, a, b])) == 0.5  # 2 distinct of 4
    assert duplicated_fraction(torch.cat([a, b])) == 0.0
    assert duplicated_fraction(torch.cat([a, a + 1e-7])) == 0.0  # not equal: not a duplicate


@needs_data
def test_paper2021_tiny_run_measures_diversity_of_every_instance(tmp_path):
    tiny("paper2021", tmp_path)
    rows = json.loads((tmp_path / "paper2021.json").read_text())["rows"]
    from benchmarks.reproduce.paper2021 import INSTANCES, diversity
    from dcgmm import load_model

    assert [r["instance"] for r in rows] == [name for name, *_ in INSTANCES]
    flat = load_model(tmp_path / "runs" / "paper2021" / "mnist" / "1L-tiny-s0")
    assert rows[0]["duplicated"]["1"][0] == diversity(flat, 100, 0)["1"]
    # Top-1 everywhere: a sample is fixed by the top component, so 25 distinct at most.
    assert rows[0]["duplicated"]["1"][0] >= 1 - 25 / 100
    assert "duplicated, top-10" in (tmp_path / "paper2021.md").read_text()


@needs_data
def test_peers_tiny_run_scores_ratspn_and_reloads_it_from_its_cache(tmp_path):
    pytest.importorskip("spflow")  # the bench extra
    tiny("peers", tmp_path, "--peers", "rat")
    result = json.loads((tmp_path / "peers.json").read_text())
    (run,) = result["runs"]
    assert run["stopped_by"] in ("epochs", "time")
    assert run["steps"] >= 1
    # The AUC is the rank statistic of the test set's log p(x), recomputed from the cache.
    from benchmarks.reproduce.peers import INLIERS, build_ratspn, counts, log_likelihood
    from dcgmm import load_dataset
    from dcgmm.evaluation.outliers import roc_auc

    train = load_dataset(DATA / "mnist", classes=INLIERS, limit_per_class=30)
    test = load_dataset(DATA / "mnist", split="test", limit_per_class=30)
    model = build_ratspn(counts(train), 0)
    saved = torch.load(next((tmp_path / "runs" / "peers").glob("*.pt")), weights_only=True)
    model.load_state_dict(saved["state"])
    scores = log_likelihood(model, counts(test))
    inlier = test.labels != 0
    assert roc_auc(scores[inlier], scores[~inlier]) == pytest.approx(run["auc"], abs=1e-12)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert [(r["table"], r["dataset"], r["paper_mean"]) for r in summary] == [("II", "mnist", 91.8)]
    tiny("peers", tmp_path, "--peers", "rat")  # cached: the same number without training
    again = json.loads((tmp_path / "peers.json").read_text())["runs"][0]
    assert again["auc"] == run["auc"]
    assert again["train_seconds"] == run["train_seconds"]


def test_carried_peer_rows_keep_only_the_dates_and_commands_that_measured_them(tmp_path):
    # A page whose PD-SPN rows were measured by its own call and whose RAT-SPN rows were
    # carried from an older page: re-running RAT-SPN carries the PD-SPN rows with the page's
    # own date and command, not the older page's (whose rows are all replaced).
    from benchmarks.reproduce.peers import carried

    runs = [
        {"peer": "PD-SPN", "dataset": "mnist", "seed": 0, "auc": 0.9},
        {"peer": "RAT-SPN", "dataset": "mnist", "seed": 0, "auc": 0.95, "carried": True},
    ]
    old_lines = ["- date: OLD", "- command: `old rat`"]
    settings = {"PD-SPN": {"epochs": 5}, "RAT-SPN": {"epochs": 5}}
    (tmp_path / "peers.json").write_text(
        json.dumps({"settings": settings, "runs": runs, "carried_provenance": old_lines})
    )
    (tmp_path / "peers.md").write_text(
        "\n".join(
            [
                "# Table II peers, re-run here",
                "",
                "- date: NEW",
                "- command: `new pd`",
                "",
                "Carried-over rows were measured on another day:",
                "",
                *old_lines,
                "",
                "| peer |",
            ]
        )
    )
    kept, origin = carried(tmp_path, ["RAT-SPN"])
    assert [(r["peer"], r["carried"]) for r in kept] == [("PD-SPN", True)]
    assert origin == {
        "settings": {"PD-SPN": {"epochs": 5}},
        "provenance": ["- date: NEW", "- command: `new pd`"],
    }
    # Carried again (PD-SPN rows already carried): their own provenance travels with them.
    kept, origin = carried(tmp_path, ["PD-SPN"])
    assert [r["peer"] for r in kept] == ["RAT-SPN"]
    assert origin["provenance"] == old_lines


def test_a_hand_written_part_of_the_peers_page_is_not_taken_for_provenance(tmp_path):
    from benchmarks.reproduce.common import HAND_WRITTEN
    from benchmarks.reproduce.peers import carried

    runs = [{"peer": "PD-SPN", "dataset": "mnist", "seed": 0, "auc": 0.9}]
    (tmp_path / "peers.json").write_text(
        json.dumps({"settings": {"PD-SPN": {"epochs": 5}}, "runs": runs})
    )
    page = ["- date: NEW", "- command: `new pd`", "", "| peer |", "", HAND_WRITTEN,
            "- date: 2026-01-01, an ablation written by hand"]  # fmt: skip
    (tmp_path / "peers.md").write_text("\n".join(page))
    _, origin = carried(tmp_path, ["RAT-SPN"])
    assert origin["provenance"] == ["- date: NEW", "- command: `new pd`"]


def test_summary_rows_replace_their_own_kind_and_keep_the_others(tmp_path):
    from benchmarks.reproduce.common import update_summary

    def row(model, protocol, mean):
        return {"table": "I", "dataset": "mnist", "model": model, "protocol": protocol,
                "metric": "AUC %", "mean": mean, "sd": 0.0, "n_seeds": 1, "steps": 10,
                "paper_mean": None, "paper_sd": None}  # fmt: skip

    update_summary(tmp_path, "I", [row("A", "paper", 1.0), row("E", "paper", 2.0)])
    update_summary(tmp_path, "I", [row("E", "paper", 3.0), row("E", "recipes", 4.0)])
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert [(r["model"], r["protocol"], r["mean"]) for r in summary] == [
        ("A", "paper", 1.0), ("E", "paper", 3.0), ("E", "recipes", 4.0)]  # fmt: skip
    with pytest.raises(ValueError, match="lacks"):
        update_summary(tmp_path, "I", [{"table": "I"}])


def test_best_picks_the_highest_mean_among_rows_with_enough_seeds(tmp_path):
    from benchmarks.reproduce import best

    def row(model, mean, seeds):
        return {"table": "I", "dataset": "mnist", "model": model, "protocol": "paper",
                "mean": mean, "sd": 0.1, "n_seeds": seeds, "steps": 100}  # fmt: skip

    rows = [row("A", 95.0, 3), row("E", 97.0, 1), row("B", 96.5, 3)]
    assert best.best_rows(rows, min_seeds=3)[("I", "mnist")]["model"] == "B"
    summary = tmp_path / "summary.json"
    summary.write_text(json.dumps(rows))
    best.main(["--summary", str(summary), "--out", str(tmp_path / "best.md")])
    text = (tmp_path / "best.md").read_text()
    assert "| I | outlier AUC % | mnist | B, paper | **96.50 +- 0.10** (3) | 100 | A 95.4" in text
    assert "yes |" in text
    assert "not measured with 3 seeds" in text  # the other columns


def test_gap_test_is_scipys_welch_and_one_sample_t_tests():
    from scipy import stats

    from benchmarks.reproduce import best
    from benchmarks.reproduce.common import mean_sd

    seeds = [71.2, 74.6, 67.9]
    mean, sd = mean_sd(seeds)
    row = {"n_seeds": 3, "mean": mean, "sd": sd, "paper_mean": 74.9, "paper_sd": None}
    t, df, p = best.gap_test(row)
    one_sample = stats.ttest_1samp(seeds, 74.9)
    assert (t, df, p) == pytest.approx((one_sample.statistic, 2.0, one_sample.pvalue))
    t, df, p = best.gap_test(row | {"paper_sd": 1.7})
    welch = stats.ttest_ind_from_stats(mean, sd, 3, 74.9, 1.7, 5, equal_var=False)
    assert (t, p) == pytest.approx((welch.statistic, welch.pvalue))


def test_two_way_standard_error_estimates_the_variance_of_the_grand_mean():
    import numpy as np

    from benchmarks.reproduce.common import two_way_standard_error

    # y_sj = a_s + b_j + e_sj, seeds and judges crossed: the grand mean's variance is
    # sd_a^2 / S + sd_b^2 / J + sd_e^2 / (S J). The squared standard error must estimate it
    # (unbiased where no component is estimated negative; these sizes make that rare).
    rng = np.random.default_rng(0)
    s, j, sd_a, sd_b, sd_e = 4, 5, 1.5, 2.0, 0.5
    truth = sd_a**2 / s + sd_b**2 / j + sd_e**2 / (s * j)
    tables = (rng.normal(0, sd_a, (4000, s, 1)) + rng.normal(0, sd_b, (4000, 1, j))
              + rng.normal(0, sd_e, (4000, s, j)))  # fmt: skip
    estimates = [two_way_standard_error(t.tolist())[0] ** 2 for t in tables]
    assert np.mean(estimates) == pytest.approx(truth, rel=0.05)
    # No seed or judge effect: only the residual, with (S - 1)(J - 1) degrees of freedom.
    se, df = two_way_standard_error([[1.0, -1.0], [-1.0, 1.0]])
    assert (se, df) == pytest.approx((1.0, 1.0))
    with pytest.raises(ValueError, match="2 x 2"):
        two_way_standard_error([[1.0, 2.0]])


def test_gap_test_uses_a_rows_own_standard_error_where_it_has_one():
    from scipy import stats

    from benchmarks.reproduce import best

    row = {"n_seeds": 3, "mean": 90.5, "sd": 1.5, "paper_mean": 94.5, "paper_sd": 1.7,
           "se": 0.8, "se_df": 5.5}  # fmt: skip
    t, df, p = best.gap_test(row)
    theirs = 1.7**2 / 5
    assert t == pytest.approx(-4.0 / (0.8**2 + theirs) ** 0.5)
    assert df == pytest.approx((0.8**2 + theirs) ** 2 / (0.8**4 / 5.5 + theirs**2 / 4))
    assert p == pytest.approx(2 * stats.t.sf(abs(t), df))


def test_best_never_chooses_a_classifier_rate_that_lost_on_validation():
    from benchmarks.reproduce import best

    def row(mean, metric):
        return {"table": "IV", "dataset": "mnist", "model": "B + C(10,2)", "protocol": "paper",
                "metric": metric, "mean": mean, "sd": 0.1, "n_seeds": 3, "steps": 100,
                "paper_mean": 98.0, "paper_sd": None}  # fmt: skip

    chosen = row(97.2, "test accuracy % (classifier rate 0.1, chosen on validation)")
    lost = row(97.6, "test accuracy % (classifier rate 1.0)")
    assert best.best_rows([chosen, lost], min_seeds=3)[("IV", "mnist")] is chosen
    assert best.target_rows([chosen, lost], min_seeds=3) == [chosen]
    assert best.label(chosen) == "B + C(10,2), paper (classifier rate 0.1)"


def test_a_layer_contrast_row_may_be_the_best_but_is_not_tested_against_the_paper():
    from benchmarks.reproduce import best

    def row(model, mean):
        return {"table": "I", "dataset": "fashion-mnist", "model": model, "protocol": "paper",
                "metric": "outlier AUC %", "mean": mean, "sd": 1.0, "n_seeds": 3,
                "steps": 100, "paper_mean": 74.9, "paper_sd": None}  # fmt: skip

    plain, contrast = row("E", 72.0), row("E [layer contrast]", 77.0)
    assert best.best_rows([plain, contrast], min_seeds=3)[("I", "fashion-mnist")] is contrast
    assert best.target_rows([plain, contrast], min_seeds=3) == [plain]


def test_a_network_of_ours_may_be_the_best_but_is_not_tested_against_the_paper():
    from benchmarks.reproduce import best

    def row(model, protocol, mean):
        return {"table": "IV", "dataset": "mnist", "model": model, "protocol": protocol,
                "metric": "test accuracy % (classifier rate 1.0, chosen on validation)",
                "mean": mean, "sd": 0.1, "n_seeds": 3, "steps": 100, "paper_mean": 98.0,
                "paper_sd": None}  # fmt: skip

    recipe, ours = row("classifier-B", "recipes", 97.6), row("B pooled", "ours", 98.4)
    assert best.best_rows([recipe, ours], min_seeds=3)[("IV", "mnist")] is ours
    assert best.target_rows([recipe, ours], min_seeds=3) == [recipe]


def test_table3_rows_accumulate_over_runs(tmp_path):
    from benchmarks.reproduce.table3_report import write_table3

    def result(protocol, mean):
        row = {"table": "III", "dataset": "fashion-mnist", "model": "E", "protocol": protocol,
               "metric": "judge accuracy %", "mean": mean, "sd": 1.0, "n_seeds": 3,
               "n_judges": 1, "steps": 3000, "annealed_models": 0, "n_models": 30,
               "train_seconds": 10.0, "frechet_distance": 60.0, "judge_test_accuracy": [0.91],
               "paper_mean": 94.5, "paper_sd": 1.7}  # fmt: skip
        runs = [{"dataset": "fashion-mnist", "preset": "E", "model": "E", "protocol": protocol,
                 "seed": seed, "judge": 0, "accuracy": mean / 100}
                for seed in range(3)]  # fmt: skip
        return {"rows": [row], "runs": runs}

    write_table3(result("paper", 84.1), tmp_path, "command one", 60.0)
    write_table3(result("recipes", 93.9), tmp_path, "command two", 60.0)
    stored = json.loads((tmp_path / "table3.json").read_text())
    assert [(r["protocol"], r["run"]) for r in stored["rows"]] == [("paper", 1), ("recipes", 2)]
    assert len(stored["runs"]) == 6
    page = (tmp_path / "table3.md").read_text()
    for text in ("command one", "command two", "**84.1 +- 1.0**", "**93.9 +- 1.0**"):
        assert text in page
    write_table3(result("paper", 85.0), tmp_path, "command three", 60.0)  # replaces run 1's row
    stored = json.loads((tmp_path / "table3.json").read_text())
    assert [(r["protocol"], r["mean"], r["run"]) for r in stored["rows"]] == [
        ("paper", 85.0, 3), ("recipes", 93.9, 2)]  # fmt: skip
    assert [c["run"] for c in stored["commands"]] == [2, 3]
    assert "command one" not in (tmp_path / "table3.md").read_text()
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert sorted((r["protocol"], r["mean"]) for r in summary) == [
        ("paper", 85.0), ("recipes", 93.9)]  # fmt: skip


def test_table3_shared_layers_ablation_shares_only_the_layers():
    import argparse

    from benchmarks.reproduce.protocols import SAMPLING_E, paper_recipe
    from benchmarks.reproduce.table3 import ablated_recipe, add_arguments, layers_label

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    default, shared = parser.parse_args([]), parser.parse_args(["--shared-layers"])
    assert ablated_recipe(SAMPLING_E, default) is SAMPLING_E
    assert layers_label(default) == ""
    ablated = ablated_recipe(SAMPLING_E, shared)
    assert ablated.spec == "F(3,1)-G(25)-F(4,2)-G(25)-F(12,1)-G(25)"
    assert (ablated.train, ablated.epochs) == (SAMPLING_E.train, SAMPLING_E.epochs)
    assert layers_label(shared) == " [shared layers]"
    with pytest.raises(SystemExit, match="no independent GMM layer"):
        ablated_recipe(paper_recipe("E", 0), shared)


def test_table3_rows_of_one_preset_and_protocol_keep_their_own_sample_grids():
    from benchmarks.reproduce.table3_report import grid_file

    plain = grid_file("fashion-mnist", "E", "recipes", "sgd")
    shared = grid_file("fashion-mnist", "E [shared layers]", "recipes", "sgd")
    assert plain == "fashion-mnist_E_recipes.png"  # the name rows without labels always had
    assert shared == "fashion-mnist_E_recipes_shared-layers.png"
    assert grid_file("mnist", "A EM", "paper", "em") == "mnist_A_paper_em.png"
    # the judge does not change the samples: its row shares the grid of the same samples
    assert grid_file("fashion-mnist", "E [shared layers] [paper judge]", "recipes", "sgd") == shared


def test_table3_a_judge_other_than_the_default_names_its_own_row():
    import argparse

    from benchmarks.reproduce.table3 import add_arguments, judge_label

    parser = argparse.ArgumentParser()
    add_arguments(parser)

    def label(*argv: str) -> str:
        return judge_label(parser.parse_args(list(argv)))

    assert label() == label("--judge", "small", "--judge-epochs", "5") == ""
    assert label("--judge", "paper") == label("--judge", "paper", "--judge-epochs", "15")
    assert label("--judge", "paper") == " [paper judge]"
    assert label("--judge", "paper", "--judge-epochs", "5") == " [paper judge, 5 epochs]"
    assert label("--judge-epochs", "2") == " [small judge, 2 epochs]"


def test_table3_sampling_knobs_act_and_name_the_row():
    import argparse

    import torch

    from benchmarks.reproduce.table3 import add_arguments, knobs_label, sampling_for
    from dcgmm import DCGMM

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    model = DCGMM.from_spec("E", (28, 28, 1), generator=torch.Generator().manual_seed(0))
    default = parser.parse_args([])
    assert knobs_label(default) == ""
    config = sampling_for(model, "paper", default)
    assert (config.top_s, config.noise_divisor, config.sharpening) == ({2: 2, 4: 2}, 10.0, None)
    args = parser.parse_args(["--top-s", "1", "--noise-divisor", "0", "--sharpen", "300"])
    config = sampling_for(model, "recipes", args)
    assert (config.top_s, config.noise_divisor) == ({2: 1, 4: 1}, None)
    assert (config.sharpening.iterations, config.sharpening.rate) == (300, 0.01)
    assert knobs_label(args) == " [top-S 1, no noise, sharpened 300 x 0.01]"
    with pytest.raises(SystemExit, match="--sharpen-rate needs --sharpen"):
        knobs_label(parser.parse_args(["--sharpen-rate", "0.1"]))
