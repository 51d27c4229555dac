"""``dcgmm outliers`` (AUC, ROC curve, per-position outlier maps) and ``dcgmm plot``."""

import argparse
import json
import logging
from pathlib import Path

from dcgmm.baselines.runs import is_baseline_run
from dcgmm.cli.common import CLIError, Parser, check_writable, load_data, refuse_untaken
from dcgmm.evaluation.outliers import DEFAULT_C, SCORE_KINDS
from dcgmm.evaluation.plots import centroid_images, save_training_curves
from dcgmm.interfaces.run_outliers import check_outlier_options, run_outliers
from dcgmm.interfaces.runs import load_run
from dcgmm.io.data import BUILTIN, parse_classes
from dcgmm.io.images import save_grid
from dcgmm.io.run_files import METRICS_FILE, read_config
from dcgmm.training.checkpoint import load_model

__all__ = [
    "OUTLIER_FLAGS",
    "OUTLIER_OPTIONS",
    "add_evaluation_commands",
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


OUTLIER_OPTIONS = ("kind", "layer", "map_layer", "c", "all_layers", "contrast")  # run_outliers
# Which option of the run's model each `outliers` flag feeds (refuse_untaken); --n-maps acts
# where there are maps, that is where the model takes a map layer.
OUTLIER_FLAGS = {**{f: ("outliers", f) for f in OUTLIER_OPTIONS},
                 "stats_limit": ("outliers", "stats_limit"),
                 "n_maps": ("outliers", "map_layer"), "device": ("to", "device")}  # fmt: skip


def cmd_outliers(args: argparse.Namespace) -> int:
    """Score inliers and outliers, write auc.json, roc.png and (for a DCGMM) maps.png."""
    run = load_run(args.run_dir, map_location=args.device)
    always = {"run_dir", "inliers", "outliers", "split", "limit", "out"}
    refuse_untaken(args, run, OUTLIER_FLAGS, always)
    options = {f: getattr(args, f) for f in OUTLIER_OPTIONS if f in run.accepts("outliers")}
    check_outlier_options(run, **options)  # bad layers fail before any data is read
    out = Path(args.out)
    check_writable(out)
    images, sizes = {}, {}
    for role in ("inliers", "outliers"):
        source, classes = split_data_arg(getattr(args, role))
        data = load_data(source, args.split, classes, None, args.limit,
                         resize=run.data.get("resize"))  # fmt: skip
        images[role], sizes[role] = run.prepare(data.images), len(data)
        logger.info("%s: %s, %d images", role, getattr(args, role), len(data))
    result = run_outliers(run, images["inliers"], images["outliers"],
                          stats_limit=args.stats_limit, **options)  # fmt: skip
    context = {"run_dir": str(run.path)} | {
        role: {"data": getattr(args, role), "split": args.split, "n": sizes[role]}
        for role in ("inliers", "outliers")
    }
    paths = result.save(
        out, images, n_maps=args.n_maps, context=context,
        title=f"inliers {args.inliers} vs outliers {args.outliers}",
    )  # fmt: skip
    for line in result.summary():
        print(line)
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
    out.add_argument(
        "--contrast",
        action="store_true",
        help="also score by the layer contrast: the top GMM layer's z-score minus the next "
        "lower one's, standardised on the training images (--stats-limit of them)",
    )
    out.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    out.add_argument("--out", required=True, help="output folder")
    out.set_defaults(func=cmd_outliers)
