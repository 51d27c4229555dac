"""Which options ``dcgmm train`` takes, and what each kind of model does with them.

One flag per :class:`~dcgmm.training.config.TrainConfig` field (generated from the dataclass, so
a new field is a new flag), merged with ``--config FILE``; the flags each model kind uses
(DCGMM, VAE, NSN) and the ones a resumed run may change. A flag given where it would do
nothing is refused in one line naming those that act: none is accepted and ignored.
"""

import argparse
import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any

from dcgmm.baselines.runs import BASELINES
from dcgmm.cli.common import CLIError, flag_name
from dcgmm.exceptions import CheckpointError
from dcgmm.io.run_files import CONFIG_FILE
from dcgmm.training.config import TrainConfig, preset_config

__all__ = [
    "DATA_FLAGS",
    "FLAGS_BY_KIND",
    "FLAG_ALIASES",
    "FLAG_HELP",
    "RESUME_FLAGS",
    "TRAIN_FIELDS",
    "add_train_config_flags",
    "config_file_hint",
    "given_flags",
    "model_kind",
    "refuse_unused_flags",
    "resume_config",
    "train_config_from_args",
]

# Flags whose meaning the field name does not carry; other fields just show their default.
FLAG_HELP = {
    "checkpoint_every": "steps between checkpoints (one is also written at the start and end)",
    "until_annealed": "stop once every GMM layer's sigma_som is at its floor and its objective "
    "has stopped rising (--steps/--epochs are then the upper bound)",
    "classifier_delay": "start of the classifier layer as a fraction of the run (with "
    "--freeze-gmm-at, the same value trains the GMM layers first, then the classifier alone)",
    "freeze_gmm_at": "fraction of the run after which the GMM layers stop learning and the "
    "classifier layer trains on alone, over fixed features (needs a C(...) layer)",
    "annealed_patience": "annealing windows in a row a layer must be stationary at its floor "
    "for --until-annealed",
    "layer_delays": "start of each GMM layer as a fraction of the run, bottom first (default: "
    "--layer-delay times the layer's rank)",
    "on_nonfinite": "what a NaN/Inf in a layer's objective or parameters does: stop, naming "
    "layer and step, or roll back to the last checkpoint, scale that layer's learning rates by "
    "--rollback-lr-factor, skip the batch and go on (at most --max-rollbacks times)",
    "solver": "how GMM layers learn: sgd (the papers') or em (stepwise EM towards the same "
    "objective's statistics; no learning rates, the radius shrinks every window)",
    "em_step_exponent": "--solver em: step size (t+2)^-alpha of a layer's t-th step, alpha in "
    "(0.5, 1]",
    "data_shards": "cut the data into this many blocks, each shuffled on its own, a batch taking "
    "an equal share of each; under torchrun it is the number of processes (set by itself), each "
    "holding only its block, and one process with the same value sees the same batches",
}
FLAG_ALIASES = {"on_nonfinite": ["--on-nan"]}


def _float_list(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers such as 0,0.1,0.2; got {text!r}"
        ) from None


def _field_kwargs(field: dataclasses.Field[Any]) -> dict[str, Any]:
    hint = typing.get_type_hints(TrainConfig)[field.name]
    if hint is bool:  # a switch: --until-annealed, not --until-annealed True
        return {"action": "store_true"}
    origins = [typing.get_origin(arg) for arg in typing.get_args(hint)]
    if isinstance(hint, types.UnionType) and tuple in origins:
        # a list of numbers: --layer-delays 0,0.1,0.15,0.2
        return {"type": _float_list, "metavar": "F,F,..."}
    if isinstance(hint, types.UnionType):
        return {"type": next(a for a in typing.get_args(hint) if a is not type(None))}
    if typing.get_origin(hint) is typing.Literal:
        return {"choices": typing.get_args(hint)}
    return {"type": hint}


def add_train_config_flags(parser: argparse.ArgumentParser) -> None:
    """Add one flag per TrainConfig field; flags not given stay out of the namespace."""
    group = parser.add_argument_group("training hyper-parameters (defaults: the spec's)")
    for field in dataclasses.fields(TrainConfig):
        flag = "--" + field.name.replace("_", "-")
        default = f"default {field.default}"
        group.add_argument(
            flag,
            *FLAG_ALIASES.get(field.name, []),
            dest=field.name,
            default=argparse.SUPPRESS,
            help=f"{FLAG_HELP[field.name]} ({default})" if field.name in FLAG_HELP else default,
            **_field_kwargs(field),
        )


def train_config_from_args(args: argparse.Namespace, preset: str | None) -> TrainConfig:
    """Merge ``--config run.json`` (first) and explicit flags (override) into a TrainConfig."""
    values: dict[str, Any] = {}
    if getattr(args, "config", None):
        try:
            loaded = json.loads(Path(args.config).read_text())
        except (OSError, ValueError) as err:  # missing, unreadable or not JSON
            raise CLIError(
                f"cannot read --config {args.config} ({err}); expected a JSON object of "
                'training options, e.g. {"epochs": 25, "batch_size": 100}'
            ) from None
        if isinstance(loaded, dict) and isinstance(loaded.get("train"), dict):
            loaded = loaded["train"]  # a run's config.json
        if not isinstance(loaded, dict):
            raise CLIError(
                f"--config {args.config} holds a JSON {type(loaded).__name__}; expected an "
                'object of training options, e.g. {"epochs": 25}'
            )
        values.update(loaded)
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    explicit = {k for k in vars(args) if k in names}
    values.update({k: getattr(args, k) for k in explicit})
    unknown = set(values) - names
    if unknown:
        raise CLIError(f"unknown training options {sorted(unknown)}; known: {sorted(names)}")
    explicit |= set(values)
    if "epochs" not in values and "steps" not in values:
        raise CLIError("give --epochs E or --steps S (the recipes train 25-80 epochs)")
    try:
        return preset_config(preset, TrainConfig(**values), explicit)
    except ValueError as err:
        raise CLIError(str(err)) from None


# What each kind of model does with `dcgmm train`'s flags, besides the data flags every kind
# takes. A flag given for a kind that does not use it is refused: none is accepted and ignored.
DATA_FLAGS = {"model", "data", "classes", "limit_per_class", "limit", "resize", "out", "resume"}
TRAIN_FIELDS = {f.name for f in dataclasses.fields(TrainConfig)}
FLAGS_BY_KIND = {
    "DCGMM": TRAIN_FIELDS
    | {"objective", "stop_at", "config", "tensorboard", "tensorboard_image_every", "max_minutes"},
    "VAE": {"epochs", "batch_size", "seed", "max_minutes", "binarize"},
    "NSN": {"seed", "steps", "taus", "nsn_images", "max_minutes"},
}


def model_kind(model: str | None) -> str:
    """Return ``"NSN"``, ``"VAE"`` or ``"DCGMM"`` for a ``--model`` value."""
    if model == "nsn":
        return "NSN"
    return "VAE" if model in BASELINES else "DCGMM"


def given_flags(args: argparse.Namespace) -> set[str]:
    """Return the train options set on the command line (flags not given are None or False)."""
    # verbose and threads are every command's; given_options is set by dcgmm.cli.main.main
    not_options = ("func", "command", "verbose", "threads", "given_options")
    return {
        k
        for k, v in vars(args).items()
        if k not in not_options and v is not None and v is not False
    }


def refuse_unused_flags(args: argparse.Namespace, kind: str) -> None:
    """Raise a one-line :class:`CLIError` naming any flag that ``kind`` would ignore."""
    unused = sorted(given_flags(args) - DATA_FLAGS - FLAGS_BY_KIND[kind])
    if unused:
        flags = ", ".join(flag_name(f) for f in unused)
        takes = ", ".join(flag_name(f) for f in sorted(FLAGS_BY_KIND[kind]))
        name = args.model if kind != "DCGMM" else "a DCGMM"
        raise CLIError(f"{flags} {'does' if len(unused) == 1 else 'do'} not apply to {name}; "
                       f"it takes {takes}")  # fmt: skip


def config_file_hint(path: str | None) -> str:
    """Say so if a ``--config`` file names the model, data or output (it holds options only)."""
    if path is None:
        return ""
    try:
        loaded = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return ""  # train_config_from_args reports an unreadable file
    keys = sorted({"model", "data", "out"} & set(loaded if isinstance(loaded, dict) else {}))
    if not keys:
        return ""
    return (
        f"; --config {path} sets {', '.join(keys)}, but a config file holds training options "
        "only (TrainConfig's fields): give the model, data and output as flags"
    )


# What `--resume` may change: the budget (extending the run), when to stop, where to run.
RESUME_FLAGS = {"resume", "steps", "stop_at", "max_minutes", "device"}


def resume_config(args: argparse.Namespace, run_dir: Path, config: dict[str, Any]) -> TrainConfig:
    """Return the training options of a resumed run: its own, with ``--steps``/``--device``.

    Any other training flag is refused: a resumed run continues with the options it was
    started with, so a changed one would be silently dropped.
    """
    if config.get("kind") == "baseline":
        raise CLIError(
            f"{run_dir} is a {config.get('model')} run (a baseline): baselines train in one go "
            "and cannot be resumed; train a new one with --out"
        )
    refused = sorted(given_flags(args) - RESUME_FLAGS)
    if refused:
        flags = ", ".join(flag_name(f) for f in refused)
        raise CLIError(
            f"{flags} cannot change when resuming: {run_dir} continues with the options in its "
            f"{CONFIG_FILE}. --resume takes --steps N (to extend the run), --stop-at, "
            "--max-minutes and --device; start a new run with --out to change others"
        )
    try:
        train_cfg = TrainConfig(**config["train"])
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(
            f"{run_dir / CONFIG_FILE} has no usable training options ({err!r}); the file is "
            "corrupted. Start a new run with --out"
        ) from None
    if getattr(args, "device", None) is not None:
        train_cfg = dataclasses.replace(train_cfg, device=args.device)
    if getattr(args, "steps", None) is not None:
        train_cfg = dataclasses.replace(train_cfg, steps=args.steps, epochs=None)
    return train_cfg
