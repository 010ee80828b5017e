"""Page-view counters as a WSGI app, for ``gunicorn -k gevent``.

The example from the PyMongo 2 "Requests" page, served over HTTP.  Each visit
bumps a counter for its (region, browser, os) with an *unacknowledged* (w=0)
upsert, then shows the visitor the page views from their region, including
their own visit.  Both run inside ``with client.start_request():``, so they
go out on one socket and the server applies the write before it answers the
read: read-your-own-writes without waiting for a write acknowledgement.

Endpoints (all answer JSON):

``GET /visit?region=US&browser=Firefox&os=Mac``
    ``{"region", "total", "pid", "conn"}``: ``total`` is the region's page
    views (this visit included), ``conn`` the server's connectionId of the
    socket the request was pinned to.
``GET /totals``
    ``{"totals": {region: page views}, "pid"}`` (one aggregate, no request).
``GET /stats``
    the pool's counters and gauges, the worker's pid, and ``preload_conn``:
    the connectionId the module opened at import when that happened in
    another process (``gunicorn --preload``: the master, before the fork).

Configuration (environment): ``MONGODB_URI`` (default
``mongodb://127.0.0.1:27017/``; a replica set's URI works too, and the visit
then runs on the primary), ``MAX_POOL_SIZE`` (sockets per worker, default
20), ``COUNTERS_DB`` (default ``page_views``).

Run::

    gunicorn -k gevent -w 2 -b 127.0.0.1:8000 --chdir examples/gunicorn_app app:app
"""

from __future__ import annotations

import json
import os
from urllib.parse import parse_qs

import mongo_requests

MONGODB_URI = os.environ.get("MONGODB_URI", "mongodb://127.0.0.1:27017/")
MAX_POOL_SIZE = int(os.environ.get("MAX_POOL_SIZE", "20"))
DB_NAME = os.environ.get("COUNTERS_DB", "page_views")

# One client per process, created at import.
#
# use_greenlets is left to auto-detection: requests belong to greenlets once
# gevent has patched ``threading``.  With --preload this module is imported
# by the master before the gevent worker patches anything; the driver notices
# the fork and gevent's patch event in each worker, and switches the pool to
# greenlets there (the test checks /stats reports use_greenlets: true).
#
# The pool is per process: with N workers the server sees up to
# N * MAX_POOL_SIZE connections (plus the master's one with --preload).
# Greenlets beyond MAX_POOL_SIZE in a request at once wait for a socket.
client = mongo_requests.MongoClient(MONGODB_URI, max_pool_size=MAX_POOL_SIZE)
counts = client[DB_NAME]["counts"]

# One operation at import: fail fast if MongoDB is unreachable, and remember
# which server connection (and process) it used.  With --preload this socket
# is opened by the gunicorn master; after the fork every worker must forget
# its copy (the driver resets its pools in a forked child) and open its own.
IMPORT_PID = os.getpid()
IMPORT_CONN = client.admin.command("hello")["connectionId"]


def region_total(region: str) -> int:
    """Page views from ``region``: the sum over its (browser, os) counters."""
    return sum(doc["n"] for doc in counts.find({"region": region}))


def visit(region: str, browser: str, os_name: str) -> dict:
    """Count one page view and return the region's total, including it."""
    with client.start_request():
        # Unacknowledged: no round trip, and no error reported if it fails.
        counts.update_one(
            {"region": region, "browser": browser, "os": os_name},
            {"$inc": {"n": 1}},
            upsert=True,
            w=0,
        )
        # Same socket as the update, so the server has applied it already.
        total = region_total(region)
        # Which server connection this request was pinned to (diagnostics).
        conn = client.admin.command("hello")["connectionId"]
    return {"region": region, "total": total, "pid": os.getpid(), "conn": conn}


def totals() -> dict:
    """Page views per region, every region, from one aggregate."""
    pipeline = [{"$group": {"_id": "$region", "total": {"$sum": "$n"}}}]
    return {doc["_id"]: doc["total"] for doc in counts.aggregate(pipeline)}


def stats() -> dict:
    return {
        "pid": os.getpid(),
        "use_greenlets": client.use_greenlets,
        "max_pool_size": client.max_pool_size,
        "import_pid": IMPORT_PID,
        "import_conn": IMPORT_CONN,
        # Only set in a worker forked from the process that imported us.
        "preload_conn": IMPORT_CONN if IMPORT_PID != os.getpid() else None,
        "pool": client.pool.get_stats(),
    }


def _respond(start_response, status: str, body: dict) -> list[bytes]:
    # A final newline, so that answers shown by curl each end their line.
    data = json.dumps(body).encode() + b"\n"
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
    return [data]


def app(environ, start_response):
    """The WSGI application."""
    if environ.get("REQUEST_METHOD", "GET") not in ("GET", "HEAD"):
        return _respond(start_response, "405 Method Not Allowed", {"error": "GET only"})
    path = environ.get("PATH_INFO", "/")
    if path == "/visit":
        query = parse_qs(environ.get("QUERY_STRING", ""))
        region = query.get("region", [""])[0]
        if not region:
            return _respond(start_response, "400 Bad Request", {"error": "region is required"})
        browser = query.get("browser", ["unknown"])[0]
        os_name = query.get("os", ["unknown"])[0]
        return _respond(start_response, "200 OK", visit(region, browser, os_name))
    if path == "/totals":
        return _respond(start_response, "200 OK", {"totals": totals(), "pid": os.getpid()})
    if path == "/stats":
        return _respond(start_response, "200 OK", stats())
    return _respond(start_response, "404 Not Found", {"error": "no such page: %s" % path})
