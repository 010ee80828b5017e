"""What every client operates on: database, collections, ids and documents.

The raw client pre-encodes its messages from these constants and the driver
adapters pass the same values to the drivers' APIs, so all clients send the
same commands to the same documents.
"""

from __future__ import annotations

from typing import Any

DB = "mongo_requests_bench"

# Seeded once for the read workloads: READ_DOCS documents with an indexed
# non-_id field ``key``, so the filter workload measures the driver, not a scan.
C_READS = "reads"
READ_DOCS = 1000
READ_ID = 500
READ_KEY = "key-00500"
READ_INDEX = "key"

# The $inc upsert target (one fixed _id).
C_COUNTERS = "counters"
COUNTER_ID = "counter"

# Emptied (dropped and recreated) before every timed block.
C_INSERT_ONE = "insert_one"
C_INSERT_MANY = "insert_many"
INSERT_MANY_DOCS = 1000

# Seeded once for find_10000.
C_SCAN = "scan"
SCAN_DOCS = 10_000

# The gevent subprocess's collection and its shared, read-only document.
C_GEVENT = "gevent"
GEVENT_SHARED_ID = "shared"


def small_doc(i: int) -> dict[str, Any]:
    """A small document (~50 bytes of BSON) without ``_id``.

    Drivers add an ObjectId ``_id`` client-side; the raw client sends it
    without one and the server adds it, which is the same work for mongod.
    """
    return {"i": i, "name": "document", "value": 3.25}


def read_doc(i: int) -> dict[str, Any]:
    """A seeded document for the read workloads."""
    return {"_id": i, "key": "key-%05d" % i, "i": i, "name": "document", "value": 3.25}
