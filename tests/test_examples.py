"""The examples run, as a user would run them, against the session's mongod and its 3-member replica set."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

# The example runs in a child process with plain threads, whatever mode this
# pytest process is in, so one mode is enough.
pytestmark = pytest.mark.modes("threads")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = os.path.join(ROOT, "examples", "page_view_counters.py")


def test_page_view_counters(mongodb_uri):
    run_page_view_counters(mongodb_uri)


def test_page_view_counters_on_a_replica_set(replica_set):
    # The three ways, on the primary found from the set's seeds.
    run_page_view_counters(replica_set.uri)


def run_page_view_counters(uri):
    """Run the example against ``uri`` and check its report."""
    threads, visits = 5, 10
    proc = subprocess.run(
        [sys.executable, EXAMPLE, "--threads", str(threads), "--visits", str(visits), "--uri", uri],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = proc.stdout
    assert proc.returncode == 0, "exit code %d\n--- stdout ---\n%s\n--- stderr ---\n%s" % (
        proc.returncode,
        out,
        proc.stderr,
    )

    # One block per way, each starting with "== <title> ==".
    ways_out = out.split("== pool statistics", 1)[0]
    blocks = re.split(r"^== (.+) ==$", ways_out, flags=re.M)[1:]
    titles, bodies = blocks[0::2], blocks[1::2]
    assert [t[:2] for t in titles] == ["1.", "2.", "3."], out
    expected = threads * visits
    for title, body in zip(titles, bodies, strict=True):
        m = re.search(r"^visits: (\d+)\s+violations: (\d+)\s+errors: (\d+)", body, flags=re.M)
        assert m, "no summary line for %r:\n%s" % (title, body)
        assert (int(m[1]), int(m[2]), int(m[3])) == (expected, 0, 0), (title, body)
        per_region = [int(n) for n in re.findall(r"^  (?:US|EU|APAC|LATAM)\s+(\d+)$", body, flags=re.M)]
        assert len(per_region) == 4 and sum(per_region) == expected, (title, body)
        total = re.search(r"^  total\s+(\d+)", body, flags=re.M)
        assert total and int(total[1]) == expected, (title, body)
    assert "A violation is a visit that was shown its region's page views without its own" in out

    # The pool-statistics table: one row per statistic, one column per way.
    table = out.split("== pool statistics (pool.get_stats()) ==", 1)[1]
    rows = {}
    for m in re.finditer(r"^  (\S.*?)\s+(\d+)\s+(\d+)\s+(\d+)$", table, flags=re.M):
        rows[m[1].strip()] = [int(m[2]), int(m[3]), int(m[4])]
    assert "{" not in table, "raw dicts instead of a table:\n" + table
    # Way 1 uses no requests; ways 2 and 3 pin a socket per thread / per visit.
    assert rows["requests started"][0] == 0 and rows["sockets pinned"][0] == 0, table
    # Way 2: every visitor thread pinned one socket, and the pool took each back
    # when its thread ended; the main thread (which read the totals) keeps one.
    assert rows["taken back from dead threads"][1] == threads, table
    assert rows["pinned at the end"][1] == 1, table
    # Way 3: one request per visit, each ended, so nothing stays pinned.
    assert rows["requests started"][2] == expected, table
    assert rows["pinned at the end"][2] == 0, table
    for way in range(3):
        assert 1 <= rows["sockets opened"][way] <= threads + 1, table
        assert rows["checkouts (pool visits)"][way] >= 1, table
    assert "OK: every visitor saw their own visit" in out
