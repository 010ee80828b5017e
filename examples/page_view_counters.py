"""Web-analytics counters: read-your-own-writes, three ways (PyMongo 2 requests).

The example from the PyMongo 2 "Requests" page: count page views for each
(region, browser, os), then show the visitor the number of page views from
their region *including their own visit*.  The counter update is a write and
the region total is a read; unless both reach the server in order, the visitor
may be shown a total that misses their own visit.  Three ways to be sure:

1. ``safe=True`` updates: the write is acknowledged before the read is sent.
   Errors are reported, but every visit waits for a round trip.
2. ``Connection(auto_start_request=True)`` (the PyMongo 2 default): each thread
   keeps one socket, so its ``safe=False`` update is applied before its read.
3. ``Connection(auto_start_request=False)`` with ``start_request()`` around the
   update and the read only: fewer sockets, same guarantee.

Simulated traffic: ``--threads`` threads make ``--visits`` visits each.  Every
visit checks the total it shows: all visits to that region already *finished*
(their read came back, so their write was applied) plus this one must be in
it.  A shortfall is a *violation*: the visitor was shown a page-view count
that misses their own visit (or an earlier one), which is exactly what
read-your-own-writes forbids.  Exits 1 on a violation, an error, or when the
final totals do not add up to the number of visits.  At the end a table
compares the three ways' pool statistics (``pool.get_stats()``).

    python examples/page_view_counters.py [--threads 20] [--visits 25] [--uri URI]

Uses ``--uri``, else ``$MONGODB_URI``, else a throwaway mongod
(:class:`mongo_requests.testing.MongodServer`, stopped at the end).
"""

from __future__ import annotations

import argparse
import collections
import os
import random
import sys
import threading
import time

from mongo_requests import Connection
from mongo_requests.testing import MongodServer

REGIONS = ["US", "EU", "APAC", "LATAM"]
BROWSERS = ["Firefox", "Chrome", "Safari"]
OSES = ["Mac OS X", "Windows", "Linux"]
# One database per run, so concurrent runs on a shared server do not collide.
DB_NAME = "requests_example_%d" % os.getpid()


def region_total(counts, region):
    """Page views from ``region``: the sum over its (browser, os) counters."""
    return sum(p["n"] for p in counts.find({"region": region}))


# -- one visit, in each of the three ways -------------------------------------
def visit_safe(connection, counts, region, browser, os_):
    """Way 1: an acknowledged update, no request.  Any socket will do."""
    counts.update({"region": region, "browser": browser, "os": os_}, {"$inc": {"n": 1}}, upsert=True, safe=True)
    return region_total(counts, region)


def visit_auto(connection, counts, region, browser, os_):
    """Way 2: unacknowledged update; auto_start_request pins this thread's socket."""
    counts.update({"region": region, "browser": browser, "os": os_}, {"$inc": {"n": 1}}, upsert=True, safe=False)
    return region_total(counts, region)  # same socket: runs after the update


def visit_request(connection, counts, region, browser, os_):
    """Way 3: an explicit request, exactly as in the PyMongo 2 docs."""
    request = connection.start_request()
    try:
        counts.update({"region": region, "browser": browser, "os": os_}, {"$inc": {"n": 1}}, upsert=True, safe=False)
        # always runs after update has completed
        return region_total(counts, region)
    finally:
        request.end()  # the socket goes back to the pool for other threads


def visit_request_with(connection, counts, region, browser, os_):
    """Way 3 again, with the request as a ``with`` block."""
    with connection.start_request():
        counts.update({"region": region, "browser": browser, "os": os_}, {"$inc": {"n": 1}}, upsert=True, safe=False)
        return region_total(counts, region)


# (title, Connection options, visit functions: way 3 alternates its two forms)
WAYS = [
    ("1. safe=True updates, no request", {"auto_start_request": False}, [visit_safe]),
    ("2. Connection(auto_start_request=True)", {"auto_start_request": True}, [visit_auto]),
    (
        "3. Connection(auto_start_request=False) + start_request()",
        {"auto_start_request": False},
        [visit_request, visit_request_with],
    ),
]


def run_way(uri, title, options, visit_funcs, n_threads, n_visits):
    """Simulate the traffic one way and print its report.

    Returns ``(ok, stats)``: True if all is well, and the pool's statistics
    (``pool.get_stats()``) after the traffic and the final read.
    """
    connection = Connection(uri, **options)
    counts = connection[DB_NAME]["counts_way%s" % title[0]]
    finished = collections.Counter()  # region -> visits whose read came back
    lock = threading.Lock()
    violations, errors = [], []
    start = threading.Barrier(n_threads)  # all threads begin together

    def visitor(index):
        rnd = random.Random(index)  # reproducible traffic
        try:
            start.wait()
            for i in range(n_visits):
                region = rnd.choice(REGIONS)
                with lock:
                    floor = finished[region]  # writes known to be applied
                visit = visit_funcs[i % len(visit_funcs)]
                shown = visit(connection, counts, region, rnd.choice(BROWSERS), rnd.choice(OSES))
                if shown < floor + 1:  # misses our own visit, or an earlier one
                    violations.append((region, shown, floor + 1))
                with lock:
                    finished[region] += 1
        except Exception as exc:  # report it; the main thread fails the run
            errors.append(repr(exc))

    threads = [threading.Thread(target=visitor, args=(i,)) for i in range(n_threads)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0

    # The final totals, per region, from the server.
    totals = collections.Counter()
    for doc in counts.find():
        totals[doc["region"]] += doc["n"]
    expected = n_threads * n_visits
    total = sum(totals.values())

    print("\n== %s ==" % title)
    print(
        "visits: %d  violations: %d  errors: %d  elapsed: %.3fs"
        % (sum(finished.values()), len(violations), len(errors), elapsed)
    )
    for region, shown, needed in violations[:5]:
        print(
            "  violation: a %s visitor was shown %d page views, but at least %d had happened" % (region, shown, needed)
        )
    for err in errors[:5]:
        print("  error: %s" % err)
    print("  %-8s %10s" % ("region", "page views"))
    for region in REGIONS:
        print("  %-8s %10d" % (region, totals[region]))
    print("  %-8s %10d  (expected %d)" % ("total", total, expected))
    stats = connection.pool.get_stats()
    connection.close()
    return not violations and not errors and total == expected, stats


# Rows of the pool-statistics table: (label, get_stats() key, why it differs
# between the ways).  Counters count since the pool was created; gauges
# (open, pinned) are the state after the way's traffic and its final read.
STATS_ROWS = [
    ("sockets opened", "created"),
    ("sockets open at the end", "open"),
    ("pinned at the end", "pinned"),
    ("checkouts (pool visits)", "checkouts"),
    ("requests started", "requests_started"),
    ("sockets pinned", "pins"),
    ("waits for a free socket", "waits"),
    ("taken back from dead threads", "reclaimed"),
]

STATS_NOTES = """\
  Way 1 checks a socket out of the pool for every operation (two per visit).
  Way 2 pins one socket to each thread for the thread's life: the pool takes
  it back when the thread ends ("taken back"); the one still pinned belongs
  to the main thread, which read the final totals.  Way 3 pins a socket for
  each visit only, and request.end() gives it back."""


def print_stats_table(stats_by_way):
    """Print the ways' pool statistics side by side, one row per statistic."""
    print("\n== pool statistics (pool.get_stats()) ==")
    print("  %-30s" % "" + "".join("%8s" % ("way %d" % (i + 1)) for i in range(len(stats_by_way))))
    for label, key in STATS_ROWS:
        print("  %-30s" % label + "".join("%8d" % stats.get(key, 0) for stats in stats_by_way))
    print(STATS_NOTES)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=20, help="concurrent visitors (default 20)")
    parser.add_argument("--visits", type=int, default=25, help="visits per thread (default 25)")
    parser.add_argument(
        "--uri",
        default=os.environ.get("MONGODB_URI"),
        help="MongoDB URI (default $MONGODB_URI, else a throwaway mongod)",
    )
    args = parser.parse_args(argv)
    if args.threads < 1 or args.visits < 1:
        parser.error("--threads and --visits must be at least 1")

    server = None
    uri = args.uri
    if not uri:
        server = MongodServer().start()
        uri = server.uri
    print(
        "MongoDB at %s%s; %d threads x %d visits"
        % (uri, " (throwaway mongod)" if server else "", args.threads, args.visits)
    )
    print(
        "A violation is a visit that was shown its region's page views without its own\n"
        "visit (or one that had already finished) counted: a read that missed a write."
    )
    try:
        results = [run_way(uri, title, options, funcs, args.threads, args.visits) for title, options, funcs in WAYS]
        ok = all(way_ok for way_ok, _ in results)
        print_stats_table([stats for _, stats in results])
        cleanup = Connection(uri)
        cleanup.drop_database(DB_NAME)
        cleanup.close()
    finally:
        if server is not None:
            server.stop()
            server.cleanup()
    print("\n%s" % ("OK: every visitor saw their own visit" if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
