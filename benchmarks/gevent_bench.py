"""The gevent workload, run in its own process (monkey-patching is process-wide).

Usage::

    python -m benchmarks.gevent_bench URI DRIVER [--mode w0-request|w1|w0] [--auto-start-request]
        [--pool-size 50] [--greenlets 500] [--iterations 20] [--interval 0.02] [--appname NAME]

DRIVER is mongo_requests or pymongo.  GREENLETS greenlets each run ITERATIONS
times:

1. a $inc upsert on the greenlet's own key,
2. a read of that key, which must see the increment,
3. a plain find_one of a shared document.

The mode says how step 1 is done:

- w0-request (mongo_requests only): w=0, with 1 and 2 inside
  "with client.start_request():", which is what makes 2 see 1;
- w1: w=1, no request (what PyMongo has to do to read its own write);
- w0: w=0, no request; the read may then miss the write.

Reads that miss their own write are counted as stale_reads.  The URI may name
a replica set: the writes and reads then go to the primary.

A monitor samples the client's connections on every member of the deployment
every INTERVAL seconds ($currentOp by appName; see benchmarks.concurrency),
and this process's memory.  Prints one JSON object on stdout.
"""

from __future__ import annotations

# Before anything else imports socket or threading.
from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

import gevent  # noqa: E402
from pymongo.write_concern import WriteConcern  # noqa: E402

from . import spec  # noqa: E402
from .concurrency import Monitor, add_common_args, members, reset_collection, result, rss_bytes, task_key  # noqa: E402


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gevent_bench", description=__doc__.splitlines()[0])
    add_common_args(parser)
    parser.add_argument("driver", choices=("mongo_requests", "pymongo"))
    parser.add_argument("--auto-start-request", action="store_true", help="mongo_requests' auto_start_request=True")
    args = parser.parse_args(argv)
    if args.driver == "pymongo" and (args.auto_start_request or args.mode == "w0-request"):
        parser.error("pymongo has no requests")
    return args


def make_client(args: argparse.Namespace, replset: bool) -> tuple[Any, Any]:
    """(client, its start_request or None)."""
    if args.driver == "mongo_requests":
        import mongo_requests

        client = mongo_requests.MongoClient(
            args.uri, maxPoolSize=args.pool_size, appname=args.appname, auto_start_request=args.auto_start_request
        )
        return client, client.start_request
    import pymongo

    kwargs: dict[str, Any] = {} if replset else {"directConnection": True}
    return pymongo.MongoClient(args.uri, maxPoolSize=args.pool_size, appname=args.appname, **kwargs), None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    addresses, replset = members(args.uri)
    monitor = Monitor(addresses, args.appname, args.interval)
    # Fresh collection, set up over the monitor's connection so the client
    # under test starts with an empty pool.
    reset_collection(monitor.primary(), args.greenlets if args.preinsert else 0)

    client, start_request = make_client(args, replset)
    # w=1 explicitly: on a replica set the implicit default is w="majority" since MongoDB 5.0.
    coll = client[spec.DB].get_collection(spec.C_GEVENT, write_concern=WriteConcern(w=1))
    coll_w0 = coll.with_options(write_concern=WriteConcern(w=0))
    write = coll.update_one if args.mode == "w1" else coll_w0.update_one
    in_request = args.mode == "w0-request"
    shared = {"_id": spec.GEVENT_SHARED_ID}
    inc = {"$inc": {"n": 1}}

    ops = [0]
    stale = [0]
    errors: list[str] = []

    def worker(index: int) -> None:
        key = {"_id": task_key(index)}
        expected = 0
        for _ in range(args.iterations):
            try:
                if in_request:
                    with start_request():
                        write(key, inc, upsert=True)
                        expected += 1
                        doc = coll.find_one(key)
                else:
                    write(key, inc, upsert=True)
                    expected += 1
                    doc = coll.find_one(key)
                if doc is None or doc.get("n") != expected:
                    stale[0] += 1
                coll.find_one(shared)
                ops[0] += 3
            except Exception as exc:  # count and go on: one failure must not hide the rest
                errors.append(repr(exc) if len(errors) < 5 else "")

    monitor.start()
    rss_before = rss_bytes()
    t0 = time.perf_counter()
    c0 = time.process_time()
    greenlets = [gevent.spawn(worker, i) for i in range(args.greenlets)]
    gevent.joinall(greenlets)
    elapsed = time.perf_counter() - t0
    cpu = time.process_time() - c0
    monitor.stop()

    pool_stats = client.pool.get_stats() if args.driver == "mongo_requests" else None
    client.close()
    out = result(
        args,
        args.driver,
        "gevent",
        monitor,
        ops[0],
        elapsed,
        stale[0],
        errors,
        rss_before,
        {"auto_start_request": args.auto_start_request, "pool_stats": pool_stats},
        cpu=cpu,
    )
    monitor.close()
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
