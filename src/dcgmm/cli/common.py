"""Helpers shared by the command-line modules."""

import argparse
import contextlib
import difflib
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

from dcgmm.exceptions import OutputError
from dcgmm.interfaces.runs import Run
from dcgmm.io.data import Dataset, load_dataset, parse_classes
from dcgmm.io.image_files import check_size

__all__ = [
    "CLIError",
    "Parser",
    "changed_options",
    "check_writable",
    "flag_name",
    "load_data",
    "parse_size",
    "refuse_options",
    "refuse_untaken",
    "remove_if_empty",
    "run_data",
]


class CLIError(Exception):
    """A user error the CLI reports as one line, without a traceback."""


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line with a hint, not a usage block.

    Subcommand parsers are of the same class (``add_subparsers`` copies it), and
    :attr:`commands` maps each subcommand to its parser.
    """

    commands: "Mapping[str, Parser]"

    def error(self, message: str) -> NoReturn:
        """Print ``PROG: error: MESSAGE; see `PROG --help``` and exit with status 2."""
        self.exit(2, f"{self.prog}: error: {message}; see `{self.prog} --help`\n")

    def reject_unknown(self, unknown: list[str]) -> NoReturn:
        """Report flags no parser recognised, suggesting the closest known ones."""
        known = list(self._option_string_actions)  # every flag string of this parser
        guesses = []
        for arg in unknown:
            flag = arg.split("=", 1)[0]
            close = difflib.get_close_matches(flag, known, n=1) if flag.startswith("-") else []
            guesses += [f"{close[0]} for {flag}"] if close else []
        guess = f"; did you mean {', '.join(guesses)}?" if guesses else ""
        self.error(f"unrecognized arguments: {' '.join(unknown)}{guess}")


def changed_options(args: argparse.Namespace, parser: argparse.ArgumentParser) -> set[str]:
    """Return the options of ``parser`` whose value in ``args`` is not their default."""
    return {
        action.dest
        for action in parser._actions
        if action.dest != "help"
        and action.default is not argparse.SUPPRESS
        and action.dest in vars(args)
        and getattr(args, action.dest) != action.default
    }


def flag_name(dest: str) -> str:
    """Return the flag of an argparse destination: ``-n`` for ``n``, ``--top-s`` for ``top_s``."""
    return f"-{dest}" if len(dest) == 1 else "--" + dest.replace("_", "-")


def refuse_options(args: argparse.Namespace, accepted: set[str], what: str) -> None:
    """Raise a one-line :class:`CLIError` for any given option that ``what`` does not take.

    ``args.given_options`` (set by :func:`dcgmm.cli.main.main`) names the options given; none may be
    accepted and then ignored.
    """
    refused = sorted(getattr(args, "given_options", set()) - accepted)
    if refused:
        flags = ", ".join(flag_name(f) for f in refused)
        takes = ", ".join(flag_name(f) for f in sorted(accepted - {"run_dir"}))
        verb = "does" if len(refused) == 1 else "do"
        raise CLIError(f"{flags} {verb} not apply to {what}; it takes {takes}")


def refuse_untaken(
    args: argparse.Namespace,
    run: Run,
    flags: Mapping[str, tuple[str, str]],
    always: set[str],
) -> None:
    """Refuse, in one line, every given flag that feeds an option the run's model does not take.

    ``flags`` maps a flag (its ``dest``) to the ``(method, option)`` of the run's model it
    feeds (:meth:`dcgmm.interfaces.runs.Run.accepts`); ``always`` are the flags every model
    takes. So a DCGMM's sampling knobs are refused on a VAE run, by what the model takes, not
    by the run's kind.
    """
    taken = {flag for flag, (method, option) in flags.items() if option in run.accepts(method)}
    refuse_options(args, always | taken, f"a {run.name} run")


def load_data(
    source: str,
    split: str,
    classes: str | None,
    limit_per_class: int | None,
    limit: int | None = None,
    *,
    compact: bool = False,
    resize: Sequence[int] | None = None,
    shard: tuple[int, int] | None = None,
) -> Dataset:
    """Load a data flag's dataset; ``compact`` keeps uint8 pixels as uint8 (for training).

    ``resize`` is ``--resize`` of a new run, or the size its ``config.json`` recorded: a run
    trained on resized images reads every later data set at that size too. ``shard``: one
    process's block of a data-parallel job (:func:`dcgmm.io.data.load_dataset`).
    """
    try:
        size = check_size(tuple(resize)) if resize is not None else None
    except ValueError as err:
        raise CLIError(str(err)) from None
    return load_dataset(
        source,
        split=split,  # type: ignore[arg-type]
        classes=parse_classes(classes),
        limit_per_class=limit_per_class,
        limit=limit,
        dtype="auto" if compact else "float32",
        resize=size,
        shard=shard,
    )


def parse_size(text: str) -> tuple[int, int]:
    """Parse ``--resize H,W`` (e.g. ``28,28``)."""
    try:
        h, w = (int(part) for part in text.split(","))
        return check_size((h, w))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected the height and width as H,W, e.g. 28,28; got {text!r}"
        ) from None


def run_data(run_dir: Path, config: Mapping[str, Any], data: str | None = None) -> dict[str, Any]:
    """Return the data record of a run's config, its source replaced by ``--data`` if given.

    A run trained from Python on in-memory images records no source: a command that needs its
    data then asks for ``--data``.
    """
    record = dict(config.get("data") or {})
    if data is not None:
        record["source"] = data
    if not record.get("source"):
        raise CLIError(
            f"{run_dir}'s config.json names no data source (it was trained from Python on "
            "images in memory); pass --data PATH (an IDX folder, a .npz, or a built-in name)"
        )
    return record


def check_writable(path: Path, flag: str = "--out") -> None:
    """Create the folder ``path`` if needed and write a probe file into it.

    Raises
    ------
    OutputError
        If the folder cannot be created or written (read-only, full disk, a file in the way),
        with a hint naming ``flag``.
    """
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=path, prefix=".write-test.")
    except OSError as err:
        raise OutputError.from_os_error(err, path, flag=flag) from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(b"x")
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as err:
        raise OutputError.from_os_error(err, path, flag=flag) from None
    finally:
        Path(probe).unlink(missing_ok=True)


def remove_if_empty(folder: Path) -> None:
    """Remove ``folder`` if nothing was written into it (a crash keeps whatever was)."""
    with contextlib.suppress(OSError):
        folder.rmdir()  # fails unless empty
