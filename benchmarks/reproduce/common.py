"""What every reproduction script shares: paths, the machine line, cached training runs."""

import datetime
import json
import platform
import shutil
import time
from pathlib import Path
from typing import Any

import torch

import dcgmm
from dcgmm import DCGMM, TrainConfig, Trainer
from dcgmm.io.data import Dataset
from dcgmm.io.run_files import read_config, write_config
from dcgmm.layers.gmm import Objective
from dcgmm.training.checkpoint import load_model, save_checkpoint
from dcgmm.training.config import PRESET_TRAIN_OVERRIDES, options_for_solver

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DATA = ROOT.parent / "shared" / "data"
DEFAULT_RUNS = ROOT / "runs" / "reproduce"
DEFAULT_OUT = ROOT / "docs" / "results"
TIMING_FILE = "timing.json"


def header_lines(command: str, wall_seconds: float) -> list[str]:
    """Return the date / machine / versions / command bullet lines of a results file."""
    return [
        f"- date: {datetime.date.today().isoformat()}; machine: {platform.platform()}, "
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads; "
        f"dcgmm {dcgmm.__version__}, torch {torch.__version__}",
        f"- command: `{command}` ({wall_seconds / 60:.1f} min wall, cached runs reused)",
    ]


def run_entry(command: str, wall_seconds: float) -> dict[str, Any]:
    """Return a run's record for an accumulating table: date, machine, command, wall time."""
    return {
        "date": datetime.date.today().isoformat(),
        "command": command,
        "machine": header_lines(command, wall_seconds)[0].removeprefix("- "),
        "wall_minutes": round(wall_seconds / 60, 1),
    }


# A page's lines from this marker on were written by hand (ablations, explanations): a script
# that rewrites the page keeps them below its new table.
HAND_WRITTEN = "<!-- written by hand below this line: kept when the script rewrites the table -->"


def hand_written(path: Path) -> list[str]:
    """Return the marker line and what follows it in ``path`` ([] if there is none)."""
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    return lines[lines.index(HAND_WRITTEN) :] if HAND_WRITTEN in lines else []


def write_results(out: Path, stem: str, lines: list[str], result: dict[str, Any]) -> None:
    """Write ``out/stem.md`` (the table for people) and ``out/stem.json`` (every number).

    A hand-written part of the old page (:data:`HAND_WRITTEN`) is kept at its end.
    """
    out.mkdir(parents=True, exist_ok=True)
    kept = hand_written(out / f"{stem}.md")
    (out / f"{stem}.md").write_text("\n".join(lines + (["", *kept] if kept else [])) + "\n")
    (out / f"{stem}.json").write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out / f'{stem}.md'}")


def train_run(
    spec: str,
    data: Dataset,
    out: Path,
    *,
    preset: str | None,
    epochs: int | None,
    steps: int | None = None,
    seed: int = 0,
    objective: Objective = "annealed",
    data_info: dict[str, Any],
    **overrides: Any,
) -> tuple[DCGMM, float]:
    """Train ``spec`` on ``data`` into the run directory ``out``; reuse it if finished.

    Returns the trained model and the training seconds (of the run that made it). The
    preset's recipe learning-rate factors apply unless ``overrides`` set them.
    """
    if (out / TIMING_FILE).exists():
        seconds = float(json.loads((out / TIMING_FILE).read_text())["seconds"])
        return load_model(out), seconds
    overrides = dict(overrides)
    if "layer_delays" in overrides and overrides["layer_delays"] is not None:
        overrides["layer_delays"] = tuple(overrides["layer_delays"])
    # A preset's SGD factors do not apply to solver "em" (TrainConfig refuses them there).
    solver = overrides.get("solver", "sgd")
    recipe = options_for_solver(PRESET_TRAIN_OVERRIDES.get(preset or "", {}), solver)
    recipe.update(overrides)
    config = TrainConfig(epochs=epochs, steps=steps, seed=seed, checkpoint_every=10**9, **recipe)
    generator = torch.Generator().manual_seed(seed)
    model = DCGMM.from_spec(spec, data.image_shape, objective=objective, generator=generator)
    write_config(
        out,
        {
            "spec": model.spec,
            "preset": preset,
            "input_shape": list(data.image_shape),
            "objective": objective,
            "train": config.to_dict(),
            "data": data_info,
        },
    )
    start = time.perf_counter()
    trainer = Trainer(model, config, data.images, data.labels, run_dir=out)
    trainer.run()
    seconds = time.perf_counter() - start
    save_checkpoint(out, model, trainer.state_dict())
    write_record(out, trainer, seconds)
    return model, seconds


def write_record(out: Path, trainer: Trainer, seconds: float, **extra: Any) -> dict[str, Any]:
    """Write and return a finished run's record (``TIMING_FILE``): steps, why it stopped, sigmas."""
    record = {
        "seconds": seconds,
        "steps": trainer.step,
        "max_steps": trainer.n_steps,
        "stopped_by": trainer.stopped_by,
        # The annealing at the end: a number is only the method's once every layer got there.
        "sigma_som": {str(i + 1): g.sigma_som_value for i, g in trainer.model.gmm_layers()},
        "annealed": not trainer.unannealed_layers(),
        **extra,
    }
    (out / TIMING_FILE).write_text(json.dumps(record))
    return record


def extend_run(source: Path, out: Path, steps: int, data: Dataset) -> dict[str, Any]:
    """Copy the finished run ``source`` to ``out`` and train it on to ``steps``; reuse ``out``.

    The GMM layers keep the start steps of the first budget (``Trainer.resume(extend=True)``);
    a run with ``until_annealed`` still stops once annealed. Returns the run's record, with
    ``extended_from`` (the steps of ``source``) and the seconds of both parts.
    """
    if (out / TIMING_FILE).exists():
        return run_record(out)
    before = run_record(source)
    shutil.copytree(source, out, dirs_exist_ok=True)
    (out / TIMING_FILE).unlink()
    train = read_config(out)["train"]
    config = TrainConfig(**{**train, "steps": steps, "epochs": None})
    model = load_model(out)
    trainer = Trainer(model, config, data.images, data.labels, run_dir=out)
    trainer.resume(extend=True)
    start = time.perf_counter()
    trainer.run()
    seconds = before["seconds"] + time.perf_counter() - start
    return write_record(out, trainer, seconds, extended_from=before["steps"])


def run_record(out: Path) -> dict[str, Any]:
    """Return what :func:`train_run` recorded about the run in ``out`` (steps, annealing)."""
    return dict(json.loads((out / TIMING_FILE).read_text()))


def mean_sd(values: list[float]) -> tuple[float, float]:
    """Return the mean and the sample standard deviation (0 for one value), as the paper."""
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, 0.0
    return mean, (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5


def two_way_standard_error(values: list[list[float]]) -> tuple[float, float]:
    r"""Return the standard error of the grand mean of a seeds x judges table, and its df.

    Table III scores every seed's samples with the same judges, so seeds and judges are two
    crossed random factors, :math:`y_{sj} = \mu + a_s + b_j + e_{sj}`. With the two-way
    ANOVA mean squares (no replication) :math:`M_S, M_J, M_R`, the variance components are
    :math:`\hat\sigma_a^2 = (M_S - M_R)/J`, :math:`\hat\sigma_b^2 = (M_J - M_R)/S`,
    :math:`\hat\sigma_e^2 = M_R` (a negative estimate counts as 0), and

    .. math::
        \mathrm{Var}(\bar y) = \sigma_a^2/S + \sigma_b^2/J + \sigma_e^2/(SJ),

    a linear combination of the mean squares; its degrees of freedom are Satterthwaite's.
    The standard deviation over all S x J values with n = S (what the table prints) counts
    the judges' spread as if every seed had its own judges.
    """
    s, j = len(values), len(values[0])
    if s < 2 or j < 2 or any(len(row) != j for row in values):
        raise ValueError(f"need a full table of at least 2 x 2 values; got {s} x {j}")
    grand = sum(map(sum, values)) / (s * j)
    seed_means = [sum(row) / j for row in values]
    judge_means = [sum(row[c] for row in values) / s for c in range(j)]
    ms_seed = j * sum((m - grand) ** 2 for m in seed_means) / (s - 1)
    ms_judge = s * sum((m - grand) ** 2 for m in judge_means) / (j - 1)
    residual = sum(
        (values[r][c] - seed_means[r] - judge_means[c] + grand) ** 2
        for r in range(s) for c in range(j)
    )  # fmt: skip
    ms_resid = residual / ((s - 1) * (j - 1))
    # Var = (c_S M_S + c_J M_J + c_R M_R) / (S J): a factor's term enters only where its
    # component is estimated positive, and then takes one M_R away.
    c_seed, c_judge = float(ms_seed > ms_resid), float(ms_judge > ms_resid)
    terms = [
        (c_seed * ms_seed, s - 1),
        (c_judge * ms_judge, j - 1),
        ((1.0 - c_seed - c_judge) * ms_resid, (s - 1) * (j - 1)),
    ]
    variance = sum(term for term, _ in terms) / (s * j)
    spread = sum(term**2 / df for term, df in terms)
    df_total = (s * j * variance) ** 2 / spread if spread > 0 else float("inf")
    return variance**0.5, df_total


SUMMARY_FILE = "summary.json"


def update_summary(
    out: Path,
    table: str,
    rows: list[dict[str, Any]],
    *,
    replace_by: tuple[str, ...] = ("table", "dataset", "model", "protocol", "metric"),
) -> None:
    """Put ``rows`` of ``table`` into ``out/summary.json``, the machine-readable digest.

    Each row: ``{table, dataset, model, protocol, metric, mean, sd, n_seeds, steps,
    paper_mean, paper_sd}``. A row replaces the stored ones that agree with it on
    ``replace_by`` (by default the table, dataset, model, protocol and metric); the others
    are kept, so runs of different presets accumulate.
    """
    path = out / SUMMARY_FILE
    fields = ("table", "dataset", "model", "protocol", "metric", "mean", "sd", "n_seeds",
              "steps", "paper_mean", "paper_sd")  # fmt: skip
    # Where a row has several judges: the standard error of its mean over seeds x judges
    # (two_way_standard_error) and its degrees of freedom, which the gap test uses.
    optional = ("se", "se_df")
    for row in rows:
        missing = [f for f in fields if f not in row]
        if missing:
            raise ValueError(f"summary row of {table} lacks {missing}: {row}")
        if row["table"] != table:
            raise ValueError(f"a row of table {row['table']} given as one of {table}: {row}")

    def key(row: dict[str, Any]) -> tuple[Any, ...]:
        return tuple(row.get(f) for f in replace_by)

    new_keys = {key(row) for row in rows}
    kept = json.loads(path.read_text()) if path.exists() else []
    kept = [row for row in kept if key(row) not in new_keys]
    out.mkdir(parents=True, exist_ok=True)
    digest = [{f: r[f] for f in fields + optional if f in r} for r in rows]
    path.write_text(json.dumps(kept + digest, indent=1) + "\n")
