"""Turn a results dict (see ``__main__``) into Markdown, targets and a chart.

Everything here is a pure function of the results, so a results.json from
another run can be re-rendered: ``python -m benchmarks.report results.json``.
"""
from __future__ import annotations

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
)
REQUEST_OVERHEAD_MAX_US = 2.0
GEVENT_MR = "mongo_requests auto_start_request=False"
GEVENT_PYMONGO = "pymongo"


# -- statistics ----------------------------------------------------------------
def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def summarize_workload(samples: dict[str, list[float]], docs_per_op: int,
                       cpu_us: dict[str, list[float]] | None = None) -> dict[str, Any]:
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
            pairs = [x / y for x, y in zip(samples[num], samples[den]) if y]
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
    out.append(_target("request adds <= %.0f us/op (find_one_by_id)" % REQUEST_OVERHEAD_MAX_US,
                       ro.get("added_us_per_op"), REQUEST_OVERHEAD_MAX_US, False, "us/op"))
    configs = (results.get("gevent") or {}).get("configs", {})
    mr, pm = configs.get(GEVENT_MR, {}), configs.get(GEVENT_PYMONGO, {})
    ratio = None
    if mr.get("median_ops_per_s") and pm.get("median_ops_per_s"):
        ratio = mr["median_ops_per_s"] / pm["median_ops_per_s"]
    out.append(_target("gevent, auto_start_request=False: ops/s >= pymongo's (ratio >= 1.0)", ratio, 1.0, True, "x"))
    pool = (results.get("gevent") or {}).get("max_pool_size", results.get("config", {}).get("pool_size"))
    out.append(_target("gevent, auto_start_request=False: peak connections <= maxPoolSize (%s)" % pool,
                       mr.get("peak_connections_max"), pool if pool is not None else 0, False, "connections"))
    return out


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
        % (m.get("cpu_count"), m.get("cpu_usable"), m.get("cpu_model", "?"), m.get("python"), m.get("pymongo"),
           m.get("pymongo_c_extensions"), m.get("mongo_requests"), m.get("server_version"), m.get("server"),
           _load(m.get("loadavg_start")), _load(m.get("loadavg_end"))),
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
        rows.append([name] + [fmt_rate(c.get(k, {}).get("median_ops_per_s")) for k in CLIENTS]
                    + [fmt_ratio(w["ratios"].get("mr/pymongo")), fmt_ratio(w["ratios"].get("mr/raw"))])
        if w.get("docs_per_op", 1) > 1:
            bulk.append([name] + [fmt_rate(c.get(k, {}).get("median_docs_per_s")) for k in CLIENTS])
    lines += _table(["workload", "raw ops/s", "mongo_requests ops/s", "pymongo ops/s", "pymongo-noretry ops/s",
                     "mr/pymongo", "mr/raw"], rows)
    if bulk:
        lines += ["", "Documents per second for the bulk workloads (1,000 docs per insert_many op, 10,000 per find):",
                  ""]
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
                    ["outside any request", "%.1f" % v["outside"]["median_us_per_op"], "-",
                     "%.1f" % v["outside"]["median_cpu_us_per_op"], "-"],
                    ["inside one `with client.start_request():`", "%.1f" % v["inside"]["median_us_per_op"],
                     "%+.2f" % ro["added_us_per_op"], "%.1f" % v["inside"]["median_cpu_us_per_op"],
                     "%+.2f" % ro["added_cpu_us_per_op"]],
                    ["a request per op (information)", "%.1f" % v["per_op"]["median_us_per_op"],
                     "%+.2f" % ro["added_us_per_op_per_op_request"], "%.1f" % v["per_op"]["median_cpu_us_per_op"],
                     "%+.2f" % ro["added_cpu_us_per_op_per_op_request"]],
                ],
            )

    gv = results.get("gevent")
    if gv:
        lines += ["", "## gevent: %d greenlets x %d iterations of ($inc, read own key, find_one), maxPoolSize=%d"
                  % (gv["greenlets"], gv["iterations"], gv["max_pool_size"]), ""]
        rows = []
        for label, g in gv["configs"].items():
            if g.get("median_ops_per_s") is None:
                rows.append([label, "failed", "-", "-", "-", g.get("note", "")])
                continue
            rows.append([label, fmt_rate(g["median_ops_per_s"]), str(g["peak_connections_max"]),
                         str(g["stale_reads"]), str(g["errors"]), g.get("note", "")])
        lines += _table(["config", "ops/s (median)", "peak connections (max)", "stale reads", "errors", "note"], rows)
        for label, g in gv["configs"].items():
            for err in g.get("run_errors", []):
                lines.append("- %s: `%s`" % (label, err))

    tls = results.get("tls")
    if tls:
        from .secure import markdown as tls_markdown  # here: secure imports this module

        if "error" in tls:
            lines += ["", "## TLS and SCRAM", "", "failed: `%s`" % tls["error"]]
        else:
            lines += tls_markdown(tls)

    targets = results.get("targets") or []
    if targets:
        lines += ["", "## Targets", ""]
        lines += _table(["target", "measured", "result"],
                        [[t["target"], "-" if t["measured"] is None else "%.2f %s" % (t["measured"], t["unit"]),
                          t["result"]]
                         for t in targets])
    lines += ["", "Ratios come from the same run, with clients interleaved within each repetition; "
              "see benchmarks/README.md for the method and how to read them.", ""]
    return "\n".join(lines)


def _load(value: Any) -> str:
    return "/".join("%.2f" % x for x in value) if value else "?"


# -- chart -----------------------------------------------------------------------
def write_chart(results: dict[str, Any], path: str) -> None:
    """Grouped ops/s bars (log scale when the range is wide), ratios with target
    lines, and the gevent runs when present."""
    import matplotlib

    matplotlib.use("Agg")  # no display; must precede pyplot
    import matplotlib.pyplot as plt

    workloads = {k: v for k, v in results.get("workloads", {}).items() if "error" not in v}
    gv = results.get("gevent")
    gconfigs = {k: v for k, v in (gv or {}).get("configs", {}).items() if v.get("median_ops_per_s") is not None}
    panels = 2 + bool(gconfigs)
    fig, axes = plt.subplots(panels, 1, figsize=(12, 4.2 * panels), squeeze=False)
    axes = axes[:, 0]
    colors = {RAW: "#7f7f7f", MR: "#1f77b4", PYMONGO: "#ff7f0e", PYMONGO_NORETRY: "#ffbb78"}
    names = list(workloads)
    x = list(range(len(names)))

    ax = axes[0]
    width = 0.8 / len(CLIENTS)
    values = []
    for i, client in enumerate(CLIENTS):
        ys = [workloads[n]["clients"].get(client, {}).get("median_ops_per_s") or 0 for n in names]
        values += [y for y in ys if y]
        ax.bar([p - 0.4 + width * (i + 0.5) for p in x], ys, width, label=client, color=colors[client])
    if values and max(values) / min(values) > 30:
        ax.set_yscale("log")
        ax.set_ylabel("ops/s (log scale)")
        ax.set_ylim(min(values) / 2, max(values) * 8)  # headroom for the legend
    else:
        ax.set_ylabel("ops/s")
        ax.set_ylim(0, max(values or [1]) * 1.3)
    ax.set_xticks(x, names, rotation=15, ha="right")
    reps = results.get("config", {}).get("reps")
    ax.set_title("Throughput per workload (median of %s reps; higher is better)" % reps)
    ax.legend(ncol=4, fontsize=9, loc="upper right")
    ax.grid(axis="y", alpha=0.3)

    ax = axes[1]
    shown = (("mr/pymongo", "#1f77b4", 2.0), ("mr/raw", "#2ca02c", 0.8))
    width = 0.35
    top = 2.0
    for i, (label, color, target) in enumerate(shown):
        ys = [workloads[n]["ratios"].get(label) or 0 for n in names]
        top = max([top] + ys)
        bars = ax.bar([p - 0.35 / 2 + i * width for p in x], ys, width, label=label, color=color)
        ax.bar_label(bars, fmt="%.2f", fontsize=7)
        ax.axhline(target, color=color, linestyle="--", linewidth=1, label="target %s >= %.1f" % (label, target))
    ax.axhline(1.0, color="black", linewidth=0.5)
    ax.set_xticks(x, names, rotation=15, ha="right")
    ax.set_ylabel("ratio")
    ax.set_ylim(0, top * 1.35)  # headroom for the legend
    ax.set_title("mongo_requests relative to pymongo and to the raw socket (w=0 target is 1.5)")
    ax.legend(ncol=4, fontsize=9, loc="upper right")
    ax.grid(axis="y", alpha=0.3)

    if gconfigs:
        ax = axes[2]
        labels = list(gconfigs)
        ys = [gconfigs[k]["median_ops_per_s"] for k in labels]
        bars = ax.bar(range(len(labels)), ys, 0.5, color=["#1f77b4", "#aec7e8", "#ff7f0e"][: len(labels)])
        ax.bar_label(bars, labels=["peak %d conn" % gconfigs[k]["peak_connections_max"] for k in labels], fontsize=9)
        ax.set_xticks(range(len(labels)), [k.replace(" auto_", "\nauto_") for k in labels])
        ax.set_ylabel("ops/s")
        ax.set_title("gevent: %d greenlets, maxPoolSize=%d (pymongo: w=1 $inc, no request)"
                     % (gv["greenlets"], gv["max_pool_size"]))
        ax.grid(axis="y", alpha=0.3)
        ax.margins(y=0.15)

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


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
