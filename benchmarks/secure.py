"""TLS and SCRAM: what a new connection costs, and operations over TLS.

Part of ``python -m benchmarks`` (workload name ``tls``), or on its own:
``python -m benchmarks.secure [--quick] [--reps N]``.  It always starts its
own throwaway ``mongod --auth --tlsMode requireTLS`` with certificates from a
test CA made at run time (``mongo_requests.testing``), whatever ``--uri``
says, because it needs a server with TLS and a user.

Connection setup, per new connection (each includes one ``ping``):

- ``mr new connection``: mongo_requests, TLS + SCRAM-SHA-256 with speculative
  authentication, in an existing client (``pool.reset()`` then ``ping``), so
  the SCRAM keys come from the client's cache;
- ``mr new connection, no speculative auth``: the same with the speculative
  step switched off (one more round trip: ``saslStart``);
- ``mr new connection, TLS only``: no credentials (``ping`` needs none);
- ``mr new client``: a new MongoClient each time (cold key cache: PBKDF2 runs),
  ping, close;
- ``pymongo new client``: the same with PyMongo (which also starts a monitor
  thread and opens a second, monitoring, connection).

Operations over TLS (+ SCRAM, already connected): ``find_one`` by ``_id`` and
an ``$inc`` upsert with ``w=1``, mongo_requests and PyMongo interleaved.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from collections.abc import Callable
from typing import Any

import pymongo

import mongo_requests
from mongo_requests.testing import SecureMongodServer, TestCertificates

from . import report

TLS = "tls"
_USER = "bench"
_DB = "mongo_requests_bench_tls"


def _median(values: list[float]) -> float | None:
    return report.median(values)


def _per_op_us(fn: Callable[[], Any], n: int) -> float:
    gc.collect()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n * 1e6


def run(quick: bool = False, reps: int = 5, progress: Any = None) -> dict[str, Any]:
    """Start the secure server, measure, stop it; returns a JSON-able dict."""
    import secrets

    conns, ops = (20, 300) if quick else (100, 3000)
    certs = TestCertificates()
    server = SecureMongodServer(auth=True, certs=certs)
    password = secrets.token_urlsafe(12)
    made: list[Any] = []
    try:
        server.start()
        server.create_user(_USER, password)
        common = dict(tls=True, tlsCAFile=certs.ca, username=_USER, password=password)
        port = server.port

        def mr(**kw: Any) -> mongo_requests.MongoClient:
            c = mongo_requests.MongoClient("localhost", port, **{**common, **kw})
            made.append(c)
            return c

        spec_client = mr()
        nospec_client = mr(speculativeAuthentication=False)
        tls_only = mongo_requests.MongoClient("localhost", port, tls=True, tlsCAFile=certs.ca)
        made.append(tls_only)
        pm = pymongo.MongoClient("localhost", port, directConnection=True, **common)
        made.append(pm)

        def new_connection(c: mongo_requests.MongoClient) -> Callable[[], Any]:
            def op() -> None:
                c.pool.reset()
                c.admin.command("ping")

            return op

        def new_mr_client() -> None:
            with mongo_requests.MongoClient("localhost", port, **common) as c:
                c.admin.command("ping")

        def new_pm_client() -> None:
            with pymongo.MongoClient("localhost", port, directConnection=True, **common) as c:
                c.admin.command("ping")

        setups: dict[str, Callable[[], Any]] = {
            "mr new connection": new_connection(spec_client),
            "mr new connection, no speculative auth": new_connection(nospec_client),
            "mr new connection, TLS only": new_connection(tls_only),
            "mr new client": new_mr_client,
            "pymongo new client": new_pm_client,
        }
        coll_mr = spec_client[_DB].reads
        coll_pm = pm[_DB].reads
        coll_pm.drop()
        coll_pm.insert_many([{"_id": i, "v": i} for i in range(1000)])
        operations: dict[str, dict[str, Callable[[], Any]]] = {
            "find_one_by_id": {
                "mongo_requests": lambda: coll_mr.find_one({"_id": 500}),
                "pymongo": lambda: coll_pm.find_one({"_id": 500}),
            },
            "update_inc_upsert_w1": {
                "mongo_requests": lambda: coll_mr.update_one({"_id": -1}, {"$inc": {"n": 1}}, upsert=True),
                "pymongo": lambda: coll_pm.update_one({"_id": -1}, {"$inc": {"n": 1}}, upsert=True),
            },
        }
        for fn in list(setups.values()) + [f for d in operations.values() for f in d.values()]:
            for _ in range(3):
                fn()  # warm up: caches, code paths, connections
        setup_us: dict[str, list[float]] = {k: [] for k in setups}
        op_rate: dict[str, dict[str, list[float]]] = {k: {c: [] for c in v} for k, v in operations.items()}
        for rep in range(reps):
            for name, fn in setups.items():
                if progress is not None:
                    progress.step("tls rep %d/%d %s" % (rep + 1, reps, name))
                setup_us[name].append(_per_op_us(fn, conns))
            for wname, clients in operations.items():
                for cname, fn in clients.items():
                    if progress is not None:
                        progress.step("tls rep %d/%d %s %s" % (rep + 1, reps, wname, cname))
                    op_rate[wname][cname].append(1e6 / _per_op_us(fn, ops))
        pm.drop_database(_DB)
        return {
            "connections_per_block": conns,
            "ops_per_block": ops,
            "reps": reps,
            "server": "mongod --auth --tlsMode requireTLS on 127.0.0.1 (test CA, SCRAM-SHA-256 user)",
            "connection_setup_us": {k: {"samples": v, "median": _median(v)} for k, v in setup_us.items()},
            "operations_ops_per_s": {
                w: {c: {"samples": v, "median": _median(v)} for c, v in d.items()} for w, d in op_rate.items()
            },
        }
    finally:
        for c in made:
            c.close()
        server.stop()
        server.cleanup()
        certs.cleanup()


def steps(reps: int) -> int:
    """Progress steps of one run (5 set-ups and 4 operation blocks per repetition)."""
    return reps * 9


def markdown(tls: dict[str, Any]) -> list[str]:
    """The report's TLS section."""
    lines = [
        "",
        "## TLS and SCRAM (%s)" % tls["server"],
        "",
        "Connection set-up, median microseconds per new connection (including one ping; %d per block):"
        % tls["connections_per_block"],
        "",
        "| set-up | us per connection |",
        "|---|---:|",
    ]
    for name, v in tls["connection_setup_us"].items():
        lines.append("| %s | %s |" % (name, "{:,.0f}".format(v["median"]) if v["median"] is not None else "-"))
    ops = tls["operations_ops_per_s"]
    lines += [
        "",
        "Operations over TLS, median ops/s (%d per block):" % tls["ops_per_block"],
        "",
        "| workload | mongo_requests | pymongo | mr/pymongo |",
        "|---|---:|---:|---:|",
    ]
    for w, d in ops.items():
        a, b = d["mongo_requests"]["median"], d["pymongo"]["median"]
        lines.append(
            "| %s | %s | %s | %s |"
            % (w, report.fmt_rate(a), report.fmt_rate(b), report.fmt_ratio(a / b if a and b else None))
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.secure", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    results = run(args.quick, args.reps)
    print("\n".join(markdown(results)))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
