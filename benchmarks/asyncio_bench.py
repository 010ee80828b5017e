"""The gevent workload with PyMongo's AsyncMongoClient and asyncio tasks, in its own process.

Usage::

    python -m benchmarks.asyncio_bench URI [--mode w1|w0] [--pool-size 50] [--greenlets 500]
        [--iterations 20] [--interval 0.02] [--appname NAME]

The client a crawler author might pick instead of gevent: GREENLETS asyncio
tasks (the option keeps the gevent runner's name) each run ITERATIONS times a
$inc upsert on the task's own key, a read of that key, and a find_one of a
shared document, exactly as benchmarks.gevent_bench does.  The connection
monitor and the memory figures are the same as there (the monitor is a real
thread here).  Prints one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

from pymongo import AsyncMongoClient
from pymongo.write_concern import WriteConcern

from . import spec
from .concurrency import Monitor, add_common_args, members, reset_collection, result, rss_bytes, task_key


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.asyncio_bench", description=__doc__.splitlines()[0])
    add_common_args(parser)
    args = parser.parse_args(argv)
    if args.mode == "w0-request":
        parser.error("AsyncMongoClient has no requests")
    return args


async def run(args: argparse.Namespace, replset: bool) -> tuple[int, int, list[str], float, int, float]:
    """(ops, stale reads, errors, seconds, RSS before the tasks start)."""
    kwargs: dict[str, Any] = {} if replset else {"directConnection": True}
    client: Any = AsyncMongoClient(args.uri, maxPoolSize=args.pool_size, appname=args.appname, **kwargs)
    # w=1 explicitly: on a replica set the implicit default is w="majority" since MongoDB 5.0.
    coll = client[spec.DB].get_collection(spec.C_GEVENT, write_concern=WriteConcern(w=1))
    write = coll.update_one if args.mode == "w1" else coll.with_options(write_concern=WriteConcern(w=0)).update_one
    shared = {"_id": spec.GEVENT_SHARED_ID}
    inc = {"$inc": {"n": 1}}
    ops = [0]
    stale = [0]
    errors: list[str] = []

    async def worker(index: int) -> None:
        key = {"_id": task_key(index)}
        expected = 0
        for _ in range(args.iterations):
            try:
                await write(key, inc, upsert=True)
                expected += 1
                doc = await coll.find_one(key)
                if doc is None or doc.get("n") != expected:
                    stale[0] += 1
                await coll.find_one(shared)
                ops[0] += 3
            except Exception as exc:  # count and go on: one failure must not hide the rest
                errors.append(repr(exc) if len(errors) < 5 else "")

    rss_before = rss_bytes()
    t0 = time.perf_counter()
    c0 = time.process_time()
    await asyncio.gather(*(worker(i) for i in range(args.greenlets)))
    elapsed = time.perf_counter() - t0
    cpu = time.process_time() - c0
    await client.close()
    return ops[0], stale[0], errors, elapsed, rss_before, cpu


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    addresses, replset = members(args.uri)
    monitor = Monitor(addresses, args.appname, args.interval)
    reset_collection(monitor.primary(), args.greenlets if args.preinsert else 0)
    monitor.start()
    ops, stale, errors, elapsed, rss_before, cpu = asyncio.run(run(args, replset))
    monitor.stop()
    out = result(args, "pymongo-async", "asyncio", monitor, ops, elapsed, stale, errors, rss_before, cpu=cpu)
    monitor.close()
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
