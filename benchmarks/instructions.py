"""Client instructions per operation, counted by valgrind's callgrind.

Wall-clock ratios on a small shared VM swing by tens of percent from run to
run (other tenants, CPU steal, the server competing for the same two cores).
Instruction counts do not: callgrind counts the client process's user-space
instructions, the same for the same binary and inputs whatever else the
machine is doing.  They leave out the kernel and the server, so they measure
exactly what a driver adds on top of the round trip.

    python -m benchmarks.instructions [--uri URI] [--ops 2000] [--listeners]

Each cell runs the client twice under callgrind, doing ``warm-up`` and then
0 or ``--ops`` operations, and reports (difference / ops).  Needs
``valgrind`` (Debian package ``valgrind``).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile

from .servers import server_uri

# The operations, in the three clients.  Each snippet defines op(); the
# collection is seeded by the parent before any measurement.
_SETUP = {
    "raw": """
import socket, struct, bson
from mongo_requests import wire
host, port = ADDRESS
s = socket.create_connection((host, port)); s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
buf = bytearray(65536)
def frame(doc):
    msg = wire.pack_msg(1, bson.encode(doc))
    def op():
        s.sendall(msg); k = s.recv_into(buf); n = struct.unpack_from('<i', buf)[0]
        while k < n: k += s.recv_into(memoryview(buf)[k:])
    return op
OPS = {
    'ping': frame({'ping': 1, '$db': 'admin'}),
    'find_one': frame({'find': 'reads', 'filter': {'_id': 500}, 'limit': 1, 'singleBatch': True, '$db': DB}),
    'update_w1': frame({'update': 'counters',
                        'updates': [{'q': {'_id': 1}, 'u': {'$inc': {'n': 1}}, 'upsert': True}], '$db': DB}),
    'insert_one': frame({'insert': 'inserts', 'documents': [{'name': 'document', 'value': 3.25}], '$db': DB}),
}
""",
    "mongo_requests": """
import mongo_requests
from pymongo import monitoring
def _noop_listener(base):
    names = [n for n in dir(base) if not n.startswith('_')]
    return type('Noop', (base,), {n: (lambda self, event: None) for n in names})()
listeners = {'command': [_noop_listener(monitoring.CommandListener)],
             'pool': [_noop_listener(monitoring.ConnectionPoolListener)]}.get(LISTENER, [])
c = mongo_requests.MongoClient(URI, event_listeners=listeners); db = c[DB]
OPS = {
    'ping': lambda: c.admin.command('ping'),
    'find_one': lambda: db.reads.find_one({'_id': 500}),
    'update_w1': lambda: db.counters.update_one({'_id': 1}, {'$inc': {'n': 1}}, upsert=True),
    'insert_one': lambda: db.inserts.insert_one({'name': 'document', 'value': 3.25}),
}
if REQUEST:
    c.start_request()
""",
    "pymongo": """
import pymongo
c = pymongo.MongoClient(URI, directConnection=True); db = c[DB]
OPS = {
    'ping': lambda: c.admin.command('ping'),
    'find_one': lambda: db.reads.find_one({'_id': 500}),
    'update_w1': lambda: db.counters.update_one({'_id': 1}, {'$inc': {'n': 1}}, upsert=True),
    'insert_one': lambda: db.inserts.insert_one({'name': 'document', 'value': 3.25}),
}
""",
}

_RUN = """
op = OPS[OP]
for _ in range(200):
    op()
for _ in range(N):
    op()
"""

DB = "mongo_requests_instr"


def count(client: str, op: str, n: int, uri: str, address: tuple, request: bool = False, listener: str = "") -> int:
    """Total user-space instructions of one client process doing ``n`` ops (``listener``: command, pool or none)."""
    code = "URI=%r; ADDRESS=%r; DB=%r; OP=%r; N=%d; REQUEST=%r; LISTENER=%r\n" % (
        uri,
        address,
        DB,
        op,
        n,
        request,
        listener,
    )
    code += _SETUP[client] + _RUN
    return callgrind_total(code)


def run_script(
    code: str,
    args: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
    timeout: float = 600,
    callgrind: bool = False,
) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a new Python process with ``args`` (under callgrind if asked); RuntimeError if it fails."""
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(code)
    argv = [sys.executable, f.name, *args]
    if callgrind:
        argv = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", *argv]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env)
    finally:
        os.unlink(f.name)
    if proc.returncode != 0:
        raise RuntimeError("run failed:\n%s" % proc.stderr[-2000:])
    return proc


def callgrind_total(
    code: str, args: tuple[str, ...] = (), env: dict[str, str] | None = None, timeout: float = 600
) -> int:
    """Total user-space instructions (callgrind) of a Python process running ``code`` with ``args``."""
    proc = run_script(code, args, env, timeout, callgrind=True)
    match = re.search(r"Collected : (\d+)", proc.stderr)
    if not match:
        raise RuntimeError("no callgrind total:\n%s" % proc.stderr[-2000:])
    return int(match.group(1))


def per_op(client: str, op: str, n: int, uri: str, address: tuple, request: bool = False, listener: str = "") -> float:
    return (
        count(client, op, n, uri, address, request, listener) - count(client, op, 0, uri, address, request, listener)
    ) / n


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.instructions", description=__doc__.split("\n")[0])
    parser.add_argument("--uri", default=os.environ.get("MONGODB_URI"))
    parser.add_argument("--ops", type=int, default=2000)
    parser.add_argument(
        "--listeners",
        action="store_true",
        help="also count mongo_requests with a no-op command listener, and with a no-op pool listener",
    )
    args = parser.parse_args(argv)
    if not shutil.which("valgrind"):
        print("valgrind is not installed (apt-get install valgrind)", file=sys.stderr)
        return 2

    from mongo_requests import MongoClient

    with server_uri(args.uri) as uri:
        with MongoClient(uri) as seed:
            db = seed[DB]
            db.reads.drop()
            db.inserts.drop()
            db.reads.insert_many(
                [{"_id": i, "key": "key-%05d" % i, "name": "document", "value": 3.25} for i in range(1000)]
            )
            address = seed.address
        rows = []
        for op in ("ping", "find_one", "update_w1", "insert_one"):
            raw = per_op("raw", op, args.ops, uri, address)
            mr = per_op("mongo_requests", op, args.ops, uri, address)
            pm = per_op("pymongo", op, args.ops, uri, address)
            rows.append((op, raw, mr, pm))
            print("%-10s raw %8.0f  mongo_requests %8.0f  pymongo %8.0f" % (op, raw, mr, pm), file=sys.stderr)
        inside = per_op("mongo_requests", "find_one", args.ops, uri, address, request=True)
        outside = rows[1][2]
        print("\n## Client instructions per operation (callgrind; lower is better)\n")
        print("| operation | raw | mongo_requests | pymongo | mongo_requests - raw | pymongo - raw |")
        print("|---|---:|---:|---:|---:|---:|")
        for op, raw, mr, pm in rows:
            print("| %s | %s | %s | %s | %s | %s |" % (op, *(f"{x:,.0f}" for x in (raw, mr, pm, mr - raw, pm - raw))))
        print(
            f"\nfind_one inside one request: {inside:,.0f} instructions per op, outside: {outside:,.0f} "
            f"(a request adds {inside - outside:+,.0f} per op)."
        )
        if args.listeners:
            print("\n## With a listener (pymongo.monitoring, no-op)\n")
            print("| operation | no listener | command listener | pool listener |")
            print("|---|---:|---:|---:|")
            for op, _raw, mr, _pm in rows:
                cmd = per_op("mongo_requests", op, args.ops, uri, address, listener="command")
                pool = per_op("mongo_requests", op, args.ops, uri, address, listener="pool")
                print("| %s | %s |" % (op, " | ".join(f"{x:,.0f}" for x in (mr, cmd, pool))))
        with MongoClient(uri) as seed:
            seed.drop_database(DB)
    return 0


if __name__ == "__main__":
    sys.exit(main())
