"""The chart of a results dict (see ``__main__``): what a user reads, so no internal targets on it.

Every panel says what each bar measures (client and write mode); the title
says when, on what machine and against which server.  The targets stay in
results.json and results.md.
"""

from __future__ import annotations

from typing import Any

from .adapters import CLIENTS, MR, PYMONGO, PYMONGO_NORETRY, RAW
from .report import scaling_drop_text

# What each in-process bar is (the legend).
CLIENT_LABELS = {
    RAW: "raw socket (pre-encoded OP_MSG, replies not decoded)",
    MR: "mongo_requests (defaults; the w=0 block in a request)",
    PYMONGO: "pymongo (defaults: retryable reads and writes)",
    PYMONGO_NORETRY: "pymongo retryWrites=false, retryReads=false",
}
CLIENT_COLORS = {RAW: "#7f7f7f", MR: "#1f77b4", PYMONGO: "#ff7f0e", PYMONGO_NORETRY: "#ffbb78"}
# What one op is, where the name does not say it all.
WORKLOAD_TICKS = {
    "update_inc_upsert_w1": "$inc upsert w=1",
    "update_inc_upsert_w0": "$inc upsert w=0\n(+ final ping)",
    "insert_one_w1": "insert_one w=1",
    "insert_many_1000": "insert_many\n1,000 docs w=1",
    "find_10000": "find 10,000 docs",
    "find_10000_rawbson": "find 10,000\nmr: RawBSON-\nDocument\npymongo: dict",
    "find_10000_raw_batches": "find 10,000\nmr: find_raw_\nbatches\npymongo: dict",
}


def _color(cfg: dict[str, Any]) -> str:
    if cfg.get("runner") == "asyncio":
        return "#2ca02c"
    if cfg.get("driver") == "mongo_requests":
        return "#aec7e8" if cfg.get("auto_start_request") else ("#1f77b4" if cfg.get("mode") != "w1" else "#17becf")
    return "#ff7f0e" if cfg.get("mode") == "w1" else "#ffbb78"


def _title(results: dict[str, Any]) -> str:
    m = results.get("machine", {})
    cfg = results.get("config", {})
    return (
        "mongo_requests %s vs pymongo %s, %s (%s run, median of %s reps)\n"
        "%s, %s CPUs (%s usable); Python %s; MongoDB %s (%s)"
        % (
            m.get("mongo_requests"),
            m.get("pymongo"),
            str(results.get("timestamp", "?"))[:16].replace("T", " "),
            "quick" if cfg.get("quick") else "full",
            cfg.get("reps"),
            m.get("cpu_model") or m.get("platform"),
            m.get("cpu_count"),
            m.get("cpu_usable"),
            m.get("python"),
            m.get("server_version"),
            m.get("server"),
        )
    )


def write_chart(results: dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display; must precede pyplot
    import matplotlib.pyplot as plt

    workloads = {k: v for k, v in results.get("workloads", {}).items() if "error" not in v}
    gconfigs = {
        k: v
        for k, v in (results.get("gevent") or {}).get("configs", {}).items()
        if v.get("median_ops_per_s") is not None
    }
    scaling = (results.get("scaling") or {}).get("curves")
    rs = results.get("replset") if "workloads" in (results.get("replset") or {}) else None
    rows = [
        r
        for r, on in (
            ("throughput", workloads),
            ("ratios", workloads),
            ("gevent", gconfigs),
            ("scaling", scaling),
            ("replset", rs),
        )
        if on
    ]
    if not rows:
        rows = ["throughput"]
    fig = plt.figure(figsize=(13, 4.6 * len(rows) + 0.8))
    grid = fig.add_gridspec(len(rows), 2)
    for i, row in enumerate(rows):
        if row == "throughput":
            _throughput(fig.add_subplot(grid[i, :]), workloads)
        elif row == "ratios":
            _ratios(fig.add_subplot(grid[i, :]), workloads)
        elif row == "gevent":
            _gevent(fig.add_subplot(grid[i, :]), results["gevent"], gconfigs)
        elif row == "scaling":
            _scaling(fig.add_subplot(grid[i, 0]), fig.add_subplot(grid[i, 1]), results["scaling"])
        elif row == "replset" and rs is not None:
            _replset(fig.add_subplot(grid[i, 0]), fig.add_subplot(grid[i, 1]), rs)
    fig.suptitle(_title(results), fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.7 / (4.6 * len(rows) + 0.8)))
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _ticks(names: list[str]) -> list[str]:
    return [WORKLOAD_TICKS.get(n, n) for n in names]


def _throughput(ax: Any, workloads: dict[str, Any]) -> None:
    names = list(workloads)
    x = list(range(len(names)))
    width = 0.8 / len(CLIENTS)
    values = []
    for i, client in enumerate(CLIENTS):
        ys = [workloads[n]["clients"].get(client, {}).get("median_ops_per_s") or 0 for n in names]
        values += [y for y in ys if y]
        ax.bar(
            [p - 0.4 + width * (i + 0.5) for p in x],
            ys,
            width,
            label=CLIENT_LABELS[client],
            color=CLIENT_COLORS[client],
        )
    if values and max(values) / min(values) > 30:
        ax.set_yscale("log")
        ax.set_ylabel("ops/s (log scale)")
        ax.set_ylim(min(values) / 2, max(values) * 12)  # headroom for the legend
    else:
        ax.set_ylabel("ops/s")
        ax.set_ylim(0, max(values or [1]) * 1.4)
    ax.set_xticks(x, _ticks(names), fontsize=8)
    ax.set_title("One client, one thread: operations per second (higher is better; bulk ops count as one)")
    ax.legend(ncol=2, fontsize=8, loc="upper right")
    ax.grid(axis="y", alpha=0.3)


def _ratios(ax: Any, workloads: dict[str, Any]) -> None:
    names = list(workloads)
    x = list(range(len(names)))
    shown = (
        ("mr/pymongo", "mongo_requests / pymongo", "#1f77b4"),
        ("mr/raw", "mongo_requests / raw socket", "#2ca02c"),
    )
    width = 0.35
    top = 1.5
    for i, (key, label, color) in enumerate(shown):
        ys = [workloads[n]["ratios"].get(key) or 0 for n in names]
        top = max([top] + ys)
        bars = ax.bar([p - width / 2 + i * width for p in x], ys, width, label=label, color=color)
        ax.bar_label(bars, fmt="%.2f", fontsize=7)
    ax.axhline(1.0, color="black", linewidth=0.6)
    ax.set_xticks(x, _ticks(names), fontsize=8)
    ax.set_ylabel("ratio of ops/s")
    ax.set_ylim(0, top * 1.3)
    ax.set_title("mongo_requests relative to pymongo and to the raw socket (above 1: mongo_requests is faster)")
    ax.legend(ncol=2, fontsize=8, loc="upper right")
    ax.grid(axis="y", alpha=0.3)


def _gevent(ax: Any, gv: dict[str, Any], configs: dict[str, Any]) -> None:
    labels = list(configs)
    ys = [configs[k]["median_ops_per_s"] for k in labels]
    bars = ax.bar(range(len(labels)), ys, 0.6, color=[_color(configs[k]) for k in labels])
    ax.bar_label(
        bars,
        labels=[
            "%.0f ops/s\npeak %s conn" % (y, configs[k]["peak_connections_max"])
            for k, y in zip(labels, ys, strict=True)
        ],
        fontsize=8,
    )
    ax.set_xticks(range(len(labels)), [k.replace(" (", "\n(").replace(", ", ",\n") for k in labels], fontsize=8)
    ax.set_ylabel("ops/s")
    ax.set_title(
        "%d concurrent tasks, maxPoolSize=%d: $inc own key, read it back, find_one a shared doc\n"
        "w=0 + request: the read always sees the write; pymongo w=0: it may not (stale reads in results.md)"
        % (gv["greenlets"], gv["max_pool_size"]),
        fontsize=10,
    )
    ax.grid(axis="y", alpha=0.3)
    ax.margins(y=0.25)


def _scaling(ax_ops: Any, ax_mem: Any, sc: dict[str, Any]) -> None:
    for label, c in sc["curves"].items():
        color = _color(sc["points"][str(c["greenlets"][0])]["configs"][label])
        xs = c["greenlets"]
        # The drop in the legend: the median of the repetitions' own drops, and their range.
        drop = "%s, drop %s" % (label, scaling_drop_text(c))
        ax_ops.plot(xs, [y or 0 for y in c["ops_per_s"]], marker="o", label=drop, color=color)
        for x, y, peak in zip(xs, c["ops_per_s"], c["peak_connections"], strict=True):
            if y:
                ax_ops.annotate(
                    "%s conn" % peak,
                    (x, y),
                    textcoords="offset points",
                    xytext=(0, 6),
                    fontsize=7,
                    ha="center",
                    color=color,
                )
        ax_mem.plot(xs, [(m or 0) / 1024 for m in c["memory_per_greenlet_bytes"]], marker="o", label=label, color=color)
    for ax in (ax_ops, ax_mem):
        ax.set_xscale("log")
        ax.set_xlabel("greenlets (maxPoolSize=%d)" % sc["max_pool_size"])
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    ax_ops.set_ylabel("ops/s")
    ax_ops.set_ylim(bottom=0)
    ax_ops.margins(y=0.2)
    ax_ops.set_title(
        "Scaling: ops/s against concurrent greenlets (peak connections marked)%s"
        % (
            "\nmedian of %d reps; drop: median of each repetition's own drop (range)" % sc["reps"]
            if sc.get("method") == "interleaved"
            else ""
        ),
        fontsize=10,
    )
    ax_mem.set_ylabel("KiB per greenlet (peak RSS growth / greenlets)")
    ax_mem.set_yscale("log")
    ax_mem.set_title("Scaling: memory per greenlet", fontsize=10)


def _replset(ax_ops: Any, ax_gevent: Any, rs: dict[str, Any]) -> None:
    names = list(rs["workloads"])
    x = list(range(len(names)))
    for i, (client, color) in enumerate(((MR, CLIENT_COLORS[MR]), (PYMONGO, CLIENT_COLORS[PYMONGO]))):
        ys = [rs["workloads"][n]["median_ops_per_s"].get(client) or 0 for n in names]
        bars = ax_ops.bar([p - 0.2 + 0.4 * i for p in x], ys, 0.4, label=client, color=color)
        ax_ops.bar_label(bars, fmt="%.0f", fontsize=7)
    ax_ops.set_xticks(x, names, fontsize=8)
    ax_ops.set_ylabel("ops/s")
    ax_ops.margins(y=0.2)
    ax_ops.legend(fontsize=8)
    ax_ops.grid(axis="y", alpha=0.3)
    ax_ops.set_title("Replica set (%d members), one thread; w=1 set explicitly" % len(rs["members"]), fontsize=10)
    configs = {k: v for k, v in rs["gevent"]["configs"].items() if v.get("median_ops_per_s") is not None}
    labels = list(configs)
    primary = rs["primary"]
    ys = [configs[k]["median_ops_per_s"] for k in labels]
    bars = ax_gevent.bar(range(len(labels)), ys, 0.6, color=[_color(configs[k]) for k in labels])

    def per_member(cfg: dict[str, Any]) -> str:
        per = cfg["peak_connections_per_member_max"]
        others = [str(n) for h, n in per.items() if h != primary]
        return "P %s / S %s" % (per.get(primary, "-"), " / S ".join(others))

    ax_gevent.bar_label(bars, labels=[per_member(configs[k]) for k in labels], fontsize=8)
    ax_gevent.set_xticks(range(len(labels)), labels, fontsize=8)
    ax_gevent.set_ylabel("ops/s")
    ax_gevent.margins(y=0.2)
    ax_gevent.grid(axis="y", alpha=0.3)
    ax_gevent.set_title(
        "Replica set, %d greenlets, maxPoolSize=%d\nlabels: peak connections per member (P primary, "
        "S secondary)" % (rs["gevent"]["greenlets"], rs["gevent"]["max_pool_size"]),
        fontsize=10,
    )
