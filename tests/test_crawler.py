"""examples/crawler.py runs, as a user would run it, and stores the right data."""

from __future__ import annotations

import ast
import importlib.util
import os
import re

import pytest

import mongo_requests
from helpers import THREADS, run_child, unique_app

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = os.path.join(ROOT, "examples", "crawler.py")
GREENLETS, PAGES, POOL = 50, 300, 10

# The example patches itself when run; running this file again under each
# test mode would only repeat it.
pytestmark = pytest.mark.modes(THREADS)


def load_example():
    """Import the example for its link graph.  It monkey-patches only when run
    as __main__, so importing it leaves this process unpatched."""
    spec = importlib.util.spec_from_file_location("crawler_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def field(out, label, pattern=r"(\d+)"):
    m = re.search(r"^%s:\s+%s" % (re.escape(label), pattern), out, flags=re.M)
    assert m, "no %r line in the output:\n%s" % (label, out)
    return m


def test_crawler(mongodb_uri):
    run_crawler(mongodb_uri)


def test_crawler_on_a_replica_set(replica_set):
    # The same crawl against the 3-member set: the w=0 writes and their
    # read-backs in requests go to the primary, found from the URI's seeds.
    out = run_crawler(replica_set.uri)
    assert "MongoDB %s, " % replica_set.uri in out


def run_crawler(uri):
    """Run the example against ``uri``, check what it says and what the database holds; return its output."""
    crawler = load_example()
    dbname = unique_app("crawler_test")
    argv = [
        EXAMPLE,
        "--greenlets",
        str(GREENLETS),
        "--pages",
        str(PAGES),
        "--max-pool-size",
        str(POOL),
        "--uri",
        uri,
        "--db",
        dbname,
        "--keep",
    ]
    client = mongo_requests.MongoClient(uri)
    try:
        out = run_child(argv, timeout=120).stdout

        # What the example says about itself.
        stored = field(out, "pages stored", r"(\d+) of (\d+) reachable")
        assert (int(stored[1]), int(stored[2])) == (PAGES, PAGES), out
        assert int(field(out, "read-your-writes violations")[1]) == 0, out
        assert int(field(out, "errors")[1]) == 0, out
        assert int(field(out, "verification problems")[1]) == 0, out
        assert float(field(out, "crawl time", r"[\d.]+ s \(([\d.]+) pages/s\)")[1]) > 0, out
        # The crawler's pool plus the monitor's one socket, and a little slack
        # for other clients of a shared server; over the baseline, since a
        # replica set's members hold connections to each other.
        peak = field(out, "peak server connections", r"(\d+) \(baseline (\d+);")
        assert int(peak[1]) - int(peak[2]) <= POOL + 3, out
        stats = ast.literal_eval(field(out, "pool stats", r"(\{.*\})")[1])
        assert stats["max_size"] == POOL and stats["open"] <= POOL and stats["created"] <= POOL, stats
        assert stats["requests_started"] == stats["requests_ended"] == stats["pins"] == PAGES, stats
        assert stats["pinned"] == stats["in_use"] == stats["waiting"] == 0, stats
        assert "RESULT: OK" in out

        # What the database holds, checked independently of the example's verify().
        db = client[dbname]
        number = lambda url: int(re.fullmatch(r"http://127\.0\.0\.1:\d+/page/(\d+)", url)[1])  # noqa: E731
        pages = {number(d["url"]): d for d in db.pages.find()}
        assert sorted(pages) == list(range(PAGES))
        inbound = {number(d["_id"]): d["count"] for d in db.inbound.find()}
        reachable, real_inbound = crawler.link_graph(PAGES)
        assert reachable == set(range(PAGES))
        for n in (0, 1, 2, 7, 42, 150, PAGES - 1):
            assert [number(u) for u in pages[n]["links"]] == crawler.page_links(n, PAGES), n
            assert pages[n]["title"] == "Page %d of %d" % (n, PAGES), n
            assert inbound.get(n) == real_inbound[n], (n, inbound.get(n), real_inbound[n])
        assert inbound == dict(real_inbound)
        assert len(set(inbound.values())) > 1  # the graph is not trivially uniform
        workers = list(db.workers.find())
        assert len(workers) <= GREENLETS and sum(w["pages"] for w in workers) == PAGES
        return out
    finally:
        client.drop_database(dbname)
        client.close()
