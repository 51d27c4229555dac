"""Every row of docs/errors.md: the bad input meets the documented error, message and all.

The cases live in tests/bad_inputs.py, which also writes the doc.
"""

import errno
import os

import pytest

from dcgmm.cli.main import main

from .bad_inputs import CASES, DOC, Case, cell, run_case


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input(case: Case, tmp_path):
    outcome, message = run_case(case, tmp_path)
    expected = f"exit {case.expected}" if case.is_cli else case.expected.__name__
    assert outcome == expected, message
    for fragment in case.fragments:
        assert fragment in message
    if case.is_cli:
        assert "Traceback" not in message
        lines = message.splitlines()
        # one line; a spec error adds the spec and a caret under the bad position
        assert len(lines) == 1 or (len(lines) == 3 and lines[2].strip() == "^"), message
    if case.check is not None:
        case.check(tmp_path)
    rows = [line for line in DOC.read_text().splitlines() if f"[{case.id}]`" in line]
    assert len(rows) == 1, f"docs/errors.md has {len(rows)} rows for {case.id}"
    assert cell(message) in rows[0], (
        "docs/errors.md quotes another message; regenerate it with "
        "`PYTHONPATH=src python -m tests.bad_inputs`"
    )


def test_the_doc_has_a_row_per_case_and_each_issue_case_is_covered():
    rows = [line for line in DOC.read_text().splitlines() if "test_bad_input[" in line]
    assert len(rows) == len(CASES)
    # 16: image folders (issue 17); 17: the GMM-layer solvers (issue 18)
    assert {case.number for case in CASES} == set(range(1, 18))


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root writes into read-only folders"
)
def test_read_only_out_for_real(tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        argv = ["train", "--model", "A", "--data", "mnist", "--steps", "1"]
        assert main([*argv, "--out", str(locked / "run")]) == 2
    finally:
        locked.chmod(0o755)
    err = capsys.readouterr().err
    assert "Permission denied" in err
    assert "Choose a writable output folder (--out)" in err


def test_output_error_keeps_the_errno():
    from dcgmm.exceptions import OutputError

    err = OutputError.from_os_error(OSError(errno.ENOSPC, "No space left on device"), "x")
    assert isinstance(err, OSError)
    assert err.errno == errno.ENOSPC
    assert str(err) == (
        "cannot write x (No space left on device): the disk is full. Free some space or "
        "choose another output folder (--out)"
    )
