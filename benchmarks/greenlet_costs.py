"""What one short-lived greenlet costs the driver: its first request against a later one, and what it holds parked.

    python -m benchmarks.greenlet_costs [--uri URI] [--greenlets 300] [--parked 1000]

At 10,000 greenlets the scaling workload's greenlets do 3 iterations each and
die, so what a greenlet pays once counts.  Two measurements, both repeatable:

1. Instructions (valgrind's callgrind), per greenlet: G greenlets, spawned
   and joined one after another (so nobody waits), each doing 0, 1 or 2
   requests; the first request costs (I1 - I0) / G and a later one
   (I2 - I1) / G, so start-up, spawning and joining cancel out.  Two shapes:
   ``bare`` is ``with client.start_request(): pass``; ``pinned`` also checks
   a socket out and in inside it (the pin and unpin, no I/O).
2. GC-tracked objects per parked greenlet (``gc.get_objects()`` before and
   after, by type): N greenlets queued for the one socket of a pool that the
   main greenlet holds, either inside a request (about to pin, in the
   scaling workload's ``w=0`` upsert) or in a plain ``find_one``.

The greenlets run gevent-patched, on a client that has already found its
server.  Needs ``valgrind`` for the first part.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys

from .instructions import callgrind_total, run_script
from .servers import server_uri

_INSTRUCTIONS = """
from gevent import monkey
monkey.patch_all()
import gc, sys
import gevent
import mongo_requests

URI, G, K, SHAPE = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
client = mongo_requests.MongoClient(URI, maxPoolSize=50)
client.admin.command("ping")
pool = client.pool


def bare():
    with client.start_request():
        pass


def pinned():
    with client.start_request():
        pool.checkin(pool.checkout())


request = {"bare": bare, "pinned": pinned}[SHAPE]


def worker(k):
    for _ in range(k):
        request()


for _ in range(50):  # every path once, in the main greenlet and in fresh ones
    request()
    gevent.spawn(worker, 2).join()
gc.collect()
gc.disable()
for _ in range(G):
    gevent.spawn(worker, K).join()
"""

_PARKED = """
from gevent import monkey
monkey.patch_all()
import collections, gc, sys, time
import gevent
import mongo_requests
from pymongo.write_concern import WriteConcern

URI, N, SHAPE = sys.argv[1], int(sys.argv[2]), sys.argv[3]
client = mongo_requests.MongoClient(URI, maxPoolSize=1)
coll = client["mongo_requests_greenlet_costs"].get_collection("c", write_concern=WriteConcern(w=1))
coll_w0 = coll.with_options(write_concern=WriteConcern(w=0))
inc = {"$inc": {"n": 1}}
shared = {"_id": "shared"}


def in_request(i):  # the scaling workload's iteration
    key = {"_id": i}
    with client.start_request():
        coll_w0.update_one(key, inc, upsert=True)
        coll.find_one(key)
    coll.find_one(shared)


def find_one(i):
    coll.find_one(shared)


worker = {"request": in_request, "find_one": find_one}[SHAPE]
gevent.joinall([gevent.spawn(in_request, i) for i in range(20)])
pool = client.pool
gc.collect()
gc.disable()
before = collections.Counter(type(o).__qualname__ for o in gc.get_objects())
held = pool.checkout()
greenlets = [gevent.spawn(worker, i) for i in range(N)]
deadline = time.monotonic() + 60
while pool.get_stats()["waiting"] < N:
    if time.monotonic() > deadline or any(g.dead for g in greenlets):
        sys.exit("the greenlets did not all park in the pool's queue: %r" % pool.get_stats())
    gevent.sleep(0)
gc.collect()
grown = collections.Counter(type(o).__qualname__ for o in gc.get_objects()) - before
kinds = " ".join("%s=%.2f" % (t, n / N) for t, n in grown.most_common() if n >= N // 2)
print("%.2f" % (sum(grown.values()) / N), kinds)
pool.checkin(held)
gc.enable()
gevent.joinall(greenlets)
client[coll.database.name].drop_collection(coll.name)
client.close()
"""


def instructions(uri: str, greenlets: int, shape: str) -> tuple[float, float]:
    """(first request, later request): instructions per greenlet."""
    env = dict(os.environ, PYTHONHASHSEED="0")
    counts = [callgrind_total(_INSTRUCTIONS, (uri, str(greenlets), str(k), shape), env, timeout=900) for k in (0, 1, 2)]
    return (counts[1] - counts[0]) / greenlets, (counts[2] - counts[1]) / greenlets


def parked(uri: str, n: int, shape: str) -> str:
    """GC-tracked objects per parked greenlet, and the types that make them up."""
    proc = run_script(_PARKED, (uri, str(n), shape), dict(os.environ, PYTHONHASHSEED="0"), timeout=900)
    return proc.stdout.strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.greenlet_costs", description=__doc__.splitlines()[0])
    parser.add_argument("--uri", default=os.environ.get("MONGODB_URI"), help="default: a throwaway mongod")
    parser.add_argument("--greenlets", type=int, default=300, help="greenlets per callgrind run")
    parser.add_argument("--parked", type=int, default=1000, help="greenlets parked at once")
    args = parser.parse_args(argv)
    with server_uri(args.uri) as uri:
        if shutil.which("valgrind"):
            for shape in ("bare", "pinned"):
                first, later = instructions(uri, args.greenlets, shape)
                print(
                    "instructions, %-6s request: first in a greenlet %.1fk, a later one %.1fk"
                    % (shape, first / 1e3, later / 1e3)
                )
        else:
            print("valgrind is not installed: no instruction counts", file=sys.stderr)
        for shape in ("request", "find_one"):
            print("GC-tracked objects per greenlet parked in %s: %s" % (shape, parked(uri, args.parked, shape)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
