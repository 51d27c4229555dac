"""The shape of the source itself: modules and functions short enough to read (issue 16)."""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "dcgmm"
MAX_FUNCTION_LINES = 60  # docstring included
MAX_MODULE_LINES = 400


def test_no_function_in_src_is_longer_than_sixty_lines():
    long = []
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1  # type: ignore[operator]
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(SRC)}:{node.lineno} {node.name} ({lines})")
    assert not long, "split these into named steps: " + "; ".join(long)


def test_no_module_in_src_is_longer_than_four_hundred_lines():
    long = [
        f"{path.relative_to(SRC)} ({n})"
        for path in sorted(SRC.rglob("*.py"))
        if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES
    ]
    assert not long, "split these by concept: " + "; ".join(long)
