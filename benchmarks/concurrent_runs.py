"""The concurrent workloads of ``python -m benchmarks``: gevent (and asyncio) runs in subprocesses.

``gevent``: 500 greenlets (``--greenlets``), maxPoolSize 50 (``--pool-size``),
every configuration in :data:`GEVENT_CONFIGS` once per repetition, in turn.

``scaling``: the same workload at 10, 100, 1,000 and 10,000 greenlets with
maxPoolSize 50, for the configurations in :data:`SCALING_CONFIGS`.  Every
point does about the same number of operations (``SCALING_TASK_ITERATIONS``
greenlet-iterations, split evenly among the greenlets), so a point with many
greenlets differs from one with few only in how many are waiting at once.
A repetition runs every configuration at every greenlet count, in an order
that changes from one repetition to the next (:func:`scaling_order`), and a
curve's drop is the median of the repetitions' own drops (:func:`paired_drops`).
Every repetition also runs gevent's own floor at each greenlet count
(:mod:`benchmarks.gevent_floor`: the same shape with no driver and no I/O), so
a curve's rise in client CPU per op can be split into gevent's part and the
driver's (:func:`floor_summary`, :func:`driver_rises`).

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
# Each repetition is 12 subprocesses of 5-20 s: 5 repetitions take about 15 minutes here.
SCALING_MAX_REPS = 5
# gevent's own floor (benchmarks.gevent_floor), run at every point of every repetition: not a Config, since it
# has no server, no ops/s target and no connections.  Two switches per op: an op of the real workload waits
# about twice (for its socket's reply, and for a pooled socket).
FLOOR_LABEL = "gevent alone"
FLOOR_SWITCHES = 2
FLOOR_NOTE = "gevent alone: the same shape, %d switches per op, no driver, no I/O" % FLOOR_SWITCHES


def run_one(
    cfg: Config, uri: str, pool_size: int, greenlets: int, iterations: int, preinsert: bool = False
) -> tuple[Any, str | None]:
    """(the run's JSON object, None) or (None, what went wrong)."""
    return run_command(cfg.command(uri, pool_size, greenlets, iterations, preinsert))


def run_command(cmd: list[str]) -> tuple[Any, str | None]:
    """Run one benchmark subprocess: (the JSON object it printed last, None) or (None, what went wrong)."""
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
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
    """Repetitions of the scaling section: up to 5 (2 with ``--quick``, enough to exercise the pairing)."""
    return min(args.reps, 2 if args.quick else SCALING_MAX_REPS)


def scaling_steps(args: Any) -> int:
    return scaling_reps(args) * (len(SCALING_CONFIGS) + 1) * len(SCALING_GREENLETS)  # + 1: the floor


def scaling_order(rep: int) -> tuple[list[Config], list[int]]:
    """(configurations, greenlet counts) in the order repetition ``rep`` runs them.

    Ascending in even repetitions, descending in odd ones, and rotated by one
    every two repetitions: no greenlet count is always first or last, and the
    distance from a repetition's 10-greenlet run to its 10,000-greenlet run
    changes sign from one repetition to the next, so a drift during the run
    does not always favour the same end of the curve.  The configurations
    rotate too, so none always runs first.
    """
    sizes = list(SCALING_GREENLETS) if rep % 2 == 0 else list(reversed(SCALING_GREENLETS))
    shift = (rep // 2) % len(sizes)
    turn = rep % len(SCALING_CONFIGS)
    return list(SCALING_CONFIGS[turn:] + SCALING_CONFIGS[:turn]), sizes[shift:] + sizes[:shift]


def _cpu_us_per_op(run: dict[str, Any]) -> float | None:
    """The benchmark process's CPU per op in one run (None if the runner did not report it)."""
    cpu = run.get("client_cpu_s")
    return cpu * 1e6 / run["ops"] if cpu is not None and run["ops"] else None


def paired_drops(first: list[dict[str, Any]], last: list[dict[str, Any]], reps: int) -> dict[str, Any]:
    """Each repetition's own drop in ops/s, and rise in client CPU per op, from its ``first`` run to its ``last``.

    ``first`` and ``last`` are one configuration's runs at the fewest and the
    most greenlets, each tagged with its repetition (``"rep"``).  A repetition
    that lost either run has no pair (None).
    """
    by_rep_first = {r["rep"]: r for r in first}
    by_rep_last = {r["rep"]: r for r in last}
    drops: list[float | None] = []
    rises: list[float | None] = []
    for rep in range(reps):
        a, b = by_rep_first.get(rep), by_rep_last.get(rep)
        drops.append(1 - b["ops_per_s"] / a["ops_per_s"] if a and b and a["ops_per_s"] else None)
        cpu_a, cpu_b = (_cpu_us_per_op(a), _cpu_us_per_op(b)) if a and b else (None, None)
        rises.append(cpu_b - cpu_a if cpu_a is not None and cpu_b is not None else None)
    paired = [d for d in drops if d is not None]
    paired_rises = [x for x in rises if x is not None]
    return {
        # Throughput lost from the fewest to the most greenlets (issue 13's target: <= 5%): the median of
        # the repetitions' own drops, so a drift between repetitions cancels.
        "drop": report.median(paired),
        "drops_per_rep": drops,
        "drop_min": min(paired, default=None),
        "drop_max": max(paired, default=None),
        "client_cpu_rise_us_per_op": report.median(paired_rises),
        "client_cpu_rise_us_per_op_per_rep": rises,
    }


def floor_command(greenlets: int, iterations: int) -> list[str]:
    """The command line of one run of gevent's floor."""
    return [
        sys.executable,
        "-m",
        "benchmarks.gevent_floor",
        "--greenlets",
        str(greenlets),
        "--iterations",
        str(iterations),
        "--switches",
        str(FLOOR_SWITCHES),
    ]


def floor_summary(runs: dict[int, list[dict[str, Any]]], errors: dict[int, list[str]], reps: int) -> dict[str, Any]:
    """The floor's points (per-rep runs, median client CPU per op) and its paired CPU rise, fewest to most greenlets.

    ``runs`` and ``errors`` are keyed by greenlet count, each run tagged with its repetition (``"rep"``).
    """
    sizes = sorted(runs)
    points = {
        str(g): {
            "runs": runs[g],
            "client_cpu_us_per_op_median": report.median([x for x in map(_cpu_us_per_op, runs[g]) if x is not None]),
            "errors": len(errors[g]),
            "run_errors": errors[g],
        }
        for g in sizes
    }
    paired = paired_drops(runs[sizes[0]], runs[sizes[-1]], reps)
    return {
        "label": FLOOR_LABEL,
        "note": FLOOR_NOTE,
        "switches": FLOOR_SWITCHES,
        # No server: its ops/s count switches only, so no drop is reported, only client CPU.
        "greenlets": sizes,
        "client_cpu_us_per_op": [points[str(g)]["client_cpu_us_per_op_median"] for g in sizes],
        "client_cpu_rise_us_per_op": paired["client_cpu_rise_us_per_op"],
        "client_cpu_rise_us_per_op_per_rep": paired["client_cpu_rise_us_per_op_per_rep"],
        "points": points,
    }


def driver_rises(curve_rises: list[float | None], floor_rises: list[float | None]) -> dict[str, Any]:
    """A curve's CPU rise less the floor's, repetition by repetition: the part that is not gevent's own.

    Derived, not measured: it assumes gevent's cost in the real run is the floor's,
    and it holds the server-side and GC effects the floor lacks (benchmarks/README.md).
    """
    per_rep = [
        c - f if c is not None and f is not None else None for c, f in zip(curve_rises, floor_rises, strict=True)
    ]
    return {
        "driver_cpu_rise_us_per_op": report.median([x for x in per_rep if x is not None]),
        "driver_cpu_rise_us_per_op_per_rep": per_rep,
    }


def scaling_curve(
    label: str, points: dict[str, dict[str, Any]], reps: int, floor: dict[str, Any] | None = None
) -> dict[str, Any]:
    """One configuration's curve: the medians at each greenlet count, and the drop from the first to the last.

    With ``floor`` (see :func:`floor_summary`), also the curve's CPU rise less gevent's own, per repetition.
    """
    sizes = [int(g) for g in points]
    cfgs = [points[str(g)]["configs"][label] for g in sizes]
    ops = [c["median_ops_per_s"] for c in cfgs]
    curve: dict[str, Any] = {
        "greenlets": sizes,
        "ops_per_s": ops,
        "peak_connections": [c["peak_connections_max"] for c in cfgs],
        "memory_per_greenlet_bytes": [c["memory_per_task_bytes_median"] for c in cfgs],
        "client_cpu_us_per_op": [c.get("client_cpu_us_per_op_median") for c in cfgs],
    }
    curve.update(paired_drops(cfgs[0]["runs"], cfgs[-1]["runs"], reps))
    # The figure reported before the runs were paired: the drop from one median to the other.
    curve["drop_of_medians"] = (1 - ops[-1] / ops[0]) if ops[0] and ops[-1] else None
    if floor is not None:
        curve.update(
            driver_rises(curve["client_cpu_rise_us_per_op_per_rep"], floor["client_cpu_rise_us_per_op_per_rep"])
        )
    return curve


def run_scaling(uri: str, args: Any, progress: Any) -> dict[str, Any]:
    """The ``scaling`` workload: ops/s, peak connections and memory per greenlet against the greenlet count.

    One repetition runs every configuration at every greenlet count, each
    configuration's four points in a row (see :func:`scaling_order`), so the
    runs that a drop compares are measured minutes, not a whole section, apart.
    """
    reps = scaling_reps(args)
    total = 3_000 if args.quick else SCALING_TASK_ITERATIONS
    iterations = {g: max(1, total // g) for g in SCALING_GREENLETS}
    runs: dict[tuple[int, str], list[dict[str, Any]]] = {
        (g, c.label): [] for g in SCALING_GREENLETS for c in SCALING_CONFIGS
    }
    errors: dict[tuple[int, str], list[str]] = {key: [] for key in runs}
    floor_runs: dict[int, list[dict[str, Any]]] = {g: [] for g in SCALING_GREENLETS}
    floor_errors: dict[int, list[str]] = {g: [] for g in SCALING_GREENLETS}
    order: list[list[list[Any]]] = []
    floor_order: list[list[int]] = []
    for rep in range(reps):
        configs, sizes = scaling_order(rep)
        order.append([])
        # gevent's own floor before the configurations, in this repetition's order of greenlet counts (about a
        # second a point).  Kept out of `order`, so that a config run's position means what it did before.
        floor_order.append(sizes)
        for position, greenlets in enumerate(sizes):
            progress.step("scaling rep %d/%d %s, %d greenlets" % (rep + 1, reps, FLOOR_LABEL, greenlets))
            run, error = run_command(floor_command(greenlets, iterations[greenlets]))
            if error is not None:
                floor_errors[greenlets].append("rep %d: %s" % (rep + 1, error))
            else:
                run.update(rep=rep, position=position)
                floor_runs[greenlets].append(run)
        for cfg in configs:
            for greenlets in sizes:
                progress.step("scaling rep %d/%d %s, %d greenlets" % (rep + 1, reps, cfg.label, greenlets))
                order[-1].append([greenlets, cfg.label])
                # Every task's counter exists before timing, so the server does
                # the same work at every point (an update per upsert); else
                # 10,000 greenlets insert 10,000 documents that 10 do not.
                run, error = run_one(cfg, uri, SCALING_POOL_SIZE, greenlets, iterations[greenlets], preinsert=True)
                if error is not None:
                    errors[greenlets, cfg.label].append("rep %d: %s" % (rep + 1, error))
                else:
                    run.update(rep=rep, position=len(order[-1]) - 1)
                    runs[greenlets, cfg.label].append(run)
    points = {
        str(g): {
            "iterations": iterations[g],
            "configs": {c.label: summarize(c, runs[g, c.label], errors[g, c.label]) for c in SCALING_CONFIGS},
        }
        for g in SCALING_GREENLETS
    }
    floor = floor_summary(floor_runs, floor_errors, reps)
    floor["order"] = floor_order  # per repetition, the greenlet counts in the order they ran, before its configs
    return {
        "max_pool_size": SCALING_POOL_SIZE,
        "reps": reps,
        "task_iterations": total,
        # What drop means here (report.scaling_markdown renders older results.json files too).
        "method": "interleaved",
        "order": order,  # per repetition, the [greenlets, config] runs in the order they ran
        "points": points,
        "curves": {c.label: scaling_curve(c.label, points, reps, floor) for c in SCALING_CONFIGS},
        "floor": floor,
    }
