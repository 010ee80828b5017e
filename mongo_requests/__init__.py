"""mongo_requests: a gevent-friendly MongoDB driver with PyMongo 2-style requests.

A *request* pins one socket to the calling thread or greenlet, so the server
applies its operations in order: an unacknowledged (``w=0``) write is visible
to the next read on the same request.  See the README for a guide.
"""

from __future__ import annotations

import logging

from ._version import __version__
from .client import Connection, MongoClient, MongoReplicaSetClient, ReplicaSetConnection, Request
from .collection import Collection, ReturnDocument
from .cursor import ASCENDING, DESCENDING, CommandCursor, Cursor
from .database import Database
from .errors import PoolTimeoutError
from .pipeline import PipelineError
from .pool import Pool, PoolOptions, RequestState

logging.getLogger("mongo_requests").addHandler(logging.NullHandler())

__all__ = [
    "__version__",
    "ASCENDING",
    "DESCENDING",
    "Collection",
    "CommandCursor",
    "Connection",
    "Cursor",
    "Database",
    "MongoClient",
    "MongoReplicaSetClient",
    "PipelineError",
    "Pool",
    "PoolOptions",
    "PoolTimeoutError",
    "ReplicaSetConnection",
    "Request",
    "RequestState",
    "ReturnDocument",
]
