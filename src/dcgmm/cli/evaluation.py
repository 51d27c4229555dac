"""``dcgmm outliers`` (AUC, ROC curve, per-position outlier maps) and ``dcgmm plot``."""

import argparse
import json
import logging
from pathlib import Path

from dcgmm.baselines.runs import is_baseline_run, load_baseline
from dcgmm.baselines.vae import DeepLatentGMM
from dcgmm.cli.common import CLIError, Parser, check_writable, load_data
from dcgmm.evaluation.outlier_detection import detect_outliers, run_statistics
from dcgmm.evaluation.outliers import (
    DEFAULT_C,
    SCORE_KINDS,
    roc_auc,
    roc_curve,
)
from dcgmm.evaluation.plots import centroid_images, save_roc, save_training_curves
from dcgmm.interfaces.image_model import as_image_model
from dcgmm.io.data import BUILTIN, parse_classes
from dcgmm.io.images import save_grid
from dcgmm.io.run_files import METRICS_FILE, atomic_write_bytes, read_config
from dcgmm.training.checkpoint import load_model

__all__ = [
    "add_evaluation_commands",
    "baseline_outliers",
    "cmd_outliers",
    "cmd_plot",
    "split_data_arg",
]

logger = logging.getLogger("dcgmm")


def split_data_arg(text: str) -> tuple[str, str | None]:
    """Split ``DATA[:classes]`` (e.g. ``../data/mnist:1-9``) into source and class list."""
    source, sep, classes = text.rpartition(":")
    if sep and source:
        try:
            parse_classes(classes)
        except ValueError:
            if source in BUILTIN or Path(source).exists():
                raise  # the source is fine, the class list is not: say so
            return text, None  # a colon that belongs to the path
        return source, classes
    return text, None


def baseline_outliers(args: argparse.Namespace) -> int:
    """``dcgmm outliers`` for a baseline run: its adapter's outlier score, AUC and ROC.

    Per-position maps need a model with positions (DCGMM), so none are drawn.
    """
    from dcgmm.cli.baselines import binarize

    name, model, config = load_baseline(args.run_dir)
    adapter = as_image_model(model)
    out = Path(args.out)
    check_writable(out)
    scores, sizes = {}, {}
    for role in ("inliers", "outliers"):
        source, classes = split_data_arg(getattr(args, role))
        resize = config["data"].get("resize")
        images = load_data(source, args.split, classes, None, args.limit, resize=resize).images
        mode = config["data"].get("binarize")
        if isinstance(model, DeepLatentGMM) and mode:  # the VAE saw binary images
            images = binarize(images, mode["mode"], mode["seed"] + 1).reshape(images.shape)
        scores[role], sizes[role] = adapter.outlier_score(images), len(images)
    auc = roc_auc(scores["inliers"], scores["outliers"])
    fpr, tpr, _ = roc_curve(scores["inliers"], scores["outliers"])
    result = {
        "run_dir": str(args.run_dir),
        "model": name,
        "score": adapter.score_name,
        "auc": auc,
        "inliers": {"data": args.inliers, "split": args.split, "n": sizes["inliers"]},
        "outliers": {"data": args.outliers, "split": args.split, "n": sizes["outliers"]},
    }
    atomic_write_bytes(out / "auc.json", (json.dumps(result, indent=2) + "\n").encode())
    title = f"{name}\ninliers {args.inliers} vs outliers {args.outliers}"
    save_roc(out / "roc.png", {name: (fpr, tpr, auc)}, title=title)
    print(f"AUC {100 * auc:.1f} ({name}, {adapter.score_name})")
    print(f"wrote {out / 'auc.json'}, {out / 'roc.png'} (no per-position maps for {name})")
    return 0


def cmd_outliers(args: argparse.Namespace) -> int:
    """Score inliers and outliers, write auc.json, roc.png and maps.png."""
    if is_baseline_run(args.run_dir):
        return baseline_outliers(args)
    run_dir, out = Path(args.run_dir), Path(args.out)
    model = load_model(run_dir, map_location=args.device)
    model.gmm_layer_number(args.layer)  # bad layers fail before any data is read
    if args.map_layer:
        model.gmm_layer_number(args.map_layer)
    check_writable(out)
    sets = {}
    resize = (read_config(run_dir).get("data") or {}).get("resize")  # the run's input size
    for role in ("inliers", "outliers"):
        source, classes = split_data_arg(getattr(args, role))
        sets[role] = load_data(source, args.split, classes, None, args.limit, resize=resize)
        logger.info("%s: %s, %d images", role, getattr(args, role), len(sets[role]))
    stats, stats_source = run_statistics(run_dir, model, args.kind, limit=args.stats_limit)
    report = detect_outliers(
        model, sets["inliers"].images, sets["outliers"].images, stats,
        kind=args.kind, layer=args.layer, map_layer=args.map_layer, c=args.c,
        all_layers=args.all_layers, statistics_source=stats_source,
    )  # fmt: skip
    context = {"run_dir": str(run_dir)} | {
        role: {"data": getattr(args, role), "split": args.split, "n": len(sets[role])}
        for role in ("inliers", "outliers")
    }
    paths = report.save(
        out, model, {role: d.images for role, d in sets.items()}, n_maps=args.n_maps,
        title=f"inliers {args.inliers} vs outliers {args.outliers}", context=context,
    )  # fmt: skip
    per_layer = ", ".join(f"{k}: {100 * v:.1f}" for k, v in report.auc_per_layer.items())
    print(f"AUC {100 * report.auc:.1f} (layer {report.layer}, {args.kind}); per layer: {per_layer}")
    print(
        f"maps of layer {report.map_layer}: {100 * report.flagged_fraction('inliers'):.1f}% of "
        f"inlier positions and {100 * report.flagged_fraction('outliers'):.1f}% of "
        f"outlier positions flagged (c = {args.c})"
    )
    print(f"wrote {', '.join(str(p) for p in paths)}")
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    """Draw a run's training curves and centroid grids to PNG (no TensorBoard needed)."""
    run_dir = Path(args.run_dir)
    out = Path(args.out) if args.out else run_dir / "plots"
    if is_baseline_run(run_dir):
        raise CLIError(
            f"{run_dir} is a {read_config(run_dir)['model']} run (a baseline); `dcgmm plot` "
            "draws a DCGMM's training curves and centroids"
        )
    check_writable(out)
    model = load_model(run_dir)
    metrics = run_dir / METRICS_FILE
    paths = []
    if metrics.exists():
        records = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
        if records:
            paths.append(save_training_curves(out / "training.png", records, title=model.spec))
    else:
        logger.warning("%s has no %s: no training curves", run_dir, METRICS_FILE)
    for number, images in centroid_images(model):
        paths.append(
            save_grid(out / f"centroids_layer{number}.png", images, normalize=True, scale=4)
        )
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


def add_evaluation_commands(sub: "argparse._SubParsersAction[Parser]") -> None:
    """Register ``outliers`` and ``plot``."""
    plot = sub.add_parser("plot", help="training curves and centroid grids of a run, as PNG")
    plot.add_argument("run_dir")
    plot.add_argument("--out", help="folder (default RUN_DIR/plots)")
    plot.set_defaults(func=cmd_plot)

    out = sub.add_parser(
        "outliers",
        help="outlier AUC, ROC curve and per-position outlier maps",
        description="Rows of maps.png: inlier images, their maps, outlier images, their maps "
        "(red: positions below mean - c*std of the training data).",
    )
    out.add_argument("run_dir")
    out.add_argument("--inliers", required=True, help="DATA[:classes], e.g. mnist:1-9")
    out.add_argument("--outliers", required=True, help="DATA[:classes], e.g. mnist:0")
    out.add_argument("--split", default="test", choices=("train", "test"))
    out.add_argument("--limit", type=int, help="first N images of each set")
    out.add_argument("--layer", default="top", help="GMM layer for the AUC: index or 'top'")
    out.add_argument("--kind", default="loglik", choices=SCORE_KINDS, help="per-position score")
    out.add_argument(
        "--map-layer", help="GMM layer of the maps (default: highest with >1 position)"
    )
    out.add_argument("--c", type=float, default=DEFAULT_C, help="threshold mean - c*std")
    out.add_argument("--stats-limit", type=int, help="training images for the statistics")
    out.add_argument("--n-maps", type=int, default=10, help="images per row of maps.png")
    out.add_argument("--all-layers", action="store_true", help="a ROC curve per GMM layer")
    out.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    out.add_argument("--out", required=True, help="output folder")
    out.set_defaults(func=cmd_outliers)
