"""Turn a results dict (see ``__main__``) into Markdown, targets and a chart.

Everything here is a pure function of the results, so a results.json from
another run can be re-rendered: ``python -m benchmarks.report results.json``.
"""

from __future__ import annotations

import importlib
import json
import statistics
import sys
from typing import Any

from .adapters import CLIENTS, MR, PYMONGO, PYMONGO_NORETRY, RAW

# Ratios shown in the table and chart, as (label, numerator, denominator).
RATIOS = (("mr/pymongo", MR, PYMONGO), ("mr/raw", MR, RAW), ("mr/pymongo-noretry", MR, PYMONGO_NORETRY))

# Targets: (workloads, ratio label, threshold).
SPEED_TARGETS = (
    (("ping", "find_one_by_id", "find_one_by_filter", "update_inc_upsert_w1"), "mr/pymongo", 2.0),
    (("ping", "find_one_by_id", "find_one_by_filter", "update_inc_upsert_w1"), "mr/raw", 0.8),
    (("update_inc_upsert_w0",), "mr/pymongo", 1.5),
    # issue 13's bulk throughput: not slower than PyMongo; raw documents at least twice its default.
    (("find_10000", "insert_many_1000"), "mr/pymongo", 1.0),
    (("find_10000_rawbson", "find_10000_raw_batches"), "mr/pymongo", 2.0),
)
REQUEST_OVERHEAD_MAX_US = 2.0
SCALING_MAX_DROP = 0.05  # issue 13: throughput drops by no more than 5% from 10 to 10,000 greenlets
GEVENT_MR = "mongo_requests w=0 + request"
GEVENT_PYMONGO = "pymongo w=1"
# The sections with a renderer of their own: name -> "module:function" returning Markdown lines
# (imported when needed: those modules import this one).
SECTION_MARKDOWN = {
    "gevent": "benchmarks.report:gevent_markdown",
    "scaling": "benchmarks.report:scaling_markdown",
    "replset": "benchmarks.replset:markdown",
    "tls": "benchmarks.secure:markdown",
    "pipeline": "benchmarks.pipeline:markdown",
}


# -- statistics ----------------------------------------------------------------
def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def summarize_workload(
    samples: dict[str, list[float]], docs_per_op: int, cpu_us: dict[str, list[float]] | None = None
) -> dict[str, Any]:
    """Medians per client, and ratios both of medians and paired per repetition.

    The table uses the ratio of the medians (what a reader can check from the
    printed columns); the paired ratio (median over repetitions of the ratio
    within one repetition) is kept in the JSON as a drift-robust cross-check.
    """
    clients = {}
    for name, values in samples.items():
        med = median(values)
        clients[name] = {
            "samples_ops_per_s": values,
            "median_ops_per_s": med,
            "median_docs_per_s": med * docs_per_op if med is not None and docs_per_op > 1 else None,
        }
        if cpu_us is not None:
            clients[name]["samples_cpu_us_per_op"] = cpu_us[name]
            clients[name]["median_cpu_us_per_op"] = median(cpu_us[name])
    ratios, paired = {}, {}
    for label, num, den in RATIOS:
        if num in clients and den in clients:
            a, b = clients[num]["median_ops_per_s"], clients[den]["median_ops_per_s"]
            ratios[label] = a / b if a and b else None
            pairs = [x / y for x, y in zip(samples[num], samples[den], strict=False) if y]
            paired[label] = median(pairs)
    return {"clients": clients, "ratios": ratios, "paired_ratios": paired}


# -- targets -------------------------------------------------------------------
def _target(
    text: str, measured: float | None, threshold: float, higher_is_better: bool, unit: str = ""
) -> dict[str, Any]:
    if measured is None:
        verdict = "n/a"
    elif higher_is_better:
        verdict = "PASS" if measured >= threshold else "FAIL"
    else:
        verdict = "PASS" if measured <= threshold else "FAIL"
    return {"target": text, "measured": measured, "threshold": threshold, "unit": unit, "result": verdict}


def evaluate_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """PASS/FAIL per target; ``n/a`` when its workload was not run (or failed)."""
    out = []
    workloads = results.get("workloads", {})
    for names, label, threshold in SPEED_TARGETS:
        for name in names:
            measured = workloads.get(name, {}).get("ratios", {}).get(label)
            out.append(_target("%s: %s >= %.1f" % (name, label, threshold), measured, threshold, True, "x"))
    ro = results.get("request_overhead") or {}
    out.append(
        _target(
            "request adds <= %.0f us/op (find_one_by_id)" % REQUEST_OVERHEAD_MAX_US,
            ro.get("added_us_per_op"),
            REQUEST_OVERHEAD_MAX_US,
            False,
            "us/op",
        )
    )
    configs = (results.get("gevent") or {}).get("configs", {})
    mr, pm = configs.get(GEVENT_MR, {}), configs.get(GEVENT_PYMONGO, {})
    ratio = None
    if mr.get("median_ops_per_s") and pm.get("median_ops_per_s"):
        ratio = mr["median_ops_per_s"] / pm["median_ops_per_s"]
    out.append(_target("gevent, %s: ops/s >= %s's (ratio >= 1.0)" % (GEVENT_MR, GEVENT_PYMONGO), ratio, 1.0, True, "x"))
    pool = (results.get("gevent") or {}).get("max_pool_size", results.get("config", {}).get("pool_size"))
    out.append(
        _target(
            "gevent, %s: peak connections <= maxPoolSize (%s)" % (GEVENT_MR, pool),
            mr.get("peak_connections_max"),
            pool if pool is not None else 0,
            False,
            "connections",
        )
    )
    curves = (results.get("scaling") or {}).get("curves", {})
    sc_paired = (results.get("scaling") or {}).get("method") == "interleaved"
    for label in (GEVENT_MR, "mongo_requests w=1"):
        # The median of the repetitions' own drops (concurrent_runs.paired_drops), in results since the
        # interleaved method ("method": "interleaved"); the drop of the medians before.
        drop = curves.get(label, {}).get("drop")
        out.append(
            _target(
                "scaling, %s: ops/s drop from 10 to 10,000 greenlets <= %.0f%%%s"
                % (label, SCALING_MAX_DROP * 100, " (median of paired reps)" if sc_paired else ""),
                drop * 100 if drop is not None else None,
                SCALING_MAX_DROP * 100,
                False,
                "%",
            )
        )
    pipe = results.get("pipeline") or {}
    for key, threshold in (pipe.get("targets") or {}).items():
        out.append(
            _target(
                "pipeline, %s >= %.1f" % (key, threshold), (pipe.get("ratios") or {}).get(key), threshold, True, "x"
            )
        )
    return out


def section_errors(section: dict[str, Any]) -> int:
    """Failures in a section's results: its own error, or errors in any of its concurrent runs."""
    if "error" in section:
        return 1
    count = 0
    for value in section.values():
        if isinstance(value, dict):
            if "run_errors" in value and "errors" in value:
                count += value["errors"]
            else:
                count += section_errors(value)
    return count


# -- Markdown --------------------------------------------------------------------
def fmt_rate(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:,.0f}" if x >= 100 else f"{x:,.1f}"


def fmt_ratio(x: float | None) -> str:
    return "-" if x is None else "%.2f" % x


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    rule = "|".join("---" if i == 0 else "---:" for i in range(len(header)))
    lines = ["| " + " | ".join(header) + " |", "|" + rule + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def markdown(results: dict[str, Any]) -> str:
    m = results.get("machine", {})
    cfg = results.get("config", {})
    lines = [
        "# mongo_requests benchmarks",
        "",
        "%s, %s mode, %s repetitions per workload (median shown), %.0f s in all."
        % (
            results.get("timestamp", "?"),
            "quick" if cfg.get("quick") else "full",
            cfg.get("reps"),
            results.get("duration_s", 0),
        ),
        "",
        "Machine: %s CPUs (%s usable), %s; Python %s; pymongo %s (C extensions: %s); mongo_requests %s; "
        "MongoDB %s (%s); load average %s at start, %s at end."
        % (
            m.get("cpu_count"),
            m.get("cpu_usable"),
            m.get("cpu_model", "?"),
            m.get("python"),
            m.get("pymongo"),
            m.get("pymongo_c_extensions"),
            m.get("mongo_requests"),
            m.get("server_version"),
            m.get("server"),
            _load(m.get("loadavg_start")),
            _load(m.get("loadavg_end")),
        ),
        "",
        "## Throughput (operations per second, higher is better)",
        "",
    ]
    workloads = results.get("workloads", {})
    rows, bulk, failed = [], [], []
    for name, w in workloads.items():
        if "error" in w:
            failed.append("- **%s** failed: `%s`" % (name, w["error"]))
            continue
        c = w["clients"]
        rows.append(
            [name]
            + [fmt_rate(c.get(k, {}).get("median_ops_per_s")) for k in CLIENTS]
            + [fmt_ratio(w["ratios"].get("mr/pymongo")), fmt_ratio(w["ratios"].get("mr/raw"))]
        )
        if w.get("docs_per_op", 1) > 1:
            bulk.append([name] + [fmt_rate(c.get(k, {}).get("median_docs_per_s")) for k in CLIENTS])
    lines += _table(
        [
            "workload",
            "raw ops/s",
            "mongo_requests ops/s",
            "pymongo ops/s",
            "pymongo-noretry ops/s",
            "mr/pymongo",
            "mr/raw",
        ],
        rows,
    )
    if bulk:
        lines += [
            "",
            "Documents per second for the bulk workloads (1,000 docs per insert_many op, 10,000 per find):",
            "",
        ]
        lines += _table(
            ["workload", "raw docs/s", "mongo_requests docs/s", "pymongo docs/s", "pymongo-noretry docs/s"], bulk
        )
    if failed:
        lines += [""] + failed

    ro = results.get("request_overhead")
    if ro:
        lines += ["", "## Request overhead (mongo_requests, find_one_by_id, microseconds per op, lower is better)", ""]
        if "error" in ro:
            lines.append("Failed: `%s`" % ro["error"])
        else:
            v = ro["variants"]
            lines += _table(
                ["loop", "us/op (median)", "added vs outside (median of paired reps)", "client CPU us/op", "added CPU"],
                [
                    [
                        "outside any request",
                        "%.1f" % v["outside"]["median_us_per_op"],
                        "-",
                        "%.1f" % v["outside"]["median_cpu_us_per_op"],
                        "-",
                    ],
                    [
                        "inside one `with client.start_request():`",
                        "%.1f" % v["inside"]["median_us_per_op"],
                        "%+.2f" % ro["added_us_per_op"],
                        "%.1f" % v["inside"]["median_cpu_us_per_op"],
                        "%+.2f" % ro["added_cpu_us_per_op"],
                    ],
                    [
                        "a request per op (information)",
                        "%.1f" % v["per_op"]["median_us_per_op"],
                        "%+.2f" % ro["added_us_per_op_per_op_request"],
                        "%.1f" % v["per_op"]["median_cpu_us_per_op"],
                        "%+.2f" % ro["added_cpu_us_per_op_per_op_request"],
                    ],
                ],
            )

    for name, where in SECTION_MARKDOWN.items():
        section = results.get(name)
        if not section:
            continue
        if "error" in section:
            lines += ["", "## %s" % name, "", "failed: `%s`" % section["error"]]
            continue
        module, func = where.split(":")
        lines += getattr(importlib.import_module(module), func)(section)

    targets = results.get("targets") or []
    if targets:
        lines += ["", "## Targets", ""]
        lines += _table(
            ["target", "measured", "result"],
            [
                [t["target"], "-" if t["measured"] is None else "%.2f %s" % (t["measured"], t["unit"]), t["result"]]
                for t in targets
            ],
        )
    lines += [
        "",
        "Ratios come from the same run, with clients interleaved within each repetition; "
        "see benchmarks/README.md for the method and how to read them.",
        "",
    ]
    return "\n".join(lines)


def _load(value: Any) -> str:
    return "/".join("%.2f" % x for x in value) if value else "?"


# -- sections ------------------------------------------------------------------
def _kib(x: float | None) -> str:
    return "-" if x is None else "%.1f" % (x / 1024)


def gevent_markdown(gv: dict[str, Any]) -> list[str]:
    """The gevent section: one row per configuration (driver, runner and write mode)."""
    lines = [
        "",
        "## gevent: %d greenlets x %d iterations of ($inc, read own key, find_one), maxPoolSize=%d"
        % (gv["greenlets"], gv["iterations"], gv["max_pool_size"]),
        "",
    ]
    rows = []
    for label, g in gv["configs"].items():
        if g.get("median_ops_per_s") is None:
            rows.append([label, "failed", "-", "-", "-", "-", g.get("note", "")])
        else:
            rows.append(
                [
                    label,
                    fmt_rate(g["median_ops_per_s"]),
                    str(g["peak_connections_max"]),
                    _kib(g.get("memory_per_task_bytes_median")),
                    str(g["stale_reads"]),
                    str(g["errors"]),
                    g.get("note", ""),
                ]
            )
    lines += _table(
        [
            "config",
            "ops/s (median)",
            "peak connections (max)",
            "KiB per greenlet",
            "stale reads",
            "errors",
            "what it does",
        ],
        rows,
    )
    for label, g in gv["configs"].items():
        for err in g.get("run_errors", []):
            lines.append("- %s: `%s`" % (label, err))
    return lines


def _us(value: float | None) -> str:
    return "-" if value is None else "%.1f" % value


def scaling_markdown(sc: dict[str, Any]) -> list[str]:
    """The scaling section: ops/s, peak connections and memory per greenlet for each greenlet count."""
    curves = sc["curves"]
    floor = sc.get("floor")  # gevent's own floor: in results since it was added (older files render without it)
    sizes = next(iter(curves.values()))["greenlets"] if curves else []
    lines = [
        "",
        "## Scaling: the gevent workload at %s greenlets, maxPoolSize=%d"
        % (", ".join(f"{g:,}" for g in sizes), sc["max_pool_size"]),
        "",
        "About %s greenlet-iterations (3 ops each) per point, split among the greenlets; median of %d "
        "repetitions. Every greenlet's counter document exists before timing, so each upsert is an update and "
        "the server does the same work at every point. Client CPU is the benchmark process's user + system "
        "time per op." % ("{:,}".format(sc["task_iterations"]), sc["reps"]),
        "",
    ]
    paired = sc.get("method") == "interleaved"
    if paired:
        lines += [
            "Each repetition runs every configuration at every greenlet count, in an order that changes from one "
            "repetition to the next. The drop is the median of the repetitions' own drops (each one's 10 against "
            "its own 10,000), with their range in brackets; the CPU column of that row is the median of the "
            "repetitions' own rises. results.json also keeps the drop of the medians (`drop_of_medians`).",
            "",
        ]
    rows = []
    for label, c in curves.items():
        for i, g in enumerate(c["greenlets"]):
            rows.append(
                [
                    label if i == 0 else "",
                    f"{g:,}",
                    fmt_rate(c["ops_per_s"][i]),
                    str(c["peak_connections"][i]),
                    _kib(c["memory_per_greenlet_bytes"][i]),
                    _us(c.get("client_cpu_us_per_op", [None] * len(c["greenlets"]))[i]),
                ]
            )
        rows.append(
            [
                "",
                "drop %s -> %s" % (f"{c['greenlets'][0]:,}", f"{c['greenlets'][-1]:,}"),
                scaling_drop_text(c),
                "",
                "",
                scaling_rise_text(c, floor),
            ]
        )
    if floor is not None:
        rows.append(
            [
                floor.get("note", floor["label"]),
                " → ".join(f"{g:,}" for g in floor["greenlets"]),
                "-",
                "-",
                "-",
                "%s; rise %s"
                % (
                    " → ".join(_us(x) for x in floor["client_cpu_us_per_op"]),
                    _signed(floor["client_cpu_rise_us_per_op"]),
                ),
            ]
        )
    lines += _table(
        ["config", "greenlets", "ops/s", "peak connections", "KiB per greenlet", "client CPU µs per op"], rows
    )
    if floor is not None:
        lines += [
            "",
            "The last row is gevent's own floor, run in every repetition before the configurations: the same "
            "greenlets and iterations, each op %d `gevent.sleep(0)` and nothing else (benchmarks/gevent_floor.py). "
            "In a drop row, gevent's part is the floor's rise (the median of its repetitions' own rises) and the "
            "driver's part is derived: the median over repetitions of the configuration's rise less the floor's "
            "rise in the same repetition, so the two parts need not add up to the total exactly. The driver's part "
            "also holds whatever the floor lacks (the server's replies, the garbage collector's work on driver "
            "objects)." % floor.get("switches", 2),
        ]
    for point in sc["points"].values():
        for label, g in point["configs"].items():
            for err in g.get("run_errors", []):
                lines.append("- %s: `%s`" % (label, err))
    if floor is not None:
        for point in floor["points"].values():
            for err in point.get("run_errors", []):
                lines.append("- %s: `%s`" % (floor["label"], err))
    return lines


def _signed(value: float | None) -> str:
    return "-" if value is None else "%+.1f" % value


def scaling_rise_text(curve: dict[str, Any], floor: dict[str, Any] | None) -> str:
    """A curve's paired rise in client CPU per op, split into gevent's part and the driver's when the floor ran."""
    text = _signed(curve.get("client_cpu_rise_us_per_op"))
    if floor is None or curve.get("client_cpu_rise_us_per_op") is None:
        return text
    return "%s (gevent %s, driver %s)" % (
        text,
        _signed(floor.get("client_cpu_rise_us_per_op")),
        _signed(curve.get("driver_cpu_rise_us_per_op")),
    )


def scaling_drop_text(curve: dict[str, Any]) -> str:
    """A curve's drop in percent, with the range of the repetitions' own drops when there is more than one."""
    drop = curve.get("drop")
    if drop is None:
        return "-"
    text = "%.1f%%" % (drop * 100)
    low, high = curve.get("drop_min"), curve.get("drop_max")
    if low is not None and high is not None and len([d for d in curve["drops_per_rep"] if d is not None]) > 1:
        text += " (%.1f..%.1f%%)" % (low * 100, high * 100)
    return text


# -- chart -----------------------------------------------------------------------
def write_chart(results: dict[str, Any], path: str) -> None:
    """The chart (see benchmarks.chart); imported here so that matplotlib is needed only to draw."""
    from .chart import write_chart as draw

    draw(results, path)


def main(argv: list[str] | None = None) -> int:
    """Re-render a results.json: print its Markdown and rewrite the chart beside it."""
    import os

    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m benchmarks.report RESULTS.json", file=sys.stderr)
        return 2
    with open(argv[0]) as fh:
        results = json.load(fh)
    print(markdown(results))
    write_chart(results, os.path.join(os.path.dirname(argv[0]) or ".", "chart.png"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
