"""The ``dcgmm`` command line: eval, info, env, the parser and ``main``.

The other commands live beside it: ``cli_training`` (train, demo), ``cli_generation``
(sample, inpaint, ...), ``cli_evaluation`` (outliers, plot), ``cli_baselines``.
"""

import argparse
import importlib.metadata
import json
import logging
import os
import platform
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from dcgmm._allocator import retain_freed_memory
from dcgmm._threads import apply_threads
from dcgmm._version import __version__
from dcgmm.baselines.runs import describe, is_baseline_run
from dcgmm.cli.common import (
    CLIError,
    Parser,
    changed_options,
    load_data,
    refuse_untaken,
    run_data,
)
from dcgmm.cli.evaluation import add_evaluation_commands
from dcgmm.cli.generation import add_generation_commands
from dcgmm.cli.train import add_training_commands
from dcgmm.cost import format_cost, measure_machine
from dcgmm.exceptions import SpecError
from dcgmm.interfaces.runs import load_run
from dcgmm.io.run_files import CONFIG_FILE, read_config
from dcgmm.model import DCGMM
from dcgmm.training.checkpoint import load_model, load_trainer_state
from dcgmm.training.watchdog import NumericalError

__all__ = [
    "EVAL_FLAGS",
    "OPTIONAL_PACKAGES",
    "THREAD_VARIABLES",
    "build_parser",
    "cmd_env",
    "cmd_eval",
    "cmd_info",
    "main",
]

logger = logging.getLogger("dcgmm")


# Which option of the run's model each `eval` flag feeds (refuse_untaken).
EVAL_FLAGS = {"clustering": ("evaluate", "clustering"), "is_samples": ("evaluate", "n_samples"),
              "device": ("to", "device")}  # fmt: skip


def cmd_eval(args: argparse.Namespace) -> int:
    """Print a trained model's own scores on a data split (any run: a DCGMM's or a baseline's)."""
    run = load_run(args.run_dir, map_location=args.device)
    always = {"run_dir", "data", "split", "classes", "limit_per_class", "limit", "json"}
    refuse_untaken(args, run, EVAL_FLAGS, always)
    data = run_data(run.path, run.config, args.data)
    classes = args.classes if args.classes is not None else data.get("classes")
    dataset = load_data(
        data["source"], args.split, classes, args.limit_per_class, args.limit,
        resize=data.get("resize"),
    )  # fmt: skip
    options: dict[str, Any] = {}
    if "clustering" in run.accepts("evaluate") and args.clustering:
        options["clustering"] = args.clustering
    if "n_samples" in run.accepts("evaluate"):
        options["n_samples"] = args.is_samples
    try:
        result = run.evaluate(run.prepare(dataset.images), dataset.labels, **options)
    except ValueError as err:
        raise CLIError(str(err)) from None
    if args.json:
        print(json.dumps(result.to_dict()))
    else:
        print(f"{run.name} on {dataset.name} ({args.split}, {len(dataset)} samples)")
        print(result)
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    """Print the shape chain and parameter counts of a spec, preset or run directory."""
    target = Path(args.target)
    if (target / CONFIG_FILE).exists() and is_baseline_run(target):
        if args.cost or args.measure:
            raise CLIError("--cost and --measure describe a DCGMM; this run is a baseline")
        config = read_config(target)
        print(f"{target}: a {config['model']} run (a baseline): {describe(config)}")
        print(f"  data: {json.dumps(config.get('data'))}; fit: {json.dumps(config.get('fit'))}")
        return 0
    if (target / CONFIG_FILE).exists():
        model = load_model(target)
        print(model)
        state = load_trainer_state(target)
        print(f"  trained: step {state['step']} of {state['n_steps']}, seed {state['seed']}")
        em = read_config(target).get("train", {}).get("solver") == "em"
        for idx, sched in state["schedules"].items():
            rate = "stepwise EM" if em else f"lr {sched['lr']:.4g}"
            print(
                f"  layer {int(idx) + 1}: {rate}, sigma_som {sched['sigma']:.4g}, "
                f"{sched['n_reductions']} reductions"
            )
        for r in state.get("rollbacks", []):
            print(
                f"  rolled back at step {r['step']} to step {r['checkpoint_step']}: non-finite "
                f"{r['what']} in layer {r['layer']} ({r['spec']}), cause: {r['cause']}"
            )
    else:
        try:
            shape = tuple(int(s) for s in args.input_shape.split(","))
        except ValueError:
            raise CLIError(
                f"--input-shape must be H,W,C, e.g. 28,28,1; got {args.input_shape!r}"
            ) from None
        try:
            model = DCGMM.from_spec(args.target, shape)
        except SpecError:
            if "(" in args.target and not target.exists():
                raise  # a spec string with a mistake: the parser's message points at it
            missing = "has no config.json" if target.is_dir() else "does not exist"
            raise CLIError(
                f"{args.target} is not a run directory ({missing}) and not a spec string or "
                "preset; pass a folder made by `dcgmm train --out`, a preset A-G or a spec "
                "like F(3,1)-G(25)"
            ) from None
        print(model)
    if args.cost or args.measure:
        peaks = measure_machine(args.device) if args.measure else None
        print(format_cost(model, args.batch_size, peaks))
    return 0


# Optional packages whose versions matter in bug reports (distribution names).
OPTIONAL_PACKAGES = ("tensorboard", "scikit-learn")
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def _installed_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def cmd_env(args: argparse.Namespace) -> int:
    """Print versions, device and thread settings for bug reports."""
    import numpy

    cuda = torch.cuda.is_available()
    print(f"dcgmm {__version__}")
    print(f"python {platform.python_version()} ({platform.platform()})")
    print(
        f"torch {torch.__version__}, numpy {numpy.__version__}, safetensors "
        f"{_installed_version('safetensors')}, matplotlib {_installed_version('matplotlib')}"
    )
    print("optional: " + ", ".join(f"{n} {_installed_version(n)}" for n in OPTIONAL_PACKAGES))
    print(
        f"threads: torch {torch.get_num_threads()} intra-op, {torch.get_num_interop_threads()}"
        " inter-op; " + ", ".join(f"{v}={os.environ.get(v, 'unset')}" for v in THREAD_VARIABLES)
    )
    print(f"cpu: {os.cpu_count()} logical cores, {platform.processor() or platform.machine()}")
    print(f"cuda: {torch.cuda.get_device_name(0) if cuda else 'not available'}")
    return 0


def _add_eval_and_info(sub: Any) -> None:
    """Add ``eval`` and ``info`` to the CLI's subparsers."""
    ev = sub.add_parser("eval", help="per-layer scores of a trained model")
    ev.add_argument("run_dir")
    ev.add_argument("--data", help="data source (default: the run's)")
    ev.add_argument("--split", default="test", choices=("train", "test"))
    ev.add_argument("--classes")
    ev.add_argument("--limit-per-class", type=int, help="first N samples of every class")
    ev.add_argument("--limit", type=int, help="then the first N samples (file order)")
    ev.add_argument("--json", action="store_true", help="print one JSON object")
    ev.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    ev.add_argument(
        "--clustering",
        type=int,
        nargs="?",
        const=2000,
        metavar="N",
        help="also the top layer's Dunn index and Davies-Bouldin score on the first N samples "
        "(default 2000; the Dunn index costs N^2 distances)",
    )
    ev.add_argument(
        "--is-samples", type=int, default=50, help="VAE baselines: importance samples per image"
    )
    ev.set_defaults(func=cmd_eval)

    info = sub.add_parser("info", help="shape chain and parameter counts")
    info.add_argument("target", help="spec string, preset name or run directory")
    info.add_argument("--input-shape", default="28,28,1", help="H,W,C for a spec")
    info.add_argument(
        "--cost", action="store_true", help="flops and bytes of training, evaluation, sampling"
    )
    info.add_argument("--batch-size", type=int, default=100, help="batch size for --cost")
    info.add_argument(
        "--measure", action="store_true", help="also measure this machine's peaks and floors"
    )
    info.add_argument("--device", default="cpu", help="device for --measure")
    info.set_defaults(func=cmd_info)


def build_parser() -> Parser:
    """Return the argument parser with all subcommands."""
    parser = Parser(
        prog="dcgmm",
        description="Deep convolutional Gaussian mixture models: train, evaluate, sample, "
        "in-paint, detect outliers; baselines NSN, DLGMM, DLDPMM, Gauss-VAE.",
    )
    parser.add_argument("--version", action="version", version=f"dcgmm {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument(
        "--threads",
        type=int,
        help="torch threads (default: OMP_NUM_THREADS, else the CPUs this process may use); "
        "give jobs that run side by side 1 each, e.g. dcgmm --threads 1 train ...",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    add_training_commands(sub)  # train, demo

    _add_eval_and_info(sub)
    add_generation_commands(sub)
    add_evaluation_commands(sub)

    env = sub.add_parser("env", help="versions and devices, for bug reports")
    env.set_defaults(func=cmd_env)
    parser.commands = sub.choices
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; errors print one line ``dcgmm COMMAND: error: ...`` and return status 2.

    User errors (bad flags, data, specs, checkpoints: the ``ValueError`` family) and failed
    writes (``OSError``: read-only folder, full disk) are reported without a traceback; pass
    ``-v`` to see it as well. Unknown flags exit with status 2 through argparse. A training run
    stopped by the numerical watchdog returns status 1 (its checkpoints are intact).
    """
    retain_freed_memory()  # see dcgmm._allocator: no page faults on every batch's temporaries
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        parser.commands.get(getattr(args, "command", ""), parser).reject_unknown(unknown)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    # Warnings for people at a terminal: the kind and the message, not our source line.
    warnings.formatwarning = lambda message, category, *_args, **_kw: (
        f"WARNING {category.__name__}: {message}\n"
    )
    command_parser = parser.commands.get(getattr(args, "command", ""))
    if command_parser is not None:
        args.given_options = changed_options(args, command_parser)
    try:
        threads = apply_threads(args.threads)
        logger.debug("torch threads: %d", threads)
        return int(args.func(args))
    except (CLIError, ValueError, OSError) as err:
        logger.debug("traceback of the error below", exc_info=True)  # shown with -v
        print(f"dcgmm {args.command}: error: {err}", file=sys.stderr)
        return 2
    except NumericalError as err:  # the watchdog stopped training; checkpoints are intact
        print(f"dcgmm {args.command}: stopped: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
