"""``python -m benchmarks.pipeline [--quick]``: pipelined w=1 writes against their limits.

The workload is issue 13's: ``update_one({"_id": i % 100}, {"$inc": {"n": 1}}, upsert=True)``.

* Through the delay proxy (:class:`mongo_requests.testing_proxy.DelayProxy`,
  0.5 ms each way, a 1 ms round trip): mongo_requests pipelined
  (``start_request(pipeline=True)``) against mongo_requests plain w=1 and
  PyMongo w=1.  Target: at least 10x both.
* On loopback: the same, plus a raw socket pipelining the same pre-encoded
  messages (a window of replies in flight, nothing decoded): the limit here,
  set by the server's CPU per acknowledged update.  Targets: at least 0.9x the
  raw socket and 1.5x plain w=1.

Clients take turns within every repetition, so a noisy machine slows them
alike; the figure kept is the median of the repetitions.  ``run(uri, quick)``
returns the results (the coordinator's ``python -m benchmarks`` calls it);
``main`` also prints the table and writes ``benchmarks/results/pipeline.json``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import socket
import statistics
import struct
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import bson
import pymongo
from pymongo import uri_parser

import mongo_requests
from mongo_requests import wire
from mongo_requests.testing_proxy import DelayProxy

from .servers import server_uri

DEFAULT_OUT = Path(__file__).resolve().parent / "results"
KEYS = 100
TARGETS = {
    "delay_vs_plain_w1": 10.0,
    "delay_vs_pymongo_w1": 10.0,
    "loopback_vs_raw": 0.9,
    "loopback_vs_plain_w1": 1.5,
}
_INT32 = struct.Struct("<i")


def _update(i: int) -> dict[str, Any]:
    return {"q": {"_id": i % KEYS}, "u": {"$inc": {"n": 1}}, "multi": False, "upsert": True}


# -- the clients ---------------------------------------------------------------------
def mr_pipelined(coll: Any, n: int) -> None:
    with coll.database.client.start_request(pipeline=True):
        for i in range(n):
            coll.update_one({"_id": i % KEYS}, {"$inc": {"n": 1}}, upsert=True)


def plain_w1(coll: Any, n: int) -> None:
    for i in range(n):
        coll.update_one({"_id": i % KEYS}, {"$inc": {"n": 1}}, upsert=True)


class RawPipeline:
    """A bare socket sending pre-encoded update messages, up to ``window`` replies in flight."""

    def __init__(self, address: tuple[str, int], db: str, coll: str, n: int, window: int = 512) -> None:
        self.sock = socket.create_connection(address)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.window = window
        self.messages = []
        for i in range(n):
            body = bson.encode({"update": coll, "ordered": True, "updates": [_update(i)], "$db": db})
            self.messages.append(wire.pack_msg(i + 1, body))
        self.buf = bytearray(1024 * 1024)

    def run(self) -> int:
        """Send every message (64 per send) and read every reply; returns the replies counted."""
        sock, view = self.sock, memoryview(self.buf)
        msgs = self.messages
        sent = read = 0
        start = end = 0
        while read < len(msgs):
            if sent < len(msgs) and sent - read < self.window:
                chunk = msgs[sent : sent + 64]
                sock.sendall(b"".join(chunk))
                sent += len(chunk)
                continue
            if start == end:
                start = end = 0
            elif len(view) - end < 65536:
                view[: end - start] = view[start:end]
                end -= start
                start = 0
            got = sock.recv_into(view[end:])
            if not got:
                raise ConnectionError("mongod closed the connection")
            end += got
            while end - start >= 4:
                length = _INT32.unpack_from(view, start)[0]
                if end - start < length:
                    break
                start += length
                read += 1
        return read

    def close(self) -> None:
        self.sock.close()


# -- measuring -------------------------------------------------------------------------
def _rate(fn: Callable[[], Any], n: int) -> float:
    start = time.perf_counter()
    fn()
    return n / (time.perf_counter() - start)


def _measure(target: tuple[str, int], via: str, quick: bool, reps: int) -> dict[str, float]:
    """Median ops/s per client, clients taking turns within each repetition."""
    uri = "mongodb://%s:%d/" % target
    n_pipe = (2000 if quick else 20000) if via == "loopback" else (2000 if quick else 10000)
    n_plain = (1000 if quick else 5000) if via == "loopback" else (200 if quick else 1000)
    mr = mongo_requests.MongoClient(uri)
    pm: Any = pymongo.MongoClient(uri)
    try:
        coll = mr.bench_pipeline.counters
        pcoll = pm.bench_pipeline.counters
        coll.drop()
        plain_w1(coll, KEYS)  # the keys exist: every later write is the same $inc
        pcoll.find_one()  # PyMongo's connection is made before timing
        series: dict[str, list[float]] = {}
        for _ in range(reps):
            if via == "loopback":
                raw = RawPipeline(target, "bench_pipeline", "counters", n_pipe)
                try:
                    series.setdefault("raw pipelined", []).append(_rate(raw.run, n_pipe))
                finally:
                    raw.close()
            series.setdefault("mongo_requests pipelined", []).append(_rate(lambda: mr_pipelined(coll, n_pipe), n_pipe))
            series.setdefault("mongo_requests w=1", []).append(_rate(lambda: plain_w1(coll, n_plain), n_plain))
            series.setdefault("pymongo w=1", []).append(_rate(lambda: plain_w1(pcoll, n_plain), n_plain))
        return {name: statistics.median(v) for name, v in series.items()}
    finally:
        mr.close()
        pm.close()


def run(uri: str | None, quick: bool) -> dict[str, Any]:
    """Measure both settings; returns ``{"loopback": {...}, "delay_1ms": {...}, "ratios", "targets", "pass"}``."""
    with server_uri(uri) as uri:
        load_start = os.getloadavg()
        target = uri_parser.parse_uri(uri)["nodelist"][0]
        reps = 3 if quick else 5
        with mongo_requests.MongoClient(uri) as probe:
            version = probe.server_info().get("version")
        loopback = _measure(target, "loopback", quick, reps)
        with DelayProxy(target, delay=0.0005) as proxy:
            delayed = _measure(proxy.address, "delay", quick, reps)
    pipe_l, pipe_d = loopback["mongo_requests pipelined"], delayed["mongo_requests pipelined"]
    ratios = {
        "delay_vs_plain_w1": pipe_d / delayed["mongo_requests w=1"],
        "delay_vs_pymongo_w1": pipe_d / delayed["pymongo w=1"],
        "loopback_vs_raw": pipe_l / loopback["raw pipelined"],
        "loopback_vs_plain_w1": pipe_l / loopback["mongo_requests w=1"],
    }
    return {
        "workload": "update_one({_id: i %% %d}, {$inc: {n: 1}}, upsert=True)" % KEYS,
        "quick": quick,
        "loopback": loopback,
        "delay_1ms": delayed,
        "ratios": ratios,
        "targets": TARGETS,
        "pass": {k: ratios[k] >= TARGETS[k] for k in TARGETS},
        "machine": {
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "pymongo": pymongo.version,
            "server_version": version,
            # Under load, pipelining makes mongod a CPU-bound task that competes
            # with everything else, while one round trip at a time lets it sleep
            # and be scheduled first: read the ratios with the load in mind.
            "loadavg_start": load_start,
            "loadavg_end": os.getloadavg(),
        },
    }


def table(results: dict[str, Any]) -> str:
    """The results as a plain-text table."""
    lines = ["%-12s %-28s %12s" % ("network", "client", "ops/s")]
    for net in ("loopback", "delay_1ms"):
        for name, rate in results[net].items():
            lines.append("%-12s %-28s %12.0f" % (net, name, rate))
    machine = results["machine"]
    lines.append("")
    lines.append(
        "%s, %s CPUs, MongoDB %s, load average %.1f -> %.1f"
        % (
            machine["date"],
            machine["cpus"],
            machine["server_version"],
            machine["loadavg_start"][0],
            machine["loadavg_end"][0],
        )
    )
    for key, ratio in results["ratios"].items():
        lines.append(
            "%-24s %6.2fx  (target >= %.1fx: %s)"
            % (key, ratio, results["targets"][key], "met" if results["pass"][key] else "NOT met")
        )
    return "\n".join(lines)


# -- as a section of ``python -m benchmarks`` ------------------------------------
def steps(_args: Any) -> int:
    """Its share of the progress bar: one step per network setting."""
    return 2


def run_section(uri: str, args: Any, progress: Any) -> dict[str, Any]:
    """``python -m benchmarks``' pipeline section: :func:`run` on the run's server."""
    results = run(uri, args.quick)
    progress.step("pipeline loopback")
    progress.step("pipeline delay 1 ms")
    return results


def markdown(results: dict[str, Any]) -> list[str]:
    """The report's pipeline section."""
    lines = [
        "",
        "## Pipelined w=1 writes",
        "",
        "`%s`, median ops/s; the delay proxy adds 0.5 ms each way:" % results["workload"],
        "",
        "| network | client | ops/s |",
        "|---|---|---:|",
    ]
    for net in ("loopback", "delay_1ms"):
        for name, rate in results[net].items():
            lines.append("| %s | %s | %s |" % (net, name, f"{rate:,.0f}"))
    lines += ["", "| ratio | measured | target |", "|---|---:|---:|"]
    for key, ratio in results["ratios"].items():
        lines.append(
            "| %s | %.2fx | >= %.1fx (%s) |"
            % (key, ratio, results["targets"][key], "met" if results["pass"][key] else "NOT met")
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.pipeline", description="Pipelined w=1 writes vs plain w=1, PyMongo and a raw socket."
    )
    parser.add_argument("--quick", action="store_true", help="small counts (about half a minute)")
    parser.add_argument("--uri", help="server to use (default: a throwaway mongod)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output directory (default benchmarks/results)")
    args = parser.parse_args(argv)
    results = run(args.uri, args.quick)
    print(table(results))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "pipeline.json").write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
