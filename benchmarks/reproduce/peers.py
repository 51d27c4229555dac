"""Table II's peers re-run: RAT-SPN (SPFlow) and PD-SPN (ours), Binomial leaves, outlier AUC.

    python -m benchmarks.reproduce peers [--datasets mnist,fashion-mnist] [--seeds 0]
        [--peers rat,pd] [--epochs 5] [--max-minutes 15] [--lr 0.05] [--em-stepsize 0.05]
        [--tiny]

Table I/II's protocol: train on the training images of classes 1-9, score the test set by
log p(x), AUC of its classes 1-9 (inliers) against its class 0 (outliers).

The paper's RAT-SPN came from EinsumNetworks: Binomial leaves over the 0-255 pixel values,
random binary trees of depth 4, R = 10 repetitions, K = 10 sums per region. Here it is SPFlow
1.1's ``RatSPN`` with the same numbers. Its ``depth`` counts partition layers,
``n_region_nodes`` = ``out_channels`` of the leaves = K, and ``outer_product=True`` is
EinsumNetworks' einsum layer. What differs from the paper's setup, each choice named:

- **Training**: Adam (lr ``--lr``, batch 100) on -log p(x), where EinsumNetworks use online EM.
  Random leaf probabilities start at about 180 nats per pixel, and Adam at 0.01 needs thousands
  of steps to leave that (measured: 142,857 to 127,203 nats per image in 25 batches). So each
  leaf starts from half a random training image and half the pixel mean, clipped to
  [0.02, 0.98] (measured 29,891 nats at the first batch).
- **Budget**: ``--epochs`` over the 1-9 training images, or ``--max-minutes`` per model,
  whichever ends first. Each row records which one stopped it.

The paper's PD-SPN is EinsumNetworks' Poon-Domingos structure. SPFlow 1.1 has none, so it is
our own einsum network (``benchmarks/reproduce/pd_spn.py``): cut step delta = 28 / 4 = 7 on
both axes (EinsumNetworks' MNIST demo, ``pd_num_pieces = [4]``), K = 10, Binomial(255) leaves
over 7 x 7 pixel blocks with p kept in [1e-6, 1 - 1e-6], random start as EinsumNetworks', and
EinsumNetworks' training: online EM, step ``--em-stepsize`` after every batch of 100, for
``--epochs`` or ``--max-minutes``, whichever ends first.

``--peers`` picks which to train and score; the rows of a peer not named are carried over from
the ``peers.json`` already in ``--out`` (marked so on the page). Trained models are cached in
``--runs``/peers (one file per peer, dataset, seed and budget): a second call only evaluates.
"""

import argparse
import itertools
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.reproduce.common import (
    HAND_WRITTEN,
    header_lines,
    mean_sd,
    update_summary,
    write_results,
)
from benchmarks.reproduce.pd_spn import PDSPN, PROB_CLAMP
from dcgmm import load_dataset
from dcgmm.evaluation.outliers import roc_auc
from dcgmm.io.data import Dataset

INLIERS = tuple(range(1, 10))
PUBLISHED = {  # the 2022 paper's Table II
    "RAT-SPN": {"mnist": 91.8, "fashion-mnist": 39.2},
    "PD-SPN": {"mnist": 91.2, "fashion-mnist": 48.5},
}
PEERS = {"rat": "RAT-SPN", "pd": "PD-SPN"}
SUMMARY_MODEL = {"RAT-SPN": "RAT-SPN (SPFlow, Binomial)", "PD-SPN": "PD-SPN (ours, Binomial, EM)"}
STRUCTURE = {"depth": 4, "num_repetitions": 10, "n_region_nodes": 10, "leaf_channels": 10}
PD_STRUCTURE = {"delta": [7.0, 7.0], "n_sums": 10, "trials": 255, "prob_clamp": PROB_CLAMP}
BATCH = 100
LEAF_CLIP = (0.02, 0.98)
CARRIED_HEADING = "Carried-over rows were measured on another day:"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The peers' options."""
    parser.add_argument("--seeds", default="0", help="e.g. 0,1,2: rows are mean +- sd")
    parser.add_argument("--peers", default="rat,pd", help="which to run: rat, pd or both")
    parser.add_argument("--epochs", type=int, default=5, help="epochs over the 1-9 images")
    parser.add_argument("--max-minutes", type=float, default=15.0, help="per model")
    parser.add_argument("--lr", type=float, default=0.05, help="RAT-SPN: Adam's rate")
    parser.add_argument("--em-stepsize", type=float, default=0.05, help="PD-SPN: online EM's")


def counts(data: Dataset) -> torch.Tensor:
    """Return the images as (N, 784) pixel counts 0-255 (the Binomial leaves' support)."""
    return (data.images.reshape(len(data), -1) * 255).round()


def build_ratspn(x: torch.Tensor, seed: int) -> torch.nn.Module:
    """Return the RAT-SPN with its leaves started from the data (see the module docstring)."""
    from spflow.meta.data.scope import Scope
    from spflow.modules.leaves import Binomial
    from spflow.zoo.rat import RatSPN

    # spflow draws the random region split from numpy's legacy global generator and the leaf
    # parameters from torch's: seed both, so a seed is one structure.
    np.random.seed(seed)  # noqa: NPY002
    torch.manual_seed(seed)
    d, k, r = x.shape[1], STRUCTURE["leaf_channels"], STRUCTURE["num_repetitions"]
    leaves = Binomial(
        scope=Scope(list(range(d))), out_channels=k, num_repetitions=r,
        total_count=torch.tensor(255.0),
    )  # fmt: skip
    picks = torch.randint(0, x.shape[0], (k * r,), generator=torch.Generator().manual_seed(seed))
    images = (x[picks] / 255).T.reshape(d, k, r)
    mean = (x.mean(0) / 255)[:, None, None]
    leaves.probs = (0.5 * images + 0.5 * mean).clamp(*LEAF_CLIP)
    return RatSPN(
        [leaves],
        n_root_nodes=1,
        n_region_nodes=STRUCTURE["n_region_nodes"],
        num_repetitions=r,
        depth=STRUCTURE["depth"],
        outer_product=True,
    )


def build_pdspn(seed: int) -> PDSPN:
    """Return the PD-SPN of ``PD_STRUCTURE`` over 28 x 28 images, started at random by ``seed``."""
    delta = PD_STRUCTURE["delta"]
    return PDSPN(
        28, 28, (delta[0], delta[1]), n_sums=PD_STRUCTURE["n_sums"],
        trials=PD_STRUCTURE["trials"], generator=torch.Generator().manual_seed(seed),
    )  # fmt: skip


def build(peer: str, x: torch.Tensor, seed: int) -> torch.nn.Module:
    """Return the untrained model of ``peer`` ("RAT-SPN" or "PD-SPN")."""
    return build_ratspn(x, seed) if peer == "RAT-SPN" else build_pdspn(seed)


def log_likelihood(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Return log p(x) per image, in batches."""
    score = model.log_prob if isinstance(model, PDSPN) else model.log_likelihood
    with torch.no_grad():
        return torch.cat([score(x[i : i + 500]).reshape(-1) for i in range(0, len(x), 500)])


def train(
    model: torch.nn.Module, x: torch.Tensor, args: argparse.Namespace, seed: int
) -> dict[str, Any]:
    """Train by Adam (RAT-SPN) or online EM (PD-SPN); return the run's record.

    The record holds the steps, the epochs' mean -log p(x), the seconds, and which bound
    (``--epochs`` or ``--max-minutes``) stopped it.
    """
    if isinstance(model, PDSPN):
        step = lambda batch: model.em_step(batch, args.em_stepsize)  # noqa: E731
    else:
        optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)

        def step(batch: torch.Tensor) -> float:
            optimizer.zero_grad(set_to_none=True)
            loss = -model.log_likelihood(batch).mean()
            loss.backward()
            optimizer.step()
            return loss.item()

    generator = torch.Generator().manual_seed(seed)
    deadline = time.perf_counter() + 60 * args.max_minutes
    start, steps, stopped_by, curve = time.perf_counter(), 0, "epochs", []
    for epoch in range(args.epochs):
        order = torch.randperm(x.shape[0], generator=generator)
        losses = []
        for i in range(0, x.shape[0] - BATCH + 1, BATCH):
            losses.append(step(x[order[i : i + BATCH]]))
            steps += 1
            if time.perf_counter() > deadline:
                stopped_by = "time"
                break
        curve.append({"epoch": epoch + 1, "mean_nll": float(np.mean(losses)), "steps": steps})
        print(f"epoch {epoch + 1}: mean -log p(x) {curve[-1]['mean_nll']:.1f} nats", flush=True)
        if stopped_by == "time":
            break
    seconds = time.perf_counter() - start
    return {"steps": steps, "stopped_by": stopped_by, "train_seconds": seconds, "curve": curve}


def cache_path(args: argparse.Namespace, peer: str, name: str, seed: int) -> Path:
    """Return the cache file of one trained model; its name holds the settings it used."""
    budget = f"e{args.epochs}-m{args.max_minutes:g}"
    if peer == "RAT-SPN":
        tag = "tiny" if args.tiny else f"{budget}-lr{args.lr:g}"
        return Path(args.runs) / "peers" / f"ratspn-{name}-{tag}-s{seed}.pt"
    tag = "tiny" if args.tiny else f"{budget}-em{args.em_stepsize:g}"
    return Path(args.runs) / "peers" / f"pdspn-{name}-{tag}-s{seed}.pt"


def trained(
    peer: str, x: torch.Tensor, args: argparse.Namespace, name: str, seed: int
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Return the trained model and its record: from the cache, or trained and cached now."""
    model = build(peer, x, seed)
    cache = cache_path(args, peer, name, seed)
    if cache.exists():  # a trained model of the same settings: only evaluate
        saved = torch.load(cache, weights_only=True)
        model.load_state_dict(saved["state"])
        return model, json.loads(saved["record"])
    record = train(model, x, args, seed)
    cache.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state": model.state_dict(), "record": json.dumps(record)}, cache)
    return model, record


def settings(args: argparse.Namespace) -> dict[str, Any]:
    """Return each peer's structure and budget, as peers.json records them."""
    budget = {"epochs": args.epochs, "max_minutes": args.max_minutes, "batch": BATCH}
    return {
        "RAT-SPN": {"structure": STRUCTURE, "training": "Adam", "lr": args.lr, **budget},
        "PD-SPN": {"structure": PD_STRUCTURE, "training": "online EM",
                   "em_stepsize": args.em_stepsize, **budget},
    }  # fmt: skip


def carried(out: Path, chosen: list[str]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Return the runs of the peers not ``chosen`` from ``out``/peers.json, and their origin.

    The origin holds those peers' settings and the date and command lines of the page that
    measured them.

    A peers.json written before PD-SPN existed holds RAT-SPN runs only, with its settings
    at the top level; it is read as such.
    """
    path = out / "peers.json"
    if not path.exists():
        return [], {"settings": {}, "provenance": []}
    old = json.loads(path.read_text())
    old_settings = old.get("settings") or {"RAT-SPN": {
        "structure": old["structure"], "training": "Adam", "lr": old["lr"],
        "epochs": old["epochs"], "max_minutes": old["max_minutes"], "batch": BATCH}}  # fmt: skip
    runs = [r for r in old["runs"] if r.get("peer", "RAT-SPN") not in chosen]
    if any(r.get("carried") for r in runs):  # carried before: keep where they came from
        provenance = old["carried_provenance"]
    else:  # measured by the call that wrote that page: its date and command lines
        page = out / "peers.md"
        lines = page.read_text().splitlines() if page.exists() else []
        # Only the page's own header: the dates and commands of the rows it carried itself
        # (its "Carried-over rows" section) belong to rows that this call replaces, and a
        # hand-written part (kept by write_results) is no provenance at all.
        header = itertools.takewhile(
            lambda ln: not ln.startswith(CARRIED_HEADING) and ln != HAND_WRITTEN, lines
        )
        provenance = [ln for ln in header if ln.startswith(("- date", "- command"))]
    runs = [{**r, "peer": r.get("peer", "RAT-SPN"), "carried": True} for r in runs]
    kept = {p: v for p, v in old_settings.items() if p not in chosen}
    return runs, {"settings": kept, "provenance": provenance if runs else []}


def peers(args: argparse.Namespace) -> dict[str, Any]:
    """Train (or load) and score each chosen peer per dataset and seed."""
    seeds = [int(s) for s in args.seeds.split(",")]
    chosen = [PEERS[p] for p in args.peers.split(",")]
    runs, kept = carried(Path(args.out), chosen)
    for name in args.datasets.split(","):
        limit = 30 if args.tiny else None
        folder = Path(args.data_dir) / name
        train_set = load_dataset(folder, classes=INLIERS, limit_per_class=limit)
        test = load_dataset(folder, split="test", limit_per_class=limit)
        x, x_test = counts(train_set), counts(test)
        inlier = torch.as_tensor(np.isin(test.labels.numpy(), INLIERS))
        for peer in chosen:
            for seed in seeds:
                model, record = trained(peer, x, args, name, seed)
                scores = log_likelihood(model, x_test)
                auc = roc_auc(scores[inlier], scores[~inlier])
                runs.append({"peer": peer, "dataset": name, "seed": seed, "auc": auc, **record,
                             "test_mean_log_p": float(scores.mean())})  # fmt: skip
                print(json.dumps({k: v for k, v in runs[-1].items() if k != "curve"}), flush=True)
    mine = {p: v for p, v in settings(args).items() if p in chosen}
    return {"settings": {**kept["settings"], **mine}, "runs": runs,
            "carried_provenance": kept["provenance"]}  # fmt: skip


def describe(peer: str, setting: dict[str, Any]) -> str:
    """Return the page's sentence on one peer's leaves, structure, training and budget."""
    budget = (f"at most {setting['epochs']} epochs or {setting['max_minutes']} min per model, "
              f"batch {setting['batch']}")  # fmt: skip
    if peer == "RAT-SPN":
        return ("**RAT-SPN**: SPFlow 1.1 `RatSPN`, Binomial leaves over 0-255 (p clipped to "
                f"{list(LEAF_CLIP)} at the start only), depth 4, R 10, K 10, outer product; "
                f"Adam {setting['lr']}; {budget}; leaves started from the data.")  # fmt: skip
    s = setting["structure"]
    return (
        "**PD-SPN**: our Poon-Domingos einsum network (`benchmarks/reproduce/pd_spn.py`), "
        f"cut step delta {s['delta']} (28/4 on both axes, EinsumNetworks' MNIST demo), "
        f"K {s['n_sums']}, Binomial({s['trials']}) leaves over 7 x 7 blocks, p kept in "
        f"[{s['prob_clamp']:g}, 1 - {s['prob_clamp']:g}]; random start; online EM, step "
        f"{setting['em_stepsize']} after every batch (EinsumNetworks' method); {budget}."
    )


def table_rows(result: dict[str, Any]) -> tuple[list[str], list[dict[str, Any]]]:
    """Return the page's table lines and the summary rows, one per peer and dataset."""
    lines, rows = [], []
    for peer in ("RAT-SPN", "PD-SPN"):
        runs = [r for r in result["runs"] if r["peer"] == peer]
        for name in dict.fromkeys(r["dataset"] for r in runs):
            mine = [r for r in runs if r["dataset"] == name]
            mean, sd = mean_sd([100 * r["auc"] for r in mine])
            published = PUBLISHED[peer].get(name)
            stops = ", ".join(sorted({r["stopped_by"] for r in mine}))
            steps = "/".join(sorted({str(r["steps"]) for r in mine}))
            minutes = "/".join(f"{r['train_seconds'] / 60:.1f}" for r in mine)
            spread = f" +- {sd:.1f}" if len(mine) > 1 else ""  # one seed has no spread to show
            origin = "carried over" if mine[0].get("carried") else "this call"
            lines.append(f"| {peer} | {name} | {mean:.1f}{spread} | {len(mine)} | {steps} | "
                         f"{minutes} | {stops} | {origin} | {published} |")  # fmt: skip
            rows.append({"table": "II", "dataset": name, "model": SUMMARY_MODEL[peer],
                         "protocol": "paper", "metric": "outlier AUC %", "mean": mean, "sd": sd,
                         "n_seeds": len(mine), "steps": mine[0]["steps"], "paper_mean": published,
                         "paper_sd": None})  # fmt: skip
    return lines, rows


def write_peers(result: dict[str, Any], out: Path, command: str, wall: float) -> None:
    """Write peers.md/json and Table II's rows of summary.json."""
    table, rows = table_rows(result)
    notes = [describe(p, s) for p, s in result["settings"].items()]
    lines = ["# Table II peers, re-run here", "", *header_lines(command, wall), "",
             *[f"- {n}" for n in notes], "",
             "Test log p(x), classes 1-9 (inliers) against class 0 (outliers). *stopped by*: "
             "which bound ended training (`epochs` or `time`). *origin*: trained or loaded from "
             "the cache by this call, or carried over from the `peers.json` it found (not "
             "rerun).", "",
             *([CARRIED_HEADING, "",
                *result["carried_provenance"], ""] if result["carried_provenance"] else []),
             "| peer | dataset | AUC % here (mean +- sd) | seeds | steps | train min per seed | "
             "stopped by | origin | published AUC % |",
             "|---|---|---:|---:|---:|---:|---|---|---:|", *table]  # fmt: skip
    write_results(out, "peers", lines, result)
    update_summary(out, "II", rows)


def run(args: argparse.Namespace, command: str) -> None:
    """Run the peers and write their results."""
    start = time.perf_counter()
    if args.tiny:
        args.epochs, args.max_minutes = 1, 0.2
    result = peers(args)
    write_peers(result, Path(args.out), command, time.perf_counter() - start)
