"""``dcgmm train`` (DCGMM and baselines, resume, TensorBoard) and ``dcgmm demo``."""

import argparse
import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm  # type: ignore[import-untyped]

from dcgmm._validation import check_device
from dcgmm.baselines.runs import BASELINES
from dcgmm.cli.baselines import train_baseline
from dcgmm.cli.common import (
    CLIError,
    check_writable,
    load_data,
    parse_size,
    remove_if_empty,
    run_data,
)
from dcgmm.cli.train_flags import (
    add_train_config_flags,
    config_file_hint,
    model_kind,
    refuse_unused_flags,
    resume_config,
    train_config_from_args,
)
from dcgmm.evaluation.scores import format_scores
from dcgmm.interfaces.demo import DEMO_EPOCHS, run_demo
from dcgmm.io.data import load_dataset
from dcgmm.io.run_files import CONFIG_FILE, read_config
from dcgmm.layers.gmm import Objective
from dcgmm.model import DCGMM
from dcgmm.spec import PRESETS, preset_of
from dcgmm.training.checkpoint import load_model, load_trainer_state
from dcgmm.training.config import TrainConfig
from dcgmm.training.distributed import DistContext, init_from_env, shutdown
from dcgmm.training.metrics import TrainingMetrics
from dcgmm.training.monitoring import INSTALL_HINT, TensorBoardMonitor, summary_writer_class
from dcgmm.training.trainer import Trainer

__all__ = ["add_training_commands", "cmd_demo", "cmd_train"]

logger = logging.getLogger("dcgmm")


def _progress(total: int, initial: int, *, show: bool = True) -> tuple[Any, Any]:
    disable = None if show else True  # None: tqdm hides itself when not on a terminal
    bar = tqdm(total=total, initial=initial, unit="step", disable=disable, dynamic_ncols=True)

    def callback(step: int, n_steps: int, record: TrainingMetrics | None) -> None:
        bar.update(step - bar.n)
        if record is not None:
            parts = [
                f"{layer.spec}:{value:.1f}"
                for layer in record.layers
                if (value := layer.value) is not None
            ]
            bar.set_postfix_str(" ".join(parts))
            logger.debug("metrics %s", record)

    return bar, callback


def cmd_train(args: argparse.Namespace) -> int:
    """Train a model (or resume a run); under ``torchrun`` every process runs this."""
    if not args.resume:
        refuse_unused_flags(args, model_kind(args.model))
    if args.model in BASELINES and not args.resume:
        return train_baseline(args)
    if getattr(args, "tensorboard", False):  # checked before anything is written
        try:
            summary_writer_class()
        except ImportError as err:
            raise CLIError(str(err)) from None
        every = args.tensorboard_image_every
        if every is not None and every <= 0:
            raise CLIError(f"--tensorboard-image-every must be a positive step count; got {every}")
    if args.resume:
        run_dir = Path(args.resume)
        train_cfg = resume_config(args, run_dir, read_config(run_dir))
    else:
        if args.model is None or args.data is None or args.out is None:
            missing = [f"--{k}" for k in ("model", "data", "out") if getattr(args, k) is None]
            hint = config_file_hint(getattr(args, "config", None))
            raise CLIError(f"train needs {', '.join(missing)} (or --resume RUN_DIR){hint}")
        run_dir = Path(args.out)
        if (run_dir / CONFIG_FILE).exists():
            raise CLIError(
                f"{run_dir} already holds a run; continue it with --resume {run_dir} or "
                "choose another --out"
            )
        preset = preset_of(args.model) if args.model else None
        train_cfg = train_config_from_args(args, preset)
    try:  # before anything is written: no empty run folder
        check_device(train_cfg.device, "--device")
    except ValueError as err:
        raise CLIError(str(err)) from None
    ctx, device = init_from_env(train_cfg.device)
    created = not args.resume and not run_dir.exists()  # a folder of ours, not the user's
    try:
        return _train(args, run_dir, train_cfg, ctx, device)
    except BaseException:
        if created and ctx.is_main:
            remove_if_empty(run_dir)  # a failed start (bad data, bad spec) leaves no folder
        raise
    finally:
        shutdown()


def _train(
    args: argparse.Namespace,
    run_dir: Path,
    train_cfg: TrainConfig,
    ctx: DistContext,
    device: str,
) -> int:
    if ctx.active and not args.resume and train_cfg.data_shards == 1:
        # Each process holds only its block of the data; one process with --data-shards W
        # sees the same batches.
        train_cfg = dataclasses.replace(train_cfg, data_shards=ctx.world_size)
    run_cfg = dataclasses.replace(train_cfg, device=device)  # cuda:LOCAL_RANK under torchrun
    if not ctx.is_main:
        logger.setLevel(logging.WARNING)  # one voice per job: rank 0 reports
    if ctx.is_main:
        check_writable(run_dir)  # before any data is read: a bad --out fails in a second
    if args.resume:
        trainer = _resumed_trainer(args, run_dir, run_cfg, ctx)
        if trainer is None:
            return 0
    else:
        trainer = _new_trainer(args, run_dir, run_cfg, train_cfg, ctx)
    if ctx.active:
        logger.info("data-parallel job: %d processes, rank 0 on %s", ctx.world_size, device)
    stored = read_config(run_dir).get("tensorboard") if args.resume else None
    _run_and_report(args, trainer, _tensorboard_settings(args, train_cfg, stored), ctx)
    return 0


def _this_block(config: TrainConfig, ctx: DistContext) -> tuple[int, int] | None:
    """Return ``(rank, data_shards)`` when this process holds one block of the data."""
    return (ctx.rank, config.data_shards) if ctx.active and config.data_shards > 1 else None


def _resumed_trainer(
    args: argparse.Namespace, run_dir: Path, run_cfg: TrainConfig, ctx: DistContext
) -> Trainer | None:
    """Return the trainer of ``--resume`` at the run's step, or None if nothing is left."""
    data = run_data(run_dir, read_config(run_dir))
    dataset = load_data(
        data["source"], "train", data.get("classes"), data.get("limit_per_class"),
        data.get("limit"), compact=True, resize=data.get("resize"),
        shard=_this_block(run_cfg, ctx),
    )  # fmt: skip
    model = load_model(run_dir)
    try:
        trainer = Trainer(model, run_cfg, dataset.images, dataset.labels, run_dir=run_dir, dist=ctx)
        before = load_trainer_state(run_dir)["n_steps"]
        steps = getattr(args, "steps", None)
        if steps is not None and steps < before:
            raise ValueError(
                f"--steps {steps} is fewer than the {before} steps of {run_dir}; a run "
                "can be extended, not shortened (stop early with --stop-at)"
            )
        trainer.resume(extend=steps is not None)
    except ValueError as err:
        raise CLIError(str(err)) from None
    if trainer.n_steps > before:
        logger.info("extending %s from %d to %d steps", run_dir, before, trainer.n_steps)
    if trainer.step >= trainer.n_steps:
        logger.info(
            "%s already finished its %d steps; nothing to train. Extend it with "
            "dcgmm train --resume %s --steps N (N > %d)",
            run_dir, trainer.n_steps, run_dir, trainer.n_steps,
        )  # fmt: skip
        return None
    logger.info("resuming %s at step %d of %d", run_dir, trainer.step, trainer.n_steps)
    return trainer


def _new_trainer(
    args: argparse.Namespace,
    run_dir: Path,
    run_cfg: TrainConfig,
    train_cfg: TrainConfig,
    ctx: DistContext,
) -> Trainer:
    """Return the trainer of a new run; its ``config.json`` records the data's source."""
    dataset = load_data(
        args.data, "train", args.classes, args.limit_per_class, args.limit, compact=True,
        resize=args.resize, shard=_this_block(run_cfg, ctx),
    )  # uint8 pixels stay uint8: the trainer converts each batch  # fmt: skip
    objective: Objective = getattr(args, "objective", None) or "annealed"
    generator = torch.Generator().manual_seed(train_cfg.seed)
    model = DCGMM.from_spec(
        args.model, dataset.image_shape, objective=objective, generator=generator
    )
    info = {
        "preset": preset_of(args.model),
        "data": {
            "source": args.data,
            "classes": args.classes,
            "limit_per_class": args.limit_per_class,
            "limit": args.limit,
            "resize": list(args.resize) if args.resize else None,
            "n_samples": len(dataset) * (run_cfg.data_shards if ctx.active else 1),
        },
        "tensorboard": _tensorboard_settings(args, train_cfg, None),
    }
    try:  # validates data against model and config before anything is written
        trainer = Trainer(
            model, run_cfg, dataset.images, dataset.labels, run_dir=run_dir, run_info=info,
            dist=ctx,
        )  # fmt: skip
    except ValueError as err:
        raise CLIError(str(err)) from None
    ctx.barrier()
    logger.info("%s", model)
    logger.info("resolved training config: %s", json.dumps(train_cfg.to_dict()))
    return trainer


def _run_and_report(
    args: argparse.Namespace,
    trainer: Trainer,
    settings: dict[str, Any] | None,
    ctx: DistContext,
) -> None:
    """Run ``trainer`` with a progress bar (and TensorBoard); say how and why it stopped."""
    run_dir = trainer.run_dir
    assert run_dir is not None
    bar, callback = _progress(trainer.n_steps, trainer.step, show=ctx.is_main)
    monitor = None
    if settings is not None and ctx.is_main:
        try:
            monitor = TensorBoardMonitor(
                run_dir, trainer.model, start_step=trainer.step, seed=trainer.config.seed,
                **settings,
            )  # fmt: skip
        except ImportError as err:  # a resumed run whose config asks for TensorBoard
            raise CLIError(str(err)) from None
        logger.info("TensorBoard events: tensorboard --logdir %s", monitor.log_dir)

    def progress_and_monitor(step: int, n_steps: int, record: TrainingMetrics | None) -> None:
        callback(step, n_steps, record)
        if monitor is not None:
            monitor(step, n_steps, record)

    start, first_step = time.perf_counter(), trainer.step
    max_minutes = getattr(args, "max_minutes", None)
    try:
        with bar:
            trainer.run(
                callback=progress_and_monitor,
                stop_at=args.stop_at,
                max_seconds=None if max_minutes is None else 60 * max_minutes,
            )
    finally:
        if monitor is not None:
            monitor.close()
    if ctx.is_main:
        _report_stop(trainer, first_step, time.perf_counter() - start, run_dir)


def _report_stop(trainer: Trainer, first_step: int, seconds: float, run_dir: Path) -> None:
    """Log where the run stopped and why."""
    if trainer.stopped_by == "annealed":
        logger.info(
            "stopped at step %d of %d: every GMM layer is annealed (sigma_som at its floor, "
            "its objective stationary for %d windows); trained %d steps in %.1f s; run "
            "directory %s",
            trainer.step, trainer.n_steps, trainer.config.annealed_patience,
            trainer.step - first_step, seconds, run_dir,
        )  # fmt: skip
    elif trainer.step < trainer.n_steps:
        why = "--stop-at" if trainer.stopped_by == "stop_at" else "--max-minutes"
        logger.info(
            "stopped at step %d of %d (%s) after %d steps in %.1f s; continue with "
            "dcgmm train --resume %s",
            trainer.step, trainer.n_steps, why, trainer.step - first_step, seconds, run_dir,
        )  # fmt: skip
    else:
        logger.info(
            "trained steps %d-%d of %d in %.1f s; run directory %s",
            first_step + 1, trainer.n_steps, trainer.n_steps, seconds, run_dir,
        )  # fmt: skip


def _tensorboard_settings(
    args: argparse.Namespace, train_cfg: TrainConfig, stored: dict[str, Any] | None
) -> dict[str, Any] | None:
    """Return the monitor's settings: ``--tensorboard`` now, or stored by the run (resume)."""
    if not getattr(args, "tensorboard", False) and stored is None:
        return None
    every = getattr(args, "tensorboard_image_every", None)
    return {"image_every": every or (stored or {}).get("image_every") or train_cfg.checkpoint_every}


def cmd_demo(args: argparse.Namespace) -> int:
    """Train a small DCGMM on the built-in MNIST; print scores; write three PNG grids."""
    train = load_dataset("mnist")
    steps = TrainConfig(epochs=args.epochs).total_steps(len(train))
    bar, callback = _progress(steps, 0)
    try:
        with bar:
            result = run_demo(args.out, epochs=args.epochs, callback=callback)
    except ValueError as err:
        raise CLIError(str(err)) from None
    print(f"\n{result.model}\n\nTest scores on the built-in MNIST ({result.n_test} digits):")
    print(format_scores(result.scores))
    print("\nwrote " + ", ".join(str(p) for p in result.pictures))
    return 0


def _add_data_flags(train: argparse.ArgumentParser) -> None:
    """Add the training data flags: a source, a selection of it, and an image size."""
    train.add_argument(
        "--data",
        help="mnist, fashion-mnist, an IDX folder, a .npz or .npy file, or a folder of PNG/JPEG "
        "images (one subfolder per class, or flat)",
    )
    train.add_argument("--classes", help="keep only these classes, e.g. 1,2,3 or 1-9")
    train.add_argument("--limit-per-class", type=int, help="first N samples of every class")
    train.add_argument("--limit", type=int, help="then the first N samples (file order)")
    train.add_argument(
        "--resize",
        type=parse_size,
        metavar="H,W",
        help="bring every image to H x W (antialiased bilinear); the run records it, and its "
        "later commands read their data at that size (without it, images of different sizes "
        "are refused)",
    )


def add_training_commands(sub: Any) -> None:
    """Add ``train`` and ``demo`` to the CLI's subparsers."""
    train = sub.add_parser("train", help="train a DCGMM")
    train.add_argument(
        "--model",
        help=f"spec string, preset {sorted(PRESETS)} (or its recipes' independent variant, "
        f"e.g. E-indep), or a baseline: {', '.join(BASELINES)}",
    )
    _add_data_flags(train)
    train.add_argument(
        "--objective", choices=("annealed", "max_component", "loglik"), help="default annealed"
    )
    train.add_argument("--out", help="run directory")
    train.add_argument("--resume", metavar="RUN_DIR", help="continue a stopped run")
    train.add_argument(
        "--stop-at",
        type=int,
        metavar="STEP",
        help="checkpoint and exit at this global step (continue later with --resume)",
    )
    train.add_argument("--config", help="JSON file of training options (flags override it)")
    train.add_argument(
        "--tensorboard",
        action="store_true",
        help="also write per-layer objectives, lr, sigma_som, classifier accuracy, centroid and "
        f"sample grids to RUN_DIR/tensorboard (needs `{INSTALL_HINT}`); a resumed run goes on "
        "writing them",
    )
    train.add_argument(
        "--tensorboard-image-every",
        type=int,
        metavar="STEPS",
        help="steps between TensorBoard image grids (default: --checkpoint-every)",
    )
    add_train_config_flags(train)
    train.add_argument(
        "--max-minutes",
        type=float,
        help="stop after this long: a DCGMM checkpoints and exits (continue with --resume); a "
        "VAE keeps its best epoch; an NSN keeps the filters it has",
    )
    base = train.add_argument_group(
        "baselines (--model dlgmm|dldpmm|gauss-vae|nsn); a flag a model does not use is refused"
    )
    base.add_argument(
        "--binarize", choices=("stochastic", "threshold"),
        help="VAEs: one Bernoulli draw per pixel (seeded, the default) or a threshold at 0.5",
    )  # fmt: skip
    base.add_argument("--taus", help="NSN: thresholds per layer, e.g. -0.93,0.75,0.65")
    base.add_argument("--nsn-images", type=int, help="NSN: images to fit on (default 5000)")
    train.set_defaults(func=cmd_train)

    demo = sub.add_parser("demo", help="train a small model on the built-in MNIST")
    demo.add_argument("--out", default="runs/demo")
    demo.add_argument("--epochs", type=int, default=DEMO_EPOCHS)
    demo.set_defaults(func=cmd_demo)
