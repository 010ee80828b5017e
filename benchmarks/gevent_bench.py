"""The gevent workload, run in its own process (monkey-patching is process-wide).

Usage::

    python -m benchmarks.gevent_bench URI DRIVER AUTO_START_REQUEST MAX_POOL_SIZE \
        [--greenlets 500] [--iterations 20] [--interval 0.02]

DRIVER is ``mongo_requests`` or ``pymongo``; AUTO_START_REQUEST is ``true`` or
``false`` (``false`` for pymongo, which has no requests).

GREENLETS greenlets each run ITERATIONS times:

1. a ``$inc`` upsert on the greenlet's own key,
2. a read of that key, which must see the increment,
3. a plain ``find_one`` of a shared document.

mongo_requests does 1 with ``w=0`` and 1+2 inside ``with client.start_request():``,
which is what makes 2 see 1.  PyMongo cannot pin a socket, so it does the same
operations with no request and a ``w=1`` ``$inc`` (otherwise its read could
miss the write); reads that miss their own write are counted as
``stale_reads`` for both.

A monitor greenlet samples ``serverStatus().connections.current`` every
INTERVAL seconds over its own raw connection; the baseline (taken before the
client under test exists, so it includes the monitor's own connection) is
subtracted.  For PyMongo the peak therefore includes its two monitoring
sockets.  Prints one JSON object on stdout.
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
import gevent.event  # noqa: E402
from pymongo import uri_parser  # noqa: E402
from pymongo.write_concern import WriteConcern  # noqa: E402

from . import spec  # noqa: E402
from .raw import RawConnection  # noqa: E402


def _bool(text: str) -> bool:
    low = text.lower()
    if low in ("true", "1", "yes"):
        return True
    if low in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError("expected true or false, not %r" % (text,))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gevent_bench", description=__doc__.splitlines()[0])
    parser.add_argument("uri")
    parser.add_argument("driver", choices=("mongo_requests", "pymongo"))
    parser.add_argument("auto_start_request", type=_bool)
    parser.add_argument("max_pool_size", type=int)
    parser.add_argument("--greenlets", type=int, default=500)
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--interval", type=float, default=0.02, help="seconds between connection samples")
    args = parser.parse_args(argv)
    if args.driver == "pymongo" and args.auto_start_request:
        parser.error("pymongo has no auto_start_request")
    return args


class Monitor:
    """Samples the server's connection count from a separate raw connection."""

    def __init__(self, address: tuple[str, int], interval: float) -> None:
        self.conn = RawConnection(address)
        self.interval = interval
        # Ask only for the small "connections" section: a full serverStatus
        # is ~60 kB, and decoding it 50 times a second would compete with the
        # workload for the CPU.  Section names vary by server version, so
        # exclude whatever large sections this server reports.
        full = self.conn.command({"serverStatus": 1})
        self.cmd: dict[str, Any] = {"serverStatus": 1}
        self.cmd.update({k: 0 for k, v in full.items() if isinstance(v, dict) and k != "connections"})
        self.baseline = self.current()
        self.samples: list[int] = []
        self._stop = gevent.event.Event()
        self._greenlet: gevent.Greenlet | None = None

    def current(self) -> int:
        return self.conn.command(self.cmd)["connections"]["current"]

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(self.current() - self.baseline)
            self._stop.wait(self.interval)

    def start(self) -> None:
        self._greenlet = gevent.spawn(self._run)

    def stop(self) -> None:
        self._stop.set()
        if self._greenlet is not None:
            self._greenlet.join()
        self.samples.append(self.current() - self.baseline)  # one last look


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    address = uri_parser.parse_uri(args.uri)["nodelist"][0]

    # Fresh collection, set up over the monitor's connection so the client
    # under test starts with an empty pool.
    monitor = Monitor(address, args.interval)
    monitor.conn.command({"drop": spec.C_GEVENT}, spec.DB)  # ok: 0 if missing is fine
    monitor.conn.command({"insert": spec.C_GEVENT, "documents": [{"_id": spec.GEVENT_SHARED_ID, "v": 1}]}, spec.DB)
    monitor.baseline = monitor.current()

    if args.driver == "mongo_requests":
        import mongo_requests

        client: Any = mongo_requests.MongoClient(
            args.uri, maxPoolSize=args.max_pool_size, auto_start_request=args.auto_start_request
        )
        start_request = client.start_request
    else:
        import pymongo

        client = pymongo.MongoClient(args.uri, directConnection=True, maxPoolSize=args.max_pool_size)
        start_request = None
    coll = client[spec.DB][spec.C_GEVENT]
    coll_w0 = coll.with_options(write_concern=WriteConcern(w=0))
    shared = {"_id": spec.GEVENT_SHARED_ID}
    inc = {"$inc": {"n": 1}}

    ops = [0]
    stale = [0]
    errors: list[str] = []

    def worker(index: int) -> None:
        key = {"_id": "g%d" % index}
        expected = 0
        for _ in range(args.iterations):
            try:
                if start_request is not None:
                    with start_request():
                        coll_w0.update_one(key, inc, upsert=True)
                        expected += 1
                        doc = coll.find_one(key)
                else:
                    coll.update_one(key, inc, upsert=True)
                    expected += 1
                    doc = coll.find_one(key)
                if doc is None or doc.get("n") != expected:
                    stale[0] += 1
                coll.find_one(shared)
                ops[0] += 3
            except Exception as exc:  # count and go on: one failure must not hide the rest
                if len(errors) < 5:
                    errors.append(repr(exc))
                else:
                    errors.append("")

    monitor.start()
    t0 = time.perf_counter()
    greenlets = [gevent.spawn(worker, i) for i in range(args.greenlets)]
    gevent.joinall(greenlets)
    elapsed = time.perf_counter() - t0
    monitor.stop()

    pool_stats = client.pool.get_stats() if args.driver == "mongo_requests" else None
    client.close()
    result = {
        "driver": args.driver,
        "auto_start_request": args.auto_start_request,
        "max_pool_size": args.max_pool_size,
        "greenlets": args.greenlets,
        "iterations": args.iterations,
        "ops": ops[0],
        "seconds": elapsed,
        "ops_per_s": ops[0] / elapsed if elapsed else 0.0,
        "peak_connections": max(monitor.samples),
        "baseline_connections": monitor.baseline,
        "connection_samples": monitor.samples,
        "stale_reads": stale[0],
        "errors": len(errors),
        "first_errors": [e for e in errors if e],
        "pool_stats": pool_stats,
    }
    monitor.conn.close()
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
