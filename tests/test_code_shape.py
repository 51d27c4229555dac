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


def test_every_module_declares_its_public_names():
    """``__all__`` in every module (entry points and the version aside), naming what exists."""
    exempt = {"__main__.py", "_version.py", "baselines/__init__.py"}
    missing, unknown = [], []
    for path in sorted(SRC.rglob("*.py")):
        name = str(path.relative_to(SRC))
        if name in exempt:
            continue
        tree = ast.parse(path.read_text())
        declared = [
            node
            for node in tree.body
            if isinstance(node, ast.Assign | ast.AnnAssign)
            and any(
                isinstance(t, ast.Name) and t.id == "__all__"
                for t in (node.targets if isinstance(node, ast.Assign) else [node.target])
            )
        ]  # `__all__: list[str] = []` in a folder's __init__ that only documents it
        if not declared:
            missing.append(name)
            continue
        top = [
            inner
            for node in tree.body
            for inner in (node.body if isinstance(node, ast.Try | ast.If) else [node])
        ]  # names bound inside a top-level try (optional imports) count too
        defined = {
            n.id if isinstance(n, ast.Name) else n.name
            for node in top
            for n in (
                node.targets if isinstance(node, ast.Assign) else
                [node.target] if isinstance(node, ast.AnnAssign) else
                [node] if isinstance(node, ast.FunctionDef | ast.ClassDef) else
                [ast.Name(alias.asname or alias.name.split(".")[0])
                 for alias in node.names] if isinstance(node, ast.Import | ast.ImportFrom) else []
            )
            if isinstance(n, ast.Name | ast.FunctionDef | ast.ClassDef)
        }  # fmt: skip
        names = ast.literal_eval(declared[0].value)
        unknown += [f"{name}: {n}" for n in names if n not in defined]
    assert not missing, "declare __all__ in: " + ", ".join(missing)
    assert not unknown, "__all__ names what the module does not define: " + ", ".join(unknown)
