"""Replica-set workloads: mongo_requests and PyMongo side by side on one 3-member set.

Part of python -m benchmarks (workload name replset; --replset URI picks the
set, else a throwaway 3-member set on 127.0.0.1 is started and stopped), or on
its own: python -m benchmarks.replset [--quick] [--reps N] [--replset URI].

On the set, each client in turn, repetitions interleaved, medians reported:

- primary find_one by _id;
- a w=1 $inc upsert (w=1 explicitly, since a set's implicit default is
  "majority"; retryable writes on, the default: each write carries a
  transaction number), and the same with retryWrites=false;
- secondary find_one (readPreference=secondary; the document was written
  with w=<members>, so every secondary has it);
- the 500-greenlet gevent workload (subprocesses, see benchmarks.gevent_bench).

On a standalone (the main run's server): the retryable-writes overhead, a w=1
$inc with retryWrites on and off, for both drivers.  A standalone has no
transaction numbers, so on and off should cost the same.

Peak connections per member are counted on each member, by the client's
appName ($currentOp), after every block: a single-threaded client never
closes a pooled connection, so the count after a block is its peak.
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
from pymongo import uri_parser
from pymongo.read_preferences import Secondary
from pymongo.write_concern import WriteConcern

import mongo_requests
from mongo_requests.testing import ReplicaSet, raw_command

from . import concurrent_runs, report
from .progress import Progress
from .servers import server_uri

REPLSET = "replset"
DB = "mongo_requests_bench_rs"
_MR, _PM = "mongo_requests", "pymongo"
# (label, driver, retryWrites): the in-process clients, in interleaving order.
_CLIENTS = (
    (_MR, _MR, True),
    (_PM, _PM, True),
    ("mongo_requests retryWrites=false", _MR, False),
    ("pymongo retryWrites=false", _PM, False),
)
SET_WORKLOADS = ("primary find_one", "w=1 $inc", "secondary find_one")
RETRY_WORKLOAD = "w=1 $inc"


def _counts(quick: bool) -> tuple[int, int]:
    """(ops per block, warm-up ops)."""
    return (300, 50) if quick else (3000, 300)


def _client(driver: str, uri: str, appname: str, retry: bool, replset: bool) -> Any:
    kw: dict[str, Any] = {"appname": appname, "retryWrites": retry}
    if driver == _MR:
        return mongo_requests.MongoClient(uri, **kw)
    if not replset:
        kw["directConnection"] = True
    return pymongo.MongoClient(uri, **kw)


def _ops(client: Any) -> dict[str, Callable[[], Any]]:
    # w=1 explicitly: since MongoDB 5.0 a set's implicit default is w="majority".
    coll = client[DB].get_collection("c", write_concern=WriteConcern(w=1))
    secondary = coll.with_options(read_preference=Secondary())
    return {
        "primary find_one": lambda: coll.find_one({"_id": 1}),
        "w=1 $inc": lambda: coll.update_one({"_id": "n"}, {"$inc": {"n": 1}}, upsert=True),
        "secondary find_one": lambda: secondary.find_one({"_id": 1}),
    }


def _rate(op: Callable[[], Any], n: int) -> float:
    gc.collect()
    start = time.perf_counter()
    for _ in range(n):
        op()
    return n / (time.perf_counter() - start)


def connections_by_app(address: tuple[str, int]) -> dict[str, int]:
    """appName -> open connections (idle ones included) on one member."""
    reply = raw_command(
        address,
        {
            "aggregate": 1,
            "pipeline": [
                {"$currentOp": {"allUsers": True, "idleConnections": True, "localOps": True}},
                {"$match": {"appName": {"$exists": True}}},
                {"$group": {"_id": "$appName", "n": {"$sum": 1}}},
            ],
            "cursor": {},
            "$readPreference": {"mode": "secondaryPreferred"},
        },
    )  # secondaries refuse it otherwise
    if reply.get("ok") != 1:
        raise RuntimeError("$currentOp on %s:%d failed: %r" % (address + (reply,)))
    return {d["_id"]: d["n"] for d in reply["cursor"]["firstBatch"]}


def _counter(address: tuple[str, int]) -> int:
    reply = raw_command(address, {"find": "c", "filter": {"_id": "n"}}, DB)
    batch = reply["cursor"]["firstBatch"]
    return batch[0]["n"] if batch else 0


def _interleaved(
    clients: dict[str, Any],
    workloads: tuple[str, ...],
    n: int,
    warmup: int,
    reps: int,
    primary: tuple[str, int],
    members: list[tuple[str, int]],
    progress: Any,
    what: str,
) -> tuple[dict[str, dict[str, list[float]]], dict[str, dict[str, int]]]:
    """(workload -> client -> ops/s samples, client -> member -> peak connections)."""
    ops = {label: _ops(c) for label, c in clients.items()}
    for label, by_name in ops.items():
        for name in workloads:
            for _ in range(warmup):
                result = by_name[name]()
            if "find_one" in name and (result is None or result.get("_id") != 1):
                raise AssertionError("%s: %s returned %r" % (label, name, result))
    samples: dict[str, dict[str, list[float]]] = {w: {c: [] for c in clients} for w in workloads}
    peaks: dict[str, dict[str, int]] = {c: {"%s:%d" % m: 0 for m in members} for c in clients}
    for rep in range(reps):
        for name in workloads:
            for label in clients:
                progress.step("%s rep %d/%d %s %s" % (what, rep + 1, reps, name, label))
                before = _counter(primary) if "$inc" in name else 0
                samples[name][label].append(_rate(ops[label][name], n))
                if "$inc" in name and _counter(primary) - before != n:
                    raise AssertionError(
                        "%s: the counter grew by %d in %d $inc ops" % (label, _counter(primary) - before, n)
                    )
        for member in members:
            counts = connections_by_app(member)
            for label in clients:
                host = "%s:%d" % member
                peaks[label][host] = max(peaks[label][host], counts.get(_appname(label), 0))
    return samples, peaks


def _appname(label: str) -> str:
    return "mr-bench-rs-" + label.replace(" ", "-").replace("=", "-")


def _table(samples: dict[str, dict[str, list[float]]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, by_client in samples.items():
        medians = {c: report.median(v) for c, v in by_client.items()}
        out[name] = {"samples_ops_per_s": by_client, "median_ops_per_s": medians}
    return out


def steps(args: Any) -> int:
    """Progress steps of one run."""
    # The set's workloads (2 clients), the retry pair on the set and on the standalone (4 clients), gevent.
    return args.reps * (len(SET_WORKLOADS) * 2 + len(_CLIENTS) * 2 + len(concurrent_runs.REPLSET_CONFIGS))


def run(standalone_uri: str | None, args: Any, progress: Any) -> dict[str, Any]:
    """The replset workload.  ``args.replset`` is the set's URI, or None for a throwaway set."""
    n, warmup = _counts(args.quick)
    rs = None
    uri = args.replset
    if uri is None:
        rs = ReplicaSet("bench").start()
        uri = rs.uri
    try:
        out = _run_set(
            uri, "throwaway 3-member set on 127.0.0.1" if rs else "given by --replset", n, warmup, args, progress
        )
    finally:
        if rs is not None:
            rs.stop()
            rs.cleanup()
    out["standalone_retry"] = _run_standalone(standalone_uri, n, warmup, args, progress)
    return out


def _run_set(uri: str, where: str, n: int, warmup: int, args: Any, progress: Any) -> dict[str, Any]:
    setup: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(uri, appname="mr-bench-rs-setup")
    try:
        hello = setup.admin.command("hello")
        members = [(h, int(p)) for h, p in (x.rsplit(":", 1) for x in hello["hosts"])]
        primary = tuple(hello["primary"].rsplit(":", 1))
        primary_addr = (primary[0], int(primary[1]))
        version = setup.server_info()["version"]
        setup.drop_database(DB)
        coll = setup[DB]["c"].with_options(write_concern=WriteConcern(w=len(members)))
        coll.insert_one({"_id": 1, "v": "replicated to every member"})
        coll.insert_one({"_id": "n", "n": 0})
        clients = {label: _client(driver, uri, _appname(label), retry, True) for label, driver, retry in _CLIENTS}
        try:
            main_pair = {k: clients[k] for k in (_MR, _PM)}
            samples, peaks = _interleaved(
                main_pair, SET_WORKLOADS, n, warmup, args.reps, primary_addr, members, progress, "replset"
            )
            retry_samples, _ = _interleaved(
                clients, (RETRY_WORKLOAD,), n, warmup, args.reps, primary_addr, members, progress, "replset retry"
            )
        finally:
            for c in clients.values():
                c.close()
        gevent = concurrent_runs.run_configs(
            concurrent_runs.REPLSET_CONFIGS,
            uri,
            args.reps,
            args.pool_size,
            args.greenlets,
            concurrent_runs.gevent_iterations(args.quick),
            progress,
            "replset gevent",
        )
        setup.drop_database(DB)
    finally:
        setup.close()
    return {
        "server": where,
        "server_version": version,
        "members": ["%s:%d" % m for m in members],
        "primary": "%s:%d" % primary_addr,
        "ops_per_block": n,
        "reps": args.reps,
        "workloads": _table(samples),
        "peak_connections_per_member": peaks,
        "retry_on_set": _table(retry_samples),
        "gevent": {
            "max_pool_size": args.pool_size,
            "greenlets": args.greenlets,
            "iterations": concurrent_runs.gevent_iterations(args.quick),
            "configs": gevent,
        },
    }


def _run_standalone(uri: str | None, n: int, warmup: int, args: Any, progress: Any) -> dict[str, Any]:
    """The w=1 $inc with retryWrites on and off, both drivers, on a standalone."""
    with server_uri(uri) as uri:
        address = uri_parser.parse_uri(uri)["nodelist"][0]
        setup: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(uri, directConnection=True)
        setup[DB]["c"].insert_one({"_id": 1})
        clients = {label: _client(driver, uri, _appname(label), retry, False) for label, driver, retry in _CLIENTS}
        try:
            samples, _ = _interleaved(
                clients, (RETRY_WORKLOAD,), n, warmup, args.reps, address, [address], progress, "standalone retry"
            )
        finally:
            for c in clients.values():
                c.close()
            setup.drop_database(DB)
            setup.close()
    return _table(samples)


# -- report ----------------------------------------------------------------------
def _ratio(a: float | None, b: float | None) -> str:
    return report.fmt_ratio(a / b if a and b else None)


def markdown(rs: dict[str, Any]) -> list[str]:
    """The report's replica-set section."""
    if "error" in rs:
        return ["", "## Replica set", "", "failed: `%s`" % rs["error"]]
    lines = [
        "",
        "## Replica set: %d members (%s), MongoDB %s, %d ops per block"
        % (len(rs["members"]), rs["server"], rs["server_version"], rs["ops_per_block"]),
        "",
        "| workload | mongo_requests ops/s | pymongo ops/s | mr/pymongo |",
        "|---|---:|---:|---:|",
    ]
    for name, w in rs["workloads"].items():
        m = w["median_ops_per_s"]
        lines.append(
            "| %s | %s | %s | %s |" % (name, report.fmt_rate(m[_MR]), report.fmt_rate(m[_PM]), _ratio(m[_MR], m[_PM]))
        )
    hosts = rs["members"]
    lines += [
        "",
        "Peak connections per member, counted on each member by appName (primary %s):" % rs["primary"],
        "",
        "| client | " + " | ".join(hosts) + " |",
        "|---|" + "---:|" * len(hosts),
    ]
    for label, per in rs["peak_connections_per_member"].items():
        lines.append("| %s | %s |" % (label, " | ".join(str(per.get(h, 0)) for h in hosts)))
    lines += [
        "",
        "Retryable writes, w=1 $inc, median ops/s (on = the default):",
        "",
        "| server | mongo_requests on | off | on/off | pymongo on | off | on/off |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for where, table in (("replica set", rs["retry_on_set"]), ("standalone", rs.get("standalone_retry"))):
        if not table:
            continue
        m = table[RETRY_WORKLOAD]["median_ops_per_s"]
        row = [where]
        for on, off in ((_MR, _CLIENTS[2][0]), (_PM, _CLIENTS[3][0])):
            row += [report.fmt_rate(m[on]), report.fmt_rate(m[off]), _ratio(m[on], m[off])]
        lines.append("| " + " | ".join(row) + " |")
    gv = rs["gevent"]
    lines += [
        "",
        "gevent on the set: %d greenlets x %d iterations, maxPoolSize=%d (peak connections per member, "
        "max over repetitions):" % (gv["greenlets"], gv["iterations"], gv["max_pool_size"]),
        "",
        "| config | ops/s | " + " | ".join(hosts) + " | stale reads | errors |",
        "|---|---:|" + "---:|" * len(hosts) + "---:|---:|",
    ]
    for label, g in gv["configs"].items():
        per = g["peak_connections_per_member_max"]
        lines.append(
            "| %s | %s | %s | %d | %d |"
            % (
                label,
                report.fmt_rate(g["median_ops_per_s"]),
                " | ".join(str(per.get(h, "-")) for h in hosts),
                g["stale_reads"],
                g["errors"],
            )
        )
        for err in g["run_errors"]:
            lines.append("- %s: `%s`" % (label, err))
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.replset", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small counts")
    parser.add_argument("--reps", type=int, default=5, help="repetitions (default 5)")
    parser.add_argument("--replset", metavar="URI", help="the replica set to use (default: a throwaway one)")
    parser.add_argument("--uri", help="the standalone for the retryable-writes overhead (default: a throwaway one)")
    parser.add_argument("--pool-size", type=int, default=50, help="maxPoolSize of the gevent runs (default 50)")
    parser.add_argument("--greenlets", type=int, default=500, help="greenlets in the gevent runs (default 500)")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    progress = Progress(steps(args))
    try:
        results = run(args.uri, args, progress)
    finally:
        progress.finish()
    print("\n".join(markdown(results)))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
