"""Helpers shared by the command-line modules."""

from pathlib import Path

from dcgmm.data import Dataset, load_dataset, parse_classes


class CLIError(Exception):
    """A user error the CLI reports as one line, without a traceback."""


def load_data(
    source: str,
    split: str,
    classes: str | None,
    limit_per_class: int | None,
    limit: int | None = None,
) -> Dataset:
    return load_dataset(
        source,
        split=split,  # type: ignore[arg-type]
        classes=parse_classes(classes),
        limit_per_class=limit_per_class,
        limit=limit,
    )


def check_writable(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise CLIError(f"cannot write to run directory {path}: {err.strerror}") from None
