"""gevent's own floor in the gevent workload's shape: no driver, no server, no I/O.

Usage::

    python -m benchmarks.gevent_floor --greenlets G --iterations N [--switches 2]

GREENLETS greenlets each run ITERATIONS times three "ops", as in
:mod:`benchmarks.gevent_bench`, but each op is SWITCHES ``gevent.sleep(0)``
instead of a call to MongoDB.  Two by default: an op of the real workload
switches about twice, once waiting for its socket's reply and once waiting for
a pooled socket.  Timed like gevent_bench (wall and process CPU time around
spawning and joining every greenlet), so what this process spends per op is
what gevent itself costs at that greenlet count (spawning, joining, switching
among that many saved stacks), before any driver code.  It misses the
server, and the garbage collector's work on driver objects.

Prints one JSON object on stdout; its ``ops_per_s`` is of switches only (no
server), not comparable with a real run's.
"""

from __future__ import annotations

# Before anything else imports socket or threading, as in gevent_bench.
from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

import gevent  # noqa: E402


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gevent_floor", description=__doc__.splitlines()[0])
    parser.add_argument("--greenlets", type=int, default=500, help="concurrent greenlets (default 500)")
    parser.add_argument("--iterations", type=int, default=20, help="iterations per greenlet (default 20)")
    parser.add_argument("--switches", type=int, default=2, help="gevent.sleep(0) per op (default 2)")
    args = parser.parse_args(argv)
    if args.greenlets < 1 or args.iterations < 1 or args.switches < 1:
        parser.error("--greenlets, --iterations and --switches must be at least 1")
    return args


def run(greenlets: int, iterations: int, switches: int) -> dict[str, Any]:
    """One timed run: every greenlet spawned, run and joined, as in gevent_bench."""
    sleep = gevent.sleep
    ops = [0]
    shared = {"_id": 0}

    def op(doc: dict[str, Any]) -> None:
        for _ in range(switches):
            sleep(0)

    def worker(index: int) -> None:
        # The per-greenlet state of gevent_bench's worker (its key, as concurrency.task_key
        # spells it, and the count its read must see), without importing pymongo or the driver.
        key = {"_id": "g%d" % index}
        expected = 0
        for _ in range(iterations):
            op(key)  # the $inc upsert
            expected += 1
            op(key)  # the read of the greenlet's own key
            op(shared)  # the find_one of the shared document
            ops[0] += 3

    t0 = time.perf_counter()
    c0 = time.process_time()
    gevent.joinall([gevent.spawn(worker, i) for i in range(greenlets)], raise_error=True)
    elapsed = time.perf_counter() - t0
    cpu = time.process_time() - c0
    return {
        "runner": "gevent_floor",
        "server": None,  # no server and no I/O: ops_per_s counts switches only
        "greenlets": greenlets,
        "iterations": iterations,
        "switches": switches,
        "ops": ops[0],
        "seconds": elapsed,
        "client_cpu_s": cpu,
        "ops_per_s": ops[0] / elapsed if elapsed else 0.0,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    json.dump(run(args.greenlets, args.iterations, args.switches), sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
