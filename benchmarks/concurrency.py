"""What the gevent and asyncio subprocesses share: the connection monitor, memory, setup.

This module imports neither gevent nor asyncio, and is imported by
``benchmarks.gevent_bench`` only after ``gevent.monkey.patch_all()``: its
monitor is a ``threading.Thread``, which is a greenlet in a patched process and
a real thread in the asyncio one.  Either way it samples the server without
waiting for the workload.

Connections are counted on the server, on every member of the deployment, with
``$currentOp`` (``idleConnections: true``) filtered by the client's
``appName``: so the count is exactly the client's connections, including
PyMongo's monitoring sockets (which send the appName too), and excluding the
monitor's own connection and, on a replica set, the members' replication and
heartbeat connections.
"""

from __future__ import annotations

import argparse
import os
import resource
import threading
from typing import Any

from pymongo import uri_parser

from . import spec
from .raw import RawConnection

# The throughput modes of one concurrent run, as (mode, what each of GREENLETS
# tasks does per iteration); every mode then reads the task's key and a shared
# document.  ``w0-request`` is mongo_requests only.
MODES = {
    "w0-request": "w=0 $inc + read of the same key inside start_request()",
    "w1": "w=1 $inc + read, no request",
    "w0": "w=0 $inc + read, no request: the read may miss the write (stale reads are counted)",
}


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """The options both subprocess runners take."""
    parser.add_argument("uri")
    parser.add_argument("--mode", choices=sorted(MODES), default="w1")
    parser.add_argument("--pool-size", type=int, default=50, help="maxPoolSize (default 50)")
    parser.add_argument("--greenlets", type=int, default=500, help="concurrent tasks (default 500)")
    parser.add_argument("--iterations", type=int, default=20, help="iterations per task (default 20)")
    parser.add_argument("--interval", type=float, default=0.02, help="seconds between connection samples")
    parser.add_argument("--appname", default="mr-bench", help="appName of the client under test")
    parser.add_argument(
        "--preinsert",
        action="store_true",
        help="insert every task's counter document before timing, so each upsert updates (the scaling workload)",
    )


def members(uri: str) -> tuple[list[tuple[str, int]], bool]:
    """(every seed address in the URI, whether the URI names a replica set)."""
    parsed = uri_parser.parse_uri(uri)
    return [(h, int(p)) for h, p in parsed["nodelist"]], bool(parsed["options"].get("replicaSet"))


def rss_bytes() -> int:
    """This process's resident set size now."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def max_rss_bytes() -> int:
    """The largest resident set size this process has had (Linux reports kB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class Monitor:
    """Samples the client's connections on every member, and this process's RSS.

    :param addresses: the members to watch.
    :param appname: the client's appName; only its connections are counted.
    :param interval: seconds between samples.
    """

    def __init__(self, addresses: list[tuple[str, int]], appname: str, interval: float) -> None:
        self.conns = {"%s:%d" % a: RawConnection(a) for a in addresses}
        self.interval = interval
        self.cmd = {
            "aggregate": 1,
            "pipeline": [
                {"$currentOp": {"allUsers": True, "idleConnections": True, "localOps": True}},
                {"$match": {"appName": appname}},
                {"$count": "n"},
            ],
            "cursor": {},
            "$readPreference": {"mode": "secondaryPreferred"},  # a secondary refuses it otherwise
        }
        self.per_member: dict[str, list[int]] = {host: [] for host in self.conns}
        self.totals: list[int] = []
        self.rss: list[int] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def primary(self) -> RawConnection:
        """The connection to the member that takes writes (the only one, on a standalone)."""
        for conn in self.conns.values():
            if len(self.conns) == 1 or conn.command({"hello": 1}).get("isWritablePrimary"):
                return conn
        raise RuntimeError("no writable primary among %s" % ", ".join(self.conns))

    def sample(self) -> None:
        total = 0
        for host, conn in self.conns.items():
            batch = conn.command(self.cmd)["cursor"]["firstBatch"]
            n = batch[0]["n"] if batch else 0
            self.per_member[host].append(n)
            total += n
        self.totals.append(total)
        self.rss.append(rss_bytes())

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.sample()  # one last look

    def close(self) -> None:
        for conn in self.conns.values():
            conn.close()


def reset_collection(primary: RawConnection, keys: int = 0) -> None:
    """A fresh gevent collection with its shared document, made over the monitor's connection.

    :param keys: also insert the first ``keys`` tasks' documents (``n: 0``),
        so that every ``$inc`` upsert of the run updates a document and none
        inserts one.
    """
    primary.command({"drop": spec.C_GEVENT}, spec.DB)  # ok: 0 if missing is fine
    docs: list[dict[str, Any]] = [{"_id": spec.GEVENT_SHARED_ID, "v": 1}]
    docs += [{"_id": task_key(i), "n": 0} for i in range(keys)]
    for start in range(0, len(docs), 10_000):
        reply = primary.command(
            {"insert": spec.C_GEVENT, "documents": docs[start : start + 10_000], "writeConcern": {"w": "majority"}},
            spec.DB,
        )
        if reply.get("ok") != 1 or reply.get("writeErrors"):
            raise RuntimeError("could not seed the gevent collection: %r" % (reply,))


def task_key(index: int) -> str:
    """The ``_id`` of task ``index``'s counter document."""
    return "g%d" % index


def result(
    args: argparse.Namespace,
    driver: str,
    runner: str,
    monitor: Monitor,
    ops: int,
    elapsed: float,
    stale: int,
    errors: list[str],
    rss_before: int,
    extra: dict[str, Any] | None = None,
    cpu: float | None = None,
) -> dict[str, Any]:
    """The JSON object a runner prints."""
    peak_rss = max([max_rss_bytes()] + monitor.rss)
    out = {
        "driver": driver,
        "runner": runner,
        "mode": args.mode,
        "max_pool_size": args.pool_size,
        "greenlets": args.greenlets,
        "iterations": args.iterations,
        "ops": ops,
        "seconds": elapsed,
        "client_cpu_s": cpu,
        "ops_per_s": ops / elapsed if elapsed else 0.0,
        "peak_connections": max(monitor.totals),
        "peak_connections_per_member": {h: max(v) for h, v in monitor.per_member.items()},
        "connection_samples": monitor.totals,
        "rss_before_bytes": rss_before,
        "peak_rss_bytes": peak_rss,
        "memory_per_task_bytes": (peak_rss - rss_before) / args.greenlets,
        "stale_reads": stale,
        "errors": len(errors),
        "first_errors": [e for e in errors if e],
    }
    out.update(extra or {})
    return out
