"""A gevent web crawler that stores pages with unacknowledged (w=0) writes.

Hundreds of greenlets crawl a generated web site and store, all with ``w=0``:
``pages`` (url, title, size, links; upserted on url), ``inbound`` (a counter
per url, ``$inc``-ed for each link to it) and ``workers`` (per-greenlet stats).

``auto_start_request=False``: each operation borrows any free socket, so 200
greenlets share a pool of 20.  Where a greenlet must *read its own writes* it
uses ``with client.start_request():``, which pins one socket to it; the server
runs a connection's messages in order, so the read sees the writes.  Here each
greenlet reads back its stats document after storing a page and checks that it
counts that page (``--no-requests`` drops the request: watch the violations).
The HTTP fetch stays *outside* the request: never hold a pinned socket while
waiting on the network.

    python examples/crawler.py [--greenlets 200] [--pages 2000] [--uri URI]

Uses ``--uri``, else ``$MONGODB_URI``, else a throwaway mongod; the site is
served by this process on 127.0.0.1.  The URI may name a replica set
(``mongodb://h1,h2,h3/?replicaSet=rs0``, or one seed and ``replicaSet``):
the writes and the read-backs of a request then go through the request's
socket on the primary, so they stay in order.  If the primary changes during
the crawl, ``w=0`` writes sent to the old one may be lost (nothing reports
them); the final check then says which pages or counts are missing.  Exits 0 only when every reachable page
is stored with the right inbound link count and no greenlet missed its own write.
"""

if __name__ == "__main__":
    # Patch first, before anything imports socket, ssl or threading: urllib's
    # sockets must be gevent sockets, or one fetch would block every greenlet.
    from gevent import monkey

    monkey.patch_all()

import argparse
import collections
import contextlib
import os
import random
import re
import sys
import time
import urllib.parse
import urllib.request

import gevent
import gevent.event
import gevent.queue
from gevent.pywsgi import WSGIServer

from mongo_requests import MongoClient
from mongo_requests.testing import MongodServer

# -- the web site: a fixed link graph, so every run crawls the same pages ------
WORDS = (
    "gevent greenlet socket request pool mongod cursor upsert crawler frontier "
    "link page server client write read concern queue monitor index"
).split()


def page_links(n, pages):
    """Pages that /page/n links to.  n+1 makes all reachable from /page/0;
    the others scatter links so that inbound counts differ."""
    targets = {(n * 7 + 1) % pages, (n * 13 + 5) % pages, (n + 1) % pages, (n * n + 3) % pages}
    targets.discard(n)
    return sorted(targets)


def link_graph(pages):
    """(pages reachable from /page/0, Counter of inbound links per page): the truth."""
    seen, todo, inbound = {0}, [0], collections.Counter()
    while todo:
        targets = page_links(todo.pop(), pages)
        inbound.update(targets)
        todo += [t for t in targets if t not in seen]
        seen.update(targets)
    return seen, inbound


def render_page(n, pages):
    """A few KB of HTML: a title, some text, and the links."""
    rnd = random.Random(n)
    text = "".join("<p>%s</p>\n" % " ".join(rnd.choice(WORDS) for _ in range(rnd.randint(60, 140))) for _ in range(5))
    anchors = "".join('<li><a href="/page/%d">page %d</a></li>\n' % (t, t) for t in page_links(n, pages))
    return "<html><head><title>Page %d of %d</title></head><body>\n%s<ul>\n%s</ul></body></html>\n" % (
        n,
        pages,
        text,
        anchors,
    )


def make_site(pages, delay):
    """A WSGI app serving /page/0 .. /page/<pages-1>, each after a short random delay."""

    def app(environ, start_response):
        m = re.fullmatch(r"/page/(\d+)", environ["PATH_INFO"])
        if not m or int(m[1]) >= pages:
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"not found\n"]
        gevent.sleep(random.uniform(0, delay))  # "network latency": yields to other greenlets
        body = render_page(int(m[1]), pages).encode()
        start_response("200 OK", [("Content-Type", "text/html; charset=utf-8"), ("Content-Length", str(len(body)))])
        return [body]

    return app


# -- the crawler -----------------------------------------------------------------
HREF = re.compile(r'<a href="([^"]+)"')
TITLE = re.compile(r"<title>(.*?)</title>", re.S)


def fetch(url, tries=3):
    """GET url (urllib, gevent-patched), retrying transient network errors."""
    for attempt in range(tries):
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                return resp.read().decode()
        except OSError:
            if attempt == tries - 1:
                raise
            gevent.sleep(0.05 * (attempt + 1))


class Crawl:
    """Shared state.  Greenlets switch only when they block (network, pool
    wait), never between the check and the add in enqueue(), so no lock."""

    def __init__(self, client, db, report_every, use_requests=True):
        self.client, self.db, self.report_every, self.use_requests = client, db, report_every, use_requests
        # A JoinableQueue is a Queue that counts unfinished work: put() adds
        # one, task_done() removes one, join() waits for zero.  A url stays
        # counted until its page is stored *and* its links are queued, so the
        # frontier cannot look drained while a page is still in flight.
        self.frontier, self.seen = gevent.queue.JoinableQueue(), set()
        self.stored, self.violations, self.errors = 0, [], []

    def enqueue(self, url):
        if url not in self.seen:
            self.seen.add(url)
            self.frontier.put(url)

    def worker(self, wid):
        db, me, mine = self.db, "worker-%03d" % wid, 0
        while True:
            url = self.frontier.get()
            if url is None:  # the main greenlet's "all done"
                return
            try:
                html = fetch(url)  # outside any request: no socket held
                title = TITLE.search(html)[1]
                # Absolute urls, deduplicated, in page order.
                targets = list(dict.fromkeys(urllib.parse.urljoin(url, h) for h in HREF.findall(html)))
                # The request: every operation in this block uses one socket,
                # pinned to this greenlet until the block ends.
                with self.client.start_request() if self.use_requests else contextlib.nullcontext():
                    db.pages.update_one(
                        {"url": url}, {"$set": {"title": title, "size": len(html), "links": targets}}, upsert=True
                    )  # w=0
                    for t in targets:
                        db.inbound.update_one({"_id": t}, {"$inc": {"count": 1}}, upsert=True)  # w=0
                    db.workers.update_one(
                        {"_id": me}, {"$inc": {"pages": 1, "bytes": len(html)}, "$set": {"last_url": url}}, upsert=True
                    )  # w=0
                    # Read our own writes: same socket, so the server applied
                    # the writes above before it runs this find.  Without the
                    # request this find could run on another socket, ahead of
                    # them.  Its reply also proves them applied, for verify().
                    stats = db.workers.find_one({"_id": me})
                mine += 1
                if stats is None or stats["pages"] != mine or stats["last_url"] != url:
                    self.violations.append((me, url, stats))
                self.stored += 1
                if stats and self.stored % self.report_every == 0:
                    print(
                        "  %5d pages stored; %s has stored %d pages, %.1f KB (its stats doc says)"
                        % (self.stored, me, stats["pages"], stats["bytes"] / 1024.0),
                        flush=True,
                    )
                for t in targets:
                    self.enqueue(t)
            except Exception as exc:  # report, keep crawling; main() fails the run
                self.errors.append("%s: %r" % (url, exc))
            finally:
                self.frontier.task_done()


def monitor(admin, samples, stop):
    """Sample the server's open connections every 50 ms (its own client and socket)."""
    while not stop.is_set():
        try:
            samples.append(admin.admin.command("serverStatus")["connections"]["current"])
        except Exception as exc:  # a missed sample is not worth failing the crawl
            print("  monitor: %r" % (exc,))
        stop.wait(0.05)


def verify(db, base, pages):
    """Compare what MongoDB holds with the real link graph: (stored, reachable, problems).

    No fence write is needed: every w=0 write was followed, in its request and
    on its socket, by the read-back, so all were applied before the workers
    finished.  (A w=1 write on one socket would say nothing about w=0 writes
    on *other* sockets.)  These finds are ordinary, answered reads.
    """
    url = lambda n: "%s/page/%d" % (base, n)  # noqa: E731
    reachable, inbound = link_graph(pages)
    want_pages = {url(n): n for n in reachable}
    want_inbound = {url(n): c for n, c in inbound.items()}
    docs = {d["url"]: d for d in db.pages.find({}, {"_id": 0, "url": 1, "links": 1})}
    got_inbound = {d["_id"]: d["count"] for d in db.inbound.find()}
    problems = ["missing page %s" % u for u in sorted(set(want_pages) - set(docs))]
    problems += ["unexpected page %s" % u for u in sorted(set(docs) - set(want_pages))]
    problems += [
        "wrong links on %s" % u
        for u, n in want_pages.items()
        if u in docs and docs[u]["links"] != [url(t) for t in page_links(n, pages)]
    ]
    problems += [
        "inbound %s: stored %s, real %s" % (u, got_inbound.get(u), want_inbound.get(u))
        for u in sorted(set(want_inbound) | set(got_inbound))
        if got_inbound.get(u) != want_inbound.get(u)
    ]
    if sum(d["pages"] for d in db.workers.find()) != len(docs):
        problems.append("the workers' stats docs do not add up to %d pages" % len(docs))
    return len(docs), len(want_pages), problems


def crawl(uri, args):
    # w=0 and no automatic requests: requests only where we ask for them.
    # The timeouts make sure no operation, nor any wait for a socket, hangs forever.
    client = MongoClient(
        uri,
        w=0,
        auto_start_request=False,
        use_greenlets=True,
        max_pool_size=args.max_pool_size,
        socketTimeoutMS=30000,
        waitQueueTimeoutMS=30000,
    )
    admin = MongoClient(uri, max_pool_size=1)  # for the monitor: not in the crawler's pool
    db = client[args.db]
    client.drop_database(args.db)
    db.pages.create_index("url", unique=True)  # acknowledged: commands always are

    site = WSGIServer(("127.0.0.1", 0), make_site(args.pages, args.delay), log=None)
    site.start()
    base = "http://127.0.0.1:%d" % site.server_port
    print(
        "site %s (%d pages), MongoDB %s, db %r, %d greenlets, max_pool_size %d"
        % (base, args.pages, uri, args.db, args.greenlets, args.max_pool_size),
        flush=True,
    )

    state = Crawl(client, db, max(1, args.pages // 10), not args.no_requests)
    samples, stop = [], gevent.event.Event()
    mon = gevent.spawn(monitor, admin, samples, stop)
    gevent.sleep(0.06)  # the first sample is the baseline, before the crawl
    t0 = time.perf_counter()
    state.enqueue(base + "/page/0")
    workers = [gevent.spawn(state.worker, i) for i in range(args.greenlets)]
    finished = state.frontier.join(timeout=args.timeout)  # the overall guard
    elapsed = time.perf_counter() - t0
    for _ in workers:
        state.frontier.put(None)  # one "stop" per worker
    gevent.joinall(workers, timeout=10)
    gevent.killall(workers, timeout=5)  # only stragglers after a timeout
    stop.set()
    mon.join()
    site.stop()

    print("crawl time:                  %.2f s (%.1f pages/s)" % (elapsed, state.stored / elapsed))
    print(
        "peak server connections:     %d (baseline %d; max_pool_size %d, +1 monitor socket)"
        % (max(samples, default=0), samples[0] if samples else 0, args.max_pool_size)
    )
    print("pool stats:                  %s" % (client.pool.get_stats(),))
    print("read-your-writes violations: %d" % len(state.violations))
    print("errors:                      %d" % len(state.errors))
    problems = ["crawl unfinished after %.0f s" % args.timeout]
    if finished:  # verify only a finished crawl: after a timeout, writes may be in flight
        stored, want, problems = verify(db, base, args.pages)
        print("pages stored:                %d of %d reachable" % (stored, want))
    for line in [repr(v) for v in state.violations[:5]] + state.errors[:5] + problems[:10]:
        print("  " + line)
    print("verification problems:       %d" % len(problems))
    if not args.keep:
        client.drop_database(args.db)
    admin.close()
    client.close()
    ok = not (state.violations or state.errors or problems)
    print("RESULT: %s" % ("OK" if ok else "TIMEOUT" if not finished else "FAILED"))
    return 0 if ok else 2 if not finished else 1


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--greenlets", type=int, default=200, help="crawler greenlets (default 200)")
    p.add_argument("--pages", type=int, default=2000, help="pages on the site (default 2000)")
    p.add_argument("--max-pool-size", type=int, default=20, help="sockets to MongoDB (default 20)")
    p.add_argument("--delay", type=float, default=0.01, help="max simulated latency, s (default 0.01)")
    p.add_argument("--timeout", type=float, default=300, help="give up after this many s (default 300)")
    p.add_argument(
        "--uri",
        default=os.environ.get("MONGODB_URI"),
        help="MongoDB URI (default $MONGODB_URI, else a throwaway mongod)",
    )
    p.add_argument("--db", default="crawler_example", help="database, dropped first (default %(default)s)")
    p.add_argument("--keep", action="store_true", help="keep the database afterwards")
    p.add_argument("--no-requests", action="store_true", help="no start_request(): see violations")
    args = p.parse_args(argv)
    if min(args.greenlets, args.pages, args.max_pool_size) < 1:
        p.error("--greenlets, --pages and --max-pool-size must be at least 1")
    server = None if args.uri else MongodServer().start()  # a throwaway mongod on 127.0.0.1
    try:
        return crawl(args.uri or server.uri, args)
    finally:
        if server is not None:
            server.stop()
            server.cleanup()


if __name__ == "__main__":
    sys.exit(main())
