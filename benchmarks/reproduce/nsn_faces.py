"""The 5-layer NSN (64x64) on the 400 Olivetti faces: samples, and where the faces get lost.

    python -m benchmarks.reproduce nsn-faces [--zca] [--taus -1.5,0.75,0.75,0.75,0.65]
        [--max-filters 300] [--tiny]

The paper trains its face model (LFW, RGB) on channel-wise ZCA-whitened images; ``--zca``
does that with :class:`dcgmm.preprocessing.ZCAWhitening` (per channel over whole images,
epsilon = 1e-2 mean eigenvalue) and shows samples through the inverse transform. Besides the
sample grid the script decodes real faces from each layer's own map (NSN-Gen from F^(l) down,
no noise) and reports the pixel MSE per level: a generator that cannot rebuild a face from
F^(l) cannot sample one from noise at that level either. The Olivetti set has no classifier,
so no sample-quality number is given.
"""

import argparse
import dataclasses
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.reproduce.common import header_lines, write_results
from benchmarks.reproduce.nsn import fit_nsn, read_olivetti
from dcgmm.baselines.nsn import NSN, PAPER_FILTER_COUNTS
from dcgmm.baselines.nsn_layer import GenSettings
from dcgmm.io.images import save_grid
from dcgmm.preprocessing import Identity, Preprocessor, ZCAWhitening

N_SHOWN = 8


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The face table's options."""
    parser.add_argument("--zca", action="store_true", help="fit on ZCA-whitened faces")
    parser.add_argument("--taus", default="-1.5,0.75,0.75,0.75,0.65", help="one per layer")
    parser.add_argument("--max-filters", type=int, default=300)
    parser.add_argument("--new-per-iter", type=int, default=8, help="new filters per iteration")
    parser.add_argument("--beta", type=float, default=10.0, help="NSN-Gen sharpening")
    parser.add_argument("--betas", default="10,30,100", help="also report these sharpenings")
    parser.add_argument("--n-draws", type=int, default=10, help="multinomial draws")
    parser.add_argument("--alpha", type=float, default=1.0, help="NSN-Gen contrast")
    parser.add_argument("--gamma", type=float, default=0.5, help="NSN-Gen noise")


def decode_levels(
    model: NSN, faces: torch.Tensor, pre: Preprocessor, settings: GenSettings
) -> tuple[list[float], torch.Tensor]:
    """Return the pixel MSE of faces rebuilt from each level's map, and the rebuilt images."""
    maps = model.maps(pre.transform(faces))
    mse, rows = [], [faces[:N_SHOWN]]
    for level in range(1, len(maps) + 1):
        g = torch.Generator().manual_seed(0)
        rebuilt = pre.inverse(model.decode(maps[level - 1], level, settings, generator=g))
        rebuilt = rebuilt.clamp(0, 1)
        mse.append(float(((rebuilt - faces) ** 2).mean()))
        rows.append(rebuilt[:N_SHOWN])
    return mse, torch.cat(rows)


def faces_table(args: argparse.Namespace) -> dict[str, Any]:
    """Fit (or load) the face NSN, sample it, decode real faces per level."""
    data_dir, runs, out = Path(args.data_dir), Path(args.runs), Path(args.out)
    faces = read_olivetti(data_dir / "olivetti-faces" / "olivettifaces.mat")
    if args.tiny:
        faces = faces[:40]
    pre: Preprocessor = ZCAWhitening() if args.zca else Identity()
    pre.fit(faces)
    taus = [float(t) for t in args.taus.split(",")]
    name = ("olivetti-zca" if args.zca else "olivetti") + ("-tiny" if args.tiny else "")
    folder = runs / "nsn" / f"{name}-cap{args.max_filters}"
    model, record = fit_nsn("olivetti", pre.transform(faces), "64x64", taus, folder, args)
    settings = GenSettings(args.beta, args.n_draws, args.alpha, args.gamma)
    stem = f"nsn_{name}"
    # Under ZCA the inverse adds the mean face back, so even a constant output looks like a
    # face: measure how far samples stray from the mean face, next to the real faces.
    mean_face = faces.mean(0, keepdim=True)
    real_spread = float(((faces - mean_face) ** 2).mean())
    sweep = []
    for beta in sorted({*(float(b) for b in args.betas.split(",")), args.beta}):
        trial = dataclasses.replace(settings, beta=beta)
        g = torch.Generator().manual_seed(0)
        drawn = model.sample(24, settings=trial, generator=g, clip=False)
        drawn = pre.inverse(drawn).clamp(0, 1)
        noise_free = dataclasses.replace(trial, gamma=0.0)
        level_mse, rebuilt = decode_levels(model, faces[:100], pre, noise_free)
        sweep.append(
            {
                "beta": beta,
                "level_mse": level_mse,
                "samples_mean_face_mse": float(((drawn - mean_face) ** 2).mean()),
            }
        )
        if beta == args.beta:  # the pictures: the command's settings
            save_grid(out / "baselines" / f"{stem}_samples.png", drawn, n_cols=8, scale=1)
            save_grid(out / "baselines" / f"{stem}_levels.png", rebuilt, n_cols=N_SHOWN, scale=1)
            level_mse_shown, spread_shown = level_mse, sweep[-1]["samples_mean_face_mse"]
    row = {
        "preprocessing": "ZCA (per channel, whole image, eps 1e-2 mean eigenvalue)"
        if args.zca
        else "none (pixels in [0, 1])",
        **record,
        "max_filters": args.max_filters,
        "paper_filter_counts_lfw": list(PAPER_FILTER_COUNTS["lfw"]),
        "generation": dataclasses.asdict(settings),
        "level_mse": level_mse_shown,
        "mean_face_mse": {"samples": spread_shown, "real_faces": real_spread},
        "beta_sweep": sweep,
        "stem": stem,
    }
    print(row, flush=True)
    return row


def write_faces(row: dict[str, Any], out: Path, command: str, wall: float) -> None:
    """Write docs/results/baselines_nsn_faces.md and .json."""
    g = row["generation"]
    lines = [
        "# NSN on the Olivetti faces (64x64, 5 layers)",
        "",
        *header_lines(command, wall),
        f"- preprocessing: {row['preprocessing']}; thresholds {row['taus']}; at most "
        f"{row['max_filters']} filters per layer; {row['n_images']} images",
        f"- NSN-Gen for the samples: beta {g['beta']:g}, {g['n_draws']} draws, alpha "
        f"{g['alpha']:g}, gamma {g['gamma']:g}; the per-level rebuilds use the same with "
        "gamma 0",
        "",
        "| filters per layer | paper (LFW, RGB) | converged | fit min |",
        "|---|---|---|---:|",
        f"| {row['filter_counts']} | {row['paper_filter_counts_lfw']} | {row['converged']} | "
        f"{row['fit_seconds'] / 60:.1f} |",
        "",
        "Real faces rebuilt from each layer's own map (NSN-Gen from F^(l) down to pixels), "
        "pixel MSE over the first 100 faces:",
        "",
        "| level | " + " | ".join(str(i + 1) for i in range(len(row["level_mse"]))) + " |",
        "|---|" + "---:|" * len(row["level_mse"]),
        "| MSE | " + " | ".join(f"{v:.4f}" for v in row["level_mse"]) + " |",
        "",
        "The same for other sharpenings beta (same draws, alpha, gamma), and the samples' mean "
        "squared distance to the mean face:",
        "",
        "| beta | rebuild MSE from F^(1) ... F^(L) | samples to mean face |",
        "|---:|---|---:|",
        *(
            f"| {t['beta']:g} | "
            + " / ".join(f"{v:.4f}" for v in t["level_mse"])
            + f" | {t['samples_mean_face_mse']:.4f} |"
            for t in row["beta_sweep"]
        ),
        "",
        "Rows: the faces, then rebuilt from F^(1), ..., F^(5):",
        "",
        f"![levels](baselines/{row['stem']}_levels.png)",
        "",
        "Samples from top-level noise (24). Mean squared distance to the mean face: samples "
        f"{row['mean_face_mse']['samples']:.4f}, real faces "
        f"{row['mean_face_mse']['real_faces']:.4f} (how much of a face's variety they carry).",
        "",
        f"![samples](baselines/{row['stem']}_samples.png)",
    ]
    write_results(out, "baselines_nsn_faces", lines, row)


def run(args: argparse.Namespace, command: str) -> None:
    """Run the face table and write its results."""
    start = time.perf_counter()
    row = faces_table(args)
    write_faces(row, Path(args.out), command, time.perf_counter() - start)
