"""The developer tools stay in step with the code they act on."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import plant_bugs  # noqa: E402


def test_every_planted_bug_still_finds_its_text_once():
    # tools/plant_bugs.py replaces one exact piece of code per bug; when the code is rewritten
    # the bug no longer applies and the tool stops. Say which, here, before anyone runs it.
    stale = []
    for bug in plant_bugs.BUGS:
        source = (ROOT / "src" / "dcgmm" / bug.module).read_text()
        if source.count(bug.old) != 1:
            stale.append(f"{bug.name} ({bug.module}: found {source.count(bug.old)} times)")
        test_file = bug.test.split("::")[0]
        assert (ROOT / test_file).exists(), f"{bug.name}: {test_file} is missing"
    assert stale == []
