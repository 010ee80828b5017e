"""``python -m benchmarks.replset``: mongo_requests and PyMongo side by side on one 3-member replica set.

Workloads (each client in turn, repetitions interleaved, medians reported):
primary ``find_one``, w=1 ``$inc`` updates, secondary ``find_one``
(``readPreference=secondary``), and the retryable-write overhead on a
standalone (mongo_requests with and without ``retryWrites``; a standalone
has no transaction numbers, so the two must cost the same).  Peak
connections per member come from each member's ``serverStatus``.

    python -m benchmarks.replset [--ops 2000] [--reps 3] [--uri URI]

The 500-greenlet gevent workload against a set: ``python -m benchmarks
--uri <the set's URI> --only gevent``.
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Any, Callable

import pymongo
from pymongo.read_preferences import Secondary

import mongo_requests
from mongo_requests.testing import MongodServer, ReplicaSet, raw_command

DB = "mongo_requests_bench_rs"


def _rate(op: Callable[[], Any], n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        op()
    return n / (time.perf_counter() - start)


def _workloads(client: Any) -> dict[str, Callable[[], Any]]:
    coll = client[DB]["c"]
    secondary = coll.with_options(read_preference=Secondary())
    return {
        "primary find_one": lambda: coll.find_one({"_id": 1}),
        "w=1 $inc": lambda: coll.update_one({"_id": "n"}, {"$inc": {"n": 1}}, upsert=True),
        "secondary find_one": lambda: secondary.find_one({"_id": 1}),
    }


def _connections(addresses: list[tuple[str, int]]) -> dict[str, int]:
    return {"%s:%d" % a: raw_command(a, {"serverStatus": 1})["connections"]["current"] for a in addresses}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=2000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--uri", help="a replica set to use (default: a throwaway one)")
    args = parser.parse_args(argv)
    rs = None
    uri = args.uri
    if uri is None:
        rs = ReplicaSet("bench").start()
        uri = rs.uri
    try:
        clients = {
            "mongo_requests": mongo_requests.MongoClient(uri),
            "pymongo": pymongo.MongoClient(uri),
        }
        clients["pymongo"][DB]["c"].insert_one({"_id": 1})
        clients["pymongo"][DB]["c"].with_options(write_concern=pymongo.WriteConcern(w=3)).insert_one({"_id": 2})
        samples: dict[tuple[str, str], list[float]] = {}
        peaks: dict[str, int] = {}
        members = [tuple(map(str.strip, h.rsplit(":", 1))) for h in uri.split("//")[1].split("/")[0].split(",")]
        addresses = [(h, int(p)) for h, p in members]
        for _ in range(args.reps):
            for name, client in clients.items():
                for workload, op in _workloads(client).items():
                    op()  # warm-up: connections open, the member is chosen
                    samples.setdefault((name, workload), []).append(_rate(op, args.ops))
            for host, count in _connections(addresses).items():
                peaks[host] = max(peaks.get(host, 0), count)
        print("| workload | mongo_requests ops/s | PyMongo ops/s | mr/PyMongo |")
        print("|---|---:|---:|---:|")
        for workload in _workloads(clients["pymongo"]):
            mr = statistics.median(samples[("mongo_requests", workload)])
            pm = statistics.median(samples[("pymongo", workload)])
            print("| %s | %.0f | %.0f | %.2f |" % (workload, mr, pm, mr / pm))
        print("\npeak server connections per member (both clients open): %s" % peaks)
        for client in clients.values():
            client.drop_database(DB)
            client.close()
    finally:
        if rs is not None:
            rs.stop()
            rs.cleanup()
    _standalone_overhead(args.ops, args.reps)
    return 0


def _standalone_overhead(ops: int, reps: int) -> None:
    with MongodServer() as server:
        retrying = mongo_requests.MongoClient(server.uri)
        plain = mongo_requests.MongoClient(server.uri, retryWrites=False, retryReads=False)
        rates: dict[str, list[float]] = {"retryWrites=true": [], "retryWrites=false": []}
        for _ in range(reps):
            for label, client in (("retryWrites=true", retrying), ("retryWrites=false", plain)):
                coll = client[DB]["c"]

                def op(coll: Any = coll) -> None:
                    coll.update_one({"_id": "n"}, {"$inc": {"n": 1}}, upsert=True)

                op()
                rates[label].append(_rate(op, ops))
        print("\nstandalone w=1 $inc: " + ", ".join("%s %.0f ops/s" % (k, statistics.median(v))
                                                     for k, v in rates.items()))
        retrying.close()
        plain.close()


if __name__ == "__main__":
    raise SystemExit(main())
