"""Which operations and which errors may be retried, once, on another server.

Pure rules from the MongoDB *Retryable Writes* and *Retryable Reads*
specifications; the client applies them (select a server again, run the same
command again, with the same ``lsid`` and ``txnNumber`` for a write).

- A write is retryable when it is acknowledged and changes at most one
  document per statement: ``insert``, ``update`` without ``multi``,
  ``delete`` with ``limit: 1``, ``findAndModify``.  ``w=0`` writes are never
  retried (nothing tells us they failed).
- An error is retryable when it is a network error (the server may or may
  not have applied the write: the ``txnNumber`` makes the retry safe), a
  server that is stepping down, recovering or shutting down, or, for writes,
  one the server itself labels ``RetryableWriteError`` (MongoDB 4.4+).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pymongo.errors import (
    AutoReconnect,
    ConnectionFailure,
    OperationFailure,
    WaitQueueTimeoutError,
    WriteConcernError,
)

from .pipeline import PipelineError

__all__ = [
    "RETRYABLE_CODES",
    "is_retryable_read",
    "is_retryable_read_error",
    "is_retryable_write",
    "is_retryable_write_error",
    "is_retryable_write_reply",
]

# State-change, shutdown and network-ish codes (the two specifications share
# them; reads add nothing that writes lack but 134, ReadConcernMajorityNotAvailableYet).
RETRYABLE_CODES = frozenset((11600, 11602, 10107, 13435, 13436, 189, 91, 7, 6, 89, 9001, 262))
_RETRYABLE_READ_CODES = RETRYABLE_CODES | {134}


# Reads that the Retryable Reads specification lets a driver run again.
_RETRYABLE_READS = frozenset(
    ("find", "aggregate", "distinct", "count", "listCollections", "listIndexes", "listDatabases")
)


def is_retryable_read(cmd: Mapping[str, Any]) -> bool:
    """A read the Retryable Reads specification allows to run again (an ``aggregate`` without ``$out``/``$merge``)."""
    name = next(iter(cmd), "")
    if name not in _RETRYABLE_READS:
        return False
    if name == "aggregate":
        return not any("$out" in stage or "$merge" in stage for stage in cmd.get("pipeline", ()))
    return True


def _network_error(exc: BaseException) -> bool:
    # A full pool says nothing about the server: retrying elsewhere would
    # only hide the caller's own backlog.  A pipeline's report of writes lost
    # with its connection (raised at a sync point, before the operation was
    # sent) must reach the caller: a retry would swallow it.
    if not isinstance(exc, ConnectionFailure) or isinstance(exc, WaitQueueTimeoutError):
        return False
    details = exc.errors if isinstance(exc, AutoReconnect) else None
    return not (isinstance(details, Mapping) and "unknownWrites" in details)


def _labels(exc: OperationFailure) -> Sequence[str]:
    details = exc.details or {}
    return details.get("errorLabels") or ()


def is_retryable_read_error(exc: BaseException) -> bool:
    """A read that failed with ``exc`` may be retried once.

    Never a pipeline's report (its sync ran before the read was sent): a
    retry would swallow the failed writes, whatever their code says.
    """
    if _network_error(exc):
        return True
    return (
        isinstance(exc, OperationFailure) and exc.code in _RETRYABLE_READ_CODES and not isinstance(exc, PipelineError)
    )


def is_retryable_write_error(exc: BaseException) -> bool:
    """An acknowledged, retryable write that failed with ``exc`` may be retried once."""
    if _network_error(exc):
        return True
    if not isinstance(exc, OperationFailure):
        return False
    if "RetryableWriteError" in _labels(exc):
        return True
    if isinstance(exc, WriteConcernError) or type(exc) is OperationFailure:
        # Servers before 4.4 label nothing: go by the code.
        return exc.code in RETRYABLE_CODES
    return False


def is_retryable_write_reply(reply: Mapping[str, Any]) -> bool:
    """A write's reply that reports a retryable failure (``ok: 0``, or a write concern error).

    Write concern errors do not fail the command (``ok: 1``), so the reply is
    looked at before the collection turns it into an exception.
    """
    if "RetryableWriteError" in (reply.get("errorLabels") or ()):
        return True
    if not reply.get("ok"):
        return reply.get("code") in RETRYABLE_CODES
    wce = reply.get("writeConcernError")
    return bool(wce) and wce.get("code") in RETRYABLE_CODES  # type: ignore[union-attr]


_WRITES = frozenset(("insert", "update", "delete", "findAndModify"))


def is_retryable_write(cmd: Mapping[str, Any], sequences: Mapping[str, Any] | None = None) -> bool:
    """Whether ``cmd`` (with its OP_MSG document sequences) is a retryable write.

    Only the command is looked at (a ``w: 0`` write concern makes it
    unretryable); the caller checks that the topology supports sessions.
    """
    name = next(iter(cmd), "")
    if name not in _WRITES:
        return False
    wc = cmd.get("writeConcern")
    if wc and wc.get("w") == 0:
        return False  # unacknowledged: nothing would tell a retry was needed
    if name == "insert" or name == "findAndModify":
        return True
    if name == "update":
        # No statements to look at (encoded in a document sequence): not known to be retryable.
        updates = _statements(cmd, sequences, "updates")
        return bool(updates) and not any(u.get("multi") for u in updates)
    if name == "delete":
        deletes = _statements(cmd, sequences, "deletes")
        return bool(deletes) and all(d.get("limit") == 1 for d in deletes)
    return False


def _statements(cmd: Mapping[str, Any], sequences: Mapping[str, Any] | None, field: str) -> Sequence[Mapping[str, Any]]:
    if field in cmd:
        return cmd[field]  # type: ignore[no-any-return]
    if sequences and field in sequences:
        return sequences[field]  # type: ignore[no-any-return]
    return ()
