"""``python -m benchmarks``: raw socket vs mongo_requests vs PyMongo, side by side.

One process, one server, one run: the four in-process clients (raw,
mongo_requests, pymongo, pymongo-noretry) take turns within every repetition
of every workload, so a noisy machine slows them all alike and the ratios
come from side-by-side measurements.  The gevent workload runs in
subprocesses (monkey-patching is process-wide), also interleaved per
repetition.  See benchmarks/README.md for the method.
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
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

import bson
import pymongo
from pymongo import uri_parser

import mongo_requests
from mongo_requests.testing import MongodServer

from . import report, secure, spec
from .adapters import CLIENTS, MR, Adapter, make_clients
from .progress import Progress
from .workloads import ALL_NAMES, GEVENT, REQUEST_OVERHEAD, REQUEST_VARIANTS, TLS, WORKLOADS, Workload

ROOT = Path(__file__).resolve().parent.parent  # the directory holding the package
DEFAULT_OUT = Path(__file__).resolve().parent / "results"

# gevent: (label, driver, auto_start_request); labels are the report's keys.
GEVENT_CONFIGS = (
    (report.GEVENT_MR, "mongo_requests", False),
    ("mongo_requests auto_start_request=True", "mongo_requests", True),
    (report.GEVENT_PYMONGO, "pymongo", False),
)
GEVENT_NOTES = {
    report.GEVENT_MR: "w=0 $inc + read in start_request()",
    "mongo_requests auto_start_request=True": "same; each greenlet keeps a socket until it ends",
    report.GEVENT_PYMONGO: "w=1 $inc, no request (pymongo cannot pin); peak includes 2 monitor sockets",
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small counts: the whole run takes about a minute")
    parser.add_argument("--uri", help="server to use (default: $MONGODB_URI, else a throwaway mongod)")
    parser.add_argument("--reps", type=int, default=5, help="timed repetitions per workload and client (default 5)")
    parser.add_argument("--only", help="comma-separated workloads: " + ",".join(ALL_NAMES))
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
        return report.median([v - o for v, o in zip(series[variant], series["outside"])])

    return {
        "workload": "find_one_by_id",
        "ops_per_block": n,
        "variants": {
            k: {"samples_us_per_op": us[k], "median_us_per_op": report.median(us[k]),
                "samples_cpu_us_per_op": cpu[k], "median_cpu_us_per_op": report.median(cpu[k])}
            for k in REQUEST_VARIANTS
        },
        "added_us_per_op": added(us, "inside"),
        "added_us_per_op_per_op_request": added(us, "per_op"),
        "added_cpu_us_per_op": added(cpu, "inside"),
        "added_cpu_us_per_op_per_op_request": added(cpu, "per_op"),
    }


def run_gevent(uri: str, args: argparse.Namespace, progress: Progress) -> dict[str, Any]:
    """Each configuration once per repetition, interleaved, each in a fresh subprocess."""
    iterations = 5 if args.quick else 20
    runs: dict[str, list[dict[str, Any]]] = {label: [] for label, _, _ in GEVENT_CONFIGS}
    errors: dict[str, list[str]] = {label: [] for label, _, _ in GEVENT_CONFIGS}
    for rep in range(args.reps):
        for label, driver, auto in GEVENT_CONFIGS:
            progress.step("gevent rep %d/%d %s" % (rep + 1, args.reps, label))
            cmd = [sys.executable, "-m", "benchmarks.gevent_bench", uri, driver, str(auto).lower(), str(args.pool_size),
                   "--greenlets", str(args.greenlets), "--iterations", str(iterations)]
            try:
                proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
            except subprocess.TimeoutExpired:
                errors[label].append("timed out after 900 s")
                continue
            if proc.returncode != 0:
                errors[label].append("exit %d: %s" % (proc.returncode, proc.stderr.strip()[-500:]))
                continue
            runs[label].append(json.loads(proc.stdout.strip().splitlines()[-1]))
    configs = {}
    for label, driver, auto in GEVENT_CONFIGS:
        r = runs[label]
        configs[label] = {
            "driver": driver,
            "auto_start_request": auto,
            "note": GEVENT_NOTES[label],
            "runs": r,
            "samples_ops_per_s": [x["ops_per_s"] for x in r],
            "median_ops_per_s": report.median([x["ops_per_s"] for x in r]),
            "peak_connections_max": max((x["peak_connections"] for x in r), default=None),
            "peak_connections_median": report.median([x["peak_connections"] for x in r]),
            "stale_reads": sum(x["stale_reads"] for x in r),
            "errors": sum(x["errors"] for x in r) + len(errors[label]),
            "run_errors": errors[label],
        }
    return {"max_pool_size": args.pool_size, "greenlets": args.greenlets, "iterations": iterations, "configs": configs}


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
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": ["python", "-m", "benchmarks"] + sys.argv[1:],
        "config": {"quick": args.quick, "reps": args.reps, "only": args.names, "pool_size": args.pool_size,
                   "greenlets": args.greenlets, "interleaving": list(CLIENTS)},
        "machine": machine_info(setup, server, address),
        "workloads": {},
    }
    ok = True
    selected = [w for w in WORKLOADS if w.name in args.names]
    in_process = selected or REQUEST_OVERHEAD in args.names
    total = args.reps * (len(selected) * len(CLIENTS)
                         + (len(REQUEST_VARIANTS) if REQUEST_OVERHEAD in args.names else 0)
                         + (len(GEVENT_CONFIGS) if GEVENT in args.names else 0)
                         + (secure.steps(args.reps) if TLS in args.names else 0))
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
        if GEVENT in args.names:
            results["gevent"] = run_gevent(uri, args, progress)
            ok = ok and not any(g["errors"] for g in results["gevent"]["configs"].values())
        if TLS in args.names:
            # Its own mongod --auth --tlsMode requireTLS, whatever --uri says.
            try:
                results["tls"] = secure.run(args.quick, args.reps, progress)
            except Exception as exc:
                ok = False
                results["tls"] = {"error": "%s: %s" % (type(exc).__name__, exc)}
                progress.note("tls failed: %r" % (exc,))
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
    mongod = None
    if uri:
        server = "given by --uri" if args.uri else "given by MONGODB_URI"
    else:
        print("starting a throwaway mongod ...", file=sys.stderr, flush=True)
        mongod = MongodServer().start()
        uri, server = mongod.uri, "throwaway mongod on 127.0.0.1"
    try:
        results, ok = run_all(uri, server, args)
    finally:
        if mongod is not None:
            mongod.stop()
            mongod.cleanup()
    results["duration_s"] = time.monotonic() - started

    args.out.mkdir(parents=True, exist_ok=True)
    text = report.markdown(results)
    (args.out / "results.md").write_text(text)
    with open(args.out / "results.json", "w") as fh:
        json.dump(results, fh, indent=1)
        fh.write("\n")
    report.write_chart(results, str(args.out / "chart.png"))
    print(text)
    print("wrote %s, %s and %s (%.0f s)" % (args.out / "results.md", args.out / "results.json", args.out / "chart.png",
                                           results["duration_s"]), file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
