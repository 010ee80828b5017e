"""python -m benchmarks: raw socket vs mongo_requests vs PyMongo, side by side.

One process, one server, one run: the four in-process clients (raw,
mongo_requests, pymongo, pymongo-noretry) take turns within every repetition
of every workload, so a noisy machine slows them all alike and the ratios
come from side-by-side measurements.  The gevent, asyncio and scaling
workloads run in subprocesses (monkey-patching is process-wide), also
interleaved per repetition; replset starts a 3-member replica set (or uses
--replset), tls its own TLS server.  See benchmarks/README.md for the method.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import platform
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any, NamedTuple

import bson
import pymongo
from pymongo import uri_parser

import mongo_requests

from . import concurrent_runs, pipeline, replset, report, secure, spec
from .adapters import CLIENTS, MR, Adapter, make_clients
from .progress import Progress
from .servers import server_uri
from .workloads import ALL_NAMES, REQUEST_OVERHEAD, REQUEST_VARIANTS, WORKLOADS, Workload

ROOT = Path(__file__).resolve().parent.parent  # the directory holding the package
DEFAULT_OUT = Path(__file__).resolve().parent / "results"


class Section(NamedTuple):
    """A workload with its own runner, run after the in-process clients are closed.

    ``run(uri, args, progress)`` returns a JSON-able dict, stored as
    ``results[name]``; ``report.markdown`` renders it (see
    ``report.SECTION_MARKDOWN``).  ``steps(args)`` is its share of the progress bar.
    """

    name: str
    steps: Callable[[argparse.Namespace], int]
    run: Callable[[str, argparse.Namespace, Progress], dict]


SECTIONS = (
    Section("gevent", lambda a: concurrent_runs.gevent_steps(a.reps), concurrent_runs.run_gevent),
    Section("scaling", concurrent_runs.scaling_steps, concurrent_runs.run_scaling),
    # Its own throwaway 3-member set unless --replset names one; the standalone retry rows use --uri's server.
    Section("replset", replset.steps, replset.run),
    # Its own mongod --auth --tlsMode requireTLS, whatever --uri says.
    Section("tls", lambda a: secure.steps(a.reps), lambda _uri, a, p: secure.run(a.quick, a.reps, p)),
    # Pipelined w=1 writes on loopback and through the 1 ms delay proxy (--uri's server).
    Section("pipeline", pipeline.steps, pipeline.run_section),
)

EPILOG = """workloads:
  in-process (raw, mongo_requests, pymongo, pymongo-noretry):
    %s
  request_overhead   mongo_requests only: find_one_by_id outside and inside a request
  gevent             500 greenlets, maxPoolSize 50: mongo_requests w=0 in a request, w=0 with
                     auto_start_request, w=1; pymongo w=1 and w=0; AsyncMongoClient w=1 (asyncio tasks)
  scaling            the gevent workload at 10, 100, 1,000 and 10,000 greenlets, maxPoolSize 50,
                     beside gevent's own floor (the same shape, no driver and no I/O)
  replset            a 3-member replica set: primary and secondary reads, w=1 updates, gevent,
                     retryable-writes overhead (also on the standalone); peak connections per member
  tls                its own mongod with TLS and SCRAM: connection set-up, find_one and w=1 over TLS
  pipeline           w=1 $inc upserts pipelined (start_request(pipeline=True)) vs plain w=1, PyMongo
                     and a raw socket, on loopback and through a 1 ms round-trip delay proxy

See benchmarks/README.md for the method and how to read the results."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=__doc__.splitlines()[0],
        epilog=EPILOG % textwrap.fill(", ".join(w.name for w in WORKLOADS), 96, subsequent_indent="    "),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="small counts, to check the harness (a few minutes)")
    parser.add_argument("--uri", help="server to use (default: $MONGODB_URI, else a throwaway mongod)")
    parser.add_argument(
        "--replset", metavar="URI", help="replica set for the replset workload (default: a throwaway 3-member set)"
    )
    parser.add_argument("--reps", type=int, default=5, help="timed repetitions per workload and client (default 5)")
    parser.add_argument("--only", metavar="A,B", help="comma-separated workloads to run (default: all; see below)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output directory (default benchmarks/results)")
    parser.add_argument("--pool-size", type=int, default=50, help="maxPoolSize of the gevent runs (default 50)")
    parser.add_argument("--greenlets", type=int, default=500, help="greenlets in the gevent runs (default 500)")
    args = parser.parse_args(argv)
    if args.reps < 1:
        parser.error("--reps must be at least 1")
    names = ALL_NAMES if not args.only else [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in ALL_NAMES]
    if unknown:
        parser.error("unknown workload(s) %s; choose from %s" % (", ".join(unknown), ", ".join(ALL_NAMES)))
    args.names = [n for n in ALL_NAMES if n in names]  # always in the canonical order
    return args


# -- timing --------------------------------------------------------------------
def time_block(
    run: Callable[[Adapter, int, Any], int], client: Adapter, n: int, inputs: Any = None
) -> tuple[float, float]:
    """(wall seconds per op, this process's CPU seconds per op) of one timed call.

    Wall time is the result.  CPU time (all of this process's threads) is kept
    as a cross-check: on a loaded machine it is much less disturbed by other
    processes, though it leaves out the server's share of the work.
    """
    # Collect now, so garbage left by the previous client is not charged to
    # this one, and the prepared inputs move to the oldest generation.
    gc.collect()
    c0 = time.process_time()
    t0 = time.perf_counter()
    ops = run(client, n, inputs)
    elapsed = time.perf_counter() - t0
    cpu = time.process_time() - c0
    return elapsed / ops, cpu / ops


def run_workload(
    w: Workload, clients: list[Adapter], db: Any, args: argparse.Namespace, progress: Progress
) -> dict[str, Any]:
    n, warmup = w.counts(args.quick)
    if w.setup:
        w.setup(db)
    # Warm-up: connections, server caches and the clients' code paths; then
    # check once per client that the operation does what it should.
    for c in clients:
        if w.reset:
            w.reset(db)
        w.run(c, warmup, w.inputs(warmup) if w.inputs else None)
        if w.verify:
            w.verify(c)
    samples: dict[str, list[float]] = {c.name: [] for c in clients}
    cpu_us: dict[str, list[float]] = {c.name: [] for c in clients}
    for rep in range(args.reps):
        for c in clients:  # interleaved: raw, mr, pymongo, pymongo-noretry, raw, ...
            progress.step("%s rep %d/%d %s" % (w.name, rep + 1, args.reps, c.name))
            if w.reset:
                w.reset(db)
            inputs = w.inputs(n) if w.inputs else None
            before = w.snapshot(db) if w.snapshot else None
            per_op, cpu_per_op = time_block(w.run, c, n, inputs)
            if w.check:
                w.check(db, before, n)
            samples[c.name].append(1.0 / per_op)
            cpu_us[c.name].append(cpu_per_op * 1e6)
    out = {"description": w.description, "ops_per_block": n, "warmup_ops": warmup, "docs_per_op": w.docs_per_op}
    out.update(report.summarize_workload(samples, w.docs_per_op, cpu_us))
    return out


def run_request_overhead(mr: Adapter, args: argparse.Namespace, progress: Progress) -> dict[str, Any]:
    """find_one_by_id outside and inside a request (and a request per op), interleaved."""
    # The reads collection is seeded by the caller (with the find_one workloads).
    n, warmup = next(w for w in WORKLOADS if w.name == "find_one_by_id").counts(args.quick)
    for run in REQUEST_VARIANTS.values():
        run(mr, warmup)
    us: dict[str, list[float]] = {name: [] for name in REQUEST_VARIANTS}
    cpu: dict[str, list[float]] = {name: [] for name in REQUEST_VARIANTS}
    for rep in range(args.reps):
        for name, run in REQUEST_VARIANTS.items():
            progress.step("%s rep %d/%d %s" % (REQUEST_OVERHEAD, rep + 1, args.reps, name))
            wall_s, cpu_s = time_block(run, mr, n)
            us[name].append(wall_s * 1e6)
            cpu[name].append(cpu_s * 1e6)

    def added(series: dict[str, list[float]], variant: str) -> float | None:
        # Paired within each repetition, so drift between repetitions cancels.
        return report.median([v - o for v, o in zip(series[variant], series["outside"], strict=False)])

    return {
        "workload": "find_one_by_id",
        "ops_per_block": n,
        "variants": {
            k: {
                "samples_us_per_op": us[k],
                "median_us_per_op": report.median(us[k]),
                "samples_cpu_us_per_op": cpu[k],
                "median_cpu_us_per_op": report.median(cpu[k]),
            }
            for k in REQUEST_VARIANTS
        },
        "added_us_per_op": added(us, "inside"),
        "added_us_per_op_per_op_request": added(us, "per_op"),
        "added_cpu_us_per_op": added(cpu, "inside"),
        "added_cpu_us_per_op_per_op_request": added(cpu, "per_op"),
    }


# -- the run -------------------------------------------------------------------
def machine_info(setup: Any, server: str, address: tuple[str, int]) -> dict[str, Any]:
    cpu_model = None
    try:
        with open("/proc/cpuinfo") as fh:
            cpu_model = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), None)
    except OSError:
        pass

    def version(dist: str) -> str | None:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None

    def git(*cmd: str) -> str | None:
        try:
            return subprocess.run(["git", *cmd], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None

    return {
        "cpu_count": os.cpu_count(),
        "cpu_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_model": cpu_model,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "pymongo": pymongo.version,
        "pymongo_c_extensions": pymongo.has_c(),
        "bson_c_extension": bson.has_c(),
        "mongo_requests": mongo_requests.__version__,
        "gevent": version("gevent"),
        "matplotlib": version("matplotlib"),
        "server_version": setup.server_info().get("version"),
        "server": server,
        "server_address": "%s:%d" % address,
        "git_commit": git("rev-parse", "HEAD"),
        "git_dirty": bool(git("status", "--porcelain")),
        "loadavg_start": list(os.getloadavg()),
    }


def run_all(uri: str, server: str, args: argparse.Namespace) -> tuple[dict[str, Any], bool]:
    """Run the selected workloads; returns (results, whether everything ran)."""
    address = tuple(uri_parser.parse_uri(uri)["nodelist"][0])
    setup = pymongo.MongoClient(uri, directConnection=True)  # untimed setup and checks
    db = setup[spec.DB]
    setup.drop_database(spec.DB)
    results: dict[str, Any] = {
        "timestamp": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": ["python", "-m", "benchmarks"] + sys.argv[1:],
        "config": {
            "quick": args.quick,
            "reps": args.reps,
            "only": args.names,
            "pool_size": args.pool_size,
            "greenlets": args.greenlets,
            "replset": args.replset,
            "interleaving": list(CLIENTS),
        },
        "machine": machine_info(setup, server, address),
        "workloads": {},
    }
    ok = True
    selected = [w for w in WORKLOADS if w.name in args.names]
    in_process = selected or REQUEST_OVERHEAD in args.names
    # A section's steps(args) already counts its repetitions (scaling runs fewer than --reps).
    total = args.reps * (
        len(selected) * len(CLIENTS) + (len(REQUEST_VARIANTS) if REQUEST_OVERHEAD in args.names else 0)
    ) + sum(sec.steps(args) for sec in SECTIONS if sec.name in args.names)
    progress = Progress(total)
    try:
        if in_process:
            clients = make_clients(uri, address)
            try:
                for w in selected:
                    start = progress.done
                    try:
                        results["workloads"][w.name] = run_workload(w, clients, db, args, progress)
                    except Exception as exc:  # report it, and carry on with the other workloads
                        ok = False
                        results["workloads"][w.name] = {"error": "%s: %s" % (type(exc).__name__, exc)}
                        progress.note("%s failed: %r" % (w.name, exc))
                        progress.done = start + args.reps * len(clients)
                if REQUEST_OVERHEAD in args.names:
                    mr = next(c for c in clients if c.name == MR)
                    try:
                        if "find_one_by_id" not in args.names:
                            next(w for w in WORKLOADS if w.name == "find_one_by_id").setup(db)
                        results["request_overhead"] = run_request_overhead(mr, args, progress)
                    except Exception as exc:
                        ok = False
                        results["request_overhead"] = {"error": "%s: %s" % (type(exc).__name__, exc)}
                        progress.note("request_overhead failed: %r" % (exc,))
            finally:
                for c in clients:
                    c.close()
        # Last, with the in-process clients closed, so their idle sockets
        # cannot be mistaken for the subprocess's.
        for sec in SECTIONS:
            if sec.name not in args.names:
                continue
            start = progress.done
            try:
                results[sec.name] = sec.run(uri, args, progress)
            except Exception as exc:  # report it, and carry on with the other sections
                results[sec.name] = {"error": "%s: %s" % (type(exc).__name__, exc)}
                progress.note("%s failed: %r" % (sec.name, exc))
                progress.done = start + sec.steps(args)
            ok = ok and not report.section_errors(results[sec.name])
    finally:
        progress.finish()
        try:
            setup.drop_database(spec.DB)
        finally:
            setup.close()
    results["machine"]["loadavg_end"] = list(os.getloadavg())
    results["targets"] = report.evaluate_targets(results)
    return results, ok


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    uri = args.uri or os.environ.get("MONGODB_URI")
    if uri:
        server = "given by --uri" if args.uri else "given by MONGODB_URI"
    else:
        print("starting a throwaway mongod ...", file=sys.stderr, flush=True)
        server = "throwaway mongod on 127.0.0.1"
    with server_uri(uri) as uri:
        results, ok = run_all(uri, server, args)
    results["duration_s"] = time.monotonic() - started

    args.out.mkdir(parents=True, exist_ok=True)
    text = report.markdown(results)
    (args.out / "results.md").write_text(text)
    with open(args.out / "results.json", "w") as fh:
        json.dump(results, fh, indent=1)
        fh.write("\n")
    report.write_chart(results, str(args.out / "chart.png"))
    print(text)
    print(
        "wrote %s, %s and %s (%.0f s)"
        % (args.out / "results.md", args.out / "results.json", args.out / "chart.png", results["duration_s"]),
        file=sys.stderr,
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
