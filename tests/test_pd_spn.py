"""The PD-SPN peer of Table II: a normalised density, EinsumNetworks' structure, EM that climbs."""

import itertools
import json
from pathlib import Path

import pytest
import torch

from benchmarks import reproduce
from benchmarks.reproduce.pd_spn import PDSPN, cut_points, region_graph

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def float64_network(height: int, width: int, trials: int, seed: int = 0) -> PDSPN:
    model = PDSPN(
        height, width, (1.0, 1.0), n_sums=3, trials=trials,
        generator=torch.Generator().manual_seed(seed),
    ).double()  # fmt: skip
    with torch.no_grad():  # renormalise in float64: float32 sums are 1 only to about 1e-7
        for w in model.weights:
            w /= w.sum(-1, keepdim=True)
    return model


def every_image(n_pixels: int, trials: int) -> torch.Tensor:
    values = list(itertools.product(range(trials + 1), repeat=n_pixels))
    return torch.tensor(values, dtype=torch.float64)


@pytest.mark.parametrize(("height", "width", "trials"), [(2, 2, 2), (2, 3, 2), (3, 3, 1)])
def test_log_p_sums_to_one_over_every_image(height, width, trials):
    # 3x3 has shared regions and regions with fewer partitions than their layer's widest.
    model = float64_network(height, width, trials)
    total = model.log_prob(every_image(height * width, trials)).logsumexp(0)
    assert total.item() == pytest.approx(0.0, abs=1e-12)


def test_region_graph_is_einsumnetworks_pd_structure_for_mnist():
    assert cut_points(28, 7.0) == [7, 14, 21]
    assert cut_points(28, 28 / 3) == [10, 19]  # ceil(i * delta), as EinsumNetworks cut
    graph = region_graph(28, 28, (7.0, 7.0))
    # Rectangles with corners on {0, 7, 14, 21, 28}^2: C(5, 2)^2 = 100 regions.
    assert len(graph.regions) == 100
    leaves = [graph.regions[r] for r in graph.layers[0]]
    assert len(leaves) == 16
    assert all(bottom - top == 7 and right - left == 7 for top, left, bottom, right in leaves)
    assert graph.regions[-1] == (0, 0, 28, 28)
    assert len(graph.partitions[-1]) == 6  # 3 cuts along each axis
    for layer in graph.layers[1:]:  # every child lies in an earlier layer
        for region in layer:
            assert all(max(pair) < layer.start for pair in graph.partitions[region])


def test_full_batch_em_step_does_not_lower_the_likelihood():
    model = float64_network(3, 3, 4, seed=1)
    x = torch.randint(0, 5, (64, 9), generator=torch.Generator().manual_seed(2)).double()
    before = model.log_prob(x).mean().item()
    for _ in range(5):
        model.em_step(x, stepsize=1.0)  # stepsize 1: batch EM, whose likelihood cannot fall
        after = model.log_prob(x).mean().item()
        assert after >= before - 1e-9
        before = after


def test_em_step_of_stepsize_one_is_the_closed_form_m_step():
    # A 1x2 image: one sum over 3 x 3 leaf pairs, whose EM update is written out here.
    model = float64_network(1, 2, 4, seed=3)
    x = torch.randint(0, 5, (32, 2), generator=torch.Generator().manual_seed(4)).double()
    probs, weights = model.probs.detach().clone(), model.weights[0].detach().reshape(3, 3)
    leaf = torch.distributions.Binomial(4, probs=probs[None]).log_prob(x[:, :, None])  # (N, 2, K)
    joint = weights.log() + leaf[:, 0, :, None] + leaf[:, 1, None, :]  # (N, K, K)
    post = (joint - joint.logsumexp((1, 2), keepdim=True)).exp()
    first, second = post.sum(2), post.sum(1)  # (N, K): each leaf's responsibilities
    expected = torch.stack([(r * x[:, d, None]).sum(0) / (4 * r.sum(0))
                            for d, r in enumerate([first, second])])  # fmt: skip
    model.em_step(x, stepsize=1.0)
    torch.testing.assert_close(model.weights[0].detach().reshape(3, 3), post.mean(0))
    torch.testing.assert_close(model.probs.detach(), expected)


@pytest.mark.skipif(not (DATA / "mnist").exists(), reason="needs ../shared/data")
def test_peers_tiny_pd_run_scores_from_its_cache(tmp_path):
    args = ["peers", "--tiny", "--peers", "pd", "--datasets", "mnist", "--data-dir", str(DATA),
            "--runs", str(tmp_path / "runs"), "--out", str(tmp_path)]  # fmt: skip
    reproduce.main(args)
    (run,) = json.loads((tmp_path / "peers.json").read_text())["runs"]
    assert (run["peer"], run["stopped_by"]) == ("PD-SPN", "epochs")
    from benchmarks.reproduce.peers import build_pdspn, counts, log_likelihood
    from dcgmm import load_dataset
    from dcgmm.evaluation.outliers import roc_auc

    model = build_pdspn(0)
    saved = torch.load(next((tmp_path / "runs" / "peers").glob("pdspn-*.pt")), weights_only=True)
    model.load_state_dict(saved["state"])
    test = load_dataset(DATA / "mnist", split="test", limit_per_class=30)
    scores = log_likelihood(model, counts(test))
    inlier = test.labels != 0
    assert roc_auc(scores[inlier], scores[~inlier]) == pytest.approx(run["auc"], abs=1e-12)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert [(r["model"], r["paper_mean"]) for r in summary] == [
        ("PD-SPN (ours, Binomial, EM)", 91.2)
    ]
    assert "| PD-SPN | mnist |" in (tmp_path / "peers.md").read_text()
