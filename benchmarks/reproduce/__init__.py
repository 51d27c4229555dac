"""Reproduce the 2022 paper's tables on the real data; results go to docs/results/*.md.

    python -m benchmarks.reproduce TABLE [--data-dir ../shared/data] [--tiny] [options]

TABLE is one of:

* ``table1``  outlier AUC, train on classes 1-9, class 0 of the test set as outliers, presets
  A-G, top layer (Table I), with the published peers of Table II beside it, plus the top
  layer's clustering indices and outlier maps;
* ``table3``  sample quality of class-conditional generation (Table III);
* ``table4``  classification with a classifier layer on preset B (Table IV);
* ``flatgmm`` preset A (K=49) and K=100 trained by our SGD vs scikit-learn's EM;
* ``vae``     DLGMM, DLDPMM and Gauss-VAE on binarised MNIST (issue 6's baselines);
* ``nsn``     the Normal Similarity Network on MNIST and Fashion-MNIST;
* ``nsn-faces`` the 5-layer NSN on the Olivetti faces (optionally ZCA-whitened);
* ``baselines`` DCGMM beside NSN and the VAEs: outlier AUC and in-painting MSE;
* ``paper2021`` the 2021 paper: clustering, sampling and top-S diversity per instance;
* ``peers``   Table II's RAT-SPN (SPFlow; needs the ``bench`` extra) and PD-SPN (ours) re-run;
* ``all``     every one of them, in that order (``make reproduce``).

Trained models are cached under ``--runs`` (default ``runs/reproduce``): a second call only
evaluates. ``--threads N`` sets torch's threads (default: at most the usable CPUs); jobs run side
by side must take one each (``--threads 1``), or OpenMP threads that outnumber the cores wait
for each other (``dcgmm._threads``). ``--tiny`` runs a few steps on a few hundred images: a
smoke run for the tests.
"""

import argparse
from collections.abc import Callable
from types import ModuleType

from benchmarks.reproduce import (
    baselines,
    flat_gmm,
    nsn,
    nsn_faces,
    paper2021,
    peers,
    table1,
    table3,
    table4,
    vae,
)
from benchmarks.reproduce.common import DEFAULT_DATA, DEFAULT_OUT, DEFAULT_RUNS
from dcgmm._threads import apply_threads

TABLES: dict[str, ModuleType] = {
    "table1": table1,
    "table3": table3,
    "table4": table4,
    "flatgmm": flat_gmm,
    "vae": vae,
    "nsn": nsn,
    "nsn-faces": nsn_faces,
    "baselines": baselines,
    "paper2021": paper2021,
    "peers": peers,
}


def build_parser() -> argparse.ArgumentParser:
    """Return the parser: one subcommand per table, common options on each."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.reproduce", description=__doc__)
    sub = parser.add_subparsers(dest="table", required=True)
    for name, module in [*TABLES.items(), ("all", None)]:
        p = sub.add_parser(name, help=(module.__doc__ or "every table").splitlines()[0])
        p.add_argument("--data-dir", default=str(DEFAULT_DATA))
        p.add_argument("--datasets", default="mnist,fashion-mnist")
        p.add_argument("--runs", default=str(DEFAULT_RUNS), help="cache of trained models")
        p.add_argument("--out", default=str(DEFAULT_OUT), help="where the .md/.json go")
        p.add_argument("--tiny", action="store_true", help="seconds: a smoke run for tests")
        p.add_argument("--threads", type=int, help="torch threads (1 for jobs side by side)")
        if module is not None:
            module.add_arguments(p)
    return parser


def main(argv: list[str]) -> None:
    """Run the chosen table(s) with the given options."""
    args = build_parser().parse_args(argv)
    apply_threads(args.threads)
    command = "python -m benchmarks.reproduce " + " ".join(argv)
    if args.table != "all":
        TABLES[args.table].run(args, command)
        return
    for name, module in TABLES.items():
        defaults = build_parser().parse_args([name, *argv[1:]])
        run: Callable[[argparse.Namespace, str], None] = module.run
        run(defaults, command.replace(" all", f" {name}", 1))
