"""A plain ``python -m pytest`` also runs the mode-sensitive files in the other modes.

Monkey-patching is process-wide, so each mode is a pytest of its own in a
child process (tests/run_mode.py), sharing this session's server.  CI and tox
start every mode themselves with tests/run_mode.py; there these tests are
deselected (the ``spawns_modes`` marker), so nothing runs twice.
"""

from __future__ import annotations

import re

import pytest

from helpers import MIXED, PATCHED, THREADS, UNPATCHED, child_env, run_child

# The files whose tests depend on the mode (greenlets, hubs, patching); the
# rest of the suite is the same code under every mode and runs in children
# only when CI asks for that mode.
MODE_FILES = [
    "tests/test_greenlets.py",
    "tests/test_greenlet_kills.py",
    "tests/test_soak_greenlets.py",
    "tests/test_seed_flight.py",
]


@pytest.mark.spawns_modes
@pytest.mark.modes(THREADS)
@pytest.mark.parametrize("child_mode", [PATCHED, UNPATCHED, MIXED])
def test_mode_files_pass_in_a_child(mongodb_uri, child_mode):
    proc = run_child(
        ["tests/run_mode.py", child_mode, "-q", "-p", "no:cacheprovider", *MODE_FILES],
        timeout=900,
        env=child_env(MONGODB_URI=mongodb_uri),
    )
    summary = proc.stdout.strip().splitlines()[-1]
    print("[%s] %s" % (child_mode, summary))
    # A child that selected nothing would pass while testing nothing.
    passed = re.search(r"(\d+) passed", summary)
    assert passed and int(passed.group(1)) > 0, proc.stdout[-3000:]
    assert not re.search(r"\d+ (failed|error|skipped|xfailed|xpassed)", summary), proc.stdout[-3000:]
