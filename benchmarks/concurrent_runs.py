"""The concurrent workloads of ``python -m benchmarks``: gevent (and asyncio) runs in subprocesses.

``gevent``: 500 greenlets (``--greenlets``), maxPoolSize 50 (``--pool-size``),
every configuration in :data:`GEVENT_CONFIGS` once per repetition, in turn.

``scaling``: the same workload at 10, 100, 1,000 and 10,000 greenlets with
maxPoolSize 50, for the configurations in :data:`SCALING_CONFIGS`.  Every
point does about the same number of operations (``SCALING_TASK_ITERATIONS``
greenlet-iterations, split evenly among the greenlets), so a point with many
greenlets differs from one with few only in how many are waiting at once.

Each run is a fresh subprocess (monkey-patching is process-wide) that prints
one JSON object: see :mod:`benchmarks.gevent_bench`.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any, NamedTuple

from . import report

ROOT = Path(__file__).resolve().parent.parent  # the directory holding the package


class Config(NamedTuple):
    """One bar: which runner and driver, in which mode."""

    label: str
    runner: str  # "gevent" or "asyncio"
    driver: str  # "mongo_requests" or "pymongo" (the asyncio runner is always PyMongo's AsyncMongoClient)
    mode: str  # see benchmarks.concurrency.MODES
    auto_start_request: bool = False
    note: str = ""

    def command(self, uri: str, pool_size: int, greenlets: int, iterations: int, preinsert: bool = False) -> list[str]:
        cmd = [sys.executable, "-m", "benchmarks.%s_bench" % self.runner, uri]
        if self.runner == "gevent":
            cmd.append(self.driver)
        cmd += [
            "--mode",
            self.mode,
            "--pool-size",
            str(pool_size),
            "--greenlets",
            str(greenlets),
            "--iterations",
            str(iterations),
            "--appname",
            "mr-bench-%s-%s" % (self.driver, self.mode),
        ]
        if self.auto_start_request:
            cmd.append("--auto-start-request")
        if preinsert:
            cmd.append("--preinsert")
        return cmd


MR_W0_REQUEST = Config(
    report.GEVENT_MR,
    "gevent",
    "mongo_requests",
    "w0-request",
    note="w=0 $inc + read in start_request(): the read always sees the write",
)
MR_W0_AUTO = Config(
    "mongo_requests w=0, auto_start_request",
    "gevent",
    "mongo_requests",
    "w0-request",
    True,
    note="the same; each greenlet keeps its socket until it ends",
)
MR_W1 = Config("mongo_requests w=1", "gevent", "mongo_requests", "w1", note="w=1 $inc + read, no request")
PM_W1 = Config(
    report.GEVENT_PYMONGO,
    "gevent",
    "pymongo",
    "w1",
    note="w=1 $inc + read (PyMongo cannot pin a socket, so it needs w=1 to read its write)",
)
PM_W0 = Config(
    "pymongo w=0",
    "gevent",
    "pymongo",
    "w0",
    note="w=0 $inc + read, no request: its reads may miss its writes (counted as stale)",
)
ASYNC_W1 = Config(
    "AsyncMongoClient w=1 (asyncio)",
    "asyncio",
    "pymongo",
    "w1",
    note="PyMongo's AsyncMongoClient, one asyncio task per greenlet, w=1 $inc + read",
)

GEVENT_CONFIGS = (MR_W0_REQUEST, MR_W0_AUTO, MR_W1, PM_W1, PM_W0, ASYNC_W1)
# On a replica set: the two that the issue compares, and the fair pair.
REPLSET_CONFIGS = (MR_W0_REQUEST, MR_W1, PM_W1)

SCALING_CONFIGS = (MR_W0_REQUEST, MR_W1, PM_W1)
SCALING_GREENLETS = (10, 100, 1000, 10_000)
SCALING_POOL_SIZE = 50
SCALING_TASK_ITERATIONS = 30_000  # greenlet-iterations per point (3 ops each); 3,000 with --quick (at least 1 each)


def run_one(
    cfg: Config, uri: str, pool_size: int, greenlets: int, iterations: int, preinsert: bool = False
) -> tuple[Any, str | None]:
    """(the run's JSON object, None) or (None, what went wrong)."""
    try:
        proc = subprocess.run(
            cfg.command(uri, pool_size, greenlets, iterations, preinsert),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=900,
        )
    except subprocess.TimeoutExpired:
        return None, "timed out after 900 s"
    if proc.returncode != 0:
        return None, "exit %d: %s" % (proc.returncode, proc.stderr.strip()[-500:])
    return json.loads(proc.stdout.strip().splitlines()[-1]), None


def summarize(cfg: Config, runs: list[dict[str, Any]], run_errors: list[str]) -> dict[str, Any]:
    """Medians and maxima over the repetitions of one configuration."""
    hosts = sorted({h for r in runs for h in r["peak_connections_per_member"]})
    return {
        "runner": cfg.runner,
        "driver": cfg.driver,
        "mode": cfg.mode,
        "auto_start_request": cfg.auto_start_request,
        "note": cfg.note,
        "runs": runs,
        "samples_ops_per_s": [x["ops_per_s"] for x in runs],
        "median_ops_per_s": report.median([x["ops_per_s"] for x in runs]),
        "peak_connections_max": max((x["peak_connections"] for x in runs), default=None),
        "peak_connections_median": report.median([x["peak_connections"] for x in runs]),
        "peak_connections_per_member_max": {
            h: max(r["peak_connections_per_member"].get(h, 0) for r in runs) for h in hosts
        },
        "memory_per_task_bytes_median": report.median([x["memory_per_task_bytes"] for x in runs]),
        # This process's CPU per op (user + system): less disturbed by a busy machine than ops/s.
        "client_cpu_us_per_op_median": report.median(
            [x["client_cpu_s"] * 1e6 / x["ops"] for x in runs if x.get("client_cpu_s") is not None and x["ops"]]
        ),
        "stale_reads": sum(x["stale_reads"] for x in runs),
        "errors": sum(x["errors"] for x in runs) + len(run_errors),
        "run_errors": run_errors,
    }


def run_configs(
    configs: tuple[Config, ...],
    uri: str,
    reps: int,
    pool_size: int,
    greenlets: int,
    iterations: int,
    progress: Any,
    what: str,
    preinsert: bool = False,
) -> dict[str, dict[str, Any]]:
    """Every configuration once per repetition, interleaved, each in a fresh subprocess."""
    runs: dict[str, list[dict[str, Any]]] = {c.label: [] for c in configs}
    errors: dict[str, list[str]] = {c.label: [] for c in configs}
    for rep in range(reps):
        for cfg in configs:
            progress.step("%s rep %d/%d %s" % (what, rep + 1, reps, cfg.label))
            run, error = run_one(cfg, uri, pool_size, greenlets, iterations, preinsert)
            if error is not None:
                errors[cfg.label].append(error)
            else:
                runs[cfg.label].append(run)
    return {c.label: summarize(c, runs[c.label], errors[c.label]) for c in configs}


def gevent_iterations(quick: bool) -> int:
    return 5 if quick else 20


def gevent_steps(reps: int) -> int:
    return reps * len(GEVENT_CONFIGS)


def run_gevent(uri: str, args: Any, progress: Any) -> dict[str, Any]:
    """The ``gevent`` workload: every configuration at ``--greenlets`` and ``--pool-size``."""
    iterations = gevent_iterations(args.quick)
    configs = run_configs(
        GEVENT_CONFIGS, uri, args.reps, args.pool_size, args.greenlets, iterations, progress, "gevent"
    )
    return {"max_pool_size": args.pool_size, "greenlets": args.greenlets, "iterations": iterations, "configs": configs}


def scaling_reps(args: Any) -> int:
    return 1 if args.quick else min(args.reps, 3)


def scaling_steps(args: Any) -> int:
    return scaling_reps(args) * len(SCALING_CONFIGS) * len(SCALING_GREENLETS)


def run_scaling(uri: str, args: Any, progress: Any) -> dict[str, Any]:
    """The ``scaling`` workload: ops/s, peak connections and memory per greenlet against the greenlet count."""
    total = 3_000 if args.quick else SCALING_TASK_ITERATIONS
    points: dict[str, dict[str, Any]] = {}
    for greenlets in SCALING_GREENLETS:
        iterations = max(1, total // greenlets)
        points[str(greenlets)] = {
            "iterations": iterations,
            "configs": run_configs(
                SCALING_CONFIGS,
                uri,
                scaling_reps(args),
                SCALING_POOL_SIZE,
                greenlets,
                iterations,
                progress,
                "scaling %d greenlets" % greenlets,
                # Every task's counter exists before timing, so the server does
                # the same work at every point (an update per upsert); else
                # 10,000 greenlets insert 10,000 documents that 10 do not.
                preinsert=True,
            ),
        }
    curves: dict[str, dict[str, Any]] = {}
    for cfg in SCALING_CONFIGS:
        ops = [points[str(g)]["configs"][cfg.label]["median_ops_per_s"] for g in SCALING_GREENLETS]
        first, last = ops[0], ops[-1]
        curves[cfg.label] = {
            "greenlets": list(SCALING_GREENLETS),
            "ops_per_s": ops,
            "peak_connections": [
                points[str(g)]["configs"][cfg.label]["peak_connections_max"] for g in SCALING_GREENLETS
            ],
            "memory_per_greenlet_bytes": [
                points[str(g)]["configs"][cfg.label]["memory_per_task_bytes_median"] for g in SCALING_GREENLETS
            ],
            "client_cpu_us_per_op": [
                points[str(g)]["configs"][cfg.label].get("client_cpu_us_per_op_median") for g in SCALING_GREENLETS
            ],
            # Throughput lost from the fewest to the most greenlets (issue 13's target: <= 5%).
            "drop": (1 - last / first) if first and last else None,
        }
    return {
        "max_pool_size": SCALING_POOL_SIZE,
        "reps": scaling_reps(args),
        "task_iterations": total,
        "points": points,
        "curves": curves,
    }
