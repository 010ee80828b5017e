"""The examples run, as a user would run them, against the session's mongod."""
from __future__ import annotations

import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = os.path.join(ROOT, "examples", "page_view_counters.py")


def test_page_view_counters(mongodb_uri):
    threads, visits = 5, 10
    proc = subprocess.run(
        [sys.executable, EXAMPLE, "--threads", str(threads), "--visits", str(visits), "--uri", mongodb_uri],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = proc.stdout
    assert proc.returncode == 0, "exit code %d\n--- stdout ---\n%s\n--- stderr ---\n%s" % (
        proc.returncode, out, proc.stderr)

    # One block per way, each starting with "== <title> ==".
    blocks = re.split(r"^== (.+) ==$", out, flags=re.M)[1:]
    titles, bodies = blocks[0::2], blocks[1::2]
    assert [t[:2] for t in titles] == ["1.", "2.", "3."], out
    expected = threads * visits
    for title, body in zip(titles, bodies):
        m = re.search(r"^visits: (\d+)\s+violations: (\d+)\s+errors: (\d+)", body, flags=re.M)
        assert m, "no summary line for %r:\n%s" % (title, body)
        assert (int(m[1]), int(m[2]), int(m[3])) == (expected, 0, 0), (title, body)
        per_region = [int(n) for n in re.findall(r"^  (?:US|EU|APAC|LATAM)\s+(\d+)$", body, flags=re.M)]
        assert len(per_region) == 4 and sum(per_region) == expected, (title, body)
        total = re.search(r"^  total\s+(\d+)", body, flags=re.M)
        assert total and int(total[1]) == expected, (title, body)
        assert "pool.get_stats(): {" in body and "pool: <Pool " in body, (title, body)
    assert "OK: every visitor saw their own visit" in out
