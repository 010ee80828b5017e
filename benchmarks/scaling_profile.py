"""Where the cost per greenlet comes from: the scaling workload taken apart.

Usage::

    python -m benchmarks.scaling_profile [--uri URI] [--task-iterations 30000] [--greenlets 10,100,1000,10000]

Not part of ``python -m benchmarks``: a diagnostic, whose findings are in
benchmarks/README.md ("Where the cost per greenlet goes").  Each variant runs
in a fresh gevent-patched subprocess (this module with ``--child``), at every
greenlet count, with the same number of greenlet-iterations per point; every
iteration is three ``find_one`` of one shared document, so the server's work
is the same everywhere and only the client side changes:

- ``gevent + raw sockets``: no driver: 50 raw connections (pre-encoded
  OP_MSG, replies not decoded) in a ``gevent.queue.Queue``; the floor that
  gevent's hub, greenlet switching and a FIFO wait queue impose;
- ``mongo_requests, pool 50``: the driver with maxPoolSize=50 (every
  checkout past 50 greenlets goes through the pool's wait queue);
- ``mongo_requests, pool = greenlets``: no wait queue at all (up to 1,000
  greenlets; more would open more sockets than a test mongod should take);
- ``mongo_requests, request per iteration``: pool 50, the three reads inside
  ``start_request()``, so each greenlet also gets a request record
  (``gevent.local``) and a death watch (``rawlink``);
- ``pymongo, pool 50``;
- ``mongo_requests, pool 10``: as few sockets as the smallest point has
  greenlets, so every point has the same number of requests in flight at the
  server and only the number of waiting greenlets grows;
- ``gevent + raw sockets, FIFO hand-off``: the raw sockets again, but a
  released connection goes to the longest waiter, through a hub callback, as
  mongo_requests' pool does (``gevent.queue.Queue`` lets the releaser take it
  back at once); the floor for a fair pool;
- ``gevent alone, no I/O``: every "op" is a ``gevent.sleep(0)``: what a
  greenlet switch through the hub costs at each greenlet count.

Besides ops/s it prints CPU microseconds per op (this process only) and the
per-greenlet fixed costs measured with no I/O: spawning and joining a
greenlet, and a first ``start_request()``/``end_request()`` in a fresh greenlet.
"""

from __future__ import annotations

import argparse
import collections
import json
import subprocess
import sys
import time
from typing import Any

from .servers import server_uri

VARIANTS = (
    "gevent + raw sockets",
    "mongo_requests, pool 50",
    "mongo_requests, pool = greenlets",
    "mongo_requests, request per iteration",
    "pymongo, pool 50",
    "mongo_requests, pool 10",
    "gevent + raw sockets, FIFO hand-off",
    "gevent alone, no I/O",
)


def child(uri: str, variant: str, greenlets: int, iterations: int) -> dict[str, Any]:
    """Runs in the gevent-patched subprocess."""
    import gevent
    import gevent.queue

    from . import spec
    from .raw import RawConnection, encode_msg

    setup = RawConnection(_address(uri))
    setup.command({"drop": spec.C_GEVENT}, spec.DB)
    setup.command({"insert": spec.C_GEVENT, "documents": [{"_id": spec.GEVENT_SHARED_ID, "v": 1}]}, spec.DB)
    setup.close()
    shared = {"_id": spec.GEVENT_SHARED_ID}
    close: Any = None
    if variant == "gevent + raw sockets":
        msg = encode_msg({"find": spec.C_GEVENT, "filter": shared, "limit": 1, "singleBatch": True}, spec.DB)
        conns: Any = gevent.queue.Queue()
        for _ in range(50):
            conns.put(RawConnection(_address(uri)))

        def op() -> None:
            conn = conns.get()
            try:
                conn.roundtrip(msg)
            finally:
                conns.put(conn)

        def iteration() -> None:
            op()
            op()
            op()
    elif variant == "gevent + raw sockets, FIFO hand-off":
        msg = encode_msg({"find": spec.C_GEVENT, "filter": shared, "limit": 1, "singleBatch": True}, spec.DB)
        idle = [RawConnection(_address(uri)) for _ in range(50)]
        waiting: collections.deque[Any] = collections.deque()
        hub = gevent.get_hub()
        getcurrent = gevent.getcurrent

        def op() -> None:
            if idle and not waiting:
                conn = idle.pop()
            else:
                waiting.append(getcurrent())
                conn = hub.switch()
            try:
                conn.roundtrip(msg)
            finally:
                if waiting:
                    hub.loop.run_callback(waiting.popleft().switch, conn)
                else:
                    idle.append(conn)

        def iteration() -> None:
            op()
            op()
            op()
    elif variant == "gevent alone, no I/O":
        sleep = gevent.sleep

        def iteration() -> None:
            sleep(0)
            sleep(0)
            sleep(0)
    else:
        if variant.startswith("pymongo"):
            import pymongo

            client: Any = pymongo.MongoClient(uri, maxPoolSize=50, directConnection=True)
        else:
            import mongo_requests

            pool = {"mongo_requests, pool = greenlets": greenlets, "mongo_requests, pool 10": 10}.get(variant, 50)
            client = mongo_requests.MongoClient(uri, maxPoolSize=pool)
        close = client.close
        find_one = client[spec.DB][spec.C_GEVENT].find_one
        if variant == "mongo_requests, request per iteration":
            start_request = client.start_request

            def iteration() -> None:
                with start_request():
                    find_one(shared)
                    find_one(shared)
                    find_one(shared)
        else:

            def iteration() -> None:
                find_one(shared)
                find_one(shared)
                find_one(shared)

    def worker() -> None:
        for _ in range(iterations):
            iteration()

    c0 = time.process_time()
    t0 = time.perf_counter()
    gevent.joinall([gevent.spawn(worker) for _ in range(greenlets)], raise_error=True)
    wall = time.perf_counter() - t0
    cpu = time.process_time() - c0
    ops = 3 * greenlets * iterations
    out = {"variant": variant, "greenlets": greenlets, "ops_per_s": ops / wall, "cpu_us_per_op": cpu / ops * 1e6}
    if variant == "mongo_requests, request per iteration":
        out.update(_fixed_costs(client, greenlets))
    if close is not None:
        close()
    return out


def _fixed_costs(client: Any, greenlets: int) -> dict[str, float]:
    """Per-greenlet costs with no I/O: spawn+join, and spawn+join with a first request."""
    import gevent

    def nothing() -> None:
        pass

    def a_request() -> None:
        client.start_request()
        client.end_request()

    out = {}
    for name, fn in (("spawn_join_us", nothing), ("spawn_join_first_request_us", a_request)):
        t0 = time.perf_counter()
        gevent.joinall([gevent.spawn(fn) for _ in range(greenlets)])
        out[name] = (time.perf_counter() - t0) / greenlets * 1e6
    return out


def _address(uri: str) -> tuple[str, int]:
    from pymongo import uri_parser

    host, port = uri_parser.parse_uri(uri)["nodelist"][0]
    return host, int(port)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scaling_profile", description=__doc__.splitlines()[0])
    parser.add_argument("--uri", help="server to use (default: a throwaway mongod)")
    parser.add_argument("--task-iterations", type=int, default=30_000, help="greenlet-iterations per point")
    parser.add_argument("--greenlets", default="10,100,1000,10000", help="comma-separated greenlet counts")
    parser.add_argument(
        "--variants",
        default=",".join(str(i) for i in range(len(VARIANTS))),
        help="comma-separated indexes into the variant list (default: all)",
    )
    parser.add_argument("--child", nargs=3, metavar=("VARIANT", "GREENLETS", "ITERATIONS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        from gevent import monkey

        monkey.patch_all()
        print(json.dumps(child(args.uri, VARIANTS[int(args.child[0])], int(args.child[1]), int(args.child[2]))))
        return 0
    with server_uri(args.uri) as uri:
        print("| variant | greenlets | ops/s | client CPU us/op | spawn+join us | + first request us |")
        print("|---|---:|---:|---:|---:|---:|")
        for index in (int(i) for i in args.variants.split(",")):
            for greenlets in (int(g) for g in args.greenlets.split(",")):
                if VARIANTS[index] == "mongo_requests, pool = greenlets" and greenlets > 1000:
                    continue
                iterations = max(1, args.task_iterations // greenlets)
                proc = subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "benchmarks.scaling_profile",
                        "--uri",
                        uri,
                        "--child",
                        str(index),
                        str(greenlets),
                        str(iterations),
                    ],
                    capture_output=True,
                    text=True,
                    timeout=900,
                )
                if proc.returncode:
                    print("| %s | %d | failed: %s |" % (VARIANTS[index], greenlets, proc.stderr.strip()[-300:]))
                    continue
                r = json.loads(proc.stdout.strip().splitlines()[-1])
                print(
                    "| %s | %s | %.0f | %.1f | %s | %s |"
                    % (
                        r["variant"],
                        f"{greenlets:,}",
                        r["ops_per_s"],
                        r["cpu_us_per_op"],
                        "%.1f" % r["spawn_join_us"] if "spawn_join_us" in r else "",
                        "%.1f" % r["spawn_join_first_request_us"] if "spawn_join_first_request_us" in r else "",
                    ),
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
