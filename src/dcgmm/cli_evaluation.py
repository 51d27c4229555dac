"""``dcgmm outliers`` (AUC, ROC curve, per-position outlier maps) and ``dcgmm plot``."""

import argparse
import json
import logging
from pathlib import Path

from dcgmm._cli_common import CLIError, Parser, check_writable, load_data, run_data
from dcgmm.baselines.runs import is_baseline_run, load_baseline
from dcgmm.baselines.vae import DeepLatentGMM
from dcgmm.checkpoint import load_model
from dcgmm.data import BUILTIN, Dataset, parse_classes
from dcgmm.images import save_grid
from dcgmm.interface import as_image_model
from dcgmm.io import atomic_write_bytes, read_config
from dcgmm.model import DCGMM
from dcgmm.outliers import (
    DEFAULT_C,
    SCORE_KINDS,
    STATISTICS_FILE,
    PositionStatistics,
    ScoreKind,
    fit_position_statistics,
    load_position_statistics,
    position_scores,
    resolve_layer,
    roc_auc,
    roc_curve,
    save_position_statistics,
    to_pixels,
)
from dcgmm.plots import centroid_images, save_outlier_maps, save_roc, save_training_curves
from dcgmm.training import METRICS_FILE

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


def position_statistics(
    run_dir: Path, model: DCGMM, kind: ScoreKind, limit: int | None
) -> tuple[dict[int, PositionStatistics], str]:
    """Load the run's stored statistics, or collect them on its training data and store them."""
    if (run_dir / STATISTICS_FILE).exists():
        stats, source = load_position_statistics(run_dir)
        first = next(iter(stats.values()))
        if first.kind == kind and limit in (None, first.n_samples):
            return stats, source
        if first.kind != kind:
            logger.info("stored statistics are for another score kind; collecting %s", kind)
        else:
            logger.info(
                "stored statistics are of %d images, --stats-limit asks for %d; collecting again",
                first.n_samples, limit,
            )  # fmt: skip
    data = run_data(run_dir, read_config(run_dir))
    train = load_data(
        data["source"], "train", data.get("classes"), data.get("limit_per_class"), data.get("limit")
    )
    if limit is not None:
        train = Dataset(train.images[:limit], train.labels[:limit], train.name)
    source = f"{data['source']} train classes={data.get('classes')} n={len(train)}"
    logger.info("collecting per-position statistics on %s", source)
    stats = fit_position_statistics(model, train.images, kind=kind)
    try:
        path = save_position_statistics(run_dir, stats, source=source)
        logger.info("stored them in %s", path)
    except OSError as err:
        logger.warning("could not store statistics in %s (%s); using them once", run_dir, err)
    return stats, source


def baseline_outliers(args: argparse.Namespace) -> int:
    """``dcgmm outliers`` for a baseline run: its adapter's outlier score, AUC and ROC.

    Per-position maps need a model with positions (DCGMM), so none are drawn.
    """
    from dcgmm.cli_baselines import binarize

    name, model, config = load_baseline(args.run_dir)
    adapter = as_image_model(model)
    out = Path(args.out)
    check_writable(out)
    scores, sizes = {}, {}
    for role in ("inliers", "outliers"):
        source, classes = split_data_arg(getattr(args, role))
        images = load_data(source, args.split, classes, None, args.limit).images
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
    kind: ScoreKind = args.kind
    try:
        top = resolve_layer(model, args.layer)
        map_layer = resolve_layer(model, args.map_layer) if args.map_layer else None
    except ValueError as err:
        raise CLIError(str(err)) from None
    check_writable(out)
    sets = {}
    for role in ("inliers", "outliers"):
        source, classes = split_data_arg(getattr(args, role))
        sets[role] = load_data(source, args.split, classes, None, args.limit)
        logger.info("%s: %s, %d images", role, getattr(args, role), len(sets[role]))
    maps = {role: position_scores(model, d.images, kind=kind) for role, d in sets.items()}
    per_layer = {
        number: roc_auc(
            maps["inliers"][number].flatten(1).mean(1), maps["outliers"][number].flatten(1).mean(1)
        )
        for number in maps["inliers"]
    }
    curves = {}
    for number in maps["inliers"]:
        if number == top or args.all_layers:
            fpr, tpr, _ = roc_curve(
                maps["inliers"][number].flatten(1).mean(1),
                maps["outliers"][number].flatten(1).mean(1),
            )
            curves[f"layer {number} {model.layers[number - 1].spec}"] = (
                fpr,
                tpr,
                per_layer[number],
            )
    stats, stats_source = position_statistics(run_dir, model, kind, args.stats_limit)
    if map_layer is None:  # the highest layer with more than one position, else the top
        wide = [n for n, m in maps["inliers"].items() if m[0].numel() > 1]
        map_layer = wide[-1] if wide else top
    flagged = {
        role: stats[map_layer].outlier_map(maps[role][map_layer], args.c).double() for role in maps
    }
    fraction_in = float(flagged["inliers"].mean())
    fraction_out = float(flagged["outliers"].mean())
    result = {
        "run_dir": str(run_dir),
        "spec": model.spec,
        "score": f"{kind}, mean over the layer's positions",
        "layer": top,
        "auc": per_layer[top],
        "auc_per_layer": {str(n): a for n, a in per_layer.items()},
        "inliers": {"data": args.inliers, "split": args.split, "n": len(sets["inliers"])},
        "outliers": {"data": args.outliers, "split": args.split, "n": len(sets["outliers"])},
        "maps": {
            "layer": map_layer,
            "rule": f"outlier where score < mean - c * std over training data, c = {args.c}",
            "statistics": stats_source,
            "flagged_fraction_inliers": fraction_in,
            "flagged_fraction_outliers": fraction_out,
        },
    }
    atomic_write_bytes(out / "auc.json", (json.dumps(result, indent=2) + "\n").encode())
    save_roc(
        out / "roc.png",
        curves,
        title=f"{model.spec}\ninliers {args.inliers} vs outliers {args.outliers}",
    )
    n = min(args.n_maps, len(sets["inliers"]), len(sets["outliers"]))
    rows = []
    for role in ("inliers", "outliers"):
        fractions = to_pixels(model, map_layer, flagged[role][:n])
        rows.append((sets[role].images[:n], fractions))
    save_outlier_maps(out / "maps.png", rows, n_cols=n)
    print(
        f"AUC {100 * per_layer[top]:.1f} (layer {top}, {kind}); per layer: "
        + ", ".join(f"{k}: {100 * v:.1f}" for k, v in per_layer.items())
    )
    print(
        f"maps of layer {map_layer}: {100 * fraction_in:.1f}% of "
        f"inlier positions and {100 * fraction_out:.1f}% of "
        f"outlier positions flagged (c = {args.c})"
    )
    print(f"wrote {out / 'auc.json'}, {out / 'roc.png'}, {out / 'maps.png'}")
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
