"""Summarise a mutmut run: mutants per module and verdict, the score, and every survivor.

    python tools/mutation_report.py mutants --out docs/mutation/full.json [--label after]
        [--sample names.txt]

Reads the ``*.meta`` files mutmut writes beside each mutated module (``exit_code_by_key``)
and prints a markdown table; ``--out`` also writes the numbers and the survivors' names as
JSON (with the date, machine and versions). Score = killed / (killed + survived + no tests +
timeout): a mutant that no selected test runs counts against the suite. ``--sample`` counts
only the mutants named in a file (one per line): a seeded random sample scores a suite in a
fraction of a full run's time (docs/mutation.md).
"""

import argparse
import ast
import json
import platform
import sys
from collections import Counter
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

# mutmut's exit codes (mutmut.stats.status_by_exit_code), folded into four verdicts.
VERDICT = {1: "killed", 3: "killed", 0: "survived", 5: "no tests", 33: "no tests", 36: "timeout",
           -24: "timeout", 24: "timeout", 152: "timeout", 255: "timeout", 37: "killed"}  # fmt: skip


def verdict(code: int | None) -> str:
    """Return the verdict of one exit code."""
    if code is None:
        return "not checked"
    return VERDICT.get(code, "suspicious")


NOT_KILLED = ("survived", "no tests", "timeout", "suspicious")


def collect(mutants: Path, only: set[str] | None = None) -> dict[str, dict[str, str]]:
    """Return {module path: {mutant name: verdict}}, for the names in ``only`` if given."""
    out = {}
    for meta in sorted(mutants.glob("src/**/*.py.meta")):
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        module = str(meta.relative_to(mutants)).removesuffix(".meta")
        out[module] = {
            name: verdict(code)
            for name, code in sorted(codes.items())
            if only is None or name in only
        }
    return out


# Calls whose string arguments only ever reach an error message (the name of the checked thing).
MESSAGE_CALLS = {"check_input", "check_nhwc", "check_images", "check_pixels", "_as_float64",
                 "check_writable", "OutputError", "from_os_error"}  # fmt: skip
LOG_CALLS = {"debug", "info", "warning", "error", "warn", "exception"}


def _functions(module_source: str) -> dict[str, ast.FunctionDef]:
    """Every function and method of a mutated module by its mutmut name (``xǁClassǁf``...)."""
    out = {}
    for node in ast.walk(ast.parse(module_source)):
        if isinstance(node, ast.FunctionDef):
            out[node.name] = node
    return out


def _in_message(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    """Whether ``node`` sits in a raise, a warning, a log call or a message-only argument."""
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.Raise):
            return True
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in MESSAGE_CALLS or name in LOG_CALLS or name.endswith(("Error", "Warning")):
                return True
    return False


def _call_name(node: ast.Call) -> str:
    func = node.func
    return func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")


def _normalised(fn: ast.FunctionDef, rule: str) -> str:
    """Return the function's code, with what ``rule`` calls harmless taken out, as an AST dump.

    ``message``: string constants (and None) in raises, warnings and log calls, and string
    arguments of calls that only name the checked value in their messages; ``device``: every
    ``device=`` keyword; ``strict``: the ``strict=`` keyword of ``zip``.
    """
    tree = ast.parse(ast.unparse(fn))
    fn2 = tree.body[0]
    assert isinstance(fn2, ast.FunctionDef)
    fn2.name = "f"
    if fn2.body and isinstance(fn2.body[0], ast.Expr):  # the docstring
        fn2.body = fn2.body[1:] or [ast.Pass()]
    parents = {c: p for p in ast.walk(fn2) for c in ast.iter_child_nodes(p)}
    for node in list(ast.walk(fn2)):
        if isinstance(node, ast.Call):
            name = _call_name(node)
            if rule == "message" and name in MESSAGE_CALLS:
                node.args = [a for a in node.args if not _is_text(a)]
                node.keywords = [k for k in node.keywords if not _is_text(k.value)]
            if rule == "device":
                node.keywords = [k for k in node.keywords if k.arg != "device"]
            if rule == "strict" and name == "zip":
                node.keywords = [k for k in node.keywords if k.arg != "strict"]
        if rule == "message" and _is_text(node) and _in_message(node, parents):
            _replace(parents[node], node, ast.Constant(value=""))
    return ast.dump(fn2)


def _is_text(node: ast.AST) -> bool:
    return isinstance(node, ast.JoinedStr) or (
        isinstance(node, ast.Constant) and (isinstance(node.value, str) or node.value is None)
    )


def _replace(parent: ast.AST, old: ast.AST, new: ast.AST) -> None:
    for field, value in ast.iter_fields(parent):
        if value is old:
            setattr(parent, field, new)
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if item is old:
                    value[i] = new


_PARSED: dict[Path, dict[str, ast.FunctionDef]] = {}


def classify(mutants: Path, module: str, name: str) -> str:
    """Return why a surviving mutant may be harmless, or "behaviour" when it may not be.

    "message": only text that reaches an error message, warning or log line differs;
    "device": only a ``device=`` argument differs (the same on the CPU, where this runs);
    "strict": only ``zip``'s ``strict=`` differs (equal lengths there by construction);
    "einsum labels": an einsum equation with other letters for the same indices;
    "behaviour": anything else (triaged by hand in docs/mutation.md).
    """
    path = mutants / module
    if path not in _PARSED:
        _PARSED[path] = _functions(path.read_text())
    functions = _PARSED[path]
    short = name.rsplit(".", 1)[-1]
    orig = functions.get(short.rsplit("__mutmut_", 1)[0] + "__mutmut_orig")
    mutant = functions.get(short)
    if orig is None or mutant is None:
        return "behaviour"
    for rule in ("message", "device", "strict"):
        if _normalised(orig, rule) == _normalised(mutant, rule):
            return rule
    a, b = ast.unparse(orig), ast.unparse(mutant).replace(mutant.name, orig.name)
    if a.lower() == b.lower() and "einsum" in a:
        return "einsum labels"
    return "behaviour"


def score(counts: Counter) -> float | None:
    """Return the fraction of judged mutants that were killed."""
    judged = counts["killed"] + counts["survived"] + counts["no tests"] + counts["timeout"]
    return counts["killed"] / judged if judged else None


def table(results: dict[str, dict[str, str]]) -> str:
    """Return the markdown table of verdicts per module."""
    kinds = ["killed", "survived", "no tests", "timeout", "suspicious", "not checked"]
    lines = ["| module | mutants | " + " | ".join(kinds) + " | score |",
             "|---|---:|" + "---:|" * len(kinds) + "---:|"]  # fmt: skip
    total: Counter = Counter()
    for module, verdicts in results.items():
        counts = Counter(verdicts.values())
        total += counts
        s = score(counts)
        cells = " | ".join(str(counts[k]) for k in kinds)
        lines.append(f"| `{module}` | {len(verdicts)} | {cells} | "
                     f"{'' if s is None else f'{100 * s:.1f}%'} |")  # fmt: skip
    s = score(total)
    cells = " | ".join(str(total[k]) for k in kinds)
    lines.append(f"| **all** | {sum(total.values())} | {cells} | "
                 f"**{'' if s is None else f'{100 * s:.1f}%'}** |")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Print the table and the survivors; write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("mutants", type=Path, help="the mutants/ folder of a finished run")
    parser.add_argument("--out", type=Path, help="also write the numbers as JSON here")
    parser.add_argument("--label", default="", help="a name for this run in the JSON")
    parser.add_argument("--wall-minutes", type=float, help="the run's wall time, to record")
    parser.add_argument("--sample", type=Path, help="count only the mutants named in this file")
    args = parser.parse_args(argv)
    only = None
    if args.sample is not None:
        only = {line.strip() for line in args.sample.read_text().splitlines() if line.strip()}
    results = collect(args.mutants, only)
    if not results:
        print(f"no mutmut results under {args.mutants}; run `make mutants` first", file=sys.stderr)
        return 1
    print(table(results))
    kinds: dict[str, str] = {}
    for module, verdicts in results.items():
        for name, verdict_ in verdicts.items():
            if verdict_ in NOT_KILLED:
                kinds[name] = classify(args.mutants, module, name)
    print(f"\n{len(kinds)} not killed: {dict(Counter(kinds.values()))}")
    for name, kind in kinds.items():
        print(f"- {kind:<14} {name}")
    if args.out:
        total = Counter(x for v in results.values() for x in v.values())
        record = {
            "label": args.label,
            "sample": None if args.sample is None else str(args.sample),
            "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": f"{platform.machine()}, {platform.processor() or 'unknown CPU'}",
            "python": platform.python_version(),
            "torch": version("torch"),
            "mutmut": version("mutmut"),
            "wall_minutes": args.wall_minutes,
            "counts": dict(total),
            "score": score(total),
            "modules": {m: dict(Counter(v.values())) for m, v in results.items()},
            "not_killed": {
                n: {"verdict": x, "kind": kinds[n]}
                for v in results.values()
                for n, x in v.items()
                if x in NOT_KILLED
            },
        }
        args.out.write_text(json.dumps(record, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
